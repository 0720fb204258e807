"""The end of a reactor turn: records first, then the turn's sends, then what can wait.

Why a component of pgwarden's own, and not the reactor's: the guarantee that a
statement's record reaches the operating system before the statement reaches
the database must hold whatever reactor pgwarden runs on, through one code path.
What the sessions relay while the events of a turn are handled is queued here
(`send`); when the turn ends, `_end` runs the *barriers* (the recorder's flush:
every sink writes), then hands each transport's bytes to the kernel
(`send_now`), then the work that waits for the sends (result records, built
off the latency path).

Only when a turn ends depends on the reactor, chosen once: pgwarden's own
reactor (`proxy/reactor.py`, which provides `IEndOfPoll`) calls `_end` once the
events of the poll are handled, so everything that is ready is read before
anything is written; on any other reactor it is a ``callLater(0)``, which runs
after the events of the iteration too. Either way the end is asked for only in
a turn that queued something (`wake`), once.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from functools import partial
from typing import Any, Final, cast

from twisted.internet import tcp
from twisted.logger import Logger

from pgwarden import rawio
from pgwarden.end_of_poll import IEndOfPoll
from pgwarden.native_bases import mypyc_attr
from pgwarden.proxy.loop import DirectIO

__all__ = ["IEndOfPoll", "Turns", "send_chunks", "send_direct", "send_now"]

log = Logger(namespace="pgwarden.turns")


def _plain_tcp() -> tuple[type | None, type | None]:
    """Twisted's tcp ``Server`` and ``Client`` when the class defaults of what `send_now` tests
    are the plain values it assumes (then read from an instance's dictionary), else Nones."""
    kinds = (tcp.Server, tcp.Client)
    if all(inspect.getattr_static(k, name, None) == value and type(inspect.getattr_static(k, name, None)) is type(value)
           for k in kinds for name, value in _DEFAULTS):
        return kinds
    return None, None


#: what `send_now` tests that has a class default in Twisted's FileDescriptor, and that default
_DEFAULTS: Final = (("TLS", False), ("disconnecting", 0), ("connected", 0), ("dataBuffer", b""))
_SERVER, _CLIENT = _plain_tcp()
_PLAIN_SERVER: Final = _SERVER
_PLAIN_CLIENT: Final = _CLIENT
#: what `send_now` writes a socket.socket's bytes with (see there), and that class
_write: Final = rawio.write
#: what `send_chunks` writes several bytes objects with, and how many at most
_writev: Final = rawio.writev
_WRITEV_MAX: Final = rawio.WRITEV_MAX
#: below this many bytes in all, chunks are joined and written (fewer instructions than writev's
#: call at a statement's usual few hundred bytes); from it, a join's copy costs more
_WRITEV_FROM: Final = 32768
_SOCKET: Final = socket.socket


def send_now(transport, data: bytes) -> None:
    """Hands ``data`` to the kernel at once when the transport has nothing queued.

    Twisted's ``write`` only buffers: the bytes leave on a later reactor turn,
    after an epoll_ctl to poll for writability and another to stop. When the
    transport has nothing queued, a plain TCP socket can take the bytes now;
    whatever the kernel does not take (and everything on a TLS transport, or
    behind queued bytes) goes through ``write`` as usual, so ordering and
    back-pressure (which pauses the producer when the queue grows) are unchanged.

    A Twisted tcp connection's attributes are read from its instance dictionary (one
    attribute lookup, where each was one through the generic API from compiled code),
    their class defaults where absent; when that does not show a connected transport with
    nothing queued and its socket, the attributes are read as such and decide.

    A ``socket.socket``'s bytes go with ``os.write`` (`pgwarden.rawio`'s: compiled, without the
    GIL's release) on its descriptor: write(2) on a socket is send(2) without flags (what its
    ``send`` does), with the same errors (EAGAIN; EPIPE, as Python ignores SIGPIPE) and the same
    retry on EINTR, and ``os.write``'s call parses no argument tuple (~550 instructions less per
    statement at one client). Anything else in
    the transport's ``socket`` (a test's watcher) is asked to ``send`` them itself.
    """
    sock = _socket_now(transport)
    if sock is None:
        transport.write(data)
        return
    # (a stand-in for a socket, a test's watcher say: its own send)
    _send_on(transport, sock, sock.fileno() if type(sock) is _SOCKET else -1, data)


def _send_on(transport, sock: object, fd: int, data: bytes) -> None:
    """``data`` handed to the kernel on ``fd`` (a ``socket.socket``'s descriptor; -1: ``sock``, a
    stand-in, sends them itself); what it does not take, and everything after an error, goes
    through ``transport.write``, in order."""
    sent: int
    try:
        sent = _write(fd, data) if fd >= 0 else cast(Any, sock).send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)  # the reactor notices the broken connection itself
        return
    if sent < len(data):
        transport.write(data[sent:])


