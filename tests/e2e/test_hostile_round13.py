"""Red team, round thirteen: blocking and limits, what only a superuser may do and code pgwarden does not read.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **A built-in's code under a name of the agent's choosing** (policy "bodies": DDL and volatile
  functions allowed, `server_files`, `system` and the function `pg_read_file` refused): `CREATE
  FUNCTION public.rt13_rf(text) RETURNS text LANGUAGE internal AS 'pg_read_file_all'` was plain
  `ddl`, and `SELECT public.rt13_rf('/etc/hostname')` returned the server's file (a function of the
  database's own in C or an untrusted language was `side_effect`, nothing more); `LANGUAGE c AS
  '$libdir/adminpack', 'pg_file_write_v1_1'` (the library is installed, the extension need not be)
  wrote a server file. Under `rows_written` (policy "capped"), `LANGUAGE internal AS
  'set_config_by_name'` is set_config unseen: an SQL function turning `track_counts` off, deleting
  5 rows and turning it on again ran, counted as none. A function in a language other than SQL and
  PL/pgSQL is now made only by a superuser's act (`system`: C, internal and the untrusted languages
  are a superuser's; the trusted ones' code is not read either), and a call of one of the
  database's own is `unknown` (what its code does is not known), whoever made it.
* **DDL only a superuser may run** (policy "migrators": DDL allowed, `system` refused): `CREATE
  TABLESPACE ... LOCATION` (a server directory), `CREATE FOREIGN DATA WRAPPER`, `CREATE EXTENSION
  adminpack` (server file writing functions), `ALTER TABLE public.kin DISABLE TRIGGER ALL` (the
  foreign keys' internal triggers off: the referenced row could go, the referencing stayed) and the
  same naming one internal trigger, `ALTER FUNCTION public.harmless(int) SET
  session_replication_role = replica` (every later call, of any session, with triggers and foreign
  keys off) passed as `ddl`. They are now `system` as well (`syntax.superuser_only`: tablespaces,
  foreign data wrappers, event triggers, languages, access methods, operator classes and families,
  text search parsers and templates, transforms, extensions, base types, binary casts, a type's I/O
  functions, ENABLE / DISABLE TRIGGER ALL or of an internal trigger), and a function's SET clause is
  judged as `ALTER DATABASE ... SET` is (`Syntax.stored_settings`).
* **The server's own functions renamed** (policies "capped" and "migrators"): `ALTER FUNCTION
  pg_catalog.set_config(text, text, boolean) RENAME TO rt13_cfg` was plain `ddl`, and hid set_config
  from every check that knows it by name: an SQL function calling it by the new name turned
  `track_counts` off around a DELETE of 5 rows, counted as none; `lo_unlink` renamed `random` (a
  harmless volatile built-in, by name) deleted a large object under a policy refusing
  `side_effect`, and `pg_terminate_backend` renamed so was called; `ALTER FUNCTION pg_catalog.now()
  OWNER TO app` gave a built-in to the agent's role. DDL naming an object of `pg_catalog` or
  `information_schema` is now `system`, and DDL that alters, renames, moves, gives away, replaces,
  comments on or drops a function or operator the catalog says is the server's own (initdb's, an
  extension's) is `system` and `unknown`; `ALTER EXTENSION ... ADD / DROP` (a function of the
  database's own made an extension's, whose body pgwarden does not read) is `unknown`.
* **Rows that leave or join a table unwritten** (policy "capped", `rows_written: 2`): `ALTER TABLE
  public.rt13_part DETACH PARTITION public.rt13_p1` took 10 rows out of the parent, `NO INHERIT`
  likewise, `ATTACH PARTITION` and `INHERIT` brought 10 in, each counted as none. They are now
  among the statements the count cannot see (`Syntax.uncounted`), as `ALTER TYPE ... RENAME VALUE`.

* (After the round) `CREATE EXTENSION` is `system` unless the server says every version of the
  extension is trusted (`Catalog.trusted_extensions`, from pg_available_extension_versions): `CREATE
  EXTENSION hstore` runs as before.

Controls (refused or counted before this round, kept): `ALTER ROLE ALL IN DATABASE ... SET
session_replication_role`, `set_config('session_replication_role', ...)`, `CREATE FUNCTION ... SET
role`, `SET allow_system_table_mods`, `RESET ALL` in a read-only session (back to read-only), an
INSTEAD OF trigger's and a `DO ALSO` rule's 50 rows, `ON CONFLICT DO UPDATE` and MERGE of 5 rows,
TRUNCATE in a function, `lo_from_bytea` under `rows_written`. Allowed, kept: `DISABLE TRIGGER
USER`, a function with `SET search_path`, `CREATE SERVER` of an existing wrapper, a shell type, `SET
check_function_bodies`, `CREATE EXTENSION hstore`, renaming a function of the database's own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_hostile
from test_hostile import assert_refused, errors
from test_hostile import data_rows as _rows
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.analysis import analyze_sql
from pgwarden.testing.matrix import thin

# test_hostile's fixtures: its database, pgwarden with its policies in front of it, a direct connection
hostile_db, server, hostile = test_hostile.hostile_db, test_hostile.server, test_hostile.hostile

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)

_made = test_hostile.made
WRITTEN = Path(f"/tmp/pgwarden-rt13-{os.getpid()}-written")
THINGS = "SELECT count(*) FROM public.things"


# ---------------------------------------------------------------------- code pgwarden does not read

OWNERS_ALIASES = [
    "DROP FUNCTION IF EXISTS public.rt13_rf(text), public.rt13_w(), public.rt13_sc(text, text, boolean), "
    "public.rt13_fw(text, text, boolean)",
    "CREATE FUNCTION public.rt13_rf(text) RETURNS text LANGUAGE internal STRICT AS 'pg_read_file_all'",
    "CREATE FUNCTION public.rt13_sc(text, text, boolean) RETURNS text LANGUAGE internal AS 'set_config_by_name'",
    "CREATE FUNCTION public.rt13_w() RETURNS int LANGUAGE sql AS $$ SELECT public.rt13_sc('track_counts', 'off', false); "
    "DELETE FROM public.things WHERE id > 0; SELECT public.rt13_sc('track_counts', 'on', false); SELECT 1 $$",
    "CREATE FUNCTION public.rt13_fw(text, text, boolean) RETURNS bigint LANGUAGE c "
    "AS '$libdir/adminpack', 'pg_file_write_v1_1'",
]


@pytest.fixture
def aliases(hostile, server):
    _made(hostile, server, *OWNERS_ALIASES)
    yield server
    server.conn.execute(OWNERS_ALIASES[0])
    WRITTEN.unlink(missing_ok=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_function_whose_code_pgwarden_does_not_read_is_unknown(hostile, aliases, protocol):
    # (made by the owner; policy "bodies": pg_read_file and server_files refused, volatile functions
    # allowed: the file came back, the file was written; policy "capped": 5 rows deleted, counted as 0)
    assert _one(aliases.conn, "SELECT public.rt13_rf('/etc/hostname')")  # (it does read the file)
    for sql in ("SELECT public.rt13_rf('/etc/hostname')", f"SELECT public.rt13_fw('{WRITTEN}', 'pwned', false)"):
        (answer,) = _run(hostile, "bodies", protocol, sql)
        assert_refused(answer, sql)
        assert "cannot analyse" in errors(answer)[0].message, (sql, errors(answer))
    assert not WRITTEN.exists()
    for sql in ("SELECT public.rt13_w()", "SELECT public.rt13_sc('track_counts', 'off', false)"):
        (answer,) = _run(hostile, "capped", protocol, sql)
        assert_refused(answer, sql)
        assert _one(aliases.conn, THINGS) == 5, sql


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_making_a_function_in_a_language_pgwarden_does_not_read_is_administration(hostile, server, protocol):
    # (policy "bodies": DDL allowed, `system` refused; made, then called as above)
    server.reset()
    made = "SELECT count(*) FROM pg_proc WHERE proname IN ('rt13_rf2', 'rt13_fw2')"
    for sql in ("CREATE FUNCTION public.rt13_rf2(text) RETURNS text LANGUAGE internal STRICT AS 'pg_read_file_all'",
                "CREATE FUNCTION public.rt13_fw2(text, text, boolean) RETURNS bigint LANGUAGE c "
                "AS '$libdir/adminpack', 'pg_file_write_v1_1'"):
        (answer,) = _run(hostile, "bodies", protocol, sql)
        assert_refused(answer, sql)
        assert "system administration" in errors(answer)[0].message
    assert _one(server.conn, made) == 0


# ---------------------------------------------------------------------- DDL only a superuser may run

TABLESPACE_DIR = f"/tmp/pgwarden-rt13-{os.getpid()}-ts"


def _superuser_ddl(server) -> list[tuple[str, str]]:
    """(statement, what the server shows of its effect) for each; the effect unchanged when refused."""
    internal = _one(server.conn, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.kin'::regclass "
                                 "AND tgisinternal ORDER BY tgname LIMIT 1")
    kin = "SELECT string_agg(tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'public.kin'::regclass"
    return [
        (f"CREATE TABLESPACE rt13_ts LOCATION '{TABLESPACE_DIR}'",
         "SELECT count(*) FROM pg_tablespace WHERE spcname = 'rt13_ts'"),
        ("CREATE FOREIGN DATA WRAPPER rt13_fdw", "SELECT count(*) FROM pg_foreign_data_wrapper WHERE fdwname = 'rt13_fdw'"),
        ("CREATE EXTENSION adminpack", "SELECT count(*) FROM pg_extension WHERE extname = 'adminpack'"),
        ("ALTER TABLE public.kin DISABLE TRIGGER ALL", kin),
        (f'ALTER TABLE public.kin DISABLE TRIGGER "{internal}"', kin),
        ("ALTER FUNCTION public.harmless(int) SET session_replication_role = replica",
         "SELECT proconfig::text FROM pg_proc WHERE oid = 'public.harmless(int)'::regprocedure"),
        ("CREATE FUNCTION public.rt13_srr() RETURNS int LANGUAGE sql SET session_replication_role = replica "
         "AS 'SELECT 1'", "SELECT count(*) FROM pg_proc WHERE proname = 'rt13_srr'"),
    ]


@pytest.fixture
def superuser_ddl(hostile, server):
    server.reset()
    # (so CREATE TABLESPACE can run; the program reads its input, else the server may write into a closed pipe)
    server.conn.execute(f"COPY (SELECT 1) TO PROGRAM 'mkdir -p {TABLESPACE_DIR}; cat > /dev/null'")
    yield server
    server.conn.execute("DROP TABLESPACE IF EXISTS rt13_ts")
    server.conn.execute(f"COPY (SELECT 1) TO PROGRAM 'rmdir {TABLESPACE_DIR} 2> /dev/null; cat > /dev/null'")
    server.conn.execute("DROP FOREIGN DATA WRAPPER IF EXISTS rt13_fdw; DROP EXTENSION IF EXISTS adminpack; "
                        "ALTER TABLE public.kin ENABLE TRIGGER ALL; ALTER FUNCTION public.harmless(int) RESET ALL; "
                        "DROP FUNCTION IF EXISTS public.rt13_srr()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ddl_only_a_superuser_may_run_is_administration(hostile, superuser_ddl, protocol):
    # (policy "migrators": DDL allowed, `system` refused; the superuser upstream ran each)
    cases = _superuser_ddl(superuser_ddl)
    before = [superuser_ddl.conn.execute(check).fetchall() for _, check in cases]
    answers = _run(hostile, "migrators", protocol, *(sql for sql, _ in cases))
    for (sql, check), was, answer in zip(cases, before, answers):
        assert_refused(answer, sql)
        assert "system administration" in errors(answer)[0].message, (sql, errors(answer))
        assert superuser_ddl.conn.execute(check).fetchall() == was, sql


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol, the analysis is the same)
def test_ddl_a_plain_owner_may_run_is_allowed(hostile, server, protocol):
    server.reset()
    sqls = ["ALTER TABLE public.plain_t DISABLE TRIGGER USER",
            "CREATE OR REPLACE FUNCTION public.rt13_ok() RETURNS int LANGUAGE sql SET search_path = public AS 'SELECT 1'",
            "CREATE SERVER rt13_srv FOREIGN DATA WRAPPER file_fdw",
            "CREATE TYPE public.rt13_shell",
            "SET check_function_bodies = off",
            "CREATE EXTENSION IF NOT EXISTS hstore"]  # (trusted: a database owner's)
    try:
        for sql, answer in zip(sqls, _run(hostile, "migrators", protocol, *sqls)):
            assert not errors(answer), (sql, answer)
        assert _one(server.conn, "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'rt13_srv'") == 1
    finally:
        server.conn.execute("ALTER TABLE public.plain_t ENABLE TRIGGER USER; DROP FUNCTION IF EXISTS public.rt13_ok(); "
                            "DROP SERVER IF EXISTS rt13_srv; DROP TYPE IF EXISTS public.rt13_shell; "
                            "DROP EXTENSION IF EXISTS hstore")
        test_hostile.read_catalog_again(hostile, "an extension dropped")


def test_the_live_catalog_learns_the_trusted_extensions_from_the_server(hostile, server):
    trusted = {name for (name,) in server.conn.execute(
        "SELECT name FROM pg_available_extension_versions GROUP BY name HAVING bool_and(trusted)")}
    assert hostile.app.catalog.current.trusted_extensions == trusted
    assert "hstore" in trusted and "adminpack" not in trusted


@pytest.mark.parametrize("sql", [
    "CREATE TABLESPACE t LOCATION '/x'", "ALTER TABLESPACE t SET (seq_page_cost = 1)", "DROP TABLESPACE t",
    "ALTER TABLESPACE t RENAME TO u", "ALTER TABLESPACE t OWNER TO a",
    "CREATE FOREIGN DATA WRAPPER w", "ALTER FOREIGN DATA WRAPPER w OPTIONS (a 'b')", "DROP FOREIGN DATA WRAPPER w",
    "CREATE EXTENSION adminpack", "ALTER EXTENSION lo UPDATE", "CREATE LANGUAGE plpython3u",
    "CREATE ACCESS METHOD m TYPE TABLE HANDLER heap_tableam_handler",
    "CREATE OPERATOR FAMILY f USING btree", "DROP OPERATOR CLASS c USING btree",
    "CREATE TEXT SEARCH PARSER p (START = a, GETTOKEN = b, END = c, LEXTYPES = d)",
    "CREATE TYPE t (INPUT = t_in, OUTPUT = t_out)", "ALTER TYPE t SET (RECEIVE = t_recv)",
    "CREATE CAST (int AS t) WITHOUT FUNCTION",
    "ALTER TABLE t ENABLE TRIGGER ALL", 'ALTER TABLE t ENABLE ALWAYS TRIGGER "RI_ConstraintTrigger_a_1"',
    "DROP EVENT TRIGGER e",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plperl AS 'return 1'",
    "CREATE OR REPLACE PROCEDURE p() LANGUAGE c AS 'lib', 'sym'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET log_statement = 'none' AS 'SELECT 1'",
])
def test_what_only_a_superuser_may_run_is_system(sql):
    assert "system" in analyze_sql(sql).kinds


@pytest.mark.parametrize("sql", [
    "ALTER TABLE t DISABLE TRIGGER USER", "ALTER TABLE t DISABLE TRIGGER audit", "CREATE TYPE t",
    "CREATE TYPE t AS (a int)", "ALTER TYPE t SET (STORAGE = plain)", "CREATE CAST (int AS t) WITH INOUT",
    "CREATE SERVER s FOREIGN DATA WRAPPER w", "CREATE USER MAPPING FOR CURRENT_USER SERVER s",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = public AS 'SELECT 1'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 1; END'",
    "ALTER TABLE t SET TABLESPACE pg_default",
])
def test_what_an_owner_may_run_is_not_system(sql):
    assert "system" not in analyze_sql(sql).kinds


# ---------------------------------------------------------------------- the server's own functions renamed

BUILT_IN = ("SELECT string_agg(p.proname || ':' || p.proowner::regrole::text, ',' ORDER BY p.proname) FROM pg_proc AS p "
            "WHERE p.oid IN ('pg_catalog.set_config(text, text, boolean)'::regprocedure, "
            "'pg_catalog.lo_unlink(oid)'::regprocedure, 'pg_catalog.pg_terminate_backend(integer, bigint)'::regprocedure, "
            "'pg_catalog.now()'::regprocedure, 'public.gen_random_bytes(integer)'::regprocedure)")
MEMBERS = "SELECT count(*) FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'"


@pytest.fixture
def built_ins(hostile, server):
    server.reset()
    server.conn.execute("SELECT lo_from_bytea(4242, 'kept')")
    yield server
    for sql in ("ALTER FUNCTION pg_catalog.rt13_cfg(text, text, boolean) RENAME TO set_config",
                "ALTER FUNCTION pg_catalog.random(oid) RENAME TO lo_unlink",
                "ALTER FUNCTION pg_catalog.random(integer, bigint) RENAME TO pg_terminate_backend",
                "ALTER FUNCTION pg_catalog.now() OWNER TO CURRENT_USER",
                "ALTER EXTENSION lo DROP FUNCTION public.purge()"):
        try:  # (only when the test failed: each undoes what a bypass did)
            server.conn.execute(sql)
        except Exception:  # noqa: BLE001
            pass
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ddl_changing_the_servers_own_functions_is_refused(hostile, built_ins, protocol):
    # (policy "capped": DDL allowed, rows_written 2: set_config renamed, an SQL function then turned
    # track_counts off around a DELETE of 5 rows under the new name; policy "migrators": DDL allowed,
    # `system` and `side_effect` refused: lo_unlink renamed `random` (a harmless volatile built-in, by
    # name) deleted a large object, pg_terminate_backend renamed so was called; now() given to the agent's
    # role; a function of the database's own made an extension's, whose body pgwarden does not read)
    before = _one(built_ins.conn, BUILT_IN), _one(built_ins.conn, MEMBERS)
    cases = [("capped", "ALTER FUNCTION pg_catalog.set_config(text, text, boolean) RENAME TO rt13_cfg"),
             ("capped", "ALTER FUNCTION set_config(text, text, boolean) RENAME TO rt13_cfg"),
             ("capped", "ALTER EXTENSION lo ADD FUNCTION public.purge()"),
             ("migrators", "ALTER FUNCTION pg_catalog.lo_unlink(oid) RENAME TO random"),
             ("migrators", "ALTER FUNCTION pg_terminate_backend(integer, bigint) RENAME TO random"),
             ("migrators", "ALTER FUNCTION pg_catalog.now() OWNER TO app"),
             ("migrators", "ALTER FUNCTION public.gen_random_bytes(integer) RENAME TO random")]
    for policy, sql in cases:
        (answer,) = _run(hostile, policy, protocol, sql)
        assert_refused(answer, sql)
        assert (_one(built_ins.conn, BUILT_IN), _one(built_ins.conn, MEMBERS)) == before, sql
    (answer,) = _run(hostile, "migrators", protocol, "SELECT random(4242)")  # (no such function: it was not renamed)
    assert errors(answer), answer
    assert _one(built_ins.conn, "SELECT count(*) FROM pg_largeobject_metadata") == 1
    # (a function of the database's own is renamed as before)
    renamed, back = _run(hostile, "migrators", protocol, "ALTER FUNCTION public.purge() RENAME TO rt13_purge",
                         "ALTER FUNCTION public.rt13_purge() RENAME TO purge")
    assert not errors(renamed) and not errors(back), (renamed, back)


@pytest.mark.parametrize("sql", [
    "ALTER FUNCTION lower(text) VOLATILE", "COMMENT ON FUNCTION now() IS 'x'",
    "CREATE OR REPLACE FUNCTION pg_catalog.lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
    "CREATE FUNCTION pg_catalog.rt13() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "ALTER OPERATOR = (int, int) OWNER TO app", "ALTER AGGREGATE count(*) RENAME TO c",
    "ALTER TYPE pg_catalog.int4 OWNER TO app", "ALTER FUNCTION abs(int) SET SCHEMA public",
])
def test_changing_what_the_server_ships_is_system(sql):
    assert "system" in analyze_sql(sql).kinds


@pytest.mark.parametrize("sql", [
    "ALTER FUNCTION public.f() RENAME TO g", "CREATE OR REPLACE FUNCTION lower(text) RETURNS text LANGUAGE sql "
    "AS 'SELECT $1'", "CREATE FUNCTION lower(int) RETURNS text LANGUAGE sql AS 'SELECT 1'",
    "ALTER TABLE t ALTER COLUMN a TYPE pg_catalog.int8", "DROP FUNCTION f(int)",
])
def test_changing_the_databases_own_is_not_system(sql):
    assert "system" not in analyze_sql(sql).kinds


# ---------------------------------------------------------------------- rows that leave or join a table unwritten

PARTS = ["DROP TABLE IF EXISTS public.rt13_part, public.rt13_p1, public.rt13_p2, public.rt13_par, public.rt13_ch, "
         "public.rt13_ch2",
         "CREATE TABLE public.rt13_part (id int) PARTITION BY RANGE (id)",
         "CREATE TABLE public.rt13_p1 PARTITION OF public.rt13_part FOR VALUES FROM (0) TO (100)",
         "INSERT INTO public.rt13_part SELECT g FROM generate_series(1, 10) g",
         "CREATE TABLE public.rt13_p2 (id int)", "INSERT INTO public.rt13_p2 SELECT g FROM generate_series(100, 109) g",
         "CREATE TABLE public.rt13_par (id int)", "CREATE TABLE public.rt13_ch () INHERITS (public.rt13_par)",
         "INSERT INTO public.rt13_ch SELECT g FROM generate_series(1, 10) g",
         "CREATE TABLE public.rt13_ch2 (id int)", "INSERT INTO public.rt13_ch2 SELECT g FROM generate_series(1, 10) g"]


@pytest.fixture
def parts(hostile, server):
    _made(hostile, server, *PARTS)
    yield server
    server.conn.execute(PARTS[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rows_that_leave_or_join_a_table_unwritten_are_uncounted(hostile, parts, protocol):
    # (policy "capped": DDL allowed, rows_written 2; the parent lost, or gained, 10 rows, counted as none)
    cases = [("ALTER TABLE public.rt13_part DETACH PARTITION public.rt13_p1", "public.rt13_part"),
             ("ALTER TABLE public.rt13_part ATTACH PARTITION public.rt13_p2 FOR VALUES FROM (100) TO (200)",
              "public.rt13_part"),
             ("ALTER TABLE public.rt13_ch NO INHERIT public.rt13_par", "public.rt13_par"),
             ("ALTER TABLE public.rt13_ch2 INHERIT public.rt13_par", "public.rt13_par")]
    for sql, parent in cases:
        (answer,) = _run(hostile, "capped", protocol, sql)
        assert_refused(answer, sql)
        assert "rows_written" in errors(answer)[0].message, (sql, errors(answer))
        assert _one(parts.conn, f"SELECT count(*) FROM {parent}") == 10, sql


# ---------------------------------------------------------------------- controls

@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_refused_before_this_round(hostile, server, protocol):
    server.reset()
    settings = "SELECT count(*) FROM pg_db_role_setting"
    before = _one(server.conn, settings)
    for policy, sql in [
        ("migrators", "ALTER ROLE ALL IN DATABASE hostile SET session_replication_role = replica"),
        ("design", "SELECT set_config('session_replication_role', 'replica', false)"),
        ("design", "SET allow_system_table_mods = on"),
        ("migrators", "CREATE FUNCTION public.rt13_sr() RETURNS text LANGUAGE sql SET role = 'app' AS 'SELECT 1::text'"),
        ("capped", "SELECT lo_from_bytea(0, 'abc')"),
        ("capped", "INSERT INTO public.things SELECT g, g FROM generate_series(1, 5) g "
                   "ON CONFLICT (id) DO UPDATE SET n = excluded.n + 1"),
        ("capped", "MERGE INTO public.things AS t USING (SELECT g FROM generate_series(1, 5) AS g) AS s ON t.id = s.g "
                   "WHEN MATCHED THEN UPDATE SET n = 0"),
    ]:
        (answer,) = _run(hostile, policy, protocol, sql)
        assert_refused(answer, sql)
    assert _one(server.conn, settings) == before
    assert _one(server.conn, "SELECT sum(n) FROM public.things") == 15
    assert _one(server.conn, "SELECT count(*) FROM pg_largeobject_metadata") == 0
    reset, shown = _run(hostile, "readonly", protocol, "RESET ALL", "SHOW default_transaction_read_only")
    assert not errors(reset) and _rows(shown) == [(b"on",)]


WRITES_ELSEWHERE = [
    "DROP VIEW IF EXISTS public.rt13_v", "DROP TABLE IF EXISTS public.rt13_r",
    "DROP FUNCTION IF EXISTS public.rt13_io() CASCADE", "DROP FUNCTION IF EXISTS public.rt13_tr()",
    "CREATE VIEW public.rt13_v AS SELECT 1 AS a",
    "CREATE FUNCTION public.rt13_io() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.plain_t SELECT g FROM generate_series(1, 50) AS g; RETURN NEW; END $$",
    "CREATE TRIGGER rt13_io INSTEAD OF INSERT ON public.rt13_v FOR EACH ROW EXECUTE FUNCTION public.rt13_io()",
    "CREATE TABLE public.rt13_r (a int)",
    "CREATE RULE rt13_rr AS ON INSERT TO public.rt13_r DO ALSO INSERT INTO public.plain_t "
    "SELECT g FROM generate_series(1, 50) AS g",
    "CREATE FUNCTION public.rt13_tr() RETURNS int LANGUAGE plpgsql AS $$ BEGIN TRUNCATE public.things; RETURN 1; END $$",
]


@pytest.fixture
def writes_elsewhere(hostile, server):
    _made(hostile, server, *WRITES_ELSEWHERE)
    yield server
    server.conn.execute("; ".join(WRITES_ELSEWHERE[:4]))


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_writes_the_text_does_not_show_are_counted(hostile, writes_elsewhere, protocol):
    # (policy "capped": the 50 rows an INSTEAD OF trigger or a DO ALSO rule wrote were counted, and the
    # TRUNCATE in a function refused, before this round too)
    for sql in ("INSERT INTO public.rt13_v VALUES (1)", "INSERT INTO public.rt13_r VALUES (1)", "SELECT public.rt13_tr()"):
        (answer,) = _run(hostile, "capped", protocol, sql)
        assert_refused(answer, sql)
    assert _one(writes_elsewhere.conn, "SELECT count(*) FROM public.plain_t") == 0
    assert _one(writes_elsewhere.conn, THINGS) == 5
