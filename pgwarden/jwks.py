"""Signing keys fetched from the issuer: a JWKS URL, or found by OIDC discovery.

Keys are cached; a token whose ``kid`` is unknown triggers a refresh (at most one
per ``refresh_interval_s``, so a flood of forged kids cannot hammer the issuer);
when the issuer cannot be reached the last good keys keep serving for
``keep_last_good_s``, then tokens are refused (fail closed).
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

log = Logger(namespace="pgwarden.jwks")


def _agent(reactor, ca_file: str | None) -> Agent:
    """An HTTP client that trusts ``ca_file`` alone when given (a cluster's own CA), else the system's."""
    if ca_file is None:
        return Agent(reactor)
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import BrowserLikePolicyForHTTPS

    with open(ca_file, "rb") as f:
        pem = f.read()
    end = b"-----END CERTIFICATE-----"
    certificates = [Certificate.loadPEM(part + end) for part in pem.split(end) if b"-----BEGIN" in part]
    if not certificates:
        raise ValueError(f"{ca_file}: no PEM certificate in it")
    trust = trustRootFromCertificates(certificates)
    return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust))


class KeysUnavailable(Exception):
    """No usable keys: the issuer is unreachable and nothing good is cached."""


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
        self._agent = agent or _agent(reactor, ca_file)
        self._bearer_token_file = bearer_token_file
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._inflight: Deferred | None = None
        self.fetches = 0

    def _now(self) -> float:
        return self._reactor.seconds()

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._now() - self._fetched_at < self._cache_s

    def _usable(self) -> bool:
        return self._fetched_at is not None and self._now() - self._fetched_at < self._keep_last_good_s

    @inlineCallbacks
    def key_for(self, kid: str | None):
        """A Deferred of the key for ``kid``; fails with KeysUnavailable or KeyError."""
        if not self._fresh():
            yield self._refresh()
        elif kid not in self._keys and (
            self._attempted_at is None or self._now() - self._attempted_at >= self._refresh_interval_s
        ):
            yield self._refresh()  # perhaps the issuer rotated its keys
        if not self._usable():
            raise KeysUnavailable("the issuer's keys cannot be fetched and none are cached")
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise KeyError(kid)

    def _refresh(self) -> Deferred:
        if self._inflight is None:
            self._inflight = self._fetch()
            self._inflight.addBoth(self._done)
        d: Deferred = Deferred()
        self._inflight.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _done(self, result):
        self._inflight = None
        return None

    @inlineCallbacks
    def _fetch(self):
        self._attempted_at = self._now()
        self.fetches += 1
        try:
            url = self._jwks_url
            if url is None:
                discovery = yield self._get_json(f"{self._issuer}/.well-known/openid-configuration")
                url = discovery.get("jwks_uri")
                if not isinstance(url, str):
                    raise ValueError("the OIDC discovery document has no jwks_uri")
            document = yield self._get_json(url)
            keys = {}
            for key in jwt.PyJWKSet.from_dict(document).keys:
                keys[key.key_id] = key.key
            self._keys = keys
            self._fetched_at = self._now()
        except Exception as e:
            log.error("cannot fetch the token signing keys: {err}", err=e)

    @inlineCallbacks
    def _get_json(self, url: str):
        headers = Headers({b"accept": [b"application/json"]})
        if self._bearer_token_file:  # re-read each time: the kubelet rotates it
            with open(self._bearer_token_file, "rb") as f:
                headers.addRawHeader(b"authorization", b"Bearer " + f.read().strip())
        response = yield self._agent.request(b"GET", url.encode(), headers)
        body = yield readBody(response)
        if response.code != 200:
            raise ValueError(f"GET {url}: HTTP {response.code}")
        return json.loads(body)
