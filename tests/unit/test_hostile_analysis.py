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
from pgwarden.catalog.model import CastFacts, Catalog, FunctionFacts, RelationFacts, TypeFacts
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import default_context


def _nested(inner: str, depth: int) -> str:
    for i in range(depth):
        inner = f"SELECT * FROM ({inner}) AS s{i}"
    return inner


def _with(*functions: FunctionFacts, types: tuple[TypeFacts, ...] = (), casts: tuple[CastFacts, ...] = (),
          relations: tuple[RelationFacts, ...] = (), complete: bool = False):
    """The default context, its catalog extended by the database's own ``functions``, ``types``,
    ``casts`` and ``relations`` (``complete``: as the live catalog, which knows every object)."""
    base = builtin_catalog()
    catalog = Catalog(functions=base.functions + functions, relations=base.relations + relations,
                      operators=base.operators, types=base.types + types, casts=base.casts + casts,
                      settings=base.settings, schemas=base.schemas | {"public", "secret"},
                      server_version=base.server_version, source="test", complete=complete)
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
    ("9", "CREATE FUNCTION pg_temp.f(q text) RETURNS SETOF record LANGUAGE plpgsql AS "
          "$$ BEGIN RETURN QUERY EXECUTE 'SELECT ' || q; END $$; SELECT * FROM pg_temp.f('1') AS t(a int)", {"unknown"}),
    ("9", "CREATE FUNCTION pg_temp.f() RETURNS SETOF int LANGUAGE plpgsql AS "
          "$$ BEGIN RETURN QUERY EXECUTE 'DELETE FROM t RETURNING 1'; END $$; SELECT pg_temp.f()", {"delete"}),
    ("9", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'; SELECT pg_temp.f()",
     {"delete", "side_effect"}),
]


@pytest.mark.parametrize("cause, sql, kinds", MUST_SEE, ids=[f"{c}-{s[:50]}" for c, s, _ in MUST_SEE])
def test_must_see(cause, sql, kinds):
    got = analyze_sql(sql).kinds
    assert kinds <= got, f"{sql[:80]!r}: kinds {sorted(got)}"


GAPS = [
    pytest.param("EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t", {"explain", "delete"},
                 id="10-explain-last-analyze-wins"),
    pytest.param("SELECT * FROM t WHERE id BETWEEN 1 AND 3", {"select"}, id="10-between-false-alarm"),
    # MERGE's actions and ON CONFLICT DO UPDATE are the writes they are
    pytest.param("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", {"merge", "delete"}, id="merge-delete"),
    pytest.param("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET n = 0 "
                 "WHEN NOT MATCHED THEN INSERT VALUES (u.id)", {"merge", "update", "insert"}, id="merge-update"),
    pytest.param("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DO NOTHING", {"merge"}, id="merge-nothing"),
    pytest.param("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET n = 1", {"insert", "update"}, id="upsert"),
    pytest.param("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", {"insert"}, id="upsert-nothing"),
]


@pytest.mark.parametrize("sql, kinds", GAPS)
def test_exact_kinds(sql, kinds):
    assert analyze_sql(sql).kinds == kinds


