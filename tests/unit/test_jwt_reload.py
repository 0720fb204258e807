"""A reload re-reads the local key file: keys rotated in a ConfigMap take effect without a restart."""

from __future__ import annotations

import pytest

from pgwarden.api import AUTH_JWT, JwtAuth, Sections
from pgwarden.identity import AuthenticationFailed, KeyFileError
from pgwarden.tokens import generate_key, mint
from pgwarden_plugins.jwt_auth import JwtAuthentication

ISSUER, AUDIENCE = "https://issuer.test", "pgwarden"


def token(private_key, subject: str) -> str:
    return mint(private_key, subject=subject, issuer=ISSUER, audience=AUDIENCE, groups=[], ttl_s=300)


def test_a_reload_with_the_same_settings_reads_rotated_keys_and_keeps_them_when_the_file_is_broken(tmp_path):
    old_key, old_jwks = generate_key(tmp_path / "old")
    new_key, new_jwks = generate_key(tmp_path / "new")
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(old_jwks.read_bytes())
    sections = Sections({AUTH_JWT: JwtAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(jwks))})
    plugin = JwtAuthentication()
    plugin.pgwarden_configure(sections=sections, reactor=None)
    assert plugin.pgwarden_authenticate(None, token(old_key, "a")).subject == "a"

    jwks.write_bytes(new_jwks.read_bytes())  # the ConfigMap now carries the new key only
    plugin.pgwarden_configure(sections=sections, reactor=None)  # the same auth.jwt: a reload
    assert plugin.pgwarden_authenticate(None, token(new_key, "b")).subject == "b"
    with pytest.raises(AuthenticationFailed):
        plugin.pgwarden_authenticate(None, token(old_key, "a"))

    jwks.write_text("{not json")  # half-written, or wrong: the keys in use stay
    plugin.pgwarden_configure(sections=sections, reactor=None)
    assert plugin.pgwarden_authenticate(None, token(new_key, "c")).subject == "c"


def test_a_broken_key_file_at_start_up_is_an_error(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text("[]")
    sections = Sections({AUTH_JWT: JwtAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(jwks))})
    with pytest.raises(KeyFileError, match=r"auth.jwt.jwks_file: .*jwks.json: expected a JWKS"):
        JwtAuthentication().pgwarden_configure(sections=sections, reactor=None)


@pytest.mark.parametrize("content, why", [
    ("[]", 'expected a JWKS, a JSON object with a "keys" list, got list'),
    ("{not json", "not JSON"),
    ('{"keys": []}', "did not contain any keys"),
])
def test_check_names_a_key_file_that_run_could_not_use(tmp_path, content, why):
    import subprocess
    import sys

    (tmp_path / "jwks.json").write_text(content)
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "pw").chmod(0o600)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
listen: {{host: 127.0.0.1, port: 0}}
upstream: {{host: 127.0.0.1, port: 5432, database: a, user: u, password_file: {tmp_path / "pw"}}}
auth: {{jwt: {{issuer: i, audience: a, jwks_file: {tmp_path / "jwks.json"}}}}}
policies: [{{name: p}}]
""")
    out = subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"auth.jwt.jwks_file: {tmp_path / 'jwks.json'}: " in out.stderr and why in out.stderr, out.stderr