def _socket_now(transport) -> Any:
    """The socket `send_now` may write to now, or None: the bytes go through ``write``."""
    kind = type(transport)
    if kind is _PLAIN_SERVER or kind is _PLAIN_CLIENT:
        attrs: dict[str, Any] = transport.__dict__
        if not (attrs.get("TLS", False) or attrs.get("disconnecting", 0) or not attrs.get("connected", 0)
                or attrs.get("dataBuffer", b"") or attrs.get("_tempDataLen", 1)):
            sock = attrs.get("socket")
            if sock is not None:
                return sock
    if transport.TLS or transport.disconnecting or not transport.connected or transport.dataBuffer \
            or transport._tempDataLen:
        return None
    return transport.socket


def send_chunks(transport, chunks: list[bytes]) -> None:
    """`send_now` of the bytes of ``chunks``, without joining them when they are many bytes and
    go to a socket now: one writev(2) of them all (`pgwarden.rawio.writev`). A join copied every
    byte into a new object first: for a large result, each read's run of rows once more, into
    fresh pages. A few small chunks (a statement's answer) are joined: the join costs less."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
    sock = None
    if total >= _WRITEV_FROM and len(chunks) <= _WRITEV_MAX:  # (else a statement's answer: a join costs less)
        sock = _socket_now(transport)
    if type(sock) is not _SOCKET:
        send_now(transport, b"".join(chunks))  # (where `_socket_now` ran, `send_now` runs it again: rare)
        return
    try:
        sent = _writev(sock.fileno(), chunks)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(b"".join(chunks))  # the reactor notices the broken connection itself
        return
    for chunk in chunks:  # what the kernel did not take, queued in order
        size = len(chunk)
        if sent >= size:
            sent -= size
        else:
            transport.write(chunk[sent:] if sent else chunk)
            sent = 0


@mypyc_attr(allow_interpreted_subclasses=True)
class TurnWork:
    """What runs at the end of every turn, called natively: the recorder (its barrier, before the
    sends: records reach their sinks before the statements they record leave; its work after
    them). Why not a barrier and an after-sends work like the others: those are called through
    the generic API, ~250 instructions a call, four calls a statement at one client."""

    def barrier(self) -> None:
        """Runs before the turn's sends."""

    def after_sends(self) -> None:
        """Runs once the turn's sends have left."""


def send_direct(entry: DirectIO, chunks: list[bytes]) -> None:
    """`send_now` (or `send_chunks`) of a connection registered for direct reads and sends
    (`DirectIO`), for a statement's answer: its instance dictionary and its socket's descriptor
    known, the same outcomes.

    What `send_now` tests is tested in the dictionary the entry holds, and that the connection
    still has the socket it had (it is deleted when the connection closes: its descriptor may be
    another connection's by then); anything else, or a stand-in socket, is `send_now`'s.

    Why only fewer than `_WRITEV_FROM` bytes: sending a large result's reads through here too
    (session 11) made pgwarden relay it in smaller pieces, with more system calls per result at 8
    clients (docs/performance.md); a large send takes the connection's usual path, where it costs
    the kernel's copies, not these lookups.
    """
    if len(chunks) == 1:
        data = chunks[0]
    else:
        total = 0
        for chunk in chunks:
            total += len(chunk)
        if total >= _WRITEV_FROM:
            send_chunks(entry.selectable, chunks)
            return
        data = b"".join(chunks)
    if len(data) >= _WRITEV_FROM:
        send_now(entry.selectable, data)
        return
    # `send_now`'s tests but two: TLS (never started on a registered connection: the entry is
    # made for a plain one, and PostgreSQL's protocol starts TLS only before the login) and
    # ``connected`` (cleared by Twisted in the call that deletes the socket, which is tested).
    attrs = entry.attrs
    sock = entry.socket
    if (sock is None or attrs.get("socket") is not sock or attrs.get("disconnecting", 0)
            or attrs.get("dataBuffer", b"") or attrs.get("_tempDataLen", 1)):
        send_now(entry.selectable, data)
        return
    _send_on(entry.selectable, None, entry.fd, data)


