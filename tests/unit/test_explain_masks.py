"""`pgwarden explain` says what masking does to each output, by asking the loaded mask plugin
as the proxy does (against the snapshot plus public.users, the catalog of test_lineage)."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_lineage import context

CONFIG = """\
listen: {host: 127.0.0.1, port: 6432}
upstream: {host: db, database: appdb, user: app, password_file: /run/secrets/pw}
auth: {jwt: {issuer: https://i, audience: pgwarden, jwks_file: /nonexistent/jwks.json}}
policies:
  - name: agents
    rules:
      - {name: pii, mask: {columns: [public.users.ssn], with: partial, keep_last: 4}}
      - {name: contact, mask: {columns: [public.users.email], with: "null", oracle: allow}}
      - {name: detect, mask: {detect: [ssn]}}
"""


@pytest.fixture
def explain(make_explain):
    # The catalog --dsn would read, without a database: the snapshot and public.users.
    return make_explain(CONFIG, context)


def test_each_output_gets_the_mask_the_plugin_gives_it(explain):
    code, out = explain("SELECT id, ssn AS tin, upper(email) AS shout, email FROM users")
    assert code == 0, out
    assert "masks      3 of 4 output(s) masked\n" in out
    assert "  tin: partial by agents/pii (source public.users.ssn)\n" in out
    assert "  shout: null (masked whole) by agents/contact (source public.users.email)\n" in out
    assert "  email: null by agents/contact (source public.users.email)\n" in out
    assert "  id:" not in out


def test_json_names_rule_strategy_and_source_per_output(explain):
    code, out = explain("SELECT id, ssn || name AS x FROM users", "--json")
    assert code == 0, out
    (masks,) = json.loads(out)["masks"]
    assert masks == {"refused": None, "outputs": [
        {"output": "id", "rule": None, "strategy": None, "source": None, "whole": False},
        {"output": "x", "rule": "agents/pii", "strategy": "redact", "source": "public.users.ssn", "whole": True}]}
    assert json.loads(out)["masking_refusals"] == []


def test_untraceable_outputs_are_masked_whole(explain):
    _, out = explain("SELECT * FROM users_unknown_fn()", "--json")
    (masks,) = json.loads(out)["masks"]
    # the strictest rule that may be involved: null beats partial
    assert masks["outputs"] and all(o["whole"] and o["rule"] == "agents/contact" for o in masks["outputs"])
    # a cursor never declared: what it returns is not known, asked as one opaque column
    _, out = explain("FETCH ALL FROM nowhere", "--json")
    (masks,) = json.loads(out)["masks"]
    assert [(o["output"], o["rule"], o["strategy"]) for o in masks["outputs"]] == [
        ("(every column)", "agents/contact", "null")]


def test_an_oracle_is_a_refusal_of_the_mask_plugin(explain):
    code, out = explain("SELECT id FROM users WHERE ssn LIKE '1%' AND email = 'a@b'")
    assert code == 1
    assert "masks      none\n" in out
    assert "refused    masked column public.users.ssn used in WHERE (plugin mask, agents/pii)\n" in out
    # email says oracle: allow: not refused
    assert "public.users.email used" not in out


def test_no_rows_no_masks(explain):
    code, out = explain("SET work_mem = '4MB'", "--json")
    assert json.loads(out)["masks"] == [{"outputs": None, "refused": None}]


def test_direct_outputs_take_their_type_from_the_catalog(explain):
    """Detectors scan text columns only: users.id is int4 in the catalog, not text."""
    _, out = explain("SELECT id, name, 'x' AS lit FROM users")
    assert "masks      2 of 3 output(s) masked\n" in out
    assert "  name: detect by agents/detect (source public.users.name)\n" in out
    assert "  id:" not in out
