"""Red team fourteen (masking, 2026-12-07, hunt 14b): what an SQL-level prepared statement runs
when the server plans it again (a function or view it reads replaced, in the open transaction or
committed), and a sweep of the brief's list (whole-row and composite paths, cursors, prepared
statements, catalog changes in the agent's own session, error and count oracles), kept as
controls. Round three's database and masks (tests/e2e/test_mask_round3.py) under its POLICY
(default allow; roles and system blocked: the agent may create tables, views and functions). One
pgwarden for the module. Each test of section 1 failed before its fix.

Found, closed:

* **an EXECUTE's conditions after a function its prepared body calls was replaced**: ``CREATE
  FUNCTION r14_g() RETURNS text LANGUAGE sql STABLE AS $$ SELECT x FROM (VALUES ('a')) v(x) $$``,
  ``PREPARE q AS SELECT id FROM orders WHERE r14_g() LIKE '8%'`` (no masked column anywhere), then
  ``CREATE OR REPLACE FUNCTION r14_g() ... $$ SELECT ssn FROM users WHERE id = 1 $$``: ``EXECUTE
  q`` returned ``[(1,), (2,)]`` (alice's SSN begins with 8; ``[]`` for a wrong guess), one
  question a statement, and the PREPARE never named ``users``. The server plans a prepared
  statement again on the new definitions, and the results were traced again (round three), but
  the EXECUTE's oracles, what its body keeps and which tables it reads were judged with the
  body's lineage as the PREPARE saw it (a view replaced so was refused by the plan check, which
  plans the query again: kept as a control). ``PREPARE r14_kq AS SELECT r14_k(), ssn FROM users
  WHERE id = 1`` with ``r14_k()`` STABLE and harmless, then replaced to ``set_config('r14.x',
  (SELECT ssn ...), false)``: ``EXECUTE r14_kq`` ran it, and ``SHOW r14.x`` returned the SSN in
  clear. Now a body traced on another catalog, search_path or staleness than the EXECUTE's is
  traced again on the EXECUTE's before it is judged;
* **a prepared write, the same way**: ``PREPARE w AS INSERT INTO r14_pub SELECT r14_g()`` with
  ``r14_g()`` harmless, ``r14_g()`` replaced, ``EXECUTE w``: the SSN stored in the agent's table,
  and ``SELECT x FROM r14_pub`` returned ``812-57-3964`` in clear (``UPDATE ... SET x = r14_g()``
  likewise). Closed by the same retracing (a value written);
* **a materialized view refreshed over a replaced definition** (round three's open limit):
  ``CREATE MATERIALIZED VIEW r14_mv AS SELECT r14_g() AS x`` (harmless), ``r14_g()`` replaced to
  return the SSN, ``REFRESH MATERIALIZED VIEW r14_mv``, ``r14_g()`` replaced back: ``SELECT x FROM
  r14_mv`` returned ``812-57-3964`` in clear (through a view replaced and back, both SSNs):
  lineage reads the view's rows through the definitions of now. A refresh is now a write of what
  the view's query reads: refused when that may hold masked columns (stale after DDL in its
  transaction or its string);
* **an EXECUTE after DDL in its own string**: ``CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS
  x FROM users; EXECUTE q`` in one Query (or the function replaced so) answered the guess as
  above: the EXECUTE was judged in its string's first statement's context. Now, after other
  statements of its string, in the context they leave (their search_path) and stale when one of
  them may change the catalog (DDL, code run);
* **an EXECUTE's argument computed from a masked column**: ``PREPARE r14_b(int) AS SELECT 1 FROM
  generate_series(1, $1)`` then ``EXECUTE r14_b(ascii(r14_g()))`` (``r14_g()`` the agent's function
  returning alice's SSN; EXECUTE's arguments take no sub-select) returned 56 rows, the code of the
  SSN's first character, one character a statement; ``$1 LIKE '8%'`` in the body's WHERE, or
  ``LIMIT $1``, answered guesses. Lineage made such an EXECUTE's outputs opaque (masked whole)
  but did not follow ``$n`` into the body's conditions; now each argument computed from a column
  is an oracle of what it holds (``used in an EXECUTE's argument``);
* **an EXECUTE of a name a protocol Parse took**: Parse ``r14_q`` as ``SELECT id FROM orders WHERE
  r14_g() LIKE '8%'`` (harmless then), ``PREPARE r14_q AS SELECT 1`` (refused by the server,
  42P05), ``r14_g()`` replaced, then ``EXECUTE r14_q``: masking judged it by the SQL body it saw
  PREPAREd, and under a policy allowing unknown statements (so that the block plugin's refusal of
  such an EXECUTE, red team five, is off) it returned ``[(1,), (2,)]``. Now such a name (and every
  name after code that may PREPARE one) is a body not known to masking too: refused;
* **an EXECUTE after the session's own DDL in the open transaction**: ``PREPARE q AS SELECT id
  FROM r14_pv WHERE x LIKE '8%'`` with ``r14_pv.x`` alice's name, then ``BEGIN; CREATE OR REPLACE
  VIEW r14_pv AS SELECT id, ssn AS x FROM users; EXECUTE q`` returned ``[(None,)]``: the id
  masked whole (the catalog stale), but one row, so the guess was right (a plain ``SELECT`` there
  is refused since round nine: a condition over a value pgwarden cannot trace). The same
  retracing makes the body's conditions untraced there, refused alike.

Controls (section 2): whole rows and composites (``u``, ``u::text``, ``row_to_json``, ``to_jsonb(u)
- 'name'``, ``jsonb_populate_record``, ``(u).*`` in a subquery, ``ROW(u.*)::text``, ``array_agg(u)``,
``json_agg``, ``string_agg(ssn)`` through a view, a row comparison, ``SETOF users`` functions,
``RETURNING *`` and ``RETURNING u``, ``INSERT ... SELECT ssn`` into a temporary table, column
aliases renaming ``users``' columns), cursors (``FETCH``, a BINARY cursor, ``MOVE``, a scroll
cursor, one ordered by the SSN, PL/pgSQL reopening an SQL cursor's name), a temporary view or a
schema's view shadowing a table on the search_path, a search_path set in a transaction rolled back
or to a savepoint, materialized views and ``CREATE TABLE AS`` of masked columns, ``EXPLAIN
ANALYZE`` with a condition on the SSN, ``ORDER BY`` expressions of it, a domain CHECK over it,
``pg_input_error_info``; a prepared statement over a view replaced (refused by the plan check),
and over a search_path moved to a schema whose view of that name returns the SSN.

Left (reported): a user's aggregate, a procedure inserting its argument into the agent's table and a
VOLATILE ``SETOF users`` function are refused (false refusals, not changed); an EXECUTE whose
argument is computed from a masked column is refused whatever its body does with it.
"""

