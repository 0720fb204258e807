"""Red team, round fifteen: blocking and limits, code that runs out of the statement's sight.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **An operator's body counted its kinds, not its tables** (policy "truncators": only `secret.*`
  refused; "bodies", which allows volatile functions, alike): with `public.=` (int, int) of the database's own, whose function deletes
  secret.things, `SET search_path = public, pg_catalog` then `SELECT * FROM public.things WHERE id =
  1` (the server takes public's `=` first) emptied secret.things; so did `id OPERATOR(public.=) 1`
  on any path. The operator's function was judged for its kinds (`delete`, `side_effect`: both
  allowed there) and the tables its body reads and writes were dropped (`_Resolver._operator`);
  they now count as a call's do.
* **An operator's NEGATOR runs in its place** (policies "design", the agents', and "truncators"): with
  the owner's `public.<~>`, its function harmless, its NEGATOR `public.<!~>`'s deleting
  secret.things, `SELECT id FROM public.things WHERE NOT (id OPERATOR(public.<~>) 2)` emptied it:
  planning puts the negator in `NOT (a op b)`'s place (and may swap a comparison's operands for
  its COMMUTATOR). An operator of the database's own now counts both functions too (the catalog's
  operator rows, `queries.OPERATORS`).
* **C code of an extension the server does not say is trusted** (policy "truncators", which allows
  `system`, so `CREATE EXTENSION` of any available one): pageinspect's `get_raw_page('secret.things',
  0)` returned secret.things' page (its rows), xml2's `xpath_table('id', ..., 'secret.things', ...)`
  its rows; pg_surgery's `heap_force_kill('secret.things'::regclass, ...)` killed its rows; a
  trigger of refint's `check_foreign_key(1, 'cascade', 'id', 'secret.things', 'id')` on a table of
  the agent's own deleted them at a `DELETE` of that table. Such code reaches a relation by a name, a
  regclass or an OID it is given (or a trigger's arguments hold), which no analysis follows: a
  function of an untrusted extension (C, or SQL calling it) now reads every relation of the
  database's own, and writes them if it is volatile (`_Resolver.function_kinds`).
  Under `rows_written` ("capped": `system` allowed), `heap_force_kill('public.things', ...)` killed
  5 rows the server's count never saw: a volatile one only an administrator may call is now
  `uncounted` (refused there).
* **A server file may be any relation's** (policy "truncators": server files allowed, `secret.*`
  refused): `SELECT pg_read_binary_file(pg_relation_filepath('secret.things'))`, and the same path
  as a literal, returned secret.things' page; `lo_import` of it copied it into a large object. A
  statement that reads or writes server files (`server_files`, `copy_file`) now reads every relation
  with storage, for the rules that name tables (as the planner's statistics do, round ten).

Controls (refused before this round, kept): a DO block's and a PL/pgSQL function's `COPY ... TO
PROGRAM`, and one in `EXECUTE 'literal'` (policy "bodies"); `SET SESSION CHARACTERISTICS AS
TRANSACTION READ WRITE`, `BEGIN ... READ WRITE`, `set_config('default_transaction_read_only', 'no',
false)` in a read-only session ("read-only"); a function made with `SET role` or `SET
default_transaction_read_only = off` ("migrators"); `REINDEX SCHEMA public`, `VACUUM FULL`, `ALTER TABLE
... ALTER COLUMN ... TYPE`, `SET UNLOGGED`, `SET ACCESS METHOD` and an `ADD COLUMN` that rewrites
public.indexed, whose expression index calls a function declared IMMUTABLE that deletes when armed
("truncators"); `REFRESH MATERIALIZED VIEW` under `rows_written` ("capped"). Allowed, kept:
`pg_relation_filepath('secret.things')`, `uuid_generate_v4()` (a trusted extension's C function),
`CREATE EXTENSION pageinspect` itself under "truncators".
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import DB, POLICIES, assert_refused, errors
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import SqlContext
from pgwarden.testing.matrix import thin
from pgwarden.testing.postgres import APP_USER

hostile_db, server = test_hostile.hostile_db, test_hostile.server

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)
SECRET = "SELECT count(*) FROM secret.things"
THINGS = "SELECT count(*) FROM public.things"


@pytest.fixture(scope="module")
def hostile(hostile_db, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """test_hostile's pgwarden and policies, one for the module."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    doc = base_config(pg_server, signing_keys, tmp_path_factory.mktemp("rt15"), policies=POLICIES,
                      upstream={"database": DB})
    with module_pgwarden(doc, signing_keys, reactor_thread) as rp:
        yield rp


