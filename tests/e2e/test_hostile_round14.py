"""Red team, round fourteen: blocking and limits, what a name stands for and what PUBLIC may call.

Found (each closed, its case below; the server's state read on a direct connection before and after):

* **A table renamed keeps its triggers** (policy "migrators": DDL allowed, `secret.*`, `unknown` and
  unfiltered deletes refused; policy "truncators": only `secret.*` refused): `ALTER TABLE
  public.audited RENAME TO rt14_a; INSERT INTO public.rt14_a VALUES (1)` (one Query, or BEGIN, the
  rename, the INSERT, COMMIT) emptied secret.things: the catalog knows a table's triggers, rules,
  policies, defaults and partitions by its name until the change is read, and the INSERT named a
  table it did not know. `ALTER TABLE ... SET SCHEMA`, `ALTER INDEX <a table> RENAME` (the server
  renames a table so) and `RENAME COLUMN` alike. A relation renamed, moved, or a column of it
  renamed, is now judged as a write of every kind of it (every trigger, rule, default, policy,
  cascade and partition of it: `Syntax.ddl_objects` "renamed", `_Resolver._as_written`): the rename
  of public.audited is a DELETE of secret.things.
* **A table made or attached takes on its parent's code** (policies "truncators" and "migrators"):
  `CREATE TABLE public.rt14_l (LIKE public.defaulted INCLUDING DEFAULTS)`, `CREATE TABLE ... ()
  INHERITS (public.defaulted)` (a default whose function deletes secret.things), `CREATE TABLE ...
  PARTITION OF public.rt14_pt` and `ALTER TABLE public.rt14_pt ATTACH PARTITION ...` (a row trigger
  that does, cloned to the partition), then an INSERT into the new table in the same transaction
  or Query (a name the catalog does not know yet): secret.things emptied. The parent, or the LIKE
  source, is now judged as written in every way (`Syntax.ddl_objects` "inherited"). So is the one
  relation a view made reads: `CREATE VIEW public.rt14_v AS SELECT id FROM public.defaulted`, then
  `INSERT INTO public.rt14_v` (automatically updatable: the write reaches the table) did the same.
  And `CREATE TABLE public.rt14_ct AS SELECT * FROM public.dom_t` (or `SELECT * INTO`): the new
  column is of dom_t's domain, whose default runs (and deleted, armed) at an INSERT leaving it out;
  the relations it reads now give it their columns' conversions and `d` effects ("typed from").
* **A rule naming statements and a table, escaped by a rename** (policy "renamers": DDL allowed,
  DELETE and TRUNCATE of public.rt14_kept refused): `ALTER TABLE public.rt14_kept RENAME TO
  rt14_moved`, then `DELETE FROM public.rt14_moved`, deleted its rows (SET SCHEMA alike). A relation
  renamed or moved is now, for such a rule, each statement of it (`Analysis.indirect_writes`).
* **Built-ins PUBLIC may call that check for a superuser themselves** (policy "bodies": volatile
  functions allowed; `system`, `server_files` and the function `pg_read_file` refused):
  `pg_read_file_old('/etc/hostname', 0, 100)` (pg_read_file's C function under a name of its own)
  returned the server's file; `pg_create_physical_replication_slot('rt14_p', true)` made a slot
  (the server keeps its WAL from then on), `pg_import_system_collations('public')` made hundreds
  of collations; `pg_logical_emit_message`, `pg_rotate_logfile_old`, the other replication slot
  functions and `pg_nextoid` likewise: their ACL grants PUBLIC EXECUTE and their code checks for a
  superuser or REPLICATION, which the upstream role passes. They are now `system`
  (`resolve.ADMIN_CHECKED_FUNCTIONS`), and `pg_read_file_old` reads server files.
* **A CHECK validated** (policies "migrators" and "truncators"): `ALTER TABLE public.checked_t VALIDATE
  CONSTRAINT rt14_nv` (the owner's NOT VALID `CHECK (public.wipe_if_armed())`, armed by the
  session's `SET hostile.armed = on`) ran the check over the table's row and emptied
  secret.things: ALTER TABLE ran none of the table's code in the analysis. Its CHECKs' (and
  defaults') functions now count, of its partitions and children too (`_Resolver._validated`).
  `ALTER DOMAIN public.plain VALIDATE CONSTRAINT rt14_d` likewise (a column of the domain in
  public.rt14_dt): it is now judged as a conversion to the domain (its CHECKs).
* **A trigger made by CREATE SCHEMA** (policies "migrators" and "truncators"): `CREATE SCHEMA rt14
  CREATE TABLE t (a int) CREATE TRIGGER tr AFTER INSERT ON t ... EXECUTE FUNCTION
  public.audit_wipe()` armed a trigger whose function was never judged (the elements of CREATE
  SCHEMA were walked as expressions, not as statements), and `INSERT INTO rt14.t` in the same
  Query or transaction (a table the catalog does not know yet) emptied secret.things. Each element
  is now judged as the statement it is.
* **A comment on a protected table** (policy "migrators"): `COMMENT ON TABLE secret.things` and
  `COMMENT ON COLUMN secret.things.n` named no table. COMMENT ON a relation, or on its column,
  trigger, rule, policy or constraint, now names the relation.

Controls (refused or counted before this round, kept): under `rows_written: 2`, a FETCH, a MOVE and
`cursor_to_xml` of a cursor whose query deletes 5 rows (counted, rolled back), a CALL of a procedure
that COMMITs, a DELETE of 5 rows between SAVEPOINT and ROLLBACK TO; a DO block's EXECUTE of a
computed string and `query_to_xml` of one under a rule naming tables (unknown);
`lo_export` and `lo_import` of a server file; `SET search_path = pg_temp, secret` then a bare name;
`ALTER VIEW public.leak RENAME` (its body names secret.things). Allowed, kept: renaming a table
with no triggers, rules or defaults of the database's own (public.plain_t, public.stamped,
public.keyed) and a column of one, `COMMENT ON TABLE public.things`, a plain element of CREATE
SCHEMA, a table LIKE public.things and a view over it.
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import DB, POLICIES, assert_refused, errors
from test_hostile import data_rows as _rows
from test_hostile import first_value as _one
from test_hostile import run_policy as _run

from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import SqlContext
from pgwarden.testing.matrix import thin
from pgwarden.testing.postgres import APP_USER

hostile_db, server = test_hostile.hostile_db, test_hostile.server

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)

# DDL allowed, DELETE and TRUNCATE of one table refused: a rule naming statements and a table
RENAMERS = {"name": "renamers", "when": {"groups": ["renamers"]},
            "rules": [{"name": "kept", "block": {"statements": ["delete", "truncate"], "tables": ["public.rt14_kept"]}}]}


@pytest.fixture(scope="module")
def hostile(hostile_db, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """test_hostile's pgwarden, its policies and "renamers"."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    doc = base_config(pg_server, signing_keys, tmp_path_factory.mktemp("rt14"), policies=POLICIES + [RENAMERS],
                      upstream={"database": DB})
    with module_pgwarden(doc, signing_keys, reactor_thread) as rp:
        yield rp


