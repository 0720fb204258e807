"""Shadow rules and policies (``mode: shadow``) through real clients: the enforced verdict stands,
the shadow verdicts are recorded beside it and counted (docs/policies.md, Shadow rules)."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import psycopg
import pytest
from prometheus_client import generate_latest

from pgwarden import hookimpl
from pgwarden.cli import main
from pgwarden.metrics import registry_for
from pgwarden.testing.pytest_plugin import check_records
from pgwarden.verdict import Verdict

AGENTS = {"name": "agents", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "no-ddl", "block": {"statements": ["ddl"]}, "reason": "schema changes go through migrations"},
    {"name": "try-no-deletes", "mode": "shadow", "block": {"statements": ["delete"]},
     "reason": "deletes would be blocked"},
    {"name": "try-approve-updates", "mode": "shadow", "approve": {"statements": ["update"]}},
    {"mode": "shadow", "mask": {"columns": ["public.sh_items.secret"]}},
]}
CANDIDATE = {"name": "candidate", "mode": "shadow", "when": {"groups": ["ai-agents"]}, "default": "block",
             "rules": [{"name": "reads", "allow": {"statements": ["select"]}}]}


@pytest.fixture
def items(pg_server):
    pg_server.psql("drop table if exists sh_items; create table sh_items (n int, secret text); "
                   "insert into sh_items select g, 'secret-' || g from generate_series(1, 5) g; "
                   "grant all on sh_items to public", "appdb")


@pytest.fixture
def shadowed(make_pgwarden, pg_server, items):
    running = make_pgwarden(policies=[AGENTS, CANDIDATE])
    running.rows = lambda: pg_server.psql("select count(*) from sh_items", "appdb").strip()
    return running


def _records(running) -> list[dict]:
    running.call(running.app.recorder.flush, True)
    return check_records([running.app.config.recording.sinks[0].file])


def _statement(records: list[dict], sql: str) -> dict:
    return next(r for r in records if r["type"] == "statement" and r["sql"] == sql)


def _result(records: list[dict], statement: dict) -> dict:
    return next(r for r in records if r["type"] == "result" and r["session"] == statement["session"]
                and r["statement"] == statement["statement"])


def _metric(running, policy: str, rule: str, action: str) -> float:
    text = generate_latest(registry_for(running.app)).decode()
    line = f'pgwarden_shadow_verdicts_total{{action="{action}",policy="{policy}",rule="{rule}"}}'
    found = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line + " ")]
    return found[0] if found else 0.0


def _shadow(record: dict) -> set[tuple]:
    return {(e["policy"], e["rule"], e["action"]) for e in record.get("shadow", ())}


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "extended"])
def test_shadow_verdicts_are_recorded_and_counted_while_the_enforced_one_stands(shadowed, prepare, capsys):
    delete = "delete from sh_items where n = 1"
    update = "update sh_items set n = n where n = 2"
    select = "select n, secret from sh_items order by n"
    ddl = "create table sh_other (a int)"
    with psycopg.connect(shadowed.dsn(), autocommit=True) as conn:
        conn.execute(delete, prepare=prepare)  # a shadow block: it runs
        conn.execute(update, prepare=prepare)  # a shadow approve: not held, runs at once
        rows = conn.execute(select, prepare=prepare).fetchall()  # a shadow mask: nothing masked
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema changes go through migrations"):
            conn.execute(ddl, prepare=prepare)
    assert shadowed.rows() == "4"
    assert rows[0] == (2, "secret-2")
    records = _records(shadowed)
    protocol = "extended" if prepare else "simple"

    rec = _statement(records, delete)
    assert rec["protocol"] == protocol and rec["verdict"]["action"] == "allow"
    assert _shadow(rec) == {("agents", "try-no-deletes", "block"), ("candidate", "default: block", "block")}
    assert {"policy": "agents", "rule": "try-no-deletes", "action": "block",
            "reason": "deletes would be blocked"} in rec["shadow"]

    rec = _statement(records, update)
    assert rec["verdict"]["action"] == "allow"
    assert _shadow(rec) == {("agents", "try-approve-updates", "approve"), ("candidate", "default: block", "block")}
    assert not any(r["type"] == "approval" for r in records)

    rec = _statement(records, select)
    assert rec["verdict"]["action"] == "allow"
    assert _shadow(rec) == {("candidate", None, "allow")}
    result = _result(records, rec)
    assert "masked" not in result
    [mask] = result["shadow"]
    assert (mask["policy"], mask["rule"], mask["action"]) == ("agents", "rules[3]", "mask")
    assert mask["columns"] == [{"column": "secret", "source": "public.sh_items.secret", "rule": "agents/rules[3]",
                                "strategy": "redact", "values": 4}]
    assert "secret-" not in json.dumps(result)

    rec = _statement(records, ddl)
    assert rec["verdict"] == {"action": "block", "policy": "agents", "rule": "no-ddl",
                              "reason": "schema changes go through migrations"}
    assert _shadow(rec) == {("candidate", "default: block", "block")}

    assert _metric(shadowed, "agents", "try-no-deletes", "block") == 1
    assert _metric(shadowed, "agents", "try-approve-updates", "approve") == 1
    assert _metric(shadowed, "candidate", "default: block", "block") == 3
    assert _metric(shadowed, "agents", "rules[3]", "mask") == 1

    # `pgwarden tail --shadow`: only the records with shadow verdicts, each under the enforced one
    capsys.readouterr()
    assert main(["tail", "--shadow", "--color", "never", shadowed.app.config.recording.sinks[0].file]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert len(heads) == 5  # delete, update, select and its result, create table
    assert any(f"ALLOW   {delete} (+2 shadow)" in line for line in heads)
    i = next(i for i, line in enumerate(lines) if delete in line)
    assert lines[i + 1].split(None, 3)[:3] == ["shadow", "BLOCK", "agents/try-no-deletes:"]
    assert "would block (enforced: allow): deletes would be blocked" in lines[i + 1]
    assert "shadow APPROVE agents/try-approve-updates: would need approval (enforced: allow)" in text
    assert "shadow MASK    agents/rules[3]: would mask secret (public.sh_items.secret, redact) 4 values" \
        in text
    assert "shadow BLOCK   candidate/default: block: would block (as enforced)" in text


def test_shadow_through_asyncpg(shadowed):
    async def run():
        conn = await asyncpg.connect(shadowed.url())
        try:
            await conn.execute("delete from sh_items where n = $1", 5)
            return await conn.fetch("select secret from sh_items where n = $1", 4)
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert [r["secret"] for r in rows] == ["secret-4"]
    assert shadowed.rows() == "4"
    records = _records(shadowed)
    rec = _statement(records, "delete from sh_items where n = $1")
    assert rec["protocol"] == "extended" and rec["verdict"]["action"] == "allow"
    assert ("agents", "try-no-deletes", "block") in _shadow(rec)
    rec = _statement(records, "select secret from sh_items where n = $1")
    [mask] = _result(records, rec)["shadow"]
    assert mask["columns"][0]["values"] == 1


def test_an_sql_level_prepared_statement_is_judged_in_shadow_by_its_body(shadowed):
    with psycopg.connect(shadowed.dsn(), autocommit=True) as conn:
        conn.execute("prepare d as delete from sh_items where n = 3")
        conn.execute("execute d")
    assert shadowed.rows() == "4"
    records = _records(shadowed)
    assert ("agents", "try-no-deletes", "block") in _shadow(_statement(records, "execute d"))
    assert shadowed.app.stats.shadow_verdicts[("agents", "try-no-deletes", "block")] == 2  # PREPARE, EXECUTE


class _Broken:
    """A third party's rule checker that fails: in shadow it must change nothing but the record."""

    @hookimpl
    def pgwarden_check(self, statement, session):
        if any(p.name == "candidate" for p in session.policies):
            raise RuntimeError("boom")
        return None