WHERE = [
    ("DELETE FROM t WHERE id = 3 OR NULL = NULL", False),  # transform_null_equals = on: true
    # MERGE's and ON CONFLICT's updates and deletes (red team, 2026-12-06)
    ("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE", False),
    ("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET n = 0", False),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", True),
    ("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED AND t.id = 3 THEN DELETE", True),
    ("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED AND t.id = 3 THEN DELETE "
     "WHEN MATCHED THEN UPDATE SET n = 0", False),
    ("INSERT INTO t SELECT id, 0 FROM t ON CONFLICT (id) DO UPDATE SET n = 0", False),
    ("INSERT INTO t SELECT * FROM (SELECT id, 0 FROM t) s ON CONFLICT (id) DO UPDATE SET n = 0", False),
    ("INSERT INTO t SELECT id, 0 FROM t ON CONFLICT (id) DO UPDATE SET n = 0 WHERE t.n > 5", True),
    ("INSERT INTO t SELECT id, 0 FROM t WHERE id < 5 ON CONFLICT (id) DO UPDATE SET n = 0", True),
    ("INSERT INTO t VALUES (1, 0), (2, 0) ON CONFLICT (id) DO UPDATE SET n = excluded.n", True),
    # (round two) the table's rows brought through a CTE
    ("WITH s AS (SELECT id FROM t) INSERT INTO t SELECT id, 0 FROM s ON CONFLICT (id) DO UPDATE SET n = 0", False),
    ("INSERT INTO t WITH s AS (SELECT id FROM t) SELECT id, 0 FROM s ON CONFLICT (id) DO UPDATE SET n = 0", False),
    ("WITH s AS (SELECT id FROM t WHERE id < 3) INSERT INTO t SELECT id, 0 FROM s ON CONFLICT (id) DO UPDATE "
     "SET n = 0", True),
    ("WITH s AS (SELECT id FROM u) INSERT INTO t SELECT id, 0 FROM s ON CONFLICT (id) DO UPDATE SET n = 0", True),
    # unqualified names that cannot be the written table's columns
    ("DELETE FROM t USING (SELECT 1 AS x) s WHERE x = 1", False),
    ("DELETE FROM t USING (SELECT 1) s(x) WHERE x = 1", False),
    ("UPDATE t SET n = 0 FROM (VALUES (1)) AS v(k) WHERE k = 1", False),
    ("UPDATE t SET n = 0 FROM generate_series(1, 1) k WHERE k = 1", False),
    ("UPDATE t SET n = 0 FROM (VALUES (1)) AS v(k) WHERE k = id", True),
    ("DO $$ DECLARE k int := 1; BEGIN DELETE FROM t WHERE k = 1; END $$", False),
    ("DO $$ DECLARE k int := 1; BEGIN DELETE FROM t WHERE id = k; END $$", True),
    # ... and the catalog's columns decide (pg_class has relname, no column named flag)
    ("DELETE FROM pg_class USING t WHERE flag = 1", False),
    ("DELETE FROM pg_class USING t WHERE relname = 'x'", True),
    ("DELETE FROM pg_class USING t WHERE relname = 'x' OR flag = 1", False),
    ("DELETE FROM pg_class USING t WHERE relname = 'x' AND flag = 1", True),
    ("CREATE FUNCTION f(flag int) RETURNS void LANGUAGE sql AS 'DELETE FROM pg_class WHERE flag = 1'; SELECT f(1)",
     False),
    ("DELETE FROM t WHERE id = 3 OR NULL::int = NULL::int", True),  # (a cast NULL is not rewritten)
    ("DELETE FROM t WHERE id = 3 OR false", True),
    ("DELETE FROM t WHERE NOT (id <> id)", False),
    ("DELETE FROM t WHERE id + 0 = id + 0", False),
    ("DELETE FROM t WHERE (id = id) IS NOT FALSE", False),
    ("UPDATE t AS x SET n = 0 WHERE x.id = x.id", False),
    ("DELETE FROM t WHERE " + "NOT " * 5001 + "false", False),
    ("DELETE FROM t WHERE " + "(" * 3000 + "true" + ")" * 3000, False),
    ("DELETE FROM t WHERE n IS NULL OR n IS NOT NULL", False),
    # a sub-select of the same table with no real limit, or a WHERE that filters nothing
    ("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT ALL)", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT NULL)", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT NULL::int)", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT (SELECT 2))", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t WHERE true)", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t AS u WHERE u.id = u.id OR 1 = 1)", False),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT 5)", True),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t FETCH FIRST 5 ROWS ONLY)", True),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t WHERE n > 5)", True),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t WHERE false)", True),
    # sides the same but for parameters: the values bound decide (5 and 5: every row)
    ("DELETE FROM t WHERE id + $1 = id + $2", False),
    ("DELETE FROM t WHERE id + $1 <> id + 5", False),
    ("DELETE FROM t WHERE id * $1 IS NOT DISTINCT FROM id * $2", False),
    ("DELETE FROM t WHERE (id + $1) IS NULL OR (id + $2) IS NOT NULL", False),
    ("DELETE FROM t WHERE id = $1 AND n = $2", True),
    ("DELETE FROM t WHERE id + 5 = id + 6", True),
]


