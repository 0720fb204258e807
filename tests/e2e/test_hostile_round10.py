"""Red team, round ten: what the administrators' relations give away, and writes the count misses.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **Relations PUBLIC may not read**: `pg_read_file()`, `pg_config()` and every built-in function
  whose initial privileges grant no EXECUTE to PUBLIC were `system`, but the built-in *relations*
  whose initial privileges grant no SELECT to PUBLIC were plain reads: `SELECT rolname,
  rolpassword FROM pg_authid` and `SELECT * FROM pg_shadow` returned every role's SCRAM hash to an
  agent under a policy blocking `system` (the upstream role is a superuser), `TABLE
  pg_largeobject` every large object's bytes, `information_schema._pg_user_mappings` the user
  mappings' options (passwords of foreign servers). The catalog now marks them (effect 'A' of
  `queries.EFFECTS`, from pg_init_privs / relacl) and reading one is `system` (`resolve._effects`).
  The views PUBLIC may read over them (`pg_roles`, `pg_user`, `pg_stats`) are not concerned; a
  view of the database's own over one is (`resolve._view`).
* **Writes of system catalogs are schema changes**: under a policy blocking `ddl` and `system`,
  `UPDATE pg_proc SET prosrc = 'SELECT 42' WHERE proname = 'rt10_f'` replaced a function's body,
  `DELETE FROM pg_trigger WHERE tgname = '...'` dropped a trigger, `DELETE FROM pg_description`
  a comment: the upstream role (a superuser) may write the catalogs, and the statement was a
  plain UPDATE or DELETE. A write of a relation of pg_catalog (or pg_toast), directly or
  through an updatable view, is now `ddl` and `system` (`_Resolver._analysis`).
* **Writes of system catalogs under `rows_written`**: the count reads pg_stat_xact_user_tables,
  which leaves out pg_catalog, information_schema and pg_toast: `DELETE FROM pg_largeobject WHERE
  loid <> 0` (every large object's data) and `DELETE FROM information_schema.sql_features WHERE
  feature_id <> ''` (714 rows) ran under `rows_written: 2`, counted as 0. A statement that writes
  (or calls a function whose body writes) such a relation is now refused under the limit
  (`limits.counting`); a function's body's writes are now the calling statement's
  (`Analysis.writes`), so `SELECT f()` whose body deletes pg_largeobject is refused too.
* **A function's own search_path**: a function made with `SET search_path = secret` whose body
  reads an unqualified `things` read secret.things (`SELECT public.rt10_sp(1)` returned its
  values under `block {tables: [secret.*]}`): the body's names were resolved under the session's
  path. A body is now read under its function's path too (`resolve._body`), names matched in its
  schemas and the session's.
* **A search_path moved inside a DO block or a function's body**: `DO $$ ... SET LOCAL search_path
  = secret; SELECT string_agg(n::text, ',') INTO r FROM things; RAISE NOTICE '%', r ... $$` (and
  `PERFORM set_config('search_path', 'secret', true)`, a plain `SET`) sent secret.things' values
  in a NOTICE under a policy that allows DO; so did a function whose body moves the path and then
  reads. The statements of a string were matched under both paths, not those of a body. Now a DO
  block's or a body's settings widen its names the same way (`_Resolver.analysis`).
* **A function that moves the search_path**: an owner's STABLE function whose body calls
  `set_config('search_path', 'secret', false)` is only `set` to the analysis; after `SELECT
  public.rt10_mover()`, `SELECT string_agg(n::text, ',') FROM things` returned secret.things'
  values (in the next Query, in the same string, in a DO block after `PERFORM` of it). A body
  that changes search_path (or a setting named at run time) now leaves it uncertain: the calling
  statement's names, and the session's from then on, may be in any schema (a trigger's or a
  cursor's function too).
* **DROP DATABASE under `rows_written`**: `DROP DATABASE rt10_other` (100 rows) ran under
  `rows_written: 2` (a policy allowing DDL): it was not among the statements that destroy rows
  uncounted. Now it is, and so is `DROP EXTENSION` (its own tables go with it).

Controls (refused before this round, kept): MERGE whose WHEN MATCHED DELETE has no filter, MERGE
reading `secret.*`, `pg_terminate_backend`, `COMMENT ON`, `ALTER DEFAULT PRIVILEGES`, `REFRESH
MATERIALIZED VIEW`, `PREPARE TRANSACTION`, `pg_reload_conf`, a volatile function in a TABLESAMPLE's
REPEATABLE, in FETCH FIRST, in a WITH HOLD cursor, `set_config('role')`, `SET SESSION
AUTHORIZATION DEFAULT`, `session_replication_role`, `pg_stat_file`, `lo_from_bytea`, SQL text
reading pg_authid handed to `query_to_xml` (a volatile function), `UPDATE pg_settings` (its rule's
`set_config` with the row's name), and a portal Executed a row at a time under `rows_written` (the
count is the portal's). Also seen refused, not kept here: `dblink_exec` writing through another
connection (`unknown`), `options=-c search_path=...` at startup (not forwarded), XML external
entities (the server does not load them).
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import GROUPS, Agent, assert_refused, errors, read_catalog_again
from test_hostile import data_rows as _rows
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.syntax import syntax_of
from pgwarden.testing.matrix import thin
from pgwarden.wire import messages as m

# test_hostile's fixtures: its database, pgwarden with its policies in front of it, a direct connection
hostile_db, server, hostile = test_hostile.hostile_db, test_hostile.server, test_hostile.hostile

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)


# ---------------------------------------------------------------------- relations PUBLIC may not read

ADMIN_READS = [
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT * FROM pg_catalog.pg_shadow",
    "SELECT (SELECT rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL LIMIT 1)",
    "SELECT x FROM ROWS FROM (unnest(ARRAY(SELECT rolpassword FROM pg_authid))) AS x",
    "COPY (SELECT * FROM pg_shadow) TO STDOUT",
    "COPY pg_authid TO STDOUT",
    "TABLE pg_largeobject",
    "SELECT * FROM information_schema._pg_user_mappings",
    "SELECT * FROM pg_user_mapping",
    "SELECT table_to_xml('pg_authid', true, true, '')",
    "SELECT query_to_xml('SELECT rolpassword FROM pg_authid', true, true, '')",
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ADMIN_READS)
def test_a_relation_public_may_not_read_is_administration(hostile, server, protocol, sql):
    server.reset()
    server.conn.execute("SELECT lo_from_bytea(0, 'private bytes')")
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "system administration" in errors(answer)[0].message


@pytest.fixture
def owners_views(hostile, server):
    server.conn.execute("CREATE OR REPLACE VIEW public.rt10_hashes AS SELECT rolname, rolpassword FROM pg_authid; "
                        "CREATE OR REPLACE VIEW public.rt10_roles AS SELECT rolname, rolpassword FROM pg_roles")
    read_catalog_again(hostile, "rt10 views made")
    yield server
    server.conn.execute("DROP VIEW IF EXISTS public.rt10_hashes, public.rt10_roles")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_view_of_the_databases_own_over_one_is_administration(hostile, owners_views, protocol):
    sql = "SELECT * FROM public.rt10_hashes"
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    (answer,) = _run(hostile, "design", protocol, "SELECT * FROM public.rt10_roles")
    assert not errors(answer), answer


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "SELECT rolname, rolpassword FROM pg_roles",  # the password is shown as ********
    "SELECT count(*) FROM pg_user",
    "SELECT count(*) FROM information_schema.tables",
    "SELECT count(*) FROM pg_settings",
    "SELECT count(*) FROM pg_class",
])
def test_the_views_public_may_read_over_them_still_run(hostile, server, protocol, sql):
    (answer,) = _run(hostile, "design", protocol, sql)
    assert not errors(answer), answer
    assert _rows(answer)


# ---------------------------------------------------------------------- writes the count does not see

LO_WIPE = """
CREATE OR REPLACE FUNCTION public.rt10_lo_wipe() RETURNS int LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM pg_catalog.pg_largeobject WHERE loid <> 0 RETURNING 1) SELECT 1 $$
"""
CATALOG_STATE = ("SELECT (SELECT count(*) FROM pg_catalog.pg_largeobject), "
                 "(SELECT count(*) FROM information_schema.sql_features)")


@pytest.fixture
def large_objects(server):
    server.reset()
    server.conn.execute(LO_WIPE)
    server.conn.execute("SELECT lo_from_bytea(0, 'abc') FROM generate_series(1, 5)")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt10_lo_wipe()")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DELETE FROM pg_largeobject WHERE loid <> 0",
    "DELETE FROM pg_catalog.pg_largeobject WHERE loid <> 0",
    "UPDATE pg_largeobject SET data = '' WHERE loid <> 0",
    "WITH d AS (DELETE FROM pg_largeobject WHERE loid <> 0 RETURNING 1) SELECT count(*) FROM d",
    "DELETE FROM information_schema.sql_features WHERE feature_id <> ''",
    "SELECT public.rt10_lo_wipe()",
])
def test_a_write_of_a_system_catalog_is_refused_under_rows_written(hostile, large_objects, protocol, sql):
    # (policy "capped": rows_written 2; pg_stat_xact_user_tables counts none of these rows)
    read_catalog_again(hostile, "rt10_lo_wipe made")
    before = large_objects.conn.execute(CATALOG_STATE).fetchone()
    assert before[0] == 5
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert large_objects.conn.execute(CATALOG_STATE).fetchone() == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_user_tables_are_still_counted(hostile, server, protocol):
    server.reset()
    wide, narrow = _run(hostile, "capped", protocol, "DELETE FROM public.things WHERE id <> 0",
                        "DELETE FROM public.things WHERE id = 1")
    assert "more than the 2 allowed" in errors(wide)[0].message, wide
    assert not errors(narrow), narrow
    assert server.state()["things"] == 4


@pytest.fixture
def other_database(server):
    server.pg.psql("DROP DATABASE IF EXISTS rt10_other")
    server.pg.psql("CREATE DATABASE rt10_other")
    server.pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) AS g", "rt10_other")
    yield server
    server.pg.psql("DROP DATABASE IF EXISTS rt10_other")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_drop_database_is_refused_under_rows_written(hostile, other_database, protocol):
    # (policy "capped" allows DDL; the 100 rows of another database went, counted as none)
    sql = "DROP DATABASE rt10_other"
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(other_database.conn, "SELECT count(*) FROM pg_database WHERE datname = 'rt10_other'") == 1


@pytest.mark.parametrize("sql", ["DROP DATABASE rt10_other WITH (FORCE)", "DROP DATABASE IF EXISTS rt10_other",
                                 "DROP EXTENSION tablefunc", "DROP EXTENSION IF EXISTS tablefunc RESTRICT"])
def test_drops_that_take_rows_with_them_are_uncounted(sql):
    # (an extension's own tables go with it; not run on the server: the corpus' database needs it)
    assert syntax_of(sql).uncounted


@pytest.fixture
def row_writer(hostile, server):
    server.reset()
    server.conn.execute("CREATE OR REPLACE FUNCTION public.rt10_ins(int) RETURNS int LANGUAGE sql VOLATILE "
                        "AS 'INSERT INTO public.plain_t VALUES ($1); SELECT $1'")
    read_catalog_again(hostile, "rt10_ins made")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt10_ins(int)")
    server.reset()


@pytest.mark.parametrize("portal", ["", "p1"])
@pytest.mark.parametrize("in_block", [False, True], ids=["implicit", "block"])
def test_a_portal_executed_a_row_at_a_time_is_counted_as_one_statement(hostile, row_writer, portal, in_block):
    # control: ten Executes of one row each (PortalSuspended between them), each row inserting
    # one row through a function: the count is the portal's, not each Execute's
    agent = Agent(hostile, GROUPS["capped"], "extended")
    try:
        if in_block:
            assert not errors(agent.run("BEGIN"))
        sql = "SELECT public.rt10_ins(g) FROM generate_series(1, 10) AS g"
        wire = m.Parse("", sql).encode() + m.Bind(portal, "").encode()
        wire += m.Execute(portal, 1).encode() * 10 + m.Sync().encode()
        agent.rc.send(wire)
        answer = agent.rc.until_ready()
        if in_block:
            agent.run("COMMIT")
    finally:
        agent.close()
    assert "more than the 2 allowed" in errors(answer)[0].message, answer
    assert _one(row_writer.conn, "SELECT count(*) FROM public.plain_t") == 0


# ---------------------------------------------------------------------- writes of the system catalogs

CATALOG_OBJECTS = """
CREATE OR REPLACE FUNCTION public.rt10_f() RETURNS int LANGUAGE sql AS 'SELECT 1';
COMMENT ON FUNCTION public.rt10_f() IS 'kept';
CREATE OR REPLACE VIEW public.rt10_descs AS SELECT * FROM pg_catalog.pg_description;
"""
OBJECTS_STATE = ("SELECT (SELECT prosrc FROM pg_proc WHERE proname = 'rt10_f'), "
                 "(SELECT count(*) FROM pg_description WHERE description = 'kept')")


@pytest.fixture
def catalog_objects(hostile, server):
    server.reset()
    server.conn.execute(CATALOG_OBJECTS)
    read_catalog_again(hostile, "rt10 objects made")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt10_f(); DROP VIEW IF EXISTS public.rt10_descs")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "UPDATE pg_catalog.pg_proc SET prosrc = 'SELECT 42' WHERE proname = 'rt10_f'",  # CREATE OR REPLACE
    "UPDATE pg_proc SET prosrc = 'SELECT 42' WHERE proname = 'rt10_f'",
    "DELETE FROM pg_catalog.pg_description WHERE description = 'kept'",  # COMMENT ... IS NULL
    "WITH d AS (DELETE FROM pg_description WHERE description = 'kept' RETURNING 1) SELECT count(*) FROM d",
    "MERGE INTO pg_proc p USING (SELECT 'rt10_f'::name AS n) s ON p.proname = s.n "
    "WHEN MATCHED THEN UPDATE SET prosrc = 'SELECT 42'",
    "DELETE FROM public.rt10_descs WHERE description = 'kept'",  # an updatable view over pg_description
])
def test_a_write_of_a_system_catalog_is_a_schema_change(hostile, catalog_objects, protocol, sql):
    # (policy "design": ddl and system blocked; the upstream role is a superuser, who may write
    # pg_proc, pg_trigger, pg_class... directly: a function replaced, a trigger dropped)
    before = catalog_objects.conn.execute(OBJECTS_STATE).fetchone()
    assert before == ("SELECT 1", 1)
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "DDL" in errors(answer)[0].message
    assert catalog_objects.conn.execute(OBJECTS_STATE).fetchone() == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["VACUUM pg_catalog.pg_class", "ANALYZE pg_catalog.pg_description"])
def test_maintenance_of_a_system_catalog_is_no_write_of_it(hostile, server, protocol, sql):
    (answer,) = _run(hostile, "design", protocol, sql)
    assert not errors(answer), answer


# ---------------------------------------------------------------------- a function's own search_path

PATHS = """
CREATE OR REPLACE FUNCTION public.rt10_sp(int) RETURNS text LANGUAGE sql STABLE SET search_path = secret
    AS 'SELECT string_agg(n::text, $$,$$) FROM things';
