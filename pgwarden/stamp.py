"""Records' time stamps (RFC 3339, microseconds, UTC), compiled by Cython: two a statement.

Why: compiled by mypyc, a stamp's six digits of microseconds were two strings taken from a table
of a thousand (``_THREE``), each a separate object: at one client, after each wake-up, each was
a cache miss (a ``perf`` profile of the pgwarden process put ~1 µs a statement on the two
stamps: docs/performance.md). Compiled (the ``if cython.compiled`` branch), `now` reads the
clock (clock_gettime(2), as ``time.time_ns``) and writes the digits into a buffer; the text up
to the seconds is made again only when the second changes (``time.strftime``, as before).
The Python below is the source of truth and the pure-Python build: the same text for the same
instant (`tests/unit/build_differential.py` compares both builds' `format_ns`).
"""

from __future__ import annotations

import time

try:
    import cython
except ImportError:  # Cython is needed to build only: without it, this runs as Python
    from pgwarden import _no_cython as cython

if cython.compiled:
    from cython.cimports.cpython.unicode import PyUnicode_DecodeASCII
    from cython.cimports.libc.string import memcpy
    from cython.cimports.posix.time import CLOCK_REALTIME, clock_gettime, timespec


class _Second:
    """The second a stamp was last written in, and its text up to the microseconds (Python)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""


_SECOND = _Second()
_time_ns = time.time_ns
#: "000" to "999": a stamp's microseconds as two of these (Python)
_THREE = tuple(f"{i:03d}" for i in range(1000))


def _prefix(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


def format_ns(ns: int) -> str:
    """The stamp of ``ns`` nanoseconds since the epoch (``2026-11-25T15:16:50.123456Z``)."""
    return format_at(ns // 1_000_000_000, ns % 1_000_000_000 // 1000)


def format_at(second: int, micro: int) -> str:
    """The stamp of ``second`` since the epoch and ``micro`` (0 to 999,999) microseconds."""
    at = _SECOND
    if second != at.second:
        at.prefix = _prefix(second)
        at.second = second
    return f"{at.prefix}{_THREE[micro // 1000]}{_THREE[micro % 1000]}Z"


@cython.binding(False)
def now() -> str:
    """The stamp of now (the system's real-time clock)."""
    if cython.compiled:
        global _c_second, _c_prefix_len
        ts = cython.declare(timespec)
        buf = cython.declare(cython.char[40])
        micro = cython.declare(cython.long)
        i = cython.declare(cython.int)
        if clock_gettime(CLOCK_REALTIME, cython.address(ts)) != 0:
            return format_ns(_time_ns())
        if ts.tv_sec != _c_second:  # type: ignore[name-defined]
            text = _prefix(ts.tv_sec).encode()
            if len(text) > 31:
                return format_ns(_time_ns())
            memcpy(_c_prefix, cython.cast(cython.p_char, text), len(text))  # type: ignore[name-defined]  # noqa: F821 (stamp.pxd)
            _c_prefix_len = len(text)  # type: ignore[name-defined]
            _c_second = ts.tv_sec  # type: ignore[name-defined]
        memcpy(buf, _c_prefix, _c_prefix_len)  # type: ignore[name-defined]  # noqa: F821 (stamp.pxd)
        micro = ts.tv_nsec // 1000
        for i in range(5, -1, -1):
            buf[_c_prefix_len + i] = 48 + micro % 10  # type: ignore[name-defined]
            micro = micro // 10
        buf[_c_prefix_len + 6] = 90  # type: ignore[name-defined]  # ("Z")
        return PyUnicode_DecodeASCII(buf, _c_prefix_len + 7, cython.NULL)  # type: ignore[name-defined]
    return format_ns(_time_ns())