from __future__ import annotations

import pytest
from test_mask_round3 import DB, HASH_KEY, POLICY, RawSession, Session, leaked, rtdb  # noqa: F401 (fixtures)

from pgwarden.wire import messages as m

# Round three's policy for the agents' group; the same masks for group "lax", whose policy also
# allows what pgwarden cannot analyse (the masking alone judges an EXECUTE there)
AGENTS = dict(POLICY, when={"groups": ["ai-agents"]})
LAX = {"name": "lax", "when": {"groups": ["lax"]}, "default": "allow",
       "rules": [*POLICY["rules"], {"name": "unknown-ok", "allow": {"statements": ["unknown"]}}]}


@pytest.fixture(scope="module")
def warden(rtdb, pg_server, signing_keys, reactor_thread, tmp_path_factory):  # noqa: F811
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    workdir = tmp_path_factory.mktemp("round14")
    (workdir / "mask-key").write_text(HASH_KEY)
    doc = base_config(pg_server, signing_keys, workdir, policies=[AGENTS, LAX], upstream={"database": DB},
                      plugins={"mask": {"key_file": str(workdir / "mask-key")}})
    with module_pgwarden(doc, signing_keys, reactor_thread) as running:
        yield running


@pytest.fixture(scope="module")
def operator(rtdb):  # noqa: F811
    """A direct connection to the database (the operator's)."""
    import psycopg

    with psycopg.connect(rtdb.dsn(database=DB), autocommit=True) as c:
        yield c


def _refused(r: dict, why: str = "") -> bool:
    return r["err"] is not None and r["err"][0] == "42501" and why in r["err"][1]


