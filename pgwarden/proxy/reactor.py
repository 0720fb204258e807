"""The reactor `pgwarden run` installs: epoll, without a logging context per event.

Twisted's epoll reactor wraps every I/O event in ``log.callWithLogger``, which
pushes a legacy logging context (used only to prefix old-style log lines)
through four nested calls. A proxy handles two such events per statement, so
that wrapper is a measurable share of its per-statement cost. This reactor
dispatches each event straight to ``_doReadOrWrite``, the same handler,
which still logs and disconnects on errors.
"""

from __future__ import annotations

from twisted.internet.epollreactor import EPollReactor


class PgwardenReactor(EPollReactor):
    def doPoll(self, timeout):
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except InterruptedError:
            return
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    doIteration = doPoll


def install() -> PgwardenReactor:
    """Installs the reactor; must run before anything imports twisted.internet.reactor."""
    from twisted.internet.main import installReactor

    reactor = PgwardenReactor()
    installReactor(reactor)
    return reactor
