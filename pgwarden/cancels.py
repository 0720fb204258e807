"""Cancel forwarding: a client's CancelRequest, with pgwarden's key, reaches the upstream backend.

A client gets BackendKeyData with the upstream backend's process ID and a secret of
pgwarden's own, so its cancel comes through pgwarden, where a statement may still be
waiting for its verdict. The map from that pair to the session, and the cancel connection
to the upstream with the upstream's real key, live here, apart from the application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from pgwarden.wire import messages as m

if TYPE_CHECKING:
    from pgwarden.config import Upstream
    from pgwarden.proxy.client import ClientConnection

# The namespace these lines had before the module was split out of app.py: operators filter on it.
log = Logger(namespace="pgwarden.app")


class _CancelSender(Protocol):
    """Sends one CancelRequest and waits for the server to close the connection.

    PostgreSQL closes it only after it has signalled the backend; clients (libpq,
    asyncpg) wait for that close before sending their next statement, so the
    client's own cancel connection must not close any earlier, or the cancel
    could hit the statement after the one it was meant for.
    """

    transport: ITCPTransport

    def __init__(self, packet: bytes, done: Deferred, reactor, timeout_s: float) -> None:
        self._packet = packet
        self._done = done
        self._timer = reactor.callLater(timeout_s, self._give_up)

    def connectionMade(self) -> None:
        self.transport.write(self._packet)

    def _give_up(self) -> None:
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        if self._timer.active():
            self._timer.cancel()
        if not self._done.called:
            self._done.callback(None)


class CancelForwarder:
    """The cancel keys handed out to live sessions, and the forwarding of a cancel upstream.

    ``upstream`` is the running config's; a reload replaces it, so a cancel goes where the
    sessions opened after the reload connect.
    """

    def __init__(self, reactor, upstream: Upstream) -> None:
        self.reactor = reactor
        self.upstream = upstream
        #: (process ID, pgwarden's secret) → the session it was handed to
        self.keys: dict[tuple[int, int], ClientConnection] = {}

    def cancel(self, pid: int, secret: int) -> Deferred:
        """Maps a client's CancelRequest to the upstream backend behind it.

        The Deferred fires once the upstream has closed the cancel connection
        (it has signalled its backend), or the attempt failed or timed out.
        """
        conn = self.keys.get((pid, secret))
        if conn is None:
            log.info("cancel request with an unknown key ignored")
            return succeed(None)
        conn.cancel_requested()
        key = getattr(conn, "upstream_key", None)
        if key is None:
            return succeed(None)
        packet = m.CancelRequest(key.process_id, key.secret_key).encode()
        cfg = self.upstream
        done: Deferred = Deferred()
        endpoint = HostnameEndpoint(self.reactor, cfg.host, cfg.port, timeout=cfg.connect_timeout_s)
        connecting = endpoint.connect(
            Factory.forProtocol(lambda: _CancelSender(packet, done, self.reactor, cfg.connect_timeout_s))
        )

        def unreachable(failure):
            log.error("cannot forward a cancel request: {err}", err=failure.getErrorMessage())
            if not done.called:
                done.callback(None)

        connecting.addErrback(unreachable)
        return done
