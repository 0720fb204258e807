"""Who is deciding: an approver's JWT from the request's headers, verified like an agent's token.

The token comes as ``Authorization: Bearer <JWT>`` (sent by the inbox's script, by
`pgwarden approvals`, or injected by an authenticating proxy: oauth2-proxy's
``--pass-authorization-header``), or as ``X-Forwarded-Access-Token`` (oauth2-proxy's
``--pass-access-token``). It is verified with the keys and rules of ``auth.jwt`` (issuer,
audience, algorithms from the config), and the identity must hold a group of
``approvals.approver_groups``. Nothing is kept between requests: no cookie, no session, so a
page of another site cannot make a browser decide anything (no CSRF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from pgwarden.identity import AuthenticationFailed, Identity

log = Logger(namespace="pgwarden.approvals.auth")

#: the headers a token is taken from, in this order
TOKEN_HEADERS = (b"authorization", b"x-forwarded-access-token")


class NotAllowed(Exception):
    """No approver: ``status`` 401 (no token, or a bad one) or 403 (valid, but not an approver).
    ``str(e)`` is safe to show: it never says why a token failed verification."""

    def __init__(self, why: str, status: int) -> None:
        super().__init__(why)
        self.status = status


def bearer_token(request: Request) -> str | None:
    """The token the request carries, or None."""
    for name in TOKEN_HEADERS:
        raw = request.getHeader(name)
        if not raw:
            continue
        try:
            value = (raw.decode("ascii") if isinstance(raw, bytes) else raw).strip()
        except UnicodeDecodeError:  # no JWT has such bytes
            continue
        if name == b"authorization":
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                continue
            value = credentials.strip()
        return value
    return None


class Approvers:
    """Turns a request into the approver's verified identity, or `NotAllowed`.

    Both are read at each request: a reload replaces the keys and the groups.

    :param verify: a token -> its Identity, or a Deferred of one; raises (or fails with)
        `AuthenticationFailed` for a token that is refused
    :param groups: the groups whose members may decide (``approvals.approver_groups``)
    """

    def __init__(self, verify: Callable[[str], Identity | Deferred[Identity]],
                 groups: Callable[[], Iterable[str]]) -> None:
        self._verify = verify
        self._groups = groups

    def approver(self, request: Request) -> Deferred[Identity]:
        """The approver's identity; fails with NotAllowed (401 / 403)."""
        token = bearer_token(request)
        if token is None:
            d: Deferred[Identity] = Deferred()
            d.errback(NotAllowed("an approver's token is required (Authorization: Bearer <JWT>)", 401))
            return d

        def refused(failure: Failure) -> Failure:
            if failure.check(AuthenticationFailed):
                log.info("approver token refused: {why}", why=failure.value)
                return Failure(NotAllowed("the token was refused", 401))
            log.failure("verifying an approver's token", failure)
            return Failure(NotAllowed("the token could not be verified now", 503))

        def member(identity: Identity) -> Identity:
            if not identity.groups & frozenset(self._groups()):
                raise NotAllowed(f"{identity.subject} is not an approver: the token has none of the groups "
                                 "in approvals.approver_groups", 403)
            return identity

        return maybeDeferred(self._verify, token).addCallbacks(member, refused)
