"""One running pgwarden: its config, listener, live sessions, reload and shutdown.

Built per process with the reactor injected, so tests run several side by side
and nothing depends on a global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import attrs

from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pgwarden.cancels import CancelForwarder
from pgwarden.config import Config, ConfigError, ListenTLS
from pgwarden.decisions import Decisions
from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.masking import missing_columns
from pgwarden.results import SessionMasks
from pgwarden.plugins import PluginHost
from pgwarden.preflight import reread
from pgwarden.policy import policies_for
from pgwarden.policy.model import row_cap
from pgwarden.session import SessionSummary, replace_policies
from pgwarden.metrics import Stats
from pgwarden.recorder import Recorder, RecordingFailed
from pgwarden.turns import Turns
from pgwarden.catalog import builtin_catalog
from pgwarden.catalog.live import LiveCatalog
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.context import DEFAULT_SEARCH_PATH, SqlContext, parse_path
from pgwarden.proxy.client import ClientConnection
from pgwarden.proxy.upstream import tls_options
from pgwarden import limits as core_limits
from pgwarden.relay.engine import ALLOW, StatementRequest
from pgwarden.wire import messages as m

log = Logger(namespace="pgwarden.app")

Decide = Callable[[ClientConnection, StatementRequest], object]


def _an_identity(identity) -> Identity:
    if not isinstance(identity, Identity):
        raise AuthenticationFailed("no plugin accepted the credential")
    return identity


class _Fixed:
    """A catalog source that never changes (the shipped snapshot)."""

    def __init__(self, catalog) -> None:
        self.current = catalog

    def start(self) -> None:
        pass

    def invalidate(self, reason: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def first_load(self) -> Deferred:
        return succeed(self.current)
def client_tls(tls: ListenTLS) -> ssl.CertificateOptions:
    """The TLS that clients get, from ``listen.tls``'s certificate and key files."""
    cert = ssl.PrivateCertificate.loadPEM(Path(tls.cert_file).read_text() + Path(tls.key_file).read_text())
    # libpq 17+ offers ALPN "postgresql" and aborts the handshake when a
    # server that negotiates ALPN at all does not select it.
    return ssl.CertificateOptions(
        privateKey=cert.privateKey.original.to_cryptography_key(),
        certificate=cert.original.to_cryptography(),
        acceptableProtocols=[b"postgresql"],
    )


class _ClientFactory(Factory):
    def __init__(self, app: Application) -> None:
        self.app = app

    def buildProtocol(self, addr) -> Protocol:
        return ClientConnection(self.app)


