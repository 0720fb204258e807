"""The end of a turn (`pgwarden.turns.Turns`): barriers, then sends, then the after-sends work,
asked for once per turn that queued something, the same way on pgwarden's reactor and any other."""

from __future__ import annotations

import os

import pytest
from twisted.internet.testing import StringTransport

from pgwarden.proxy.reactor import PgwardenReactor
from pgwarden.testing.clocks import EndOfPollClock, StockClock
from pgwarden.turns import IEndOfPoll, Turns, TurnWork

CLOCKS = [pytest.param(EndOfPollClock, id="pgwarden-reactor"), pytest.param(StockClock, id="stock-reactor")]


class _Tls(StringTransport):
    """A transport `send_now` hands to ``write`` (as a TLS one): what was written, in order."""

    TLS = True


def _pending(clock) -> int:
    """How many ends of turn are asked for and not yet run."""
    if IEndOfPoll.providedBy(clock):
        return len(clock.at_end)
    return len(clock.getDelayedCalls())


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_turns_bytes_leave_at_its_end_after_its_barriers_and_before_the_after_work(clock):
    reactor = clock()
    turns = Turns(reactor)
    up, down = _Tls(), _Tls()
    seen = []
    turns.add_barrier(lambda: seen.append(("barrier", up.value(), down.value())))
    turns.add_after_sends(lambda: seen.append(("after", up.value(), down.value())))
    turns.send(up, [b"Q", b"uery"])
    turns.send(down, [b"row"])
    turns.send(up, [b"Sync"])
    assert (up.value(), down.value()) == (b"", b"")  # nothing leaves during the turn
    assert _pending(reactor) == 1  # one end asked for, however many sends
    reactor.turn()
    assert seen == [("barrier", b"", b""), ("after", b"QuerySync", b"row")]
    assert _pending(reactor) == 0


@pytest.mark.parametrize("clock", CLOCKS)
def test_the_attached_work_runs_first_of_the_barriers_and_first_after_the_sends_until_detached(clock):
    """The recorder's place (`TurnWork`): its barrier before the other barriers and the sends, its
    after-sends work as soon as the sends have left; detached, neither runs."""
    reactor = clock()
    turns = Turns(reactor)
    up = _Tls()
    seen = []

    class Work(TurnWork):
        def barrier(self):
            seen.append(("work barrier", up.value()))

        def after_sends(self):
            seen.append(("work after", up.value()))

    work = Work()
    turns.attach(work)
    turns.add_barrier(lambda: seen.append(("barrier", up.value())))
    turns.add_after_sends(lambda: seen.append(("after", up.value())))
    turns.send(up, [b"Q"])
    reactor.turn()
    assert seen == [("work barrier", b""), ("barrier", b""), ("work after", b"Q"), ("after", b"Q")]
    turns.detach(TurnWork())  # another one: this stays
    turns.send(up, [b"R"])
    reactor.turn()
    assert seen[4:] == [("work barrier", b"Q"), ("barrier", b"Q"), ("work after", b"QR"), ("after", b"QR")]
    turns.detach(work)
    turns.send(up, [b"S"])
    reactor.turn()
    assert seen[8:] == [("barrier", b"QR"), ("after", b"QRS")]


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_turn_that_queued_nothing_asks_for_no_end_and_a_wake_asks_for_one(clock):
    reactor = clock()
    turns = Turns(reactor)
    barriers = []
    turns.add_barrier(lambda: barriers.append(1))
    reactor.turn()
    assert barriers == [] and _pending(reactor) == 0
    turns.wake()
    turns.wake()
    assert _pending(reactor) == 1
    reactor.turn()
    assert barriers == [1]


@pytest.mark.parametrize("clock", CLOCKS)
def test_what_the_after_work_queues_gets_an_end_of_its_own(clock):
    reactor = clock()
    turns = Turns(reactor)
    barriers, after = [], []
    turns.add_barrier(lambda: barriers.append(len(after)))

    def build() -> None:  # as the recorder's result records: built after the sends, then written
        after.append(1)
        if len(after) == 1:
            turns.wake()

    turns.add_after_sends(build)
    turns.wake()
    reactor.turn()
    assert barriers == [0, 1]  # the second barrier saw what the first after-work built
    assert _pending(reactor) == 0


