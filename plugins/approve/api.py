"""The approvals JSON API (twisted.web), on a sidecar's admin port and under `pgwarden approvals serve`.

Every call needs ``Authorization: Bearer <JWT>``: a token verified like agents' tokens
(``auth.jwt``) whose groups include one of ``approvals.approver_groups``. The header is the
only credential — no cookies, so a page elsewhere cannot make a browser decide (no CSRF) —
and it is what an authenticating proxy (oauth2-proxy with ``--pass-authorization-header``)
injects. Paths, under the mount point (``/approvals/api`` on the admin port)::

    GET  /requests                    pending requests, oldest first
    GET  /requests?state=ended&limit=N  ended requests, newest first
    GET  /requests/<id>               one request
    POST /requests/<id>/approve       {"reason": ..., "grant": {"kind": "once" | "window",
                                       "minutes": N, "by_fingerprint_only": bool}}
    POST /requests/<id>/deny          {"reason": ...}

Answers are JSON: a request is `pgwarden_plugins.approve.store.to_json`; an error is
``{"error": "..."}`` with 400 (bad body), 401 (no or bad token), 403 (not an approver, own
request), 404, 409 (no longer pending) or 422 (reason missing, grant too long), 503 (store down).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden_plugins.approve.approvers import bearer_token
from pgwarden_plugins.approve.inbox import inbox_for
from pgwarden_plugins.approve.store import (
    ApprovalRules,
    ApprovalStore,
    Decision,
    DecisionRefused,
    Grant,
    StoredRequest,
    StoreUnavailable,
    to_json,
)

log = Logger(namespace="pgwarden.approvals")

#: the largest request body read
MAX_BODY = 64 * 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class _GrantBody:
    kind: str = "once"
    minutes: int | None = None
    by_fingerprint_only: bool = False


@attrs.frozen
class _DecisionBody:
    reason: str | None = None
    grant: _GrantBody = _GrantBody()


_converter = cattrs.Converter(forbid_extra_keys=True)


@attrs.frozen
class ApiContext:
    """What the API needs, read at each call (a reload replaces the rules and the verifier)."""

    store: Callable[[], ApprovalStore | None]
    rules: Callable[[], ApprovalRules]
    #: a token -> the Identity (or a Deferred of it); raises AuthenticationFailed
    verify: Callable[[str], Identity | Deferred[Identity]]
    seconds: Callable[[], float]
    #: called with the request after each decision (metrics, records of the deciding process)
    decided: Callable[[StoredRequest], None] = lambda _r: None


class ApprovalsApi(Resource):
    """``/requests`` and below."""

    isLeaf = True

    def __init__(self, context: ApiContext) -> None:
        super().__init__()
        self.context = context

    def render(self, request: server.Request) -> object:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        d = maybeDeferred(self._authenticated, request)
        d.addCallback(lambda approver: self._route(request, approver))  # type: ignore[call-overload]
        d.addCallbacks(lambda body: self._answer(request, 200, body), lambda f: self._failed(request, f))
        return server.NOT_DONE_YET

    # ------------------------------------------------------------------ steps

    def _authenticated(self, request: server.Request) -> Deferred[Identity] | Identity:
        token = bearer_token(request)  # Authorization: Bearer, or an authenticating proxy's header
        if token is None:
            raise _HttpError(401, "an approver's token is needed: Authorization: Bearer <JWT>")
        rules = self.context.rules()

        def approver(identity: Identity) -> Identity:
            if not identity.groups & set(rules.approver_groups):
                raise _HttpError(403, "you are not an approver: your token has none of the groups in "
                                      "approvals.approver_groups")
            return identity

        return maybeDeferred(self.context.verify, token).addCallback(approver)  # type: ignore[call-overload]

    def _route(self, request: server.Request, approver: Identity) -> Deferred[object]:
        store = self.context.store()
        if store is None:
            raise _HttpError(503, "no approval store is configured")
        parts = [p.decode() for p in request.postpath or () if p]
        method = request.method
        if parts == ["requests"] and method == b"GET":
            state = _arg(request, "state") or "pending"
            if state == "pending":
                return store.pending().addCallback(lambda rs: {"requests": [to_json(r) for r in rs]})
            if state == "ended":
                limit = _int(_arg(request, "limit") or "50", "limit")
                return store.history(min(limit, 1000)).addCallback(lambda rs: {"requests": [to_json(r) for r in rs]})
            raise _HttpError(400, "state is pending or ended")
        if len(parts) == 2 and parts[0] == "requests" and method == b"GET":
            return store.get(parts[1]).addCallback(lambda r: _found(r, parts[1]))
        if len(parts) == 3 and parts[0] == "requests" and parts[2] in ("approve", "deny") and method == b"POST":
            body = self._body(request)
            grant = body.grant
            if grant.kind not in ("once", "window"):
                raise _HttpError(400, "grant.kind is once or window")
            decision = Decision(
                approved=parts[2] == "approve", approver=approver.subject, groups=tuple(sorted(approver.groups)),
                reason=body.reason, at=self.context.seconds(),
                grant=Grant(grant.kind, grant.minutes, grant.by_fingerprint_only),
            )
            d = store.decide(parts[1], decision, self.context.rules())
            return d.addCallback(self._decided)
        raise _HttpError(404 if method in (b"GET", b"POST") else 405, "no such endpoint")

    def _decided(self, stored: StoredRequest) -> dict[str, object]:
        self.context.decided(stored)
        return to_json(stored)

    @staticmethod
    def _body(request: server.Request) -> _DecisionBody:
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise _HttpError(400, "body too large")
        try:
            data = json.loads(raw or b"{}")
            return _converter.structure(data, _DecisionBody)
        except (ValueError, cattrs.BaseValidationError, TypeError) as e:
            raise _HttpError(400, f"expected a JSON object {{reason, grant}}: {e}") from None

    @staticmethod
    def _answer(request: server.Request, status: int, body: object) -> None:
        if request._disconnected:
            return
        request.setResponseCode(status)
        request.write(json.dumps(body, indent=1).encode() + b"\n")
        request.finish()

    def _failed(self, request: server.Request, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, (_HttpError, DecisionRefused)):
            status, message = error.status, str(error)
        elif isinstance(error, AuthenticationFailed):
            status, message = 401, "the token was refused"  # the reason is for the log, not the caller
            log.info("approver token refused: {reason}", reason=str(error))
        elif isinstance(error, StoreUnavailable):
            status, message = 503, f"the approval store is unavailable: {error}"
        else:
            log.failure("approvals API failed", failure)
            status, message = 500, "internal error; see pgwarden's log"
        if status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="pgwarden approvals"')
        self._answer(request, status, {"error": message})


def _arg(request: server.Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return values[0].decode() if values else None


def _int(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _HttpError(400, f"{name} is a number") from None
    if value < 1:
        raise _HttpError(400, f"{name} is at least 1")
    return value


def _found(stored: StoredRequest | None, request_id: str) -> dict[str, Any]:
    if stored is None:
        raise _HttpError(404, f"no request {request_id}")
    return to_json(stored)


class ApprovalsRoot(Resource):
    """``/approvals``: the API under ``api``; the inbox page is served here by the inbox's code."""

    def __init__(self, context: ApiContext) -> None:
        super().__init__()
        self.context = context
        self.putChild(b"api", ApprovalsApi(context))
        self.putChild(b"inbox", inbox_for(context))

    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802
        if path == b"":
            return self
        return super().getChild(path, request)

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        # People come here for the inbox; programs know the API's path (api/requests).
        # A relative Location, so that no path a client sends can make it point to another host.
        base = request.uri.split(b"?", 1)[0]
        request.redirect(b"inbox/" if base.endswith(b"/") else base.rsplit(b"/", 1)[-1] + b"/inbox/")
        return b""