@pytest.mark.parametrize("sql", [
    "SELECT query_to_xml($1, true, false, '')", "SELECT query_to_xml($1::text, true, false, '')",
    "PREPARE q(text) AS SELECT query_to_xml($1, true, false, '')", "SELECT dblink_exec('dbname=x', $1)",
    "PREPARE q(text) AS SELECT ($1).ts_stat", "SELECT ($1::text).ts_stat",
])
def test_sql_text_bound_to_a_parameter_is_unknown(sql):
    # the text a SQL-running function runs is bound at run time (EXECUTE q('INSERT ...')): unchecked
    assert "unknown" in analyze_sql(sql).kinds


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


def test_a_computed_search_path_is_not_a_reset():
    ctx = _after("SELECT set_config('search_path', 'sec' || 'ret', false)")
    assert ctx.search_path is None  # uncertain: an unqualified name may be in any schema holding it
    from pgwarden.catalog.model import Catalog, RelationFacts

    base = ctx.catalog
    known = Catalog(functions=base.functions, operators=base.operators, settings=base.settings,
                    relations=base.relations + (RelationFacts(90010, "secret", "things", "r"),),
                    schemas=("public", "secret", "pg_catalog"), complete=True)
    assert "secret.things" in analyze_sql("SELECT * FROM things", ctx.with_catalog(known)).tables


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


def test_own_function_reading_a_table_names_it():
    ctx = _with(_own("peek", "SELECT sum(n) FROM secret.things", volatility="s", security_definer=True))
    assert "secret.things" in analyze_sql("SELECT peek()", ctx).tables


def test_a_procedure_is_judged_by_its_body():
    ctx = _with(_own("proc_purge", "DELETE FROM public.things", kind="p"))
    assert "delete" in analyze_sql("CALL proc_purge()", ctx).kinds


def test_a_plpgsql_function_returning_a_value_is_not_unknown():
    ctx = _with(_own("plus_one", "BEGIN RETURN $1 + 1; END", nargs=1, volatility="i", language="plpgsql"))
    assert analyze_sql("SELECT plus_one(1)", ctx).kinds == {"select"}


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


# ---------------------------------------------------------------------- casts, domains and types


def _builtin(name: str) -> int:
    """The OID of a built-in function of the snapshot (one of that name)."""
    return builtin_catalog().functions_named(name)[0].oid


def _type(name: str, kind: str, functions=(), parts=(), schema: str = "public") -> TypeFacts:
    return TypeFacts(next(_OIDS), schema, name, kind, functions=tuple(functions), parts=tuple(parts))


def _cast_db(*extra_casts, schema: str = "public", complete: bool = False):
    """A database with types whose conversions run its own functions, as tests/e2e/test_hostile.py's:

    ticket (composite) with an explicit cast from int4 through to_ticket, which deletes; checked,
    a domain over int4 whose CHECK calls purge(), which deletes, and its array type; pair, a
    composite with a checked field; a cast from ticket to text through leak, a SECURITY DEFINER
    reader of secret.things; stamp with an assignment cast from int4 through to_stamp, which
    deletes; tables with columns of those types, and one without.
    """
    int4 = builtin_catalog().types_named("int4")[0].oid
    text = builtin_catalog().types_named("text")[0].oid
    deletes = "WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d"
    purge, to_ticket, to_stamp = _own("purge", deletes), _own("to_ticket", deletes, 1), _own("to_stamp", deletes, 1)
    leak = _own("leak", "SELECT sum(n)::text FROM secret.things", 1, volatility="s", security_definer=True)
    ticket = _type("ticket", "c", [_builtin("record_in")], [int4])
    checked = _type("checked", "d", [_builtin("domain_in"), purge.oid, _builtin("int8ge")], [int4], schema=schema)
    checked_array = _type("_checked", "b", [_builtin("array_in")], [checked.oid], schema=schema)
    pair = _type("pair", "c", [_builtin("record_in")], [checked.oid, text])
    stamp = _type("stamp", "c", [_builtin("record_in")], [int4])
    relations = (RelationFacts(next(_OIDS), "public", "guarded", "r", column_types=(checked.oid,)),
                 RelationFacts(next(_OIDS), "public", "stamps", "r", column_types=(stamp.oid,)),
                 RelationFacts(next(_OIDS), "public", "tickets", "r", column_types=(ticket.oid,)),
                 RelationFacts(next(_OIDS), "public", "plain", "r"))
    casts = (CastFacts(next(_OIDS), int4, ticket.oid, to_ticket.oid, "e"),
             CastFacts(next(_OIDS), ticket.oid, text, leak.oid, "e"),
             CastFacts(next(_OIDS), int4, stamp.oid, to_stamp.oid, "a")) + extra_casts
    return _with(purge, to_ticket, to_stamp, leak, types=(ticket, checked, checked_array, pair, stamp),
                 casts=casts, relations=relations, complete=complete)


