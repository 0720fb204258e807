"""``mode: shadow`` in the config: validated with file, line, key and expectation; shown as such by
`pgwarden check` and `pgwarden explain`; split from what is enforced (`pgwarden.policy.shadow`)."""

from __future__ import annotations

import json

import pytest

from pgwarden import cli
from pgwarden.config import ConfigError, load_config
from pgwarden.policy.model import Policy, Rule, Unread
from pgwarden.policy.shadow import split
from tests.unit.test_lineage import context

HEAD = """\
listen: {host: 127.0.0.1, port: 6432}
upstream: {host: db, database: appdb, user: app, password_file: /run/secrets/pw}
auth: {jwt: {issuer: https://i, audience: pgwarden, jwks_file: /nonexistent/jwks.json}}
"""
CONFIG = HEAD + """\
policies:
  - name: agents
    rules:
      - {name: no-ddl, block: {statements: [ddl]}}
      - {name: try-no-deletes, mode: shadow, block: {statements: [delete]}, reason: deletes would be blocked}
      - {name: try-approve, mode: shadow, approve: {statements: [update]}}
      - {name: try-mask, mode: shadow, mask: {columns: [public.users.ssn]}}
  - name: candidate
    mode: shadow
    default: block
    rules:
      - {name: reads, allow: {statements: [select]}}
"""


def _problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.source == str(path)
    return e.value.problems


def test_a_mode_that_is_neither_enforce_nor_shadow_is_refused_with_its_line_and_key(tmp_path):
    problems = _problems(tmp_path, HEAD + """\
policies:
  - name: agents
    mode: shadw
    rules:
      - {name: a, mode: dry-run, block: {statements: [ddl]}}
      - {name: b, mod: shadow, block: {statements: [ddl]}}
""")
    assert problems == [
        "line 6: policies[0].mode: expected one of enforce, shadow, got 'shadw'; did you mean `shadow`?",
        "line 8: policies[0].rules[0].mode: expected one of enforce, shadow",
        "line 9: policies[0].rules[1].mod: unknown key; did you mean `mode`?",
    ]


def test_check_shows_shadow_rules_and_policies_as_such(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    assert cli.main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "policy agents: for everyone; default allow; 4 rule(s), 3 in shadow\n" in out
    assert "    block    no-ddl: statements=('ddl',)\n" in out
    assert "    block    try-no-deletes (shadow): statements=('delete',) — deletes would be blocked\n" in out
    assert "    approve  try-approve (shadow): " in out
    assert "    mask     try-mask (shadow): " in out
    assert "policy candidate (SHADOW: evaluated and recorded, never enforced): for everyone; default block" in out


@pytest.fixture
def explain(make_explain):
    return make_explain(CONFIG, context)


def test_explain_gives_the_enforced_verdict_and_the_shadow_ones_apart(explain):
    code, out = explain("DELETE FROM users WHERE id = 1")
    assert code == 0, out  # the enforced verdict: allow (the exit code says so)
    assert "verdict    allow\n" in out
    assert "shadow     block by agents/try-no-deletes: deletes would be blocked\n" in out
    assert "shadow     block by candidate/default: block: " in out
    code, out = explain("UPDATE users SET name = 'x' WHERE id = 1")
    assert code == 0 and "shadow     approve by agents/try-approve: " in out
    code, out = explain("SELECT id, ssn FROM users")
    assert code == 0 and "masks      none\n" in out
    assert "shadow     allow by candidate (policy)\n" in out
    assert "shadow     mask by agents/try-mask: 1 of 2 output(s) masked\n" in out
    assert "  ssn: redact by agents/try-mask (source public.users.ssn)\n" in out


def test_explain_json_has_the_shadow_verdicts(explain):
    code, out = explain("DROP TABLE users", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["verdict"]["rule"] == "no-ddl"
    assert doc["shadow"] == [{"policy": "candidate", "rule": "default: block", "action": "block",
                              "reason": "schema changes (DDL) is not among what policy 'candidate' allows"}]


def _rule(name: str | None, mode: str = "enforce") -> Rule:
    return Rule("block", Unread({"statements": ["ddl"]}), name, mode=mode)  # type: ignore[arg-type]


def test_split_leaves_the_enforced_policies_untouched_when_nothing_is_in_shadow():
    policies = (Policy("a", rules=(_rule("x"),)),)
    assert split(policies) == (policies, ())
    assert split(policies)[0] is policies  # the same tuple: memos keyed by it stay warm


def test_split_takes_shadow_rules_and_policies_out_of_what_is_enforced():
    a = Policy("a", default="block", rules=(_rule("x"), _rule(None, "shadow")))
    b = Policy("b", mode="shadow", rules=(_rule(None),))
    enforced, units = split((a, b))
    assert enforced == (Policy("a", default="block", rules=(_rule("x"),)),)
    rule_unit, policy_unit = units
    assert (rule_unit.policy, rule_unit.rule) == ("a", "rules[1]")  # named as verdicts name it
    (view,) = rule_unit.policies
    assert view.default == "allow" and view.rules == (_rule("rules[1]"),)  # alone, and enforced in its view
    assert (policy_unit.policy, policy_unit.rule) == ("b", None)
    assert policy_unit.policies == (Policy("b", rules=(_rule("rules[0]"),)),)


def test_policies_for_gives_only_what_is_enforced():
    """Whatever decides with `policies_for` (a replay, a test runner) never enforces a shadow rule."""
    from pgwarden.identity import Identity
    from pgwarden.policy import matching_policies, policies_for

    a = Policy("a", rules=(_rule("x"), _rule("y", "shadow")))
    b = Policy("b", mode="shadow")
    who = Identity("agent", frozenset(), {})
    assert policies_for(who, (a, b)) == (Policy("a", rules=(_rule("x"),)),)
    assert matching_policies(who, (a, b)) == (a, b)


def test_a_shadow_allow_rule_says_what_it_would_let_through(make_explain):
    explain = make_explain(HEAD + """\
policies:
  - name: strict
    default: block
    rules:
      - {name: reads, allow: {statements: [select]}}
      - {name: try-inserts, mode: shadow, allow: {statements: [insert]}}
""", context)
    code, out = explain("INSERT INTO users (id) VALUES (1)")
    assert code == 1 and "verdict    block by strict / default: block\n" in out  # still refused
    assert "shadow     allow by strict/try-inserts\n" in out
    code, out = explain("SELECT 1")
    assert code == 0 and "shadow" not in out  # the rule does not match: nothing to say
    code, out = explain("WITH d AS (DELETE FROM users RETURNING id) INSERT INTO users (id) SELECT id FROM d")
    assert code == 1 and "shadow" not in out  # it would not let the whole statement through
