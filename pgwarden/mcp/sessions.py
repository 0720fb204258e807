"""pgwarden sessions for MCP calls, driven over the PostgreSQL protocol itself.

Why not call the decider and the upstream directly: the wire path is more than a verdict
(masking by the RowDescription's source columns, row caps that cut DataRows, the refusal the
server raises in the statement's place, records written before a statement leaves, approval
waits, cancel). An MCP call that took a shortcut around any of it would be a second path to
secure. So an MCP call opens, or reuses, a pgwarden session of its identity: a loopback TCP
pair whose one end is an ordinary `ClientConnection` of the running `Application` (the same
`SessionServices`, but an authenticator that knows only one-time tickets this module issued),
and whose other end is `WireClient`, a small extended-protocol client.

The bearer token never goes further than the MCP endpoint: the internal login carries a random
ticket that names the already verified identity, valid once, for a connection this module
opened (nothing listens for it: the pair is made with a listener closed before it returns).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorSocket, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.proxy.client import ClientConnection, SessionServices
from pgwarden.wire import messages as m
from pgwarden.wire.framing import MessageFramer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    from pgwarden.app import Application
    from pgwarden.config import Config

log = Logger(namespace="pgwarden.mcp")

#: application_name of the internal sessions (the upstream's becomes "pgwarden:<subject> (pgwarden-mcp)")
APPLICATION_NAME = "pgwarden-mcp"
#: concurrent calls of one identity (each holds a session of its own)
MAX_SESSIONS_PER_IDENTITY = 4
#: idle sessions kept for reuse, all identities together (each holds an upstream connection)
MAX_IDLE = 16


class SessionUnavailable(Exception):
    """The internal session could not be opened or was lost; ``sqlstate`` and ``message`` say why."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message


_NO_COPY_DATA = "pgwarden: COPY FROM STDIN has no data over MCP"


@attrs.frozen
class ServerError:
    """An ErrorResponse, as the agent on the wire would read it."""

    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None

    @classmethod
    def of(cls, e: m.ErrorResponse) -> ServerError:
        return cls(e.sqlstate or "XX000", e.message or "", e.get("D"), e.get("H"))


@attrs.define
class Outcome:
    """What one statement gave the internal session: its columns and rows (text, as masked by
    pgwarden), its command tag, the notices, or the error."""

    columns: list[tuple[str, int]] = attrs.Factory(list)  # (name, type OID)
    rows: list[tuple[str | None, ...]] = attrs.Factory(list)
    tag: str | None = None
    error: ServerError | None = None
    notices: list[str] = attrs.Factory(list)
    #: the portal stopped at the call's max_rows (more rows were there)
    suspended: bool = False
    #: the statement's number in its session (records: ``session`` and ``statement``)
    audit_id: str = ""
    transaction_status: str = "I"
    #: pgwarden ended a COPY FROM STDIN itself (no data over MCP): the server's error that follows
    #: is that, said in pgwarden's words (a masking plugin may withhold the server's text)
    copy_refused: bool = False


