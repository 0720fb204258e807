"""Red team, round twelve: blocking and limits, what the superuser upstream answers and what the text names.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **Settings only the privileged may read** (policy "design": `system` refused): `SHOW hba_file`,
  `SHOW data_directory`, `SELECT current_setting('config_file')`, `SELECT setting FROM pg_settings
  WHERE name = 'primary_conninfo'` (a replication password), `SHOW ALL`, `SELECT * FROM
  pg_settings`, `SELECT * FROM pg_show_all_settings()` answered with the server's paths and values:
  the upstream role is a superuser, and a plain role is refused them (GUC_SUPERUSER_ONLY, hidden
  from pg_settings). The statements were `show` and `select`. The live catalog now learns which
  settings a plain role does not see from the server itself (pg_settings read as pg_database_owner
  in a savepoint, `Catalog.hidden_settings`; PostgreSQL 15's list stands in when the server cannot
  tell), and what a statement reads of the settings is in its syntax (`Syntax.read_settings`: SHOW,
  current_setting, pg_settings' and pg_show_all_settings()' value columns with or without a
  `WHERE name = '...'` naming them): reading a hidden setting, any setting, or one named at run
  time (`current_setting($1)`, `current_setting(name) FROM ...`) is `system`. So is a view or a
  function of the database's own reading one, and a filter whose `=` may be the database's own
  (`SET search_path = public, pg_catalog` before an `=` of public's that keeps every row).
  `SELECT count(*) FROM pg_settings`, `SHOW work_mem`, `current_setting('work_mem')` and
  pg_settings' names and descriptions still run.
* **A column of a domain under `rows_written`** (policy "capped"): `ALTER TABLE public.things ADD
  COLUMN rt12_z public.rt12_rnd` (a domain whose default is `random()`) rewrote every row, counted
  as none; so does a domain with a CHECK. A column added of a domain (or of a type the catalog does
  not know) is now uncounted.
* **A type's default operator class** (policy "truncators": secret.* refused; round eleven's
  noticed lead): an enum whose default btree class compares by a function deleting secret.things
  ran it at `ORDER BY`, `DISTINCT`, `GROUP BY` of a column of it (or of a composite type with a
  field of it), and at a sort of `VALUES` of the type. Those functions are now the table's `x`
  effects and the type's own.
* **A foreign table looping back** (policies "truncators" and "migrators"): a postgres_fdw foreign
  table of public naming `schema_name 'secret', table_name 'things'` over a server pointing at this
  database returned and deleted secret.things' rows; `CREATE FOREIGN TABLE` / `ALTER FOREIGN TABLE
  ... OPTIONS` / `IMPORT FOREIGN SCHEMA secret` made one. The remote name is now a relation named
  (the catalog's effect `L`, the statement's options).
* **An index named by DDL** (a rule naming `public.rt12_guarded`): `DROP INDEX` of its unique
  index, `ALTER INDEX ... RENAME`, `REINDEX INDEX` passed (round seven's known limit). The catalog
  now maps indexes to their tables.
* **A sequence named by a string** (policy "bodies"): `SELECT setval('secret.rt12_s', 1000)`,
  `nextval('secret.rt12_s')` changed a secret sequence. Their first argument is now the relation.
* **Subscriptions** (policies "migrators", "capped", "truncators"): `CREATE SUBSCRIPTION ... WITH
  (connect = false)` was `ddl`; CREATE / ALTER / DROP SUBSCRIPTION are now `system`, and CREATE /
  ALTER reach every table and are `unknown` (its worker writes what the publisher sends, after the
  count).

Controls (refused before this round, kept): `CREATE FOREIGN TABLE secret.rt12_ft2 ... OPTIONS
(table_name 'things')` (it names secret.*). Allowed, kept: `SELECT count(*) FROM pg_settings`,
settings a plain role reads, a plain type's ADD COLUMN, another table's DROP INDEX,
`nextval('public.s')`.
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import DB, assert_refused, errors
from test_hostile import data_rows as _rows
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.syntax import Relation, syntax_of
from pgwarden.testing.matrix import thin
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER

# test_hostile's fixtures: its database, pgwarden with its policies in front of it, a direct connection
hostile_db, server, hostile = test_hostile.hostile_db, test_hostile.server, test_hostile.hostile

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)


_made = test_hostile.made


# ---------------------------------------------------------------------- settings only the privileged may read

PLAIN_SEES = "SELECT count(*) FROM pg_settings WHERE lower(name) = %s"


def _hidden_from_a_plain_role(conn, name: str) -> bool:
    """What the server itself says: pg_settings read as pg_database_owner does not list ``name``."""
    with conn.transaction():
        conn.execute("SET LOCAL ROLE pg_database_owner")
        return conn.execute(PLAIN_SEES, (name,)).fetchone()[0] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql, setting", [
    ("SHOW hba_file", "hba_file"),
    ("SHOW data_directory", "data_directory"),
    ("SELECT current_setting('config_file')", "config_file"),
    ("SELECT pg_catalog.current_setting('HBA_FILE', true)", "hba_file"),
    ("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'", "primary_conninfo"),
    ("SELECT s.reset_val FROM pg_catalog.pg_settings AS s WHERE s.name IN ('ident_file', 'work_mem')", "ident_file"),
    ("SHOW ALL", None),
    ("SELECT * FROM pg_settings", None),
    ("SELECT name, setting FROM pg_settings WHERE name = 'work_mem' OR category <> ''", None),
    ("SELECT * FROM pg_show_all_settings()", None),
    ("SELECT s::text FROM pg_settings AS s", None),
    ("SELECT name FROM pg_settings AS s WHERE s.sourcefile IS NOT NULL", None),
    ("SELECT (SELECT string_agg(setting, ',') FROM pg_settings WHERE o.name = 'work_mem') "
     "FROM (SELECT 'work_mem' AS name) AS o", None),
    ("SELECT current_setting(name) FROM pg_settings WHERE category = 'File Locations'", None),
    ("SELECT query_to_xml('SHOW hba_file', true, true, '')", "hba_file"),
    ("DO $$ BEGIN RAISE NOTICE '%', current_setting('hba_file'); END $$", "hba_file"),
])
def test_a_setting_only_the_privileged_may_read_is_administration(hostile, server, protocol, sql, setting):
    # (policy "design": `system` refused; the superuser upstream answered the path, or every value)
    if setting is not None:
        assert _hidden_from_a_plain_role(server.conn, setting)
    (answer,) = _run(hostile, "design", protocol, sql)
    assert_refused(answer, sql)
    assert "system administration" in errors(answer)[0].message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "SHOW work_mem",
    "SELECT current_setting('work_mem')",
    "SELECT setting FROM pg_settings WHERE name = 'work_mem'",
    "SELECT setting, unit FROM pg_catalog.pg_settings AS s WHERE s.name IN ('work_mem', 'search_path')",
    "SELECT count(*) FROM pg_settings",
    "SELECT name, category, short_desc FROM pg_settings ORDER BY name",
    "SELECT name FROM pg_show_all_settings() WHERE vartype = 'bool'",
])
def test_settings_a_plain_role_may_read_still_answer(hostile, server, protocol, sql):
    (answer,) = _run(hostile, "design", protocol, sql)
    assert not errors(answer), answer
    assert _rows(answer)


@pytest.fixture
def settings_view(hostile, server):
    _made(hostile, server, "CREATE OR REPLACE VIEW public.rt12_paths AS SELECT current_setting('hba_file') AS hba",
          "CREATE OR REPLACE VIEW public.rt12_conf AS SELECT name, setting FROM pg_settings",
          "CREATE OR REPLACE VIEW public.rt12_mem AS SELECT current_setting('work_mem') AS mem",
          "CREATE OR REPLACE FUNCTION public.rt12_where() RETURNS text LANGUAGE sql STABLE "
          "AS $$ SELECT current_setting('data_directory') $$")
    yield server
    server.conn.execute("DROP VIEW IF EXISTS public.rt12_paths, public.rt12_conf, public.rt12_mem; "
                        "DROP FUNCTION IF EXISTS public.rt12_where()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_view_or_function_reading_a_hidden_setting_is_administration(hostile, settings_view, protocol):
    for sql in ("SELECT * FROM public.rt12_paths", "SELECT setting FROM public.rt12_conf WHERE name = 'hba_file'",
                "SELECT public.rt12_where()"):
        (answer,) = _run(hostile, "design", protocol, sql)
        assert_refused(answer, sql)
    (answer,) = _run(hostile, "design", protocol, "SELECT * FROM public.rt12_mem")
    assert _rows(answer) == [(_one(settings_view.conn, "SHOW work_mem").encode(),)]


@pytest.fixture
def own_equality(hostile, server):
    _made(hostile, server, "CREATE OR REPLACE FUNCTION public.rt12_any_eq(text, text) RETURNS boolean "
          "LANGUAGE sql IMMUTABLE AS 'SELECT true'",
          "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.rt12_any_eq)")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt12_any_eq(text, text) CASCADE")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_setting_kept_by_an_equality_of_the_databases_own(hostile, own_equality, protocol):
    # (the `=` of public, before pg_catalog on the path, kept every row: hba_file's value came back)
    sql = "SELECT name, setting FROM pg_settings WHERE name = 'work_mem'"
    path, answer = _run(hostile, "design", protocol, "SET search_path = public, pg_catalog", sql)
    assert not errors(path), path
    assert_refused(answer, sql)


def test_the_live_catalog_learns_the_hidden_settings_from_the_server(hostile, server):
    catalog = hostile.app.catalog.current
    listed = {name for (name,) in server.conn.execute("SELECT lower(name) FROM pg_settings")}
    hidden = {name for name in listed if _hidden_from_a_plain_role(server.conn, name)}
    assert hidden and catalog.hidden_settings == hidden
    assert {"hba_file", "primary_conninfo", "data_directory"} <= hidden and "work_mem" not in hidden


@pytest.mark.parametrize("sql, read", [
    ("SHOW hba_file", ("hba_file",)),
    ("SHOW ALL", ("*",)),
    ("SELECT current_setting($1)", ("*",)),
    ("SELECT count(*) FROM pg_settings WHERE setting = 'on'", ("*",)),
    ("SELECT count(*) FROM pg_settings", ()),
    ("SELECT name FROM pg_settings WHERE name LIKE 'ssl%'", ()),
    ("SELECT setting FROM pg_settings WHERE 'hba_file' = name AND true", ("=hba_file",)),
    ("SELECT setting FROM pg_settings AS s WHERE s.name IN ('work_mem', 'DateStyle')", ("=work_mem", "=datestyle")),
    ("SELECT s.setting FROM pg_settings AS s JOIN pg_settings AS t ON t.name = s.name WHERE s.name = 'work_mem'",
     ("*",)),
    ("UPDATE t SET a = s.setting FROM pg_settings AS s WHERE s.name = 'work_mem'", ("*",)),
    ("WITH s AS (SELECT * FROM pg_settings) SELECT count(*) FROM s", ("*",)),
])
def test_what_a_statement_reads_of_the_settings(sql, read):
    assert syntax_of(sql).read_settings == read


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_setting_read_after_another_by_the_same_text_shape(hostile, server, protocol):
    # (the statement cache shares an analysis between texts that normalize alike when no constant
    # mattered: the setting's name does)
    allowed, refused = _run(hostile, "design", protocol, "SELECT current_setting('work_mem')",
                            "SELECT current_setting('hba_file')")
    assert _rows(allowed) and not errors(allowed)
    assert_refused(refused, "SELECT current_setting('hba_file')")


def test_a_setting_read_by_name_shares_no_analysis_by_its_normalized_text():
    assert "system" in analyze_sql("SELECT current_setting('hba_file')").kinds
    assert "system" not in analyze_sql("SELECT current_setting('work_mem')").kinds
    assert not syntax_of("SELECT current_setting('work_mem')").constant_free


# ---------------------------------------------------------------------- a domain's default, under rows_written

THINGS = "SELECT count(*) FROM public.things"
ADDED = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'rt12_z'"


@pytest.fixture
def volatile_domain(hostile, server):
    _made(hostile, server, "ALTER TABLE public.things DROP COLUMN IF EXISTS rt12_z",
          "DROP DOMAIN IF EXISTS public.rt12_rnd", "DROP DOMAIN IF EXISTS public.rt12_pos",
          "CREATE DOMAIN public.rt12_rnd AS float DEFAULT random()",
          "CREATE DOMAIN public.rt12_pos AS int CHECK (VALUE > 0) DEFAULT 1")
    yield server
    server.conn.execute("ALTER TABLE public.things DROP COLUMN IF EXISTS rt12_z; "
                        "DROP DOMAIN IF EXISTS public.rt12_rnd, public.rt12_pos")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["ALTER TABLE public.things ADD COLUMN rt12_z public.rt12_rnd",
                                 "ALTER TABLE public.things ADD rt12_z rt12_rnd",
                                 "ALTER TABLE public.things ADD COLUMN rt12_z public.rt12_pos"])
def test_a_column_of_a_domain_computed_per_row_is_refused_under_rows_written(hostile, volatile_domain, protocol, sql):
    # (policy "capped": DDL allowed, rows_written 2; round eleven refused `ADD COLUMN z float DEFAULT
    # random()`, but the domain's default rewrote the table as well, every row a new value, counted
    # as none; a domain's CHECK makes the server rewrite it too)
    (answer,) = _run(hostile, "capped", protocol, sql)
    assert_refused(answer, sql)
    assert "rows_written" in errors(answer)[0].message
    assert _one(volatile_domain.conn, ADDED) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_column_of_a_plain_type_is_added_as_before(hostile, volatile_domain, protocol):
    (answer,) = _run(hostile, "capped", protocol, "ALTER TABLE public.things ADD COLUMN rt12_z double precision")
    assert not errors(answer), answer
    assert _one(volatile_domain.conn, ADDED) == 1


@pytest.mark.parametrize("sql", ["ALTER TABLE t ADD COLUMN z information_schema.cardinal_number",
                                 "ALTER TABLE t ADD COLUMN z no_such_type"])
def test_a_column_of_a_domain_or_of_an_unknown_type_is_uncounted(sql):
    assert analyze_sql(sql).uncounted


@pytest.mark.parametrize("sql", ["ALTER TABLE t ADD COLUMN z int", "ALTER TABLE t ADD COLUMN z varchar(10)[]",
                                 "ALTER TABLE t ADD COLUMN z double precision DEFAULT 1",
                                 "ALTER TABLE t ADD COLUMN z timestamptz, ADD COLUMN y interval day"])
def test_a_column_of_a_built_in_type_is_counted(sql):
    assert not analyze_sql(sql).uncounted


# ---------------------------------------------------------------------- a type's default operator class

# An enum whose default btree operator class compares by a function that deletes secret.things:
# sorting, grouping, DISTINCT of a column of it run the function, the text naming none.
OPERATORS = ["<", "<=", "=", ">=", ">"]
DEFAULT_CLASS = [
    "DROP TABLE IF EXISTS public.rt12_m, public.rt12_pt", "DROP TYPE IF EXISTS public.rt12_pair",
    "DROP TYPE IF EXISTS public.rt12_mood CASCADE",
    "CREATE TYPE public.rt12_mood AS ENUM ('a', 'b', 'c')",
    "CREATE FUNCTION public.rt12_cmp(public.rt12_mood, public.rt12_mood) RETURNS int LANGUAGE sql VOLATILE AS $$ "
    "WITH d AS (DELETE FROM secret.things WHERE id > 0 RETURNING 1) SELECT CASE WHEN $1::text < $2::text THEN -1 "
    "WHEN $1::text > $2::text THEN 1 ELSE 0 END + (SELECT count(*) FROM d)::int * 0 $$",
    *(f"CREATE FUNCTION public.rt12_op{i}(public.rt12_mood, public.rt12_mood) RETURNS bool LANGUAGE sql "
      f"IMMUTABLE AS 'SELECT $1::text {op} $2::text'" for i, op in enumerate(OPERATORS)),
    *(f"CREATE OPERATOR public.{op} (LEFTARG = public.rt12_mood, RIGHTARG = public.rt12_mood, "
      f"FUNCTION = public.rt12_op{i})" for i, op in enumerate(OPERATORS)),
    "CREATE OPERATOR CLASS public.rt12_mood_ops DEFAULT FOR TYPE public.rt12_mood USING btree AS "
    + ", ".join(f"OPERATOR {i + 1} public.{op}" for i, op in enumerate(OPERATORS))
    + ", FUNCTION 1 public.rt12_cmp(public.rt12_mood, public.rt12_mood)",
    "CREATE TABLE public.rt12_m (m public.rt12_mood)",
    "INSERT INTO public.rt12_m VALUES ('b'), ('a'), ('c')",
    "CREATE TYPE public.rt12_pair AS (m public.rt12_mood, n int)",
    "CREATE TABLE public.rt12_pt (p public.rt12_pair)",
    "INSERT INTO public.rt12_pt VALUES (ROW('b', 1)), (ROW('a', 2))",
]


@pytest.fixture
def default_class(hostile, server):
    _made(hostile, server, *DEFAULT_CLASS)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt12_m, public.rt12_pt; DROP TYPE IF EXISTS public.rt12_pair; "
                        "DROP TYPE IF EXISTS public.rt12_mood CASCADE")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "SELECT m FROM public.rt12_m ORDER BY m",
    "SELECT DISTINCT m FROM public.rt12_m",
    "SELECT m, count(*) FROM public.rt12_m GROUP BY m",
    "SELECT x FROM (VALUES ('a'::public.rt12_mood), ('b')) AS v(x) ORDER BY x",
    "SELECT p FROM public.rt12_pt ORDER BY p",  # (a record compares field by field)
])
def test_sorting_a_type_runs_its_default_operator_class(hostile, default_class, protocol, sql):
    # (policy "truncators": secret.* refused; the sort deleted secret.things' 3 rows)
    assert _one(default_class.conn, "SELECT count(*) FROM secret.things") == 3
    (answer,) = _run(hostile, "truncators", protocol, sql)
    assert_refused(answer, sql)
    assert _one(default_class.conn, "SELECT count(*) FROM secret.things") == 3


# ---------------------------------------------------------------------- subscriptions

SUBSCRIPTIONS = "SELECT count(*) FROM pg_subscription WHERE subname LIKE 'rt12%'"


@pytest.fixture
def no_subscription(server):
    server.reset()
    yield server
    if _one(server.conn, SUBSCRIPTIONS):  # (no slot to drop: made without connecting)
        server.conn.execute("ALTER SUBSCRIPTION rt12_sub DISABLE")
        server.conn.execute("ALTER SUBSCRIPTION rt12_sub SET (slot_name = NONE)")
        server.conn.execute("DROP SUBSCRIPTION rt12_sub")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("policy", ["migrators", "capped", "truncators"])
def test_a_subscription_is_administration(hostile, no_subscription, protocol, policy):
    # (policy "migrators": DDL allowed, `system` refused; "capped": rows_written; "truncators":
    # secret.* refused; the subscription was made: a superuser's act whose worker writes the
    # publisher's rows into the tables of the same names, after any count)
    sql = ("CREATE SUBSCRIPTION rt12_sub CONNECTION 'host=127.0.0.1 port=1 dbname=x user=u password=pw' "
           "PUBLICATION p WITH (connect = false)")
    (answer,) = _run(hostile, policy, protocol, sql)
    assert_refused(answer, sql)
    assert _one(no_subscription.conn, SUBSCRIPTIONS) == 0


@pytest.mark.parametrize("sql", ["ALTER SUBSCRIPTION s ENABLE", "ALTER SUBSCRIPTION s REFRESH PUBLICATION",
                                 "DROP SUBSCRIPTION s"])
def test_changing_a_subscription_is_administration(sql):
    assert "system" in analyze_sql(sql).kinds


# ---------------------------------------------------------------------- a foreign table looping back

SECRET = "SELECT count(*) FROM secret.things"
LOOPING = ("SELECT c.relname::text, ft.ftoptions::text[] FROM pg_foreign_table AS ft JOIN pg_class AS c ON c.oid = ft.ftrelid "
           "JOIN pg_foreign_server AS s ON s.oid = ft.ftserver WHERE s.srvname = 'rt12_loop'")


@pytest.fixture
def loopback(hostile, server):
    pg = server.pg
    _made(hostile, server, "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
          "DROP SERVER IF EXISTS rt12_loop CASCADE",
          f"CREATE SERVER rt12_loop FOREIGN DATA WRAPPER postgres_fdw "
          f"OPTIONS (host '{pg.host}', port '{pg.port}', dbname '{DB}')",
          f"CREATE USER MAPPING FOR CURRENT_USER SERVER rt12_loop OPTIONS (user '{APP_USER}', password '{APP_PASSWORD}')",
          "CREATE FOREIGN TABLE public.rt12_ft (id int, n int) SERVER rt12_loop "
          "OPTIONS (schema_name 'secret', table_name 'things')")
    yield server
    server.conn.execute("DROP SERVER IF EXISTS rt12_loop CASCADE")
    server.reset()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["SELECT * FROM public.rt12_ft", "DELETE FROM public.rt12_ft WHERE id > 0"])
def test_a_foreign_table_naming_a_table_of_this_database_is_that_table(hostile, loopback, protocol, sql):
    # (policy "truncators": secret.* refused; through the server looping back, secret.things' rows came
    # back, and were deleted)
    assert _one(loopback.conn, "SELECT count(*) FROM public.rt12_ft") == 3  # (it does loop back)
    (answer,) = _run(hostile, "truncators", protocol, sql)
    assert_refused(answer, sql)
    assert "secret" in errors(answer)[0].message
    assert _one(loopback.conn, SECRET) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "CREATE FOREIGN TABLE public.rt12_ft2 (id int, n int) SERVER rt12_loop OPTIONS (schema_name 'secret', table_name 'things')",
    "CREATE FOREIGN TABLE secret.rt12_ft2 (id int, n int) SERVER rt12_loop OPTIONS (table_name 'things')",
    "ALTER FOREIGN TABLE public.rt12_ft OPTIONS (SET schema_name 'secret')",
    "IMPORT FOREIGN SCHEMA secret FROM SERVER rt12_loop INTO public",
])
def test_making_a_foreign_table_of_a_refused_table_is_refused(hostile, loopback, protocol, sql):
    # (policy "migrators": DDL allowed, secret.* refused: then reading the foreign table read secret.things)
    (answer,) = _run(hostile, "migrators", protocol, sql)
    assert_refused(answer, sql)
    assert loopback.conn.execute(LOOPING).fetchall() == [("rt12_ft", ["schema_name=secret", "table_name=things"])]


def test_a_foreign_tables_remote_name_is_a_relation_named():
    assert syntax_of("CREATE FOREIGN TABLE s.f (a int) SERVER x OPTIONS (table_name 't')").relations >= {
        Relation("s", "t")}
    assert syntax_of("IMPORT FOREIGN SCHEMA secret FROM SERVER x INTO public").ddl_objects == (("schema", ("secret",)),)


# ---------------------------------------------------------------------- an index names its table

GUARDED = [{"name": "ai-agents", "when": {"groups": ["ai-agents"]},
            "rules": [{"name": "guarded", "block": {"tables": ["public.rt12_guarded"]}}]}]


@pytest.fixture
def guarded(server):
    server.conn.execute("DROP TABLE IF EXISTS public.rt12_guarded, public.rt12_free; "
                        "CREATE TABLE public.rt12_guarded (code text); "
                        "CREATE UNIQUE INDEX rt12_guarded_code ON public.rt12_guarded (code); "
                        "CREATE TABLE public.rt12_free (code text); CREATE INDEX rt12_free_code ON public.rt12_free (code)")
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.rt12_guarded, public.rt12_free")


def _agent(running, protocol: str, *sqls: str) -> list[list]:
    agent = test_hostile.Agent(running, "ai-agents", protocol)
    try:
        return [agent.run(sql) for sql in sqls]
    finally:
        agent.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["DROP INDEX public.rt12_guarded_code", "DROP INDEX rt12_guarded_code",
                                 "ALTER INDEX public.rt12_guarded_code RENAME TO rt12_gone",
                                 "REINDEX INDEX public.rt12_guarded_code"])
def test_ddl_naming_an_index_is_its_tables(make_pgwarden, hostile_db, guarded, protocol, sql):
    # (a rule naming public.rt12_guarded; round seven's known limit: only a `schema.*` glob saw
    # the index; its unique index dropped, duplicates went in)
    running = make_pgwarden(policies=GUARDED, upstream={"database": DB})
    answer, free = _agent(running, protocol, sql, "DROP INDEX public.rt12_free_code")
    assert_refused(answer, sql)
    assert not errors(free), free  # (another table's index)
    assert _one(guarded.conn, "SELECT count(*) FROM pg_indexes WHERE indexname = 'rt12_guarded_code'") == 1


# ---------------------------------------------------------------------- a sequence named by a string

@pytest.fixture
def secret_sequence(hostile, server):
    _made(hostile, server, "DROP SEQUENCE IF EXISTS secret.rt12_s", "CREATE SEQUENCE secret.rt12_s")
    yield server
    server.conn.execute("DROP SEQUENCE IF EXISTS secret.rt12_s")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", ["SELECT setval('secret.rt12_s', 1000)", "SELECT nextval('secret.rt12_s')",
                                 "SELECT nextval('secret.rt12_s'::regclass) FROM generate_series(1, 5)",
                                 "SELECT setval(concat('secret.', 'rt12_s'), 1000)"])
def test_a_sequence_named_by_a_string_is_that_relation(hostile, secret_sequence, protocol, sql):
    # (policy "bodies": volatile functions allowed, secret.* refused; the secret sequence was set)
    (answer,) = _run(hostile, "bodies", protocol, sql)
    assert_refused(answer, sql)
    assert secret_sequence.conn.execute("SELECT last_value, is_called FROM secret.rt12_s").fetchone() == (1, False)
    (answer,) = _run(hostile, "bodies", protocol, "SELECT nextval('public.s')")
    assert _rows(answer) == [(b"1",)]
