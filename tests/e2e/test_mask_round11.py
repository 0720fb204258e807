"""Red team eleven (masking, 2026-12-07, hunt 11b): what the server does with a masked value on
its own side of a statement, where no result carries it: the schema's triggers putting what they
read into rows, COPY's server files and programs, CLUSTER's row order, ANALYZE's errors; and a
sweep of the brief's list (errors and DETAILs, EXPLAIN, statistics, cursors, COPY binary, large
objects, statements' text, record/JSON/XML/array wrappers, ordering and comparison oracles,
hashes), kept as controls.
Round three's database and masks (tests/e2e/test_mask_round3.py) under its POLICY (default allow;
roles and system blocked: the agent may create tables, functions and views). Each test of
sections 1 to 4 failed before its fix.

Found, closed:

* the documented limit of round ten, a trigger of the schema's own **putting what it reads of a
  masked table into rows**: a BEFORE row trigger on ``orders`` doing ``NEW.memo := (SELECT ssn
  FROM users u WHERE u.id = NEW.user_id)`` gave ``INSERT INTO orders VALUES (5, 1, 1) RETURNING
  memo`` (and a later ``SELECT memo FROM orders``) ``812-57-3964``; an AFTER trigger filling an
  audit table from ``users`` gave ``SELECT * FROM r11_audit`` the SSN; an INSTEAD OF row trigger of
  a view filling a column of ``NEW`` gave ``INSERT INTO r11_ov ... RETURNING at`` the SSN. The
  catalog says which triggers a write fires and when (``pg_trigger.tgtype``, now read: effects
  'B' for a BEFORE row trigger on INSERT/UPDATE, 'J' for an INSTEAD OF one), the analysis which
  tables their bodies read (``Analysis.carried_tables`` / ``returned_tables``): a write firing
  such a trigger (or one that writes tables) whose body reads a table holding masked columns is
  refused (an INSTEAD OF one under RETURNING);
* ``COPY users TO '/tmp/f'`` then ``COPY mine FROM '/tmp/f'`` (and ``TO PROGRAM`` / ``FROM
  PROGRAM``) put every SSN into the agent's table in clear: COPY to a server file or program that
  may read masked columns, and COPY from one in a masking session (the file may hold any value:
  an export, the server's log), are refused;
* ``CLUSTER users USING <an index on ssn>`` (an operator's index; CLUSTER is maintenance, which
  POLICY allows) wrote the table in SSN order, and a plain ``SELECT id FROM users`` then returned
  the ids in that order; with a probe row the agent wrote (``INSERT INTO users (id, name, ssn)
  VALUES (3, 'probe', '5')``, then CLUSTER again) the order told whether each SSN sorts before
  the probe: a binary search. CLUSTER of a table holding masked columns (or bare CLUSTER) is
  refused in a masking session.

* ``CREATE STATISTICS r11_st ON ((salary::text::int)), name FROM users`` was made (extended
  statistics were not DDL on the table), and a bare ``ANALYZE`` (or ``VACUUM ANALYZE``: every
  table, none named) computed the expression over every row and answered ``invalid input syntax
  for type integer: "7342195.37"`` in clear (an expression failing on the first digit, a
  statement that fails or not). CREATE STATISTICS on a table holding masked columns is now
  refused as CREATE INDEX is, and the messages of maintenance naming no table are withheld as a
  reader's in a masking session (the schema's own expressions run there too).

Closed after (sections 6 and 7), on round eleven's own limit:

* ``SET enable_seqscan = off; SELECT id FROM users`` with an operator's index on ``(ssn, id)``
  and the probe row: ``[(2,), (3,), (1,)]``, the SSN order (so with ``SET LOCAL``, ``set_config``,
  ``SET seq_page_cost = 1000``, a function's ``SET enable_seqscan = off`` clause, a body's
  ``set_config``, ``ALTER DATABASE ... SET`` for the next session): a change of a setting the
  server files under "Query Tuning" (pg_settings.category, now in the catalog) is refused in a
  masking session;
* with no setting changed, the planner's own Index Scan of an index on ``(name, ssn)`` in a large
  table: ``SELECT id FROM users WHERE name = 'alice'`` gave ``[(3,), (1,)]`` (the probe's SSN '5'
  sorts before alice's), and ``array_agg``, ``string_agg`` over a sub-select, ``LIMIT 1`` under an
  ``ORDER BY id`` the same: the plan check reads the key columns of each index the plan scans and
  refuses a scan in a masked column's order that no ORDER BY on a unique column undoes;
* round eleven's false refusal: a DELETE or UPDATE of ``orders`` under an AFTER INSERT audit
  trigger reading ``users`` (or an UPDATE under a BEFORE INSERT one) was refused: the triggers'
  events are read (pg_trigger.tgtype) and only those the write fires count.

Left (reported, not changed, before the section 6 fix): the same order through an **index scan** the planner picks without
an ORDER BY: with an operator's index on ``(ssn, id)`` (or ``(ssn) INCLUDE (id)``), ``SET
enable_seqscan = off; SELECT id FROM users`` is an Index Only Scan returning the ids in SSN order
(and the probe row answers the same binary search). The plan check asks its question without the
session's planner settings and the catalog does not list indexes' columns; see docs/masking.md,
"Limits". And false refusals of this round's fix: a write of a table whose trigger reads
``users`` is refused whatever columns the body reads and whatever event the trigger is for when
its function writes (an AFTER INSERT audit trigger makes a DELETE of ``orders`` refused too).
"""

