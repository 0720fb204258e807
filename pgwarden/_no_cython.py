"""What pgwarden's Cython modules (`pgwarden.compiled.CYTHON_MODULES`) read of Cython's ``cython``
module where Cython is not installed (it is needed to build only): not compiled, its decorators
leave a function as it is, its types are names only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable)

compiled = False

#: C types named in decorators (evaluated at import, unlike annotations)
int = p_uchar = Py_ssize_t = None  # noqa: A001 (Cython's names)


def binding(_on: bool) -> Callable[[F], F]:
    return lambda function: function


def locals(**_types: Any) -> Callable[[F], F]:  # noqa: A001 (Cython's name)
    return lambda function: function


def declare(_type: Any, value: Any) -> Any:
    return value