def _play(s: Session, cases: list[tuple[str, str]]) -> None:
    """Runs ``cases`` (statement, expected: "ok", "refused", "masked" or "error") in ``s``; asserts
    nothing received for any holds a secret, and each answer is the one expected."""
    for sql, expected in cases:
        before = len(s.received)
        s.notices.clear()
        r = s.run(sql)
        got = s.received[before:] + repr((r, s.notices)).encode()
        assert not leaked(got), (sql, leaked(got), r)
        if expected == "refused":
            assert _refused(r), (sql, r)
        elif expected == "error":
            assert r["err"] is not None and r["err"][0] != "42501", (sql, r)
        else:
            assert r["err"] is None, (sql, r)
        if expected == "masked":
            assert r["rows"] and all(v in ("***", None) for row in r["rows"] for v in row), (sql, r)


HARMLESS = "CREATE OR REPLACE FUNCTION r14_g() RETURNS text LANGUAGE sql STABLE AS $$ SELECT x FROM (VALUES ('a')) v(x) $$"
REVEALING = "CREATE OR REPLACE FUNCTION r14_g() RETURNS text LANGUAGE sql STABLE AS $$ SELECT ssn FROM users WHERE id = 1 $$"

# ------------------------------------------------------------------ 1. a prepared statement planned again
PREPARED = [
    (HARMLESS, "ok"),
    ("PREPARE r14_q AS SELECT id FROM orders WHERE r14_g() LIKE '8%'", "ok"),
    ("EXECUTE r14_q", "ok"),
    (REVEALING, "ok"),
    ("EXECUTE r14_q", "refused"),  # before: [(1,), (2,)] (the guess right; [] when wrong)
    ("EXPLAIN ANALYZE EXECUTE r14_q", "refused"),
    ("CREATE TABLE r14_ctas AS EXECUTE r14_q", "refused"),
    (HARMLESS, "ok"),
    ("EXECUTE r14_q", "ok"),  # (and judged as it is again)
    # the session's own DDL in the open transaction
    ("CREATE VIEW r14_pv AS SELECT id, name AS x FROM users", "ok"),
    ("PREPARE r14_v AS SELECT id FROM r14_pv WHERE x LIKE '8%'", "ok"),
    ("EXECUTE r14_v", "ok"),
    ("BEGIN", "ok"),
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users", "ok"),
    ("EXECUTE r14_v", "refused"),  # before: [(None,)]: one row, the guess right ([] when wrong)
    ("ROLLBACK", "ok"),
    ("BEGIN", "ok"),
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users", "ok"),
    ("SELECT id FROM r14_pv WHERE x LIKE '8%'", "refused"),  # (refused since round nine)
    ("ROLLBACK", "ok"),
    ("BEGIN", "ok"),
    (REVEALING, "ok"),
    ("EXECUTE r14_q", "refused"),
    ("ROLLBACK", "ok"),
    # controls: a view replaced and committed (the plan check plans it again), a search_path moved
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users", "ok"),
    ("EXECUTE r14_v", "refused"),
    ("CREATE TABLE r14_pub (x text)", "ok"),
    ("INSERT INTO r14_pub VALUES ('812'), ('9')", "ok"),
    ("CREATE SCHEMA r14s", "ok"),
    ("CREATE VIEW r14s.r14_pub AS SELECT ssn AS x FROM public.users", "ok"),
    ("SET search_path = public", "ok"),  # (after an EXECUTE the path is unknown: round twelve)
    ("PREPARE r14_s AS SELECT count(*) FROM r14_pub WHERE x LIKE '8%'", "ok"),
    ("SET search_path = r14s, public", "ok"),
    ("EXECUTE r14_s", "refused"),
    ("SET search_path = public", "ok"),
    ("EXECUTE r14_s", "ok"),
]

CLEAN = ("DROP FUNCTION IF EXISTS r14_g, r14_k, r14_f; DROP VIEW IF EXISTS r14_pv, r14_sv; "
         "DROP SCHEMA IF EXISTS r14s CASCADE; DROP TABLE IF EXISTS r14_pub, r14_ctas, r14_t, r14_like; "
         "DROP TYPE IF EXISTS r14_ty; DROP DOMAIN IF EXISTS r14_d; DELETE FROM users WHERE id > 2")


