"""What `pgwarden.rawio` reads of Cython's ``cython`` module where Cython is not installed (it is
needed to build only): not compiled, and its decorators leave a function as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

compiled = False


def binding(_on: bool) -> Callable[[F], F]:
    return lambda function: function
