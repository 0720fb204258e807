"""The main loop of pgwarden's reactor, its poll and its reads, as module functions mypyc compiles.

Why a module of functions: every statement at one client costs two wake-ups of the
reactor, and at that rate the interpreter's work to get from ``epoll_wait`` to a
protocol's ``dataReceived`` and back (Twisted's ``mainLoop`` → ``runUntilCurrent`` →
``timeout`` → ``doIteration`` → ``_doReadOrWrite`` → ``doRead`` → ``_dataReceived``,
each a Python call) was as much as the forwarding itself (docs/performance.md, "The
event loop compiled"). The reactor stays Twisted's class (`proxy/reactor.py`, a
subclass of its epoll reactor; a native class cannot derive from it), its loop runs
here: compiled, these functions are C that reads the reactor's attributes, and
`pgwarden.compiled` runs them as this same Python when asked.

What each function does is what Twisted's methods do, with the work skipped that
has nothing to do:

* `main_loop`: ``runUntilCurrent`` only when a thread callback is queued, a timed
  call is new or due, the reactor was just stopped, or cancelled calls are to be
  swept; when nothing ran, the poll's timeout straight from the first pending timed
  call (its time kept between wake-ups while Twisted changes no timed call: `LoopState`),
  else Twisted's ``timeout``. The wait is `pgwarden.rawio.epoll_wait` (``epoll.poll``
  compiled, its events on the stack). The end-of-poll calls that timed calls
  and thread callbacks asked for (`pgwarden.turns`) run before the timeout is
  known, so that a timer they arm or a stop they ask for is not left waiting for
  the next event. A failure anywhere is logged and the loop goes on, as Twisted's
  ``mainLoop`` does.
* `poll`: the epoll reactor's ``doPoll`` without the logging context per event, and
  the end-of-poll calls before and after the events.
* `read_event`: for a plain TCP connection (`tcp.Server`, `tcp.Client`, not TLS,
  its ``doRead`` not replaced, as while a client connects) that is only readable,
  ``_doReadOrWrite`` → ``doRead`` → ``_dataReceived`` in one function: the same
  read (``os.read`` of the socket's descriptor: ``recv`` without flags, without its
  argument tuple), the connection's attributes read from its instance dictionary
  (their class defaults checked at import), the same outcomes (nothing on EAGAIN, connection lost on another error,
  done, for a half-close too, on end of file, an exception from the protocol logged
  and the connection dropped with it). Every other event (writable, hang-up, error,
  TLS, a listening port, the waker) goes through Twisted's ``_doReadOrWrite``.
* `direct_read`: a relaying session's connections, registered by its pump as `DirectIO`s,
  are read without even those lookups: the descriptor, the read size and the pump's method
  are known; the same outcomes as `read_event`.
"""

from __future__ import annotations

import inspect
import select
import socket
import sys
from collections.abc import Callable
from errno import EWOULDBLOCK
from select import EPOLLIN
from typing import Any, Final, cast

from twisted.internet import abstract, main, tcp
from twisted.internet.base import DelayedCall
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.logger import Logger
from twisted.python import log as legacy_log

from pgwarden import rawio
from pgwarden.native_bases import mypyc_attr

log = Logger(namespace="pgwarden.reactor")

#: epoll_wait's longest timeout in seconds (a C int of milliseconds), as Twisted's ``timeout``.
LONGEST: Final = 2147483.0


def _plain_tcp() -> frozenset[type]:
    """The connection classes whose read is Twisted's ``Connection.doRead`` as read here.

    Empty, so every read takes Twisted's path, when this Twisted's classes read otherwise, or
    keep what `read_event` and `_events` read of them otherwise than in their instance's
    dictionary (a class default a descriptor, or not the same for both).
    """
    kinds = (tcp.Server, tcp.Client)
    if all(k.doRead is tcp.Connection.doRead and k._dataReceived is tcp.Connection._dataReceived
           and inspect.getattr_static(k, "TLS") is False
           and inspect.getattr_static(k, "bufferSize") == tcp.Connection.bufferSize
           and type(inspect.getattr_static(k, "bufferSize")) is int
           and inspect.getattr_static(k, "fileno") is abstract.FileDescriptor.fileno
           for k in kinds):
        return frozenset(kinds)
    return frozenset()