def test_a_prepared_statement_is_judged_as_the_server_plans_it_again(warden, operator):
    s = Session(warden)
    try:
        _play(s, PREPARED)
        # the premise: what EXECUTE answered before, directly (the guess right, then wrong)
        operator.execute(REVEALING)
        assert operator.execute("SELECT id FROM orders WHERE r14_g() LIKE '8%' ORDER BY id").fetchall() == [(1,), (2,)]
        assert operator.execute("SELECT id FROM orders WHERE r14_g() LIKE '9%'").fetchall() == []
    finally:
        s.close()
        operator.execute(CLEAN)


ONE_STRING = [
    (HARMLESS, "ok"),
    ("CREATE VIEW r14_pv AS SELECT id, name AS x FROM users", "ok"),
    ("PREPARE r14_v AS SELECT id FROM r14_pv WHERE x LIKE '8%'", "ok"),
    ("PREPARE r14_q AS SELECT id FROM orders WHERE r14_g() LIKE '8%'", "ok"),
    # before: [(None,)] and [(1,), (2,)] for the EXECUTE (the guesses right; [] when wrong)
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users; EXECUTE r14_v", "refused"),
    (REVEALING + "; EXECUTE r14_q", "refused"),
    ("EXECUTE r14_v", "ok"),  # (refused whole: nothing of them ran)
    ("EXECUTE r14_q", "ok"),
    ("SELECT 1; EXECUTE r14_q", "ok"),
]


WRITES = [
    (HARMLESS, "ok"),
    ("CREATE TABLE r14_pub (x text)", "ok"),
    ("PREPARE r14_w AS INSERT INTO r14_pub SELECT r14_g()", "ok"),
    ("PREPARE r14_u AS UPDATE r14_pub SET x = r14_g()", "ok"),
    (REVEALING, "ok"),
    ("EXECUTE r14_w", "refused"),  # before: stored alice's SSN in r14_pub, read back in clear
    ("EXECUTE r14_u", "refused"),
    ("SELECT x FROM r14_pub", "ok"),
]


def test_a_prepared_write_of_a_replaced_function_is_refused(warden, operator):
    s = Session(warden)
    try:
        _play(s, WRITES)
        assert operator.execute("SELECT count(*) FROM r14_pub").fetchone() == (0,)  # nothing written
    finally:
        s.close()
        operator.execute("DEALLOCATE ALL; " + CLEAN)


REFRESHES = [
    (HARMLESS, "ok"),
    ("CREATE MATERIALIZED VIEW r14_mv AS SELECT r14_g() AS x", "ok"),
    ("CREATE VIEW r14_pv AS SELECT id, name AS x FROM users", "ok"),
    ("CREATE MATERIALIZED VIEW r14_mv2 AS SELECT x FROM r14_pv", "ok"),
    ("CREATE MATERIALIZED VIEW r14_mv3 AS SELECT id, name FROM users", "ok"),
    (REVEALING, "ok"),
    ("REFRESH MATERIALIZED VIEW r14_mv", "refused"),  # before: stored the SSN (see below)
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users", "ok"),
    ("REFRESH MATERIALIZED VIEW r14_mv2", "refused"),
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, name AS x FROM users", "ok"),
    (HARMLESS, "ok"),
    # before: [('812-57-3964',)], and alice's and bob's SSNs: read through today's definitions
    ("SELECT x FROM r14_mv", "ok"),
    ("SELECT x FROM r14_mv2", "ok"),
    (REVEALING + "; REFRESH MATERIALIZED VIEW r14_mv", "refused"),  # (in one string: after the DDL)
    (HARMLESS, "ok"),
    ("REFRESH MATERIALIZED VIEW r14_mv", "ok"),  # (what reads no masked column goes on)
    ("REFRESH MATERIALIZED VIEW r14_mv3", "ok"),
    ("BEGIN", "ok"),
    ("CREATE OR REPLACE VIEW r14_pv AS SELECT id, ssn AS x FROM users", "ok"),
    ("REFRESH MATERIALIZED VIEW r14_mv2", "refused"),  # (the catalog stale in the transaction)
    ("ROLLBACK", "ok"),
]


def test_a_materialized_views_refresh_is_a_write_of_what_it_reads(warden, operator):
    s = Session(warden)
    try:
        _play(s, REFRESHES)
        assert s.run("SELECT x FROM r14_mv")["rows"] == [("a",)]
        assert sorted(s.run("SELECT x FROM r14_mv2")["rows"]) == [("alice",), ("bob",)]
        # the premise: a refresh runs the definitions of now (the operator's, directly)
        operator.execute(REVEALING)
        operator.execute("REFRESH MATERIALIZED VIEW r14_mv")
        assert operator.execute("SELECT x FROM r14_mv").fetchall() == [("812-57-3964",)]
    finally:
        s.close()
        operator.execute("DROP MATERIALIZED VIEW IF EXISTS r14_mv, r14_mv2, r14_mv3; " + CLEAN)


