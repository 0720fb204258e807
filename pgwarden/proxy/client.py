"""The Twisted edge towards the client: the login, then the relay.

Phases: ``login`` (startup packets, TLS, the token, logging in upstream: the states of
`pgwarden.proxy.client_login`, sans-IO; this module carries out its actions) → ``relay`` →
``closed``. The startup timeout covers everything before ``relay``, so a silent or slow
client is dropped.
"""

from __future__ import annotations

import secrets
import traceback
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from twisted.internet import address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.limits import SessionLimits, read_only_policy, session_limits
from pgwarden.policy import matching_policies
from pgwarden.policy.model import row_cap, statement_timeout_ms
from pgwarden.policy.shadow import ShadowUnit, split
from pgwarden.proxy.client_login import (
    Action,
    Authenticate,
    ClientLogin,
    ForwardCancel,
    LoginSettings,
    ReadPodToken,
    Refuse,
    Send,
    StartTLS,
    State,
    greeting,
)
from pgwarden.proxy.peer import IRelayTransport, peer_text
from pgwarden.proxy.pump import Pump
from pgwarden.proxy.state import ConnectionState, catalog_unread_of
from pgwarden.proxy.upstream import UpstreamProtocol
from pgwarden.recorder import SessionLog, new_session_id
from pgwarden.relay.engine import Relay, StatementRequest
from pgwarden.relay.handshake import UpstreamLogin
from pgwarden.session import SERVER_PLANS, Session, replace_policies
from pgwarden.shadow import Shadow
from pgwarden.sql.context import DEFAULT_PATH, SqlContext, parse_path, shared
from pgwarden.sql.encoding import UnsupportedEncoding, client_encoding
from pgwarden.verdict import Refusal, Verdict
from pgwarden.wire import messages as m
from pgwarden.wire.errors import LocalProtocolError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConnector, IDelayedCall, IOpenSSLClientConnectionCreator
    from twisted.internet.ssl import CertificateOptions

    from pgwarden.approvals import Wait
    from pgwarden.cancels import CancelForwarder
    from pgwarden.catalog.model import Catalog
    from pgwarden.catalog.planner import ServerPlans
    from pgwarden.config import Config
    from pgwarden.metrics import Stats
    from pgwarden.policy.model import Policy
    from pgwarden.relay.engine import Decider
    from pgwarden.turns import Turns

log = Logger(namespace="pgwarden.proxy")

# Startup parameters a client may pass on to the upstream session. Everything
# else (options, role, session_authorization, replication, ...) stays here.
FORWARDED_PARAMETERS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "IntervalStyle",
        "extra_float_digits",
        "search_path",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "bytea_output",
        "intervalstyle",
        "datestyle",
        "timezone",
    }
)


def is_loopback(peer: object) -> bool:
    if isinstance(peer, address.UNIXAddress):
        return True
    host = getattr(peer, "host", "")
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


def upstream_application_name(template: str, identity: Identity, startup: m.StartupMessage) -> str:
    """The upstream session's application_name: who the agent is, for the server's eyes."""
    client = startup.get("application_name") or ""
    name = template.replace("{subject}", identity.subject).replace("{client}", client)
    if client and "{client}" not in template:
        name = f"{name} ({client})"
    return name[:63]  # PostgreSQL keeps NAMEDATALEN - 1 bytes