SECRET = "SELECT count(*) FROM secret.things"


# ---------------------------------------------------------------------- a relation renamed

@pytest.fixture
def renamed_back(hostile, server):
    server.reset()
    yield server
    for sql in ("ALTER TABLE IF EXISTS public.rt14_a RENAME TO audited",
                "ALTER TABLE IF EXISTS app.audited SET SCHEMA public",
                "ALTER TABLE public.audited RENAME COLUMN rt14_id TO id"):
        try:  # (only when the test failed: each undoes what a bypass did)
            server.conn.execute(sql)
        except Exception:  # noqa: BLE001
            pass
    test_hostile.read_catalog_again(hostile, "a table renamed back")


def test_a_table_renamed_keeps_its_triggers(hostile, renamed_back):
    # (policy "migrators": one Query; its trigger deleted secret.things' 3 rows)
    sql = "ALTER TABLE public.audited RENAME TO rt14_a; INSERT INTO public.rt14_a VALUES (1)"
    (answer,) = _run(hostile, "migrators", "simple", sql)
    assert_refused(answer, sql)
    assert _one(renamed_back.conn, SECRET) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_table_renamed_in_a_transaction_keeps_its_triggers(hostile, renamed_back, protocol):
    # (BEGIN, the rename, the INSERT under the new name, COMMIT; "migrators", and "truncators", which
    # refuses only secret.*; and the other ways to rename or move a table, or a column of it)
    for policy, rename, insert in [
            ("migrators", "ALTER TABLE public.audited RENAME TO rt14_a", "INSERT INTO public.rt14_a VALUES (1)"),
            ("truncators", "ALTER TABLE public.audited RENAME TO rt14_a", "INSERT INTO public.rt14_a VALUES (1)"),
            ("migrators", "ALTER INDEX public.audited RENAME TO rt14_a", "INSERT INTO public.rt14_a VALUES (1)"),
            ("truncators", "ALTER TABLE public.audited SET SCHEMA app", "INSERT INTO app.audited VALUES (1)"),
            ("truncators", "ALTER TABLE public.audited RENAME COLUMN id TO rt14_id",
             "INSERT INTO public.audited (rt14_id) VALUES (1)")]:
        _begin, renaming, _insert, _commit = _run(hostile, policy, protocol, "BEGIN", rename, insert, "COMMIT")
        assert_refused(renaming, rename)
        assert _one(renamed_back.conn, SECRET) == 3, (policy, rename)
        assert _one(renamed_back.conn, "SELECT to_regclass('public.audited') IS NOT NULL"), rename


