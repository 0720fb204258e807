"""The config file: every mistake reported with its path and line; secrets stay out of reprs."""

from __future__ import annotations

import pytest

from pgwarden.config import ConfigError, load_config, parse_config

GOOD = """
listen: {host: 127.0.0.1, port: 6432}
upstream:
  host: db
  database: appdb
  user: app
  password_file: /run/secrets/pw
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}
"""


def test_good_file_structures_with_defaults():
    c = parse_config(GOOD, "good.yaml")
    assert c.listen.port == 6432 and c.upstream.port == 5432
    assert c.auth.jwt.algorithms == ("RS256", "ES256")
    assert c.upstream.tls.mode == "disable"
    assert c.source == "good.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "f.yaml")
    return excinfo.value.problems


def test_wrong_type_names_path_and_line():
    assert problems(GOOD.replace("port: 6432", "port: many")) == [
        "line 2: listen.port: invalid value for type, expected int"
    ]


def test_unknown_key_is_an_error():
    (p,) = problems(GOOD.replace("user: app", "user: app\n  pasword_file: /x"))
    assert "upstream" in p and "pasword_file" in p and p.startswith("line 3:")


def test_every_problem_at_once():
    text = GOOD.replace("port: 6432", "port: 70000").replace("host: db", "hots: db")
    found = problems(text)
    assert len(found) == 3
    assert any("listen" in p and "70000" in p and p.startswith("line 2:") for p in found)
    assert any("extra fields found (hots)" in p for p in found)
    assert "line 3: upstream.host: required field missing" in found


def test_missing_required_section():
    (p,) = problems("listen: {port: 1}\nupstream: {host: a, database: b, user: c}\n")
    assert "auth" in p and "required" in p


def test_insecure_algorithms_refused():
    (p,) = problems(GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /x, algorithms: [HS256]"))
    assert "HS256" in p and "auth.jwt" in p


def test_exactly_one_key_source():
    (p,) = problems(GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /x, public_key_file: /y"))
    assert "exactly one" in p


def test_tls_mode_is_checked():
    (p,) = problems(GOOD.replace("user: app", "user: app\n  tls: {mode: sometimes}"))
    assert "upstream.tls.mode" in p


def test_not_yaml_and_not_a_mapping():
    (p,) = problems("upstream: [1\n")
    assert p.startswith("line 2: not valid YAML")
    (p,) = problems("- a\n- b\n")
    assert "mapping" in p


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(excinfo.value)


def test_password_is_read_from_its_file_not_kept_in_the_config(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-value\n")
    c = parse_config(GOOD.replace("/run/secrets/pw", str(pw)))
    assert c.upstream.read_password() == "s3cret-value"
    assert "s3cret-value" not in repr(c)
