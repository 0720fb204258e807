"""Red team ten (masking, 2026-12-07): the schema's own code reached by the agent's statements
without lineage following it, and a sweep of the brief's list (errors and notices of casts,
cursors and MOVE, refcursors opened by PL/pgSQL, MERGE, whole-row and JSON forms, set-returning
functions as row-count oracles, ARRAY[...] of arrays, BINARY cursors, GROUPING SETS, aggregates,
TABLESAMPLE, views and prepared statements whose columns fail). Round three's database and masks
(tests/e2e/test_mask_round3.py) under its POLICY (default allow; roles and system blocked). Each
test of sections 1, 2 and 2b failed before its fix.

Found, closed:

* a trigger of the schema's own on a table with **no** masked columns (``orders``) whose function
  reads the masked table (``RAISE NOTICE 'order for %', (SELECT row_to_json(u) FROM users u WHERE
  u.id = NEW.user_id)``, ``pg_notify(...)`` of the same, ``RAISE EXCEPTION`` with it in the
  message or the HINT, a deferred constraint trigger at COMMIT; INSTEAD OF triggers of a view, a
  trigger of the table a foreign key's cascade deletes from, a TRUNCATE trigger) gave the agent's
  plain ``INSERT INTO orders VALUES (...)`` / ``UPDATE orders ...`` the user's salary, date of
  birth, SSN digits and blob in clear, in the notice, the error and the NOTIFY payload, simple and
  extended protocol, in autocommit and in a transaction: messages were withheld when *lineage*
  said the statement read masked columns or it wrote a masked table, and lineage does not follow
  triggers (the analysis does: ``Statement.tables``, now also ``Analysis.fired_tables``). Now a
  statement that reaches a table with masked columns through code lineage does not follow (or
  fires code reading it, though the statement reads other columns of that table itself: ``INSERT
  INTO orders SELECT 3, id, 30 FROM users``) has its messages withheld as a reader's, and a write
  that does so marks the session's transaction statements' messages withheld (a deferred trigger
  runs at COMMIT);
* the same trigger *keeping* what it read where the agent reads it back (``setval('r10_seq',
  (SELECT ssn_num FROM users ...))`` then ``SELECT currval('r10_seq')``: 812573964;
  ``set_config('app.r10', dob::text, false)`` then ``current_setting``): such a write is now
  refused as a statement that reads masked columns and keeps values elsewhere;
* an operator's DDL audit **event trigger** whose function reads the masked table and raises a
  notice with it spoke in clear after the agent's ``CREATE TABLE``, ``COMMENT ON``, ``GRANT``: the
  catalog does not list event triggers. When the database has functions of its own returning
  ``event_trigger``, the messages of DDL, GRANT and code that may run them are withheld;
* the agent giving **armed code a new body** (POLICY lets it create and replace functions):
  ``CREATE OR REPLACE FUNCTION`` of the schema's trigger function on ``orders`` (or of its DDL
  audit event trigger's function) with a body copying ``users`` into the agent's table, then
  ``INSERT INTO orders ...`` (``CREATE TABLE ...``), then ``SELECT * FROM r10_mine``: every SSN,
  salary and date of birth in clear. A new body for a function returning ``trigger`` or
  ``event_trigger`` is now refused as CREATE TRIGGER is (code attached to tables); a helper such
  a trigger calls, given a copying body, makes the write refused (it reads masked columns, by its
  trigger, and keeps values).

Left (documented limit, not changed): a trigger of the schema's own that *writes* what it reads
of a masked table into a table no rule masks (a BEFORE trigger filling ``NEW.memo`` from
``users.salary``; an audit table) is read back in clear, by RETURNING too.

Controls (masked or refused, kept so a later change cannot open them): see ``CONTROLS``.
"""

from __future__ import annotations

import pytest
from test_mask_round3 import DB, POLICY, Session, direct, leaked, rtdb, start  # noqa: F401 (fixtures)