def forget_frames(error: BaseException) -> None:
    """Clears the local variables of the finished frames in ``error``'s tracebacks (and in those
    of the exceptions it was raised from or during).

    A frame that caught an exception and raised another (pluggy's hook call does, so does
    ``raise ... from``) keeps the first in a local, and its traceback keeps the frame: a
    cycle, which holds every caller's frame, this connection's among them, until the cyclic
    collector runs, late under `pgwarden run` (`pgwarden.cli.tune_gc`). A refused login
    needs only the reason."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # the running frames (ours) are left as they are
        pending += [e.__cause__, e.__context__]


def session_sql_context(catalog: Catalog, user: str, startup: m.StartupMessage) -> SqlContext:
    """The context a new session's statements are analysed in: the catalog, the upstream
    role (``$user``) and the search_path the session starts with."""
    given = startup.get("search_path") or catalog.session_defaults.get("search_path")
    path = parse_path(given) if given else DEFAULT_PATH
    # (None: a value the server refuses, and the login with it)
    return shared(SqlContext(catalog, user=user, search_path=path, default_path=path or DEFAULT_PATH))


# ---------------------------------------------------------------------- what a connection works with
#
# Each collaborator by the narrow interface a connection needs of it. The `Application`
# builds one `SessionServices` and hands it to every connection it accepts.


class SessionHost(typing.Protocol):
    """The running pgwarden (an `Application`) as a connection sees it: the settings of the
    moment (a reload replaces ``config`` and ``upstream_tls``; a connection reads them when
    it needs them), whether it is shutting down, and the registry the shutdown walks."""

    @property
    def config(self) -> Config: ...

    @property
    def client_tls(self) -> CertificateOptions | None: ...

    @property
    def upstream_tls(self) -> IOpenSSLClientConnectionCreator | None: ...

    @property
    def stopping(self) -> bool: ...

    def connection_opened(self, conn: ClientConnection) -> None: ...

    def connection_closed(self, conn: ClientConnection) -> None: ...

    def hold_shutdown(self, until: Deferred[None]) -> None:
        """The shutdown waits for ``until`` (a cancel on its way to the upstream)."""


class Authenticator(typing.Protocol):
    def authenticate(self, startup: m.StartupMessage, token: str) -> Identity | Deferred[Identity]:
        """The identity behind ``token``; raises (or fails with) AuthenticationFailed."""


class SessionDecider(typing.Protocol):
    """Statements' verdicts (`pgwarden.decisions.Decisions`)."""

    def decide(self, conn: ClientConnection, request: StatementRequest) -> object:
        """ALLOW, a Refusal, CountRows or a Deferred of one; recorded before it takes effect."""

    def recorded(self, conn: ClientConnection, request: StatementRequest, statement: None, verdict: Verdict,
                 outcome: Refusal) -> object:
        """``outcome`` once the statement's record is on its way; a refusal if it cannot be."""


class SessionObserver(typing.Protocol):
    """Records, hooks and metrics of a session's life (`pgwarden.session_events`)."""

    def session_started(self, conn: ClientConnection) -> None: ...

    def session_ended(self, conn: ClientConnection, reason: str) -> None: ...

    def auth_failed(self, conn: ClientConnection, reason: str, sqlstate: str) -> None: ...


class RelayFactory(typing.Protocol):
    def relay(self, conn: ClientConnection, decide: Decider, parameters: dict[str, str],
              max_message_size: int) -> Relay:
        """The relay of ``conn``'s session, with the listeners the records and plugins need."""


class CatalogSource(typing.Protocol):
    """The catalog facts statements are analysed with (`pgwarden.catalog.live.LiveCatalog`)."""

    @property
    def current(self) -> Catalog: ...

    def invalidate(self, reason: str, redefines: bool = True) -> int: ...

    def has_read(self, ticket: int) -> bool: ...


class ConnectionReactor(typing.Protocol):
    """The reactor as a connection uses it: timers, and a TCP connection to the upstream."""

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,  # noqa: N802
                  **kwargs: object) -> IDelayedCall: ...

    def seconds(self) -> float: ...

    def connectTCP(self, host: str, port: int, factory: ClientFactory, timeout: float = 30,  # noqa: N802
                   bindAddress: tuple[str, int] | None = None) -> IConnector: ...  # noqa: N803


@attrs.frozen
class SessionServices:
    """Everything a connection works with, each by the interface it needs."""

    host: SessionHost
    reactor: ConnectionReactor
    authenticator: Authenticator
    decider: SessionDecider
    events: SessionObserver
    relays: RelayFactory
    catalog: CatalogSource
    canceller: CancelForwarder
    turns: Turns
    stats: Stats
    #: the server's plans of statements (`pgwarden.catalog.planner`), None without a live catalog
    plans: ServerPlans | None = None