CASTS_THAT_DELETE = [
    "SELECT 5::ticket",
    "SELECT CAST(5 AS public.ticket)",
    "SELECT ticket '5'",  # (text input: counted with every cast to ticket, more than runs)
    "SELECT ticket(5)",  # no function of that name: a cast
    "SELECT ARRAY[5]::ticket[]",
    "SELECT 5::checked",
    "SELECT '5'::checked",
    "SELECT '{5}'::checked[]",
    "SELECT '{5}'::_checked",
    "SELECT '(5,x)'::pair",  # a field of the domain
    "SELECT * FROM plain WHERE a = 1::checked",
    "SELECT 1 FROM plain ORDER BY a::checked",
    "EXPLAIN ANALYZE SELECT 5::checked",
    "DO $$ BEGIN PERFORM 5::checked; END $$",
    "DO $$ DECLARE x public.checked; BEGIN x := 6; END $$",  # a variable of the domain
    "DO $$ DECLARE x public.checked := 6; BEGIN NULL; END $$",
    "PREPARE p(checked) AS SELECT $1",  # EXECUTE p(5) runs the CHECK
    "ALTER TABLE plain ALTER COLUMN a TYPE checked",  # every row's value
    "ALTER TABLE plain ADD COLUMN c checked",
    "SELECT 'x'::pg_catalog.int4(public.purge())",  # a modifier is an expression (the server wants a constant)
    "INSERT INTO guarded VALUES (1)",  # a column of the domain
    "COPY guarded FROM STDIN",
    "UPDATE guarded SET c = 2 WHERE c = 1",
    "MERGE INTO guarded USING plain ON false WHEN NOT MATCHED THEN INSERT VALUES (1)",
    "INSERT INTO stamps VALUES (5)",  # an assignment cast to the column's type
    "UPDATE stamps SET s = 5 WHERE s IS NULL",
    "WITH x AS (INSERT INTO guarded VALUES (1) RETURNING 1) SELECT * FROM x",
]


@pytest.mark.parametrize("sql", CASTS_THAT_DELETE)
def test_a_conversion_runs_the_functions_of_casts_domains_and_types(sql):
    got = analyze_sql(sql, _cast_db()).kinds
    assert {"side_effect", "delete"} <= got, f"{sql}: kinds {sorted(got)}"


def test_a_cast_names_the_functions_it_runs():
    ctx = _cast_db()
    assert analyze_sql("SELECT 5::ticket", ctx).functions == {"to_ticket"}
    assert analyze_sql("SELECT 5::checked", ctx).functions == {"purge"}  # not domain_in, int8ge, int4in


def test_a_cast_to_a_built_in_type_runs_a_cast_of_the_database():
    """ticket -> text runs leak, which reads secret.things as its owner."""
    analysis = analyze_sql("SELECT t::text FROM tickets AS t", _cast_db())
    assert "leak" in analysis.functions and "secret.things" in analysis.tables
    assert "leak" not in analyze_sql("SELECT t::varchar FROM tickets AS t", _cast_db()).functions
    # pgwarden does not know a value's type, so every cast to text counts, more than runs
    # (and a constant's kind cannot decide: '5'::ticket and 5::ticket share a normalized text)
    assert "leak" in analyze_sql("SELECT 'x'::text", _cast_db()).functions