def _drop(server, *sqls: str) -> None:
    for sql in sqls:
        server.conn.execute(sql)


# ---------------------------------------------------------------------- an operator's body

@pytest.fixture
def equals(hostile, server):
    # (the owner's `public.=` for two ints: its function empties secret.things)
    drop = ("DROP OPERATOR IF EXISTS public.= (int, int)", "DROP FUNCTION IF EXISTS public.rt15_eq(int, int)")
    test_hostile.made(hostile, server, *drop,
                      "CREATE FUNCTION public.rt15_eq(int, int) RETURNS boolean LANGUAGE sql "
                      "AS 'WITH d AS (DELETE FROM secret.things WHERE id > 0 RETURNING 1) SELECT $1 OPERATOR(pg_catalog.=) $2'",
                      "CREATE OPERATOR public.= (LEFTARG = int, RIGHTARG = int, FUNCTION = public.rt15_eq)")
    yield server
    _drop(server, *drop)
    test_hostile.read_catalog_again(hostile, "an operator dropped")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_operators_body_names_its_tables(hostile, equals, protocol):
    # (policies "truncators" and "bodies": the server took public.= and emptied secret.things)
    for policy in ("truncators", "bodies"):
        for sqls in (["SET search_path = public, pg_catalog", "SELECT * FROM public.things WHERE id = 1"],
                     ["SELECT * FROM public.things WHERE id OPERATOR(public.=) 1"],
                     ["SELECT 1 WHERE 1 OPERATOR(public.=) 1"]):
            answers = _run(hostile, policy, protocol, *sqls)
            assert_refused(answers[-1], sqls[-1])
            assert "secret.things" in errors(answers[-1])[0].message, (policy, sqls, errors(answers[-1]))
            assert _one(equals.conn, SECRET) == 3, (policy, sqls)
    analysis = analyze_sql("SELECT 1 WHERE 1 OPERATOR(public.=) 1", SqlContext(hostile.app.catalog.current, user=APP_USER))
    assert "secret.things" in analysis.tables and "secret.things" in analysis.writes, analysis


@pytest.fixture
def negated(hostile, server):
    # (the owner's `public.<~>`, its function harmless, its NEGATOR `public.<!~>` emptying secret.things)
    drop = ("DROP OPERATOR IF EXISTS public.<~> (int, int)", "DROP OPERATOR IF EXISTS public.<!~> (int, int)",
            "DROP FUNCTION IF EXISTS public.rt15_same(int, int), public.rt15_ne(int, int)")
    test_hostile.made(hostile, server, *drop,
                      "CREATE FUNCTION public.rt15_same(int, int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE "
                      "AS 'BEGIN RETURN $1 OPERATOR(pg_catalog.=) $2; END'",
                      "CREATE FUNCTION public.rt15_ne(int, int) RETURNS boolean LANGUAGE sql "
                      "AS 'WITH d AS (DELETE FROM secret.things WHERE id > 0 RETURNING 1) SELECT $1 OPERATOR(pg_catalog.<>) $2'",
                      "CREATE OPERATOR public.<~> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.rt15_same, "
                      "NEGATOR = OPERATOR(public.<!~>), COMMUTATOR = OPERATOR(public.<~>))",
                      "CREATE OPERATOR public.<!~> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.rt15_ne)")
    yield server
    _drop(server, *drop)
    test_hostile.read_catalog_again(hostile, "operators dropped")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_operators_negator_runs_in_its_place(hostile, negated, protocol):
    # (policies "design" and "truncators": planning put public.<!~> in place of NOT (... <~> ...), and
    # its function emptied secret.things)
    sql = "SELECT id FROM public.things WHERE NOT (id OPERATOR(public.<~>) 2)"
    for policy in ("design", "truncators"):
        (answer,) = _run(hostile, policy, protocol, sql)
        assert_refused(answer, sql)
        assert _one(negated.conn, SECRET) == 3, policy


# ---------------------------------------------------------------------- untrusted extensions' C code

EXTENSIONS = ("pageinspect", "pg_surgery", "refint", "xml2")
KILL = "ARRAY(SELECT ('(0,' || g || ')')::tid FROM generate_series(1, 200) AS g)"


