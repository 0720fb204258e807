"""``mypyc_attr``, for the compiled classes that Python classes derive from, with or without mypy.

`pgwarden.proxy.loop.LoopState`, `pgwarden.proxy.state.ConnectionState` and the like are native
(mypyc) classes that plain Python classes take as their first base: compiled code reads their
attributes from the C struct, Python code as attributes (docs/performance.md, session 10). mypyc
needs ``@mypyc_attr(allow_interpreted_subclasses=True)`` on them when it compiles; at run time a
native class never calls the decorator and as Python it does nothing. So ``mypy_extensions`` is
a build requirement, not a run-time one: an install without it takes the no-op here.

Plain Python, never compiled.
"""

from __future__ import annotations

from collections.abc import Callable


def _as_python(*_names: object, **_settings: object) -> Callable[[type], type]:
    """``mypyc_attr`` where mypy_extensions is not installed: nothing to do as Python."""
    return lambda cls: cls


try:
    from mypy_extensions import mypyc_attr
except ImportError:  # an install without mypy
    mypyc_attr = _as_python  # type: ignore[assignment]

__all__ = ["mypyc_attr"]