CREATE OR REPLACE FUNCTION public.rt10_pl() RETURNS text LANGUAGE plpgsql STABLE SET search_path = secret, public
    AS 'BEGIN RETURN (SELECT string_agg(n::text, $$,$$) FROM things); END';
CREATE OR REPLACE FUNCTION public.rt10_quoted() RETURNS text LANGUAGE sql STABLE SET search_path = "SECRET", secret
    AS 'SELECT string_agg(n::text, $$,$$) FROM things';
CREATE OR REPLACE FUNCTION public.rt10_ok() RETURNS text LANGUAGE sql STABLE SET search_path = public
    AS 'SELECT string_agg(n::text, $$,$$) FROM things';
CREATE OR REPLACE FUNCTION public.rt10_mover() RETURNS text LANGUAGE plpgsql STABLE
    AS $f$ BEGIN RETURN set_config('search_path', 'secret', false); END $f$;
CREATE OR REPLACE FUNCTION public.rt10_mover_sql() RETURNS text LANGUAGE sql STABLE
    AS $f$ SELECT set_config('search_path', 'secret', false) $f$;
CREATE OR REPLACE FUNCTION public.rt10_trg() RETURNS trigger LANGUAGE plpgsql
    AS $f$ BEGIN PERFORM set_config('search_path', 'secret', false); RETURN NEW; END $f$;