NO_CONVERSION_THAT_MATTERS = [
    "SELECT 1::int, 'x'::varchar, now()::date, 1.5::numeric(10, 2), '{1}'::int[], interval '1 day'",
    "SELECT 5::information_schema.cardinal_number",  # a built-in domain: CHECK (VALUE >= 0)
    "SELECT '(1)'::plain, '(1)'::public.plain",  # a table's row type
    "SELECT * FROM guarded",  # reading a column of the domain converts nothing
    "DELETE FROM guarded WHERE c IS NULL",
    "INSERT INTO plain VALUES (5)",
    "INSERT INTO tickets VALUES (ROW(5))",  # int4 -> ticket is an explicit cast: not on assignment
    "SELECT * FROM tickets",
]


@pytest.mark.parametrize("sql", NO_CONVERSION_THAT_MATTERS)
def test_conversions_that_run_nothing_of_the_databases_own_add_nothing(sql):
    analysis = analyze_sql(sql, _cast_db())
    assert not analysis.kinds & {"side_effect", "unknown"}, f"{sql}: kinds {sorted(analysis.kinds)}"
    assert analysis.functions <= {"now"}


def test_a_type_the_catalog_does_not_know_is_unknown():
    # the snapshot knows initdb's types only: a type of the database's own may do anything
    assert "unknown" in analyze_sql("SELECT 5::ticket").kinds
    assert "unknown" in analyze_sql("SELECT '5'::public.checked").kinds
    assert analyze_sql("SELECT 5::int4, 'x'::text, 1::pg_catalog.int8").kinds == {"select"}
    # the live catalog knows them all: a name it lacks is not a type (yet)
    assert "unknown" in analyze_sql("SELECT 5::nosuch", _cast_db(complete=True)).kinds
    assert "unknown" in analyze_sql("SELECT 5::secret.checked", _cast_db(complete=True)).kinds
    # a catalog without type facts has nothing to judge by
    empty = attrs.evolve(default_context(), catalog=Catalog())
    assert analyze_sql("SELECT 5::ticket", empty).kinds == {"select"}


def test_a_type_is_found_on_the_search_path():
    ctx = _cast_db(schema="secret", complete=True)
    assert "unknown" in analyze_sql("SELECT 5::checked", ctx).kinds  # not on the path: the server fails too
    assert "side_effect" in analyze_sql("SELECT 5::secret.checked", ctx).kinds
    ctx = ctx.after(analyze_sql("SET search_path = secret, public", ctx))
    assert "side_effect" in analyze_sql("SELECT 5::checked", ctx).kinds
    # a type whose conversion runs nothing is still looked for on the path
    mood = _type("mood", "e", [_builtin("enum_in")], schema="secret")
    ctx = _with(types=(mood,), complete=True)
    assert "unknown" in analyze_sql("SELECT 'happy'::mood", ctx).kinds
    assert analyze_sql("SELECT 'happy'::secret.mood", ctx).kinds == {"select"}
    ctx = ctx.after(analyze_sql("SET search_path = secret", ctx))
    assert analyze_sql("SELECT 'happy'::mood", ctx).kinds == {"select"}


def test_a_type_of_the_database_named_as_a_built_in_one_counts():
    """``int4`` unqualified may be public.int4 when public comes first on the path: every type the
    name may be counts; ``int`` is the grammar's pg_catalog.int4."""
    int4 = builtin_catalog().types_named("int4")[0].oid
    purge = _own("purge", "DELETE FROM public.things")
    shadow = _type("int4", "d", [_builtin("domain_in"), purge.oid], [int4])
    ctx = _with(purge, types=(shadow,))
    assert "side_effect" in analyze_sql("SELECT 5::int4", ctx).kinds
    assert analyze_sql("SELECT 5::int", ctx).kinds == {"select"}
    assert analyze_sql("SELECT 5::pg_catalog.int4", ctx).kinds == {"select"}


