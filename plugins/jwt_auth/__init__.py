"""Built-in plugin ``jwt``: the agent's password is a JWT, verified against ``auth.jwt``."""

from __future__ import annotations

from pgwarden import hookimpl
from pgwarden.identity import TokenVerifier


class JwtAuthentication:
    """Verifies tokens with the keys of the current config (replaced on reload)."""

    def __init__(self) -> None:
        self._verifier: TokenVerifier | None = None
        self._settings = None

    @hookimpl
    def pgwarden_configure(self, config, reactor) -> None:
        if self._verifier is not None and self._settings == config.auth.jwt:
            return  # unchanged by a reload: keep the cached keys
        self._verifier = TokenVerifier(config.auth.jwt, reactor)
        self._settings = config.auth.jwt

    @hookimpl
    def pgwarden_authenticate(self, startup, secret: str):
        if self._verifier is None:  # pragma: no cover - configure always runs first
            return None
        return self._verifier.verify(secret)

