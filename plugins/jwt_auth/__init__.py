"""Built-in plugin ``jwt``: the agent's password is a JWT, verified against ``auth.jwt``."""

from __future__ import annotations

from pathlib import Path

from twisted.logger import Logger

from pgwarden import hookimpl
from pgwarden.identity import TokenVerifier

log = Logger(namespace="pgwarden.auth")


class JwtAuthentication:
    """Verifies tokens with the keys of the current config (replaced on reload)."""

    def __init__(self) -> None:
        self._verifier: TokenVerifier | None = None
        self._settings = None
        self._keys: bytes | None = None  # the key file's bytes the verifier was built from

    @hookimpl
    def pgwarden_configure(self, config, reactor) -> None:
        settings = config.auth.jwt
        key_file = settings.jwks_file or settings.public_key_file
        try:
            # A key file is read again at every reload: rotating keys in the ConfigMap that
            # holds the config changes the file, not ``auth.jwt``.
            keys = Path(key_file).read_bytes() if key_file else None
            if self._verifier is not None and self._settings == settings and keys == self._keys:
                return  # unchanged: remote keys stay cached
            verifier = TokenVerifier(settings, reactor)
        except (OSError, ValueError) as e:  # KeyFileError included: it names the file and why
            if self._verifier is None:
                raise  # at start-up there are no keys to keep
            log.error("auth.jwt keys not reloaded, the previous ones stay in use: {file}: {err}",
                      file=key_file, err=e)
            return
        self._verifier, self._settings, self._keys = verifier, settings, keys

    @hookimpl
    def pgwarden_authenticate(self, startup, secret: str):
        if self._verifier is None:  # pragma: no cover - configure always runs first
            return None
        return self._verifier.verify(secret)