def test_assignment_and_implicit_casts_count_where_the_server_may_apply_them():
    int4 = builtin_catalog().types_named("int4")[0].oid
    ticket = _cast_db().catalog.types_named("ticket")[0].oid
    volatile = _own("sneaky", "DELETE FROM public.things", 1)
    # an assignment cast to a built-in type: any column may have it
    assigned = _with(volatile, casts=(CastFacts(next(_OIDS), ticket, int4, volatile.oid, "a"),))
    for sql in ("INSERT INTO plain VALUES (1)", "UPDATE plain SET a = 1 WHERE a = 2",
                "DO $$ DECLARE x int; BEGIN x := 1; END $$", "DO $$ DECLARE r record; BEGIN NULL; END $$"):
        assert "side_effect" in analyze_sql(sql, assigned).kinds, sql
    # a record variable may be of any type: only the conversions that do something count
    loop = "DO $$ DECLARE r record; i int; BEGIN FOR r IN SELECT * FROM plain LOOP i := 1; END LOOP; END $$"
    assert analyze_sql(loop).kinds == {"do", "select"}
    assert "side_effect" in analyze_sql(loop, _cast_db()).kinds  # checked's CHECK, stamp's cast
    # (a procedure's arguments are converted by implicit casts only; a prepared statement's
    # parameters to the types of its PREPARE, which count there)
    for sql in ("SELECT * FROM plain", "DELETE FROM plain WHERE a = 1", "SELECT 1", "BEGIN", "CALL p(1)",
                "EXECUTE q(1)", "DO $$ BEGIN NULL; END $$"):
        assert "side_effect" not in analyze_sql(sql, assigned).kinds, sql
    # an implicit cast: wherever a value is computed
    implicit = _with(volatile, casts=(CastFacts(next(_OIDS), ticket, int4, volatile.oid, "i"),))
    for sql in ("SELECT * FROM plain", "SELECT abs(1)", "SELECT 1 + 1", "INSERT INTO plain VALUES (1)"):
        assert "side_effect" in analyze_sql(sql, implicit).kinds, sql
    assert analyze_sql("SELECT 1", implicit).kinds == {"select"}
    assert analyze_sql("SHOW work_mem", implicit).kinds == {"show"}
    # an extension's casts run built-ins that do nothing: no kind, no name
    harmless = _with(casts=(CastFacts(next(_OIDS), ticket, int4, _builtin("lower"), "i"),))
    analysis = analyze_sql("SELECT * FROM plain", harmless)
    assert analysis.kinds == {"select"} and analysis.functions == frozenset()


def _effects_db():
    """A table with an RLS policy and one with a trigger, each running a function that deletes
    secret.things (what `RelationFacts.effects` holds from the live catalog)."""
    wipe = _own("wipe", "WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT true")
    trig = _own("trig", "BEGIN DELETE FROM secret.things; RETURN NULL; END", language="plpgsql")
    policed = RelationFacts(oid=next(_OIDS), schema="public", name="policed", kind="r", effects=(("p", wipe.oid),))
    audited = RelationFacts(oid=next(_OIDS), schema="public", name="audited", kind="r", effects=(("t", trig.oid),))
    secret = RelationFacts(oid=next(_OIDS), schema="secret", name="things", kind="r")
    return _with(wipe, trig, relations=(policed, audited, secret))


@pytest.mark.parametrize("sql", ["SELECT * FROM policed", "INSERT INTO audited VALUES (1)",
                                 "COPY audited FROM STDIN", "TRUNCATE audited"])
def test_what_a_tables_policies_and_triggers_run_counts(sql):
    # (an RLS policy's function runs on any use: not testable end to end, the test server's
    # upstream role is a superuser, which row-level security lets be)
    analysis = analyze_sql(sql, _effects_db())
    assert "delete" in analysis.kinds and "secret.things" in analysis.tables and analysis.has_where is False


def test_reading_a_table_fires_none_of_its_triggers():
    analysis = analyze_sql("SELECT * FROM audited", _effects_db())
    assert "delete" not in analysis.kinds and "secret.things" not in analysis.tables


