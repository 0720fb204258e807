"""The admin HTTP endpoint (``admin: {host, port}``): /healthz, /readyz, /metrics, and what plugins serve.

/healthz answers as long as the reactor turns (liveness). /readyz says whether
statements can be served: a policy loaded and listening, the database reachable,
records writable, not shutting down; 503 and the reasons otherwise (readiness).
/metrics is the Prometheus text format (see `metrics`). Plugins add their own
resources (``pgwarden_admin_resources``: the approvals API) and readiness
problems (``pgwarden_readiness``: an approval store that is down).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.web import pages, server
from twisted.web.resource import Resource

from pgwarden.metrics import MetricsSource, RecordingHealth, registry_for

if TYPE_CHECKING:
    from pgwarden.config import Config
    from pgwarden.plugins import PluginHost


class RecorderState(RecordingHealth, typing.Protocol):
    """What /readyz asks the recorder: whether records can be written (trying again first)."""

    @property
    def warnings(self) -> list[str]: ...

    def retry(self) -> bool: ...


class AdminSource(MetricsSource, typing.Protocol):
    """What the admin endpoint reads of the running pgwarden (an `Application`), per request."""

    @property
    def config(self) -> Config: ...

    @property
    def reactor(self) -> Any: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def port(self) -> object | None: ...

    @property
    def recorder(self) -> RecorderState: ...

    @property
    def catalog(self) -> object: ...

    @property
    def plugins(self) -> PluginHost: ...


class _Probe(Protocol):
    transport: ITransport

    def connectionMade(self) -> None:
        self.transport.loseConnection()


def upstream_reachable(app: AdminSource, timeout_s: float) -> Deferred:
    """Fires with None when a TCP connection to the database opens, else with the reason."""
    cfg = app.config.upstream
    endpoint = HostnameEndpoint(app.reactor, cfg.host, cfg.port, timeout=timeout_s)
    d = endpoint.connect(Factory.forProtocol(_Probe))
    return d.addCallbacks(lambda _p: None,
                          lambda f: f"database {cfg.host}:{cfg.port} unreachable: {f.getErrorMessage()}")


class _Text(Resource):
    isLeaf = True

    def __init__(self, app: AdminSource) -> None:
        super().__init__()
        self.app = app


class Healthz(_Text):
    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Readyz(_Text):
    def render_GET(self, request):
        app = self.app
        problems = []
        if app.stopping:
            problems.append("shutting down")
        if app.port is None:
            problems.append("not listening")
        if app.recorder.failure is not None and not app.recorder.retry():  # freed space is noticed here too
            problems.append(f"records cannot be written: {app.recorder.failure}")
        problems += app.plugins.readiness()
        warnings = [f"records failing open: {w}" for w in app.recorder.warnings]
        catalog = getattr(app.catalog, "status", None)
        if catalog is not None and catalog.state == "failed":
            # Statements go on; what only the live catalog knows (user functions, operators,
            # views) is judged unknown and refused until a load succeeds.
            warnings.append(catalog.describe(app.reactor.seconds()))

        def answer(unreachable) -> None:
            if unreachable:
                problems.append(unreachable)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setResponseCode(503 if problems else 200)
            lines = problems or ["ready"]
            lines += warnings
            lines.append(f"policies: {len(app.config.policies)} from {app.config.source}")
            if not request._disconnected:
                request.write(("\n".join(lines) + "\n").encode())
                request.finish()

        upstream_reachable(app, app.config.admin.probe_timeout_s).addCallback(answer)
        return server.NOT_DONE_YET


class Metrics(_Text):
    def __init__(self, app: AdminSource) -> None:
        super().__init__(app)
        self.registry = registry_for(app)

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class _Root(Resource):
    def getChild(self, path, request):
        return pages.notFound()


def site(app: AdminSource) -> server.Site:
    root = _Root()
    root.putChild(b"healthz", Healthz(app))
    root.putChild(b"readyz", Readyz(app))
    root.putChild(b"metrics", Metrics(app))
    for segment, resource in app.plugins.admin_resources(("healthz", "readyz", "metrics")).items():
        root.putChild(segment.encode(), resource)  # type: ignore[arg-type]  # a plugin's IResource
    s = server.Site(root)
    s.noisy = False
    s.log = lambda _request: None  # type: ignore[method-assign,assignment]  # no access log: probes every few seconds would drown the op log
    s.displayTracebacks = False
    return s


def listen_admin(app: AdminSource):
    """Listens on ``admin.host:admin.port``; returns the listening port."""
    cfg = app.config.admin
    return app.reactor.listenTCP(cfg.port, site(app), interface=cfg.host)
