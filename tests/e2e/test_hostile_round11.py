"""Red team, round eleven: blocking and limits, where the text shows less than the server does.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **Rows changed by DDL under `rows_written`** (a policy allowing DDL, `rows_written: 2`):
  `REFRESH MATERIALIZED VIEW public.rt11_mv` (and `... CONCURRENTLY`) emptied a view of 5 rows,
  counted as none (the new heap's inserts go with the transient relation; CONCURRENTLY's diff is
  not the statement's own count); `ALTER TYPE public.rt11_mood RENAME VALUE 'ok' TO 'gone'` changed
  the value 10 rows hold; `ALTER TABLE public.things ADD COLUMN z float DEFAULT random()` (and
  `... GENERATED ALWAYS AS IDENTITY`) rewrote every row with a new value. Each is now among the
  statements that destroy or rewrite rows uncounted (`Syntax.uncounted`; an added column's default
  is judged by the volatility pg_proc gives its functions, `resolve._rewrites`: a constant or
  `now()` is computed once, no row rewritten, and still runs).
* **An event trigger enabled under `rows_written`**: `ALTER EVENT TRIGGER rt11_et ENABLE` (ALWAYS,
  REPLICA) armed the owner's disabled event trigger, whose function then deleted 5 rows at the
  agent's next `CREATE TABLE`, uncounted (round nine refused arming one by CREATE EVENT TRIGGER).
  The text does not name the function it arms: it is now `unknown` and leaves work for after the
  count (`Syntax.after_count`). And an event trigger the owner armed ran its function (5 rows
  deleted) at the agent's `CREATE TABLE`, `COMMENT ON`, `GRANT` (round ten's known limit): the
  catalog now reads the enabled event triggers' functions (pg_event_trigger, `Catalog.event_triggers`),
  and any DDL or GRANT while one may write leaves writes after the count (`_Resolver._event_triggers`).
  Outside the limit too: the owner's event trigger deleting secret.things ran at the agent's `CREATE
  TABLE` under a policy refusing secret.* (an INSERT into a table whose trigger does so is refused);
  DDL now runs the enabled event triggers' functions as a write runs its table's triggers.
* **An index's operator class**: a btree operator class of the database's own whose comparison
  function deleted secret.things ran at `INSERT INTO public.rt11_oc VALUES (3)`, at an index scan
  (`SELECT ... WHERE a = 1`) and at an UPDATE, under a policy refusing writes of secret.*: the text
  names no function. The catalog's `x` effects (what any statement naming the table runs) now
  carry the functions of the database's own in its indexes' operator families (support functions,
  operators' functions: `queries.EFFECTS`). And `CREATE INDEX ... (a public.rt11_ops)` (an EXCLUDE
  constraint's too) ran it over the table's rows under a policy allowing DDL: the operator classes'
  functions are now read too (`Catalog.operator_classes`), and an index element naming one runs
  them (`Syntax.operator_classes`).
* **A view's function's writes**: reading a view runs the functions its definition calls, judged
  by their kinds, but what their bodies wrote was dropped (only what they read was kept):
  `SELECT * FROM public.purging` (a view over a function deleting every row of public.things)
  passed `where: absent` under a policy that allows volatile functions, and a view over a function
  deleting from `pg_largeobject` passed `rows_written` (round ten's catalog writes). The writes,
  their WHERE and their indirect writes are now the statement's (`_Resolver._view`).
* **`set_config` where the text shows no arguments**: the built-in `set_config` called by a view's
  definition, a column's default, a CHECK constraint (a policy's expression, a trigger's WHEN, an
  aggregate's transition function) changed a setting no guard saw: `SELECT * FROM public.rt11_tcv`
  over `set_config('track_counts', 'off', false), public.rt11_del(), set_config('track_counts',
  'on', false)` deleted 5 rows under `rows_written: 2`, counted as none (an INSERT whose defaults or
  whose CHECK did the same too); a view renaming the session `pgwarden:agent-2` and naming it back
  within one row escaped the relay's ParameterStatus check (`pg_stat_activity` showed the other
  name meanwhile). Such a call now changes a setting named at run time (`("*", COMPUTED)`, the
  search_path too): refused by the guards (`set_config with a setting name computed at run time`).
* **A foreign table made and read before the catalog shows it**: `BEGIN; CREATE FOREIGN TABLE
  public.rt11_ft (line text) SERVER files OPTIONS (program '...')`, then `SELECT * FROM
  public.rt11_ft`, ran the program (its output came back) under a policy refusing `copy_program`
  and allowing DDL, and `OPTIONS (filename '/etc/hostname')` sent the file's lines under one
  refusing `server_files`; so did the one-string form. The table was known by name only (a
  relation made in the open transaction has no effects yet). A foreign table's `program` and
  `filename` options, made or changed (`CREATE FOREIGN TABLE`, `ALTER FOREIGN TABLE ... OPTIONS`),
  are now judged when set: `copy_program`, `server_files`.
* **The built-in views over user mappings**: round ten made reading `pg_user_mapping` and
  `information_schema._pg_user_mappings` `system`, but `SELECT umoptions FROM pg_user_mappings` and
  `information_schema.user_mapping_options` still returned `{user=u,password=pw-rt11-secret}` (the
  server shows a mapping's options to a superuser). A view over pg_user_mapping, built-in or not,
  is now `system` (`_Resolver._view`).
* **Settings kept for the next session**: `ALTER DATABASE hostile SET session_replication_role =
  replica` is DDL; under a policy that allows DDL and blocks `system`, it passed, and the agent's
  next session ran with every trigger off (an audit trigger's row not written). A setting ALTER
  DATABASE / ALTER ROLE ... SET keeps is now judged as a SET of it is (`Syntax.stored_settings`):
  `system` for a setting a plain user cannot set (`log_statement`, `session_replication_role`,
  `track_counts`), `role` for `role`.

Controls (refused or counted before this round, kept): VACUUM FULL, REINDEX CONCURRENTLY and CREATE
INDEX CONCURRENTLY of a table whose index expression writes (the server refuses them in pgwarden's
counting pipeline); CLUSTER, REINDEX, ANALYZE and CREATE INDEX over such an expression (counted:
the statement wrote 5 rows); CREATE TABLE AS, SELECT INTO, CREATE MATERIALIZED VIEW (counted);
ALTER COLUMN ... TYPE ... USING, in a DO block too, and ALTER TYPE ... DROP / ALTER ATTRIBUTE ...
CASCADE (uncounted); `set_config('track_counts', ...)` in SQL handed to `query_to_xml`; a database
whose sessions start with `track_counts = off` (the count refuses) or `standard_conforming_strings =
off` (read that way) or a search_path of `secret` (followed); `COPY (DELETE ... RETURNING) TO STDOUT`
(counted, its rows held); `SET stats_fetch_consistency = snapshot` before a write (the count reads
the pending counts, not the snapshot); an aggregate whose final function is `pg_read_file`. Also
seen: the FunctionCall message (refused whatever the policy). Not bypasses: `SET
transform_null_equals = on` then `WHERE NOT (n = NULL)` is `n IS NOT NULL` (the known tautology
limit); `#variable_conflict use_column` makes `n = id` compare two columns, a data filter either way.

False refusals noticed (kept, fail closed): under `rows_written`, every DDL while an enabled event
trigger's function may write, whether or not its tag filter matches (`ALTER EVENT TRIGGER ...
DISABLE` included). (`ALTER TABLE ... ADD COLUMN z serial` was `unknown`, the analysis knowing no
type `serial`: fixed after the round, tests/unit/test_hostile_analysis.py.)
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import DB, assert_refused, errors, read_catalog_again
from test_hostile import data_rows as _rows
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.syntax import syntax_of
from pgwarden.testing.matrix import thin

# test_hostile's fixtures: its database, pgwarden with its policies in front of it, a direct connection
hostile_db, server, hostile = test_hostile.hostile_db, test_hostile.server, test_hostile.hostile

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)


_made = test_hostile.made


THINGS = "SELECT count(*) FROM public.things"
# A function deleting every row of public.things through a WHERE that filters (so that only the
# count, not `where: absent`, stands in its way)
DELETER = """CREATE OR REPLACE FUNCTION public.rt11_del() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things WHERE id > 0 RETURNING 1) SELECT count(*) FROM d $$"""


# ---------------------------------------------------------------------- rows changed by DDL

@pytest.fixture
def matview(hostile, server):
    _made(hostile, server, "DROP MATERIALIZED VIEW IF EXISTS public.rt11_mv",
          "CREATE MATERIALIZED VIEW public.rt11_mv AS SELECT id, n FROM public.things",
          "CREATE UNIQUE INDEX ON public.rt11_mv (id)", "DELETE FROM public.things")
    yield server
    server.conn.execute("DROP MATERIALIZED VIEW IF EXISTS public.rt11_mv")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["REFRESH MATERIALIZED VIEW public.rt11_mv",
                                 "REFRESH MATERIALIZED VIEW CONCURRENTLY public.rt11_mv"])
def test_refresh_materialized_view_is_refused_under_rows_written(hostile, matview, protocol, sql):
    # (policy "capped": DDL allowed, rows_written 2; the view's 5 rows went, counted as none)
    assert _one(matview.conn, "SELECT count(*) FROM public.rt11_mv") == 5
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(matview.conn, "SELECT count(*) FROM public.rt11_mv") == 5


@pytest.fixture
def moods(hostile, server):
    _made(hostile, server, "DROP TABLE IF EXISTS public.rt11_e", "DROP TYPE IF EXISTS public.rt11_mood",
          "CREATE TYPE public.rt11_mood AS ENUM ('ok', 'bad')", "CREATE TABLE public.rt11_e (m public.rt11_mood)",
          "INSERT INTO public.rt11_e SELECT 'ok' FROM generate_series(1, 10)")
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt11_e; DROP TYPE IF EXISTS public.rt11_mood")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_renaming_an_enum_value_is_refused_under_rows_written(hostile, moods, protocol):
    sql = "ALTER TYPE public.rt11_mood RENAME VALUE 'ok' TO 'gone'"
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(moods.conn, "SELECT count(*) FROM public.rt11_e WHERE m::text = 'ok'") == 10
    (answer,) = _run(hostile, "capped", protocol, "ALTER TYPE public.rt11_mood ADD VALUE IF NOT EXISTS 'meh'")
    assert not errors(answer), answer  # a new label changes no row


ADDED = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'rt11_z'"


@pytest.fixture
def no_added_column(server):
    server.reset()
    yield server
    server.conn.execute("ALTER TABLE public.things DROP COLUMN IF EXISTS rt11_z")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "ALTER TABLE public.things ADD COLUMN rt11_z float DEFAULT random()",
    "ALTER TABLE public.things ADD COLUMN rt11_z uuid DEFAULT gen_random_uuid()",
    "ALTER TABLE public.things ADD COLUMN rt11_z int GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE public.things ADD COLUMN rt11_z int GENERATED ALWAYS AS (n * 2) STORED",
])
def test_a_column_added_with_a_value_per_row_is_refused_under_rows_written(hostile, no_added_column, protocol, sql):
    # (the server rewrites the table, every row written with its new value, none counted)
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(no_added_column.conn, ADDED) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "ALTER TABLE public.things ADD COLUMN rt11_z timestamptz DEFAULT now()",  # computed once
    "ALTER TABLE public.things ADD COLUMN rt11_z int DEFAULT 1 + 2",
    "ALTER TABLE public.things ADD COLUMN rt11_z text",
])
def test_a_column_added_with_one_value_still_runs(hostile, no_added_column, protocol, sql):
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert not errors(answer), answer
    assert _one(no_added_column.conn, ADDED) == 1


@pytest.mark.parametrize("sql", ["ALTER TABLE t ADD COLUMN z serial", "ALTER TABLE t ADD COLUMN z bigserial",
                                 "ALTER TABLE t ADD COLUMN z int DEFAULT nextval('s')",
                                 "ALTER TABLE t ADD z float DEFAULT random() * 2",
                                 "ALTER TABLE t ALTER COLUMN n TYPE int USING random()::int"])
def test_added_columns_computed_per_row_are_uncounted(sql):
    assert analyze_sql(sql).uncounted


@pytest.mark.parametrize("sql", ["ALTER TABLE t ADD COLUMN z int DEFAULT 5", "ALTER TABLE t ADD COLUMN z text DEFAULT 'x'",
                                 "ALTER TABLE t ADD COLUMN z timestamptz DEFAULT now()",
                                 "ALTER TYPE t ADD VALUE 'x'", "ALTER EVENT TRIGGER e DISABLE"])
def test_ddl_that_rewrites_no_row_is_counted_as_before(sql):
    analysis = analyze_sql(sql)
    assert not analysis.uncounted and not analysis.after_count


EVENT_TRIGGER = [
    "DROP EVENT TRIGGER IF EXISTS rt11_et",
    "CREATE OR REPLACE FUNCTION public.rt11_evt() RETURNS event_trigger LANGUAGE plpgsql "
    "AS $$ BEGIN DELETE FROM public.things WHERE id > 0; END $$",
    "CREATE EVENT TRIGGER rt11_et ON ddl_command_end EXECUTE FUNCTION public.rt11_evt()",
    "ALTER EVENT TRIGGER rt11_et DISABLE",
]


@pytest.fixture
def disabled_event_trigger(hostile, server):
    _made(hostile, server, *EVENT_TRIGGER)
    yield server
    server.conn.execute("DROP EVENT TRIGGER IF EXISTS rt11_et; DROP TABLE IF EXISTS public.rt11_x; "
                        "DROP FUNCTION IF EXISTS public.rt11_evt()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", ["ENABLE", "ENABLE ALWAYS", "ENABLE REPLICA"])
def test_enabling_an_event_trigger_is_refused_under_rows_written(hostile, disabled_event_trigger, protocol, how):
    # (then `CREATE TABLE public.rt11_x (a int)` ran its function: 5 rows deleted, uncounted)
    sql = f"ALTER EVENT TRIGGER rt11_et {how}"
    enable, ddl = _run(hostile, "capped", protocol, sql, "CREATE TABLE public.rt11_x (a int)")
    assert_refused(enable, sql)
    assert not errors(ddl), ddl  # (a disabled event trigger runs nothing)
    assert _one(disabled_event_trigger.conn, "SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'rt11_et'") == "D"
    assert _one(disabled_event_trigger.conn, THINGS) == 5
    (answer,) = _run(hostile, "capped", protocol, "ALTER EVENT TRIGGER rt11_et DISABLE")
    assert not errors(answer), answer


@pytest.fixture
def armed_event_trigger(hostile, server):
    _made(hostile, server, *EVENT_TRIGGER[:3])
    yield server
    server.conn.execute("DROP EVENT TRIGGER IF EXISTS rt11_et; DROP TABLE IF EXISTS public.rt11_x; "
                        "DROP FUNCTION IF EXISTS public.rt11_evt()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["CREATE TABLE public.rt11_x (a int)", "COMMENT ON TABLE public.plain_t IS 'x'",
                                 "GRANT SELECT ON public.plain_t TO PUBLIC"])
def test_ddl_under_an_event_trigger_that_writes_is_refused_under_rows_written(hostile, armed_event_trigger,
                                                                              protocol, sql):
    # (the owner's event trigger, enabled: its function deleted public.things' 5 rows at the agent's
    # DDL, which no count sees; round ten's known limit)
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "after the count" in errors(answer)[0].message
    assert _one(armed_event_trigger.conn, THINGS) == 5
    assert _one(armed_event_trigger.conn, "SELECT to_regclass('public.rt11_x') IS NULL")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ddl_without_an_event_trigger_still_runs_under_rows_written(hostile, server, protocol):
    server.reset()
    read_catalog_again(hostile, "no event trigger")
    try:
        (answer,) = _run(hostile, "capped", protocol, "CREATE TABLE public.rt11_x (a int)")
        assert not errors(answer), answer
    finally:
        server.conn.execute("DROP TABLE IF EXISTS public.rt11_x")


SECRET_EVENT_TRIGGER = [
    "DROP EVENT TRIGGER IF EXISTS rt11_et",
    "CREATE OR REPLACE FUNCTION public.rt11_evt() RETURNS event_trigger LANGUAGE plpgsql "
    "AS $$ BEGIN DELETE FROM secret.things WHERE id > 0; END $$",
    "CREATE EVENT TRIGGER rt11_et ON ddl_command_end EXECUTE FUNCTION public.rt11_evt()",
]


@pytest.fixture
def secret_event_trigger(request, hostile, server):
    _made(hostile, server, *SECRET_EVENT_TRIGGER, *request.param)
    yield server
    server.conn.execute("DROP EVENT TRIGGER IF EXISTS rt11_et; DROP TABLE IF EXISTS public.rt11_x; "
                        "DROP FUNCTION IF EXISTS public.rt11_evt()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("policy", ["migrators", "truncators"])
@pytest.mark.parametrize("secret_event_trigger", [()], indirect=True)
def test_ddl_runs_the_enabled_event_triggers_functions(hostile, secret_event_trigger, protocol, policy):
    # (policies refusing secret.* and allowing DDL: the owner's event trigger deleted secret.things'
    # 3 rows at the agent's CREATE TABLE, as an INSERT into a table whose trigger does is refused)
    sql = "CREATE TABLE public.rt11_x (a int)"
    (answer,) = _run(hostile, policy, protocol, sql)
    assert_refused(answer, sql)
    assert "secret.things" in errors(answer)[0].message
    assert _one(secret_event_trigger.conn, "SELECT count(*) FROM secret.things") == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("secret_event_trigger", [("ALTER EVENT TRIGGER rt11_et DISABLE",)], indirect=True)
def test_ddl_under_a_disabled_event_trigger_runs(hostile, secret_event_trigger, protocol):
    (answer,) = _run(hostile, "migrators", protocol, "CREATE TABLE public.rt11_x (a int)")
    assert not errors(answer), answer
    assert _one(secret_event_trigger.conn, "SELECT count(*) FROM secret.things") == 3


# ---------------------------------------------------------------------- an index's operator class

OPERATOR_CLASS = [
    "DROP TABLE IF EXISTS public.rt11_oc",
    "DROP OPERATOR FAMILY IF EXISTS public.rt11_ops USING btree CASCADE",
    "CREATE OR REPLACE FUNCTION public.rt11_cmp(int, int) RETURNS int LANGUAGE plpgsql "
    "AS $$ BEGIN DELETE FROM secret.things; RETURN btint4cmp($1, $2); END $$",
    "CREATE OPERATOR CLASS public.rt11_ops FOR TYPE int USING btree AS OPERATOR 1 <, OPERATOR 2 <=, "
    "OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 public.rt11_cmp(int, int)",
    "CREATE TABLE public.rt11_oc (a int)",
    "CREATE INDEX rt11_oc_i ON public.rt11_oc (a public.rt11_ops)",
    "INSERT INTO public.rt11_oc VALUES (1), (2)",
    "DELETE FROM secret.things",
    "INSERT INTO secret.things SELECT g, 1000 + g FROM generate_series(1, 3) g",
]
SECRET = "SELECT count(*) FROM secret.things"


@pytest.fixture
def operator_class(hostile, server):
    _made(hostile, server, *OPERATOR_CLASS)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt11_oc; "
                        "DROP OPERATOR FAMILY IF EXISTS public.rt11_ops USING btree CASCADE; "
                        "DROP FUNCTION IF EXISTS public.rt11_cmp(int, int)")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["INSERT INTO public.rt11_oc VALUES (3)", "SELECT * FROM public.rt11_oc WHERE a = 1",
                                 "UPDATE public.rt11_oc SET a = 4 WHERE a = 2"])
def test_an_index_operator_class_function_runs_for_the_statement(hostile, operator_class, protocol, sql):
    # (policy "design": the btree's comparison function, of the database's own, ran at the INSERT
    # (and the index scan) and deleted secret.things' rows; the text names no function)
    assert _one(operator_class.conn, SECRET) == 3
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert _one(operator_class.conn, SECRET) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "CREATE INDEX rt11_oc2_i ON public.rt11_oc2 (a public.rt11_ops)",
    "CREATE INDEX rt11_oc2_i ON public.rt11_oc2 (a rt11_ops)",
    "ALTER TABLE public.rt11_oc2 ADD CONSTRAINT rt11_oc2_x EXCLUDE USING btree (a public.rt11_ops WITH =)",
])
def test_an_index_built_with_an_operator_class_of_the_databases_own(hostile, operator_class, protocol, sql):
    # (policy "migrators": DDL allowed, secret.* refused; building the index ran the comparison
    # function over the rows: secret.things emptied)
    operator_class.conn.execute("DROP TABLE IF EXISTS public.rt11_oc2; CREATE TABLE public.rt11_oc2 (a int); "
                                "INSERT INTO public.rt11_oc2 VALUES (1), (2)")
    read_catalog_again(hostile, "rt11_oc2 made")
    try:
        (answer,) = _run(hostile, "migrators", protocol, sql)
        assert_refused(answer, sql)
        assert _one(operator_class.conn, SECRET) == 3
    finally:
        operator_class.conn.execute("DROP TABLE IF EXISTS public.rt11_oc2")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_index_built_with_a_built_in_operator_class_still_runs(hostile, server, protocol):
    server.reset()
    try:
        (answer,) = _run(hostile, "migrators", protocol, "CREATE INDEX rt11_tp ON public.things ((n::text) text_pattern_ops)")
        assert not errors(answer), answer
    finally:
        server.conn.execute("DROP INDEX IF EXISTS public.rt11_tp")


# ---------------------------------------------------------------------- a foreign table made and read at once

@pytest.fixture
def no_foreign_table(server):
    server.reset()
    yield server
    server.conn.execute("DROP FOREIGN TABLE IF EXISTS public.rt11_ft")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("option", ["program 'touch {marker}; echo hi'", "filename '/etc/hostname'"],
                         ids=["program", "filename"])
def test_a_foreign_table_made_in_a_transaction_and_read(hostile, no_foreign_table, protocol, option):
    # (policy "migrators": DDL allowed, `copy_program` and `server_files` refused; file_fdw's
    # `files` server exists. The table, unknown to the catalog until the commit, was read: the
    # program ran ("hi" came back), the file's lines were sent)
    create = ("CREATE FOREIGN TABLE public.rt11_ft (line text) SERVER files OPTIONS ("
              + option.format(marker=test_hostile.MARKER) + ")")
    _, made, read, _ = _run(hostile, "migrators", protocol, "BEGIN", create, "SELECT * FROM public.rt11_ft",
                            "ROLLBACK")
    assert_refused(made, create)
    assert errors(read) and not _rows(read), read
    assert not no_foreign_table.state()["marker_file"]


@pytest.mark.parametrize("option", ["program 'touch {marker}; echo hi'", "filename '/etc/hostname'"],
                         ids=["program", "filename"])
def test_a_foreign_table_made_and_read_in_one_string(hostile, no_foreign_table, option):
    sql = ("CREATE FOREIGN TABLE public.rt11_ft (line text) SERVER files OPTIONS ("
           + option.format(marker=test_hostile.MARKER) + "); SELECT * FROM public.rt11_ft")
    (answer,) = _run(hostile, "migrators", "simple", sql)
    assert_refused(answer, sql)
    assert not no_foreign_table.state()["marker_file"]
    assert _one(no_foreign_table.conn, "SELECT to_regclass('public.rt11_ft') IS NULL")


@pytest.mark.parametrize("sql", ["ALTER FOREIGN TABLE public.host_file OPTIONS (DROP filename, ADD program 'id')",
                                 "ALTER FOREIGN TABLE public.host_file OPTIONS (SET filename '/etc/passwd')",
                                 "CREATE FOREIGN TABLE t (line text) SERVER files OPTIONS (program 'id')"])
def test_arming_a_program_or_a_file_is_what_it_arms(sql):
    assert analyze_sql(sql).kinds & {"copy_program", "server_files"}


# ---------------------------------------------------------------------- a view's function's writes

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_views_function_that_deletes_every_row_is_a_delete_without_where(hostile, server, protocol):
    # (policy "bodies": volatile functions allowed, `where: absent` refused; `SELECT public.purge()`
    # was refused, `SELECT * FROM public.purging`, the view over it, deleted the 5 rows)
    server.reset()
    for sql in ("SELECT public.purge()", "SELECT * FROM public.purging"):
        (answer,) = _run(hostile, "bodies", protocol, sql)
        assert_refused(answer, sql)
        assert "without a WHERE" in errors(answer)[0].message
    assert _one(server.conn, THINGS) == 5


LO_VIEW = [
    "CREATE OR REPLACE FUNCTION public.rt11_lo() RETURNS int LANGUAGE sql VOLATILE "
    "AS $$ WITH d AS (DELETE FROM pg_catalog.pg_largeobject WHERE loid <> 0 RETURNING 1) SELECT 1 $$",
    "CREATE OR REPLACE VIEW public.rt11_lov AS SELECT public.rt11_lo() AS n",
    "SELECT lo_from_bytea(0, 'abc') FROM generate_series(1, 5)",
]


@pytest.fixture
def lo_view(hostile, server):
    _made(hostile, server, *LO_VIEW)
    yield server
    server.conn.execute("DROP VIEW IF EXISTS public.rt11_lov; DROP FUNCTION IF EXISTS public.rt11_lo()")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_views_function_writing_a_system_catalog_is_refused_under_rows_written(hostile, lo_view, protocol):
    # (round ten refused `SELECT public.rt10_lo_wipe()`; through a view the 5 rows went uncounted)
    sql = "SELECT * FROM public.rt11_lov"
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(lo_view.conn, "SELECT count(*) FROM pg_largeobject") == 5


# ---------------------------------------------------------------------- set_config the text does not show

UNSEEN_SET_CONFIG = {
    "view": ("SELECT * FROM public.rt11_tcv", [
        "CREATE OR REPLACE VIEW public.rt11_tcv AS SELECT set_config('track_counts', 'off', false) AS a, "
        "public.rt11_del() AS b, set_config('track_counts', 'on', false) AS c"]),
    "default": ("INSERT INTO public.rt11_d (id) VALUES (1)", [
        "DROP TABLE IF EXISTS public.rt11_d",
        "CREATE TABLE public.rt11_d (id int, a text DEFAULT set_config('track_counts', 'off', false), "
        "b bigint DEFAULT public.rt11_del(), c text DEFAULT set_config('track_counts', 'on', false))"]),
    "check": ("INSERT INTO public.rt11_c VALUES (1)", [
        "DROP TABLE IF EXISTS public.rt11_c",
        "CREATE TABLE public.rt11_c (id int CHECK (set_config('track_counts', 'off', false) IS NOT NULL "
        "AND public.rt11_del() >= 0 AND set_config('track_counts', 'on', false) IS NOT NULL))"]),
}


@pytest.fixture
def unseen(request, hostile, server):
    sql, setup = UNSEEN_SET_CONFIG[request.param]
    _made(hostile, server, DELETER, *setup)
    yield sql
    server.conn.execute("DROP VIEW IF EXISTS public.rt11_tcv; DROP TABLE IF EXISTS public.rt11_d, public.rt11_c")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("unseen", list(UNSEEN_SET_CONFIG), indirect=True)
def test_track_counts_turned_off_and_on_where_the_text_shows_no_call(hostile, server, unseen, protocol):
    # (policy "capped": rows_written 2; public.rt11_del() deleted 5 rows while the server kept no count)
    (answer,) = _run(hostile, "capped", protocol, unseen)
    assert_refused(answer, unseen)
    assert "computed at run time" in errors(answer)[0].message
    assert _one(server.conn, THINGS) == 5


RENAMING_VIEW = ("CREATE OR REPLACE VIEW public.rt11_appv AS SELECT "
                 "set_config('application_name', 'pgwarden:agent-2', false) AS a, "
                 "(SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS seen, "
                 "set_config('application_name', 'pgwarden:agent-1', false) AS b")


@pytest.fixture
def renaming_view(hostile, server):
    _made(hostile, server, RENAMING_VIEW)
    yield server
    server.conn.execute("DROP VIEW IF EXISTS public.rt11_appv")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_view_that_renames_the_session_and_names_it_back(hostile, renaming_view, protocol):
    # (policy "truncators": only secret.* blocked; the view's row read `pgwarden:agent-2` from
    # pg_stat_activity, and no ParameterStatus reached the relay: the name was back by the end)
    sql = "SELECT * FROM public.rt11_appv"
    answer, shown = _run(hostile, "truncators", protocol, sql, "SHOW application_name")
    assert_refused(answer, sql)
    assert _rows(shown) == [(b"pgwarden:agent-1",)]


# ---------------------------------------------------------------------- the built-in views over user mappings

USER_MAPPING = ["DROP SERVER IF EXISTS rt11_srv CASCADE",
                "CREATE SERVER rt11_srv FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host 'db.example')",
                "CREATE USER MAPPING FOR PUBLIC SERVER rt11_srv OPTIONS (user 'u', password 'pw-rt11-secret')"]


@pytest.fixture
def user_mapping(hostile, server):
    _made(hostile, server, *USER_MAPPING)
    yield server
    server.conn.execute("DROP SERVER IF EXISTS rt11_srv CASCADE")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["SELECT umoptions FROM pg_user_mappings",
                                 "SELECT * FROM information_schema.user_mapping_options",
                                 "SELECT option_value FROM information_schema.user_mapping_options "
                                 "WHERE option_name = 'password'"])
def test_the_built_in_views_over_user_mappings_are_administration(hostile, user_mapping, protocol, sql):
    # (policy "design": `system` refused; round ten closed pg_user_mapping and
    # information_schema._pg_user_mappings, but these views show a mapping's options to a superuser:
    # {user=u,password=pw-rt11-secret} came back)
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "system administration" in errors(answer)[0].message
    (answer,) = _run(hostile, "design", protocol, "SELECT srvname FROM pg_foreign_server WHERE srvname = 'rt11_srv'")
    assert _rows(answer) == [(b"rt11_srv",)]


# ---------------------------------------------------------------------- settings kept for the next session

DB_SETTINGS = f"SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = '{DB}')"


@pytest.fixture
def database_settings(server):
    server.reset()
    server.conn.execute(f"ALTER DATABASE {DB} RESET ALL; DELETE FROM public.log; DELETE FROM public.logged")
    yield server
    server.conn.execute(f"ALTER DATABASE {DB} RESET ALL; DELETE FROM public.log; DELETE FROM public.logged")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    f"ALTER DATABASE {DB} SET session_replication_role = replica",
    f"ALTER DATABASE {DB} SET session_replication_role TO 'replica'",
    f"ALTER DATABASE {DB} SET log_statement = 'none'",
    f"ALTER DATABASE {DB} SET track_counts = off",
    f"ALTER DATABASE {DB} SET role = 'pg_read_server_files'",
    f"ALTER DATABASE {DB} SET session_preload_libraries = 'auto_explain'",
])
def test_a_setting_kept_for_the_next_session_is_judged_as_a_set(hostile, database_settings, protocol, sql):
    # (policy "migrators": DDL allowed, `system` and `role` blocked; after the first, the agent's
    # next session inserted into public.logged and its audit trigger wrote nothing to public.log)
    (answer,) = _run(hostile, "migrators", protocol, sql)
    assert_refused(answer, sql)
    assert _one(database_settings.conn, DB_SETTINGS) == 0
    first, then = _run(hostile, "migrators", protocol, "SHOW session_replication_role",
                       "INSERT INTO public.logged VALUES (7)")
    assert _rows(first) == [(b"origin",)]
    assert not errors(then), then
    assert _one(database_settings.conn, "SELECT count(*) FROM public.log") == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [f"ALTER DATABASE {DB} SET work_mem = '8MB'", f"ALTER DATABASE {DB} RESET ALL",
                                 f"ALTER DATABASE {DB} RESET session_replication_role"])
def test_a_setting_any_user_may_set_is_kept_as_before(hostile, database_settings, protocol, sql):
    (answer,) = _run(hostile, "migrators", protocol, sql)
    assert not errors(answer), answer


def test_stored_settings_are_not_the_sessions_own():
    # (they are no SET of this session: the guards of application_name and track_counts judge
    # this session's changes; ALTER DATABASE ... SET application_name names nothing now)
    analysis = analyze_sql(f"ALTER DATABASE {DB} SET application_name = 'x'")
    assert not analysis.settings
    assert syntax_of("ALTER ROLE ALL SET log_statement = 'none'").stored_settings == (("log_statement", "none"),)


# ---------------------------------------------------------------------- controls

INDEXED = [
    "CREATE OR REPLACE FUNCTION public.rt11_armed_wipe() RETURNS boolean LANGUAGE sql VOLATILE AS $$ WITH d AS "
    "(DELETE FROM public.things WHERE id > 0 AND current_setting('hostile.armed', true) = 'on' RETURNING 1) "
    "SELECT true $$",
    "CREATE OR REPLACE FUNCTION public.rt11_idx(int) RETURNS int LANGUAGE sql IMMUTABLE "
    "AS 'SELECT $1 + CASE WHEN public.rt11_armed_wipe() THEN 0 ELSE 0 END'",
    "DROP TABLE IF EXISTS public.rt11_ix",
    "CREATE TABLE public.rt11_ix (a int)",
    "INSERT INTO public.rt11_ix VALUES (1)",
    "CREATE INDEX rt11_ix_e ON public.rt11_ix ((public.rt11_idx(a)))",
]


@pytest.fixture
def indexed(hostile, server):
    _made(hostile, server, *INDEXED)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt11_ix; DROP FUNCTION IF EXISTS public.rt11_idx(int), "
                        "public.rt11_armed_wipe()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "VACUUM FULL public.rt11_ix",
    "REINDEX TABLE CONCURRENTLY public.rt11_ix",
    "CREATE INDEX CONCURRENTLY rt11_cic ON public.rt11_ix ((public.rt11_idx(a) + 1))",
    "CLUSTER public.rt11_ix USING rt11_ix_e",
    "REINDEX TABLE public.rt11_ix",
    "ANALYZE public.rt11_ix, public.plain_t",
    "CREATE INDEX rt11_ci ON public.rt11_ix ((public.rt11_idx(a) + 1))",
])
def test_maintenance_over_an_expression_that_writes_stays_counted(hostile, indexed, protocol, sql):
    # (the statements that commit on their own fail in pgwarden's counting pipeline; the others
    # are counted: "the statement wrote 5 rows")
    armed, answer = _run(hostile, "capped", protocol, "SET hostile.armed = on", sql)
    assert not errors(armed), armed
    assert errors(answer), answer
    assert _one(indexed.conn, THINGS) == 5


@pytest.fixture
def typed_table(hostile, server):
    _made(hostile, server, "DROP TABLE IF EXISTS public.rt11_tt", "DROP TYPE IF EXISTS public.rt11_ct",
          "CREATE TYPE public.rt11_ct AS (a int, b int)", "CREATE TABLE public.rt11_tt OF public.rt11_ct",
          "INSERT INTO public.rt11_tt SELECT g, g FROM generate_series(1, 10) g")
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt11_tt, public.rt11_big; DROP TYPE IF EXISTS public.rt11_ct")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "ALTER TYPE public.rt11_ct DROP ATTRIBUTE b CASCADE",
    "ALTER TYPE public.rt11_ct ALTER ATTRIBUTE b TYPE text CASCADE",
    "ALTER TABLE public.things ALTER COLUMN n SET DATA TYPE int USING 0",
    "DO $$ BEGIN ALTER TABLE public.things ALTER COLUMN n SET DATA TYPE int USING 0; END $$",
    "CREATE TABLE public.rt11_big AS SELECT g FROM generate_series(1, 100) g",
    "SELECT g INTO public.rt11_big FROM generate_series(1, 100) g",
    "SELECT query_to_xml('SELECT set_config(''track_counts'', ''off'', false), public.rt11_del(), "
    "set_config(''track_counts'', ''on'', false)', true, true, '')",
    "COPY (DELETE FROM public.things WHERE id > 0 RETURNING *) TO STDOUT",
])
def test_controls_stay_refused_under_rows_written(hostile, typed_table, protocol, sql):
    typed_table.conn.execute(DELETER)
    read_catalog_again(hostile, "rt11_del made")
    before = typed_table.conn.execute(
        "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_name = 'rt11_tt' AND data_type = 'integer'), "
        "(SELECT sum(n) FROM public.things), to_regclass('public.rt11_big') IS NULL").fetchone()
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert typed_table.conn.execute(
        "SELECT (SELECT count(*) FROM information_schema.columns WHERE table_name = 'rt11_tt' AND data_type = 'integer'), "
        "(SELECT sum(n) FROM public.things), to_regclass('public.rt11_big') IS NULL").fetchone() == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_database_whose_sessions_keep_no_count_refuses_the_write(hostile, database_settings, protocol):
    database_settings.conn.execute(f"ALTER DATABASE {DB} SET track_counts = off")
    shown, answer = _run(hostile, "capped", protocol, "SHOW track_counts", "DELETE FROM public.things WHERE id > 0")
    assert _rows(shown) == [(b"off",)]
    assert_refused(answer, "DELETE FROM public.things WHERE id > 0")
    assert _one(database_settings.conn, THINGS) == 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stats_fetch_consistency_does_not_freeze_the_count(hostile, server, protocol):
    # (the count reads the backend's pending counts, which a stats snapshot does not cache)
    server.reset()
    setting, answer = _run(hostile, "capped", protocol, "SET stats_fetch_consistency = snapshot",
                           "DELETE FROM public.things WHERE id > 0")
    assert not errors(setting), setting
    assert "more than the 2 allowed" in errors(answer)[0].message, answer
    assert _one(server.conn, THINGS) == 5


@pytest.fixture
def reading_aggregate(hostile, server):
    _made(hostile, server, "CREATE OR REPLACE AGGREGATE public.rt11_rd(text) "
          "(SFUNC = textcat, STYPE = text, FINALFUNC = pg_read_file, INITCOND = '')")
    yield server
    server.conn.execute("DROP AGGREGATE IF EXISTS public.rt11_rd(text)")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_aggregate_whose_final_function_reads_a_file(hostile, reading_aggregate, protocol):
    sql = "SELECT public.rt11_rd('/etc/hostname')"
    (answer,) = _run(hostile, "bodies", protocol, sql)
    assert_refused(answer, sql)