def test_an_execute_after_a_function_that_prepares_is_unknown():
    # The block and approve plugins judge `EXECUTE p` by the PREPARE they saw; a function's body
    # may DEALLOCATE p and PREPARE it again (PL/pgSQL's EXECUTE runs PREPARE; checked on the
    # server). After a call of it, what p is is not known: unknown, for the rest of the session
    # (a DEALLOCATE pgwarden judged may not have run: `SELECT 1/0; DEALLOCATE p`).
    from pgwarden.identity import Identity
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement
    from pgwarden_plugins.block import judged as block_judged

    swap = _own("swap_p", "BEGIN EXECUTE 'DEALLOCATE p'; EXECUTE 'PREPARE p AS DELETE FROM secret.things "
                "WHERE n > 0'; RETURN 1; END", language="plpgsql")
    ctx = _with(swap)
    session = Session("s", Identity("agent", frozenset()), "appdb")

    def judged(sql: str):  # what the plugin's rules would be matched against
        return block_judged({}, lambda statement, _policies: statement, Statement(sql, context=ctx), session, ())

    judged("PREPARE p AS SELECT 1")
    assert "unknown" not in judged("EXECUTE p").kinds
    assert analyze_sql("SELECT public.swap_p()", ctx).prepares_unseen
    judged("SELECT public.swap_p()")
    assert "unknown" in judged("EXECUTE p").kinds
    judged("DEALLOCATE p")
    judged("PREPARE p AS SELECT 2")
    assert "unknown" in judged("EXECUTE p").kinds
    assert not analyze_sql("SELECT public.harmless_q()", _with(_own("harmless_q", "SELECT 1"))).prepares_unseen


@pytest.mark.parametrize("sql, kinds", [
    ("CREATE OR REPLACE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS "
     "'BEGIN DELETE FROM secret.things; RETURN NULL; END'", {"ddl", "delete"}),
    ("CREATE OR REPLACE FUNCTION public.f(int) RETURNS int LANGUAGE sql AS "
     "'DELETE FROM secret.things RETURNING $1'", {"ddl", "delete"}),
    ("CREATE OR REPLACE FUNCTION public.f(int) RETURNS int LANGUAGE sql RETURN $1 + 1", {"ddl"}),
    ("CREATE OR REPLACE FUNCTION public.f(int) RETURNS int LANGUAGE c AS 'lib', 'sym'", {"ddl", "unknown", "system"}),
])
@pytest.mark.parametrize("stale", [False, True])
def test_a_function_replaced_counts_its_new_body(sql, kinds, stale):
    # What calls it already (a trigger, a default, a rule, a view; one armed in the open
    # transaction is in no catalog yet) runs the new body from now on: judged as arming is.
    analysis = analyze_sql(sql, default_context().with_stale(stale))
    assert analysis.kinds == kinds
    assert ("secret.things" in analysis.tables) == ("delete" in kinds)
    if "delete" in kinds:
        assert analysis.has_where is False
    # a plain CREATE makes a new function: nothing made before calls it
    # (one in C, a superuser's act, is `system` as well: red team thirteen)
    created = sql.replace("CREATE OR REPLACE", "CREATE")
    assert analyze_sql(created, default_context().with_stale(stale)).kinds == {"ddl"} | (kinds & {"system"})


@pytest.mark.parametrize("sql", ["ALTER FUNCTION public.f(int) SET search_path = secret",
                                 "ALTER PROCEDURE public.p() SET search_path FROM CURRENT",
                                 "ALTER FUNCTION f() RESET ALL"])
def test_a_functions_own_setting_after_ddl_in_an_open_transaction_is_unknown(sql):
    # what the unqualified names of a function armed in the transaction mean moves with it
    assert "unknown" in analyze_sql(sql, default_context().with_stale(True)).kinds
    assert "unknown" not in analyze_sql(sql, default_context()).kinds


def test_a_functions_other_attributes_are_not_unknown():
    assert analyze_sql("ALTER FUNCTION public.f(int) IMMUTABLE",
                       default_context().with_stale(True)).kinds == {"ddl"}