@pytest.fixture
def kept(hostile, server):
    _sql = ["DROP TABLE IF EXISTS public.rt14_kept, public.rt14_moved, app.rt14_kept",
            "CREATE TABLE public.rt14_kept (id int)", "INSERT INTO public.rt14_kept SELECT g FROM generate_series(1, 5) g"]
    test_hostile.made(hostile, server, *_sql)
    yield server
    server.conn.execute(_sql[0])


def _renamers(hostile, protocol: str, *sqls: str) -> list[list]:
    agent = test_hostile.Agent(hostile, "renamers", protocol)
    try:
        return [agent.run(sql) for sql in sqls]
    finally:
        agent.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_rule_naming_statements_and_a_table_follows_its_rename(hostile, kept, protocol):
    # (policy "renamers": DELETE of public.rt14_kept refused; renamed, or moved, then deleted from)
    for rename, delete in [("ALTER TABLE public.rt14_kept RENAME TO rt14_moved", "DELETE FROM public.rt14_moved"),
                           ("ALTER TABLE public.rt14_kept SET SCHEMA app", "DELETE FROM app.rt14_kept")]:
        renaming, _delete = _renamers(hostile, protocol, rename, delete)
        assert_refused(renaming, rename)
        assert _one(kept.conn, "SELECT count(*) FROM public.rt14_kept") == 5, rename
    # (its DELETE refused as before; another table's rename, and a column's, allowed)
    deleting, column, back = _renamers(hostile, protocol, "DELETE FROM public.rt14_kept",
                                  "ALTER TABLE public.rt14_kept RENAME COLUMN id TO rt14_id",
                                  "ALTER TABLE public.rt14_kept RENAME COLUMN rt14_id TO id")
    assert_refused(deleting, "DELETE FROM public.rt14_kept")
    assert not errors(column) and not errors(back), (column, back)


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_renames_that_carry_nothing_are_allowed(hostile, renamed_back, protocol):
    sqls = ["ALTER TABLE public.plain_t RENAME TO rt14_pl", "ALTER TABLE public.rt14_pl RENAME TO plain_t",
            "ALTER TABLE public.plain_t RENAME COLUMN id TO rt14_id", "ALTER TABLE public.plain_t RENAME COLUMN rt14_id TO id",
            "ALTER TABLE public.stamped RENAME TO rt14_st", "ALTER TABLE public.rt14_st RENAME TO stamped",
            "ALTER TABLE public.keyed RENAME TO rt14_k", "ALTER TABLE public.rt14_k RENAME TO keyed",
            "COMMENT ON TABLE public.things IS 'rt14'", "COMMENT ON TABLE public.things IS NULL"]
    for sql, answer in zip(sqls, _run(hostile, "migrators", protocol, *sqls)):
        assert not errors(answer), (sql, answer)


@pytest.mark.parametrize("sql", [
    "ALTER TABLE public.audited RENAME TO a", "ALTER TABLE public.audited SET SCHEMA app",
    "ALTER INDEX public.audited RENAME TO a", "ALTER TABLE public.audited RENAME COLUMN id TO a",
])
def test_a_rename_is_judged_by_what_the_relation_runs(hostile, sql):
    analysis = analyze_sql(sql, SqlContext(hostile.app.catalog.current, user=APP_USER))
    assert "delete" in analysis.kinds and "secret.things" in analysis.tables, analysis