class ClientConnection(ConnectionState, Protocol):
    """One agent connection.

    What each statement's decision (`pgwarden.decisions`, compiled) and the pump (compiled) read
    and write of it are the attributes of its first base, `ConnectionState`, a native class: a
    compiled caller reads them from the object's struct, where an attribute of this Python class
    is a generic lookup (the rest stay in its dictionary). `ConnectionState.__init__` sets them."""

    transport: IRelayTransport
    # Set once the login is over. Only the relay phase reads them, and it always has them; the
    # life cycle (connectionLost, a reload) checks them against None.
    identity: Identity
    relay: Relay
    session: Session
    #: the relay phase's per-message work (`pgwarden.proxy.pump`), made with the relay
    pump: Pump

    def __init__(self, services: SessionServices) -> None:
        # phase "login", no session, relay, masks or shadow rules yet, no catalog change, no
        # limits (`ConnectionState`; the policies' limits are set once the identity is known)
        ConnectionState.__init__(self, services, SessionLimits())
        self.host = services.host
        self.reactor = services.reactor
        self.turns = services.turns
        self.stats = services.stats
        self.canceller = services.canceller
        #: the login, sans-IO; made once the peer's address is known (`connectionMade`)
        self.login: ClientLogin
        self.identity = None  # type: ignore[assignment]
        self.upstream: UpstreamProtocol | None = None
        self.pump = None  # type: ignore[assignment]
        self.policies: tuple[Policy, ...] = ()
        self._shadow_units: tuple[ShadowUnit, ...] = ()
        self.key: tuple[int, int] | None = None
        self._timeout: IDelayedCall | None = None
        #: records of this connection (its id is the session id)
        self.log = SessionLog(new_session_id())
        #: the statement waiting for a human's approval, if any (`pgwarden.approvals.Wait`)
        self.approval_wait: Wait | None = None
        #: the client's connection is over (`connectionLost` ran)
        self._client_lost = False

    @property
    def tls_active(self) -> bool:
        return self.login.tls_active

    @property
    def startup(self) -> m.StartupMessage | None:
        return self.login.startup

    # ------------------------------------------------------------------ life cycle

    if TYPE_CHECKING:
        @property
        def catalog_unread(self) -> bool:
            """Whether this session may have defined again what lineage goes through (a view, a
            function's body) and the catalog in use may not show it yet: the change's transaction
            has not ended, or no load since has succeeded."""
    else:  # the compiled getter: no Python frame for a question each statement's decision asks
        catalog_unread = property(catalog_unread_of)

    def connectionMade(self) -> None:
        # Every message is a whole round trip for someone: never wait for Nagle.
        self.transport.setTcpNoDelay(True)
        self.stats.connections += 1
        self.host.connection_opened(self)
        config = self.host.config
        self.login = ClientLogin(LoginSettings(
            database=config.upstream.database,
            tls_available=self.host.client_tls is not None,
            pod=config.auth.mode == "pod",
            loopback=is_loopback(self.transport.getPeer()),
            allow_cleartext_remote=config.listen.allow_cleartext_remote,
        ))
        self._timeout = self.reactor.callLater(
            self.host.config.auth.startup_timeout_s, self._startup_timed_out
        )

    def _startup_timed_out(self) -> None:
        self._timeout = None
        if self.phase == "login":
            log.info("startup timeout from {peer}", peer=str(self.transport.getPeer()))
            self._fatal("08006", "pgwarden: timed out waiting for the startup to complete")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.phase = "closed"
        self.login.close()
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.key is not None:
            self.canceller.keys.pop(self.key, None)
        if self.approval_wait is not None:  # never approved, never run: withdrawn, before the session's end
            self.approval_wait.withdraw("the session ended")
        if self.relay is not None:
            self.relay.settle()  # executions waiting for a ReadyForQuery that will not come
        if self.session is not None:
            self.services.events.session_ended(self, _with_in_flight(self.end_reason or "client disconnected",
                                                                     self.relay))
        if self.upstream is not None and self.upstream.transport is not None:
            if self.relay is not None and not self.relay.terminated:
                self.upstream.transport.write(m.Terminate().encode())
            self.upstream.transport.loseConnection()
        self.host.connection_closed(self)
        self._client_lost = True
        if self.upstream is None or self.upstream.closed:
            self._release()

    def _release(self) -> None:
        """Both connections are over: breaks the session's reference cycles, so that it is
        freed at once rather than by the cyclic collector, which `pgwarden run` tunes to
        run rarely (`pgwarden.cli.tune_gc`): sessions that come and go would otherwise
        pile up as garbage between its full collections, and the memory they held stay
        fragmented. The relay and the masking listeners call back into this connection
        (bound methods, closures); nothing calls them once neither end can send."""
        self.relay = None  # type: ignore[assignment]
        if self.pump is not None:
            self.pump.release()
            self.pump = None  # type: ignore[assignment]
        vars(self).pop("dataReceived", None)  # the pump's, put in place by _upstream_ready
        self.masks = None
        if self.upstream is not None:
            self.upstream.release()

    def _fatal(self, sqlstate: str, message: str) -> None:
        """Sends a FATAL error and closes; nothing else is read from the client."""
        if self.phase == "closed":
            return
        if self.end_reason is None:
            self.end_reason = f"{message} ({sqlstate})"
        if self.relay is not None:
            self.relay.fail(message.removeprefix("pgwarden: "), sqlstate)
            self.pump.flush()
        else:
            self.transport.write(m.ErrorResponse.build("FATAL", sqlstate, message).encode())
        self.phase = "closed"
        self.login.close()
        turns = self.turns  # closed after this turn's bytes (the FATAL) have left
        turns.close(self.transport)
        if self.upstream is not None and self.upstream.transport is not None:
            turns.close(self.upstream.transport)

    # ------------------------------------------------------------------ bytes in

    def dataReceived(self, data: bytes) -> None:
        # Once the session relays, the pump's `client_data` takes the reads in place of this.
        if self.phase == "relay":
            self.pump.client_data(data)
            return
        if self.phase == "login":
            self._apply(self.login.receive(data))

    def _apply(self, actions: list[Action]) -> None:
        """Carries out what the login asks for (`pgwarden.proxy.client_login`)."""
        for action in actions:
            if isinstance(action, Send):
                self.transport.write(action.data)
            elif isinstance(action, StartTLS):
                tls = self.host.client_tls
                if tls is None:  # the login was told that a certificate is configured
                    raise LocalProtocolError("StartTLS without listen.tls")
                self.transport.startTLS(tls)
            elif isinstance(action, ForwardCancel):
                # Closed only once the upstream has taken the cancel (see CancelForwarder.cancel).
                self.phase = "closed"
                self.canceller.cancel(action.process_id, action.secret_key).addBoth(
                    lambda _: self.transport.loseConnection()
                )
            elif isinstance(action, Authenticate):
                self._authenticate(action.token)
            elif isinstance(action, ReadPodToken):
                self._read_pod_token()
            elif isinstance(action, Refuse):
                if action.auth_failure is not None:
                    log.info("authentication failed from {peer}: {reason}", peer=peer_text(self.transport.getPeer()),
                             reason=action.auth_failure)
                    self.services.events.auth_failed(self, action.auth_failure, action.sqlstate)
                self._fatal(action.sqlstate, action.message)
            else:  # Close: the client said Terminate
                self.phase = "closed"
                self.transport.loseConnection()

    def _read_pod_token(self) -> None:
        """auth.mode pod: a connection from inside the pod is the pod; no password is asked."""
        path = self.host.config.auth.pod_token_file
        try:  # read on every connection: the kubelet rotates the token in place
            with open(path, encoding="utf-8") as f:
                token = f.read()
        except (OSError, UnicodeDecodeError) as e:
            self._apply(self.login.auth_failed(f"pod identity: cannot read {path}: "
                                               f"{getattr(e, 'strerror', None) or e}"))
            return
        self._apply(self.login.pod_token(token, path))

    def _authenticate(self, token: str) -> None:
        try:
            outcome = self.services.authenticator.authenticate(self.login.startup_message, token)
        except AuthenticationFailed as e:
            forget_frames(e)
            self._apply(self.login.auth_failed(e.reason))
            return
        if isinstance(outcome, Deferred):  # keys being fetched from the issuer
            outcome.addCallbacks(self._authenticated, self._auth_failure)
        else:
            self._authenticated(outcome)

    def _auth_failure(self, failure: Failure) -> None:
        error = failure.value
        reason = error.reason if isinstance(error, AuthenticationFailed) else repr(error)
        self._apply(self.login.auth_failed(reason))

    def _authenticated(self, identity: Identity) -> None:
        if self.phase != "login" or not self.login.authenticated():
            return  # the client left, or timed out, meanwhile
        self.identity = identity
        self.policies, self._shadow_units = split(matching_policies(self.identity, self.host.config.policies))
        if not self.policies:
            log.info("no policy for {subject} from {peer}", subject=self.identity.subject,
                     peer=str(self.transport.getPeer()))
            self.log.identity = {"subject": identity.subject, "groups": sorted(identity.groups)}
            self.services.events.auth_failed(self, "no policy for this identity", "28000")
            self._fatal("28000", "pgwarden: no policy for this identity")
            return
        self._connect_upstream()

    # ------------------------------------------------------------------ upstream

    def _connect_upstream(self) -> None:
        cfg = self.host.config.upstream
        startup = self.login.startup_message
        params = [(k, v) for k, v in startup.parameters if k in FORWARDED_PARAMETERS and k != "application_name"]
        params.append(("application_name", upstream_application_name(cfg.application_name, self.identity, startup)))
        timeout_ms = statement_timeout_ms(self.policies)
        if timeout_ms is not None:  # a `limit` rule: enforced by the server itself
            params.append(("statement_timeout", str(timeout_ms)))
        read_only = read_only_policy(self.policies) is not None
        if read_only:  # no write can pass the policies: the server refuses what the analysis misses
            params.append(("default_transaction_read_only", "on"))
        self.limits = session_limits(self.policies, read_only=read_only, startup_timeout_ms=timeout_ms)
        try:
            password = cfg.read_password()
        except OSError as e:
            log.error("cannot read upstream.password_file: {err}", err=e.strerror)
            self._fatal("08006", "pgwarden: cannot connect to the database (see pgwarden's log)")
            return
        login = UpstreamLogin(cfg.user, cfg.database, password, tuple(params))
        proto = UpstreamProtocol(
            login, cfg.tls.mode, self.host.upstream_tls, self._upstream_ready, self._upstream_failed
        )
        # connectTCP rather than an endpoint: the endpoint's wrapping protocol
        # would add a call to every read of the session.
        self.reactor.connectTCP(
            cfg.host, cfg.port, _Once(proto, self._upstream_unreachable), timeout=cfg.connect_timeout_s
        )
        self.upstream = proto

    def _upstream_unreachable(self, reason: Failure) -> None:
        log.error("cannot reach the database: {err}", err=reason.getErrorMessage())
        self._fatal("08006", "pgwarden: cannot connect to the database")

    def _upstream_failed(self, message: str, sqlstate: str) -> None:
        log.error("{msg}", msg=message)
        if self.phase == "relay":
            self._fatal("08006", "pgwarden: lost the connection to the database")
        else:
            self._fatal(sqlstate if sqlstate.startswith("08") or sqlstate == "53300" else "08006",
                        "pgwarden: cannot connect to the database")

    def _upstream_ready(self, upstream: UpstreamProtocol) -> None:
        if self.phase != "login" or self.login.state is not State.CONNECTING:
            upstream.transport.loseConnection()
            return
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        login = upstream.login
        parameters = {p.name: p.value for p in login.server_parameters}
        try:  # statements are read in the session's encoding: one pgwarden cannot read is refused
            client_encoding(parameters.get("client_encoding", "UTF8"))
        except UnsupportedEncoding as e:
            self._fatal("0A000", f"pgwarden: client_encoding {e.name} is not supported: pgwarden cannot read "
                                 f"statements in it as the server does; connect with another client_encoding "
                                 f"(e.g. UTF8)")
            return
        secret = secrets.randbits(32)
        pid = login.key.process_id if login.key else 0
        self.key = (pid, secret)
        self.canceller.keys[self.key] = self
        self.upstream_key = login.key
        startup = self.login.startup_message
        self.transport.writeSequence(greeting(login.server_parameters, login.notices, m.BackendKeyData(pid, secret),
                                              login.transaction_status, startup.get("application_name") or ""))

        self.session = Session(
            id=self.log.id,
            identity=self.identity,
            database=self.host.config.upstream.database,
            application_name=startup.get("application_name"),
            client_address=peer_text(self.transport.getPeer()),
            policies=self.policies,
        )
        plans = self.services.plans
        if plans is not None:
            self.session.store[SERVER_PLANS] = plans
        self.shadow = Shadow.of(self.session, self._shadow_units)
        self.pump = pump = Pump(self, self.transport, upstream.transport)
        self.relay = pump.relay = self.services.relays.relay(self, pump.decide, parameters,
                                                             self.host.config.limits.max_message_bytes)
        pump.relay.decide_natively(pump)
        #: what statements of this session are analysed against (catalog, search_path)
        self.sql_context = session_sql_context(self.services.catalog.current, self.host.config.upstream.user,
                                               startup)
        if getattr(self.services.catalog, "pending", False) and startup.get("search_path") is None:
            # A load is due (a change seen, or DDL: an ALTER DATABASE ... SET search_path, say): the
            # path this session starts with may not be the one the catalog read said. Provisional:
            # the first catalog read after it says (`SqlContext.settled`).
            self.sql_context = shared(attrs.evolve(self.sql_context, provisional=True))
        self.relay.row_cap = row_cap(self.policies)
        self.relay.read_only = self.limits.read_only
        self.relay.backend_pid = pid
        early = self.login.ready()
        self.phase = "relay"
        # The reads of both sides go straight to the pump from now on (`pgwarden.proxy.pump`).
        self.dataReceived = pump.client_data  # type: ignore[method-assign]
        self._watch_token_expiry()
        self.services.events.session_started(self)
        upstream.relay_to(pump.server_data, self._upstream_lost)
        pump.read_directly(self.reactor)
        # Back-pressure both ways: a slow reader pauses the other side's reads.
        self.transport.registerProducer(upstream.transport, True)
        upstream.transport.registerProducer(self.transport, True)
        leftover = login.leftover()
        if leftover:
            pump.server_data(leftover)
        if early:
            self.dataReceived(early)

    def _watch_token_expiry(self) -> None:
        """By default a session lives no longer than the token that opened it."""
        expires = self.identity.expires_at
        if expires is None or self.host.config.auth.session_outlives_token:
            return
        delay = max(0.0, expires - self.reactor.seconds())
        self._timeout = self.reactor.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._timeout = None
        if self.phase == "relay":
            log.info("token of {subject} expired: session ended", subject=self.identity.subject)
            self._fatal("28P01", "pgwarden: your token expired; reconnect with a fresh token")

    def _upstream_lost(self, reason: Failure) -> None:
        if self._client_lost:  # the last of the session's two connections
            self._release()
            return
        if self.phase != "relay" or self.relay.terminated:
            return
        if self.relay.server_fatal:
            # The server said why (e.g. 57P01, terminated by an administrator) and the
            # client has it: a second FATAL of ours would hide the real reason.
            self.phase = "closed"
            self.turns.close(self.transport)  # after the server's FATAL, relayed this turn
            return
        log.error("lost the database connection: {err}", err=reason.getErrorMessage())
        self._fatal("08006", "pgwarden: lost the connection to the database")

    # ------------------------------------------------------------------ life cycle, continued

    def recording_failed(self) -> None:
        """The record this session's next statement waited on could not be written: it must not run."""
        if self.phase != "relay":
            return
        if self.upstream is not None and self.upstream.transport is not None:
            self.turns.discard(self.upstream.transport)
        self._fatal("58030", "pgwarden: records cannot be written; the session ended before its "
                             "statement ran")

    def shutdown_requested(self) -> None:
        """pgwarden is shutting down: a session with nothing running ends now, others when idle."""
        if self.pump is not None:
            self.pump.stopping = True  # (its flush ends the session once idle)
        if self.phase != "relay" or self.relay.idle:
            self.end_for_shutdown(running=False)

    def end_for_shutdown(self, running: bool) -> None:
        if self.phase == "closed":
            return
        if running and self.key is not None and self.relay is not None and not self.relay.idle:
            # The statement must not go on running without its client; shutdown waits for this.
            self.host.hold_shutdown(self.canceller.cancel(*self.key))
        self._fatal("57P01", "pgwarden: terminating connection because pgwarden is shutting down")

    def policies_replaced(self, policies: tuple[Policy, ...]) -> None:
        """A reload gave this session's identity ``policies``: its next statement is decided by them."""
        if self.session is None or self.relay is None:
            return
        policies, self._shadow_units = split(policies)
        replace_policies(self.session, policies)
        self.shadow = Shadow.of(self.session, self._shadow_units)
        self.relay.row_cap = row_cap(policies)
        if self.masks is not None:  # masking may now apply where it did not, or no longer
            self.relay.on_shape = self.masks.shape if self.masks.wants_shapes() else None
        # The upstream session keeps how it was opened (read-only, its statement_timeout).
        self.limits = session_limits(
            policies, read_only=self.limits.read_only, startup_timeout_ms=self.limits.startup_timeout_ms)
        self.relay.policy_generation += 1  # statements parsed before are decided again at Bind

    def cancel_requested(self) -> None:
        """A CancelRequest named this session's key: a statement waiting for its verdict is
        refused with 57014 (an approval it waited for is withdrawn)."""
        if self.relay is not None and self.relay.cancel_waiting():
            if self.approval_wait is not None:
                self.approval_wait.withdraw("the client cancelled the statement")
            self.pump.flush()

    def flush_soon(self) -> None:
        """Bytes the relay produced outside a client or server read (a notice): on their way."""
        if self.phase == "relay" and self.relay is not None:
            self.pump.flush()