def test_an_execute_after_ddl_in_its_own_string_is_judged_after_it(warden, operator):
    s = Session(warden)
    try:
        _play(s, ONE_STRING)
        assert s.run("EXECUTE r14_q")["rows"] == [], "the function is the harmless one still"
    finally:
        s.close()
        operator.execute(CLEAN)


ARGUMENTS = [
    (REVEALING, "ok"),
    ("PREPARE r14_a(text) AS SELECT id FROM orders WHERE $1 LIKE '8%'", "ok"),
    ("EXECUTE r14_a(r14_g())", "refused"),  # before: [(1,), (2,)] (the guess right)
    ("EXECUTE r14_a('9')", "ok"),
    ("PREPARE r14_b(int) AS SELECT 1 FROM generate_series(1, $1)", "ok"),
    ("EXECUTE r14_b(ascii(r14_g()))", "refused"),  # before: 56 rows, ascii('8'): a character a statement
    ("EXECUTE r14_b(ascii(substr(r14_g(), 2, 1)))", "refused"),  # before: 49 rows, '1'
    ("PREPARE r14_c(int) AS SELECT 1 FROM orders LIMIT $1", "ok"),
    ("EXECUTE r14_c(length(r14_g()) - 10)", "refused"),  # before: one row (the length is 11)
    ("PREPARE r14_d(text) AS SELECT count(*) FROM orders WHERE $1 LIKE '8%'", "ok"),
    ("EXECUTE r14_d(r14_g())", "refused"),  # before: [(None,)] (masked whole, but refused now)
    # the same flows by a function's own arguments: refused or masked already
    ("CREATE FUNCTION r14_f(int) RETURNS SETOF int LANGUAGE sql STABLE AS $$ SELECT generate_series(1, $1) $$",
     "ok"),
    ("SELECT count(*) FROM r14_f(ascii(r14_g()))", "refused"),
    ("CREATE FUNCTION r14_k(text) RETURNS bigint LANGUAGE sql STABLE AS "
     "$$ SELECT count(*) FROM orders WHERE $1 LIKE '8%' $$", "ok"),
    ("SELECT r14_k(r14_g())", "masked"),
    ("SELECT id FROM orders WHERE r14_k(r14_g()) > 0", "refused"),
]


def test_an_executes_argument_computed_from_a_masked_column_is_an_oracle(warden, operator):
    s = Session(warden)
    try:
        _play(s, ARGUMENTS)
        # the premise, directly: the prepared statement counts rows by its argument
        operator.execute(REVEALING)
        operator.execute("PREPARE r14_b(int) AS SELECT 1 FROM generate_series(1, $1)")
        assert len(operator.execute("EXECUTE r14_b(ascii(r14_g()))").fetchall()) == ord("8")
    finally:
        s.close()
        operator.execute("DEALLOCATE ALL; " + CLEAN)


class _Lax:
    """``warden`` as the "lax" group's clients see it (RawSession takes ``token()`` from it)."""

    def __init__(self, warden):
        self.host, self.port, self._warden = warden.host, warden.port, warden

    def token(self) -> str:
        return self._warden.token(groups=["lax"])