PLAIN_TCP = _plain_tcp()
# The same, as what compiled code compares a type with (C variables; any other global is a
# dictionary lookup at each use), and the read's size: Twisted's class default.
_SERVER: Final = tcp.Server if PLAIN_TCP else None
_CLIENT: Final = tcp.Client if PLAIN_TCP else None
_BUFFER_SIZE: Final[int] = tcp.Connection.bufferSize
_READABLE: Final[int] = EPOLLIN
_SOCKET: Final = socket.socket
#: ``os.read`` (`pgwarden.rawio`'s: compiled, without the GIL's release and a 256 KiB
#: allocation): the socket's own ``recv`` with no flags is the same read(2) of the same file
#: descriptor, the same errors (EAGAIN, a reset), the same retry on EINTR; its call parses its
#: arguments as a tuple (``recv`` takes a size and optional flags), ``os.read``'s does not.
_read: Final = rawio.read
#: ``epoll.poll`` of the reactor's poller (`pgwarden.rawio`'s: compiled, its events on the stack)
_wait: Final = rawio.epoll_wait
_EPOLL: Final = select.epoll
#: a read of at least this many bytes makes the next read of the connection a large one (`rawio.read`)
_STACK_READ: Final = rawio.STACK_READ


@mypyc_attr(allow_interpreted_subclasses=True)
class DirectIO:
    """A relaying connection whose reads go from ``read(2)`` straight to a compiled method, and
    whose sends (`pgwarden.turns.send_direct`) skip the lookups that find its socket.

    Why: a read of a plain TCP connection (`read_event`) still asks the connection's instance
    dictionary for its descriptor, its read size and its protocol, and calls the protocol's
    ``dataReceived`` through the generic API: ~1,000 instructions a read, two reads a statement
    at one client; a send (`pgwarden.turns.send_now`) gets the dictionary and calls the socket's
    ``fileno``. Once a session relays, each side's connection is registered here
    (`register_direct_io`) with what those lookups give, which does not change while it relays:
    its descriptor (a tcp connection's socket is never replaced, only deleted when it closes);
    its read size; no TLS (PostgreSQL's protocol cannot start it after the login); Twisted's
    ``doRead`` (replaced only while a client connects and when a connection is aborted, and an
    aborted connection has left the reactor's descriptors already). A subclass's `received` is
    the pump's method, called natively.

    The reactor takes this path only for the connection it polls under that descriptor now
    (`_events` compares it with the registered one, so neither a closed connection nor a new one
    that got the same descriptor number is read through a stale entry), and only while the entry
    is registered: the pump withdraws it (`withdraw_direct_io`) when the session lets go of it.
    Every outcome is `read_event`'s (and so Twisted's). A send checks that the connection still
    has this socket (`send_direct`).
    """

    def __init__(self, selectable: Any, fd: int, size: int) -> None:
        #: the Twisted connection (what the reactor's descriptors map ``fd`` to while it is open)
        self.selectable: object = selectable
        self.fd = fd
        #: its read size (its ``bufferSize``: the upstream connection's is its own)
        self.size = size
        #: whether its last read filled `rawio.read`'s stack buffer (the next is read as a large one)
        self.large = False
        #: its instance dictionary (the same object for its whole life), where a send reads its state
        self.attrs: dict[str, Any] = selectable.__dict__
        sock = self.attrs.get("socket")
        #: its socket when a ``socket.socket`` (written with ``os.write`` on ``fd``), else None
        #: (a stand-in, a test's watcher: every send takes `send_now`, which calls its ``send``)
        self.socket: object = sock if type(sock) is _SOCKET else None

    def received(self, data: bytes) -> None:
        """What the protocol's ``dataReceived`` would do with ``data`` (a subclass's)."""
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class LoopState:
    """The reactor's state that `main_loop` reads at every wake-up, kept where compiled code reads it.

    Why a base class: `PgwardenReactor` derives from this class first and from Twisted's epoll
    reactor, so these attributes live here, not in the reactor's instance dictionary. Compiled,
    this class is native: the loop, whose ``reactor`` is typed as it, reads each attribute from
    the object's C struct, where each was a generic attribute lookup (~160 instructions, six per
    wake-up, two wake-ups per statement at one client). Twisted's own code reads and writes them
    as before, as attributes of the reactor (through this class's descriptors). Their types are
    those Twisted gives them (`twisted.internet.base.ReactorBase.__init__`): compiled, a value
    of another type is refused (TypeError) where the Python class would take it. The pure-Python
    build runs this same class as Python.
    """

    def __init__(self) -> None:
        self._started: bool = False
        self.running: bool = False
        self._justStopped: bool = False
        self._cancellations: int = 0
        self._pendingTimedCalls: list[DelayedCall] = []
        self._newTimedCalls: list[DelayedCall] = []
        self.threadCallQueue: list[Any] = []
        #: never replaced: `poll` holds it through the events of a poll (`pgwarden.turns.IEndOfPoll`)
        self._at_end: list[Callable[[], None]] = []
        #: the relaying connections read through `DirectIO`, by descriptor; never replaced
        self.direct_reads: dict[int, DirectIO] = {}
        #: the first pending timed call's ``time``, as `_iterations` last read it, while
        #: `_first_known`: a generic attribute read (~190 instructions) per wake-up otherwise.
        #: The heap of timed calls and their times change only in ``_insertNewDelayedCalls``,
        #: ``_moveCallLaterSooner`` (a call reset or delayed to sooner) and ``runUntilCurrent``
        #: (`pgwarden.proxy.reactor.PgwardenReactor` forgets it in each); a call reset to later
        #: keeps its ``time`` until it comes due (Twisted's ``delayed_time``), a cancelled one
        #: stays in the heap until then.
        self._first_time: float = 0.0
        self._first_known: bool = False


