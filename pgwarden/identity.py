"""Who is connecting: an identity verified from a JWT presented as the password."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import jwt

from pgwarden.config import JwtAuth


@attrs.frozen
class Identity:
    """The verified caller. ``claims`` holds every claim of the token."""

    subject: str
    groups: frozenset[str] = frozenset()
    claims: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    expires_at: float | None = None


class AuthenticationFailed(Exception):
    """The token was refused; ``reason`` is for pgwarden's log, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier:
    """Verifies tokens against keys from a local file (JWKS or one public key).

    The accepted algorithms come from the config, never from the token's header,
    so ``alg: none`` and HMAC-keyed-with-the-public-key tokens are refused.
    """

    def __init__(self, config: JwtAuth) -> None:
        self._config = config
        self._keys: dict[str | None, Any] = {}
        if config.jwks_file:
            jwks = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks_file).read_text()))
            for key in jwks.keys:
                self._keys[key.key_id] = key.key
        elif config.public_key_file:
            pem = Path(config.public_key_file).read_bytes()
            self._keys[None] = pem
        else:
            raise ValueError("jwks_url needs the OIDC key fetcher, not available in this build")

    def _key_for(self, token: str):
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthenticationFailed(f"malformed token: {e}") from None
        kid = header.get("kid")
        if None in self._keys and len(self._keys) == 1:
            return self._keys[None]
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthenticationFailed(f"unknown key id {kid!r}")

    def verify(self, token: str) -> Identity:
        c = self._config
        key = self._key_for(token)
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
