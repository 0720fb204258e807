"""`ClientConnection` without an `Application`: its collaborators are fakes of the narrow
interfaces it is given (`SessionServices`), its transport a StringTransport, its reactor a
MemoryReactorClock. The login's protocol is `test_client_login.py`'s; this checks what the
connection does with the login's actions: who it asks, what it records, when it closes.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport

from pgwarden.cancels import CancelForwarder
from pgwarden.config import Config, parse_config
from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.metrics import Stats
from pgwarden.proxy.client import ClientConnection, SessionServices
from pgwarden.turns import Turns
from pgwarden.wire import messages as m

CONFIG = """
listen: {host: 127.0.0.1, port: 6432}
upstream: {host: db.internal, port: 5433, database: appdb, user: app}
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}
policies:
  - {name: agents, when: {groups: [ai-agents]}}
"""
AGENT = Identity("agent-1", frozenset({"ai-agents"}))
STRANGER = Identity("someone", frozenset({"humans"}))


class Transport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - Twisted's name
        pass


@attrs.define
class Host:
    config: Config
    client_tls: None = None
    upstream_tls: None = None
    stopping: bool = False
    connections: set[ClientConnection] = attrs.Factory(set)

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def hold_shutdown(self, until: Deferred[None]) -> None:
        pass


@attrs.define
class Authenticator:
    """Answers with ``answer`` (an Identity, a Deferred of one, or an exception to raise)."""

    answer: object
    asked: list[tuple[str, str]] = attrs.Factory(list)

    def authenticate(self, startup: m.StartupMessage, token: str) -> object:
        self.asked.append((startup.get("user") or "", token))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@attrs.define
class Events:
    seen: list[tuple[str, ...]] = attrs.Factory(list)

    def session_started(self, conn: ClientConnection) -> None:
        self.seen.append(("started",))

    def session_ended(self, conn: ClientConnection, reason: str) -> None:
        self.seen.append(("ended", reason))

    def auth_failed(self, conn: ClientConnection, reason: str, sqlstate: str) -> None:
        self.seen.append(("auth_failed", reason, sqlstate))

    def relay(self, *args: object) -> None:
        raise AssertionError("no relay in these tests")


class Nothing:
    """A collaborator these tests never reach (the decider, the catalog)."""


class Setup:
    def __init__(self, answer: object, config: str = CONFIG, peer: str = "127.0.0.1") -> None:
        self.reactor = MemoryReactorClock()
        self.config = parse_config(config)
        self.host = Host(self.config)
        self.authenticator = Authenticator(answer)
        self.events = Events()
        services = SessionServices(
            host=self.host, reactor=self.reactor, authenticator=self.authenticator, decider=Nothing(),
            events=self.events, relays=self.events, catalog=Nothing(),
            canceller=CancelForwarder(self.reactor, self.config.upstream), turns=Turns(self.reactor),
            stats=Stats(),
        )
        self.conn = ClientConnection(services)
        self.transport = Transport(peerAddress=IPv4Address("TCP", peer, 40000))
        self.conn.makeConnection(self.transport)

    def client(self, data: bytes) -> None:
        self.conn.dataReceived(data)
        self.reactor.advance(0)  # the end of the turn: sends, then closes

    def down(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out


def startup() -> bytes:
    return m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", "appdb"))).encode()


def password(token: str = "the-token") -> bytes:
    return m.PasswordMessage.cleartext(token).encode()


def fatal(sqlstate: str, message: str) -> bytes:
    return m.ErrorResponse.build("FATAL", sqlstate, message).encode()


CLEARTEXT = m.Authentication(m.Authentication.CLEARTEXT).encode()


def test_a_refused_token_is_recorded_and_the_client_told_nothing_more():
    s = Setup(AuthenticationFailed("signature expired"))
    s.client(startup() + password())
    assert s.authenticator.asked == [("agent", "the-token")]
    assert s.down() == CLEARTEXT + fatal("28P01", "pgwarden: authentication failed")
    assert s.events.seen == [("auth_failed", "signature expired", "28P01")]
    assert s.transport.disconnecting
    s.conn.connectionLost()
    assert s.host.connections == set()


def test_an_identity_no_policy_matches_is_refused_with_28000():
    s = Setup(STRANGER)
    s.client(startup() + password())
    assert s.down() == CLEARTEXT + fatal("28000", "pgwarden: no policy for this identity")
    assert s.events.seen == [("auth_failed", "no policy for this identity", "28000")]
    assert s.reactor.tcpClients == []


def test_an_accepted_identity_opens_the_upstream_session_and_nothing_else_yet():
    s = Setup(AGENT)
    s.client(startup() + password() + m.Query("select 1").encode())
    assert s.down() == CLEARTEXT  # AuthenticationOk waits for the upstream session
    ((host, port, _factory, _timeout, _bind),) = s.reactor.tcpClients
    assert (host, port) == ("db.internal", 5433)
    assert not s.transport.disconnecting and s.events.seen == []


def test_an_answer_that_comes_after_the_client_left_opens_nothing():
    pending: Deferred[Identity] = Deferred()
    s = Setup(pending)
    s.client(startup() + password())
    s.transport.loseConnection()
    s.conn.connectionLost()
    pending.callback(AGENT)
    assert s.reactor.tcpClients == []


def test_a_silent_client_is_dropped_after_the_startup_timeout():
    s = Setup(succeed(AGENT))
    s.client(startup()[:3])
    s.reactor.advance(s.config.auth.startup_timeout_s)
    assert s.down() == fatal("08006", "pgwarden: timed out waiting for the startup to complete")
    assert s.transport.disconnecting


def test_the_pod_identity_reads_the_token_file_at_each_connection(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("pod-token\n")
    config = CONFIG.replace("auth:\n", f"auth:\n  mode: pod\n  pod_token_file: {token}\n")
    s = Setup(AuthenticationFailed("no"), config=config)
    s.client(startup())
    assert s.authenticator.asked == [("agent", "pod-token")]
    token.unlink()
    s = Setup(AuthenticationFailed("no"), config=config)
    s.client(startup())
    assert s.authenticator.asked == []
    ((_what, reason, sqlstate),) = s.events.seen
    assert reason.startswith(f"pod identity: cannot read {token}") and sqlstate == "28P01"


def test_a_cancel_request_with_an_unknown_key_closes_the_connection():
    s = Setup(AGENT)
    s.client(m.CancelRequest(1, 2).encode())
    assert s.down() == b"" and s.transport.disconnecting