def direct_io_fd(reactor: object, transport: Any) -> tuple[int, int]:
    """The descriptor under which ``transport``'s reads can be registered as a `DirectIO`, and
    its read size; -1 for the descriptor when they cannot.

    Only on pgwarden's reactor, for an open plain TCP connection (`PLAIN_TCP`) that `_events`
    would read with `read_event` now (no ``doRead`` of its own, no TLS)."""
    if not isinstance(reactor, LoopState) or type(transport) not in PLAIN_TCP:
        return -1, 0
    attrs: dict[str, Any] = transport.__dict__
    size = attrs.get("bufferSize", _BUFFER_SIZE)
    if "doRead" in attrs or attrs.get("TLS", False) or "socket" not in attrs or type(size) is not int:
        return -1, 0
    fd: int = transport.fileno()
    return fd, size


def register_direct_io(reactor: object, entry: DirectIO) -> None:
    """From now on `_events` reads ``entry``'s connection with `direct_read` (``entry.fd`` from
    `direct_io_fd`, not -1)."""
    state: LoopState = cast(LoopState, reactor)
    state.direct_reads[entry.fd] = entry


def withdraw_direct_io(reactor: object, entry: DirectIO) -> None:
    """Its connection's reads take the reactor's usual path again (if ``entry`` is still the
    one registered under its descriptor: a later connection may have it now)."""
    state: LoopState = cast(LoopState, reactor)
    table = state.direct_reads
    if table.get(entry.fd) is entry:
        del table[entry.fd]


def main_loop(reactor: Any) -> None:
    """Twisted's ``mainLoop``: iterations until the reactor stops; a failure is logged, not fatal.

    ``reactor``: a `LoopState` and a Twisted reactor (`pgwarden.proxy.reactor.PgwardenReactor`)."""
    state: LoopState = reactor
    while state._started:
        try:
            _iterations(reactor, state)
        except BaseException:  # as Twisted's loop: whatever an iteration raises, the reactor goes on
            log.failure("Unexpected error in main loop")
    log.info("Main loop terminated.")


def _iterations(reactor: Any, state: LoopState) -> None:
    seconds = reactor.seconds
    threads = state.threadCallQueue
    at_end = state._at_end
    # Made in the epoll reactor's __init__ and never replaced: read once, not at each poll.
    selectables: dict[int, Any] = reactor._selectables
    poller = reactor._poller
    epfd = _epoll_fd(poller)
    direct = state.direct_reads
    while state._started:
        pending = state._pendingTimedCalls
        first: float | None = None
        if pending:
            if state._first_known:
                first = state._first_time
            else:
                first = pending[0].time
                state._first_time = first
                state._first_known = True
        now: float = seconds()
        ran = False
        if (threads or state._newTimedCalls or state._justStopped
                or (first is not None and first <= now)
                or (state._cancellations > 50 and state._cancellations > len(pending) >> 1)):
            reactor.runUntilCurrent()
            ran = True
        if at_end:  # what timed calls and thread callbacks asked for, before the timeout is known
            end_of_poll(at_end)
            ran = True
        timeout: float | None
        if not state.running:
            timeout = 0
        elif not ran:  # nothing has changed the timed calls since they were looked at
            timeout = None if first is None else max(0.0, min(LONGEST, first - now))
        elif threads or state._justStopped:
            timeout = 0  # what those calls asked for runs first
        else:
            timeout = reactor.timeout()
        _events(reactor, selectables, poller, epfd, timeout, at_end, direct)


