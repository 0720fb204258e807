"""`Pump`, the relay phase of a session, without sockets: its connection, host and decider are
fakes of what it reads of them, its transports StringTransports, its relay a real one. What it
must keep doing as the connection did before it: fail closed when the decider fails, pause a
client whose backlog grows while a verdict is pending, ask for the catalog again when a change
may have committed, end an idle session when pgwarden shuts down.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from pgwarden.limits import SessionLimits
from pgwarden.metrics import Stats
from pgwarden.proxy.pump import Pump
from pgwarden.proxy.state import ConnectionState, catalog_unread_of
from pgwarden.relay.engine import ALLOW, Relay
from pgwarden.turns import Turns
from pgwarden.verdict import Refusal, Verdict
from pgwarden.wire import messages as m


class Transport(StringTransport):
    TLS = True  # `send_now` then writes as Twisted's write does: into the StringTransport


@attrs.define
class Limits:
    max_backlog_bytes: int = 1 << 20


@attrs.define
class Config:
    limits: Limits = attrs.Factory(Limits)


@attrs.define
class Host:
    config: Config = attrs.Factory(Config)
    stopping: bool = False


@attrs.define
class Decider:
    """Answers each statement with ``answer(request)``; keeps what `recorded` was told."""

    answer: object
    recorded_as: list[tuple[Verdict, Refusal]] = attrs.Factory(list)

    def decide(self, conn: object, request: object) -> object:
        return self.answer(request)  # type: ignore[operator]

    def recorded(self, conn: object, request: object, statement: None, verdict: Verdict,
                 outcome: Refusal) -> object:
        self.recorded_as.append((verdict, outcome))
        return outcome


@attrs.define
class Catalog:
    invalidated: list[bool] = attrs.Factory(list)
    read: int = 0

    def invalidate(self, reason: str, redefines: bool = True) -> int:
        self.invalidated.append(redefines)
        return 7

    def has_read(self, ticket: int) -> bool:
        return ticket <= self.read


@attrs.define
class Services:
    decider: Decider
    host: Host = attrs.Factory(Host)
    turns: Turns = attrs.Factory(lambda: Turns(MemoryReactorClock()))
    stats: Stats = attrs.Factory(Stats)
    catalog: Catalog = attrs.Factory(Catalog)


class Conn(ConnectionState):
    """The connection as the pump sees it: its native state (`pgwarden.proxy.state`, which the
    pump reads natively, compiled) and the shutdown it asks for."""

    def __init__(self, services: Services) -> None:
        super().__init__(services, SessionLimits())  # type: ignore[arg-type]
        self.phase = "relay"
        self.ended_for_shutdown: list[bool] = []

    def end_for_shutdown(self, running: bool) -> None:
        self.ended_for_shutdown.append(running)


class Session:
    def __init__(self, answer: object) -> None:
        self.decider = Decider(answer)
        self.services = Services(self.decider)
        self.conn = Conn(self.services)
        self.client, self.upstream = Transport(), Transport()
        self.pump = Pump(self.conn, self.client, self.upstream)  # type: ignore[arg-type]
        self.pump.relay = Relay(self.pump.decide)

    def from_client(self, *msgs: m.Message) -> None:
        self.pump.client_data(b"".join(x.encode() for x in msgs))
        self.end_turn()

    def from_server(self, *msgs: m.Message) -> None:
        self.pump.server_data(b"".join(x.encode() for x in msgs))
        self.end_turn()

    def end_turn(self) -> None:
        self.services.turns._end()

    def sent_upstream(self) -> bytes:
        out = self.upstream.value()
        self.upstream.clear()
        return out


def test_a_decider_that_raises_refuses_and_the_refusal_is_recorded():
    def raises(request: object) -> object:
        raise RuntimeError("plugin exploded")

    s = Session(raises)
    s.from_client(m.Query("select 1"))
    sent = s.sent_upstream()
    assert b"policy check failed" in sent and b"select 1" not in sent  # the DO block that raises it
    ((verdict, refusal),) = s.decider.recorded_as
    assert verdict.action == "block" and refusal.sqlstate == "42501"


def test_a_decider_that_answers_nonsense_refuses():
    s = Session(lambda request: 42)
    s.from_client(m.Query("select 1"))
    assert b"policy check failed" in s.sent_upstream()
    assert [refusal.sqlstate for _, refusal in s.decider.recorded_as] == ["42501"]


def test_a_deferred_that_already_failed_refuses():
    s = Session(lambda request: Deferred.fromCoroutine(_fails()))
    s.from_client(m.Query("select 1"))
    assert b"policy check failed" in s.sent_upstream()


async def _fails() -> object:
    raise RuntimeError("the policy store is down")


def test_a_growing_backlog_pauses_the_client_until_the_verdict_comes():
    pending: Deferred[object] = Deferred()
    s = Session(lambda request: pending if request.sql == "select 1" else ALLOW)  # type: ignore[attr-defined]
    s.services.host.config.limits.max_backlog_bytes = 40
    s.from_client(m.Query("select 1"))
    assert s.client.producerState == "producing"  # a statement waits; nothing queued behind it yet
    s.from_client(m.Query("select 'queued behind the first, longer than the backlog allows'"))
    assert s.client.producerState == "paused"
    assert s.sent_upstream() == b""
    pending.callback(ALLOW)
    s.end_turn()
    assert s.client.producerState == "producing"
    assert s.sent_upstream().count(b"select") == 2


def test_the_catalog_is_read_again_once_a_change_may_have_committed():
    s = Session(lambda request: ALLOW)
    s.conn.catalog_changed = s.conn.catalog_redefined = True
    assert catalog_unread_of(s.conn)
    s.from_client(m.Query("create view v as select 1"))
    s.from_server(m.CommandComplete("CREATE VIEW"))
    assert s.services.catalog.invalidated == []  # not before its ReadyForQuery
    s.from_server(m.ReadyForQuery("I"))
    assert s.services.catalog.invalidated == [True]
    assert (s.conn.catalog_changed, s.conn.catalog_redefined, s.conn.catalog_ticket) == (False, False, 7)
    assert catalog_unread_of(s.conn)  # ticket 7 not read yet
    s.services.catalog.read = 7
    assert not catalog_unread_of(s.conn)


def test_an_idle_session_ends_when_pgwarden_shuts_down():
    s = Session(lambda request: ALLOW)
    s.from_client(m.Query("select 1"))
    assert not s.pump.stopping
    s.pump.stopping = True  # what `ClientConnection.shutdown_requested` tells it (e2e: test_shutdown.py)
    s.from_server(m.CommandComplete("SELECT 1"))
    assert s.conn.ended_for_shutdown == []  # its statement still runs
    s.from_server(m.ReadyForQuery("I"))
    assert s.conn.ended_for_shutdown == [False]


def test_a_closing_relay_closes_both_sides_after_its_bytes():
    s = Session(lambda request: ALLOW)
    s.pump.relay.fail("enough")
    s.pump.flush()
    s.end_turn()
    assert s.conn.phase == "closed" and s.conn.end_reason == "enough"
    assert s.client.disconnecting and s.upstream.disconnecting
    assert b"pgwarden: enough" in s.client.value()


def test_the_bytes_read_from_each_side_are_counted_in_the_stats():
    s = Session(lambda request: ALLOW)
    query = m.Query("select 1").encode()
    reply = m.CommandComplete("SELECT 1").encode() + m.ReadyForQuery("I").encode()
    s.pump.client_data(query)
    s.pump.server_data(reply)
    s.pump.client_data(query)
    stats = s.services.stats
    assert (stats.bytes_from_clients, stats.bytes_from_upstream) == (2 * len(query), len(reply))


def test_a_pump_made_while_pgwarden_shuts_down_ends_its_session_once_idle():
    s = Session(lambda request: ALLOW)
    s.services.host.stopping = True
    from pgwarden.proxy.pump import Pump

    assert Pump(s.conn, s.client, s.upstream).stopping
