"""Who is connecting: an identity verified from a JWT presented as the password."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jwt
from twisted.logger import Logger

from pgwarden.config import JwtAuth

log = Logger(namespace="pgwarden.auth")


@attrs.frozen
class Identity:
    """The verified caller. ``claims`` holds every claim of the token (read-only)."""

    subject: str
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, object] = attrs.field(factory=dict, eq=False, repr=False)
    #: when the credential stops being valid (seconds since the epoch); the session ends then
    expires_at: float | None = None


class AuthenticationFailed(Exception):
    """The token was refused; ``reason`` is for pgwarden's log, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(ValueError):
    """A local key file that cannot be used; the message names the setting, the file and why."""


def _read_jwks(path: str) -> jwt.PyJWKSet:
    where = f"auth.jwt.jwks_file: {path}"
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise KeyFileError(f"{where}: {e.strerror or e}") from None
    except ValueError as e:
        raise KeyFileError(f"{where}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeyFileError(f"{where}: expected a JWKS, a JSON object with a \"keys\" list, "
                           f"got {type(doc).__name__}")
    try:
        return jwt.PyJWKSet.from_dict(doc)
    except jwt.PyJWTError as e:
        raise KeyFileError(f"{where}: {e}") from None


class TokenVerifier:
    """Verifies tokens against keys from a local file or from the issuer.

    The accepted algorithms come from the config, never from the token's header,
    so ``alg: none`` and HMAC-keyed-with-the-public-key tokens are refused.
    ``verify`` answers at once (local keys) or with a Deferred (keys fetched
    from the issuer, see `pgwarden.jwks`).
    """

    def __init__(self, config: JwtAuth, reactor=None) -> None:
        self._config = config
        self._keys: dict[str | None, Any] = {}
        self._remote: Any = None
        if config.jwks_file:
            for key in _read_jwks(config.jwks_file).keys:
                self._keys[key.key_id] = key.key
        elif config.public_key_file:
            self._keys[None] = Path(config.public_key_file).read_bytes()
        else:
            from pgwarden.jwks import RemoteKeys

            self._remote = RemoteKeys(
                reactor,
                jwks_url=config.jwks_url,
                issuer=None if config.jwks_url else config.issuer,
                cache_s=config.keys_cache_s,
                refresh_interval_s=config.keys_refresh_interval_s,
                keep_last_good_s=config.keys_keep_last_good_s,
                connect_timeout_s=config.keys_connect_timeout_s,
                timeout_s=config.keys_timeout_s,
                max_bytes=config.keys_max_bytes,
                ca_file=config.ca_file,
                bearer_token_file=config.bearer_token_file,
            )

    def bound_to(self, audience: str) -> TokenVerifier:
        """A verifier of the same keys (the same local key set, or the same remote one with its
        cache and refresh) that wants ``audience`` in the tokens (the MCP endpoint's URL)."""
        other = object.__new__(TokenVerifier)
        other._config = attrs.evolve(self._config, audience=audience)
        other._keys = self._keys
        other._remote = self._remote
        return other

    @staticmethod
    def _kid(token: str) -> str | None:
        try:
            return jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise AuthenticationFailed(f"malformed token: {e}") from None

    def _local_key(self, kid: str | None):
        if None in self._keys and len(self._keys) == 1:
            return self._keys[None]
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthenticationFailed(f"unknown key id {kid!r}")

    def verify(self, token: str):
        """The Identity (local keys), or a Deferred of it (remote keys)."""
        kid = self._kid(token)
        if self._remote is None:
            return self._decode(token, self._local_key(kid))

        def refused(failure):
            from pgwarden.jwks import KeysUnavailable

            if failure.check(KeyError):
                raise AuthenticationFailed(f"unknown key id {kid!r} (after a refresh)")
            if failure.check(KeysUnavailable):
                raise AuthenticationFailed(str(failure.value))
            return failure

        d = self._remote.key_for(kid)
        d.addCallbacks(lambda key: self._decode(token, key), refused)
        return d

    def _decode(self, token: str, key) -> Identity:
        c = self._config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(c.algorithms),
                audience=c.audience,
                issuer=c.issuer,
                leeway=c.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as e:
            raise AuthenticationFailed(f"{type(e).__name__}: {e}") from None
        subject = claims.get(c.identity_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(f"claim {c.identity_claim!r} missing or not a string")
        groups = claims.get(c.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise AuthenticationFailed(f"claim {c.groups_claim!r} is not a list of strings")
        return Identity(subject, frozenset(groups), claims, float(claims["exp"]))


class CurrentKeys:
    """The `TokenVerifier` of the running ``auth.jwt``, through reloads.

    `configure` runs at start-up and at each reload. A local key file is read again each time:
    rotating keys in the ConfigMap that holds the config changes the file, not ``auth.jwt``, so
    the verifier is rebuilt when the settings or the file's bytes change, and kept otherwise
    (remote keys stay cached). A file that cannot be read or used at a reload keeps the keys in
    use (logged); at start-up there are none to keep, and the error is raised.

    One of these serves both doors: the wire port's (the ``jwt`` plugin) and the MCP endpoint's
    (`pgwarden.mcp.http.BearerAuth`, through `TokenVerifier.bound_to`), so a key rotated out is
    refused on both at once.
    """

    def __init__(self) -> None:
        self.verifier: TokenVerifier | None = None
        self._settings: JwtAuth | None = None
        self._keys: bytes | None = None  # the key file's bytes the verifier was built from

    def configure(self, settings: JwtAuth, reactor=None) -> None:
        key_file = settings.jwks_file or settings.public_key_file
        try:
            keys = Path(key_file).read_bytes() if key_file else None
            if self.verifier is not None and self._settings == settings and keys == self._keys:
                return  # unchanged: remote keys stay cached
            verifier = TokenVerifier(settings, reactor)
        except (OSError, ValueError) as e:  # KeyFileError included: it names the file and why
            if self.verifier is None:
                raise  # at start-up there are no keys to keep
            log.error("auth.jwt keys not reloaded, the previous ones stay in use: {file}: {err}",
                      file=key_file, err=e)
            return
        self.verifier, self._settings, self._keys = verifier, settings, keys