@pytest.fixture
def not_valid(hostile, server):
    test_hostile.made(hostile, server, "INSERT INTO public.checked_t VALUES (1)",
                      "ALTER TABLE public.checked_t ADD CONSTRAINT rt14_nv CHECK (public.wipe_if_armed()) NOT VALID",
                      "DROP TABLE IF EXISTS public.rt14_dt", "CREATE TABLE public.rt14_dt (p public.plain)",
                      "INSERT INTO public.rt14_dt VALUES (1)",
                      "ALTER DOMAIN public.plain ADD CONSTRAINT rt14_d CHECK (public.wipe_if_armed()) NOT VALID")
    yield server
    server.conn.execute("ALTER TABLE public.checked_t DROP CONSTRAINT IF EXISTS rt14_nv; DELETE FROM public.checked_t; "
                        "ALTER DOMAIN public.plain DROP CONSTRAINT IF EXISTS rt14_d; DROP TABLE IF EXISTS public.rt14_dt")
    test_hostile.read_catalog_again(hostile, "a constraint dropped")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_validating_a_check_runs_it(hostile, not_valid, protocol):
    # (policies "migrators" and "truncators": the CHECK, armed, emptied secret.things over the table's row)
    # (and a domain's, over the column of public.rt14_dt)
    for sql, name in [("ALTER TABLE public.checked_t VALIDATE CONSTRAINT rt14_nv", "rt14_nv"),
                      ("ALTER DOMAIN public.plain VALIDATE CONSTRAINT rt14_d", "rt14_d")]:
        for policy in ("migrators", "truncators"):
            _armed, answer = _run(hostile, policy, protocol, "SET hostile.armed = on", sql)
            assert_refused(answer, sql)
            assert _one(not_valid.conn, SECRET) == 3, (policy, sql)
            assert not _one(not_valid.conn, f"SELECT convalidated FROM pg_constraint WHERE conname = '{name}'")


@pytest.fixture
def no_schema(hostile, server):
    server.reset()
    yield server
    server.conn.execute("DROP SCHEMA IF EXISTS rt14 CASCADE")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trigger_made_by_create_schema_is_judged(hostile, no_schema, protocol):
    # (policies "migrators" and "truncators": the trigger's function, never judged, emptied secret.things
    # at the INSERT in the same transaction, or the same Query)
    schema = ("CREATE SCHEMA rt14 CREATE TABLE t (a int) "
              "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION public.audit_wipe()")
    for policy in ("migrators", "truncators"):
        _begin, making, _insert, _commit = _run(hostile, policy, protocol, "BEGIN", schema,
                                                "INSERT INTO rt14.t VALUES (1)", "COMMIT")
        assert_refused(making, schema)
        assert _one(no_schema.conn, SECRET) == 3, policy
    if protocol == "simple":
        sql = f"{schema}; INSERT INTO rt14.t VALUES (1)"
        (answer,) = _run(hostile, "migrators", protocol, sql)
        assert_refused(answer, sql)
        assert _one(no_schema.conn, SECRET) == 3
    made, dropped = _run(hostile, "migrators", protocol, "CREATE SCHEMA rt14 CREATE TABLE t (a int)", "DROP SCHEMA rt14 CASCADE")
    assert not errors(made) and not errors(dropped), (made, dropped)  # (a plain schema element is allowed)


