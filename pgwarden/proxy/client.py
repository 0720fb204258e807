"""The Twisted edge towards the client: startup, TLS, token login, then the relay.

Phases: ``startup`` (untyped packets: SSLRequest, GSSENCRequest, CancelRequest,
StartupMessage) → ``password`` (the token) → ``upstream`` (logging in upstream;
nothing is read from the client) → ``relay`` → ``closed``. The startup timeout
covers everything before ``relay``, so a silent or slow client is dropped.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from twisted.internet import address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.limits import SessionLimits, read_only_policy, session_limits
from pgwarden.relay.engine import PENDING, Relay, SessionState, StatementRequest, settled
from pgwarden.relay.handshake import UpstreamLogin
from pgwarden.policy import policies_for
from pgwarden.policy.model import row_cap, statement_timeout_ms
from pgwarden.recorder import SessionLog, new_session_id
from pgwarden.session import Session
from pgwarden.sql.encoding import UnsupportedEncoding, client_encoding
from pgwarden.verdict import Refusal, Verdict
from pgwarden.wire import messages as m
from pgwarden.wire.errors import ProtocolError
from pgwarden.wire.framing import NEED_DATA, MessageFramer, StartupFramer
from pgwarden.proxy.peer import peer_text
from pgwarden.proxy.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from pgwarden.app import Application
    from pgwarden.results import SessionMasks

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


def is_loopback(peer) -> bool:
    if isinstance(peer, address.UNIXAddress):
        return True
    host = getattr(peer, "host", "")
    return host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")


class ClientConnection(Protocol):
    """One agent connection."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.phase = "startup"
        self._startup = StartupFramer()
        self._messages: MessageFramer | None = None
        self._tls_active = False
        self.startup: m.StartupMessage | None = None
        self.identity: Identity | None = None
        self.upstream: UpstreamProtocol | None = None
        self.relay: Relay | None = None
        self.session: Session | None = None
        self.masks: SessionMasks | None = None
        #: a statement that may change the catalog went upstream; its transaction has not ended yet
        self.catalog_changed = False
        self.policies: tuple = ()
        #: what the core enforces in this session whatever the plugins say (see `pgwarden.limits`)
        self.limits = SessionLimits()
        self.key: tuple[int, int] | None = None
        self._timeout = None
        self._paused_for_backlog = False
        #: records of this connection (its id is the session id)
        self.log = SessionLog(new_session_id())
        #: why the session ended, for its session_end record
        self.end_reason: str | None = None

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    # ------------------------------------------------------------------ life cycle

    def connectionMade(self) -> None:
        # Every message is a whole round trip for someone: never wait for Nagle.
        self.transport.setTcpNoDelay(True)
        self.app.stats.connections += 1
        self.app.connection_opened(self)
        self._timeout = self.app.reactor.callLater(
            self.app.config.auth.startup_timeout_s, self._startup_timed_out
        )

    def _startup_timed_out(self) -> None:
        self._timeout = None
        if self.phase in ("startup", "password", "authenticating", "upstream"):
            log.info("startup timeout from {peer}", peer=str(self.transport.getPeer()))
            self._fatal("08006", "pgwarden: timed out waiting for the startup to complete")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.phase = "closed"
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        if self.key is not None:
            self.app.canceller.keys.pop(self.key, None)
        if self.session is not None:
            self.app.session_ended(self, self.end_reason or "client disconnected")
        if self.upstream is not None and self.upstream.transport is not None:
            if self.relay is not None and not self.relay.terminated:
                self.upstream.transport.write(m.Terminate().encode())
            self.upstream.transport.loseConnection()
        self.app.connection_closed(self)

    def _fatal(self, sqlstate: str, message: str) -> None:
        """Sends a FATAL error and closes; nothing else is read from the client."""
        if self.phase == "closed":
            return
        if self.end_reason is None:
            self.end_reason = f"{message} ({sqlstate})"
        if self.relay is not None:
            self.relay.fail(message.removeprefix("pgwarden: "), sqlstate)
            self._flush()
        else:
            self.transport.write(m.ErrorResponse.build("FATAL", sqlstate, message).encode())
        self.phase = "closed"
        turns = self.app.turns  # closed after this turn's bytes (the FATAL) have left
        turns.close(self.transport)
        if self.upstream is not None and self.upstream.transport is not None:
            turns.close(self.upstream.transport)

    # ------------------------------------------------------------------ bytes in

    def dataReceived(self, data: bytes) -> None:
        if self.phase == "relay":
            self.app.stats.bytes_from_clients += len(data)
            relay = self.relay
            relay.client_data(data)
            self._flush()
            if relay.waiting is not None and relay.backlog > self.app.config.limits.max_backlog_bytes:
                self._paused_for_backlog = True
                self.transport.pauseProducing()
            return
        try:
            if self.phase == "startup":
                self._startup.feed(data)
                self._read_startup()
            elif self.phase == "password":
                self._messages.feed(data)
                self._read_password()
            elif self.phase in ("authenticating", "upstream"):
                # The client may not speak before AuthenticationOk/ReadyForQuery.
                self._messages.feed(data)
                if self._messages.buffered > 64 * 1024:
                    self._fatal("08P01", "pgwarden: client sent data before the session was ready")
        except ProtocolError as e:
            self._fatal(e.sqlstate, f"pgwarden: invalid message: {e}")

    def _read_startup(self) -> None:
        while self.phase == "startup":
            packet = self._startup.next_packet()
            if packet is NEED_DATA:
                return
            if isinstance(packet, m.SSLRequest):
                if self._tls_active:
                    raise ProtocolError("SSLRequest inside TLS")
                if self._startup.take_rest():
                    raise ProtocolError("unencrypted data after SSLRequest")
                tls = self.app.client_tls
                if tls is None:
                    self.transport.write(b"N")
                else:
                    self.transport.write(b"S")
                    self.transport.startTLS(tls)
                    self._tls_active = True
            elif isinstance(packet, m.GSSENCRequest):
                self.transport.write(b"N")
            elif isinstance(packet, m.CancelRequest):
                # Closed only once the upstream has taken the cancel (see CancelForwarder.cancel).
                self.phase = "closed"
                self.app.canceller.cancel(packet.process_id, packet.secret_key).addBoth(
                    lambda _: self.transport.loseConnection()
                )
            else:
                self._startup_message(packet)

    def _startup_message(self, startup: m.StartupMessage) -> None:
        self.startup = startup
        if startup.get("replication") not in (None, "false", "0", "off", "no"):
            self._fatal("08004", "pgwarden: replication connections are not allowed")
            return
        if startup.get("database") is not None and startup.get("user") is None:
            self._fatal("28000", "pgwarden: no user name specified")
            return
        served = self.app.config.upstream.database
        wanted = startup.get("database") or startup.get("user")
        if wanted is not None and wanted != served:
            # Silently serving another database than the one asked for would surprise.
            self._fatal("3D000", f'pgwarden: database "{wanted}" is not served here; connect to "{served}"')
            return
        if startup.minor > 0:
            unknown = tuple(k for k, _ in startup.parameters if k.startswith("_pq_."))
            self.transport.write(m.NegotiateProtocolVersion(0, unknown).encode())
        if self.app.config.auth.mode == "pod":
            self._pod_identity()
            return
        if not (self._tls_active or is_loopback(self.transport.getPeer())
                or self.app.config.listen.allow_cleartext_remote):
            self._fatal(
                "28000",
                "pgwarden: a token is not accepted in clear text over the network; connect with TLS",
            )
            return
        self.phase = "password"
        self._messages = MessageFramer(64 * 1024, valid_types=frozenset(b"pX"))
        self._messages.feed(self._startup.take_rest())
        self.transport.write(m.Authentication(m.Authentication.CLEARTEXT).encode())
        self._read_password()

    def _pod_identity(self) -> None:
        """auth.mode pod: a connection from inside the pod is the pod; no password is asked."""
        if not is_loopback(self.transport.getPeer()):
            log.info("pod identity refused to {peer}: not a loopback connection",
                     peer=peer_text(self.transport.getPeer()))
            self.app.auth_failed(self, "pod identity: connection not from loopback", "28000")
            self._fatal("28000", "pgwarden: only connections from inside the pod (loopback) are accepted")
            return
        self._messages = MessageFramer(64 * 1024, valid_types=frozenset(b"pX"))
        self._messages.feed(self._startup.take_rest())
        path = self.app.config.auth.pod_token_file
        try:  # read on every connection: the kubelet rotates the token in place
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            self._auth_failed(f"pod identity: cannot read {path}: {getattr(e, 'strerror', None) or e}")
            return
        if not token:
            self._auth_failed(f"pod identity: {path} is empty")
            return
        self._authenticate(token)

    def _read_password(self) -> None:
        raw = self._messages.next_frame()
        if raw is NEED_DATA:
            return
        if raw[:1] == b"X":
            self.phase = "closed"
            self.transport.loseConnection()
            return
        self._authenticate(m.PasswordMessage.decode(raw[5:]).password())

    def _authenticate(self, token: str) -> None:
        self.phase = "authenticating"
        try:
            outcome = self.app.authenticate(self.startup, token)
        except AuthenticationFailed as e:
            self._auth_failed(e.reason)
            return
        if isinstance(outcome, Deferred):  # keys being fetched from the issuer
            outcome.addCallbacks(self._authenticated, self._auth_failure)
        else:
            self._authenticated(outcome)

    def _auth_failure(self, failure: Failure) -> None:
        reason = failure.value.reason if failure.check(AuthenticationFailed) else repr(failure.value)
        self._auth_failed(reason)

    def _auth_failed(self, reason: str) -> None:
        log.info("authentication failed from {peer}: {reason}", peer=str(self.transport.getPeer()), reason=reason)
        self.app.auth_failed(self, reason, "28P01")
        self._fatal("28P01", "pgwarden: authentication failed")

    def _authenticated(self, identity: Identity) -> None:
        if self.phase != "authenticating":
            return  # the client left, or timed out, meanwhile
        self.identity = identity
        self.policies = policies_for(self.identity, self.app.config.policies)
        if not self.policies:
            log.info("no policy for {subject} from {peer}", subject=self.identity.subject,
                     peer=str(self.transport.getPeer()))
            self.log.identity = {"subject": identity.subject, "groups": sorted(identity.groups)}
            self.app.auth_failed(self, "no policy for this identity", "28000")
            self._fatal("28000", "pgwarden: no policy for this identity")
            return
        self.phase = "upstream"
        self._connect_upstream()

    # ------------------------------------------------------------------ upstream

    def _connect_upstream(self) -> None:
        cfg = self.app.config.upstream
        params = [
            (k, v) for k, v in self.startup.parameters if k in FORWARDED_PARAMETERS and k != "application_name"
        ]
        params.append(("application_name", self.app.application_name(self.identity, self.startup)))
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
            login, cfg.tls.mode, self.app.upstream_tls, self._upstream_ready, self._upstream_failed
        )
        # connectTCP rather than an endpoint: the endpoint's wrapping protocol
        # would add a call to every read of the session.
        self.app.reactor.connectTCP(
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
        if self.phase != "upstream":
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
        self.app.canceller.keys[self.key] = self
        self.upstream_key = login.key
        out = [m.Authentication(m.Authentication.OK).encode()]
        # The upstream session's application_name carries the identity (for
        # pg_stat_activity and the server's logs); the client is told its own.
        own_name = self.startup.get("application_name") or ""
        out += [
            (m.ParameterStatus(p.name, own_name) if p.name == "application_name" else p).encode()
            for p in login.server_parameters
        ]
        out += login.notices
        out.append(m.BackendKeyData(pid, secret).encode())
        out.append(m.ReadyForQuery(login.transaction_status).encode())
        self.transport.writeSequence(out)

        self.session = Session(
            id=self.log.id,
            identity=self.identity,
            database=self.app.config.upstream.database,
            application_name=self.startup.get("application_name"),
            client_address=peer_text(self.transport.getPeer()),
            policies=self.policies,
        )
        #: masking of this session's results and messages (None: no plugin masks)
        self.masks = masks = self.app.masks_for(self)
        self.relay = Relay(
            self._decide,
            state=SessionState(parameters=parameters),
            max_message_size=self.app.config.limits.max_message_bytes,
            on_shape=masks.shape if masks is not None else None,
            on_copy=masks.copy if masks is not None else None,
            on_message=masks.message if masks is not None and self.app.plugins.masks_messages else None,
            on_complete=self.app.completion_listener(self),
            sample_rows=self.app.recorder.sample_rows,
            sample_bytes=self.app.recorder.sample_bytes,
            execute_gate=self.app.execute_gate(),
        )
        #: what statements of this session are analysed against (catalog, search_path)
        self.sql_context = self.app.session_context(self.startup)
        self.relay.row_cap = row_cap(self.policies)
        self.relay.read_only = self.limits.read_only
        self.phase = "relay"
        self._watch_token_expiry()
        self.app.session_started(self)
        upstream.data_sink = self._from_upstream
        upstream.lost_sink = self._upstream_lost
        # Back-pressure both ways: a slow reader pauses the other side's reads.
        self.transport.registerProducer(upstream.transport, True)
        upstream.transport.registerProducer(self.transport, True)
        leftover = login.leftover()
        if leftover:
            self._from_upstream(leftover)
        early = self._messages.take_rest() if self._messages else b""
        if early:
            self.dataReceived(early)

    def _watch_token_expiry(self) -> None:
        """By default a session lives no longer than the token that opened it."""
        expires = self.identity.expires_at
        if expires is None or self.app.config.auth.session_outlives_token:
            return
        delay = max(0.0, expires - self.app.reactor.seconds())
        self._timeout = self.app.reactor.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._timeout = None
        if self.phase == "relay":
            log.info("token of {subject} expired: session ended", subject=self.identity.subject)
            self._fatal("28P01", "pgwarden: your token expired; reconnect with a fresh token")

    def _from_upstream(self, data: bytes) -> None:
        self.app.stats.bytes_from_upstream += len(data)
        relay = self.relay
        relay.server_data(data)
        if relay.error is not None:
            log.failure("relaying results failed", failure=Failure(relay.error))
            relay.error = None
        if self.catalog_changed and relay.state.transaction_status == "I":
            # A statement that may have changed the catalog has committed (or not): read it again.
            self.catalog_changed = False
            self.app.catalog.invalidate("a statement may have changed the catalog")
        self._flush()

    def _upstream_lost(self, reason: Failure) -> None:
        if self.phase != "relay" or self.relay.terminated:
            return
        if self.relay.server_fatal:
            # The server said why (e.g. 57P01, terminated by an administrator) and the
            # client has it: a second FATAL of ours would hide the real reason.
            self.phase = "closed"
            self.app.turns.close(self.transport)  # after the server's FATAL, relayed this turn
            return
        log.error("lost the database connection: {err}", err=reason.getErrorMessage())
        self._fatal("08006", "pgwarden: lost the connection to the database")

    def _flush(self) -> None:
        relay = self.relay
        if self.app.stopping and relay.idle and not relay.closing and self.phase == "relay":
            self.end_for_shutdown(running=False)
            return
        up = relay.pop_upstream()
        if up and self.upstream is not None and self.upstream.transport is not None:
            self.app.send(self.upstream.transport, up)
        down = relay.pop_client()
        if down:
            self.app.send(self.transport, down)
        if relay.closing and self.phase != "closed":
            if self.end_reason is None:
                self.end_reason = relay.closing
            self.phase = "closed"
            self.app.turns.close(self.transport)
            if self.upstream is not None and self.upstream.transport is not None:
                self.app.turns.close(self.upstream.transport)

    # ------------------------------------------------------------------ verdicts

    def _decide(self, request: StatementRequest):
        try:
            result = self.app.decide(self, request)
        except Exception:  # never let a statement through unchecked
            return self._settle_recorded(request, Failure())
        if settled(result):
            return result
        # A Deferred: resolve when it fires; meanwhile the relay queues.
        fired = []

        def seen(outcome):
            fired.append(outcome)
            return outcome

        result.addBoth(seen)
        if fired:
            result.addErrback(lambda _f: None)  # handled by _settle; not an "unhandled error"
            return self._settle_recorded(request, fired[0])
        result.addBoth(lambda outcome: self._late_verdict(request, outcome))
        return PENDING

    def _settle(self, outcome):
        if settled(outcome):
            return outcome
        if isinstance(outcome, Failure):
            log.failure("verdict failed", failure=outcome)
        return Refusal("42501", "pgwarden: blocked: the policy check failed", None, None)

    def _settle_recorded(self, request: StatementRequest, outcome):
        """A verdict the app recorded passes; a failure becomes a recorded refusal."""
        if settled(outcome):
            return outcome
        refusal = self._settle(outcome)
        return self.app.decisions.recorded(self, request, None, Verdict.block("the policy check failed"), refusal)

    def _late_verdict(self, request: StatementRequest, outcome) -> None:
        if self.phase != "relay":
            return
        self.relay.resolve(request, self._settle_recorded(request, outcome))
        self._flush()
        if self._paused_for_backlog and self.relay.waiting is None:
            self._paused_for_backlog = False
            self.transport.resumeProducing()

    def recording_failed(self) -> None:
        """The record this session's next statement waited on could not be written: it must not run."""
        if self.phase != "relay":
            return
        if self.upstream is not None and self.upstream.transport is not None:
            self.app.turns.discard(self.upstream.transport)
        self._fatal("58030", "pgwarden: records cannot be written; the session ended before its "
                             "statement ran")

    def shutdown_requested(self) -> None:
        """pgwarden is shutting down: a session with nothing running ends now, others when idle."""
        if self.phase != "relay" or self.relay.idle:
            self.end_for_shutdown(running=False)

    def end_for_shutdown(self, running: bool) -> None:
        if self.phase == "closed":
            return
        if running and self.key is not None and self.relay is not None and not self.relay.idle:
            # The statement must not go on running without its client; shutdown waits for this.
            self.app.cancels.append(self.app.canceller.cancel(*self.key))
        self._fatal("57P01", "pgwarden: terminating connection because pgwarden is shutting down")

    def cancel_requested(self) -> None:
        """A CancelRequest named this session's key."""
        if self.relay is not None and self.relay.cancel_waiting():
            self._flush()


class _Once(ClientFactory):
    """A client factory for exactly one, already built, protocol instance."""

    def __init__(self, proto: Protocol, failed) -> None:
        self._proto = proto
        self._failed = failed

    noisy = False  # one factory per session: "Starting factory" lines would flood the log

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self._failed(reason)

    def buildProtocol(self, addr) -> Protocol:
        return self._proto
