"""`pgwarden test` without a database: the shipped test files pass, a wrong expectation fails
naming the rule that decided, a bad test file is refused with its line and key, and `pgwarden
check` warns about rules no case exercises."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pgwarden.cli import main
from pgwarden.demo import TESTS, config_text
from pgwarden.tokens import generate_key

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policies"

POLICY = {
    "name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow",
    "rules": [
        {"name": "no-ddl", "block": {"statements": ["ddl"]}, "reason": "schema changes go through migrations"},
        {"name": "deletes", "approve": {"statements": ["delete"]}},
        {"name": "pii", "mask": {"columns": ["public.people.ssn"], "with": "redact"}},
        {"name": "never-used", "block": {"statements": ["lock"]}},
    ],
}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("policy-tests")
    _, jwks = generate_key(work / "keys")
    doc = {
        "upstream": {"host": "db", "port": 5432, "database": "appdb", "user": "app",
                     "password_file": str(work / "password")},
        "auth": {"jwt": {"issuer": "https://issuer", "audience": "pgwarden", "jwks_file": str(jwks)}},
        "policies": [POLICY],
    }
    path = work / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _tests(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PASSING = """\
identities:
  agent: {subject: agent-1, groups: [ai-agents]}
catalog:
  tables:
    public.people: [id, name, ssn]
cases:
  - name: ddl
    identity: agent
    sql: DROP TABLE people
    expect: {action: block, rule: agents/no-ddl}
  - name: a delete waits
    identity: {subject: agent-2, groups: [ai-agents], claims: {team: billing}}
    sql: DELETE FROM people WHERE id = 1
    expect: {action: approve, rule: deletes}
  - name: ssn masked
    identity: agent
    sql: SELECT name, ssn FROM people
    expect: {action: allow, rule: null, masked: [public.people.ssn]}
"""


def test_passing_cases(config, tmp_path, capsys):
    assert main(["test", "-c", str(config), str(_tests(tmp_path / "t.yaml", PASSING))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["PASS  ddl", "PASS  a delete waits", "PASS  ssn masked", f"3 passed, 0 failed ({tmp_path}/t.yaml)"]


def test_failing_cases_name_the_rule_that_decided(config, tmp_path, capsys):
    wrong = PASSING.replace("{action: block, rule: agents/no-ddl}", "{action: allow}") \
        .replace("rule: deletes}", "rule: agents/no-ddl}") \
        .replace("masked: [public.people.ssn]", "masked: [name]")
    path = _tests(tmp_path / "t.yaml", wrong)
    assert main(["test", "-c", str(config), str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  ddl  ({path}: line 7: cases[0])\n      sql: DROP TABLE people\n" \
           "      expected allow, got block\n" \
           "      decided by: agents/no-ddl: schema changes go through migrations\n" in out
    assert "      expected the rule agents/no-ddl, got agents/deletes\n" in out
    assert "      expected masked: name; got: ssn (redact by agents/pii)\n" in out
    assert out.endswith(f"0 passed, 3 failed ({path})\n")


def test_masking_of_a_table_the_catalog_does_not_know_says_how_to_declare_it(config, tmp_path, capsys):
    path = _tests(tmp_path / "t.yaml", PASSING.replace("    public.people: [id, name, ssn]\n",
                                                       "    public.other: [id]\n"))
    assert main(["test", "-c", str(config), str(path)]) == 1
    out = capsys.readouterr().out
    assert "note: the catalog does not know public.people: declare it under catalog.tables" in out


def test_a_session_search_path_and_a_statement_sequence(config, tmp_path, capsys):
    path = _tests(tmp_path / "t.yaml", """\
catalog: {tables: {public.people: [id, ssn], hr.people: [id, ssn]}}
identities: {agent: {subject: a, groups: [ai-agents]}}
cases:
  - {name: public, identity: agent, sql: SELECT ssn FROM people, expect: {action: allow, masked: [ssn]}}
  - {name: hr by session, identity: agent, sql: SELECT ssn FROM people, session: {search_path: hr},
     expect: {action: allow, masked: []}}
  - {name: hr by SET, identity: agent, sql: [SET search_path = hr, SELECT ssn FROM people],
     expect: {action: allow, masked: []}}
