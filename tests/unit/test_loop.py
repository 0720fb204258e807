"""pgwarden's reactor loop (`pgwarden.proxy.loop`): Twisted's outcomes for reads, timers, threads, failures.

Each test runs a `PgwardenReactor` of its own (not the one the end-to-end tests share)
against real sockets for a few milliseconds; compiled or pure Python, as the suite's pass.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from pgwarden.proxy import loop
from pgwarden.proxy.reactor import PgwardenReactor


@implementer(IHalfCloseableProtocol)
class _Seen(Protocol):
    """Keeps what happened to it; stops its reactor when ``stop_on`` happens."""

    def __init__(self, stop_on: str, fail_on: bytes = b"") -> None:
        self.stop_on, self.fail_on = stop_on, fail_on
        self.events: list[tuple[str, object]] = []

    def _saw(self, what: str, detail: object) -> None:
        self.events.append((what, detail))
        if what == self.stop_on:
            self.transport.reactor.stop()

    def dataReceived(self, data: bytes) -> None:
        self._saw("data", data)
        if self.fail_on and self.fail_on in data:
            raise RuntimeError("the protocol failed")

    def readConnectionLost(self) -> None:
        self._saw("half-closed", None)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        self._saw("lost", reason.type if reason is not None else None)


def _serve(reactor: PgwardenReactor, protocol: _Seen) -> socket.socket:
    """A listening port on ``reactor`` whose one connection is ``protocol``; a client connected to it."""
    factory = Factory()
    factory.buildProtocol = lambda addr: protocol
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return socket.create_connection(("127.0.0.1", port.getHost().port))


def _run(reactor: PgwardenReactor, within_s: float = 10.0) -> None:
    guard = reactor.callLater(within_s, reactor.stop)
    reactor.run(installSignalHandlers=False)
    assert not guard.called, "the reactor was stopped by the guard, not by the test's event"
    guard.cancel()


def _turn_until(reactor: PgwardenReactor, done, within_s: float = 10.0) -> None:
    """Turns of ``reactor`` (without running it, which would close all at its stop) until ``done()``."""
    import time

    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, "what the test waits for never happened"
        reactor.iterate(0.01)


@pytest.fixture
def reactor():
    r = PgwardenReactor()
    yield r
    r._poller.close()


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_plain_tcp_reads_take_the_direct_path_and_reach_the_protocol(reactor):
    assert loop.PLAIN_TCP, "this Twisted's tcp classes read otherwise: every read takes Twisted's path"
    generic = []
    handle = reactor._doReadOrWrite
    reactor._doReadOrWrite = lambda s, fd, event: (generic.append(type(s).__name__), handle(s, fd, event))
    seen = _Seen("data")
    client = _serve(reactor, seen)
    client.sendall(b"hello")
    _run(reactor)
    assert seen.events[0] == ("data", b"hello")  # then the connection is lost as the reactor stops
    assert "Server" not in generic  # the listening port's accept went through Twisted's, the read not
    client.close()


def test_end_of_file_is_a_half_close_for_a_half_closeable_protocol_then_the_close(reactor):
    seen = _Seen("lost")
    client = _serve(reactor, seen)
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    reactor.callLater(0.01, lambda: seen.transport.loseConnection())  # after the half-close arrived
    _run(reactor)
    assert seen.events == [("data", b"last words"), ("half-closed", None), ("lost", error.ConnectionDone)]
    client.close()


def test_a_protocol_failure_is_logged_and_drops_the_connection_and_the_loop_goes_on(reactor, logged):
    seen = _Seen("", fail_on=b"boom")
    client = _serve(reactor, seen)
    client.sendall(b"boom")
    later = []
    reactor.callLater(0.05, lambda: (later.append(True), reactor.stop()))
    _run(reactor)
    assert seen.events == [("data", b"boom"), ("lost", RuntimeError)]
    assert later == [True]
    assert any("the protocol failed" in str(e.get("failure", "")) for e in logged)
    client.close()


def test_a_read_after_a_reset_is_a_lost_connection_and_a_read_with_nothing_there_is_nothing(reactor):
    seen = _Seen("")
    client = _serve(reactor, seen)
    client.sendall(b"x")
    _turn_until(reactor, lambda: seen.events)
    loop.read_event(reactor, seen.transport)  # nothing to read: EAGAIN, nothing happens
    assert seen.events == [("data", b"x")]
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset, which on loopback has arrived when close returns
    loop.read_event(reactor, seen.transport)
    assert seen.events == [("data", b"x"), ("lost", error.ConnectionLost)]


def test_timed_calls_thread_callbacks_end_of_poll_calls_and_shutdown_still_run(reactor):
    order = []
    reactor.addSystemEventTrigger("before", "shutdown", lambda: order.append("shutdown"))
    reactor.callLater(0.02, lambda: order.append("timer"))
    cancelled = reactor.callLater(0.01, lambda: order.append("cancelled"))
    cancelled.cancel()

    def from_thread() -> None:
        reactor.callFromThread(lambda: (order.append("thread"), reactor.call_at_end_of_poll(end)))

    def end() -> None:
        order.append("end of poll")
        reactor.stop()

    reactor.callLater(0.04, lambda: threading.Thread(target=from_thread).start())
    _run(reactor)
    assert order == ["timer", "thread", "end of poll", "shutdown"]


def test_a_failure_outside_any_event_is_logged_and_the_loop_goes_on(reactor, logged):
    class FailingOnce:
        def __init__(self, poller) -> None:
            self.poller, self.failed = poller, False

        def poll(self, *args):
            if not self.failed:
                self.failed = True
                raise RuntimeError("poll failed once")
            return self.poller.poll(*args)

        def __getattr__(self, name):
            return getattr(self.poller, name)

    reactor._poller = FailingOnce(reactor._poller)
    reactor.callLater(0.01, reactor.stop)
    _run(reactor)
    assert reactor._poller.failed
    assert any(e.get("log_format") == "Unexpected error in main loop" and "poll failed once" in str(e["log_failure"])
               for e in logged)


def test_what_an_end_of_poll_call_asked_by_a_timer_asks_for_does_not_wait_for_the_next_event(reactor):
    # A timed call's end-of-poll work (pgwarden.turns: sends, then the after-sends work) that
    # arms a timer: the poll's timeout must count it, or it waits for the next event (the guard).
    fired = []

    def arm() -> None:
        reactor.callLater(0.01, lambda: (fired.append(True), reactor.stop()))

    reactor.callLater(0.01, lambda: reactor.call_at_end_of_poll(arm))
    _run(reactor)
    assert fired == [True]


@pytest.mark.parametrize("how", ["reset", "delay"])
def test_a_timed_call_made_sooner_by_an_event_fires_at_its_new_time(reactor, how):
    # The loop keeps the first timed call's time between wake-ups (`LoopState._first_time`): a
    # call made sooner outside the timed calls' run (here by a read) must be seen, or the loop
    # sleeps until the time it kept (the guard's, which then stops the reactor: the test fails).
    fired = []
    far = reactor.callLater(100.0, lambda: fired.append("far"))

    class Sooner(_Seen):
        def dataReceived(self, data: bytes) -> None:
            if how == "reset":
                far.reset(0.01)
            else:
                far.delay(-99.99)

    def fire() -> None:
        fired.append("sooner")
        reactor.stop()

    far.func = fire
    protocol = Sooner("never")
    client = _serve(reactor, protocol)
    with client:
        # (Sent now, not by a timed call: the loop's run of the timed calls would forget the time
        # kept anyway. The read comes in a wake-up after the accept's, with the time kept.)
        client.sendall(b"x")
        _run(reactor, within_s=3.0)
    assert fired == ["sooner"]


def test_a_timed_call_added_by_an_event_before_the_first_fires_at_its_time(reactor):
    # A new call (here from a read) sooner than the kept first one goes through the loop's run
    # of the timed calls, which forgets the time kept.
    fired = []
    reactor.callLater(100.0, lambda: fired.append("far"))

    class Adds(_Seen):
        def dataReceived(self, data: bytes) -> None:
            reactor.callLater(0.01, lambda: (fired.append("new"), reactor.stop()))

    client = _serve(reactor, Adds("never"))
    with client:
        client.sendall(b"x")
        _run(reactor, within_s=3.0)
    assert fired == ["new"]


class _Direct(loop.DirectIO):
    """A registered connection's reads, as the pump's `received` would take them."""

    def __init__(self, transport, seen: _Seen) -> None:
        fd, size = loop.direct_io_fd(transport.reactor, transport)
        assert fd >= 0, "a plain TCP connection on pgwarden's reactor can be read directly"
        super().__init__(transport, fd, size)
        self.seen = seen

    def received(self, data: bytes) -> None:
        self.seen._saw("direct", data)
        if self.seen.fail_on and self.seen.fail_on in data:
            raise RuntimeError("the protocol failed")


def _connected(reactor: PgwardenReactor, seen: _Seen) -> socket.socket:
    client = _serve(reactor, seen)
    _turn_until(reactor, lambda: seen.transport is not None)
    return client


def test_a_registered_connection_is_read_by_its_entry_until_withdrawn(reactor):
    seen = _Seen("")
    client = _connected(reactor, seen)
    entry = _Direct(seen.transport, seen)
    loop.register_direct_io(reactor, entry)
    client.sendall(b"one")
    _turn_until(reactor, lambda: seen.events)
    assert seen.events == [("direct", b"one")]  # the entry's method, not the protocol's dataReceived
    loop.withdraw_direct_io(reactor, entry)
    assert reactor.direct_reads == {}
    client.sendall(b"two")
    _turn_until(reactor, lambda: len(seen.events) >= 2)
    assert seen.events[1] == ("data", b"two")
    client.close()


def test_an_entry_for_another_connection_under_the_same_descriptor_is_not_used_nor_withdrawn(reactor):
    # A connection closed, a new one got its descriptor number: the stale entry must not read it,
    # and withdrawing the stale entry must not withdraw the new one's.
    old, new = _Seen(""), _Seen("")
    client = _connected(reactor, new)
    stale = loop.DirectIO(old, new.transport.fileno(), 65536)  # registered for another connection
    loop.register_direct_io(reactor, stale)
    client.sendall(b"hello")
    _turn_until(reactor, lambda: new.events)
    assert new.events == [("data", b"hello")]
    current = _Direct(new.transport, new)
    loop.register_direct_io(reactor, current)
    loop.withdraw_direct_io(reactor, stale)
    assert reactor.direct_reads == {current.fd: current}
    client.close()


def test_direct_reads_end_of_file_reset_and_failure_have_read_events_outcomes(reactor, logged):
    done, reset, failing = _Seen(""), _Seen(""), _Seen("", fail_on=b"boom")
    clients = [_connected(reactor, seen) for seen in (done, reset, failing)]
    for seen in (done, reset, failing):
        loop.register_direct_io(reactor, _Direct(seen.transport, seen))
    clients[0].sendall(b"last words")
    clients[0].shutdown(socket.SHUT_WR)
    clients[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    clients[1].close()
    clients[2].sendall(b"boom")
    _turn_until(reactor, lambda: len(done.events) >= 2 and reset.events and len(failing.events) >= 2)
    assert done.events == [("direct", b"last words"), ("half-closed", None)]
    assert reset.events == [("lost", error.ConnectionLost)]
    assert failing.events == [("direct", b"boom"), ("lost", RuntimeError)]
    assert any("the protocol failed" in str(e.get("failure", "")) for e in logged)
    for entry in list(reactor.direct_reads.values()):
        loop.withdraw_direct_io(reactor, entry)
    done.transport.loseConnection()
    clients[0].close()
    clients[2].close()


def test_only_plain_tcp_connections_on_pgwardens_reactor_can_be_read_directly(reactor):
    seen = _Seen("")
    client = _connected(reactor, seen)
    transport = seen.transport
    assert loop.direct_io_fd(reactor, transport) == (transport.fileno(), transport.bufferSize)
    transport.bufferSize = 256 * 1024  # the upstream connection's own read size
    assert loop.direct_io_fd(reactor, transport) == (transport.fileno(), 256 * 1024)
    assert loop.direct_io_fd(object(), transport)[0] == -1  # another reactor
    transport.TLS = True
    assert loop.direct_io_fd(reactor, transport)[0] == -1
    del transport.TLS
    transport.doRead = transport.doRead  # replaced, as while a client connects
    assert loop.direct_io_fd(reactor, transport)[0] == -1
    client.close()
