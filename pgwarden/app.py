"""One running pgwarden: its config, listener, live sessions and cancel keys.

Built per process with the reactor injected, so tests run several side by side
and nothing depends on a global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from pgwarden.config import Config
from pgwarden.identity import Identity, TokenVerifier
from pgwarden.proxy.client import ClientConnection
from pgwarden.proxy.reactor import send_now
from pgwarden.proxy.upstream import tls_options
from pgwarden.relay.engine import ALLOW, StatementRequest
from pgwarden.wire import messages as m

log = Logger(namespace="pgwarden.app")

Decide = Callable[[ClientConnection, StatementRequest], object]


def allow_everything(_conn: ClientConnection, _request: StatementRequest) -> object:
    """The decider used until policies are configured: every statement passes."""
    return ALLOW


class _ClientFactory(Factory):
    def __init__(self, app: Application) -> None:
        self.app = app

    def buildProtocol(self, addr) -> Protocol:
        return ClientConnection(self.app)


class _CancelSender(Protocol):
    def __init__(self, packet: bytes) -> None:
        self._packet = packet

    def connectionMade(self) -> None:
        self.transport.write(self._packet)
        self.transport.loseConnection()


class Application:
    def __init__(self, config: Config, reactor, decide: Decide = allow_everything) -> None:
        self.config = config
        self.reactor = reactor
        self.verifier = TokenVerifier(config.auth.jwt)
        self.upstream_tls = tls_options(config.upstream)
        self.client_tls = None
        if config.listen.tls is not None:
            pem = Path(config.listen.tls.cert_file).read_text() + Path(config.listen.tls.key_file).read_text()
            cert = ssl.PrivateCertificate.loadPEM(pem)
            # libpq 17+ offers ALPN "postgresql" and aborts the handshake when a
            # server that negotiates ALPN at all does not select it.
            self.client_tls = ssl.CertificateOptions(
                privateKey=cert.privateKey.original.to_cryptography_key(),
                certificate=cert.original.to_cryptography(),
                acceptableProtocols=[b"postgresql"],
            )
        self._decide = decide
        self._queue_send = getattr(reactor, "queue_send", None)
        self.cancel_keys: dict[tuple[int, int], ClientConnection] = {}
        self.connections: set[ClientConnection] = set()
        self.port = None

    # ------------------------------------------------------------------ listening

    def listen(self):
        lc = self.config.listen
        self.port = self.reactor.listenTCP(lc.port, _ClientFactory(self), interface=lc.host)
        log.info("pgwarden listening on {host}:{port}", host=lc.host, port=self.port.getHost().port)
        return self.port

    def stop(self):
        """Stops listening and closes every session; returns a Deferred."""
        for conn in list(self.connections):
            conn.transport.abortConnection()
        if self.port is not None:
            return self.port.stopListening()
        return None

    # ------------------------------------------------------------------ sessions

    def send(self, transport, chunks: list[bytes]) -> None:
        """Relays bytes: at the end of this poll iteration with pgwarden's reactor, else now."""
        if self._queue_send is not None:
            self._queue_send(transport, chunks)
        else:
            send_now(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def authenticate(self, startup: m.StartupMessage, token: str) -> Identity:
        return self.verifier.verify(token)

    def application_name(self, identity: Identity, startup: m.StartupMessage) -> str:
        client = startup.get("application_name")
        name = f"pgwarden:{identity.subject}"
        return f"{name} ({client})" if client else name

    def decide(self, conn: ClientConnection, request: StatementRequest) -> object:
        return self._decide(conn, request)

    def cancel(self, pid: int, secret: int) -> None:
        """Maps a client's CancelRequest to the upstream backend behind it."""
        conn = self.cancel_keys.get((pid, secret))
        if conn is None:
            log.info("cancel request with an unknown key ignored")
            return
        conn.cancel_requested()
        key = getattr(conn, "upstream_key", None)
        if key is None:
            return
        packet = m.CancelRequest(key.process_id, key.secret_key).encode()
        cfg = self.config.upstream
        endpoint = HostnameEndpoint(self.reactor, cfg.host, cfg.port, timeout=cfg.connect_timeout_s)
        d = endpoint.connect(Factory.forProtocol(lambda: _CancelSender(packet)))
        d.addErrback(lambda f: log.error("cannot forward a cancel request: {err}", err=f.getErrorMessage()))