""")
    assert main(["test", "-c", str(config), str(path)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize(("text", "problem"), [
    ("cases:\n  - {name: x, identity: nobody, sql: SELECT 1, expect: {action: allow}}\n",
     "line 2: cases[0].identity: expected the name of an identity under identities:, got 'nobody'"),
    ("cases:\n  - {name: x, identity: {subject: a}, sql: SELECT 1, expect: {action: alow}}\n",
     "line 2: cases[0].expect.action: expected one of allow, block, approve, got 'alow'; did you mean `allow`?"),
    ("cases:\n  - {name: x, identity: {subject: a}, sql: SELECT 1, expect: {action: allow, rule: agents/no-dll}}\n",
     "line 2: cases[0].expect.rule: no rule 'no-dll' in policy 'agents' of"),
    ("cases:\n  - {name: x, identity: {subject: a}, sql: SELECT 1, expected: {action: allow}}\n",
     "line 2: cases[0].expected: unknown key; did you mean `expect`?"),
    ("catalog: {tables: {people: [id]}}\ncases:\n  - {name: x, identity: {subject: a}, sql: SELECT 1, "
     "expect: {action: allow}}\n",
     "line 1: catalog.tables.people: expected a table as schema.table, got 'people'"),
    ("cases: []\n", "line 1: cases: expected at least one case"),
    # (session 30: a list where a string belongs had become its text, a glob of one character)
    ("cases:\n  - {name: x, identity: {subject: [a]}, sql: SELECT 1, expect: {action: allow}}\n",
     "line 2: cases[0].identity.subject: expected a string, got ['a']"),
    ("- just a list\n", "expected a mapping of sections (cases:, identities:, catalog:)"),
])
def test_bad_test_files_are_refused_with_line_and_key(config, tmp_path, capsys, text, problem):
    path = _tests(tmp_path / "bad.yaml", text)
    assert main(["test", "-c", str(config), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {problem}" in err, err


def test_an_unknown_column_type_is_refused(config, tmp_path, capsys):
    path = _tests(tmp_path / "bad.yaml", "catalog: {tables: {public.t: {a: intt}}}\n"
                  "cases:\n  - {name: x, identity: {subject: a}, sql: SELECT 1, expect: {action: allow}}\n")
    assert main(["test", "-c", str(config), str(path)]) == 2
    assert "catalog.tables.public.t.a: expected a type the catalog knows (int4, text, numeric, ...), got 'intt'" \
        in capsys.readouterr().err


def test_check_warns_about_rules_no_case_exercises(config, tmp_path, capsys):
    path = _tests(tmp_path / "t.yaml", PASSING)
    assert main(["check", "-c", str(config), "--tests", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"  tests    3 case(s) in {path}" in captured.out
    assert captured.err == f"warning: rule agents/never-used is exercised by no test case ({path})\n"


def test_check_finds_the_tests_beside_the_config(config, capsys):
    beside = config.with_name("pgwarden.tests.yaml")
    beside.write_text(PASSING.replace("{action: allow, rule: null,", "{action: block, rule: null,"))
    try:
        assert main(["check", "-c", str(config)]) == 0
    finally:
        beside.unlink()
    err = capsys.readouterr().err
    assert f"warning: 1 test case(s) fail: pgwarden test -c {config} {beside}\n" in err
    assert "rule agents/never-used is exercised by no test case" in err


def test_the_demo_policy_passes_its_shipped_tests(tmp_path, capsys):
    _, jwks = generate_key(tmp_path / "keys")
    config = tmp_path / "pgwarden.yaml"
    config.write_text(config_text(tmp_path, SimpleNamespace(host="db", port=5432), jwks, 6432, tmp_path / "pw"))
    assert main(["check", "-c", str(config), "--tests", str(TESTS)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # every rule of the demo's policy is exercised
    assert main(["test", "-c", str(config), str(TESTS)]) == 0
    assert " passed, 0 failed" in capsys.readouterr().out


def test_the_design_example_passes_its_shipped_tests(capsys):
    assert main(["test", "-c", str(EXAMPLE / "agents.yaml"), str(EXAMPLE / "agents.tests.yaml")]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " passed, 0 failed" in out