def text_param(value: object) -> bytes | None:
    """An MCP (JSON) parameter as the text the server parses for an unspecified type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int | float):
        return repr(value).encode()
    return json.dumps(value).encode("utf-8")


class WireClient(Protocol):
    """The agent's end of an internal session: the login with a ticket, then one statement at a
    time (Parse/Bind/Describe/Execute/Sync, the unnamed statement and portal)."""

    transport: ITCPTransport

    def __init__(self, ticket: str, database: str) -> None:
        self.ticket = ticket
        self.database = database
        self.framer = MessageFramer()
        #: fires once logged in (ReadyForQuery), fails with SessionUnavailable
        self.ready: Deferred[WireClient] = Deferred()
        self.key: tuple[int, int] | None = None
        self.session_id = ""
        self.statements = 0  # Parse messages sent: the relay numbers statements the same way
        self.closed = False
        self.busy = False
        self._outcome: Outcome | None = None
        self._done: Deferred[Outcome] | None = None
        self.on_lost: Callable[[WireClient], None] = lambda _c: None
        #: told each notice while a statement runs (a held statement's "waiting for approval")
        self.on_notice: Callable[[str], None] | None = None
        #: pgwarden's side of the session (its identity, policies and SQL context)
        self.server: ClientConnection | None = None

    def connectionMade(self) -> None:
        startup = m.StartupMessage(196608, (("user", "mcp"), ("database", self.database),
                                            ("application_name", APPLICATION_NAME), ("client_encoding", "UTF8")))
        self.transport.write(startup.encode())

    def dataReceived(self, data: bytes) -> None:
        self.framer.feed(data)
        for raw in self.framer.frames():
            if not isinstance(raw, bytes):  # a Fragment: only for messages above 256 KiB
                self._fail_all(SessionUnavailable("54000", "pgwarden: a value too large for an MCP result"))
                return
            self._message(m.decode_backend(raw))

    def _message(self, msg: object) -> None:
        if isinstance(msg, m.Authentication):
            if msg.code == m.Authentication.CLEARTEXT:
                self.transport.write(m.PasswordMessage.cleartext(self.ticket).encode())
            elif msg.code != m.Authentication.OK:
                self._fail_all(SessionUnavailable("28000", "pgwarden: unexpected authentication request"))
        elif isinstance(msg, m.BackendKeyData):
            self.key = (msg.process_id, msg.secret_key)
        elif isinstance(msg, m.ReadyForQuery):
            if not self.ready.called:
                self.ready.callback(self)
                return
            outcome, done = self._outcome, self._done
            self._outcome = self._done = None
            self.busy = False
            if outcome is not None and done is not None:
                outcome.transaction_status = msg.status
                done.callback(outcome)
        elif isinstance(msg, m.ErrorResponse):
            if not self.ready.called:
                self._fail_all(SessionUnavailable(msg.sqlstate or "08006", msg.message or "pgwarden: login failed"))
            elif self._outcome is not None and self._outcome.error is None:
                self._outcome.error = ServerError(msg.sqlstate or "57014", _NO_COPY_DATA) \
                    if self._outcome.copy_refused else ServerError.of(msg)
        elif self._outcome is None:
            return  # ParameterStatus, notices at login
        elif isinstance(msg, m.RowDescription):
            self._outcome.columns = [(c.name, c.type_oid) for c in msg.columns]
        elif isinstance(msg, m.DataRow):
            self._outcome.rows.append(tuple(None if v is None else v.decode("utf-8", "replace") for v in msg.values))
        elif isinstance(msg, m.CommandComplete):
            self._outcome.tag = msg.tag
        elif isinstance(msg, m.CopyInResponse):
            # No data to send: failed at once. The server ignored the Sync sent with the Execute
            # (copy-in mode does) and discards until the next one.
            self._outcome.copy_refused = True
            self.transport.writeSequence([m.CopyFail(_NO_COPY_DATA).encode(), m.Sync().encode()])
        elif isinstance(msg, m.PortalSuspended):
            self._outcome.suspended = True
        elif isinstance(msg, m.NoticeResponse):
            self._outcome.notices.append(msg.message or "")
            if self.on_notice is not None:
                self.on_notice(msg.message or "")

    def run(self, sql: str, params: Sequence[object], max_rows: int) -> Deferred[Outcome]:
        """One statement, extended protocol; rows beyond ``max_rows`` stay in the portal."""
        if self.closed or self.busy:
            return fail(SessionUnavailable("08006", "pgwarden: the session is not available"))
        self.busy = True
        self.statements += 1
        self._outcome = Outcome(audit_id=f"{self.session_id}:{self.statements}")
        self._done = done = Deferred[Outcome]()
        values = tuple(text_param(p) for p in params)
        self.transport.writeSequence([
            m.Parse("", sql).encode(),
            m.Bind("", "", (), values, ()).encode(),
            m.Describe("P", "").encode(),
            m.Execute("", max_rows).encode(),
            m.Sync().encode(),
        ])
        return done

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        error = self._outcome.error if self._outcome is not None else None
        if error is not None:  # a FATAL: the session ended with it (token expired, shutdown)
            self._fail_all(SessionUnavailable(error.sqlstate, error.message))
        else:
            self._fail_all(SessionUnavailable("08006", "pgwarden: the session ended"))
        self.on_lost(self)

    def _fail_all(self, error: SessionUnavailable) -> None:
        self.closed = True
        if not self.ready.called:
            self.ready.errback(Failure(error))
        done, self._done, self._outcome = self._done, None, None
        if done is not None:
            done.errback(Failure(error))
        if self.transport is not None and getattr(self.transport, "connected", False):
            self.transport.loseConnection()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.write(m.Terminate().encode())
            self.transport.loseConnection()


class _McpHost:
    """The running pgwarden as an internal session sees it: the same in every way, except that
    it always logs in with a password (the ticket), whatever ``auth.mode`` says."""

    def __init__(self, app: Application) -> None:
        self._app = app
        self._seen: Config | None = None
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        current = self._app.config
        if current is not self._seen:
            self._seen = current
            self._config = current if current.auth.mode == "token" else attrs.evolve(
                current, auth=attrs.evolve(current.auth, mode="token"))
        assert self._config is not None
        return self._config

    @property
    def client_tls(self) -> None:
        return None  # loopback, never leaves this process's sockets

    @property
    def upstream_tls(self) -> IOpenSSLClientConnectionCreator | None:
        return self._app.upstream_tls

    @property
    def stopping(self) -> bool:
        return self._app.stopping

    def connection_opened(self, conn: ClientConnection) -> None:
        self._app.connection_opened(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self._app.connection_closed(conn)

    def hold_shutdown(self, until: Deferred[None]) -> None:
        self._app.hold_shutdown(until)


class _Tickets:
    """The authenticator of internal sessions: a ticket this module issued, once."""

    def __init__(self) -> None:
        self._issued: dict[str, Identity] = {}

    def issue(self, identity: Identity) -> str:
        ticket = secrets.token_urlsafe(32)
        self._issued[ticket] = identity
        return ticket

    def withdraw(self, ticket: str) -> None:
        self._issued.pop(ticket, None)

    def authenticate(self, startup: m.StartupMessage, token: str) -> Identity:
        identity = self._issued.pop(token, None)
        if identity is None:
            raise AuthenticationFailed("an internal session with an unknown ticket")
        return identity


class _One(ServerFactory):
    noisy = False

    def __init__(self, proto: Protocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: object) -> Protocol:
        return self.proto


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1. The listener lives only until the one connection
    that is ours arrives (anything else that connects meanwhile is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        try:
            for _ in range(8):
                server, peer = listener.accept()
                if peer == client.getsockname():
                    break
                server.close()
            else:
                raise OSError("could not open an internal session: the loopback pair was taken")
        except BaseException:
            client.close()
            raise
    client.setblocking(False)
    server.setblocking(False)
    return client, server


def identity_key(identity: Identity) -> str:
    """Sessions are shared by calls of the same verified token content (policies match claims)."""
    return json.dumps([identity.subject, sorted(identity.groups), dict(identity.claims)], sort_keys=True, default=str)


class InternalSessions:
    """Opens and keeps the internal sessions of the MCP endpoint's identities."""

    def __init__(self, app: Application, idle_s: Callable[[], float]) -> None:
        self.app = app
        self.reactor = app.reactor
        self.tickets = _Tickets()
        self.services: SessionServices = attrs.evolve(app.services, host=_McpHost(app), authenticator=self.tickets)
        self._idle: dict[str, list[WireClient]] = {}
        self._count: dict[str, int] = {}
        self._idle_s = idle_s
        self._timers: dict[WireClient, object] = {}
        self._recent: list[WireClient] = []  # idle sessions, least recently used first
        self._last_key: tuple[Identity, str] | None = None

    def _key(self, identity: Identity) -> str:
        """`identity_key`, kept for the last identity object (the bearer check hands the same one
        to every call of a token): one JSON encoding per token, not two per call."""
        kept = self._last_key
        if kept is not None and kept[0] is identity:
            return kept[1]
        key = identity_key(identity)
        self._last_key = (identity, key)
        return key

    def acquire(self, identity: Identity) -> Deferred[WireClient]:
        """An idle session of ``identity``, or a new one once logged in."""
        key = self._key(identity)
        idle = self._idle.get(key)
        while idle:
            client = idle.pop()
            if client in self._recent:
                self._recent.remove(client)
            timer = self._timers.pop(client, None)
            if timer is not None and timer.active():  # type: ignore[attr-defined]
                timer.cancel()  # type: ignore[attr-defined]
            if not client.closed:
                return succeed(client)
        if self._count.get(key, 0) >= MAX_SESSIONS_PER_IDENTITY:
            return fail(SessionUnavailable("53300", f"pgwarden: at most {MAX_SESSIONS_PER_IDENTITY} MCP calls of "
                                                    "one identity at a time"))
        return self._open(key, identity)

    def _open(self, key: str, identity: Identity) -> Deferred[WireClient]:
        if self.app.stopping:
            return fail(SessionUnavailable("57P01", "pgwarden: shutting down"))
        ticket = self.tickets.issue(identity)
        conn = ClientConnection(self.services)
        client = WireClient(ticket, self.app.config.upstream.database)
        try:
            ours, theirs = loopback_pair()
        except OSError as e:
            self.tickets.withdraw(ticket)
            return fail(SessionUnavailable("08006", f"pgwarden: {e}"))
        reactor = self.reactor
        if not IReactorSocket.providedBy(reactor):  # pragma: no cover - every reactor pgwarden runs on
            raise TypeError("the MCP endpoint needs a reactor that adopts sockets")
        try:
            reactor.adoptStreamConnection(theirs.fileno(), socket.AF_INET, _One(conn))
            reactor.adoptStreamConnection(ours.fileno(), socket.AF_INET, _One(client))
        finally:  # the reactor holds duplicates of both
            ours.close()
            theirs.close()
        client.session_id = conn.log.id
        client.server = conn
        self._count[key] = self._count.get(key, 0) + 1

        def lost(c: WireClient) -> None:
            self._count[key] = max(0, self._count.get(key, 1) - 1)
            idle = self._idle.get(key)
            if idle and c in idle:
                idle.remove(c)
            if not idle:
                self._idle.pop(key, None)
            if c in self._recent:
                self._recent.remove(c)
            timer = self._timers.pop(c, None)
            if timer is not None and timer.active():  # type: ignore[attr-defined]
                timer.cancel()  # type: ignore[attr-defined]
            if self._count.get(key) == 0:
                self._count.pop(key, None)

        client.on_lost = lost

        def failed(failure: Failure) -> Failure:
            self.tickets.withdraw(ticket)
            return failure

        return client.ready.addErrback(failed)

    def dedicated(self, identity: Identity) -> Deferred[WireClient]:
        """A new session of ``identity`` that goes back to no pool (a statement that may wait for
        a person holds it); close it when done."""
        key = self._key(identity)
        if self._count.get(key, 0) >= MAX_SESSIONS_PER_IDENTITY:
            return fail(SessionUnavailable("53300", f"pgwarden: at most {MAX_SESSIONS_PER_IDENTITY} MCP calls of "
                                                    "one identity at a time"))
        return self._open(key, identity)

    def release(self, identity: Identity, client: WireClient, outcome: Outcome | None) -> None:
        """Back to the pool when idle outside a transaction; closed otherwise (an open transaction
        must not span calls: each call is its own)."""
        if client.closed:
            return
        if outcome is None or outcome.transaction_status != "I" or client.busy:
            client.close()
            return
        key = self._key(identity)
        self._idle.setdefault(key, []).append(client)
        self._recent.append(client)
        while len(self._recent) > MAX_IDLE:  # the least recently used idle session goes
            oldest = self._recent.pop(0)
            oldest.close()
        self._timers[client] = self.reactor.callLater(self._idle_s(), client.close)

    def cancel(self, client: WireClient) -> Deferred[None]:
        """As a CancelRequest with the session's key would: a wait for a verdict ends (57014) and
        the running statement is cancelled upstream."""
        if client.key is None:
            return succeed(None)
        return self.app.canceller.cancel(*client.key)

    def close(self) -> None:
        for idle in list(self._idle.values()):
            for client in list(idle):
                client.close()