from __future__ import annotations

import os
import uuid

import pytest
from test_mask_round3 import DB, POLICY, Session, direct, leaked, rtdb, start  # noqa: F401 (fixtures)


@pytest.fixture
def operator(request):
    return request.getfixturevalue("direct")


@pytest.fixture
def agent(request, make_pgwarden, tmp_path, operator):
    """An agent under POLICY, made after the operator's setup (``make()``; a second ``make()`` is
    another session of the same pgwarden)."""
    request.getfixturevalue("rtdb")
    made = []
    started = []

    def make() -> Session:
        if not started:
            started.append(start(make_pgwarden, tmp_path, POLICY))
        s = Session(started[0])
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def _searched(s: Session, *sqls: str) -> list[dict]:
    """``sqls`` run in order in ``s``; asserts nothing received meanwhile holds a secret."""
    before = len(s.received)
    answers = [s.run(sql) for sql in sqls]
    got = s.received[before:] + repr((answers, s.notices)).encode()
    assert not leaked(got), (leaked(got), answers, s.notices)
    return answers


def _refused(r: dict) -> bool:
    return r["err"] is not None and r["err"][0] == "42501"


def _covered(r: dict) -> bool:
    """Refused as a read an index only scan of an index on a masked column could answer in its
    order (round twelve)."""
    return _refused(r) and "an index only scan of it holds every column" in r["err"][1]


