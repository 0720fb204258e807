"""Local signing keys and test tokens, for `pgwarden token`, the demo and tests."""

from __future__ import annotations

import functools
import json
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_key(directory: Path, kid: str = "pgwarden-local") -> tuple[Path, Path]:
    """Writes an RSA private key (PEM) and its public JWKS; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "signing-key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}, indent=2))
    return private, jwks


def mint(
    key_file: Path,
    *,
    subject: str,
    issuer: str,
    audience: str,
    groups: list[str] | None = None,
    ttl_s: int = 3600,
    kid: str | None = "pgwarden-local",
    extra: dict | None = None,
) -> str:
    """A signed RS256 token for ``subject``."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
        "groups": groups or [],
    }
    claims.update(extra or {})
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, signing_key(Path(key_file).read_bytes()), algorithm="RS256", headers=headers)


@functools.lru_cache(maxsize=8)
def signing_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The private key of a PEM file's bytes, parsed once per content (a rewritten file is read
    again): cryptography checks an RSA key's consistency as it loads it, ~35 ms here, which every
    token signed with the same key paid again; the test suite mints thousands."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key is not an RSA private key (RS256 tokens need one)")
    return key
