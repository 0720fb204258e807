"""What a client needs to reach a pgwarden under test: a token its keys verify, a DSN, a URL.

One place for both kinds of pgwarden a test starts (in this process, or as `pgwarden run`
in a process of its own), so a test reads the same whichever it uses.
"""

from __future__ import annotations

from pathlib import Path

#: the issuer and audience of the test configs (`base_config`) and of the tokens minted for them
ISSUER = "https://issuer.pgwarden.test"
AUDIENCE = "pgwarden"


class Endpoint:
    """Tokens and connection strings for a pgwarden at ``host``:``port`` whose JWKS is ``keys["jwks"]``.

    A base for classes that have ``host``, ``port`` and ``keys`` (the `signing_keys` fixture).
    """

    host: str
    port: int
    keys: dict[str, Path]

    def token(self, subject: str = "agent-1", groups: list[str] | None = None, **kw) -> str:
        from pgwarden.tokens import mint

        return mint(self.keys["private"], subject=subject, issuer=ISSUER, audience=AUDIENCE,
                    groups=groups if groups is not None else ["ai-agents"], **kw)

    def dsn(self, token: str | None = None, database: str = "appdb", **params: str) -> str:
        parts = [f"host={self.host}", f"port={self.port}", "user=agent", f"dbname={database}",
                 f"password={token or self.token()}", "sslmode=disable"]
        parts += [f"{k}={v}" for k, v in params.items()]
        return " ".join(parts)

    def url(self, token: str | None = None, database: str = "appdb") -> str:
        return f"postgresql://agent:{token or self.token()}@{self.host}:{self.port}/{database}"