def test_a_plugin_failing_in_shadow_is_recorded_as_an_error_and_changes_nothing(make_pgwarden, pg_server):
    running = make_pgwarden(policies=[AGENTS, CANDIDATE], plugins=[("broken", _Broken())])
    with psycopg.connect(running.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    rec = _statement(_records(running), "select 1")
    assert rec["verdict"]["action"] == "allow"
    errors = [e for e in rec["shadow"] if e["action"] == "error"]
    assert errors and errors[0]["policy"] == "candidate" and "broken" in errors[0]["reason"]
    assert _metric(running, "candidate", "", "error") == 1


def test_shadow_limit_rules_report_the_refusals_and_cuts_they_would_make(make_pgwarden, items):
    budget = {"name": "agents", "when": {"groups": ["ai-agents"]}, "rules": [
        {"name": "try-budget", "mode": "shadow", "limit": {"rows": 2, "statement_timeout": "5s"}}]}
    running = make_pgwarden(policies=[budget])
    with psycopg.connect(running.dsn(), autocommit=True) as conn:
        assert len(conn.execute("select n from sh_items").fetchall()) == 5  # not cut
        conn.execute("set statement_timeout = 0")  # not refused
        assert conn.execute("show statement_timeout").fetchone() == ("0",)
    records = _records(running)
    select = _statement(records, "select n from sh_items")
    assert "shadow" not in select
    assert _result(records, select)["shadow"] == [
        {"policy": "agents", "rule": "try-budget", "action": "limit", "reason": "would be truncated at 2 rows (of 5)"}]
    rec = _statement(records, "set statement_timeout = 0")
    assert rec["verdict"]["action"] == "allow"
    assert _shadow(rec) == {("agents", "try-budget", "block")}
    assert _metric(running, "agents", "try-budget", "limit") == 1
    assert _metric(running, "agents", "try-budget", "block") == 1


class _Later:
    """A third party's checker that answers later (async): its shadow verdict is waited for,
    and the enforced one is not changed by it."""

    @hookimpl
    async def pgwarden_check(self, statement, session):
        if any(p.name == "candidate" for p in session.policies) and "select" in statement.kinds:
            return Verdict.block("no reads on fridays", policy="candidate", rule="fridays")
        return None


def test_a_shadow_verdict_that_comes_later_is_recorded(make_pgwarden, items):
    running = make_pgwarden(policies=[AGENTS, CANDIDATE], plugins=[("later", _Later())])
    with psycopg.connect(running.dsn(), autocommit=True) as conn:
        assert conn.execute("select 2", prepare=True).fetchone() == (2,)
    rec = _statement(_records(running), "select 2")
    assert rec["verdict"]["action"] == "allow"
    assert rec["shadow"] == [{"policy": "candidate", "rule": "fridays", "action": "block",
                              "reason": "no reads on fridays"}]