@pytest.fixture
def operator(request):
    return request.getfixturevalue("direct")


# ------------------------------------------------------------------ 1. the schema's triggers, reading the masked table
TRIGGERS = {
    # each: the trigger function's body (NEW is an orders row), and the trigger's timing
    "notice": ("RAISE NOTICE 'order for %', (SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id)", ""),
    "notify": ("PERFORM pg_notify('orders', (SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id)::text)", ""),
    "exception": ("IF NEW.amount < 0 THEN RAISE EXCEPTION 'refund for %', "
                  "(SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id); END IF", ""),
    "hint": ("IF NEW.amount < 0 THEN RAISE EXCEPTION 'refund' USING HINT = "
             "(SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id)::text; END IF", ""),
    "dynamic": ("DECLARE r text; BEGIN EXECUTE 'SELECT row_to_json(u)::text FROM ' || 'users u WHERE u.id = $1' "
                "INTO r USING NEW.user_id; RAISE NOTICE 'order for %', r; END", ""),
    "deferred": ("RAISE NOTICE 'order for %', (SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id)",
                 "deferred"),
}


def _trigger_sql(body: str, timing: str) -> str:
    if body.startswith("DECLARE"):  # a block of its own
        code = body.replace("; END", "; RETURN NEW; END")
    else:
        code = f"BEGIN {body}; RETURN NEW; END"
    fn = f"CREATE OR REPLACE FUNCTION r10_order() RETURNS trigger LANGUAGE plpgsql AS $$ {code} $$"
    trig = ("CREATE CONSTRAINT TRIGGER r10_order AFTER INSERT OR UPDATE ON orders DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION r10_order()") if timing == "deferred" else \
        "CREATE TRIGGER r10_order AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION r10_order()"
    return f"{fn}; DROP TRIGGER IF EXISTS r10_order ON orders; {trig}"


@pytest.fixture
def triggered(request, make_pgwarden, tmp_path, operator):
    """An agent under POLICY, LISTENing on ``orders``, and the operator's trigger on ``orders``
    (the schema's own: the agent creates nothing)."""
    request.getfixturevalue("rtdb")
    sessions = []

    def make(body: str, timing: str) -> Session:
        operator.execute(_trigger_sql(body, timing))
        s = Session(start(make_pgwarden, tmp_path, POLICY))
        sessions.append(s)
        assert s.run("LISTEN orders")["err"] is None
        return s
    yield make
    for s in sessions:
        s.close()
    operator.execute("DROP TRIGGER IF EXISTS r10_order ON orders; DROP FUNCTION IF EXISTS r10_order(); "
                     "DELETE FROM orders WHERE id > 2; UPDATE orders SET amount = id * 10")


