"""The MCP endpoint on twisted.web: Streamable HTTP with plain JSON replies, as an OAuth 2.1
resource server.

* ``POST <path of mcp.url>``: one JSON-RPC message; the answer is one JSON object (no SSE).
  ``GET`` is answered 405 (pgwarden sends no messages of its own); ``DELETE`` ends a session.
* ``Origin``: a browser's request whose Origin is not in ``mcp.allowed_origins`` is refused (403)
  before anything else, against DNS rebinding; requests without Origin (agents, CLIs) go on.
* Identity: ``Authorization: Bearer <JWT>``, verified with the verifier agents' tokens use
  (the ``jwt`` plugin's `pgwarden.identity.CurrentKeys`: ``auth.jwt``'s issuer, algorithms and
  keys, the same keys through reloads) but with the audience bound to ``mcp.url`` (RFC 8707): a
  token minted for the wire port, or for another resource, is refused. Without a valid token:
  401 with ``WWW-Authenticate: Bearer resource_metadata="..."`` naming the RFC 9728 metadata, served at
  ``/.well-known/oauth-protected-resource`` (and that path with the endpoint's path appended).
  The token goes nowhere else: the database sessions log in with a one-time ticket.
* A refused token (none, not a bearer token, one that does not verify, an identity no policy
  matches) is an ``auth_failure`` record with ``door: mcp``, the peer and the reason, and counts
  in ``pgwarden_auth_failures_total``, as a refused login on the PostgreSQL port does; like
  there, each refusal is one record (no rate limit: a request costs a verification either way).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from pgwarden.config import ConfigError, Mcp
from pgwarden.identity import AuthenticationFailed, CurrentKeys, Identity, TokenVerifier
from pgwarden.mcp.protocol import INVALID_REQUEST, PARSE_ERROR, McpProtocol, Reply, dumps, error
from pgwarden.mcp.sessions import InternalSessions
from pgwarden.mcp.tools import DatabaseTools
from pgwarden.proxy.peer import peer_text
from pgwarden.recorder import RecordingFailed, SessionLog, new_session_id

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort
    from twisted.web.server import Request

    from pgwarden.app import Application
    from pgwarden.config import Config, JwtAuth

log = Logger(namespace="pgwarden.mcp")

METADATA_PATH = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    """Where RFC 9728 puts the metadata of ``resource``: the well-known path, then the resource's path."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{path}"


