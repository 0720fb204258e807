"""The blocking plugin through a real pgwarden, over the simple and the extended protocol."""

from __future__ import annotations

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.wire import messages as m

POLICY = {
    "name": "agents",
    "when": {"groups": ["ai-agents"]},
    "rules": [
        {"name": "no-ddl", "block": {"statements": ["ddl", "truncate", "grant", "role", "system"]},
         "reason": "schema changes go through migrations"},
        {"name": "no-files", "block": {"functions": ["pg_read_file", "lo_export", "pg_ls_dir"]}},
        {"name": "no-copy-out-of-bounds", "block": {"statements": ["copy_program", "copy_file", "do", "unknown"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "secrets", "block": {"tables": ["vault.*"]}},
    ],
}

BLOCKED = [
    ("DROP TABLE items", "no-ddl"),
    ("drop/**/table items", "no-ddl"),
    ("CREATE TABLE x (a int)", "no-ddl"),
    ("SELECT * INTO stolen FROM items", "no-ddl"),
    ("TRUNCATE items", "no-ddl"),
    ("SET ROLE postgres", "no-ddl"),
    ("SELECT set_config('role', 'postgres', false)", "no-ddl"),
    ("SET session_replication_role = replica", "no-ddl"),
    ("SELECT pg_reload_conf()", "no-ddl"),
    ("GRANT ALL ON items TO public", "no-ddl"),
    ("SELECT pg_read_file('/etc/passwd')", "no-ddl"),  # an admin function (EXECUTE revoked from PUBLIC): system
    ("COPY items TO PROGRAM 'cat'", "no-copy-out-of-bounds"),
    ("COPY items FROM '/etc/passwd'", "no-copy-out-of-bounds"),
    ("DO $$BEGIN DELETE FROM items; END$$", "no-copy-out-of-bounds"),
    ("DELETE FROM items", "unfiltered-writes"),
    ("DELETE FROM items WHERE true", "unfiltered-writes"),
    ("UPDATE items SET n = 0 WHERE 1 = 1", "unfiltered-writes"),
    ("WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d", "unfiltered-writes"),
    ("EXPLAIN ANALYZE DELETE FROM items", "unfiltered-writes"),
    ("SELECT query_to_xml('DELETE FROM items RETURNING 1', true, false, '')", "unfiltered-writes"),
    ("SELECT * FROM vault.keys", "secrets"),
    ("selec 1", "no-copy-out-of-bounds"),
]

ALLOWED = [
    "SELECT count(*) FROM items",
    "SELECT 'DROP TABLE items; DELETE FROM items'",
    "SELECT $$TRUNCATE items$$ -- DELETE FROM items",
    "DELETE FROM items WHERE n = -1",
    "UPDATE items SET n = n WHERE n = -1",
    "EXPLAIN DELETE FROM items",
    "SELECT current_setting('role')",
]


@pytest.fixture
def guarded(make_pgwarden, pg_server):
    pg_server.psql(
        "drop table if exists items; create table items (n int); insert into items select generate_series(1, 5);"
        "create schema if not exists vault; create table if not exists vault.keys (k text)",
        "appdb",
    )
    return make_pgwarden(policies=[POLICY])


def _simple(running, sql):
    rc = RawClient(running.host, running.port)
    rc.login(running.token())
    rc.send(m.Query(sql).encode())
    answer = rc.until_ready()
    rc.send(m.Query("select count(*) from items").encode())
    count = int(next(x for x in rc.until_ready() if isinstance(x, m.DataRow)).values[0])
    rc.close()
    return answer, count


@pytest.mark.parametrize("sql, rule", BLOCKED, ids=[b[0][:40] for b in BLOCKED])
def test_blocked_over_the_simple_protocol(guarded, sql, rule):
    answer, count = _simple(guarded, sql)
    error = next(x for x in answer if isinstance(x, m.ErrorResponse))
    assert error.sqlstate == "42501"
    assert error.message.startswith("pgwarden: blocked: ")
    assert error.get("D") == f"Refused by policy 'agents', rule '{rule}'."
    assert error.get("H")
    assert count == 5  # nothing happened


@pytest.mark.parametrize("sql, rule", BLOCKED, ids=[b[0][:40] for b in BLOCKED])
def test_blocked_over_the_extended_protocol(guarded, sql, rule):
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute(sql.replace("%", "%%"))
        assert excinfo.value.diag.message_detail == f"Refused by policy 'agents', rule '{rule}'."
        assert c.execute("select count(*) from items").fetchone() == (5,)


@pytest.mark.parametrize("sql", ALLOWED)
def test_no_false_alarm_on_both_protocols(guarded, sql):
    answer, _ = _simple(guarded, sql)
    assert not any(isinstance(x, m.ErrorResponse) for x in answer), answer
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        c.execute(sql)


def test_hint_for_an_agent(guarded):
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("DELETE FROM items")
        diag = excinfo.value.diag
        assert diag.message_primary == ("pgwarden: blocked: DELETE without a WHERE clause that selects rows "
                                        "is not allowed")
        assert diag.message_hint == "DELETE needs a WHERE clause that selects the rows to change; reads are allowed."
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("DROP TABLE items")
        assert excinfo.value.diag.message_primary == "pgwarden: blocked: schema changes go through migrations"


def test_protocol_level_prepared_statement_is_judged_at_parse(guarded):
    rc = RawClient(guarded.host, guarded.port)
    rc.login(guarded.token())
    rc.send(m.Parse("del", "DELETE FROM items").encode() + m.Sync().encode())
    answer = rc.until_ready()
    assert answer[0].sqlstate == "42501"
    rc.send(m.Bind("", "del").encode() + m.Execute("").encode() + m.Sync().encode())
    assert rc.until_ready()[0].sqlstate == "26000"  # never created, so never executed
    rc.close()


def test_default_block_allows_only_what_allow_rules_name(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists items; create table items (n int)", "appdb")
    running = make_pgwarden(policies=[{
        "name": "readonly", "default": "block",
        "rules": [{"name": "reads", "allow": {"statements": ["select", "show", "set", "transaction"]}}],
    }])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select count(*) from items").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into items values (1)")
        assert excinfo.value.diag.message_detail == "Refused by policy 'readonly', rule 'default: block'."


def test_execute_is_judged_by_what_was_prepared(make_pgwarden, pg_server, signing_keys, tmp_path):
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    pg_server.psql("drop table if exists items; create table items (n int); insert into items values (1)", "appdb")
    lenient = [{"name": "p", "rules": [{"name": "no-vault", "block": {"tables": ["vault.*"]}}]}]
    strict = [{"name": "p", "rules": [{"name": "no-delete", "block": {"statements": ["delete", "unknown"]},
                                       "reason": "no deletes"}]}]
    running = make_pgwarden(policies=lenient)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("PREPARE p AS DELETE FROM items")  # allowed under the lenient policy
        # The rules change while the session lives: EXECUTE p is judged by what p does.
        doc = base_config(pg_server, signing_keys, tmp_path, policies=strict)
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("EXECUTE p")
        assert excinfo.value.diag.message_primary == "pgwarden: blocked: no deletes"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("EXECUTE never_prepared")  # unknown to pgwarden: judged as unknown
    assert pg_server.psql("select count(*) from items", "appdb") == "1"


def test_same_fingerprint_different_verdicts_in_one_session(guarded):
    """WHERE 1 = 1 and WHERE 1 = 2 share a fingerprint; only one of them selects rows."""
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        c.execute("DELETE FROM items WHERE 1 = 2")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM items WHERE 1 = 1")
        c.execute("DELETE FROM items WHERE 1 = 2")
        c.execute("SELECT set_config('work_mem', '8MB', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT set_config('role', 'postgres', false)")
        assert c.execute("select count(*) from items").fetchone() == (5,)
