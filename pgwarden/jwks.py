"""Signing keys fetched from the issuer: a JWKS URL, or found by OIDC discovery.

Keys are cached; a token whose ``kid`` is unknown triggers a refresh (at most one
per ``refresh_interval_s``, so a flood of forged kids cannot hammer the issuer);
when the issuer cannot be reached the last good keys keep serving for
``keep_last_good_s``, then tokens are refused (fail closed).

A login never waits on a refresh it does not need: once the cache is stale, a
token signed by a key still held is verified at once while the refresh runs in
the background. A fetch has a connect timeout, a deadline for the whole
exchange (discovery and keys) and a cap on each body, so a hung or hostile
issuer costs at most one deadline to the logins that do wait (no key yet, or an
unknown ``kid``) and never unbounded memory.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss

log = Logger(namespace="pgwarden.jwks")

MAX_BYTES = 1024 * 1024


def _agent(reactor, ca_file: str | None, connect_timeout_s: float) -> Agent:
    """An HTTP client that trusts ``ca_file`` alone when given (a cluster's own CA), else the system's."""
    if ca_file is None:
        return Agent(reactor, connectTimeout=connect_timeout_s)
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import BrowserLikePolicyForHTTPS

    with open(ca_file, "rb") as f:
        pem = f.read()
    end = b"-----END CERTIFICATE-----"
    certificates = [Certificate.loadPEM(part + end) for part in pem.split(end) if b"-----BEGIN" in part]
    if not certificates:
        raise ValueError(f"{ca_file}: no PEM certificate in it")
    trust = trustRootFromCertificates(certificates)
    return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust), connectTimeout=connect_timeout_s)


class KeysUnavailable(Exception):
    """No usable keys: the issuer is unreachable and nothing good is cached."""


class FetchFailed(Exception):
    """One fetch of the issuer's documents failed; the message says why, for the log."""


class _CappedBody(Protocol):
    """Collects a response body up to ``limit`` bytes.

    Not ``treq.content``: its Deferred cannot be cancelled, so a body that stalls
    would keep its connection open after the deadline; and not ``readBody``: it
    fails a body ended by closing the connection (HTTP/1.0 without
    Content-Length, which is legal) with ``PartialDownloadError: 200 OK``.
    """

    transport: ITransport

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        #: the body, or the reason there is none
        self.body: Deferred[bytes] = Deferred(self._cancel)
        #: `body` until it has fired
        self.finished: Deferred[bytes] | None = self.body

    def _settle(self) -> Deferred[bytes] | None:
        d, self.finished = self.finished, None
        return d

    def _cancel(self, _d) -> None:
        self._settle()
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self._size += len(data)
        if self._size > self._limit:
            d = self._settle()
            self.transport.loseConnection()
            if d is not None:
                d.errback(FetchFailed(f"the answer is larger than {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        d = self._settle()
        if d is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            d.callback(b"".join(self._chunks))
        else:
            d.errback(reason)


class RemoteKeys:
    def __init__(
        self,
        reactor,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        cache_s: float = 300.0,
        refresh_interval_s: float = 30.0,
        keep_last_good_s: float = 3600.0,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_BYTES,
        agent=None,
        ca_file: str | None = None,
        bearer_token_file: str | None = None,
    ) -> None:
        if not jwks_url and not issuer:
            raise ValueError("a JWKS URL or an issuer (for OIDC discovery) is needed")
        self._reactor = reactor
        self._jwks_url = jwks_url
        self._issuer = issuer.rstrip("/") if issuer else None
        self._cache_s = cache_s
        self._refresh_interval_s = refresh_interval_s
        self._keep_last_good_s = keep_last_good_s
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        from treq.client import HTTPClient  # here: ~1.5 MiB that only a remote key set needs

        self._http = HTTPClient(agent or _agent(reactor, ca_file, connect_timeout_s))
        self._bearer_token_file = bearer_token_file
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._inflight: Deferred | None = None

    def _now(self) -> float:
        return self._reactor.seconds()

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._now() - self._fetched_at < self._cache_s

    def _usable(self) -> bool:
        return self._fetched_at is not None and self._now() - self._fetched_at < self._keep_last_good_s

    def _may_retry(self) -> bool:
        return self._attempted_at is None or self._now() - self._attempted_at >= self._refresh_interval_s

    @inlineCallbacks
    def key_for(self, kid: str | None):
        """A Deferred of the key for ``kid``; fails with KeysUnavailable or KeyError."""
        if not self._usable():
            yield self._refresh()
        elif kid not in self._keys and not (kid is None and len(self._keys) == 1):
            if self._may_retry():
                yield self._refresh()  # perhaps the issuer rotated its keys
        elif not self._fresh() and (self._inflight is not None or self._may_retry()):
            self._refresh()  # in the background: the key held still serves meanwhile
        if not self._usable():
            raise KeysUnavailable("the issuer's keys cannot be fetched and none are cached")
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise KeyError(kid)

    def _refresh(self) -> Deferred:
        """A Deferred that fires (never fails) when the fetch under way, or a new one, is over."""
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = self._fetch()
            inflight.addBoth(self._done)
        d: Deferred[None] = Deferred()

        def over(result: object) -> object:
            d.callback(None)
            return result

        inflight.addBoth(over)
        return d

    def _done(self, result):
        self._inflight = None
        return None

    def _fetch(self) -> Deferred:
        self._attempted_at = self._now()
        d = self._download()
        # One deadline for the whole exchange; cancelling it aborts the connection in use.
        d.addTimeout(self._timeout_s, self._reactor, onTimeoutCancel=self._timed_out)
        d.addCallbacks(self._store, self._failed)
        return d

    def _timed_out(self, result, timeout):
        raise FetchFailed(f"no complete answer within {timeout:g} s (auth.jwt.keys_timeout_s)")

    def _store(self, keys) -> None:
        self._keys = keys
        self._fetched_at = self._now()

    def _failed(self, failure) -> None:
        if failure.check(ConnectTimeout, ConnectingCancelledError):
            why = f"no connection within {self._connect_timeout_s:g} s (auth.jwt.keys_connect_timeout_s)"
        else:
            why = str(failure.value) or type(failure.value).__name__
        source = self._jwks_url or f"{self._issuer} (OIDC discovery)"
        log.error("cannot fetch the token signing keys from {source}: {err}", source=source, err=why)

    @inlineCallbacks
    def _download(self):
        url = self._jwks_url
        if url is None:
            discovery = yield self._get_json(f"{self._issuer}/.well-known/openid-configuration")
            url = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(url, str):
                raise FetchFailed("the OIDC discovery document has no jwks_uri")
        document = yield self._get_json(url)
        try:
            return {key.key_id: key.key for key in jwt.PyJWKSet.from_dict(document).keys}
        except (jwt.PyJWTError, AttributeError, TypeError) as e:
            raise FetchFailed(f"GET {url}: not a JWKS: {e}") from None

    @inlineCallbacks
    def _get_json(self, url: str):
        headers: dict[bytes | str, list[bytes | str]] = {b"accept": [b"application/json"]}
        if self._bearer_token_file:  # re-read each time: the kubelet rotates it
            with open(self._bearer_token_file, "rb") as f:
                headers[b"authorization"] = [b"Bearer " + f.read().strip()]
        response = yield self._http.get(url, headers=headers, unbuffered=True, reactor=self._reactor)
        body = _CappedBody(self._max_bytes)
        finished = body.body
        response.deliverBody(body)
        if response.code != 200:
            finished.addErrback(lambda _: None)
            finished.cancel()  # nothing wanted from it: the connection is closed
            raise FetchFailed(f"GET {url}: HTTP {response.code}")
        data = yield finished
        try:
            return json.loads(data)
        except ValueError as e:
            raise FetchFailed(f"GET {url}: not JSON: {e}") from None