def test_an_execute_of_a_name_a_protocol_parse_took_is_not_judged_by_an_sql_body(warden, operator):
    # A protocol Parse takes the name first; the SQL PREPARE of it fails (42P05) but its body was
    # what masking judged EXECUTE by. Under a policy allowing unknown statements (where the block
    # plugin's refusal of such an EXECUTE does not apply), masking alone: before, ``EXECUTE r14_q``
    # after ``r14_g()`` was replaced returned [(1,), (2,)] (the guess right; the Parse's text was
    # harmless when judged)
    s = Session(warden)
    s.run(HARMLESS)
    s.close()
    r = RawSession(_Lax(warden))
    try:
        def answer(*messages):
            got, raw = r.send(*messages)
            assert not leaked(raw), (messages, got)
            return [x for x in got if not isinstance(x, (m.ReadyForQuery, m.ParseComplete, m.CloseComplete))]
        assert not any(isinstance(x, m.ErrorResponse) for x in
                       answer(m.Parse("r14_q", "SELECT id FROM orders WHERE r14_g() LIKE '8%'"), m.Sync()))
        got = answer(m.Query("PREPARE r14_q AS SELECT 1"))
        assert isinstance(got[0], m.ErrorResponse) and dict(got[0].fields)["C"] == "42P05", got
        assert not any(isinstance(x, m.ErrorResponse) for x in answer(m.Query(REVEALING)))
        got = answer(m.Query("EXECUTE r14_q"))
        assert isinstance(got[0], m.ErrorResponse) and dict(got[0].fields)["C"] == "42501", got
        assert "not known" in dict(got[0].fields)["M"], got
    finally:
        r.close()
        operator.execute(CLEAN)


def test_a_function_replaced_to_keep_values_is_judged_at_execute(warden, operator):
    # the body's keeping too: a STABLE function replaced to set_config the SSN under a prepared
    # statement that reads the masked column
    s = Session(warden)
    try:
        _play(s, [
            ("CREATE FUNCTION r14_k() RETURNS int LANGUAGE sql STABLE AS $$ SELECT x FROM (VALUES (1)) v(x) $$", "ok"),
            ("PREPARE r14_kq AS SELECT r14_k(), ssn FROM users WHERE id = 1", "ok"),
            ("EXECUTE r14_kq", "ok"),
            ("CREATE OR REPLACE FUNCTION r14_k() RETURNS int LANGUAGE sql STABLE AS $$ SELECT length("
             "set_config('r14.x', (SELECT ssn FROM users WHERE id = 1), false)) $$", "ok"),
            ("EXECUTE r14_kq", "refused"),
        ])
        r = s.run("SELECT current_setting('r14.x', true)")
        assert r["err"] is None and r["rows"] in ([(None,)], [("",)]), r
    finally:
        s.close()
        operator.execute(CLEAN)


