"""The hostile corpus's analysis cases that need no server, and `pgwarden explain` on hostile input.

`tests/e2e/test_hostile.py` runs the corpus through pgwarden against a real
server and checks the effects; these pin down, without a database, what the
analysis must say: the catalog here is the shipped snapshot, plus hand-made
facts of a database's own functions where a case needs one. A case marked
``xfail(strict=True)`` is a known gap, its reason saying what the analysis
answers today.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import attrs
import pytest

from pgwarden.catalog import builtin_catalog
from pgwarden.catalog.model import Catalog, FunctionFacts
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import default_context


def _nested(inner: str, depth: int) -> str:
    for i in range(depth):
        inner = f"SELECT * FROM ({inner}) AS s{i}"
    return inner


def _with(*functions: FunctionFacts):
    """The default context, its catalog extended by the database's own ``functions``."""
    base = builtin_catalog()
    catalog = Catalog(functions=base.functions + functions, relations=base.relations, operators=base.operators,
                      settings=base.settings, schemas=base.schemas | {"public", "secret"},
                      server_version=base.server_version, source="test", complete=False)
    return attrs.evolve(default_context(), catalog=catalog)


_OIDS = itertools.count(90000)


def _own(name: str, source: str, nargs: int = 0, volatility: str = "v", language: str = "sql", kind: str = "f",
         **kw) -> FunctionFacts:
    return FunctionFacts(oid=next(_OIDS), schema="public", name=name, nargs=nargs,
                         volatility=volatility, language=language, trusted_language=True, kind=kind, builtin=False,
                         source=source, **kw)


def _after(*statements: str):
    """The context after ``statements`` ran, one by one, as a session runs them."""
    ctx = default_context()
    for sql in statements:
        ctx = ctx.after(analyze_sql(sql, ctx))
    return ctx


# (cause, sql, kinds that must be among the statement's) — what an attacker would hide.
MUST_SEE = [
    ("2", "SELECT ('/etc/passwd'::text).pg_read_file", {"server_files"}),
    ("2", "SELECT x.pg_read_file FROM (SELECT '/etc/passwd'::text AS x) AS q", {"server_files"}),
    ("2", "SELECT (pg_backend_pid()).pg_terminate_backend", {"system"}),
    ("2", "SELECT ('s'::regclass).nextval", {"side_effect"}),
    ("2", "SELECT (0::oid).lo_create", {"side_effect"}),
    ("2", "SELECT ('bgwriter'::text).pg_stat_reset_shared", {"system"}),
    ("3", "SELECT setval('s', 100)", {"side_effect"}),
    ("3", "SELECT lo_from_bytea(0, 'x')", {"side_effect"}),
    ("3", "SELECT lo_unlink(1234)", {"side_effect"}),
    ("3", "SELECT pg_logical_emit_message(true, 'x', 'y')", {"side_effect"}),
    ("3", "SELECT gin_clean_pending_list('i'::regclass)", {"side_effect"}),
    ("3", "SELECT pg_backup_start('x')", {"system"}),
    ("3", "SELECT pg_create_logical_replication_slot('s', 'test_decoding')", {"side_effect"}),
    ("3", "SELECT pg_import_system_collations('pg_catalog')", {"side_effect"}),
    ("3", "SET log_duration = on", {"system"}),
    ("3", "SELECT set_config('log_min_messages', 'panic', false)", {"system"}),
    ("3", "SELECT * FROM pg_ls_logdir()", {"server_files"}),
    ("3", "SELECT pg_current_logfile()", {"server_files"}),
    ("3", "SET TRANSACTION READ WRITE", {"system"}),
    ("3", "COMMIT PREPARED 'x'", {"system"}),
    ("3", "ROLLBACK PREPARED 'x'", {"system"}),
    ("3", "SELECT * FROM t FOR NO KEY UPDATE", {"lock"}),
    ("3", "SELECT * FROM crosstab($q$SELECT 1, 2, 3 FROM t$q$ || 'x') AS c(a int, b int, c int)", {"unknown"}),
    ("8", _nested("SELECT pg_read_file('/etc/passwd')", 150), {"server_files"}),
    ("8", "SELECT " + " + ".join(["1"] * 1000) + " + nextval('s')", {"side_effect"}),
    ("9", "DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", {"ddl"}),
    ("9", "DO $$ BEGIN EXECUTE 'DO $b$ BEGIN DROP TABLE users; END $b$'; END $$", {"ddl"}),
    ("9", "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'users'; END $$", {"unknown"}),
    ("9", "DO $$ DECLARE q text := 'x'; BEGIN EXECUTE q; END $$", {"unknown"}),
    ("9", "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM t RETURNING 1' LOOP END LOOP; END $$",
     {"delete"}),
    ("9", "DO $$ BEGIN PERFORM nextval('s'); END $$", {"side_effect"}),
    ("9", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'; SELECT pg_temp.f()",
     {"delete", "side_effect"}),
]


