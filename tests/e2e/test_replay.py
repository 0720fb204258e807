"""`pgwarden replay --against`: the records of a real session (psycopg through pgwarden, named
prepared statements, a SQL-level PREPARE/EXECUTE, a search_path change) decided again under a
stricter and a looser policy; a broken chain, and records of an unknown format, refused.

One pgwarden for the module: the session is recorded once, every test replays its records.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import orjson
import psycopg
import pytest
import yaml

from pgwarden.chain import GENESIS, seal_record
from pgwarden.cli import main
from pgwarden.testing.pytest_plugin import RunningPgwarden, base_config, check_records

BASELINE = [{
    "name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow",
    "rules": [
        {"name": "no-ddl", "block": {"statements": ["ddl"]}, "reason": "schema changes go through migrations"},
        {"name": "secrets", "mask": {"columns": ["rp_other.rp_items.secret"], "with": "redact"}},
    ],
}]
STRICTER = [{
    "name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow",
    "rules": [
        {"name": "no-ddl", "block": {"statements": ["ddl"]}, "reason": "schema changes go through migrations"},
        {"name": "not-other", "block": {"tables": ["rp_other.*"]}, "reason": "rp_other is off limits"},
        {"name": "no-deletes", "block": {"statements": ["delete"]}},
        {"name": "names", "mask": {"columns": ["public.rp_items.name"], "with": "redact"}},
        {"name": "secrets", "mask": {"columns": ["rp_other.rp_items.secret"], "with": "redact"}},
    ],
}]
LOOSER = [{"name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow"}]


@pytest.fixture(scope="module")
def recorded(pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """The records of one psycopg session through pgwarden under BASELINE; and a directory with
    the candidate configs."""
    from twisted.internet.threads import blockingCallFromThread

    from pgwarden.app import Application
    from pgwarden.config import structure_config
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.peer import port_number

    work = tmp_path_factory.mktemp("replay")
    pg_server.psql("drop schema if exists rp_other cascade; drop table if exists rp_items;"
                   "create table rp_items (id int, name text);"
                   "insert into rp_items values (1, 'one'), (2, 'two');"
                   "create schema rp_other; create table rp_other.rp_items (id int, secret text);"
                   "insert into rp_other.rp_items values (1, 's3cret')", "appdb")
    config = structure_config(base_config(pg_server, signing_keys, work, policies=BASELINE))

    def listen():
        app = Application(config, reactor_thread, plugins=PluginHost(config, reactor_thread))
        return app, port_number(app.listen())

    app, port = blockingCallFromThread(reactor_thread, listen)
    running = RunningPgwarden(app, port, signing_keys, reactor_thread)
    try:
        running.call(app.catalog.first_load)
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            assert c.execute("select id, name from rp_items order by id").fetchall() == [(1, "one"), (2, "two")]
            for n in (1, 2):  # a named prepared statement (Parse "_pg3_0"), executed twice
                c.execute("select name from rp_items where id = %s", (n,), prepare=True)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("drop table rp_items")
            c.execute("prepare del as delete from rp_items where id = 99")
            c.execute("execute del")
            c.execute("set search_path = rp_other, public")
            # the same text now reads rp_other.rp_items, whose secret is masked
            assert c.execute("select id, secret from rp_items").fetchall() == [(1, "***")]
    finally:
        running.call(app.stop)
    records = work / "records.jsonl"
    check_records([records])
    for name, policies in (("stricter", STRICTER), ("looser", LOOSER), ("baseline", BASELINE)):
        doc = base_config(pg_server, signing_keys, work, policies=policies)
        (work / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return work


def _replay(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _groups(report: dict) -> dict[tuple[str, str | None], dict]:
    return {(g["change"], g["rule"]): g for g in report["changes"]}


def test_records_carry_what_a_replay_needs(recorded):
    records = [orjson.loads(line) for line in (recorded / "records.jsonl").read_bytes().splitlines()]
    start = next(r for r in records if r["type"] == "session_start")
    assert start["format"] == 2 and start["search_path"] == ["$user", "public"]
    assert start["claims"]["sub"] == "agent-1" and start["claims"]["groups"] == ["ai-agents"]
    statements = [r for r in records if r["type"] == "statement"]
    after = [r for r in statements if r["sql"] == "select id, secret from rp_items"]
    assert after and after[0]["search_path"] == ["rp_other", "public"]
    assert "search_path" not in statements[0]  # the session's start: not repeated


def test_replay_against_the_same_policy_changes_nothing(recorded, pg_server, capsys):
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "baseline.yaml"),
                             "--dsn", pg_server.dsn())
    assert code == 0, out + err
    assert out.startswith("chain ok: ")
    assert "no difference: 7 statements decided as recorded" in out


def test_replay_against_a_stricter_policy(recorded, pg_server, capsys):
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "stricter.yaml"),
                             "--dsn", pg_server.dsn(), "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["chain"]["records"] > 0 and report["statements"] == 7
    groups = _groups(report)
    # after the SET, the unqualified name is rp_other's table: blocked by the new rule
    other = groups["now_blocked", "not-other"]
    assert [e["sql"] for e in other["examples"]] == ["select id, secret from rp_items"]
    # the PREPARE, and the EXECUTE of it (its body known from the session's PREPARE)
    deletes = groups["now_blocked", "no-deletes"]
    assert sorted(e["sql"] for e in deletes["examples"]) == ["execute del",
                                                            "prepare del as delete from rp_items where id = 99"]
    masked = groups["masked_differently", "names"]
    assert masked["count"] == 2
    prepared = next(e for e in masked["examples"] if e.get("name"))
    assert prepared["sql"] == "select name from rp_items where id = $1" and prepared["parameters"] == ["\\x0001"]
    assert prepared["masked_before"] == [] and prepared["masked_now"] == ["name (redact)"]
    assert report["changed"] == 5 and report["unchanged"] == 2  # the drop (still no-ddl), the SET


def test_replay_against_a_looser_policy_as_text(recorded, pg_server, capsys):
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "looser.yaml"),
                             "--dsn", pg_server.dsn())
    assert code == 1, out + err
    lines = out.splitlines()
    allowed = lines.index("now allowed: 1")
    assert lines[allowed + 1] == "  agents/no-ddl (the rule that decided before): 1"
    assert lines[allowed + 2] == "    drop table rp_items"
    assert "was block by agents/no-ddl, now allow" in lines[allowed + 3]
    masked = lines.index("masked differently: 1")
    assert lines[masked + 1] == "  agents/secrets: 1"
    assert "masked before: secret (redact); now: none" in lines[masked + 3]
    assert lines[-1] == "2 of 7 statements decided differently"


def test_replay_without_a_database_says_what_it_did_not_compare(recorded, capsys):
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "looser.yaml"))
    assert code == 1, out + err
    assert "(catalog: snapshot postgresql-" in out
    assert "masking not compared: 4 statements on tables the catalog does not know" in out, out
    assert "now allowed: 1" in out


def test_replay_reads_gzipped_rotations(recorded, pg_server, capsys, tmp_path):
    packed = tmp_path / "records.jsonl.1.gz"
    packed.write_bytes(gzip.compress((recorded / "records.jsonl").read_bytes()))
    code, out, err = _replay(capsys, str(packed), "--against", str(recorded / "baseline.yaml"), "--dsn", pg_server.dsn())
    assert code == 0, out + err
    assert "no difference: 7 statements" in out


def test_replay_refuses_a_broken_chain(recorded, capsys, tmp_path):
    lines = (recorded / "records.jsonl").read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, 1) if b'"sql":"drop table rp_items"' in line)
    lines[number - 1] = lines[number - 1].replace(b"drop table rp_items", b"select 1 /* gone */")
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(lines))
    code, out, err = _replay(capsys, str(edited), "--against", str(recorded / "looser.yaml"))
    assert code == 2 and out == ""
    assert f"the record chain is broken after {number - 1} intact records: {edited}:{number}: edited" in err


def _resealed(records: list[dict], path: Path) -> None:
    prev, out = GENESIS, []
    for record in records:
        record = {k: v for k, v in record.items() if k not in ("prev", "hash")}
        line, prev = seal_record(record, prev)
        out.append(line)
    path.write_bytes(b"".join(out))


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(format=99) if r["type"] == "session_start" else None, "records of format 99"),
    (lambda r: r.update(verdict_v3={}) if r["type"] == "statement" else None, "field(s) verdict_v3"),
    (lambda r: r.update(type="statement_v3") if r["type"] == "statement" else None, "type 'statement_v3'"),
])
def test_replay_refuses_records_it_does_not_know(recorded, capsys, tmp_path, change, message):
    records = [orjson.loads(line) for line in (recorded / "records.jsonl").read_bytes().splitlines()]
    for r in records:
        change(r)
    newer = tmp_path / "newer.jsonl"
    _resealed(records, newer)
    code, out, err = _replay(capsys, str(newer), "--against", str(recorded / "looser.yaml"))
    assert code == 2 and out == "", err
    assert message in err and f"{newer}:" in err


def test_replay_reads_format_1_records(recorded, pg_server, capsys, tmp_path):
    """Records from before claims and search_path were recorded: read, the search_path followed
    through the statements as the proxy followed it, and the assumption said."""
    records = [orjson.loads(line) for line in (recorded / "records.jsonl").read_bytes().splitlines()]
    for r in records:
        for key in ("format", "claims", "search_path", "search_path_possible", "lexer"):
            r.pop(key, None)
    old = tmp_path / "old.jsonl"
    _resealed(records, old)
    shutil.copy(recorded / "stricter.yaml", tmp_path / "stricter.yaml")
    code, out, err = _replay(capsys, str(old), "--against", str(tmp_path / "stricter.yaml"), "--dsn", pg_server.dsn(),
                             "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["assumptions"] == {
        "sessions whose claims are not recorded: matched on subject and groups only": 1,
        "sessions whose starting search_path is not recorded: the default assumed": 1}
    assert [e["sql"] for e in _groups(report)["now_blocked", "not-other"]["examples"]] == [
        "select id, secret from rp_items"]


def test_replay_offline_compares_verdicts_where_masking_needs_a_catalog(recorded, capsys):
    """Without a catalog the mask plugin refuses what may read masked columns: the candidate's
    other rules still decide, and what masking would do is said not compared."""
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "baseline.yaml"))
    assert code == 0, out + err
    assert "masking not compared: 5 statements on tables the catalog does not know" in out, out
    assert "no difference: 7 statements decided as recorded" in out
    code, out, err = _replay(capsys, str(recorded / "records.jsonl"), "--against", str(recorded / "stricter.yaml"),
                             "--json")
    assert code == 1, out + err
    groups = _groups(json.loads(out))
    assert {e["sql"] for e in groups["now_blocked", "no-deletes"]["examples"]} == {
        "execute del", "prepare del as delete from rp_items where id = 99"}
    assert "mask: catalog" not in out


# ---------------------------------------------------------------------- pgwarden test --dsn

POLICY_TESTS = """\
identities: {agent: {subject: agent-1, groups: [ai-agents]}}
cases:
  - name: the secret is masked
    identity: agent
    sql: SELECT id, secret FROM rp_other.rp_items
    expect: {action: allow, rule: null, masked: [rp_other.rp_items.secret]}
  - name: by the session's search_path too
    identity: agent
    sql: SELECT secret FROM rp_items
    session: {search_path: [rp_other, public]}
    expect: {action: allow, masked: [secret]}
  - name: names are masked (they are not)
    identity: agent
    sql: SELECT name FROM rp_items
    expect: {action: allow, masked: [name]}
"""


def test_policy_tests_against_a_live_catalog(recorded, pg_server, capsys, tmp_path):
    tests = tmp_path / "baseline.tests.yaml"
    tests.write_text(POLICY_TESTS)
    assert main(["test", "-c", str(recorded / "baseline.yaml"), str(tests), "--dsn", pg_server.dsn()]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["PASS  the secret is masked", "PASS  by the session's search_path too"]
    assert out[2] == f"FAIL  names are masked (they are not)  ({tests}: line 12: cases[2])"
    assert "      expected masked: name; got: none" in out
    assert out[-1] == f"2 passed, 1 failed ({tests})"


def test_policy_tests_without_the_tables_offline_say_what_is_missing(recorded, capsys, tmp_path):
    tests = tmp_path / "baseline.tests.yaml"
    tests.write_text(POLICY_TESTS)
    assert main(["test", "-c", str(recorded / "baseline.yaml"), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "decided by: mask: catalog: the live catalog is unreachable" in out
    assert "note: the catalog does not know rp_other.rp_items: declare it under catalog.tables" in out