# ------------------------------------------------------------------ 2. controls: the brief's list, masked or refused
CONTROLS = [
    # whole rows and composites
    ("SELECT u FROM users u", "masked"),
    ("SELECT u::text FROM users u", "masked"),
    ("SELECT row_to_json(u) FROM users u", "masked"),
    ("SELECT to_jsonb(u) - 'name' FROM users u", "masked"),
    ("SELECT (jsonb_populate_record(NULL::users, to_jsonb(u))).ssn FROM users u", "masked"),
    ("SELECT ssn, card_number, email FROM (SELECT (u).* FROM users u) s", "ok"),
    ("SELECT ROW(u.*)::text FROM users u", "masked"),
    ("SELECT (x).ssn FROM (SELECT u AS x FROM users u) s", "masked"),
    ("WITH w AS MATERIALIZED (SELECT u FROM users u) SELECT (w.u).ssn FROM w", "masked"),
    ("SELECT (u::text::users).ssn FROM users u", "masked"),
    ("SELECT format('%s', u) FROM users u", "masked"),
    ("SELECT c FROM users AS u(i, n, c)", "masked"),
    ("SELECT name FROM users AS u(id, ssn, name)", "masked"),
    ("SELECT * FROM jsonb_to_record((SELECT to_jsonb(u) FROM users u WHERE id = 1)) AS x(ssn text)", "masked"),
    ("SELECT array_agg(u) FROM users u", "refused"),
    ("SELECT json_agg(u) FROM users u", "refused"),
    ("CREATE VIEW r14_sv AS SELECT string_agg(ssn, ',') AS s FROM users", "ok"),
    ("SELECT * FROM r14_sv", "refused"),
    ("SELECT id FROM users u WHERE u > ROW(1, 'alice', '8', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::users",
     "refused"),
    ("SELECT (unnest(ARRAY[u])).ssn FROM users u", "refused"),
    ("UPDATE users SET name = name WHERE id = 1 RETURNING ssn, card_number", "ok"),
    ("UPDATE users u SET name = name WHERE id = 1 RETURNING u", "masked"),
    ("CREATE TEMP TABLE r14_t (x text)", "ok"),
    ("INSERT INTO r14_t SELECT ssn FROM users", "refused"),
    ("CREATE TABLE r14_ctas AS SELECT id, ssn FROM users", "refused"),
    ("CREATE MATERIALIZED VIEW r14_mv AS SELECT id, ssn FROM users", "refused"),
    # writes whose row count answers a condition
    ("UPDATE orders o SET amount = amount FROM users u WHERE o.user_id = u.id AND u.ssn LIKE '8%'", "refused"),
    ("MERGE INTO orders o USING users u ON o.user_id = u.id WHEN MATCHED AND u.ssn LIKE '8%' THEN "
     "UPDATE SET amount = amount", "refused"),
    ("INSERT INTO users (id, name, ssn) VALUES (1, 'x', '812-57-3964') ON CONFLICT (id) DO UPDATE SET "
     "name = EXCLUDED.name WHERE users.ssn = EXCLUDED.ssn RETURNING id", "refused"),
    # cursors
    ("BEGIN", "ok"),
    ("DECLARE r14_c CURSOR FOR SELECT ssn FROM users", "ok"),
    ("FETCH ALL FROM r14_c", "masked"),
    ("DECLARE r14_b BINARY CURSOR FOR SELECT ssn, ssn_num FROM users", "ok"),
    ("FETCH ALL FROM r14_b", "masked"),
    ("DECLARE r14_s SCROLL CURSOR FOR SELECT ssn FROM users", "ok"),
    ("MOVE 1 FROM r14_s", "ok"),
    ("FETCH PRIOR FROM r14_s", "ok"),
    ("COMMIT", "ok"),
    ("DECLARE r14_o CURSOR WITH HOLD FOR SELECT id FROM users ORDER BY ssn", "refused"),
    ("CREATE FUNCTION r14_reopen() RETURNS int LANGUAGE plpgsql AS $$ DECLARE c refcursor := 'r14_k'; "
     "BEGIN CLOSE c; OPEN c FOR SELECT ssn FROM users; RETURN 1; END $$", "ok"),
    ("BEGIN", "ok"),
    ("DECLARE r14_k CURSOR FOR SELECT name FROM users", "ok"),
    ("SELECT r14_reopen()", "refused"),
    ("ROLLBACK", "ok"),
    # shadowing, the search_path in a transaction rolled back
    ("CREATE TABLE r14_pub (x text)", "ok"),
    ("CREATE TEMP VIEW r14_pub AS SELECT ssn AS x FROM public.users", "ok"),
    ("SELECT x FROM r14_pub", "masked"),
    ("DROP VIEW pg_temp.r14_pub", "ok"),
    ("CREATE SCHEMA r14s", "ok"),
    ("CREATE VIEW r14s.r14_pub AS SELECT ssn AS x FROM public.users", "ok"),
    ("SET search_path = r14s, public", "ok"),
    ("BEGIN", "ok"),
    ("SET search_path = public", "ok"),
    ("ROLLBACK", "ok"),
    ("SELECT x FROM r14_pub", "masked"),
    ("SET search_path = public", "ok"),
    # error and count oracles
    ("EXPLAIN ANALYZE SELECT 1 FROM users WHERE ssn LIKE '8%'", "refused"),
    ("SELECT id FROM users ORDER BY md5(ssn) LIMIT 1", "refused"),
    ("CREATE DOMAIN r14_d AS text CHECK (VALUE NOT LIKE '8%')", "ok"),
    ("SELECT id FROM users WHERE id = 1 AND ssn::r14_d IS NOT NULL", "refused"),
    ("SELECT pg_input_error_info(ssn, 'int') FROM users", "refused"),
    ("SELECT id, lag(id, ascii(ssn) - 55) OVER (ORDER BY id) FROM users", "ok"),
    ("SELECT id, count(*) OVER (ORDER BY id ROWS BETWEEN ascii(ssn) - 56 PRECEDING AND CURRENT ROW) FROM users",
     "refused"),
    ("SELECT count(*) FROM orders TABLESAMPLE BERNOULLI (100) REPEATABLE (ascii((SELECT ssn FROM users "
     "WHERE id = 1)))", "refused"),
]


def test_controls_are_masked_or_refused(warden, operator):
    s = Session(warden)
    try:
        _play(s, CONTROLS)
    finally:
        s.close()
        operator.execute("DROP MATERIALIZED VIEW IF EXISTS r14_mv, r14_mv2, r14_mv3; DROP FUNCTION IF EXISTS r14_reopen; " + CLEAN)