def poll(reactor: Any, timeout: float | None) -> None:
    """The epoll reactor's ``doPoll`` (``iterate``'s), with the end-of-poll calls before and after."""
    state: LoopState = reactor
    at_end = state._at_end
    if at_end:
        end_of_poll(at_end)
    poller = reactor._poller
    _events(reactor, reactor._selectables, poller, _epoll_fd(poller), timeout, at_end, state.direct_reads)


def _epoll_fd(poller: Any) -> int:
    """What `_wait` is given with ``poller``: its descriptor if a ``select.epoll``, else -1 (its own ``poll``)."""
    if type(poller) is _EPOLL:
        fd: int = poller.fileno()
        return fd
    return -1


def _events(reactor: Any, selectables: dict[int, Any], poller: object, epfd: int, timeout: float | None,
            at_end: list[Callable[[], None]], direct: dict[int, DirectIO]) -> None:
    try:
        events: list[tuple[int, int]] = _wait(poller, epfd, -1.0 if timeout is None else timeout, len(selectables))
    except InterruptedError:
        return
    # Typed (epoll's own list of (fd, events) pairs): compiled, the loop indexes the list and
    # unpacks each pair natively, without an iterator of each.
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if event == _READABLE:
            entry = direct.get(fd)
            if entry is not None and entry.selectable is selectable:
                direct_read(reactor, entry)
                continue
        kind = type(selectable)
        if event == _READABLE and (kind is _SERVER or kind is _CLIENT):
            # Twisted's tcp connections keep what is read here in their instance dictionary,
            # falling back to their class's default (checked by `_plain_tcp`): read there, one
            # attribute lookup for all, where each attribute was one through the generic API.
            attrs: dict[str, Any] = selectable.__dict__
            if "doRead" not in attrs and not attrs.get("TLS", False):
                read_event(reactor, selectable, attrs)
                continue
        reactor._doReadOrWrite(selectable, fd, event)
    if at_end:
        end_of_poll(at_end)


def read_event(reactor: Any, selectable: tcp.Connection,
               attrs: dict[str, Any] | None = None) -> None:
    """``_doReadOrWrite`` of a read event on a plain TCP connection, its ``doRead`` inlined.

    ``attrs``: the connection's instance dictionary, if the caller has it."""
    instance: dict[str, Any] = selectable.__dict__ if attrs is None else attrs
    why: BaseException | None = None
    in_read = False
    try:
        fileno = instance.get("fileno")  # the socket's; deleted (the class's: -1) once the connection is lost
        fd: int = fileno() if fileno is not None else selectable.fileno()
        if fd == -1:
            why = _NO_FILEDESC
        else:
            try:
                data = _read(fd, instance.get("bufferSize", _BUFFER_SIZE))
            except OSError as e:
                if e.args[0] == EWOULDBLOCK:
                    return
                why = main.CONNECTION_LOST
            else:
                if data:
                    protocol = instance.get("protocol")
                    if protocol is None:
                        protocol = selectable.protocol
                    protocol.dataReceived(data)
                else:
                    why = main.CONNECTION_DONE
            in_read = True
    except BaseException:  # as _doReadOrWrite: the application's failure is logged, the connection dropped
        why = sys.exc_info()[1]
        legacy_log.err()
    if why:
        reactor._disconnectSelectable(selectable, why, in_read)


def direct_read(reactor: Any, entry: DirectIO) -> None:
    """`read_event` of a registered connection: its descriptor and its protocol's method known."""
    why: BaseException | None = None
    in_read = False
    try:
        try:
            data: bytes = _read(entry.fd, entry.size, entry.large)  # (typed: its length and truth natively)
        except OSError as e:
            if e.args[0] == EWOULDBLOCK:
                return
            why = main.CONNECTION_LOST
        else:
            if data:
                entry.large = len(data) >= _STACK_READ
                entry.received(data)
            else:
                why = main.CONNECTION_DONE
        in_read = True
    except BaseException:  # as _doReadOrWrite: the application's failure is logged, the connection dropped
        why = sys.exc_info()[1]
        legacy_log.err()
    if why:
        reactor._disconnectSelectable(entry.selectable, why, in_read)


def end_of_poll(at_end: list[Callable[[], None]]) -> None:
    """Runs the calls asked for until none is left; a failure is logged and the others still run."""
    while at_end:
        if len(at_end) == 1:  # the usual case (one turn's end): no copy of the list
            f = at_end[0]
            at_end.clear()
            try:
                f()
            except Exception:  # as a timed call's failure
                log.failure("end of poll call {f!r} failed", f=f)
            continue
        calls = at_end.copy()
        at_end.clear()
        for f in calls:
            try:
                f()
            except Exception:  # as a timed call's failure
                log.failure("end of poll call {f!r} failed", f=f)
