"""Waiting for what another process makes true, with a deadline and a failure that says why.

A test that starts a process, or drives one through a socket, sometimes has nothing
to wait *on*: a port file appears, a log line is written, a backend shows up in
``pg_stat_activity``. Polling is then the only way, and a hand-written loop tends
to forget the deadline, to sleep past it, or to fail with "timed out" and nothing
about what it last saw. `wait_until` is the one loop: it polls until a value
satisfies a condition and returns that value, or fails at the deadline naming
what was awaited and the last value it got (or the exception that stood for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: how much of the last value seen a failure message shows (its end: a log's last lines)
SHOWN_CHARS = 2000


class WaitTimeout(TimeoutError):
    """The deadline passed before the awaited condition held."""


def wait_until(
    deadline_s: float,
    poll: Callable[[], T],
    what: str,
    *,
    until: Callable[[T], object] = bool,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
    interval_s: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Calls ``poll`` until ``until(value)`` holds and returns that value; at most ``deadline_s`` seconds.

    :param deadline_s: seconds from now; ``poll`` runs at least once, and once more at the deadline.
    :param poll: reads the state, e.g. a file's text; an exception it raises ends the wait (so
        a poll can give up early, say when the process it waits for has exited) unless it is one of
        ``ignore``, which then counts as "not yet" and as the last value seen.
    :param what: what is awaited, for the failure message ("pgwarden to write its ready file").
    :param until: the condition on the polled value; by default its truth.
    :param detail: called at the deadline for more context in the message (a process's log).
    :param interval_s: the pause between polls (never past the deadline).
    :raises WaitTimeout: at the deadline, with ``what``, the last value seen and ``detail()``.
    """
    deadline = clock() + deadline_s
    while True:
        try:
            value = poll()
        except ignore as e:
            last: object = e
        else:
            if until(value):
                return value
            last = value
        remaining = deadline - clock()
        if remaining <= 0:
            message = f"gave up after {deadline_s:g} s waiting for {what}; last seen: {shown(last)}"
            if detail is not None:
                message += "\n" + detail()
            raise WaitTimeout(message)
        sleep(min(interval_s, remaining))


def shown(value: object) -> str:
    """``repr(value)``, cut to its last `SHOWN_CHARS` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else "..." + text[-SHOWN_CHARS:]
