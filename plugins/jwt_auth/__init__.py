"""Built-in plugin ``jwt``: the agent's password is a JWT, verified against ``auth.jwt``.

It gets ``auth.jwt`` as any plugin gets a section of pgwarden's configuration:
by declaring it (`pgwarden_config_sections`). Another authenticator can take its
place (``plugins: {disable: [jwt]}``), and then ``auth.jwt`` may be left out.
"""

from __future__ import annotations

from pathlib import Path

from pgwarden.api import AUTH_JWT, ConfigProblem, Reactor, Sections, StartupMessage, hookimpl
from pgwarden.identity import CurrentKeys, KeyFileError, TokenVerifier

MISSING = ConfigProblem(("auth", "jwt"), "expected the token issuer's settings (issuer, audience and a key source) "
                                         "for the plugin jwt; or disable it (plugins.disable) if another plugin "
                                         "authenticates")


class JwtAuthentication:
    """Verifies tokens with the keys of the current config (replaced on reload)."""

    def __init__(self) -> None:
        #: the verifier and the keys it was built from; the MCP endpoint verifies with them too
        self.keys = CurrentKeys()

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
        self.keys.configure(settings, reactor)

    @hookimpl
    def pgwarden_authenticate(self, startup: StartupMessage, secret: str):
        verifier = self.keys.verifier
        if verifier is None:  # pragma: no cover - configure always runs first
            return None
        return verifier.verify(secret)