class _Once(ClientFactory):
    """A client factory for exactly one, already built, protocol instance.

    It lets go of the protocol and the session's callback once either is used: Twisted's
    connector keeps its factory (and its transport, which points back at it) after the
    connection, and a factory that kept them would keep the session alive through that
    cycle until the cyclic collector runs."""

    def __init__(self, proto: UpstreamProtocol, failed: Callable[[Failure], None]) -> None:
        self._proto: UpstreamProtocol | None = proto
        self._failed: Callable[[Failure], None] | None = failed

    noisy = False  # one factory per session: "Starting factory" lines would flood the log

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        proto, failed, self._proto, self._failed = self._proto, self._failed, None, None
        if proto is not None:
            proto.release()  # never connected: its callbacks are never called
        if failed is not None:
            failed(reason)

    def buildProtocol(self, addr) -> Protocol | None:
        proto, self._proto, self._failed = self._proto, None, None
        return proto

    def clientConnectionLost(self, connector, reason: Failure) -> None:
        # Twisted's connector and its transport point at each other after the connection ends
        # (Connector.transport, Client.connector): a cycle of the reactor's that only the cyclic
        # collector frees. Twisted breaks it itself when a connection fails
        # (BaseConnector.connectionFailed); so does this when one ends.
        connector.transport = None


#: Appended to a session's end reason when statements it sent were still in flight (red team thirteen)
IN_FLIGHT = ("; statements were in flight: their results never reached pgwarden, and they may have run "
             "(and committed) without a result record")


def _with_in_flight(reason: str, relay: Relay | None) -> str:
    """``reason``, and whether statements were still in flight when the client left: the server
    runs a statement to its end whether its client is there or not (a backend notices the
    closed socket only when it writes), so the statement record of one whose answer never came
    back says nothing of what it did (red team thirteen: `SELECT pg_sleep(0.5); UPDATE ...`
    sent, then the socket closed: the UPDATE committed, and the records had its statement, no
    result, and a session end "client disconnected")."""
    if relay is not None and relay.answers_owed and not relay.server_fatal:
        return reason + IN_FLIGHT
    return reason