@pytest.fixture
def parented(hostile, server):
    drop = ("DROP VIEW IF EXISTS public.rt14_v; "
            "DROP TABLE IF EXISTS public.rt14_l, public.rt14_i, public.rt14_pt, public.rt14_pp2, public.rt14_ct")
    test_hostile.made(hostile, server, drop, "CREATE TABLE public.rt14_pt (id int) PARTITION BY RANGE (id)",
                      "CREATE TRIGGER rt14_pt_w AFTER INSERT ON public.rt14_pt FOR EACH ROW EXECUTE FUNCTION "
                      "public.audit_wipe()", "CREATE TABLE public.rt14_pp2 (id int)")
    yield server
    server.conn.execute(drop)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_table_made_or_attached_takes_on_its_parents_code(hostile, parented, protocol):
    # (policy "truncators": secret.* refused; public.defaulted's default and public.rt14_pt's row
    # trigger empty secret.things; the table made or attached, then written, in one transaction)
    for make, insert in [
            ("CREATE TABLE public.rt14_l (LIKE public.defaulted INCLUDING DEFAULTS)", "INSERT INTO public.rt14_l (id) VALUES (1)"),
            ("CREATE TABLE public.rt14_i () INHERITS (public.defaulted)", "INSERT INTO public.rt14_i (id) VALUES (1)"),
            ("CREATE TABLE public.rt14_pp PARTITION OF public.rt14_pt FOR VALUES FROM (0) TO (100)",
             "INSERT INTO public.rt14_pp VALUES (1)"),
            ("ALTER TABLE public.rt14_pt ATTACH PARTITION public.rt14_pp2 FOR VALUES FROM (0) TO (100)",
             "INSERT INTO public.rt14_pp2 VALUES (1)"),
            ("CREATE VIEW public.rt14_v AS SELECT id FROM public.defaulted", "INSERT INTO public.rt14_v VALUES (1)"),
            ("CREATE VIEW public.rt14_v AS SELECT id FROM public.audited", "DELETE FROM public.rt14_v"),
            # (a column of public.dom_t's domain, whose default deletes when armed)
            ("CREATE TABLE public.rt14_ct AS SELECT * FROM public.dom_t", "INSERT INTO public.rt14_ct (id) VALUES (1)"),
            ("SELECT * INTO public.rt14_ct FROM public.dom_t", "INSERT INTO public.rt14_ct (id) VALUES (1)")]:
        _armed, _begin, making, _insert, _commit = _run(hostile, "truncators", protocol, "SET hostile.armed = on", "BEGIN",
                                                        make, insert, "COMMIT")
        assert_refused(making, make)
        assert _one(parented.conn, SECRET) == 3, make
    if protocol == "simple":  # (one Query, policy "migrators")
        sql = "CREATE TABLE public.rt14_l (LIKE public.defaulted INCLUDING DEFAULTS); INSERT INTO public.rt14_l (id) VALUES (1)"
        (answer,) = _run(hostile, "migrators", protocol, sql)
        assert_refused(answer, sql)
        assert _one(parented.conn, SECRET) == 3
    made = _run(hostile, "migrators", protocol, "CREATE TABLE public.rt14_l (LIKE public.things INCLUDING ALL)",
                "CREATE VIEW public.rt14_v AS SELECT id FROM public.things")
    assert not any(errors(a) for a in made), made  # (of a table of no code of the database's own)


# ---------------------------------------------------------------------- built-ins that check for a superuser

@pytest.fixture
def admin_checked(hostile, server):
    server.reset()
    yield server
    server.conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots; "
                        "DELETE FROM pg_collation WHERE collnamespace = 'public'::regnamespace")


COLLATIONS = "SELECT count(*) FROM pg_collation WHERE collnamespace = 'public'::regnamespace"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_built_ins_that_check_for_a_superuser_themselves_are_system(hostile, admin_checked, protocol):
    # (policy "bodies": volatile functions allowed, `system` and `server_files` refused; the file came
    # back, the slot and 808 collations were made)
    sqls = ["SELECT pg_read_file_old('/etc/hostname', 0, 100)", "SELECT pg_create_physical_replication_slot('rt14_p', true)",
            "SELECT pg_import_system_collations('public')", "SELECT pg_logical_emit_message(true, 'rt14', 'x')",
            "SELECT pg_rotate_logfile_old()"]
    for sql, answer in zip(sqls, _run(hostile, "bodies", protocol, *sqls)):
        assert_refused(answer, sql)
        assert "system administration" in errors(answer)[0].message, (sql, errors(answer))
    assert _one(admin_checked.conn, "SELECT count(*) FROM pg_replication_slots") == 0
    assert _one(admin_checked.conn, COLLATIONS) == 0


@pytest.mark.parametrize("sql", [
    "SELECT pg_drop_replication_slot('s')", "SELECT pg_replication_slot_advance('s', '0/0')",
    "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", "SELECT pg_copy_physical_replication_slot('a', 'b')",
    "SELECT pg_create_logical_replication_slot('s', 'test_decoding')", "SELECT pg_nextoid('t', 'id', 't_pkey')",
])
def test_what_checks_for_a_superuser_itself_is_system(sql):
    assert "system" in analyze_sql(sql).kinds