class Application:
    """One pgwarden. ``decide`` replaces the plugins' decisions (tests of the relay use it)."""

    def __init__(
        self,
        config: Config,
        reactor,
        decide: Decide | None = None,
        *,
        plugins: PluginHost | None = None,
        extra_plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        self.reactor = reactor
        self.plugins = plugins or PluginHost(config, reactor, extra_plugins)
        # Its rules read by the kinds the plugins declare (once only: a rule read is kept).
        self.config = config = self.plugins.accept(config)
        if not self.plugins.authenticates:
            raise ConfigError(config.source, [self.plugins.no_authenticator()])
        self.plugins.configure(config)
        #: the end of each reactor turn: records written, then the relayed bytes sent
        self.turns = Turns(reactor)
        #: relays bytes at the end of this turn, after its records (`Turns.send`)
        self.send = self.turns.send
        self.recorder = Recorder(self)
        self.stats = Stats()
        self.stopping = False
        #: cancel requests sent upstream during a shutdown, which waits for them
        self.cancels: list[Deferred] = []
        self.admin_port = None
        self.statements = StatementCache()
        #: the catalog facts: live from the upstream over pgwarden's own connection once
        #: `listen` started it, the shipped snapshot until then and whenever it is unreachable
        self.catalog = LiveCatalog(config.upstream, reactor, ttl_s=config.catalog.ttl_s,
                                   max_stale_s=config.catalog.max_stale_s) \
            if config.catalog.live else _Fixed(builtin_catalog())
        self.upstream_tls = tls_options(config.upstream)
        self.client_tls = client_tls(config.listen.tls) if config.listen.tls is not None else None
        self._decide = decide
        self.decisions = Decisions(self.plugins, self.recorder, self.stats, self.statements, self.catalog)
        #: the cancel keys handed to sessions, and forwarding a CancelRequest upstream
        self.canceller = CancelForwarder(reactor, config.upstream)
        self.connections: set[ClientConnection] = set()
        self.port = None
        self.reloads = 0

    # ------------------------------------------------------------------ listening

    def listen(self):
        lc = self.config.listen
        self.catalog.start()
        self.catalog.first_load().addCallback(lambda catalog: self.warn_mask_columns(catalog))
        self.port = self.reactor.listenTCP(lc.port, _ClientFactory(self), interface=lc.host)
        log.info("pgwarden listening on {host}:{port}", host=lc.host, port=self.port.getHost().port)
        return self.port

    def listen_admin(self):
        """/healthz, /readyz and /metrics on ``admin.host:admin.port``."""
        from pgwarden.admin import listen_admin

        self.admin_port = listen_admin(self)
        log.info("admin endpoint on {host}:{port}", host=self.config.admin.host,
                 port=self.admin_port.getHost().port)
        return self.admin_port

    def stop(self) -> Deferred:
        """Stops listening, closes every session, then the plugins (their last records written)."""
        if self.stopping:  # draining already: now the sessions left end at once
            self._grace_over()
            return self._shut
        for conn in list(self.connections):
            conn.transport.abortConnection()
        stopping = maybeDeferred(self.port.stopListening) if self.port is not None else succeed(None)
        if self.admin_port is not None:
            stopping.addCallback(lambda _: self.admin_port.stopListening())
        # Aborted connections end on the next reactor turn, with their session_end records.
        return stopping.addCallback(lambda _: deferLater(self.reactor, 0, self.close_plugins))

    def close_plugins(self) -> None:
        """The last records out, then every plugin closes what it holds (sinks, files)."""
        self.catalog.stop()
        self.recorder.close()
        self.plugins.notify("pgwarden_stop")

    # ------------------------------------------------------------------ sessions

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self.stopping:
            self._drained()

    # ------------------------------------------------------------------ graceful shutdown

    def shutdown(self, grace_s: float | None = None) -> Deferred:
        """Stops accepting; statements running may finish for ``grace_s`` (``shutdown.grace_s``);
        then the sessions left end with 57P01 (their statements cancelled upstream). Fires once
        the last session ended and the plugins closed (records flushed)."""
        if self.stopping:
            return self._shut
        self.stopping = True
        self._closing = False
        self._shut = Deferred()
        grace = self.config.shutdown.grace_s if grace_s is None else grace_s
        log.info("shutting down: {n} sessions may finish their statements for {grace}s",
                 n=len(self.connections), grace=grace)
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        for conn in list(self.connections):
            conn.shutdown_requested()
        self._grace = self.reactor.callLater(grace, self._grace_over)
        self._drained()
        return self._shut

    def _grace_over(self) -> None:
        if self.connections:
            log.info("grace period over: ending {n} sessions", n=len(self.connections))
        for conn in list(self.connections):
            conn.end_for_shutdown(running=True)

    def _drained(self) -> None:
        if self.connections or self._shut.called or self._closing:
            return
        self._closing = True
        if self._grace.active():
            self._grace.cancel()
        DeferredList(self.cancels).addCallback(lambda _: self._closed())

    def _closed(self) -> None:
        self.close_plugins()
        stopping = self.admin_port.stopListening() if self.admin_port is not None else None
        log.info("all sessions ended; records flushed")
        if isinstance(stopping, Deferred):
            stopping.addBoth(lambda _: self._shut.callback(None))
        else:
            self._shut.callback(None)

    def session_started(self, conn: ClientConnection) -> None:
        if self.recorder.active:
            self.recorder.session_start(conn)  # a failure here refuses the session's statements
        self.plugins.notify("pgwarden_session_start", session=conn.session)

    def session_ended(self, conn: ClientConnection, reason: str) -> None:
        log_ = conn.log
        summary = SessionSummary(log_.statements, log_.refused, log_.rows, log_.bytes, reason)
        if self.recorder.active:
            try:
                self.recorder.session_end(conn, reason)
            except RecordingFailed:
                pass  # already logged; the session is over either way
        self.plugins.notify("pgwarden_session_end", session=conn.session, summary=summary)

    def completion_listener(self, conn: ClientConnection):
        """The relay's ``on_complete``: the overhead histogram, and a result record if anyone records."""
        recorder = self.recorder
        stats = self.stats

        def on_complete(ex) -> None:
            stats.overhead(ex.pgwarden_s)
            if ex.masked:
                stats.masked(ex.masked)
            if recorder.active:
                try:
                    recorder.result(conn, ex)
                except RecordingFailed:
                    pass  # the recorder now refuses statements and says why

        return on_complete

    def execute_gate(self):
        """For the relay: no Execute of an earlier Parse while records cannot be written."""
        recorder = self.recorder

        def gate() -> str | None:  # (recording may be switched on by a reload)
            if not recorder.active or recorder.failure is None or recorder.retry():
                return None
            return "records cannot be written; the session ended before its statement ran"

        return gate

    def auth_failed(self, conn: ClientConnection, reason: str, sqlstate: str) -> None:
        self.stats.auth_failure(reason)
        if self.recorder.active:
            try:
                self.recorder.auth_failure(conn, reason, sqlstate)
            except RecordingFailed:
                pass

    def masks_for(self, conn: ClientConnection) -> SessionMasks | None:
        """The relay's masking listeners for ``conn`` (`SessionMasks`: ``shape``, ``copy``,
        ``message``); None, and rows pass untouched, unless a plugin masks results."""
        if not self.plugins.masks:
            return None
        return SessionMasks(self, conn)

    def authenticate(self, startup: m.StartupMessage, token: str) -> Identity:
        """The identity behind ``token``; AuthenticationFailed when no plugin vouches for it."""
        try:
            identity = self.plugins.authenticate(startup, token)
        except AuthenticationFailed:
            raise
        except Exception as e:  # a broken plugin refuses, never admits
            log.failure("authentication plugin failed")
            raise AuthenticationFailed(f"authentication plugin failed: {e!r}") from None
        if isinstance(identity, Deferred):
            return identity.addCallback(_an_identity)
        return _an_identity(identity)

    def application_name(self, identity: Identity, startup: m.StartupMessage) -> str:
        """The upstream session's application_name: who the agent is, for the server's eyes."""
        client = startup.get("application_name") or ""
        template = self.config.upstream.application_name
        name = template.replace("{subject}", identity.subject).replace("{client}", client)
        if client and "{client}" not in template:
            name = f"{name} ({client})"
        return name[:63]  # PostgreSQL keeps NAMEDATALEN - 1 bytes

    # ------------------------------------------------------------------ reload

    def reload(self, config: Config | None = None) -> bool:
        """Takes a new config (by default, the file again); a bad one keeps the running one.

        The next statement of every live session uses the new policies. Changes
        that need a restart (the listen address, its TLS) are reported and not applied.
        """
        running, running_options = self.config, self.plugins.options
        applying = False
        try:
            new = self.plugins.validate(config) if config is not None else reread(self.config.source, self.plugins)
            if new.listen != running.listen:
                log.warn("listen changed in {source}: that needs a restart; still listening as before",
                         source=new.source)
                new = attrs.evolve(new, listen=running.listen)
            # A plugin may find the config unusable only when it applies it (a record sink
            # that cannot be opened): then every plugin goes back to the running config.
            applying = True
            self.plugins.configure(new)
        except Exception as e:
            self.stats.reload_failures += 1
            for problem in getattr(e, "problems", [str(e)]):
                log.error("reload refused, keeping the running config: {source}: {problem}",
                          source=getattr(e, "source", running.source), problem=problem)
            if applying:
                self.plugins.options = running_options
                self.plugins.configure(running)
            return False
        self.config = new
        self.upstream_tls = tls_options(new.upstream)
        self.canceller.upstream = new.upstream
        self.recorder.configure()
        for conn in list(self.connections):
            if conn.session is not None:
                policies = policies_for(conn.session.identity, new.policies)
                replace_policies(conn.session, policies)
                conn.relay.row_cap = row_cap(policies)
                # The upstream session keeps how it was opened (read-only, its statement_timeout).
                conn.limits = core_limits.session_limits(
                    policies, read_only=conn.limits.read_only, startup_timeout_ms=conn.limits.startup_timeout_ms)
                conn.relay.policy_generation += 1  # statements parsed before are decided again at Bind
        self.reloads += 1
        log.info("reloaded {source}", source=new.source)
        self.warn_mask_columns(self.catalog.current)
        return True

    def warn_mask_columns(self, catalog) -> list[str]:
        """Logs a warning for each mask rule's column that the database does not have (at start,
        once the catalog is read, and at each reload); nothing without the live catalog."""
        if not getattr(catalog, "complete", False):
            return []
        warnings = missing_columns(self.config.policies, catalog)
        for warning in warnings:
            log.warn("{source}: {warning}", source=self.config.source, warning=warning)
        return warnings

    def decide(self, conn: ClientConnection, request: StatementRequest) -> object:
        """ALLOW, a Refusal, or a Deferred of one of them; recorded before it takes effect
        (see `pgwarden.decisions`)."""
        if self._decide is not None:
            return self._decide(conn, request)
        return self.decisions.decide(conn, request)

    def session_context(self, startup: m.StartupMessage) -> SqlContext:
        """The context a new session's statements are analysed in: the catalog, the upstream
        role (``$user``) and the search_path the session starts with."""
        given = startup.get("search_path")
        path = parse_path(given) if given else parse_path(", ".join(DEFAULT_SEARCH_PATH))
        return SqlContext(self.catalog.current, user=self.config.upstream.user, search_path=path,
                          default_path=path)
