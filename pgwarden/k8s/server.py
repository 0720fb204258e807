"""The webhook's Twisted edge: HTTPS, POST /mutate and GET /healthz.

The decision itself is `pgwarden.k8s.inject` (pure). This module bounds what it
reads (``max_request_bytes``: 413 beyond, the connection dropped at four times
that), answers malformed bodies with 400 and a message, and serves the TLS
certificate that is in the files *now*: every new connection looks at the
certificate and key files (path after symlinks, inode, size, modification
time) and loads them again if they changed, so a certificate that
cert-manager renews (the kubelet swaps the Secret volume's ``..data`` symlink)
is served from the next connection on, with no restart. A connection already
open keeps the certificate it was opened with. A pair that does not load (a
certificate without its key, for a moment) is logged and the previous one
stays in service until the files change again.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

from pgwarden.k8s.config import DEFAULT_IMAGE, InjectorConfig
from pgwarden.k8s.inject import BadReview, respond
from pgwarden.watch import signature

log = Logger(namespace="pgwarden.webhook")

# Past this many times max_request_bytes, a body is not even read to its end.
_DISCARD_FACTOR = 4


def load_tls_options(cert_file: str, key_file: str) -> ssl.CertificateOptions:
    """Server TLS options from PEM files; the certificate file may carry the chain after the leaf."""
    certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    pems = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    leaf = ssl.PrivateCertificate.loadPEM(pems[0] + Path(key_file).read_bytes())  # checks the key matches
    return ssl.CertificateOptions(
        privateKey=leaf.privateKey.original,
        certificate=leaf.original,
        extraCertChain=[ssl.Certificate.loadPEM(p).original for p in pems[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadingTLS:
    """TLS for each new connection with the certificate currently in the files."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self._files = (cert_file, key_file)
        self._seen = self._signature()
        self._options = load_tls_options(cert_file, key_file)  # a bad pair at start-up is fatal
        self.loads = 1  # how many times a pair was loaded (for tests and the log)

    def _signature(self) -> tuple:
        return tuple(signature(f) for f in self._files)

    def _refresh(self) -> None:
        current = self._signature()
        if current == self._seen or None in current:  # a file missing mid-swap: wait for it
            return
        self._seen = current
        try:
            self._options = load_tls_options(*self._files)
        except Exception as e:
            log.warn("webhook: cannot load the new certificate ({error}); the previous one stays", error=e)
            return
        self.loads += 1
        log.info("webhook: certificate reloaded from {cert}", cert=self._files[0])

    def serverConnectionForTLS(self, protocol):
        self._refresh()
        return self._options.serverConnectionForTLS(protocol)


class BoundedRequest(server.Request):
    """A request whose body is kept in memory up to the site's ``max_request_bytes``.

    Beyond it the body is read and dropped (the resource answers 413); beyond
    `_DISCARD_FACTOR` times it the connection is closed. Never a temporary file
    (Twisted's default for large bodies): the webhook runs on a read-only root.
    """

    too_large = False

    def gotLength(self, length):
        self._limit = self.channel.site.max_request_bytes  # type: ignore[attr-defined]  # a WebhookSite's
        self._received = 0
        self._aborted = False
        self.too_large = length is not None and length > self._limit
        self.content = io.BytesIO()

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > self._limit and not self.too_large:
            self.too_large = True
            self.content = io.BytesIO()
        if self._received > _DISCARD_FACTOR * self._limit:
            if not self._aborted:
                self._aborted = True
                self.channel.transport.abortConnection()  # type: ignore[union-attr]  # a TCP connection
        elif not self.too_large:
            self.content.write(data)  # type: ignore[union-attr]  # set in gotLength


class WebhookSite(server.Site):
    requestFactory = BoundedRequest

    def __init__(self, root, config: InjectorConfig, reactor) -> None:
        super().__init__(root, parsePOSTFormSubmission=False, timeout=30, reactor=reactor)
        self.max_request_bytes = config.max_request_bytes

    def log(self, request) -> None:
        """No access log: /mutate logs its decisions, and probes would drown them."""


def _plain(request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (message + "\n").encode()


class Mutate(resource.Resource):
    isLeaf = True

    def __init__(self, config: InjectorConfig) -> None:
        super().__init__()
        self._config = config

    def render_POST(self, request) -> bytes:
        if request.postpath not in ([], [b""]):
            return resource.NoResource().render(request)
        if request.too_large:
            return _plain(request, 413, f"request body larger than {self._config.max_request_bytes} bytes")
        try:
            body = json.loads(request.content.getvalue())
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            return _plain(request, 400, f"request body is not JSON: {e}"[:500])
        try:
            answer, outcome = respond(body, self._config)
        except BadReview as e:
            return _plain(request, 400, f"not an AdmissionReview request: {e}"[:1000])
        log.info("webhook: {who}: {action} ({reason})", who=_who(body["request"]), action=outcome.action,
                 reason=outcome.reason)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


def _who(request: dict) -> str:
    """namespace/name of the object under review, for the log (a pod of a ReplicaSet has only a generateName)."""
    obj = request.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name") or f"{meta.get('generateName') or ''}*"
    return f"{request.get('namespace') or '-'}/{name}"


class Healthz(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return _plain(request, 200, "ok")


class Root(resource.Resource):
    def render(self, request) -> bytes:
        return resource.NoResource().render(request)


def make_site(config: InjectorConfig, reactor) -> WebhookSite:
    root = Root()
    root.putChild(b"mutate", Mutate(config))
    root.putChild(b"healthz", Healthz())
    return WebhookSite(root, config, reactor)


def listen(config: InjectorConfig, reactor):
    """Starts serving; returns the listening port (``.getHost().port``) and the TLS reloader."""
    tls = ReloadingTLS(config.tls.cert_file, config.tls.key_file)
    port = reactor.listenSSL(config.listen.port, make_site(config, reactor), tls, interface=config.listen.host)
    return port, tls


def run(config_path: str) -> int:
    """``pgwarden webhook --config FILE``: serves until SIGTERM; 2 if it cannot start."""
    from pgwarden.config import ConfigError
    from pgwarden.k8s.config import load_injector_config

    try:
        config = load_injector_config(config_path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    # Twisted's own reactor: pgwarden's (`pgwarden.proxy.reactor`) is tuned for relaying bytes
    # between sessions, and the webhook relays none; it serves a few HTTPS requests.
    from twisted.internet import reactor

    from pgwarden import oplog

    oplog.start()  # as `pgwarden run`: JSON lines on stderr (text on a terminal)
    try:
        port, _tls = listen(config, reactor)
    except Exception as e:  # unreadable or mismatched certificate files, a port in use
        print(f"pgwarden webhook: cannot start: {e}", file=sys.stderr)
        return 2
    from pgwarden.proxy.reactor import name_of

    log.info("webhook: listening on https://{host}:{port}", host=config.listen.host, port=port.getHost().port,
             reactor=name_of(reactor))
    if config.sidecar.image == DEFAULT_IMAGE:
        log.warn("webhook: sidecar.image is {image}, a placeholder nothing is published under: injected pods "
                 "will not pull it; build and push your own (make push IMAGE=...) and set sidecar.image",
                 image=DEFAULT_IMAGE)
    # The readiness line (tests and people wait for it).
    print(f"pgwarden webhook: listening on https://{config.listen.host}:{port.getHost().port}", flush=True)
    reactor.run()
    return 0