# ---------------------------------------------------------------------- comments

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_comment_on_a_protected_table_names_it(hostile, server, protocol):
    # (policy "migrators": secret.* refused; the comments were made)
    server.reset()
    comments = "SELECT count(*) FROM pg_description WHERE objoid = 'secret.things'::regclass"
    sqls = ["COMMENT ON TABLE secret.things IS 'rt14'", "COMMENT ON COLUMN secret.things.n IS 'rt14'",
            "COMMENT ON CONSTRAINT things_pkey ON secret.things IS 'rt14'"]
    try:
        for sql, answer in zip(sqls, _run(hostile, "migrators", protocol, *sqls)):
            assert_refused(answer, sql)
            assert "secret.things" in errors(answer)[0].message, (sql, errors(answer))
        assert _one(server.conn, comments) == 0
    finally:
        server.conn.execute("COMMENT ON TABLE secret.things IS NULL; COMMENT ON COLUMN secret.things.n IS NULL; "
                            "COMMENT ON CONSTRAINT things_pkey ON secret.things IS NULL")


# ---------------------------------------------------------------------- controls

@pytest.fixture
def deleter(hostile, server):
    test_hostile.made(hostile, server, "DROP FUNCTION IF EXISTS public.rt14_del1(int)",
                      "DROP PROCEDURE IF EXISTS public.rt14_pc()",
                      "CREATE FUNCTION public.rt14_del1(int) RETURNS int LANGUAGE sql "
                      "AS 'DELETE FROM public.things WHERE id = $1 RETURNING id'",
                      "CREATE PROCEDURE public.rt14_pc() LANGUAGE plpgsql "
                      "AS $$ BEGIN DELETE FROM public.things WHERE id > 0; COMMIT; END $$")
    yield server
    server.conn.execute("DROP FUNCTION IF EXISTS public.rt14_del1(int); DROP PROCEDURE IF EXISTS public.rt14_pc()")


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_cursors_procedures_and_savepoints_are_counted(hostile, deleter, protocol):
    # (policy "capped", rows_written 2: each would delete 5 rows)
    declare = "DECLARE c SCROLL CURSOR FOR SELECT public.rt14_del1(g) FROM generate_series(1, 5) AS g"
    for fetch in ("FETCH 5 FROM c", "MOVE FORWARD ALL IN c", "SELECT * FROM cursor_to_xml('c', 5, false, false, '')"):
        answers = _run(hostile, "capped", protocol, "BEGIN", declare, fetch, "COMMIT")
        assert not errors(answers[1]), answers[1]
        assert_refused(answers[2], fetch)
        assert _one(deleter.conn, "SELECT count(*) FROM public.things") == 5, fetch
    (called,) = _run(hostile, "capped", protocol, "CALL public.rt14_pc()")
    assert_refused(called, "CALL public.rt14_pc()")
    answers = _run(hostile, "capped", protocol, "BEGIN", "SAVEPOINT a", "DELETE FROM public.things WHERE id > 0",
                   "ROLLBACK TO a", "COMMIT")
    assert_refused(answers[2], "DELETE between SAVEPOINT and ROLLBACK TO")
    assert _one(deleter.conn, "SELECT count(*) FROM public.things") == 5


@pytest.mark.parametrize("protocol", ["extended"])  # (controls: one protocol)
def test_controls_names_and_files_refused_before_this_round(hostile, server, protocol):
    server.reset()
    server.conn.execute("SELECT lo_from_bytea(4343, 'rt14')")
    try:
        for policy, sql in [
            ("truncators", "DO $$ BEGIN EXECUTE 'DELETE FROM sec' || 'ret.things WHERE id = 1'; END $$"),
            ("truncators", "SELECT * FROM query_to_xml('SELECT * FROM sec' || 'ret.things', true, false, '')"),
            ("bodies", "SELECT lo_export(4343, '/tmp/rt14-lo')"),
            ("bodies", "SELECT lo_import('/etc/hostname')"),
            ("migrators", "ALTER VIEW public.leak RENAME TO rt14_v"),
        ]:
            (answer,) = _run(hostile, policy, protocol, sql)
            assert_refused(answer, sql)
        _set, deleting, reading = _run(hostile, "design", protocol, "SET search_path = pg_temp, secret",
                                       "DELETE FROM things WHERE id = 1", "SELECT * FROM things")
        assert_refused(deleting, "DELETE FROM things")
        assert_refused(reading, "SELECT * FROM things")
        assert _one(server.conn, SECRET) == 3
        assert _one(server.conn, "SELECT count(*) FROM pg_largeobject_metadata") == 1
        assert not _rows(reading)
    finally:
        server.reset()