class Turns:
    """The turn batching of one Application: its sends, its barriers, what waits for the sends."""

    def __init__(self, reactor) -> None:
        # What this turn sends, flat: a transport, then its chunks, then the next transport...
        # (no tuple made per send).
        self._sends: list[object] = []
        self._closes: list = []
        self._barriers: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        #: the `TurnWork` attached (`attach`), run before the barriers and the after-sends work
        self._work: TurnWork | None = None
        self._due = False  # the end of this turn has been asked for
        #: ``_end`` bound once (not a new bound method each turn)
        self._end_call: Callable[[], None] = self._end
        at_end: Callable[[Callable[[], None]], object]
        if IEndOfPoll.providedBy(reactor):
            at_end = reactor.call_at_end_of_poll
        else:
            at_end = partial(reactor.callLater, 0)
        self._at_end = at_end
        # `PgwardenReactor`'s ``call_at_end_of_poll`` is its list's own ``append``: that list,
        # appended to directly (compiled: no call through the generic API), else None.
        owner = getattr(at_end, "__self__", None)
        self._end_list: list[Callable[[], None]] | None = (
            owner if type(owner) is list and at_end == owner.append else None)

    def _ask_end(self) -> None:
        self._due = True
        end_list = self._end_list
        if end_list is not None:
            end_list.append(self._end_call)
        else:
            self._at_end(self._end_call)

    def send(self, transport, chunks: list[bytes]) -> None:
        """Sends ``chunks`` on ``transport`` when this turn ends, after its barriers (``transport``:
        a connection, or its `DirectIO` while it relays on pgwarden's reactor)."""
        sends = self._sends
        sends.append(transport)
        sends.append(chunks)
        if not self._due:
            self._ask_end()

    def wake(self) -> None:
        """Something for the barriers or the after-sends work: the end of this turn is needed."""
        if not self._due:
            self._ask_end()

    def close(self, transport) -> None:
        """Closes ``transport`` once this turn's bytes for it are sent (a FATAL, then the close).

        Twisted closes a transport as soon as what was *written* has left, and
        the bytes of this turn are not written yet: without this, a close asked
        for by a timed call (a token expiring, a grace period over) could, on a
        reactor whose turn ends with ``callLater(0)``, happen before them.
        """
        self._closes.append(transport)
        if not self._due:
            self._ask_end()

    def discard(self, transport) -> None:
        """Drops what is queued for ``transport`` (a barrier found it must not be sent)."""
        sends = self._sends
        kept: list[object] = []
        for i in range(0, len(sends), 2):
            target = sends[i]
            if target is not transport and not (isinstance(target, DirectIO) and target.selectable is transport):
                kept.append(sends[i])
                kept.append(sends[i + 1])
        self._sends = kept

    def attach(self, work: TurnWork) -> None:
        """``work``'s barrier and after-sends work run at the end of every turn (one at a time)."""
        self._work = work

    def detach(self, work: TurnWork) -> None:
        if self._work is work:
            self._work = None

    def add_barrier(self, barrier: Callable[[], None]) -> None:
        """``barrier()`` runs at the end of every turn that queued something, before the sends."""
        self._barriers.append(barrier)

    def remove_barrier(self, barrier: Callable[[], None]) -> None:
        if barrier in self._barriers:
            self._barriers.remove(barrier)

    def add_after_sends(self, work: Callable[[], None]) -> None:
        """``work()`` runs once the sends of a turn have left: what can wait, off the latency path."""
        self._after.append(work)

    def remove_after_sends(self, work: Callable[[], None]) -> None:
        if work in self._after:
            self._after.remove(work)

    def _end(self) -> None:
        work = self._work
        try:
            if work is not None:
                work.barrier()
            for barrier in self._barriers:
                barrier()  # may end sessions: discard their upstream bytes, send their FATAL, close
            while self._sends:
                sends, self._sends = self._sends, []
                for i in range(0, len(sends), 2):
                    chunks = cast("list[bytes]", sends[i + 1])
                    target = sends[i]
                    if isinstance(target, DirectIO):
                        send_direct(target, chunks)
                    elif len(chunks) == 1:
                        send_now(target, chunks[0])
                    else:
                        send_chunks(target, chunks)
            if self._closes:
                closes, self._closes = self._closes, []
                for transport in closes:
                    transport.loseConnection()
        finally:
            self._due = False  # what the after-sends work queues asks for an end of its own
        if work is not None:
            work.after_sends()
        for after in self._after:
            after()