@pytest.fixture
def extensions(hostile, server):
    drop = ["DROP TABLE IF EXISTS public.rt15_fk"] + [f"DROP EXTENSION IF EXISTS {e} CASCADE" for e in EXTENSIONS]
    test_hostile.made(hostile, server, *drop)
    yield server
    _drop(server, *drop)
    test_hostile.read_catalog_again(hostile, "extensions dropped")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_untrusted_extensions_code_reaches_every_relation(hostile, extensions, protocol):
    # (policy "truncators": `system` allowed, so the agent makes the extensions; each reached
    # secret.things, named only by a string, a regclass or a trigger's arguments)
    made = [f"CREATE EXTENSION {e}" for e in EXTENSIONS]
    attempts = [
        "SELECT get_raw_page('secret.things', 0)",
        "SELECT * FROM xpath_table('id', '''<a>'' || n || ''</a>''', 'secret.things', '/a', 'true') AS t(id int, a text)",
        f"SELECT heap_force_kill('secret.things'::regclass, {KILL})",
        "CREATE TABLE public.rt15_fk (id int)",
        "INSERT INTO public.rt15_fk VALUES (1), (2)",
        "CREATE TRIGGER rt15_fk BEFORE DELETE ON public.rt15_fk FOR EACH ROW "
        "EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'secret.things', 'id')",
    ]
    answers = _run(hostile, "truncators", protocol, *made, *attempts)
    assert not any(errors(a) for a in answers[:len(made)]), answers[:len(made)]  # (the extensions: allowed)
    for sql, answer in zip(attempts, answers[len(made):]):
        if sql.startswith(("CREATE TABLE", "INSERT")):
            assert not errors(answer), (sql, answer)
            continue
        assert_refused(answer, sql)
        assert "secret.things" in errors(answer)[0].message, (sql, errors(answer))
    assert _one(extensions.conn, SECRET) == 3
    # (the trigger made by the owner, after the change is read: the DELETE that runs it)
    test_hostile.made(hostile, extensions, attempts[-1])
    (deleting,) = _run(hostile, "truncators", protocol, "DELETE FROM public.rt15_fk WHERE id = 1")
    assert_refused(deleting, "DELETE FROM public.rt15_fk")
    assert _one(extensions.conn, SECRET) == 3
    assert _one(extensions.conn, "SELECT count(*) FROM public.rt15_fk") == 2


@pytest.mark.parametrize("protocol", ["extended"])
def test_an_untrusted_extensions_write_is_not_counted(hostile, extensions, protocol):
    # (policy "capped", rows_written 2: the 5 rows of public.things were killed, counted as none)
    sql = f"SELECT heap_force_kill('public.things'::regclass, {KILL})"
    _made, killing = _run(hostile, "capped", protocol, "CREATE EXTENSION pg_surgery", sql)
    assert not errors(_made), _made
    assert_refused(killing, sql)
    assert "rows_written" in errors(killing)[0].message, errors(killing)
    assert _one(extensions.conn, THINGS) == 5


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_a_trusted_extensions_code_and_relation_metadata_are_allowed(hostile, server, protocol):
    server.reset()
    sqls = ["SELECT uuid_generate_v4() IS NOT NULL", "SELECT gen_random_bytes(4) IS NOT NULL",
            "SELECT pg_relation_filepath('secret.things') IS NOT NULL", "SELECT pg_relation_size('public.things')",
            "INSERT INTO public.keyed (n) VALUES (1)", "DELETE FROM public.keyed WHERE n = 1"]
    for sql, answer in zip(sqls, _run(hostile, "truncators", protocol, *sqls)):
        assert not errors(answer), (sql, answer)


# ---------------------------------------------------------------------- server files

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_file_may_be_any_relations(hostile, server, protocol):
    # (policy "truncators": server files allowed, secret.* refused; the page of secret.things came back,
    # and was copied into a large object)
    server.reset()
    path = _one(server.conn, "SELECT pg_relation_filepath('secret.things')")
    sqls = ["SELECT pg_read_binary_file(pg_relation_filepath('secret.things'))",
            f"SELECT pg_read_binary_file('{path}')", f"SELECT pg_read_file('{path}')",
            f"SELECT lo_import('{path}')"]
    for sql, answer in zip(sqls, _run(hostile, "truncators", protocol, *sqls)):
        assert_refused(answer, sql)
        assert "secret.things" in errors(answer)[0].message, (sql, errors(answer))
    assert _one(server.conn, "SELECT count(*) FROM pg_largeobject_metadata") == 0