@pytest.mark.parametrize("cause, sql, kinds", MUST_SEE, ids=[f"{c}-{s[:50]}" for c, s, _ in MUST_SEE])
def test_must_see(cause, sql, kinds):
    got = analyze_sql(sql).kinds
    assert kinds <= got, f"{sql[:80]!r}: kinds {sorted(got)}"


GAPS = [
    pytest.param("EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t", {"explain", "delete"}, id="10-explain-last-analyze-wins",
                 marks=pytest.mark.xfail(strict=True, reason="the first ANALYZE option is read; PostgreSQL 15 "
                                         "applies the last: kinds {explain}")),
    pytest.param("SELECT * FROM t WHERE id BETWEEN 1 AND 3", {"select"}, id="10-between-false-alarm",
                 marks=pytest.mark.xfail(strict=True, reason="BETWEEN is looked up as an operator: kinds "
                                         "{select, unknown}")),
]


@pytest.mark.parametrize("sql, kinds", GAPS)
def test_exact_kinds(sql, kinds):
    assert analyze_sql(sql).kinds == kinds


WHERE = [
    ("DELETE FROM t WHERE id = 3 OR NULL = NULL", True),
    ("DELETE FROM t WHERE id = 3 OR false", True),
    ("DELETE FROM t WHERE NOT (id <> id)", False),
    ("DELETE FROM t WHERE id + 0 = id + 0", False),
    ("DELETE FROM t WHERE (id = id) IS NOT FALSE", False),
    ("UPDATE t AS x SET n = 0 WHERE x.id = x.id", False),
    ("DELETE FROM t WHERE " + "NOT " * 5001 + "false", False),
    ("DELETE FROM t WHERE " + "(" * 3000 + "true" + ")" * 3000, False),
    pytest.param("DELETE FROM t WHERE n IS NULL OR n IS NOT NULL", False,
                 marks=pytest.mark.xfail(strict=True, reason="a tautology over one column: has_where True")),
]


@pytest.mark.parametrize("sql, has_where", WHERE)
def test_where(sql, has_where):
    assert analyze_sql(sql).has_where is has_where


# ---------------------------------------------------------------------- 5: names


def test_search_path_set_by_set_config_is_followed():
    ctx = _after("SELECT set_config('search_path', 'secret', false)")
    assert "secret.things" in analyze_sql("SELECT * FROM things", ctx).tables


def test_user_and_temp_schemas_are_on_the_path():
    ctx = attrs.evolve(default_context(), user="app")
    assert {"app.notes", "public.notes"} <= analyze_sql("SELECT * FROM notes", ctx).tables
    ctx = _after("SET search_path = pg_temp, secret")
    assert "secret.things" in analyze_sql("SELECT * FROM things", ctx).tables


def test_cte_names_are_scoped():
    assert analyze_sql("WITH users AS (SELECT 1) SELECT * FROM public.users").tables == {"public.users"}
    assert analyze_sql("WITH users AS (SELECT 1) SELECT * FROM users").tables == frozenset()
    inner = "SELECT * FROM (WITH users AS (SELECT 1) SELECT * FROM users) AS a, users AS b"
    assert analyze_sql(inner).tables == {"public.users"}


@pytest.mark.xfail(strict=True, reason="a computed value is taken for RESET: the path goes back to the default")
def test_a_computed_search_path_is_not_a_reset():
    ctx = _after("SELECT set_config('search_path', 'sec' || 'ret', false)")
    assert "secret.things" in analyze_sql("SELECT * FROM things", ctx).tables


@pytest.mark.xfail(strict=True, reason="one context for the whole string: the SET does not reach the SELECT")
def test_a_search_path_change_reaches_the_rest_of_the_string():
    assert "secret.things" in analyze_sql("SET search_path = secret; SELECT * FROM things").tables


# ---------------------------------------------------------------------- the database's own functions


