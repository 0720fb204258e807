"""The reactor `pgwarden run` installs: epoll, tuned for relaying.

Two differences from Twisted's epoll reactor, both measured on the pgbench
select-only workload (see docs/performance.md):

* No logging context per event. Twisted wraps every I/O event in
  ``log.callWithLogger`` (four nested calls, for the prefix of old-style log
  lines). Events here go straight to ``_doReadOrWrite``, the same handler,
  which still logs and disconnects on errors.
* Sends at the end of the poll iteration. ``queue_send`` collects what the
  sessions relay while handling the events of one poll, and after the last
  event hands each transport's bytes to the kernel directly (`send_now`).
  Reading everything that is ready before writing means pgwarden is not
  preempted by each process its sends wake up, and, unlike Twisted's own
  buffered writes, it costs no epoll_ctl calls.
"""

from __future__ import annotations

from twisted.internet.epollreactor import EPollReactor


def send_now(transport, data: bytes) -> None:
    """Hands ``data`` to the kernel at once when the transport has nothing queued.

    Twisted's ``write`` only buffers: the bytes leave on a later reactor turn,
    after an epoll_ctl to poll for writability and another to stop. When the
    transport has nothing queued, a plain TCP socket can take the bytes now;
    whatever the kernel does not take (and everything on a TLS transport, or
    behind queued bytes) goes through ``write`` as usual, so ordering and
    back-pressure (which pauses the producer when the queue grows) are unchanged.
    """
    if (
        transport.TLS
        or transport.disconnecting
        or not transport.connected
        or transport.dataBuffer
        or transport._tempDataLen
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # the reactor notices the broken connection itself
        return
    if sent < len(data):
        transport.write(data[sent:])


class PgwardenReactor(EPollReactor):
    def __init__(self) -> None:
        super().__init__()
        self._sends: list = []
        self._barriers: list = []
        self._after: list = []

    def queue_send(self, transport, chunks: list[bytes]) -> None:
        """Sends ``chunks`` on ``transport`` once the events of this poll are handled."""
        self._sends.append((transport, chunks))

    def add_barrier(self, barrier) -> None:
        """``barrier()`` runs before the queued sends of each turn leave (records go first)."""
        self._barriers.append(barrier)

    def remove_barrier(self, barrier) -> None:
        if barrier in self._barriers:
            self._barriers.remove(barrier)

    def add_after_sends(self, work) -> None:
        """``work()`` runs once the queued sends of a turn have left: what can wait, off the latency path."""
        self._after.append(work)

    def remove_after_sends(self, work) -> None:
        if work in self._after:
            self._after.remove(work)

    def discard_sends(self, transport) -> None:
        """Drops what is queued for ``transport`` (a barrier found it must not be sent)."""
        self._sends = [s for s in self._sends if s[0] is not transport]

    def _flush_sends(self) -> None:
        for barrier in self._barriers:
            barrier()
        while self._sends:
            sends, self._sends = self._sends, []
            for transport, chunks in sends:
                send_now(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        for work in self._after:
            work()

    def doPoll(self, timeout):
        # Sends queued by timed calls and thread callbacks (runUntilCurrent) go now.
        if self._sends or self._barriers:
            self._flush_sends()
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
        if self._sends or self._barriers:
            self._flush_sends()

    doIteration = doPoll


def install() -> PgwardenReactor:
    """Installs the reactor; must run before anything imports twisted.internet.reactor."""
    from twisted.internet.main import installReactor

    reactor = PgwardenReactor()
    installReactor(reactor)
    return reactor
