"""The reactor `pgwarden run` installs: epoll, tuned for relaying.

Three differences from Twisted's epoll reactor, each measured on the pgbench
select-only workload (see docs/performance.md):

* No logging context per event. Twisted wraps every I/O event in
  ``log.callWithLogger`` (four nested calls, for the prefix of old-style log
  lines). Events here go straight to ``_doReadOrWrite``, the same handler,
  which still logs and disconnects on errors.
* The main loop, the poll and the reads of plain TCP connections run in
  `pgwarden.proxy.loop`, compiled with the hot path: the work Twisted's loop does
  on each wake-up only when there is some (a timed call due, a thread callback),
  and a read event from ``recv`` to ``dataReceived`` in one function. This class
  stays a Python subclass of Twisted's (a compiled class cannot derive from it).
* An end of the poll (`IEndOfPoll`). Functions handed to `call_at_end_of_poll`
  run once the last event of the poll is handled. `pgwarden.turns.Turns` ends
  its turns there (its barriers, then its sends): reading everything that is
  ready before writing means pgwarden is not preempted by each process its
  sends wake up, and costs no timed call per turn. On any other reactor the
  same `Turns` ends its turns with ``callLater(0)``; what a turn does is the same.

`install` chooses the reactor: this one, or Twisted's default when the
environment says ``PGWARDEN_REACTOR=default`` (the test suite runs once on each).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.epollreactor import EPollReactor
from zope.interface import implementer

from pgwarden.proxy import loop
from pgwarden.turns import IEndOfPoll

#: The values of PGWARDEN_REACTOR: pgwarden's own reactor, or Twisted's default for the platform.
REACTORS = ("pgwarden", "default")


@implementer(IEndOfPoll)
class PgwardenReactor(loop.LoopState, EPollReactor):
    # `loop.LoopState` first: what the loop reads at every wake-up lives in its (compiled: C)
    # struct. Its __init__ and Twisted's each set their own: neither calls the other.

    def __init__(self) -> None:
        loop.LoopState.__init__(self)
        EPollReactor.__init__(self)
        #: ``call_at_end_of_poll(f)``: ``f()`` runs once the events of this poll are handled
        #: (`IEndOfPoll`). The list's own ``append``: no Python frame for each turn that sends.
        self.call_at_end_of_poll: Callable[[Callable[[], None]], None] = self._at_end.append

    def mainLoop(self) -> None:  # noqa: N802 (Twisted's name)
        self._first_known = False
        loop.main_loop(self)

    # Where Twisted changes its heap of timed calls or their times: the loop reads the first
    # call's time again (`loop.LoopState._first_time`).

    def _insertNewDelayedCalls(self) -> None:  # noqa: N802 (Twisted's name)
        self._first_known = False
        EPollReactor._insertNewDelayedCalls(self)

    def _moveCallLaterSooner(self, call) -> None:  # noqa: N802 (Twisted's name)
        self._first_known = False
        EPollReactor._moveCallLaterSooner(self, call)

    def runUntilCurrent(self) -> None:  # noqa: N802 (Twisted's name)
        try:
            EPollReactor.runUntilCurrent(self)
        finally:
            self._first_known = False

    def doPoll(self, timeout: float | None) -> None:  # noqa: N802 (Twisted's name)
        loop.poll(self, timeout)

    doIteration = doPoll


def name_of(reactor) -> str:
    """The reactor's class by its full name, for the log: which event loop runs, at a glance."""
    kind = type(reactor)
    return f"{kind.__module__}.{kind.__qualname__}"


def chosen(environ=os.environ) -> str:
    """The reactor PGWARDEN_REACTOR names (``pgwarden`` when unset); ValueError for another value."""
    choice = environ.get("PGWARDEN_REACTOR") or "pgwarden"
    if choice not in REACTORS:
        raise ValueError(f"PGWARDEN_REACTOR={choice!r}: expected one of {', '.join(REACTORS)}")
    return choice


def install(choice: str | None = None):
    """Installs the reactor ``choice`` names (by default, PGWARDEN_REACTOR's) and returns it.

    Must run before anything imports twisted.internet.reactor. ``default`` is Twisted's
    own choice for the platform, the reactor a library user of pgwarden would have.
    """
    choice = choice or chosen()
    if choice not in REACTORS:
        raise ValueError(f"reactor {choice!r}: expected one of {', '.join(REACTORS)}")
    if choice == "default":
        from twisted.internet import default

        default.install()
        from twisted.internet import reactor

        return reactor
    from twisted.internet.main import installReactor

    ours = PgwardenReactor()
    installReactor(ours)
    return ours