def test_own_volatile_function_that_deletes_is_a_side_effect():
    ctx = _with(_own("purge", "WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d"))
    assert {"side_effect", "delete"} <= analyze_sql("SELECT purge()", ctx).kinds


def test_own_stable_function_calling_a_volatile_one_is_a_side_effect():
    ctx = _with(_own("purge", "DELETE FROM public.things"),
                _own("sneaky", "SELECT public.purge()", volatility="s", security_definer=True))
    assert "side_effect" in analyze_sql("SELECT sneaky()", ctx).kinds


@pytest.mark.xfail(strict=True, reason="the body's relations are not counted: tables {}")
def test_own_function_reading_a_table_names_it():
    ctx = _with(_own("peek", "SELECT sum(n) FROM secret.things", volatility="s", security_definer=True))
    assert "secret.things" in analyze_sql("SELECT peek()", ctx).tables


@pytest.mark.xfail(strict=True, reason="CallStmt.funccall is a bare struct the walker does not resolve: kinds {call}")
def test_a_procedure_is_judged_by_its_body():
    ctx = _with(_own("proc_purge", "DELETE FROM public.things", kind="p"))
    assert "delete" in analyze_sql("CALL proc_purge()", ctx).kinds


@pytest.mark.xfail(strict=True, reason="a PL/pgSQL body is re-parsed as a function RETURNS void, so RETURN <expr> "
                   "does not parse: kinds {select, unknown}")
def test_a_plpgsql_function_returning_a_value_is_not_unknown():
    ctx = _with(_own("plus_one", "BEGIN RETURN $1 + 1; END", nargs=1, volatility="i", language="plpgsql"))
    assert analyze_sql("SELECT plus_one(1)", ctx).kinds == {"select"}


@pytest.mark.xfail(strict=True, reason="plain EXPLAIN plans, and planning folds an IMMUTABLE function (which may "
                   "call a volatile one): the calls under EXPLAIN are dropped, kinds {explain}")
def test_explain_without_analyze_still_folds_immutable_functions():
    ctx = _with(_own("purge", "DELETE FROM public.things"),
                _own("liar", "SELECT public.purge()", volatility="i"))
    assert "side_effect" in analyze_sql("EXPLAIN SELECT liar()", ctx).kinds


# ---------------------------------------------------------------------- pgwarden explain on hostile input

CONFIG = """\
upstream: {host: 127.0.0.1, port: 5432, database: appdb, user: app, password_file: /nonexistent}
auth: {jwt: {issuer: https://issuer, audience: pgwarden, jwks_file: /nonexistent.json}}
policies:
  - name: agents
    rules:
      - {name: no-ddl, block: {statements: [ddl, system, side_effect, server_files, unknown]}}
      - {name: unfiltered-writes, block: {statements: [delete, update], where: absent}}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("sql, action", [
    (_nested("SELECT 1", 150), "allow"),
    ("SELECT " + " + ".join(["1"] * 1000), "allow"),
    (_nested("SELECT 1", 1000), "allow"),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, "allow"),
    ("DELETE FROM t WHERE " + "NOT " * 5001 + "false", "block"),
    ("SELECT " + " + ".join(["1"] * 20000), "block"),  # beyond the server's stack depth: unknown
    ("DO $$BEGIN " + "IF true THEN " * 500 + "NULL;" + " END IF;" * 500 + " END$$", "allow"),
], ids=["150-subqueries", "1000-terms", "1000-subqueries", "3000-parentheses", "5001-nots", "20000-terms",
        "500-ifs"])
def test_explain_of_deep_statements(config_file, capsys, sql, action):
    from pgwarden.cli import main

    status = main(["explain", "-c", str(config_file), "--subject", "a", "--json", sql])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert json.loads(out.out)["verdict"]["action"] == action
    assert status == (0 if action == "allow" else 1)


def test_explain_of_invalid_utf8_says_so(config_file):
    argv = [sys.executable, "-m", "pgwarden", "explain", "-c", str(config_file), "--subject", "a"]
    out = subprocess.run([*map(str.encode, argv), b"SELECT '\xff\xfe'"], capture_output=True)
    assert b"Traceback" not in out.stderr
    assert out.returncode == 2
    assert out.stderr.decode().strip() == (
        "pgwarden explain: the statement is not valid UTF-8 (byte 0xff at character 8); "
        "a UTF-8 server would refuse it as well")