DROP TABLE IF EXISTS public.rt10_t;
CREATE TABLE public.rt10_t (id int);
CREATE TRIGGER rt10_t_trg BEFORE INSERT ON public.rt10_t FOR EACH ROW EXECUTE FUNCTION public.rt10_trg();
CREATE OR REPLACE FUNCTION public.rt10_work_mem() RETURNS text LANGUAGE plpgsql STABLE
    AS $f$ BEGIN RETURN set_config('work_mem', '8MB', false); END $f$;
CREATE OR REPLACE FUNCTION public.rt10_moves() RETURNS text LANGUAGE plpgsql STABLE
    AS $f$ BEGIN PERFORM set_config('search_path', 'secret', true);
                 RETURN (SELECT string_agg(n::text, ',') FROM things); END $f$;
"""


@pytest.fixture
def own_paths(hostile, server):
    server.reset()
    server.conn.execute(PATHS)
    read_catalog_again(hostile, "rt10 functions made")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt10_sp(int), public.rt10_pl(), public.rt10_quoted(), "
                        "public.rt10_ok(), public.rt10_moves(), public.rt10_mover(), public.rt10_mover_sql(), "
                        "public.rt10_work_mem(); DROP TABLE IF EXISTS public.rt10_t; "
                        "DROP FUNCTION IF EXISTS public.rt10_trg()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "SELECT public.rt10_sp(1)",
    "SELECT public.rt10_pl()",
    "SELECT public.rt10_quoted()",
    "SELECT id FROM public.things WHERE public.rt10_sp(id) IS NOT NULL",
    "SELECT public.rt10_moves()",  # its body moves the path, then reads
])
def test_a_body_is_read_under_its_functions_own_search_path(hostile, own_paths, protocol, sql):
    # (the session's path is public's: `things` there is public.things; in the body, secret.things,
    # whose values `string_agg` returned: 1001,1002,1003)
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "secret.things" in errors(answer)[0].message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DO $$ DECLARE r text; BEGIN SET LOCAL search_path = secret; "
    "SELECT string_agg(n::text, ',') INTO r FROM things; RAISE NOTICE 'got %', r; END $$",
    "DO $$ DECLARE r text; BEGIN PERFORM set_config('search_path', 'secret', true); "
    "SELECT string_agg(n::text, ',') INTO r FROM things; RAISE NOTICE 'got %', r; END $$",
    "DO $$ DECLARE r text; BEGIN SET search_path = secret; r := (SELECT string_agg(n::text, ',') FROM things); "
    "RAISE NOTICE 'got %', r; RESET search_path; END $$",
])
def test_a_do_block_that_moves_the_search_path_reads_under_both(hostile, server, protocol, sql):
    # (policy "design" allows DO; the NOTICE had carried secret.things' values: got 1001,1002,1003)
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "secret.things" in errors(answer)[0].message
    assert not [x for x in answer if isinstance(x, m.NoticeResponse)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("steps", [
    ("SELECT public.rt10_mover()", "SELECT string_agg(n::text, ',') FROM things"),
    ("SELECT public.rt10_mover_sql()", "SELECT string_agg(n::text, ',') FROM things"),
    ("SELECT public.rt10_mover(); SELECT string_agg(n::text, ',') FROM things",),
    ("DO $$ DECLARE r text; BEGIN PERFORM public.rt10_mover(); "
     "SELECT string_agg(n::text, ',') INTO r FROM things; RAISE NOTICE 'got %', r; END $$",),
    ("INSERT INTO public.rt10_t VALUES (1)", "SELECT string_agg(n::text, ',') FROM things"),  # its trigger
    ("BEGIN", "DECLARE c CURSOR FOR SELECT public.rt10_mover()", "FETCH ALL FROM c",
     "SELECT string_agg(n::text, ',') FROM things"),
], ids=["plpgsql", "sql", "one-string", "do", "trigger", "cursor"])
def test_a_function_that_moves_the_search_path_makes_it_uncertain(hostile, own_paths, protocol, steps):
    # (a STABLE function whose body calls set_config('search_path', 'secret', false): its kinds
    # are "set", which the policy allows; the path it leaves was not followed, and `things` was
    # read as public.things while the server read secret.things: 1001,1002,1003)
    if protocol == "extended" and ";" in steps[0] and "DO" not in steps[0]:
        pytest.skip("one Parse holds one statement")
    answers = _run(hostile, "design", protocol, *steps)
    assert_refused(answers[-1], steps[-1])
    assert "secret.things" in errors(answers[-1])[0].message
    assert not any(b"1001" in value for answer in answers for row in _rows(answer) for value in row if value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_function_that_sets_another_setting_leaves_the_path_alone(hostile, own_paths, protocol):
    first, then = _run(hostile, "design", protocol, "SELECT public.rt10_work_mem()",
                       "SELECT string_agg(n::text, ',') FROM things")
    assert not errors(first), first
    assert _rows(then) == [(b"1,2,3,4,5",)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_do_block_that_keeps_the_search_path_still_runs(hostile, server, protocol):
    (answer,) = _run(hostile, "design", protocol,
                     "DO $$ BEGIN RAISE NOTICE 'n %', (SELECT count(*) FROM things); END $$")
    assert not errors(answer), answer


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_body_under_a_harmless_search_path_still_runs(hostile, own_paths, protocol):
    (answer,) = _run(hostile, "design", protocol, "SELECT public.rt10_ok()")
    assert not errors(answer), answer
    assert _rows(answer) == [(b"1,2,3,4,5",)]


# ---------------------------------------------------------------------- controls

CONTROLS = [
    "MERGE INTO public.things t USING (SELECT 1 AS id) s ON true WHEN MATCHED THEN DELETE",
    "MERGE INTO public.things t USING secret.things s ON t.id = s.id WHEN MATCHED THEN UPDATE SET n = s.n",
    "SELECT pg_terminate_backend({victim})",
    "COMMENT ON TABLE public.things IS 'x'",
    "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC",
    "REFRESH MATERIALIZED VIEW public.rt10_mv",
    "PREPARE TRANSACTION 'rt10'",
    "SELECT pg_reload_conf()",
    "SELECT * FROM public.things TABLESAMPLE system (100) REPEATABLE (public.purge())",
    "SELECT * FROM public.things ORDER BY id OFFSET 0 ROWS FETCH FIRST (SELECT public.purge()) ROWS ONLY",
    "DECLARE c CURSOR WITH HOLD FOR SELECT public.purge()",
    "SELECT set_config('role', 'postgres', false)",
    "SET SESSION AUTHORIZATION DEFAULT",
    "SELECT pg_catalog.set_config('session_replication_role', 'replica', false)",
    "SELECT pg_stat_file('postgresql.conf')",
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT pg_import_system_collations('pg_catalog')",
    # pg_settings' UPDATE rule calls set_config with the row's name
    "UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
    "UPDATE pg_settings SET setting = 'secret, public' WHERE name = 'search_path'",
]


@pytest.fixture
def matview(server):
    server.conn.execute("CREATE MATERIALIZED VIEW IF NOT EXISTS public.rt10_mv AS SELECT public.purge() AS n "
                        "WITH NO DATA")
    yield server
    server.conn.execute("DROP MATERIALIZED VIEW IF EXISTS public.rt10_mv")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", CONTROLS)
def test_controls_stay_refused(hostile, server, matview, protocol, sql):
    server.reset()
    read_catalog_again(hostile, "rt10_mv made")
    sql = sql.replace("{victim}", str(server.victim.info.backend_pid))
    before = server.state()
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert server.state() == before