# ---------------------------------------------------------------------- arguments' defaults, a range's subtype_diff

@pytest.fixture(scope="module")
def defaulted_args(hostile, server):
    # (the owner's routines whose bodies do nothing, their argument's DEFAULT deleting secret.things;
    # a range type whose SUBTYPE_DIFF, declared IMMUTABLE, deletes it when armed, a GiST index of it)
    drop = ("DROP FUNCTION IF EXISTS public.rt15_g(int)", "DROP PROCEDURE IF EXISTS public.rt15_p(int)",
            "DROP FUNCTION IF EXISTS public.rt15_del()",
            "DROP TABLE IF EXISTS public.rt15_ranged", "DROP TYPE IF EXISTS public.rt15_range",
            "DROP FUNCTION IF EXISTS public.rt15_diff(int4, int4)",
            "DROP FUNCTION IF EXISTS public.rt15_takes(public.checked), public.rt15_gives(int)",
            "DROP FUNCTION IF EXISTS public.rt15_both(bigint)")
    test_hostile.made(hostile, server, *drop,
                      "CREATE FUNCTION public.rt15_del() RETURNS int LANGUAGE sql "
                      "AS 'WITH d AS (DELETE FROM secret.things WHERE id > 0 RETURNING 1) SELECT 1'",
                      "CREATE FUNCTION public.rt15_g(a int DEFAULT public.rt15_del()) RETURNS int LANGUAGE plpgsql "
                      "IMMUTABLE AS 'BEGIN RETURN a; END'",
                      "CREATE PROCEDURE public.rt15_p(a int DEFAULT public.rt15_del()) LANGUAGE sql AS 'SELECT 1'",
                      "CREATE FUNCTION public.rt15_diff(int4, int4) RETURNS float8 LANGUAGE sql IMMUTABLE "
                      "AS 'SELECT ($1 - $2)::float8 + CASE WHEN public.wipe_if_armed() THEN 0 ELSE 0 END'",
                      "CREATE TYPE public.rt15_range AS RANGE (SUBTYPE = int4, SUBTYPE_DIFF = public.rt15_diff)",
                      "CREATE TABLE public.rt15_ranged (r public.rt15_range)",
                      "CREATE INDEX rt15_ranged_r ON public.rt15_ranged USING gist (r)",
                      # (public.checked: a domain whose CHECK calls public.purge(), which empties public.things)
                      "CREATE FUNCTION public.rt15_takes(c public.checked) RETURNS int LANGUAGE plpgsql IMMUTABLE "
                      "AS 'BEGIN RETURN c; END'",
                      "CREATE FUNCTION public.rt15_gives(i int) RETURNS public.checked LANGUAGE sql IMMUTABLE AS 'SELECT i'",
                      # (a body that deletes, beside a default that reads: both count)
                      "CREATE FUNCTION public.rt15_both(a bigint DEFAULT public.count_things()) RETURNS bigint "
                      "LANGUAGE plpgsql AS 'BEGIN DELETE FROM secret.things WHERE id > 0; RETURN a; END'")
    yield server
    _drop(server, *drop)
    test_hostile.read_catalog_again(hostile, "routines dropped")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_arguments_default_runs_at_the_call(hostile, defaulted_args, protocol):
    # (policies "truncators" and "bodies": `CALL public.rt15_p()` emptied secret.things; "design" (the
    # agents' policy: DDL, side effects refused) with the IMMUTABLE function likewise)
    defaulted_args.reset()
    for policy, sql in [("truncators", "CALL public.rt15_p()"), ("bodies", "CALL public.rt15_p()"),
                        ("truncators", "SELECT public.rt15_g()"), ("design", "SELECT public.rt15_g()"),
                        ("design", "SELECT * FROM public.rt15_g()"), ("bodies", "SELECT public.rt15_both()")]:
        (answer,) = _run(hostile, policy, protocol, sql)
        assert_refused(answer, sql)
        assert _one(defaulted_args.conn, SECRET) == 3, (policy, sql)
    analysis = analyze_sql("SELECT public.rt15_both()", SqlContext(hostile.app.catalog.current, user=APP_USER))
    assert {"secret.things", "public.things"} <= analysis.tables and "secret.things" in analysis.writes, analysis
    assert {"rt15_both", "count_things"} <= analysis.functions, analysis


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_domain_an_argument_or_result_is_of_runs_its_check(hostile, defaulted_args, protocol):
    # (policy "design": IMMUTABLE functions whose bodies do nothing; converting 5 to public.checked,
    # argument or result, ran its CHECK: public.purge() emptied public.things)
    defaulted_args.reset()
    for sql in ("SELECT public.rt15_takes(5)", "SELECT public.rt15_gives(5)", "SELECT public.rt15_gives(id) FROM public.things"):
        (answer,) = _run(hostile, "design", protocol, sql)
        assert_refused(answer, sql)
        assert _one(defaulted_args.conn, THINGS) == 5, sql


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_range_types_subtype_diff_runs_at_an_insert(hostile, defaulted_args, protocol):
    # (policy "truncators": 3,000 ranges into the GiST index split its pages, which called
    # public.rt15_diff, armed: secret.things emptied)
    defaulted_args.reset()
    values = "SELECT ('[' || g || ',' || g + 1 || ')')::public.rt15_range FROM generate_series(1, 3000) AS g"
    for sql in (f"INSERT INTO public.rt15_ranged {values}", f"INSERT INTO public.rt15_ranged {values.replace('::public.rt15_range', '')}"):
        _armed, answer = _run(hostile, "truncators", protocol, "SET hostile.armed = on", sql)
        assert_refused(answer, sql)
        assert _one(defaulted_args.conn, SECRET) == 3, sql
        assert _one(defaulted_args.conn, "SELECT count(*) FROM public.rt15_ranged") == 0


