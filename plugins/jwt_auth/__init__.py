"""Built-in plugin ``jwt``: the agent's password is a JWT, verified against ``auth.jwt``.

It gets ``auth.jwt`` as any plugin gets a section of pgwarden's configuration:
by declaring it (`pgwarden_config_sections`). Another authenticator can take its
place (``plugins: {disable: [jwt]}``), and then ``auth.jwt`` may be left out.
"""

from __future__ import annotations

from pathlib import Path

from twisted.logger import Logger

from pgwarden.api import AUTH_JWT, ConfigProblem, JwtAuth, Reactor, Sections, StartupMessage, hookimpl
from pgwarden.identity import KeyFileError, TokenVerifier

log = Logger(namespace="pgwarden.auth")

MISSING = ConfigProblem(("auth", "jwt"), "expected the token issuer's settings (issuer, audience and a key source) "
                                         "for the plugin jwt; or disable it (plugins.disable) if another plugin "
                                         "authenticates")


class JwtAuthentication:
    """Verifies tokens with the keys of the current config (replaced on reload)."""

    def __init__(self) -> None:
        self._verifier: TokenVerifier | None = None
        self._settings: JwtAuth | None = None
        self._keys: bytes | None = None  # the key file's bytes the verifier was built from

    @hookimpl
    def pgwarden_config_sections(self):
        return [AUTH_JWT]

    @hookimpl
    def pgwarden_validate(self, sections: Sections) -> list[ConfigProblem]:
        """A key file that is there but cannot be used (one not there is left to start-up:
        `check` also runs where the secrets are not mounted)."""
        settings = sections[AUTH_JWT]
        if settings is None:
            return [MISSING]
        if settings.jwks_file and Path(settings.jwks_file).exists():
            try:
                TokenVerifier(settings)
            except KeyFileError as e:
                return [ConfigProblem(("auth", "jwt", "jwks_file"), str(e).removeprefix("auth.jwt.jwks_file: "))]
        return []

    @hookimpl
    def pgwarden_configure(self, sections: Sections, reactor: Reactor) -> None:
        settings = sections[AUTH_JWT]
        if settings is None:
            raise MISSING
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
    def pgwarden_authenticate(self, startup: StartupMessage, secret: str):
        if self._verifier is None:  # pragma: no cover - configure always runs first
            return None
        return self._verifier.verify(secret)
