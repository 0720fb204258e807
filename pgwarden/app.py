"""One running pgwarden: its config, listener, live sessions, reload and shutdown.

Built per process with the reactor injected, so tests run several side by side
and nothing depends on a global.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pgwarden.authentication import Authentication
from pgwarden.cancels import CancelForwarder
from pgwarden.catalog import builtin_catalog
from pgwarden.catalog.live import LiveCatalog
from pgwarden.catalog.planner import ServerPlans
from pgwarden.config import Config, ConfigError, ListenTLS
from pgwarden.decisions import Decisions
from pgwarden.masking import missing_columns
from pgwarden.metrics import Stats
from pgwarden.plugins import PluginHost
from pgwarden.policy import matching_policies
from pgwarden.preflight import reread
from pgwarden.proxy.client import ClientConnection, SessionServices
from pgwarden.proxy.state import CatalogState
from pgwarden.proxy.upstream import tls_options
from pgwarden.recorder import Recorder
from pgwarden.relay.engine import StatementRequest
from pgwarden.session_events import SessionEvents
from pgwarden.sql.cache import StatementCache
from pgwarden.turns import Turns

if TYPE_CHECKING:
    from pgwarden.mcp.http import McpEndpoint

log = Logger(namespace="pgwarden.app")

Decide = Callable[[ClientConnection, StatementRequest], object]


class _Fixed(CatalogState):
    """A catalog source that never changes (the shipped snapshot): `current` that catalog,
    `pending` and `redefining` False (`CatalogState`, what the decision reads)."""

    def __init__(self, catalog) -> None:
        CatalogState.__init__(self, catalog)

    def start(self) -> None:
        pass

    def invalidate(self, reason: str, redefines: bool = True, seen: bool = False, functions: bool = True) -> int:
        return 0

    def has_read(self, ticket: int) -> bool:
        return True

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
    def __init__(self, services: SessionServices) -> None:
        self.services = services

    def buildProtocol(self, addr: object) -> Protocol:
        return ClientConnection(self.services)


class _Overridden:
    """A decider given to the `Application` (tests of the relay decide themselves); what fails
    is still recorded by the real decisions."""

    def __init__(self, decide: Decide, decisions: Decisions) -> None:
        self.decide = decide
        self.recorded = decisions.recorded


class Application:
    """One pgwarden. ``decide`` replaces the plugins' decisions (tests of the relay use it)."""

    # The shutdown's, once `shutdown` began.
    _shut: Deferred[None]
    _grace: IDelayedCall
    _closing: bool

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
        self.admin_port: IListeningPort | None = None
        #: the MCP endpoint (``mcp:``), once `listen_mcp` started it
        self.mcp_port: IListeningPort | None = None
        self.mcp: McpEndpoint | None = None
        self.statements = StatementCache()
        #: the catalog facts: live from the upstream over pgwarden's own connection once
        #: `listen` started it, the shipped snapshot until then and whenever it is unreachable
        self.catalog = LiveCatalog(config.upstream, reactor, ttl_s=config.catalog.ttl_s,
                                   max_stale_s=config.catalog.max_stale_s, check_s=config.catalog.check_s) \
            if config.catalog.live else _Fixed(builtin_catalog())
        if isinstance(self.catalog, LiveCatalog):
            self.catalog.on_change_seen.append(self._decide_binds_again)
        #: the server's own plans, that masking checks lineage against (with the live catalog only)
        self.plans = ServerPlans(config.upstream, reactor, self._relation_columns,
                                 lambda: self.catalog.current.generation) if config.catalog.live else None
        self.upstream_tls = tls_options(config.upstream)
        self.client_tls = client_tls(config.listen.tls) if config.listen.tls is not None else None
        self.decisions = Decisions(self.plugins, self.recorder, self.stats, self.statements, self.catalog,
                                   reactor, lambda: self.config.approvals)
        #: the cancel keys handed to sessions, and forwarding a CancelRequest upstream
        self.canceller = CancelForwarder(reactor, config.upstream)
        self.connections: set[ClientConnection] = set()
        self.decisions.approvals.connections = lambda: self.connections
        self.port: IListeningPort | None = None
        self.reloads = 0
        #: what each connection works with, by the interfaces it needs (`pgwarden.proxy.client`)
        events = SessionEvents(self.plugins, self.recorder, self.stats, self.catalog, self.statements)
        self.services = SessionServices(
            host=self,
            reactor=reactor,
            authenticator=Authentication(self.plugins),
            decider=self.decisions if decide is None else _Overridden(decide, self.decisions),
            events=events,
            relays=events,
            catalog=self.catalog,
            canceller=self.canceller,
            turns=self.turns,
            stats=self.stats,
            plans=self.plans,
        )

    # ------------------------------------------------------------------ listening

    def listen(self) -> IListeningPort:
        lc = self.config.listen
        self.catalog.start()
        self.catalog.first_load().addCallback(lambda catalog: self.warn_mask_columns(catalog))
        self.port = port = self.reactor.listenTCP(lc.port, _ClientFactory(self.services), interface=lc.host)
        log.info("pgwarden listening on {host}:{port}", host=lc.host, port=port.getHost().port)
        return port

    def listen_admin(self):
        """/healthz, /readyz and /metrics on ``admin.host:admin.port``."""
        from pgwarden.admin import listen_admin

        self.admin_port = port = listen_admin(self)
        log.info("admin endpoint on {host}:{port}", host=self.config.admin.host, port=port.getHost().port)
        return port

    def listen_mcp(self) -> IListeningPort:
        """The MCP endpoint on ``mcp.host:mcp.port`` (`pgwarden.mcp`)."""
        from pgwarden.mcp.http import listen_mcp

        port, self.mcp = listen_mcp(self)
        self.mcp_port = port
        log.info("MCP endpoint on {url} (listening on {address})", url=self.mcp.settings.url,
                 address=str(port.getHost()))
        return port

    def _stop_mcp(self) -> None:
        """No new MCP calls; the idle internal sessions end (busy ones end with the others)."""
        if self.mcp_port is not None:
            self.mcp_port.stopListening()
            self.mcp_port = None
        if self.mcp is not None:
            self.mcp.sessions.close()

    def stop(self) -> Deferred:
        """Stops listening, closes every session, then the plugins (their last records written)."""
        if self.stopping:  # draining already: now the sessions left end at once
            self._grace_over()
            return self._shut
        self._stop_mcp()
        for conn in list(self.connections):
            conn.transport.abortConnection()
        stopping: Deferred[object] = maybeDeferred(self.port.stopListening) if self.port is not None \
            else succeed(None)
        admin_port = self.admin_port
        if admin_port is not None:
            stopping.addCallback(lambda _: maybeDeferred(admin_port.stopListening))
        # Aborted connections end on the next reactor turn, with their session_end records.
        return stopping.addCallback(lambda _: deferLater(self.reactor, 0, self.close_plugins))

    def close_plugins(self) -> None:
        """The last records out, then every plugin closes what it holds (sinks, files)."""
        self.catalog.stop()
        if self.plans is not None:
            self.plans.close()
        self.recorder.close()
        self.plugins.notify("pgwarden_stop")

    def _relation_columns(self, schema: str, table: str) -> list[str] | None:
        """A relation's column names in order, from the catalog in use (None: not known)."""
        catalog = self.catalog.current
        for rel in catalog.relations_named(table):
            if rel.schema == schema:
                columns = catalog.columns_of(rel.oid)
                return None if columns is None else [c.name for c in columns]
        return None

    # ------------------------------------------------------------------ sessions

    def _decide_binds_again(self, functions: bool = True) -> None:
        """The catalog's change check saw another client's change that may define again what
        lineage goes through: in every session that masks, each named statement is decided again
        at its next Bind, which waits for the load that reads the change (the rows of a statement
        decided before the check saw it are traced on the catalog before it: the check's bound).
        Without this, a statement prepared long before and run after the change was seen would be
        judged on the facts before it; its rows used to be masked whole instead, NULL in the type
        OIDs a driver's own type query reads (asyncpg: ``TypeError: an integer is required``).
        A session's own change through pgwarden counts too, for the other sessions (red team
        fifteen: a statement another session Parsed before it was not decided again at its Bind,
        and ``SELECT id FROM orders WHERE f() LIKE '8%'`` answered the guess once ``f()`` was
        replaced to return the SSN). And a portal bound before the change is forgotten (an
        Execute of it is refused): the server runs the plan of its Bind, made on the definitions
        before, while its rows would be traced on those after (``SELECT f(i) ...``, suspended by
        Execute's row limit, ``f()`` replaced from returning the SSN to returning the name: the
        portal's next Execute returned the SSNs in clear). Its SQL cursors likewise become opaque
        (`SessionMasks.redefined`): a WITH HOLD cursor declared before the change runs at its
        COMMIT, after it."""
        for conn in self.connections:
            relay, masks = conn.relay, conn.masks
            if relay is not None and masks is not None and masks.masking():  # (not shadow rules alone)
                relay.policy_generation += 1
                if not functions:
                    # another client's change that left every function's body as it was (an
                    # operator's new table, column or index): a portal's plan, fixed at its Bind,
                    # runs as it was traced; its cursors and open transaction go on (session 30:
                    # any migration forgot every masking session's portals)
                    continue
                masks.redefined()  # its portals and SQL cursors (a WITH HOLD one runs at its COMMIT)
                if relay.state.transaction_status != "I":
                    # Its open transaction may run the definitions before the change until it
                    # ends (a prepared statement's plan and the function bodies its backend has
                    # read: ``EXECUTE q`` of ``SELECT f(id) FROM orders`` ran the old body of
                    # ``f()``, returning the SSN, where lineage traced the new one, the name)
                    conn.catalog_behind = True


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
        self._stop_mcp()
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
            if _mcp_address(new) != _mcp_address(running):
                log.warn("mcp (its presence, host or port) changed in {source}: that needs a restart; the MCP "
                         "endpoint stays as it was", source=new.source)
                new = attrs.evolve(new, mcp=running.mcp)
            # The records built so far go to the sinks of the running config (the recorder keeps
            # a turn's records until its barrier).
            self.recorder.flush(force=True)
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
                conn.policies_replaced(matching_policies(conn.session.identity, new.policies))
        self.reloads += 1
        log.info("reloaded {source}", source=new.source)
        self.warn_mask_columns(self.catalog.current)
        return True

    def hold_shutdown(self, until: Deferred[None]) -> None:
        """A cancel on its way to the upstream: the shutdown waits for it."""
        self.cancels.append(until)

    def warn_mask_columns(self, catalog) -> list[str]:
        """Logs a warning for each mask rule's column that the database does not have (at start,
        once the catalog is read, and at each reload); nothing without the live catalog."""
        if not getattr(catalog, "complete", False):
            return []
        warnings = missing_columns(self.config.policies, catalog)
        for warning in warnings:
            log.warn("{source}: {warning}", source=self.config.source, warning=warning)
        return warnings


def _mcp_address(config: Config) -> tuple[str, int] | None:
    return None if config.mcp is None else (config.mcp.host, config.mcp.port)