# ---------------------------------------------------------------------- controls

@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_refused_before_this_round(hostile, server, protocol):
    server.reset()
    try:
        for policy, sqls in [
            ("bodies", ["DO $$ BEGIN COPY (SELECT 1) TO PROGRAM 'true'; END $$"]),
            ("bodies", ["DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''true'''; END $$"]),
            ("bodies", ["CREATE FUNCTION public.rt15_cp() RETURNS int LANGUAGE plpgsql "
                        "AS $$ BEGIN COPY (SELECT 1) TO PROGRAM 'true'; RETURN 1; END $$", "SELECT public.rt15_cp()"]),
            ("readonly", ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"]),
            ("readonly", ["BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE"]),
            ("readonly", ["SELECT set_config('default_transaction_read_only', 'no', false)"]),
            ("migrators", ["CREATE FUNCTION public.rt15_r() RETURNS text LANGUAGE sql SET role = 'postgres' "
                           "AS 'SELECT current_user::text'"]),
            ("migrators", ["CREATE FUNCTION public.rt15_w() RETURNS int LANGUAGE plpgsql "
                           "SET default_transaction_read_only = off AS 'BEGIN RETURN 1; END'"]),
        ]:
            answers = _run(hostile, policy, protocol, *sqls)
            assert_refused(answers[-1], sqls[-1])
        for sql in ["REINDEX SCHEMA public", "VACUUM FULL", "ALTER TABLE public.indexed ALTER COLUMN a TYPE bigint",
                    "ALTER TABLE public.indexed SET UNLOGGED", "ALTER TABLE public.indexed SET ACCESS METHOD heap",
                    "ALTER TABLE public.indexed ADD COLUMN z timestamptz DEFAULT clock_timestamp()"]:
            _armed, answer = _run(hostile, "truncators", protocol, "SET hostile.armed = on", sql)
            assert_refused(answer, sql)
            assert _one(server.conn, SECRET) == 3, sql
        assert not _one(server.conn, "SELECT count(*) FROM pg_proc WHERE proname IN ('rt15_r', 'rt15_w')")
    finally:
        server.conn.execute("DROP FUNCTION IF EXISTS public.rt15_cp(), public.rt15_r(), public.rt15_w()")


@pytest.fixture
def matview(hostile, server):
    drop = "DROP MATERIALIZED VIEW IF EXISTS public.rt15_mv"
    test_hostile.made(hostile, server, drop,
                      "CREATE MATERIALIZED VIEW public.rt15_mv AS SELECT g FROM generate_series(1, 10) AS g")
    yield server
    server.conn.execute(drop)


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_a_refresh_is_not_counted(hostile, matview, protocol):
    (answer,) = _run(hostile, "capped", protocol, "REFRESH MATERIALIZED VIEW public.rt15_mv")
    assert_refused(answer, "REFRESH MATERIALIZED VIEW")
