"""The Twisted edge towards PostgreSQL: connect, negotiate TLS, log in, then move bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from pgwarden.config import Upstream
from pgwarden.proxy.peer import IRelayTransport
from pgwarden.relay.handshake import LoginFailed, UpstreamLogin
from pgwarden.wire import messages as m
from pgwarden.wire.errors import LocalProtocolError


def tls_options(cfg: Upstream) -> IOpenSSLClientConnectionCreator | None:
    """Client TLS options for the upstream, by ``upstream.tls.mode``."""
    t = cfg.tls
    if t.mode in ("disable",):
        return None
    client_cert = None
    if t.cert_file and t.key_file:
        client_cert = ssl.PrivateCertificate.loadPEM(
            Path(t.cert_file).read_text() + Path(t.key_file).read_text()
        )
    if t.mode in ("verify-ca", "verify-full"):
        if not t.ca_file:
            raise ValueError(f"upstream.tls.mode {t.mode} needs upstream.tls.ca_file")
        ca = ssl.Certificate.loadPEM(Path(t.ca_file).read_bytes())
        if t.mode == "verify-full":
            return ssl.optionsForClientTLS(cfg.host, trustRoot=ca, clientCertificate=client_cert)
        # verify-ca: the chain must lead to the CA; the name is not checked.
        return ssl.CertificateOptions(
            trustRoot=ca,
            privateKey=client_cert.privateKey.original.to_cryptography_key() if client_cert else None,
            certificate=client_cert.original.to_cryptography() if client_cert else None,
        )
    # require / prefer: encrypted, not authenticated (as libpq's sslmode=require).
    return ssl.CertificateOptions(
        privateKey=client_cert.privateKey.original.to_cryptography_key() if client_cert else None,
        certificate=client_cert.original.to_cryptography() if client_cert else None,
    )


def _no_sink(data: bytes) -> None:
    raise LocalProtocolError("upstream bytes with no session to take them")


def _gone(*_: object) -> None:
    """In place of a session's callback once the connection is over (see `UpstreamProtocol.release`)."""


class UpstreamProtocol(Protocol):
    """One connection to PostgreSQL on behalf of one client session."""

    transport: IRelayTransport

    def __init__(
        self,
        login: UpstreamLogin,
        tls_mode: str,
        tls: IOpenSSLClientConnectionCreator | None,
        on_ready: Callable[[UpstreamProtocol], None],
        on_failed: Callable[[str, str], None],
    ) -> None:
        self.login = login
        self._tls_mode = tls_mode
        self._tls = tls
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._phase = "connecting"
        #: set by the session once logged in: receives every byte from the server.
        self.data_sink: Callable[[bytes], None] = _no_sink
        self.lost_sink: Callable[[Failure], None] | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        # Large results arrive in fewer, larger reads: fewer reactor turns per row.
        self.transport.bufferSize = 256 * 1024  # type: ignore[attr-defined]  # tcp.Connection's, in no interface
        if self._tls is not None:
            self._phase = "ssl"
            self.transport.write(m.SSLRequest().encode())
        else:
            self._send_startup()

    def _send_startup(self) -> None:
        self._phase = "login"
        self.transport.write(self.login.start())

    def _fail(self, message: str, sqlstate: str = "08006") -> None:
        if self._phase == "failed":
            return
        self._phase = "failed"
        self._on_failed(message, sqlstate)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._phase == "relay":
            self.data_sink(data)
            return
        if self._phase == "ssl":
            answer, data = data[:1], data[1:]
            if answer == b"S" and self._tls is not None:
                if data:
                    # Bytes after 'S' before the handshake: a man in the middle (CVE-2021-23222).
                    self._fail("the database sent unencrypted data after accepting TLS")
                    return
                self.transport.startTLS(self._tls)
                self._send_startup()
                return
            if answer == b"N" and self._tls_mode == "prefer":
                self._send_startup()
            else:
                self._fail("the database does not accept TLS connections (upstream.tls.mode requires it)")
                return
        if self._phase == "login":
            try:
                reply = self.login.receive(data)
            except LoginFailed as e:
                self._fail(f"cannot log in to the database: {e}", e.sqlstate)
                return
            if reply:
                self.transport.write(reply)
            if self.login.done:
                self._phase = "relay"
                self._on_ready(self)

    def relay_to(self, sink: Callable[[bytes], None], lost: Callable[[Failure], None]) -> None:
        """Logged in: every byte from the server goes to ``sink``, the connection's end to ``lost``.

        ``sink`` takes the reads in place of `dataReceived` too (the session's `Pump`): no
        Python frame of this protocol's between the reactor's read and the session's relay."""
        self.data_sink = sink
        self.lost_sink = lost
        if self._phase == "relay":
            self.dataReceived = sink  # type: ignore[method-assign, assignment]

    @property
    def closed(self) -> bool:
        """Its connection is over (or never came to be): nothing more comes from it."""
        return self._phase == "closed"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        phase, self._phase = self._phase, "closed"
        if phase in ("connecting", "ssl", "login"):
            self._on_failed("the database closed the connection during login", "08006")
        elif phase == "relay" and self.lost_sink is not None:
            self.lost_sink(reason)
        self.release()

    def release(self) -> None:
        """Lets go of the session's callbacks, once nothing can call them any more.

        They are bound methods of the session's `ClientConnection`, which holds this
        protocol: a reference cycle that only the cyclic collector frees, late under
        `pgwarden run`'s thresholds (`pgwarden.cli.tune_gc`). Without the cycle the
        session's objects are freed the moment its last reference goes.
        """
        self._phase = "closed"
        self._on_ready = self._on_failed = self.data_sink = self.lost_sink = _gone
        vars(self).pop("dataReceived", None)  # the session's sink (`relay_to`)