# ------------------------------------------------------------------ 1. the schema's triggers putting masked values into rows
SCHEMA_TRIGGERS = """
ALTER TABLE orders ADD COLUMN IF NOT EXISTS memo text;
CREATE TABLE IF NOT EXISTS r11_audit (v text);
CREATE OR REPLACE FUNCTION r11_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.memo := (SELECT ssn FROM users u WHERE u.id = NEW.user_id); RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION r11_aud() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO r11_audit SELECT ssn FROM users u WHERE u.id = NEW.user_id; RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION r11_io() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.at := (SELECT ssn FROM users u WHERE u.id = NEW.user_id); RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION r11_helper(i int) RETURNS text LANGUAGE sql STABLE AS $$
SELECT ssn FROM users WHERE id = i $$;
CREATE OR REPLACE FUNCTION r11_call() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.memo := r11_helper(NEW.user_id); RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION r11_own() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.memo := 'amount ' || NEW.amount; RETURN NEW; END $$;
CREATE OR REPLACE VIEW r11_ov AS SELECT id, user_id, amount, ''::text AS at FROM orders;
"""
ARMING = {
    # the trigger the schema arms, then what the agent runs (a write, then a read of what it wrote)
    "before-returning": ("CREATE TRIGGER r11_t BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                         ["INSERT INTO orders VALUES (5, 1, 1) RETURNING memo"]),
    "before-read-back": ("CREATE TRIGGER r11_t BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                         ["INSERT INTO orders (id, user_id, amount) VALUES (5, 1, 1)", "SELECT id, memo FROM orders"]),
    "before-update": ("CREATE TRIGGER r11_t BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                      ["UPDATE orders SET amount = 3 WHERE id = 1 RETURNING *"]),
    "before-helper": ("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_call()",
                      ["INSERT INTO orders VALUES (5, 1, 1) RETURNING memo"]),
    "before-cte": ("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                   ["WITH w AS (INSERT INTO orders VALUES (5, 1, 1) RETURNING memo) SELECT * FROM w"]),
    "before-prepared": ("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                        ["PREPARE r11_p AS INSERT INTO orders VALUES (5, 1, 1) RETURNING memo", "EXECUTE r11_p"]),
    "before-merge": ("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                     ["MERGE INTO orders o USING (SELECT 5 AS id) s ON o.id = s.id "
                      "WHEN NOT MATCHED THEN INSERT VALUES (5, 1, 1)", "SELECT id, memo FROM orders"]),
    "after-audit": ("CREATE TRIGGER r11_t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_aud()",
                    ["INSERT INTO orders VALUES (5, 1, 1)", "SELECT * FROM r11_audit"]),
    "instead-of-returning": ("CREATE TRIGGER r11_t INSTEAD OF INSERT OR UPDATE ON r11_ov FOR EACH ROW "
                             "EXECUTE FUNCTION r11_io()",
                             ["INSERT INTO r11_ov VALUES (9, 1, 1, 'x') RETURNING at"]),
    "instead-of-update": ("CREATE TRIGGER r11_t INSTEAD OF INSERT OR UPDATE ON r11_ov FOR EACH ROW "
                          "EXECUTE FUNCTION r11_io()",
                          ["UPDATE r11_ov SET amount = 4 WHERE id = 1 RETURNING *"]),
}


@pytest.fixture
def schema_triggers(operator):
    operator.execute(SCHEMA_TRIGGERS)
    yield operator
    operator.execute("DROP TRIGGER IF EXISTS r11_t ON orders; DROP TRIGGER IF EXISTS r11_t ON r11_ov; "
                     "DROP VIEW IF EXISTS r11_ov; DROP FUNCTION IF EXISTS r11_fill(), r11_aud(), r11_io(), "
                     "r11_call(), r11_own(); DROP FUNCTION IF EXISTS r11_helper(int); DROP TABLE IF EXISTS r11_audit; "
                     "DELETE FROM orders WHERE id > 2; UPDATE orders SET amount = id * 10; "
                     "ALTER TABLE orders DROP COLUMN IF EXISTS memo")


@pytest.mark.parametrize("case", list(ARMING))
def test_a_trigger_putting_a_masked_value_into_rows_refuses_the_write(agent, schema_triggers, case):
    # Received before the fix: `INSERT INTO orders VALUES (5, 1, 1) RETURNING memo` ->
    # [('812-57-3964',)]; `SELECT id, memo FROM orders` -> [..., (5, '812-57-3964')]; the audit
    # table's row; the INSTEAD OF trigger's `at`. The write is now refused; nothing was stored.
    arm, statements = ARMING[case]
    schema_triggers.execute(arm)
    s = agent()
    answers = _searched(s, *statements)
    assert _refused(answers[0]), answers
    assert "triggers read public.users" in answers[0]["err"][1], answers
    stored = schema_triggers.execute("SELECT count(*) FROM orders WHERE id > 2 OR amount <> id * 10").fetchone()[0]
    audited = schema_triggers.execute("SELECT count(*) FROM r11_audit").fetchone()[0]
    assert (stored, audited) == (0, 0), (stored, audited)


@pytest.mark.parametrize("language", ["sql", "plpgsql"])
def test_a_function_writing_through_such_a_trigger_is_refused(agent, schema_triggers, language):
    # The control: the agent's function doing the write (`INSERT ... RETURNING memo` in its body)
    # reaches the trigger too: refused (it reads masked columns, by its trigger, and writes).
    schema_triggers.execute("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()")
    body = ("$$ INSERT INTO orders VALUES (5, 1, 1) RETURNING memo $$" if language == "sql" else
            "$$ DECLARE v text; BEGIN INSERT INTO orders VALUES (5, 1, 1) RETURNING memo INTO v; RETURN v; END $$")
    s = agent()
    try:
        answers = _searched(s, f"CREATE FUNCTION r11_ins() RETURNS text LANGUAGE {language} AS {body}",
                            "SELECT r11_ins()")
        assert answers[0]["err"] is None and _refused(answers[1]), answers
        assert schema_triggers.execute("SELECT count(*) FROM orders WHERE id > 2").fetchone()[0] == 0
    finally:
        schema_triggers.execute("DROP FUNCTION IF EXISTS r11_ins()")


def test_a_trigger_reading_no_masked_table_still_fills_rows(agent, schema_triggers):
    # The control: a BEFORE trigger computing from the row itself.
    schema_triggers.execute("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_own()")
    s = agent()
    r = _searched(s, "INSERT INTO orders VALUES (5, 1, 7) RETURNING memo")[0]
    assert r["err"] is None and r["rows"] == [("amount 7",)], r


def test_an_instead_of_trigger_without_returning_goes_on(agent, schema_triggers):
    # The control: an INSTEAD OF trigger reading `users` under a write without RETURNING (the
    # row it returns is not shown; what it raises is withheld: round ten's).
    schema_triggers.execute("CREATE TRIGGER r11_t INSTEAD OF INSERT ON r11_ov FOR EACH ROW EXECUTE FUNCTION r11_io()")
    s = agent()
    r = _searched(s, "INSERT INTO r11_ov VALUES (9, 1, 1, 'x')")[0]
    assert r["err"] is None, r


# ------------------------------------------------------------------ 2. COPY to and from the server's files and programs
@pytest.fixture
def server_file(operator):
    path = f"/tmp/pgwarden-r11-{uuid.uuid4().hex}.csv"
    operator.execute("CREATE TABLE IF NOT EXISTS r11_mine (v text)")
    yield path
    operator.execute("DROP TABLE IF EXISTS r11_mine")
    try:
        os.remove(path)
    except OSError:
        pass


@pytest.mark.parametrize("via", ["file", "program"])
def test_copy_through_a_server_file_copies_nothing(agent, server_file, operator, via):
    # Received before the fix: `COPY (SELECT ssn FROM users) TO '/tmp/f'`, `COPY r11_mine FROM
    # '/tmp/f'`, `SELECT * FROM r11_mine` -> [('812-57-3964',), ('345-67-8901',)].
    out = f"'{server_file}'" if via == "file" else f"PROGRAM 'cat > {server_file}'"
    into = f"'{server_file}'" if via == "file" else f"PROGRAM 'cat {server_file}'"
    s = agent()
    answers = _searched(s, f"COPY (SELECT ssn FROM users) TO {out}", f"COPY users TO {out}")
    assert all(_refused(r) for r in answers), answers
    operator.execute(f"COPY (SELECT ssn FROM users) TO '{server_file}'")  # (as if written before)
    answers = _searched(s, f"COPY r11_mine FROM {into}", "SELECT * FROM r11_mine")
    assert _refused(answers[0]), answers
    assert answers[1]["rows"] == [], answers
    assert operator.execute("SELECT count(*) FROM r11_mine").fetchone()[0] == 0


def test_copy_to_a_server_file_of_unmasked_columns_goes_on(agent, server_file):
    # The control: a server file of columns no rule masks is written.
    s = agent()
    r = _searched(s, f"COPY (SELECT id, name FROM users) TO '{server_file}'")[0]
    assert r["err"] is None, r


# ------------------------------------------------------------------ 3. CLUSTER: the rows in the order of a masked column
@pytest.fixture
def ssn_index(operator):
    operator.execute("CREATE INDEX IF NOT EXISTS r11_ssn ON users (ssn)")
    yield operator
    operator.execute("DROP INDEX IF EXISTS r11_ssn; DELETE FROM users WHERE id > 2; CLUSTER users USING users_pkey; "
                     "ALTER TABLE users SET WITHOUT CLUSTER")


@pytest.mark.parametrize("cluster", ["CLUSTER users USING r11_ssn", "CLUSTER VERBOSE users USING r11_ssn"])
def test_cluster_on_a_masked_column_orders_nothing(agent, ssn_index, cluster):
    # Received before the fix, after the agent's probe row and `CLUSTER users USING r11_ssn`:
    # `SELECT id FROM users` -> [(2,), (3,), (1,)]: bob's SSN sorts before '5', alice's after.
    s = agent()
    answers = _searched(s, "INSERT INTO users (id, name, ssn) VALUES (3, 'probe', '5')", cluster,
                        "SELECT id FROM users")
    assert answers[0]["err"] is None, answers
    assert _refused(answers[1]), answers
    assert answers[2]["rows"] == [(1,), (2,), (3,)], answers  # the order they were written in


def test_cluster_reusing_a_clustered_index_orders_nothing(agent, ssn_index):
    # `CLUSTER users` (or bare CLUSTER) reuses the index an operator clustered on before.
    ssn_index.execute("CLUSTER users USING r11_ssn")
    s = agent()
    answers = _searched(s, "CLUSTER users", "CLUSTER")
    assert all(_refused(r) for r in answers), answers


def test_cluster_of_a_table_without_masked_columns_goes_on(agent, operator):
    # The control: the agent's own table.
    s = agent()
    try:
        answers = _searched(s, "CREATE TABLE r11_own (id int PRIMARY KEY)", "CLUSTER r11_own USING r11_own_pkey",
                            "CLUSTER r11_own")
        assert all(r["err"] is None for r in answers), answers
    finally:
        operator.execute("DROP TABLE IF EXISTS r11_own")


# ------------------------------------------------------------------ 4. ANALYZE of every table: statistics' expressions
def test_statistics_on_a_masked_table_are_refused(agent, operator):
    # Received before the fix: `CREATE STATISTICS r11_st ON ((salary::text::int)), name FROM
    # users` was made (CREATE STATISTICS was not DDL on the table), and a bare `ANALYZE` (every
    # table: none named) answered `invalid input syntax for type integer: "7342195.37"`.
    s = agent()
    try:
        answers = _searched(s, "CREATE STATISTICS r11_st ON ((salary::text::int)), name FROM users", "ANALYZE",
                            "CREATE STATISTICS r11_st2 ON ((1 / (ascii(ssn) - 56))), name FROM users")
        assert _refused(answers[0]) and _refused(answers[2]), answers
        assert answers[1]["err"] is None, answers
    finally:
        operator.execute("DROP STATISTICS IF EXISTS r11_st, r11_st2")


@pytest.mark.parametrize("sql", ["ANALYZE", "VACUUM ANALYZE", "ANALYZE VERBOSE", "VACUUM (ANALYZE, VERBOSE)"])
def test_analyze_of_every_table_says_nothing_in_clear(agent, operator, sql):
    # The schema's statistics object (or one made before the session) whose expression fails on
    # the salary: a bare ANALYZE quoted it, `invalid input syntax for type integer: "7342195.37"`.
    # Maintenance naming no table runs every table's stored expressions: its messages are now
    # withheld as a reader's (the SQLSTATE stays).
    operator.execute("CREATE STATISTICS IF NOT EXISTS r11_st ON ((salary::text::int)), name FROM users")
    s = agent()
    try:
        r = _searched(s, sql)[0]
        assert r["err"] is not None and r["err"][0] == "22P02" and "message withheld" in r["err"][1], r
    finally:
        operator.execute("DROP STATISTICS IF EXISTS r11_st")


def test_maintenance_of_a_table_without_masked_columns_keeps_its_messages(agent, operator):
    # The control: statistics on the agent's own table are made, and ANALYZE of it speaks.
    s = agent()
    try:
        answers = _searched(s, "CREATE TABLE r11_own (a int, b int)", "CREATE STATISTICS r11_own_st ON a, b FROM r11_own",
                            "ANALYZE VERBOSE r11_own")
        assert all(r["err"] is None for r in answers), answers
        assert any("r11_own" in n for n in s.notices), s.notices
    finally:
        operator.execute("DROP TABLE IF EXISTS r11_own")


# ------------------------------------------------------------------ 5. controls: masked or refused
# Each statement of the sweep, in order in one session (some set up the next): nothing secret is
# received; "refused": 42501; "masked": answered, with rows; "withheld": the message withheld.
CONTROLS = [
    ("CREATE TABLE r11_c (id int, v text UNIQUE)", "ok"),
    ("INSERT INTO r11_c SELECT id, ssn FROM users", "refused"),
    ("SELECT * INTO r11_c2 FROM users", "refused"),
    ("CREATE MATERIALIZED VIEW r11_mv AS SELECT id, upper(ssn) AS u FROM users", "refused"),
    ("SELECT id FROM users WHERE ssn < '5'", "refused"),
    ("SELECT min(ssn) FROM users", "refused"),
    ("SELECT array_agg(id ORDER BY ssn) FROM users", "refused"),
    ("SELECT id, ntile(2) OVER (ORDER BY ssn) FROM users", "refused"),
    ("SELECT id FROM users ORDER BY 3", "refused"),
    ("SELECT id FROM (SELECT * FROM users ORDER BY ssn) s", "refused"),
    ("SELECT count(*) FROM (SELECT ssn FROM users INTERSECT SELECT '812-57-3964') s", "refused"),
    ("SELECT id FROM users WHERE position('8' in ssn) = 1", "refused"),
    ("SELECT id, md5(ssn), ssn LIKE '8%', position('8' in ssn) FROM users", "masked"),
    ("SELECT id, ARRAY[ssn < '5'], ROW(ssn < '5', id), json_build_object('a', ssn) FROM users", "masked"),
    ("SELECT x.ssn FROM jsonb_populate_record(NULL::users, (SELECT to_jsonb(u) FROM users u WHERE id = 1)) x",
     "masked"),
    ("SELECT table_to_xml('users', true, false, '')", "masked"),
    ("EXPLAIN SELECT * FROM users WHERE ssn = '812-57-3964'", "refused"),
    ("EXPLAIN (ANALYZE, VERBOSE) SELECT ssn FROM users", "refused"),
    ("SELECT pg_logical_emit_message(true, 'p', ssn) FROM users", "refused"),
    ("SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM users", "refused"),
    ("SELECT pg_notify('c', ssn) FROM users", "refused"),
    ("SELECT (pg_input_error_info(ssn, 'int')).message FROM users", "refused"),
    ("CREATE FUNCTION r11_f(i int) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'v %', "
     "(SELECT ssn FROM users WHERE id = i); RETURN 'x'; END $$", "ok"),
    ("SELECT r11_f(1)", "refused"),  # a VOLATILE function reading masked columns (its RAISE)
    ("SELECT id, ssn::int FROM users", "withheld"),
    ("CREATE SCHEMA r11_s", "ok"),
    ("CREATE TABLE r11_s.log (v text)", "ok"),
    ("CREATE FUNCTION r11_s.lower(text) RETURNS text LANGUAGE sql AS $$ INSERT INTO r11_s.log VALUES ($1) "
     "RETURNING $1 $$", "ok"),
    ("SET search_path = r11_s, public, pg_catalog", "ok"),
    ("SELECT lower(ssn) FROM users", "refused"),  # the agent's `lower` first on the path: it keeps
    ("RESET search_path", "ok"),
    ("CREATE FUNCTION r11_sf(s int, x int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
     "INSERT INTO r11_c SELECT id, ssn FROM users; RETURN 0; END $$", "ok"),
    ("CREATE AGGREGATE r11_agg(int) (sfunc = r11_sf, stype = int)", "ok"),
    ("SELECT r11_agg(1)", "refused"),  # its state function reads and keeps
    ("CREATE FUNCTION r11_et() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
     "INSERT INTO r11_c SELECT id, ssn FROM users; END $$", "ok"),
    ("CREATE EVENT TRIGGER r11_et ON ddl_command_end EXECUTE FUNCTION r11_et()", "refused"),
    ("CREATE TABLE r11_p (id int, ssn text) PARTITION BY RANGE (ssn)", "ok"),
    ("ALTER TABLE r11_p ATTACH PARTITION users FOR VALUES FROM ('8') TO ('9')", "refused"),
    ("ALTER TABLE r11_c ADD CONSTRAINT r11_fk FOREIGN KEY (v) REFERENCES users (ssn)", "refused"),
    ("SELECT * FROM r11_c", "ok"),
]


def test_controls_are_masked_or_refused(agent, operator):
    s = agent()
    try:
        for sql, expected in CONTROLS:
            before = len(s.received)
            s.notices.clear()
            r = s.run(sql)
            got = s.received[before:] + repr((r, s.notices)).encode()
            assert not leaked(got), (sql, leaked(got), r, s.notices)
            if expected == "refused":
                assert _refused(r), (sql, r)
            elif expected == "withheld":
                assert r["err"] is not None and "message withheld" in r["err"][1], (sql, r)
            else:
                assert r["err"] is None, (sql, r)
            if expected == "masked":
                assert r["rows"], (sql, r)
        assert s.run("SELECT * FROM r11_c")["rows"] == []
    finally:
        operator.execute("DROP EVENT TRIGGER IF EXISTS r11_et; DROP AGGREGATE IF EXISTS r11_agg(int); "
                         "DROP FUNCTION IF EXISTS r11_sf(int, int), r11_et(), r11_f(int); "
                         "DROP SCHEMA IF EXISTS r11_s CASCADE; DROP TABLE IF EXISTS r11_c, r11_c2, r11_p; "
                         "DROP MATERIALIZED VIEW IF EXISTS r11_mv")


# ------------------------------------------------------------------ 6. the rows' order from an index scan (round eleven's limit)
# An operator's covering index on the masked column, and a probe row the agent writes with
# `ssn = '5'`: `SELECT id FROM users` through an Index Only Scan returns the ids in SSN order,
# and where the probe's id lands tells whether each SSN sorts before '5' (a binary search, as
# CLUSTER's was). Written order: [1, 2, 3]; SSN order: bob '345-...' < probe '5' < alice '812-...'.
SSN_ORDER = [(2,), (3,), (1,)]


@pytest.fixture
def covering_index(operator):
    operator.execute("CREATE INDEX IF NOT EXISTS r11_ssn_id ON users (ssn, id)")
    yield operator
    operator.execute("DROP INDEX IF EXISTS r11_ssn_id; DROP FUNCTION IF EXISTS r11_ord(); "
                     "DELETE FROM users WHERE id > 2; ALTER DATABASE mask_round3 RESET ALL")


SET_PLANNER = {
    # how the agent turns the sequential scan off, then what it runs
    "set": ["SET enable_seqscan = off"],
    "set-local": ["BEGIN", "SET LOCAL enable_seqscan = off"],
    "set-cost": ["SET seq_page_cost = 1000"],
    "set_config": ["SELECT set_config('enable_seqscan', 'off', false)"],
    "function-set-clause": ["CREATE FUNCTION r11_ord() RETURNS text LANGUAGE sql SET enable_seqscan = off "
                            "AS $$ SELECT string_agg(id::text, ',') FROM users $$"],
    "function-body": ["CREATE FUNCTION r11_ord() RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
                      "PERFORM set_config('enable_seqscan', 'off', false); RETURN 'x'; END $$"],
    "function-altered": ["CREATE FUNCTION r11_ord() RETURNS text LANGUAGE sql AS $$ SELECT string_agg(id::text, ',') "
                         "FROM users $$", "ALTER FUNCTION r11_ord() SET enable_seqscan = off"],
    "alter-database": ["ALTER DATABASE mask_round3 SET enable_seqscan = off"],
}


@pytest.mark.parametrize("case", list(SET_PLANNER))
def test_the_planner_settings_are_the_servers(agent, covering_index, case):
    # Received before the fix, after `SET enable_seqscan = off` (or `SET LOCAL`, set_config, a
    # function's SET clause or body, `ALTER DATABASE ... SET` for the next session): `SELECT id
    # FROM users` -> [(2,), (3,), (1,)], the SSN order (`SELECT r11_ord()` -> '2,3,1'). A change of
    # the planner's settings is now refused in a masking session.
    s = agent()
    probe = _searched(s, "INSERT INTO users (id, name, ssn) VALUES (3, 'probe', '5')")[0]
    assert probe["err"] is None, probe
    answers = _searched(s, *SET_PLANNER[case])
    assert _refused(answers[-1]), answers
    assert "planner's settings" in answers[-1]["err"][1], answers
    reads = _searched(s, *(["SELECT r11_ord()"] if case.startswith("function") else []), "SELECT id FROM users")
    s.run("ROLLBACK")
    reads += _searched(agent(), "SELECT id FROM users")
    for r in reads:
        assert r["rows"] not in (SSN_ORDER, [("2,3,1",)]), reads
    # (or refused since round twelve: the index on (ssn, id) holds every column the read names, so
    # an index only scan of it could return them in SSN order, whatever plan pgwarden saw)
    assert reads[-1]["rows"] == [(1,), (2,), (3,)] or _covered(reads[-1]), reads
    stored = covering_index.execute("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d "
                                    "ON d.oid = s.setdatabase WHERE d.datname = 'mask_round3'").fetchone()[0]
    assert stored == 0, stored


@pytest.fixture
def big_users(operator):
    # The schema's: more rows, and an index on (name, ssn) the planner picks by itself for a
    # condition on `name`; it returns the rows of one name in SSN order.
    operator.execute("INSERT INTO users (id, name) SELECT g, 'filler ' || g FROM generate_series(100, 5099) AS g; "
                     "CREATE INDEX IF NOT EXISTS r11_name_ssn ON users (name, ssn); ANALYZE users")
    yield operator
    operator.execute("DROP INDEX IF EXISTS r11_name_ssn; DELETE FROM users WHERE id > 2; ANALYZE users")


NATURAL_ORDER = {
    # what the agent runs after its probe row (id 3, name 'alice', ssn '5'), and what came back
    # before the fix: alice's two rows in SSN order, the probe's before hers ('5' < '812-...')
    "plain": ("SELECT id FROM users WHERE name = 'alice'", [(3,), (1,)]),
    "array_agg": ("SELECT array_agg(id) FROM users WHERE name = 'alice'", [([3, 1],)]),
    "subquery": ("SELECT string_agg(id::text, ',') FROM (SELECT id FROM users WHERE name = 'alice') s", [("3,1",)]),
    "limit": ("SELECT id FROM (SELECT id FROM users WHERE name = 'alice' LIMIT 1) s ORDER BY id", [(3,)]),
}


@pytest.mark.parametrize("case", list(NATURAL_ORDER))
def test_an_index_scan_in_a_masked_columns_order_is_refused(agent, big_users, case):
    # Received before the fix (no setting changed: the planner's own choice, an Index Scan using
    # r11_name_ssn): the values of NATURAL_ORDER, the probe's id first: alice's SSN sorts after
    # '5'. The plan check now reads the index's key columns (pg_index, in its own question's
    # transaction) and refuses a scan in a masked column's order that no ORDER BY on a unique
    # column undoes.
    sql, _before = NATURAL_ORDER[case]
    s = agent()
    answers = _searched(s, "INSERT INTO users (id, name, ssn) VALUES (3, 'alice', '5')", sql)
    assert answers[0]["err"] is None, answers
    assert _refused(answers[1]), answers
    assert "order of an index on masked column public.users.ssn" in answers[1]["err"][1], answers


ORDER_CONTROLS = [
    # (no index on a masked column in their plans, or an ORDER BY on a unique column above it)
    "SELECT id FROM users WHERE name = 'alice' ORDER BY id",
    "SELECT id, ssn FROM users WHERE name = 'alice' ORDER BY id DESC",
    "SELECT name FROM users WHERE id = 1",
    "SELECT id FROM users WHERE id BETWEEN 100 AND 110",
    "SELECT count(*) FROM users",
    "RESET enable_seqscan",
    "SET enable_seqscan TO DEFAULT",
    "RESET ALL",
    "SET work_mem = '8MB'",
    "SET app.tenant = '7'",
    "SELECT set_config('jit', 'off', false)",  # (asyncpg's, around its type introspection: no plan changes)
    "SET jit = on",
    "CREATE TABLE r11_own (id int PRIMARY KEY, v text)",
    "CREATE INDEX r11_own_v ON r11_own (v, id)",
    "INSERT INTO r11_own SELECT g, 'v' || g FROM generate_series(1, 2000) AS g",
    "ANALYZE r11_own",
    "SELECT id FROM r11_own WHERE v = 'v5'",
    "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id ORDER BY o.id",
]


def test_reads_in_no_masked_columns_order_go_on(agent, big_users, operator):
    s = agent()
    try:
        answers = _searched(s, "INSERT INTO users (id, name, ssn) VALUES (3, 'alice', '5')", *ORDER_CONTROLS)
        for sql, r in zip(["insert", *ORDER_CONTROLS], answers, strict=True):
            assert r["err"] is None, (sql, r)
        assert answers[1]["rows"] == [(1,), (3,)], answers
    finally:
        operator.execute("DROP TABLE IF EXISTS r11_own")


def test_planner_settings_refused_by_policy_stay_so(agent, covering_index):
    # The control: a setting named at run time is a role's change to the policy (refused before).
    s = agent()
    r = _searched(s, "SELECT set_config('enable_' || 'seqscan', 'off', false)", "SELECT id FROM users")
    assert _refused(r[0]) and (r[1]["rows"] == [(1,), (2,)] or _covered(r[1])), r


# ------------------------------------------------------------------ 7. the trigger refusal by the events its triggers fire on
EVENT_WRITES = {
    # the trigger the schema arms (reading `users`, writing the audit table or the row), then a write
    # of another event, which does not fire it
    "after-insert-delete": ("CREATE TRIGGER r11_t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_aud()",
                            "DELETE FROM orders WHERE id = 2"),
    "after-insert-update": ("CREATE TRIGGER r11_t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_aud()",
                            "UPDATE orders SET amount = 21 WHERE id = 2"),
    "before-insert-update": ("CREATE TRIGGER r11_t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_fill()",
                             "UPDATE orders SET amount = 21 WHERE id = 2 RETURNING memo"),
}


@pytest.mark.parametrize("case", list(EVENT_WRITES))
def test_a_write_its_triggers_do_not_fire_on_goes_on(agent, schema_triggers, case):
    # Refused before the fix (round eleven's false refusal: `triggers read public.users` for a
    # DELETE of `orders` whose only trigger is AFTER INSERT). pg_trigger.tgtype's events are now
    # read (effects 'I', 'U', 'D', 'Y'): a write is refused only for the triggers its event fires.
    arm, sql = EVENT_WRITES[case]
    schema_triggers.execute(arm)
    s = agent()
    try:
        r = _searched(s, sql)[0]
        assert r["err"] is None, r
        done = schema_triggers.execute("SELECT count(*) FROM orders WHERE id = 2").fetchone()[0]
        changed = schema_triggers.execute("SELECT amount FROM orders WHERE id = 2").fetchone()
        audited = schema_triggers.execute("SELECT count(*) FROM r11_audit").fetchone()[0]
        assert audited == 0, audited
        assert (done == 0) if case.endswith("delete") else (changed == (21,)), (done, changed)
    finally:
        schema_triggers.execute("DROP TRIGGER IF EXISTS r11_t ON orders; INSERT INTO orders SELECT 2, 2, 20 "
                                "WHERE NOT EXISTS (SELECT FROM orders WHERE id = 2)")


@pytest.mark.parametrize("sql", ["INSERT INTO orders VALUES (5, 1, 1)",
                                 "INSERT INTO orders VALUES (2, 1, 1) ON CONFLICT DO NOTHING",
                                 "MERGE INTO orders o USING (SELECT 2 AS id) s ON o.id = s.id "
                                 "WHEN MATCHED THEN DELETE"])
def test_a_write_of_the_triggers_event_is_still_refused(agent, schema_triggers, sql):
    # The control: an INSERT (and a MERGE, which may insert) with the AFTER INSERT audit trigger.
    schema_triggers.execute("CREATE TRIGGER r11_t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r11_aud()")
    s = agent()
    r = _searched(s, sql)[0]
    assert _refused(r), r
    assert schema_triggers.execute("SELECT count(*) FROM r11_audit").fetchone()[0] == 0


@pytest.mark.parametrize("prepare", [False, True])
def test_an_index_scan_in_a_masked_columns_order_is_refused_with_parameters(agent, big_users, prepare):
    # The same read through the extended protocol, the name a parameter (the plan question is the
    # statement's generic plan): refused as the text is.
    s = agent()
    answers = _searched(s, "INSERT INTO users (id, name, ssn) VALUES (3, 'alice', '5')")
    r = s.run("SELECT id FROM users WHERE name = %s", ("alice",), prepare=prepare)
    assert answers[0]["err"] is None and _refused(r), (answers, r)
    assert not leaked(repr(r).encode())