WRITES = {
    "insert": "INSERT INTO orders VALUES (3, 1, {amount})",
    "update": "UPDATE orders SET amount = {amount} WHERE id = 1",
    # the statement reads `users` itself (a column no rule masks), the trigger its masked ones
    "insert-select": "INSERT INTO orders SELECT 3, id, {amount} FROM users WHERE id = 1",
}


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("transaction", [False, True], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_a_trigger_reading_the_masked_table_says_nothing_in_clear(triggered, trigger, write, transaction, protocol):
    # The agent's statement names only `orders` (no masked column); the trigger of the schema's
    # own reads `users` and raises, notifies or notices what it read. Received before the fix:
    # `NOTICE: order for {"id":1,...,"salary":7342195.37,"note":"Jörg Müller ÄÖÜ ßéè",
    # "ssn_num":812573964,"dob":"1961-04-27","blob":"\\xdeadbeef..."}` (the detectors caught the
    # SSN, the card and the e-mail; nothing else did), the same as the NOTIFY payload, the error.
    body, timing = TRIGGERS[trigger]
    agent = triggered(body, timing)
    amount = -5 if trigger in ("exception", "hint") else 30
    before = len(agent.received)
    statements = ["BEGIN", WRITES[write].format(amount=amount), "COMMIT"] if transaction \
        else [WRITES[write].format(amount=amount)]
    answers = [agent.run(sql, prepare=protocol == "extended" and sql not in ("BEGIN", "COMMIT")) for sql in statements]
    if transaction and answers[1]["err"] is not None:
        agent.run("ROLLBACK")
    payloads = [n.payload for n in agent.conn.notifies(timeout=0.5, stop_after=3)]
    got = agent.received[before:] + repr((answers, payloads, agent.notices)).encode()
    assert not leaked(got), (leaked(got), answers, payloads, agent.notices)
    for r in answers:  # whatever the trigger said, the agent's statement was answered (or refused)
        assert r["err"] is None or r["err"][0] in ("42501", "P0001", "25P02"), r
    if all(r["err"] is None for r in answers):  # it ran, and said something (withheld)
        assert agent.notices or payloads or trigger in ("exception", "hint"), (answers, payloads)


def test_a_trigger_reading_nothing_masked_still_speaks(triggered):
    # The control: a trigger whose notice reads only `orders` keeps its message.
    agent = triggered("RAISE NOTICE 'order % of %', NEW.id, NEW.amount", "")
    assert agent.run("INSERT INTO orders VALUES (3, 1, 30)")["err"] is None
    assert "order 3 of 30" in agent.notices, agent.notices



KEEPING = {
    "setval": ("PERFORM setval('r10_seq', (SELECT ssn_num FROM users u WHERE u.id = NEW.user_id))",
               "SELECT currval('r10_seq')"),
    "set_config": ("PERFORM set_config('app.r10', (SELECT dob::text FROM users u WHERE u.id = NEW.user_id), false)",
                   "SELECT current_setting('app.r10', true)"),
}


@pytest.mark.parametrize("write", ["INSERT INTO orders VALUES (3, 1, 30)",
                                   "INSERT INTO orders SELECT 3, id, 30 FROM users WHERE id = 1"],
                         ids=["values", "select-from-users"])
@pytest.mark.parametrize("keeping", list(KEEPING))
def test_a_trigger_keeping_a_masked_value_refuses_the_write(triggered, operator, keeping, write):
    # The schema's trigger on `orders` keeps what it read of `users` where the agent reads it back:
    # `INSERT INTO orders ...` then `SELECT currval('r10_seq')` gave 812573964 (the SSN's digits),
    # `current_setting('app.r10')` 1961-04-27. A statement that reads masked columns may not keep
    # values elsewhere; read by its trigger, now neither.
    operator.execute("CREATE SEQUENCE IF NOT EXISTS r10_seq")
    try:
        body, read = KEEPING[keeping]
        agent = triggered(body, "")
        before = len(agent.received)
        r = agent.run(write)
        back = agent.run(read)
        got = agent.received[before:] + repr((r, back)).encode()
        assert not leaked(got), (leaked(got), r, back)
        assert r["err"] is not None and r["err"][0] == "42501", r
    finally:
        operator.execute("DROP TRIGGER IF EXISTS r10_order ON orders; DROP SEQUENCE IF EXISTS r10_seq")



REACHED = """
CREATE OR REPLACE FUNCTION r10_io() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'io %', (SELECT row_to_json(u) FROM users u WHERE u.id = NEW.user_id); RETURN NEW; END $$;
CREATE OR REPLACE VIEW r10_ov AS SELECT id, user_id, amount, now() AS at FROM orders;
CREATE TRIGGER r10_io INSTEAD OF INSERT OR UPDATE ON r10_ov FOR EACH ROW EXECUTE FUNCTION r10_io();
DROP TABLE IF EXISTS r10_child, r10_par;
CREATE TABLE r10_par (id int PRIMARY KEY);
CREATE TABLE r10_child (id int, par int REFERENCES r10_par (id) ON DELETE CASCADE);
CREATE OR REPLACE FUNCTION r10_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'del %', (SELECT row_to_json(u) FROM users u WHERE u.id = 1); RETURN OLD; END $$;
CREATE TRIGGER r10_del AFTER DELETE ON r10_child FOR EACH ROW EXECUTE FUNCTION r10_del();
CREATE OR REPLACE FUNCTION r10_tr() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'tr %', (SELECT row_to_json(u) FROM users u WHERE u.id = 1); RETURN NULL; END $$;
CREATE TRIGGER r10_tr AFTER TRUNCATE ON r10_child FOR EACH STATEMENT EXECUTE FUNCTION r10_tr();
INSERT INTO r10_par VALUES (50); INSERT INTO r10_child VALUES (1, 50);
"""


def _run_searched(s: Session, sql: str) -> dict:
    """``sql`` run in ``s``; asserts that nothing received meanwhile (rows, errors, notices) holds a
    masked value in clear."""
    before = len(s.received)
    r = s.run(sql)
    got = s.received[before:] + repr((r, s.notices)).encode()
    assert not leaked(got), (leaked(got), r, s.notices)
    return r


@pytest.mark.parametrize("sql", ["INSERT INTO r10_ov VALUES (9, 1, 1)", "UPDATE r10_ov SET amount = 2 WHERE id = 1",
                                 "DELETE FROM r10_par WHERE id = 50", "TRUNCATE r10_child"],
                         ids=["instead-of-insert", "instead-of-update", "cascade", "truncate"])
def test_triggers_reached_otherwise_say_nothing_in_clear(request, make_pgwarden, tmp_path, operator, sql):
    # INSTEAD OF triggers of a view, a trigger on the table a foreign key's cascade deletes from,
    # a TRUNCATE trigger: the same notice, withheld.
    request.getfixturevalue("rtdb")
    operator.execute(REACHED)
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        r = _run_searched(s, sql)
        assert r["err"] is None and s.notices, (r, s.notices)
    finally:
        s.close()
        operator.execute("DROP VIEW IF EXISTS r10_ov; DROP FUNCTION IF EXISTS r10_io(); "
                         "DROP TABLE IF EXISTS r10_child, r10_par; DROP FUNCTION IF EXISTS r10_del(), r10_tr()")


# ------------------------------------------------------------------ 2. the schema's event triggers
@pytest.fixture
def audited(request, make_pgwarden, tmp_path, operator):
    """An operator's DDL audit event trigger whose function reads the masked table and notices it
    (the schema's own code; the agent's DDL runs it)."""
    request.getfixturevalue("rtdb")
    operator.execute("""
        CREATE OR REPLACE FUNCTION r10_audit() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE NOTICE 'ddl by %', (SELECT row_to_json(u) FROM users u WHERE u.id = 1); END $$;
        DROP EVENT TRIGGER IF EXISTS r10_audit;
        CREATE EVENT TRIGGER r10_audit ON ddl_command_end EXECUTE FUNCTION r10_audit()""")
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    yield s
    s.close()
    operator.execute("DROP EVENT TRIGGER IF EXISTS r10_audit; DROP FUNCTION IF EXISTS r10_audit(); "
                     "DROP TABLE IF EXISTS r10_made")


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("ddl", ["CREATE TABLE r10_made (a int)", "COMMENT ON TABLE orders IS 'orders'",
                                 "CREATE TEMP TABLE r10_tmp (a int)", "GRANT SELECT ON orders TO PUBLIC"])
def test_an_event_trigger_reading_the_masked_table_says_nothing_in_clear(audited, ddl, protocol):
    # Received before the fix, after the agent's `CREATE TABLE r10_made (a int)`: `NOTICE: ddl by
    # {"id":1,...,"salary":7342195.37,...,"ssn_num":812573964,"dob":"1961-04-27",...}`. The catalog
    # does not say which event triggers are armed; that the database has functions an event
    # trigger may run (RETURNS event_trigger) is enough to withhold what its DDL says.
    before = len(audited.received)
    r = audited.run(ddl, prepare=protocol == "extended")
    got = audited.received[before:] + repr((r, audited.notices)).encode()
    assert not leaked(got), (leaked(got), r, audited.notices)
    assert r["err"] is None and audited.notices, (r, audited.notices)  # it ran, and said something


def test_without_event_trigger_code_ddl_errors_keep_their_message(request, make_pgwarden, tmp_path):
    # The control: no function of the database's own returns event_trigger, so a failed DDL
    # statement on a table without masked columns keeps its message.
    request.getfixturevalue("rtdb")
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        r = s.run("CREATE TABLE orders (a int)")
        assert r["err"] is not None and r["err"][0] == "42P07" and "already exists" in r["err"][1], r
    finally:
        s.close()




# ------------------------------------------------------------------ 2b. the agent gives armed code a new body
ARMED = """
CREATE OR REPLACE FUNCTION r10_helper(i int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE OR REPLACE FUNCTION r10_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM r10_helper(NEW.user_id); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS r10_order ON orders;
CREATE TRIGGER r10_order AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION r10_order();
CREATE OR REPLACE FUNCTION r10_audit() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
DROP EVENT TRIGGER IF EXISTS r10_audit;
CREATE EVENT TRIGGER r10_audit ON ddl_command_end EXECUTE FUNCTION r10_audit();
DROP TABLE IF EXISTS r10_mine;
CREATE TABLE r10_mine (v text);
"""
_COPY = "INSERT INTO r10_mine SELECT ssn || ' ' || salary || ' ' || dob FROM users"
REBODIED = {
    # the new body, then what runs it
    "trigger": (f"CREATE OR REPLACE FUNCTION r10_order() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_COPY}; "
                "RETURN NEW; END $$", "INSERT INTO orders VALUES (7, 1, 1)"),
    "event-trigger": (f"CREATE OR REPLACE FUNCTION r10_audit() RETURNS event_trigger LANGUAGE plpgsql AS $$ "
                      f"BEGIN {_COPY}; END $$", "CREATE TABLE r10_z (a int)"),
    "trigger-helper": (f"CREATE OR REPLACE FUNCTION r10_helper(i int) RETURNS void LANGUAGE plpgsql AS $$ "
                       f"BEGIN {_COPY}; END $$", "INSERT INTO orders VALUES (7, 1, 1)"),
    "trigger-helper-sql": (f"CREATE OR REPLACE FUNCTION r10_helper(i int) RETURNS void LANGUAGE sql AS $$ {_COPY} $$",
                           "INSERT INTO orders VALUES (7, 1, 1)"),
}


@pytest.mark.parametrize("case", list(REBODIED))
def test_a_new_body_for_armed_trigger_code_copies_nothing(request, make_pgwarden, tmp_path, operator, case):
    # The schema arms a trigger on `orders` and a DDL event trigger (harmless bodies). Under
    # POLICY the agent may create and replace functions: it gave the trigger's function (or the
    # event trigger's) a body copying users' values into its own table, wrote an order (made a
    # table), and read `r10_mine`: [('812-57-3964 7342195.37 1961-04-27',), ...] in clear. A new
    # body for a function returning trigger / event_trigger is now code attached to tables
    # (refused as CREATE TRIGGER is); a helper such a trigger calls, given a body that copies,
    # makes the write one that reads masked columns (by its trigger) and keeps values: refused.
    request.getfixturevalue("rtdb")
    operator.execute(ARMED)
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        rebody, run = REBODIED[case]
        before = len(s.received)
        answers = [s.run(rebody), s.run(run), s.run("SELECT * FROM r10_mine")]
        got = s.received[before:] + repr(answers).encode()
        assert not leaked(got), (leaked(got), answers)
        assert any(a["err"] is not None and a["err"][0] == "42501" for a in answers[:2]), answers
        assert answers[2]["rows"] == [], answers
    finally:
        s.close()
        operator.execute("DROP EVENT TRIGGER IF EXISTS r10_audit; DROP FUNCTION IF EXISTS r10_audit(); "
                         "DROP TRIGGER IF EXISTS r10_order ON orders; DROP FUNCTION IF EXISTS r10_order(); "
                         "DROP FUNCTION IF EXISTS r10_helper(int); DROP TABLE IF EXISTS r10_mine, r10_z; "
                         "DELETE FROM orders WHERE id > 2")


def test_a_new_trigger_function_not_replacing_one_is_made(request, make_pgwarden, tmp_path, operator):
    # The control: a trigger function made anew (not OR REPLACE) arms nothing (CREATE TRIGGER
    # stays refused in a masking session), so it is made.
    request.getfixturevalue("rtdb")
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        r = s.run("CREATE FUNCTION r10_fresh() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
        assert r["err"] is None, r
    finally:
        s.close()
        operator.execute("DROP FUNCTION IF EXISTS r10_fresh()")


# ------------------------------------------------------------------ 3. controls: masked or refused
# Each statement of the sweep, in order in one session (some set up the next): nothing secret is
# received, and a statement marked "refused" is refused (42501). "masked": answered, masked.
CONTROLS = [
    ("BEGIN", "ok"),
    ("DECLARE c CURSOR FOR SELECT salary::text::int FROM users", "ok"),
    ("MOVE ALL IN c", "withheld"),  # the cast's error quotes the salary: withheld as a reader's
    ("ROLLBACK", "ok"),
    ("BEGIN", "ok"),
    ("DECLARE c BINARY CURSOR FOR SELECT ssn, ssn_num, dob, salary, blob, card_number FROM users", "ok"),
    ("FETCH ALL FROM c", "masked"),
    ("COMMIT", "ok"),
    ("CREATE FUNCTION r10_cur() RETURNS refcursor LANGUAGE plpgsql AS $$ DECLARE c refcursor := 'k10'; "
     "BEGIN OPEN c FOR SELECT translate(ssn, '0123456789', 'abcdefghij') AS t, salary::text AS s FROM users; "
     "RETURN c; END $$", "ok"),
    ("SELECT r10_cur()", "refused"),
    ("CREATE TEMP TABLE r10_p (id int, v text)", "ok"),
    ("MERGE INTO r10_p t USING users u ON t.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (u.id, u.ssn)", "refused"),
    ("MERGE INTO r10_p t USING (SELECT id, ssn FROM users) u ON t.id = u.id AND u.ssn LIKE '8%' "
     "WHEN NOT MATCHED THEN INSERT VALUES (u.id, 'x')", "refused"),
    ("SELECT count(*) FROM users, unnest(ARRAY[string_to_array(ssn, '8')]) WHERE id = 1", "refused"),
    ("SELECT count(*) FROM users u, jsonb_each(to_jsonb(u) - 'ssn') WHERE id = 1", "refused"),
    ("SELECT count(*) FROM users u, jsonb_path_query(to_jsonb(u), '$.ssn ? (@ starts with \"8\")') WHERE id = 1",
     "refused"),
    ("SELECT count(*) FROM users u, jsonb_each(jsonb_build_object('a', ssn) || jsonb_build_object(ssn, 1)) "
     "WHERE id = 1", "refused"),
    ("SELECT count(*) FROM users u, jsonb_each_text(to_jsonb(u)) e WHERE e.value LIKE '8%' AND id = 1", "refused"),
    ("SELECT e.key FROM users u, jsonb_each_text(to_jsonb(u)) e WHERE id = 1 ORDER BY e.value", "refused"),
    ("SELECT g, substr(ssn, g, 1) FROM users, generate_series(1, 11) g WHERE id = 1", "masked"),
    ("SELECT (SELECT string_agg(x[1], '') FROM regexp_matches(ssn, '.', 'g') x) FROM users", "refused"),
    ("SELECT ssn FROM users GROUP BY GROUPING SETS ((ssn), ())", "refused"),
    ("SELECT xmlagg(xmlelement(name x, ssn)) FROM users", "refused"),
    ("SELECT u FROM users u", "masked"),
    ("SELECT ROW(u.*)::text FROM users u", "masked"),
    ("SELECT pg_column_size(ssn), octet_length(ssn), hashtext(ssn), md5(ssn) FROM users", "masked"),
    ("SELECT ts_headline(ssn, to_tsquery('8')) FROM users", "masked"),
    ("SELECT * FROM users TABLESAMPLE BERNOULLI (100)", "masked"),
    ("TABLE users", "masked"),
    ("SELECT id FROM users WHERE (ssn, id) > ('8', 0)", "refused"),
    ("SELECT id FROM users u ORDER BY u", "refused"),
    ("SELECT DISTINCT u FROM users u", "refused"),
    ("SELECT ((u).*) FROM users u", "masked"),
    ("VALUES ((SELECT ssn FROM users WHERE id = 1))", "masked"),
    ("SELECT count(*) FROM (SELECT (salary::text || (random() * 0)::int::text)::int AS x FROM users) s", "withheld"),
    ("PREPARE r10_p AS SELECT salary::text::int FROM users", "ok"),
    ("EXECUTE r10_p", "withheld"),
    ("SELECT make_date(1, 1, ssn_num::int) FROM users", "withheld"),
    ("SELECT translate(ssn, '0123456789', 'abcdefghij')::regclass FROM users", "withheld"),
    ("INSERT INTO r10_p VALUES (1, 'a')", "ok"),
    ("WITH x AS (UPDATE r10_p SET id = id RETURNING (SELECT salary::text::int FROM users LIMIT 1)) SELECT 1",
     "withheld"),
]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_controls_are_masked_or_refused(request, make_pgwarden, tmp_path, operator, protocol):
    request.getfixturevalue("rtdb")
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        for sql, expected in CONTROLS:
            extended = protocol == "extended" and not sql.startswith(("BEGIN", "COMMIT", "ROLLBACK", "DECLARE",
                                                                      "MOVE", "FETCH", "PREPARE", "EXECUTE"))
            before = len(s.received)
            r = s.run(sql, prepare=extended)
            got = s.received[before:] + repr(r).encode()
            assert not leaked(got), (sql, leaked(got), r)
            if expected == "refused":
                assert r["err"] is not None and r["err"][0] == "42501", (sql, r)
            elif expected == "withheld":
                assert r["err"] is not None and "message withheld" in r["err"][1], (sql, r)
            else:
                assert r["err"] is None, (sql, r)
            if expected == "masked":
                assert r["rows"], (sql, r)
    finally:
        s.close()
        operator.execute("DROP FUNCTION IF EXISTS r10_cur()")


@pytest.mark.parametrize("sql", ["SELECT 1::r10_dom", "SELECT id, id::r10_dom FROM users WHERE id = 1",
                                 "SELECT id, 1::r10_dom FROM orders"])
def test_a_domain_check_reading_the_masked_table_says_nothing_in_clear(request, make_pgwarden, tmp_path, operator,
                                                                       sql):
    # The control: a domain's CHECK (the schema's, STABLE) that reads `users` and notices it, run
    # by a cast: withheld (the conversion's body is the statement's).
    request.getfixturevalue("rtdb")
    operator.execute("""
        CREATE OR REPLACE FUNCTION r10_chk(v int) RETURNS bool LANGUAGE plpgsql STABLE AS $$
        BEGIN RAISE NOTICE 'chk %', (SELECT row_to_json(u) FROM users u WHERE u.id = v); RETURN true; END $$;
        DROP DOMAIN IF EXISTS r10_dom CASCADE;
        CREATE DOMAIN r10_dom AS int CHECK (r10_chk(VALUE))""")
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        _run_searched(s, sql)
    finally:
        s.close()
        operator.execute("DROP DOMAIN IF EXISTS r10_dom; DROP FUNCTION IF EXISTS r10_chk(int)")