@pytest.mark.parametrize("clock", CLOCKS)
def test_discard_drops_only_that_transports_bytes(clock):
    reactor = clock()
    turns = Turns(reactor)
    up, down = _Tls(), _Tls()
    turns.add_barrier(lambda: turns.discard(up))  # as a failed record write: the statement stays
    turns.send(up, [b"DELETE"])
    turns.send(down, [b"FATAL"])
    reactor.turn()
    assert (up.value(), down.value()) == (b"", b"FATAL")


class _Ordered(_Tls):
    """Notes writes and the close in the order they happen."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list = []

    def write(self, data: bytes) -> None:
        self.events.append(data)
        super().write(data)

    def loseConnection(self) -> None:
        self.events.append("close")
        super().loseConnection()


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_close_asked_for_during_a_turn_follows_that_turns_bytes(clock):
    # As a session whose token expired (a timed call): the FATAL queued, then the close.
    reactor = clock()
    turns = Turns(reactor)
    client = _Ordered()
    turns.send(client, [b"FATAL"])
    turns.close(client)
    turns.send(client, [b"late"])  # Twisted would still send what was written before the close
    assert client.events == []
    reactor.turn()
    assert client.events == [b"FATAL", b"late", "close"]


def test_removed_barriers_and_work_no_longer_run():
    reactor = StockClock()
    turns = Turns(reactor)
    ran = []

    def barrier() -> None:
        ran.append("barrier")

    def work() -> None:
        ran.append("after")

    turns.add_barrier(barrier)
    turns.add_after_sends(work)
    turns.remove_barrier(barrier)
    turns.remove_after_sends(work)
    turns.remove_barrier(barrier)  # twice: no error (a recorder closed twice)
    turns.wake()
    reactor.turn()
    assert ran == []


@pytest.fixture
def pgwarden_reactor():
    """pgwarden's reactor, not installed: polled by the test."""
    reactor = PgwardenReactor()
    yield reactor
    reactor.waker.connectionLost(None)  # its pipe
    reactor._poller.close()


def test_pgwarden_reactor_ends_a_turn_once_the_polls_events_are_handled(pgwarden_reactor):
    reactor = pgwarden_reactor
    turns = Turns(reactor)
    assert IEndOfPoll.providedBy(reactor) and not reactor.getDelayedCalls()
    up = _Tls()
    turns.send(up, [b"x"])
    assert not reactor.getDelayedCalls()  # no timed call: the end of the poll
    reactor.doPoll(0)
    assert up.value() == b"x"


