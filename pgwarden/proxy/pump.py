"""A relaying session's per-message work: what a read from either side does, as a class mypyc compiles.

Why a class of its own: `ClientConnection` and `UpstreamProtocol` are Twisted Protocols, and a
class mypyc compiles natively cannot derive from one. Their methods ran as several Python calls
per statement (the two reads, a flush after each, the decider's call, the catalog's check):
once a session relays, the two reads go straight to a `Pump` instead: each protocol takes the
pump's bound method as its ``dataReceived`` (`ClientConnection._upstream_ready`,
`UpstreamProtocol.relay_to`), so the reactor's read calls it without a Python frame between.
The pump works with the relay, the turns, both transports and the stats by their native or
exact types; what the session's life cycle owns (its phase, why it ended, the catalog flags the
decisions set) stays on the connection, read and written here as its attributes.

Compiled or not, this is the same code (`pgwarden.compiled`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.decisions import Decisions
from pgwarden.proxy.loop import DirectIO, direct_io_fd, register_direct_io, withdraw_direct_io
from pgwarden.proxy.state import ConnectionState
from pgwarden.relay.engine import PENDING, DecisionSource, Relay, StatementRequest, settled
from pgwarden.traffic import Traffic
from pgwarden.verdict import Refusal, Verdict

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.proxy.client import CatalogSource, ClientConnection, SessionDecider, SessionHost
    from pgwarden.proxy.peer import IRelayTransport
    from pgwarden.turns import Turns

log = Logger(namespace="pgwarden.proxy")


class Pump(DecisionSource):
    """One session's relay phase: the client's and the server's bytes through its relay, its verdicts."""

    #: the session's relay, made with `decide` as its decider (so set just after the pump is)
    relay: Relay
    __deletable__ = ("relay",)  # mypyc: `release` deletes it

    def __init__(self, conn: ConnectionState, client: IRelayTransport, upstream: IRelayTransport) -> None:
        services = conn.services
        #: the session's state, by its native base: compiled, the pump reads and writes its
        #: fields directly (`pgwarden.proxy.state`)
        self.conn = conn
        self.host: SessionHost = services.host
        self.turns: Turns = services.turns
        self.stats: Stats = services.stats
        self.traffic: Traffic = services.stats.traffic
        self.decider: SessionDecider = services.decider
        #: the decider when it is pgwarden's own (always, but where a test puts another in its
        #: place): compiled, `decide` calls it natively, a C call instead of a Python-level one
        self.decisions: Decisions | None = services.decider if isinstance(services.decider, Decisions) else None
        self.catalog: CatalogSource = services.catalog
        self.client = client
        self.upstream = upstream
        #: the client's reads are paused until the pending verdict comes (its backlog grew too large)
        self.paused_for_backlog = False
        #: pgwarden is shutting down: the session ends once idle (`ClientConnection.shutdown_requested`
        #: says so; a native copy of ``host.stopping``, read at every statement's end)
        self.stopping: bool = bool(services.host.stopping)
        #: both connections registered with the reactor as `DirectIO`s (`read_directly`)
        self.direct: list[DirectIO] = []
        self.reactor: object = None
        #: what `flush` hands the turns each side's bytes with: the connection, or its `DirectIO`
        self.client_out: object = client
        self.upstream_out: object = upstream

    def read_directly(self, reactor: object) -> None:
        """Has ``reactor`` hand each connection's reads straight to `client_data` / `server_data`
        (`pgwarden.proxy.loop.DirectIO`), where it can: each protocol's ``dataReceived`` is
        already that method (the caller has made it so), the path only skips the lookups."""
        self.reactor = reactor
        entries: list[DirectIO] = []
        fd, size = direct_io_fd(reactor, self.client)
        if fd >= 0 and _reads_go_to(self.client, self.client_data):
            entries.append(ClientRead(self.client, fd, size, self))
        fd, size = direct_io_fd(reactor, self.upstream)
        if fd >= 0 and _reads_go_to(self.upstream, self.server_data):
            entries.append(ServerRead(self.upstream, fd, size, self))
        for entry in entries:
            register_direct_io(reactor, entry)
            # its sends too (`pgwarden.turns.send_direct`: a statement's answer without the
            # lookups that find the socket; a large result's reads as before)
            if isinstance(entry, ClientRead):
                self.client_out = entry
            else:
                self.upstream_out = entry
        self.direct = entries

    def release(self) -> None:
        """Both connections are over: lets go of the relay, whose decider is this pump's own
        method (a reference cycle, see `ClientConnection._release`), and of the reactor's
        direct reads of them."""
        for entry in self.direct:
            withdraw_direct_io(self.reactor, entry)
        self.direct = []
        self.client_out = self.client
        self.upstream_out = self.upstream
        try:
            del self.relay
        except AttributeError:  # never made
            pass

    # ------------------------------------------------------------------ bytes in

    def client_data(self, data: bytes) -> None:
        """The client connection's ``dataReceived`` once it relays."""
        if self.conn.phase != "relay":  # closed: nothing more is read from the client
            return
        self.traffic.from_clients += len(data)
        relay = self.relay
        relay.client_data(data)
        self.flush()
        if relay.held_back and relay.backlog > self.host.config.limits.max_backlog_bytes:
            # (a verdict, a counted write's check or a COPY's answer awaited: red team seven had
            # 512 MiB of copy data queued behind the last two)
            self.paused_for_backlog = True
            self.client.pauseProducing()

    def _resume_if_drained(self, relay: Relay) -> None:
        """The client's reads again, once what held its messages back has ended (or they fit)."""
        if not (relay.held_back and relay.backlog > self.host.config.limits.max_backlog_bytes):
            self.paused_for_backlog = False
            self.client.resumeProducing()

    def server_data(self, data: bytes) -> None:
        """The upstream connection's ``dataReceived`` once it relays."""
        self.traffic.from_upstream += len(data)
        relay = self.relay
        relay.server_data(data)
        if relay.error is not None:
            log.failure("relaying results failed", failure=Failure(relay.error))
            relay.error = None
        if self.paused_for_backlog:
            self._resume_if_drained(relay)
        conn = self.conn
        if conn.catalog_changed and relay.state.transaction_status == "I" and relay.idle:
            # A statement that may have changed the catalog has committed (or not): read it again.
            # Only once nothing is in flight: a ReadyForQuery that answers an earlier statement
            # of a pipeline comes before the change commits, and a load then would miss it.
            conn.catalog_changed = False
            ticket = self.catalog.invalidate("a statement may have changed the catalog",
                                             redefines=conn.catalog_redefined)
            if conn.catalog_redefined:
                conn.catalog_redefined = False
                conn.catalog_ticket = ticket
        self.flush()

    # ------------------------------------------------------------------ bytes out

    def flush(self) -> None:
        """What the relay has for either side, on its way at the end of the turn; the close it asks for."""
        relay = self.relay
        conn = self.conn
        if relay.idle and not relay.closing and conn.phase == "relay" and self.stopping:
            cast("ClientConnection", conn).end_for_shutdown(running=False)
            return
        up = relay.pop_upstream()
        if up:
            self.turns.send(self.upstream_out, up)
        down = relay.pop_client()
        if down:
            self.turns.send(self.client_out, down)
        closing = relay.closing
        if closing and conn.phase != "closed":
            if conn.end_reason is None:
                conn.end_reason = closing
            conn.phase = "closed"
            self.turns.close(self.client)
            self.turns.close(self.upstream)

    # ------------------------------------------------------------------ verdicts

    def decide(self, request: StatementRequest) -> object:
        """The relay's decider: the services' verdict, fail-closed; PENDING while a Deferred runs."""
        decisions = self.decisions
        try:
            if decisions is not None:
                result = decisions.decide(cast("ClientConnection", self.conn), request)
            else:
                result = self.decider.decide(cast("ClientConnection", self.conn), request)
        except Exception:  # never let a statement through unchecked
            return self._settle_recorded(request, Failure())
        if settled(result):
            return result
        if not isinstance(result, Deferred):  # a decider that answers nonsense refuses
            return self._settle_recorded(request, Failure(TypeError(f"a decider answered {result!r}")))
        # A Deferred: resolve when it fires; meanwhile the relay queues.
        fired: list[object] = []

        def seen(outcome: object) -> object:
            fired.append(outcome)
            return outcome

        result.addBoth(seen)
        if fired:
            result.addErrback(_handled)  # handled by _settle_recorded; not an "unhandled error"
            return self._settle_recorded(request, fired[0])

        def late(outcome: object) -> None:
            self._late_verdict(request, outcome)

        result.addBoth(late)
        return PENDING

    def _settle_recorded(self, request: StatementRequest, outcome: object) -> object:
        """A verdict the app recorded passes; a failure becomes a recorded refusal."""
        if settled(outcome):
            return outcome
        refusal = _failed(outcome)
        return self.decider.recorded(cast("ClientConnection", self.conn), request, None,
                                     Verdict.block("the policy check failed"), refusal)

    def _late_verdict(self, request: StatementRequest, outcome: object) -> None:
        if self.conn.phase != "relay":
            return
        relay = self.relay
        relay.resolve(request, self._settle_recorded(request, outcome))
        self.flush()
        if self.paused_for_backlog:
            self._resume_if_drained(relay)


