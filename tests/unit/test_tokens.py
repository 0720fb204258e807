"""Test tokens: the signing key is parsed once per content, and a rewritten key file is used at once."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pgwarden.api import AUTH_JWT, JwtAuth, Sections
from pgwarden.identity import AuthenticationFailed
from pgwarden.tokens import generate_key, mint, signing_key
from pgwarden_plugins.jwt_auth import JwtAuthentication

ISSUER, AUDIENCE = "https://issuer.test", "pgwarden"


def _verifier(jwks) -> JwtAuthentication:
    plugin = JwtAuthentication()
    plugin.pgwarden_configure(sections=Sections({AUTH_JWT: JwtAuth(issuer=ISSUER, audience=AUDIENCE,
                                                                   jwks_file=str(jwks))}), reactor=None)
    return plugin


def test_a_key_file_rewritten_in_place_signs_with_its_new_key(tmp_path):
    key, old_jwks = generate_key(tmp_path)
    old = _verifier(old_jwks)
    assert old.pgwarden_authenticate(None, mint(key, subject="a", issuer=ISSUER, audience=AUDIENCE)).subject == "a"
    old_keys = old_jwks.read_bytes()

    key_again, new_jwks = generate_key(tmp_path)  # the same paths, a new key pair
    assert key_again == key and new_jwks.read_bytes() != old_keys
    token = mint(key, subject="b", issuer=ISSUER, audience=AUDIENCE)
    assert _verifier(new_jwks).pgwarden_authenticate(None, token).subject == "b"
    with pytest.raises(AuthenticationFailed):
        old.pgwarden_authenticate(None, token)


def test_the_parsed_key_is_kept_per_content(tmp_path):
    key, _ = generate_key(tmp_path)
    pem = key.read_bytes()
    assert signing_key(pem) is signing_key(bytes(pem))


def test_a_key_that_is_not_rsa_is_refused_with_why(tmp_path):
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "ec.pem"
    path.write_bytes(pem)
    with pytest.raises(ValueError, match="not an RSA private key"):
        mint(path, subject="a", issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize(("key", "said"), [
    (None, "cannot read the key: No such file or directory"),
    (b"not a key at all", "expected an RSA private key in PEM form"),
])
def test_pgwarden_token_says_what_is_wrong_with_its_key(tmp_path, capsys, key, said):
    """A missing or unreadable key file is an error naming the file, exit 2 (it was a traceback)."""
    from pgwarden.cli import main

    path = tmp_path / "key.pem"
    if key is not None:
        path.write_bytes(key)
    assert main(["token", "--key", str(path), "--subject", "a", "--issuer", "i"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pgwarden token: {path}: ") and said in err, err