@pytest.mark.parametrize("sql, system", [
    ("SELECT rolname, rolpassword FROM pg_authid", True),
    ("SELECT * FROM pg_shadow", True),  # a view over pg_authid
    ("TABLE pg_largeobject", True),
    ("SELECT * FROM pg_roles", False),
    ("SELECT * FROM pg_stats", False),
    ("SELECT relname FROM pg_class", False),
    # PUBLIC may read pg_subscription's columns but subconninfo (its 'a' effects, session 29)
    ("SELECT count(*) FROM pg_subscription WHERE subdbid = 1", False),
    ("SELECT subname FROM pg_subscription", False),
    ("SELECT subconninfo FROM pg_subscription", True),
    ("SELECT * FROM pg_subscription", True),
    ("SELECT to_json(s) FROM pg_subscription AS s", True),
    ("SELECT count(*) FROM pg_subscription NATURAL JOIN (SELECT 'x' AS subconninfo) AS x", True),
    ("COPY pg_subscription TO STDOUT", True),
    ("SELECT count(*) FROM pg_authid", True),
])
def test_relations_public_may_not_read_are_system_in_the_snapshot_too(sql, system):
    """Red team ten: the live catalog marks built-in relations whose initial privileges grant PUBLIC
    no SELECT (effect 'A'); the shipped snapshot keeps those effects, so that `catalog: {live:
    false}` and `pgwarden explain` without a database refuse `SELECT rolpassword FROM pg_authid`
    under a rule on `system` too."""
    assert ("system" in analyze_sql(sql).kinds) is system


# A serial column is an integer column and a sequence the server makes (transformColumnDefinition),
# not a type named serial: not unknown. A type of that name elsewhere is still judged as itself.


@pytest.mark.parametrize(("sql", "unknown"), [
    ("CREATE TABLE t (id serial PRIMARY KEY, n int)", False),
    ("CREATE TABLE t (id bigserial, n smallserial, m serial8, k serial2, j serial4)", False),
    ("ALTER TABLE things ADD COLUMN z bigserial", False),
    ("CREATE TABLE t (id public.serial)", True),  # (qualified: the type of that name)
    ("CREATE TABLE t (id nosuchtype)", True),
    ("SELECT * FROM json_to_record('{}') AS x(c serial)", True),  # (no column: the type of that name)
])
def test_a_serial_column_is_an_integer_column(sql, unknown):
    assert ("unknown" in analyze_sql(sql).kinds) is unknown, sql


# Syntax of a newer release than the server's (the snapshot is PostgreSQL 15's, whose keywords it
# holds): a keyword's syntax that pgwarden's parser makes a pg_catalog call of is `unknown` there (a
# call of a function on the search_path on 15). A call that names pg_catalog in its text is that
# call in every release: psql 15's \dAc, \dAf, \dAo, \dAp and \dX call `pg_catalog.format(...)`
# (a keyword since 16), and were refused as `unknown` (session 30).


@pytest.mark.parametrize(("sql", "unknown"), [
    ("SELECT json_object(1, 2)", True),
    ("SELECT json_object('{a,b}')", True),
    ("SELECT 'ééé', json_object('{a,b}')", True),
    ("SELECT json_value('{}', 'x')", True),
    ("SELECT json_array(1)", True),
    ("SELECT merge_action()", True),
    ("SELECT system_user", True),
    ("SELECT pg_catalog.json_object('{a,b}'), json_object('{a,b}')", True),
    ("DO $$ BEGIN PERFORM json_object('{a,b}'); END $$", True),
    ("DO $$ DECLARE x text; BEGIN x := json_object('{a,b}'); END $$", True),
    ("SELECT pg_catalog.format('%I.%I', 'a', 'b')", False),
    ("SELECT \"pg_catalog\".format('%s FROM %s', 'a', 'b')", False),
    ("SELECT PG_CATALOG . format('%s', 1)", False),
    ("SELECT /* why */ pg_catalog.format('%s', 1)", False),
    ("SELECT 'ééé', pg_catalog.format('%s', 1), 'ü'", False),
    ("SELECT U&\"pg_catalo\\0067\".format('%s', 1)", False),
    ("SELECT pg_catalog.json_object('{a,b}')", False),
    ("SELECT pg_catalog.path(polygon '((0,0),(1,1),(1,0))')", False),
    ("DO $$ BEGIN PERFORM pg_catalog.format('%s', 1); END $$", False),
    ("DO $$ DECLARE x text; BEGIN x := pg_catalog.format('%s', 1); END $$", False),
])
def test_a_keywords_syntax_is_unknown_to_an_older_server_but_an_explicit_call_is_not(sql, unknown):
    assert ("unknown" in analyze_sql(sql).kinds) is unknown, sql