def test_a_failing_end_of_poll_call_is_logged_and_the_others_still_run(pgwarden_reactor):
    from twisted.logger import globalLogPublisher

    reactor = pgwarden_reactor
    ran, logged = [], []

    def fails() -> None:
        raise RuntimeError("a bug")

    globalLogPublisher.addObserver(logged.append)
    try:
        reactor.call_at_end_of_poll(fails)
        reactor.call_at_end_of_poll(lambda: ran.append(1))
        reactor.doPoll(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert ran == [1]
    assert any(e.get("log_failure") is not None and "a bug" in str(e["log_failure"].value) for e in logged)


class _StandIn:
    """What the e2e tests put in a transport's ``socket`` to watch it: sends, and keeps what it sent."""

    def __init__(self, sock):
        self.sock, self.sent = sock, []

    def send(self, data):
        self.sent.append(bytes(data))
        return self.sock.send(data)

    def fileno(self):
        raise AssertionError("a stand-in's descriptor is not written to directly")


def _plain_server(sock, **attrs):
    """A Twisted tcp Server as `send_now` reads it (its instance dictionary), on ``sock``."""
    from twisted.internet import tcp

    transport = tcp.Server.__new__(tcp.Server)
    written = []
    transport.__dict__.update({"socket": sock, "connected": 1, "_tempDataLen": 0, "write": written.append, **attrs})
    return transport, written


@pytest.mark.parametrize("queued", [{}, {"dataBuffer": b"earlier"}, {"_tempDataLen": 3}, {"disconnecting": 1},
                                    {"TLS": True}, {"connected": 0}])
def test_send_now_sends_on_the_socket_only_when_a_plain_transport_has_nothing_queued(queued):
    import socket

    from pgwarden.turns import send_now

    a, b = socket.socketpair()
    with a, b:
        transport, written = _plain_server(a, **queued)
        send_now(transport, b"bytes")
        if queued:  # behind queued bytes, or not a connected plain socket: Twisted's write, in order
            assert written == [b"bytes"]
        else:
            assert written == [] and b.recv(100) == b"bytes"


def test_send_now_hands_a_stand_in_for_a_socket_to_its_own_send():
    # A socket.socket's bytes go with os.write on its descriptor (the test above: they arrive);
    # anything else in the transport's ``socket`` (the e2e tests' watchers) is asked to send them.
    import socket

    from pgwarden.turns import send_now

    a, b = socket.socketpair()
    with a, b:
        stand_in = _StandIn(a)
        transport, written = _plain_server(stand_in)
        send_now(transport, b"bytes")
        assert stand_in.sent == [b"bytes"] and written == [] and b.recv(100) == b"bytes"


@pytest.mark.parametrize("queued", [{}, {"dataBuffer": b"earlier"}, {"TLS": True}, {"connected": 0}])
def test_send_chunks_writes_them_at_once_and_queues_what_the_kernel_did_not_take_in_order(queued):
    """`send_chunks`: one writev of all the chunks when `send_now` would write now; what the
    kernel leaves (its buffer full) goes to Twisted's ``write`` in order, from the byte it
    stopped at; otherwise, the joined bytes as `send_now` sends them."""
    import socket

    from pgwarden.turns import send_chunks

    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        transport, written = _plain_server(a, **queued)
        chunks = [b"head", os.urandom(3_000_000), b"middle", os.urandom(1_000_000), b"tail"]
        send_chunks(transport, chunks)
        received = bytearray()
        while True:
            try:
                got = b.recv(1 << 20)
            except BlockingIOError:
                break
            received += got
        if queued:
            assert bytes(received) == b"" and written == [b"".join(chunks)]
        else:
            assert 0 < len(received) < 4_000_010  # the kernel took part: the rest is queued
            assert bytes(received) + b"".join(written) == b"".join(chunks)
            assert all(type(w) is bytes for w in written) and len(written) <= len(chunks)
        transport, written = _plain_server(a, **queued)
        for many in ([b"x"] * 65, [b"small", b" ", b"answer"]):  # more than writev takes; few bytes
            transport, written = _plain_server(a, **queued)
            send_chunks(transport, many)  # joined, sent as `send_now` sends them
            if queued:
                assert written == [b"".join(many)]
            else:
                assert written == [] and b.recv(100) == b"".join(many)


def test_turns_on_pgwardens_reactor_append_their_end_to_its_end_of_poll_list_once():
    reactor = PgwardenReactor()
    try:
        turns = Turns(reactor)
        up = _Tls()
        turns.send(up, [b"a"])
        turns.send(up, [b"b", b"c"])
        assert reactor._at_end == [turns._end_call]
        reactor._at_end.pop()()
        assert up.value() == b"abc"
    finally:
        reactor._poller.close()


@pytest.mark.parametrize("queued", [{}, {"dataBuffer": b"earlier"}, {"_tempDataLen": 3}, {"disconnecting": 1},
                                    {"connected": 0, "socket": None}])
def test_send_direct_writes_the_registered_descriptor_only_when_send_now_would_write_the_socket(queued):
    # (A closed connection: Twisted clears ``connected`` and deletes the socket in one call;
    # TLS is never started on a registered connection, `direct_io_fd` refuses one that has it.)
    import socket

    from pgwarden.proxy.loop import DirectIO
    from pgwarden.turns import send_direct

    a, b = socket.socketpair()
    with a, b:
        transport, written = _plain_server(a)
        entry = DirectIO(transport, a.fileno(), 65536)
        transport.__dict__.update(queued)  # what changed since it was registered
        send_direct(entry, [b"bytes"])
        if queued:
            assert written == [b"bytes"]
        else:
            assert written == [] and b.recv(100) == b"bytes"


def test_send_direct_leaves_a_connection_whose_socket_is_gone_or_replaced_to_send_now():
    # A closed connection's socket is deleted (its descriptor may be another connection's by then);
    # a stand-in put in its place (the e2e tests' watchers) must see the bytes.
    import socket

    from pgwarden.proxy.loop import DirectIO
    from pgwarden.turns import send_direct

    a, b, c, d = *socket.socketpair(), *socket.socketpair()
    with a, b, c, d:
        transport, written = _plain_server(a)
        entry = DirectIO(transport, a.fileno(), 65536)
        stand_in = _StandIn(a)
        transport.socket = stand_in
        send_direct(entry, [b"watched"])
        assert stand_in.sent == [b"watched"] and b.recv(100) == b"watched"
        del transport.socket  # closed: Twisted deletes it, and the descriptor number is free
        transport.connected = 0
        send_direct(entry, [b"late"])
        assert written == [b"late"]  # Twisted's write, which drops what a closed connection is given
        # registered with a stand-in already there (the upstream's watcher): never written directly
        other, other_written = _plain_server(_StandIn(c))
        watched = DirectIO(other, c.fileno(), 65536)
        assert watched.socket is None
        send_direct(watched, [b"x"])
        assert other.socket.sent == [b"x"] and d.recv(10) == b"x" and other_written == []


@pytest.mark.parametrize("clock", CLOCKS)
def test_turns_send_a_direct_entrys_bytes_in_order_with_its_connections_and_discard_them_by_connection(clock):
    import socket

    from pgwarden.proxy.loop import DirectIO

    a, b = socket.socketpair()
    with a, b:
        transport, written = _plain_server(a)
        entry = DirectIO(transport, a.fileno(), 65536)
        reactor = clock()
        turns = Turns(reactor)
        turns.send(entry, [b"one", b"two"])
        turns.send(transport, [b"three"])
        reactor.turn()
        assert b.recv(100) == b"onetwothree" and written == []
        other = _Tls()
        turns.add_barrier(lambda: turns.discard(transport))  # the connection's bytes, whichever way queued
        turns.send(entry, [b"dropped"])
        turns.send(other, [b"kept"])
        turns.send(transport, [b"dropped too"])
        reactor.turn()
        assert other.value() == b"kept"
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(100)


def test_send_direct_sends_a_statements_answer_on_the_registered_descriptor_and_a_large_send_as_the_connection_would():
    # Fewer than 32 KiB (one chunk or several, joined): written on the entry's descriptor. From
    # 32 KiB, the connection's usual path (`send_now` / `send_chunks`: its socket's descriptor), so
    # a large result's reads are relayed as they were without direct sends. An entry registered
    # under another socket's descriptor tells the two apart.
    import socket

    from pgwarden.proxy.loop import DirectIO
    from pgwarden.turns import send_direct

    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        for s in (b, d):
            s.setblocking(False)
        transport, written = _plain_server(a)
        entry = DirectIO(transport, c.fileno(), 65536)
        send_direct(entry, [b"one"])
        send_direct(entry, [b"two", b"three"])
        assert d.recv(100) == b"onetwothree"
        small = b"s" * (32768 - 1)
        send_direct(entry, [small[:100], small[100:]])
        assert _drain(d) == small
        large = b"L" * 32768
        send_direct(entry, [large])
        assert _drain(b) == large
        send_direct(entry, [large[:10], large[10:]])
        assert _drain(b) == large
        with pytest.raises(BlockingIOError):
            d.recv(100)
        assert written == []


def _drain(sock) -> bytes:
    got = bytearray()
    while True:
        try:
            part = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        got += part