class ClientRead(DirectIO):
    """The client connection's reads, straight to its pump's `Pump.client_data`."""

    def __init__(self, selectable: object, fd: int, size: int, pump: Pump) -> None:
        super().__init__(selectable, fd, size)
        self.pump = pump

    def received(self, data: bytes) -> None:
        self.pump.client_data(data)


class ServerRead(DirectIO):
    """The upstream connection's reads, straight to its pump's `Pump.server_data`."""

    def __init__(self, selectable: object, fd: int, size: int, pump: Pump) -> None:
        super().__init__(selectable, fd, size)
        self.pump = pump

    def received(self, data: bytes) -> None:
        self.pump.server_data(data)


def _reads_go_to(transport: object, method: object) -> bool:
    """Whether ``transport``'s protocol hands its reads to ``method`` (a bound method of the pump)."""
    protocol = getattr(transport, "protocol", None)
    return protocol is not None and getattr(protocol, "dataReceived", None) == method


def _handled(_failure: object) -> None:
    """An errback that takes a failure the verdict already accounts for."""


def _failed(outcome: object) -> Refusal:
    """The refusal of a verdict that failed (or answered what no verdict is)."""
    if isinstance(outcome, Failure):
        log.failure("verdict failed", failure=outcome)
    return Refusal("42501", "pgwarden: blocked: the policy check failed", None, None)