class BearerAuth:
    """Verifies bearer tokens for the endpoint, with ``auth.jwt`` bound to ``mcp.url``.

    The keys are the wire port's: the ``jwt`` plugin's `CurrentKeys`, which a reload re-reads (a
    key rotated out of ``jwks_file`` or ``public_key_file`` is refused on both doors at once) and
    whose remote key set is the one cache, refreshed by the one set of rules. With that plugin
    disabled (another authenticator on the wire port), the endpoint keeps its own `CurrentKeys`
    of ``auth.jwt``, configured at start and at each reload the same way.
    """

    #: tokens verified, kept until they expire (a client sends the same token with every call)
    MAX_CACHED = 1024

    def __init__(self, app: Application) -> None:
        self.app = app
        self._own = CurrentKeys()
        self._own_reloads: int | None = None  # the reload the own keys were configured at
        self._built_for: tuple[TokenVerifier, str] | None = None
        self._verifier: TokenVerifier | None = None
        self._verified: dict[str, Identity] = {}

    def _keys(self, jwt: JwtAuth) -> TokenVerifier:
        """The wire port's verifier (the ``jwt`` plugin's), else the endpoint's own."""
        plugin_keys = getattr(self.app.plugins.pm.get_plugin("jwt"), "keys", None)
        if isinstance(plugin_keys, CurrentKeys) and plugin_keys.verifier is not None:
            return plugin_keys.verifier
        if self._own_reloads != self.app.reloads or self._own.verifier is None:
            try:
                self._own.configure(jwt, self.app.reactor)
            except (OSError, ValueError) as e:
                raise AuthenticationFailed(f"auth.jwt keys unusable: {e}") from None
            self._own_reloads = self.app.reloads
        assert self._own.verifier is not None
        return self._own.verifier

    def verifier(self) -> TokenVerifier:
        config = self.app.config
        jwt, mcp = config.auth.jwt, config.mcp
        if jwt is None or mcp is None:
            raise AuthenticationFailed("the MCP endpoint needs auth.jwt and mcp")
        keys = self._keys(jwt)
        built_for = self._built_for
        if built_for is None or built_for[0] is not keys or built_for[1] != mcp.url or self._verifier is None:
            self._verifier = keys.bound_to(mcp.url)
            self._built_for = (keys, mcp.url)
            self._verified.clear()  # other keys, issuer or audience: every token is verified again
        return self._verifier

    def verify(self, authorization: str | None) -> Identity | Deferred[Identity]:
        if authorization is None:
            raise AuthenticationFailed("no bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed("not a bearer token")
        verifier = self.verifier()
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at is not None and known.expires_at > self.app.reactor.seconds():
                return known
            del self._verified[token]
        identity = verifier.verify(token)
        if isinstance(identity, Deferred):
            return identity.addCallback(self._keep, token)
        return self._keep(identity, token)

    def _keep(self, identity: Identity, token: str) -> Identity:
        if identity.expires_at is not None:
            if len(self._verified) >= self.MAX_CACHED:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = identity
        return identity


class McpEndpoint:
    """The endpoint's parts: the bearer check, the JSON-RPC protocol, the tools and sessions."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.auth = BearerAuth(app)
        self.sessions = InternalSessions(app, lambda: self.settings.idle_s)
        self.tools = DatabaseTools(app, self.sessions, lambda: self.settings)
        self.protocol = McpProtocol(self.tools)

    @property
    def settings(self) -> Mcp:
        mcp = self.app.config.mcp
        assert mcp is not None
        return mcp

    def refused(self, peer: str, reason: str, sqlstate: str, identity: Identity | None = None) -> None:
        """A refused token, as the wire path counts and records a refused login (never the token)."""
        app = self.app
        app.stats.auth_failure(reason)
        recorder = app.recorder
        if not recorder.active:
            return
        slog = SessionLog(new_session_id())
        if identity is not None:  # no policy: who it was is known
            slog.identity = {"subject": identity.subject, "groups": sorted(identity.groups)}
        try:
            recorder.mcp_auth_failure(slog, peer, reason, sqlstate)
        except RecordingFailed:
            pass  # logged by the recorder; the request is refused either way

    def metadata(self) -> dict[str, Any]:
        """RFC 9728 protected resource metadata."""
        config = self.app.config
        settings = self.settings
        servers = list(settings.authorization_servers) or (
            [config.auth.jwt.issuer] if config.auth.jwt is not None else [])
        return {"resource": settings.url, "authorization_servers": servers,
                "bearer_methods_supported": ["header"], "resource_name": "pgwarden"}


def _send(request: Request, reply: Reply) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(reply.status)
    for name, value in reply.headers.items():
        request.setHeader(name, value)
    if reply.body is not None:
        body = dumps(reply.body)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(body)))
        request.write(body)
    else:
        request.setHeader("Content-Length", "0")
    request.finish()


#: the request headers the protocol reads (`McpProtocol.handle`), lowercase
_MCP_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id")


def _mcp_headers(request: Request) -> dict[str, str]:
    """The headers `McpProtocol` reads, by lowercase name (the last value of each, as sent)."""
    raw = request.requestHeaders
    found: dict[str, str] = {}
    for name in _MCP_HEADERS:
        values = raw.getRawHeaders(name)
        if values:
            value = values[-1]
            found[name] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return found


class _Site(server.Site):
    """Bodies are JSON: no form parsing (twisted.web would parse the Content-Type of every POST
    with the email package to look for a form: a fifth of a ``whoami`` call's CPU). No access-log
    line per call: every tool call that touches the database has its records (``audit_id``),
    every refused token an ``auth_failure`` record and an op-log line (the access line cost a
    formatted date and a flushed op-log write per call)."""

    def __init__(self, resource: Resource) -> None:
        try:
            super().__init__(resource, parsePOSTFormSubmission=False)
        except TypeError:  # a Twisted older than the option: forms parsed, the same answers, slower
            super().__init__(resource)

    def log(self, request: object) -> None:
        pass


class _Root(Resource):
    """Every path: the endpoint's, the metadata's, else 404."""

    isLeaf = True

    def __init__(self, endpoint: McpEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._paths_of: tuple[str, str, tuple[str, str]] | None = None

    def _paths(self) -> tuple[str, tuple[str, str]]:
        """The endpoint's path and the metadata's paths, for ``mcp.url`` as it is now (a reload
        may change it): worked out once per URL, not per call."""
        url = self.endpoint.settings.url
        known = self._paths_of
        if known is None or known[0] != url:
            mine = urlsplit(url).path or "/"
            known = self._paths_of = (url, mine, (METADATA_PATH, urlsplit(metadata_url(url)).path))
        return known[1], known[2]

    def render(self, request: Request) -> bytes | int:
        path = request.path.decode("utf-8", "replace")
        request.setHeader("Cache-Control", "no-store")
        mine, metadata_paths = self._paths()
        if path in metadata_paths:
            if request.method not in (b"GET", b"HEAD"):
                request.setResponseCode(405)
                request.setHeader("Allow", "GET")
                return b""
            request.setHeader("Content-Type", "application/json")
            return json.dumps(self.endpoint.metadata()).encode()
        if path.rstrip("/") != mine.rstrip("/"):
            request.setResponseCode(404)
            return b""
        refused = self._origin_refused(request)
        if refused is not None:
            _send(request, refused)
            return server.NOT_DONE_YET
        if request.method == b"GET":  # no server-initiated stream: nothing is ever pushed
            request.setResponseCode(405)
            request.setHeader("Allow", "POST, DELETE")
            return b""
        if request.method not in (b"POST", b"DELETE"):
            request.setResponseCode(405)
            request.setHeader("Allow", "POST, DELETE")
            return b""
        authorization = request.getHeader("authorization")
        d = maybeDeferred(self.endpoint.auth.verify, authorization)
        d.addCallbacks(lambda identity: self._authorised(request, identity),
                       lambda failure: self._unauthorised(request, failure, authorization is not None))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _origin_refused(self, request: Request) -> Reply | None:
        origin = request.getHeader("origin")
        if origin is None:
            return None
        allowed = self.endpoint.settings.allowed_origins
        if origin.rstrip("/") in {o.rstrip("/") for o in allowed}:
            return None
        log.info("MCP request from origin {origin} refused (not in mcp.allowed_origins)", origin=origin)
        return error(None, INVALID_REQUEST, "pgwarden: origin not allowed", status=403)

    def _unauthorised(self, request: Request, failure: Failure, had_token: bool) -> None:
        failure.trap(AuthenticationFailed)
        reason = failure.value.reason if isinstance(failure.value, AuthenticationFailed) else ""
        peer = peer_text(request.getClientAddress())
        log.info("MCP authentication failed from {peer}: {reason}", peer=peer, reason=reason)
        self.endpoint.refused(peer, reason, "28P01")
        challenge = f'Bearer resource_metadata="{metadata_url(self.endpoint.settings.url)}"'
        if had_token:
            challenge += ', error="invalid_token", error_description="pgwarden: authentication failed"'
        _send(request, Reply(401, {"jsonrpc": "2.0", "id": None, "error": {
            "code": INVALID_REQUEST, "message": "pgwarden: authentication failed"}},
            {"WWW-Authenticate": challenge}))

    def _authorised(self, request: Request, identity: Identity) -> Deferred[None] | None:
        if not self.endpoint.tools.policies(identity):
            peer = peer_text(request.getClientAddress())
            log.info("MCP: no policy for {subject} from {peer}", subject=identity.subject, peer=peer)
            self.endpoint.refused(peer, "no policy for this identity", "28000", identity)
            _send(request, error(None, INVALID_REQUEST, "pgwarden: no policy for this identity", status=403))
            return None
        headers = _mcp_headers(request)
        if request.method == b"DELETE":
            _send(request, self.endpoint.protocol.end_session(headers, identity))
            return None
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            _send(request, Reply(415, {"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": "expected Content-Type: application/json"}}))
            return None
        content = request.content
        body = content.read(self.endpoint.settings.max_body_bytes + 1) if content is not None else b""
        if len(body) > self.endpoint.settings.max_body_bytes:
            _send(request, Reply(413, {"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": "request body too large (mcp.max_body_bytes)"}}))
            return None
        try:
            message = json.loads(body)
        except ValueError:
            _send(request, error(None, PARSE_ERROR, "not JSON"))
            return None
        return self.endpoint.protocol.handle(message, headers, identity).addCallback(
            lambda reply: _send(request, reply))

    def _failed(self, failure: Failure, request: Request) -> None:
        log.failure("MCP request failed", failure=failure)
        _send(request, error(None, -32603, "pgwarden: internal error (see pgwarden's log)", status=500))


def check_settings(config: Config) -> None:
    """The endpoint needs a token issuer to verify against."""
    if config.mcp is not None and config.auth.jwt is None:
        raise ConfigError(config.source, ["mcp: expected auth.jwt as well: MCP clients present tokens of that "
                                          "issuer, bound to mcp.url"])


def listen_mcp(app: Application) -> tuple[IListeningPort, McpEndpoint]:
    """Listens on ``mcp.host:mcp.port``; returns the port and the endpoint."""
    check_settings(app.config)
    endpoint = McpEndpoint(app)
    site = _Site(_Root(endpoint))
    site.noisy = False
    site.displayTracebacks = False
    settings = endpoint.settings
    port = app.reactor.listenTCP(settings.port, site, interface=settings.host)
    return port, endpoint
