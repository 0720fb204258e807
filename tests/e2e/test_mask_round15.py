"""Red team fifteen (masking, 2026-12-07, hunt 15b): what a portal or a cursor runs after the
definitions it was traced on changed (another session's change through pgwarden, the session's own
before a WITH HOLD cursor's COMMIT), and a sweep of the brief's list (channels other than rows,
values kept where a later statement reads them, transformations, the extended protocol), kept as
controls. Round three's database and masks (tests/e2e/test_mask_round3.py) under round fourteen's
policy and pgwarden (one for the module). Each test of section 1 failed before its fix.

Found, closed:

* **a suspended portal run after another session replaced what it calls**: session A, in a
  transaction, Parse and Bind ``SELECT r15_g(i) AS x FROM (VALUES (1), (1), (2), (1)) v(i)`` with
  ``r15_g(int)`` the agent's SQL function returning ``users.ssn``, ``Execute`` with a row limit of
  1 (``***``, ``PortalSuspended``); session B (the same agent, another connection) replaces
  ``r15_g`` to return ``users.name``; A's next ``Execute`` of the portal returned
  ``812-57-3964``, ``345-67-8901``, ... in clear. The server runs the plan of the Bind (the SQL
  function's body is kept for the transaction), while pgwarden traced each Execute's rows on the
  catalog of now. Now a change that may define again what lineage goes through, by any session
  (not only one the catalog's change check saw), makes every masking session forget the portals
  bound before it (an Execute of one is refused, 42501) and decide its named statements again;
* **a portal bound before the session's own change**: ``BEGIN``, Parse and Bind ``SELECT id FROM
  orders WHERE r15_g(1) LIKE '8%'`` (``r15_g`` returning the name), ``CREATE OR REPLACE FUNCTION
  r15_g`` to return the SSN in the same transaction, then the portal's Execute returned ``[1, 2]``
  (the guess right): it was decided at its Bind, and the server reads the function's body at the
  Execute (SQL's ``FETCH ALL FROM "P"`` likewise). Now the session's own change of definitions
  forgets its portals too, and their names are stale cursors;
* **a statement another session Parsed before the change, bound after it**: A Parses ``SELECT id
  FROM orders WHERE r15_g(1) LIKE '8%'`` (``r15_g`` returning the name: harmless); B replaces
  ``r15_g`` to return the SSN; A's Bind and Execute returned ``[1, 2]`` (alice's SSN begins with
  8; none for a wrong guess), one question a statement: it was not decided again (only another
  client's change, seen by the change check, did that). The same listener closes it: refused at the
  Bind (``masked column public.users.ssn used in WHERE``);
* **a transaction open across another session's change**: ``BEGIN; PREPARE q AS SELECT r15_g(id)
  AS x FROM orders ORDER BY id; EXECUTE q`` (masked: ``r15_g`` returned the SSN), B replaces
  ``r15_g`` to return the name, then ``EXECUTE q`` returned ``812-57-3964``, ``345-67-8901`` in
  clear: the backend ran the prepared plan with the function body it had read (its caches are not
  refreshed inside a transaction that takes no new lock), pgwarden traced the new one (a plain
  ``SELECT r15_g(id) ...`` there, parsed again, did read the new body). Now a masking session in
  an open transaction when another session's change is made is judged, until that transaction
  ends, as after its own uncommitted DDL (``ConnectionState.catalog_behind``: its outputs masked
  whole, its conditions and the code it runs untraced, so refused under ``oracle: refuse`` or a
  policy refusing unknown statements); its protocol Binds of named statements likewise;
* **PL/pgSQL fetching from the session's cursor** (red team three's open limit): ``DECLARE k CURSOR
  FOR SELECT ssn FROM users``, then a function ``DECLARE c refcursor := 'k'; ... FETCH c INTO v;
  RETURN v`` returned ``812-57-3964`` in clear (its body traced as reading nothing), and a DO
  block doing so could RAISE it (it names no masked table). A body that FETCHes or MOVEs in a
  cursor variable it did not OPEN itself, or one given a name (a default, an assignment, an INTO),
  now runs what pgwarden cannot know (``unknown``: refused where unknown statements are, masked
  whole and keeping values elsewhere otherwise);
* **a WITH HOLD cursor whose query runs at COMMIT** (red team three's open limit): ``BEGIN;
  DECLARE c CURSOR WITH HOLD FOR SELECT r15_g(i) AS x ...`` with ``r15_g`` returning the name,
  then ``r15_g`` replaced to return the SSN (in the same transaction, or by another session before
  the COMMIT, once the transaction took a new lock), ``COMMIT``, ``FETCH ALL FROM c`` returned the
  SSNs in clear: the cursor's rows were traced as its DECLARE saw them. And its conditions were
  judged there too: ``DECLARE k CURSOR [WITH HOLD] FOR SELECT id FROM orders WHERE r15_g(1) LIKE
  '8%'`` with ``r15_g`` harmless, ``r15_g`` replaced (by the session before the COMMIT, or by
  another session, the cursor's transaction open), then ``FETCH ALL FROM k`` returned ``[1, 2]``,
  the guess right (``MOVE ALL`` its count). Now a statement that may define things again (DDL,
  DO, CALL, unknown code), the session's or another session's, makes the session's SQL cursors
  declared before opaque and their names stale (``pgwarden.session.STALE_CURSORS``): a FETCH or
  MOVE of one is refused where its query may test masked columns (any: its query is not known),
  until the name is CLOSEd or declared again.

Controls (section 2): pg_notify with LISTEN, set_config of application_name, RAISE in a DO block or
in a function (DETAIL), a unique key and a domain CHECK over copied or cast values, COPY TO STDOUT
(text, CSV with HEADER, binary), EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) of a condition from the
SSN, large objects, setval, advisory locks, window functions, ROLLUP, DISTINCT ON, md5, base64,
bytea casts, pg_column_size, CASE, ascii/position/overlay/translate, string_to_array with unnest,
regexp_split_to_table, jsonb_path_query, xmltable, a recursive CTE walking the SSN; hypothetical-set
and ordered-set aggregates, string_agg ordered by the SSN, a JSON object keyed by it, WITH TIES,
UNION ALL of two partial rules; schema and catalog renames (ALTER SCHEMA public RENAME, UPDATE
pg_attribute); the FunctionCall message; binary results of derived outputs; a portal's rows read in
several Executes with no change between them. (Tried, not kept: temporary functions and views of
the same names in two sessions, a view shadowing through pg_temp: masked or refused.)

Left (reported): after any session's DDL through pgwarden (a CREATE TEMP TABLE too; another
client's change only when pg_proc changed, since session 30), every masking session's
suspended portals are refused at their next Execute and its SQL cursors declared before are refused
at their next FETCH or MOVE, whether or not the change touched what they read (a false refusal for a cursor an asyncpg client reads while another agent migrates),
and a session in an open transaction then is judged stale until it ends (under "agents", its calls
of its own functions are refused as unknown, and an EXECUTE refused so marks every later EXECUTE
of a body reading masked columns as refused, round fourteen's ``prepares_unseen``). A change made
by a client that bypasses pgwarden is seen within ``catalog.check_s`` (the documented bound); one
made through pgwarden counts once the relay reads the ReadyForQuery ending its transaction, so a
statement the other session pipelines before then is judged as before it. ``CALL`` of a
harmless SQL procedure with an INOUT parameter is refused (keeps values elsewhere: its reads are
unknown), and a PL/pgSQL procedure assigning an INOUT parameter from a sub-select does not parse
(unknown): false refusals, not changed.
"""

from __future__ import annotations

from test_mask_round3 import DB, HASH_KEY, POLICY, RawSession, Session, leaked, rtdb  # noqa: F401 (fixtures)
from test_mask_round14 import _Lax, _play, operator, warden  # noqa: F401 (fixtures)

from pgwarden.wire import messages as m

NAME = ("CREATE OR REPLACE FUNCTION r15_g(int) RETURNS text LANGUAGE sql STABLE AS "
        "$$ SELECT name FROM users WHERE id = $1 $$")
SSN = ("CREATE OR REPLACE FUNCTION r15_g(int) RETURNS text LANGUAGE sql STABLE AS "
       "$$ SELECT ssn FROM users WHERE id = $1 $$")
CLEAN = "DROP FUNCTION IF EXISTS r15_g(int); DROP TABLE IF EXISTS r15_t; DROP DOMAIN IF EXISTS r15_d; " \
        "DROP SEQUENCE IF EXISTS r15_s; DROP FUNCTION IF EXISTS r15_n()"


def _answer(raw: RawSession, *messages) -> list:
    got, received = raw.send(*messages)
    assert not leaked(received), (messages, leaked(received), got)
    return [x for x in got if not isinstance(x, (m.ReadyForQuery, m.ParseComplete, m.BindComplete,
                                                 m.CloseComplete))]


def _error(got: list) -> dict | None:
    return next((dict(x.fields) for x in got if isinstance(x, m.ErrorResponse)), None)


def _caught_up(warden) -> None:  # noqa: F811
    """The module's pgwarden has read the operator's DDL of the tests before (the premises, the
    clean-ups: seen by its catalog's check within ``check_s``, which would find this test's
    transactions open and judge them behind it)."""
    from twisted.internet.threads import blockingCallFromThread

    blockingCallFromThread(warden.reactor, warden.app.catalog.confirm)


def _ok(s: Session, sql: str) -> None:
    r = s.run(sql)
    assert r["err"] is None, (sql, r)


# ------------------------------------------------------------------ 1. what runs after the definitions changed
def test_a_portal_bound_before_another_sessions_change_is_not_run_after_it(warden, operator):  # noqa: F811
    _caught_up(warden)
    other = Session(warden)
    raw = RawSession(warden)
    try:
        _ok(other, SSN)
        _answer(raw, m.Query("BEGIN"))
        got = _answer(raw, m.Parse("", "SELECT r15_g(i) AS x FROM (VALUES (1), (1), (2), (1)) v(i)"),
                      m.Bind("P", ""), m.Describe("P", "P"), m.Execute("P", 1), m.Sync())
        rows = [x.values for x in got if isinstance(x, m.DataRow)]
        assert rows == [(b"***",)] and isinstance(got[-1], m.PortalSuspended), got
        # no change between: the portal's rows come in several Executes, masked
        got = _answer(raw, m.Execute("P", 1), m.Sync())
        assert [x.values for x in got if isinstance(x, m.DataRow)] == [(b"***",)], got
        _ok(other, NAME)  # another session: the portal's plan still runs the body of its Bind
        # before: DataRow(b'345-67-8901'), DataRow(b'812-57-3964') (traced on the new body: the name)
        got = _answer(raw, m.Execute("P", 0), m.Sync())
        error = _error(got)
        assert error is not None and error["C"] == "42501" and "portal" in error["M"], got
        assert not any(isinstance(x, m.DataRow) for x in got), got
        _answer(raw, m.Query("ROLLBACK"))
    finally:
        raw.close()
        other.close()
        operator.execute(CLEAN)


def test_an_operators_change_forgets_a_portal_only_when_it_replaced_a_function(warden, operator):  # noqa: F811
    """Another client's change (an operator's, on a direct connection, seen by the catalog's
    check): one that left pg_proc as it was (a new table, a new column) lets a portal bound before
    go on, masked as it was traced (its plan is its Bind's; session 30: any migration forgot every
    masking session's portals); one that replaced a function's body forgets it, as another session's
    change through pgwarden does (the portal's plan runs the body of its Bind)."""
    _caught_up(warden)
    operator.execute(SSN)
    _caught_up(warden)
    raw = RawSession(warden)
    try:
        _answer(raw, m.Query("BEGIN"))
        got = _answer(raw, m.Parse("", "SELECT r15_g(i) AS x FROM (VALUES (1), (1), (2), (1)) v(i)"),
                      m.Bind("P", ""), m.Describe("P", "P"), m.Execute("P", 1), m.Sync())
        assert [x.values for x in got if isinstance(x, m.DataRow)] == [(b"***",)], got
        operator.execute("CREATE TABLE r15_t (id int); ALTER TABLE r15_t ADD COLUMN note text")
        _caught_up(warden)
        got = _answer(raw, m.Execute("P", 1), m.Sync())
        assert _error(got) is None and [x.values for x in got if isinstance(x, m.DataRow)] == [(b"***",)], got
        operator.execute(NAME)  # the body its plan runs is the one of its Bind: the SSN
        _caught_up(warden)
        got = _answer(raw, m.Execute("P", 0), m.Sync())
        error = _error(got)
        assert error is not None and error["C"] == "42501" and "portal" in error["M"], got
        assert not any(isinstance(x, m.DataRow) for x in got), got
        _answer(raw, m.Query("ROLLBACK"))
    finally:
        raw.close()
        operator.execute(CLEAN)
        _caught_up(warden)


def test_a_portal_bound_before_the_sessions_own_change_is_not_run_after_it(warden, operator):  # noqa: F811
    _caught_up(warden)
    raw = RawSession(warden)
    try:
        _answer(raw, m.Query(NAME))
        _answer(raw, m.Query("BEGIN"))
        got = _answer(raw, m.Parse("", "SELECT id FROM orders WHERE r15_g(1) LIKE '8%'"), m.Bind("P", ""),
                      m.Describe("P", "P"), m.Sync())
        assert _error(got) is None, got
        _answer(raw, m.Query(SSN))  # (in the open transaction: the server's next call reads it)
        # before: DataRow(b'1'), DataRow(b'2'): the guess right (none for a wrong one); and SQL's
        # FETCH of the portal by its name likewise
        for messages in ([m.Execute("P", 0), m.Sync()], [m.Query('FETCH ALL FROM "P"')]):
            got = _answer(raw, *messages)
            error = _error(got)
            assert error is not None and error["C"] == "42501", got
            assert not any(isinstance(x, m.DataRow) for x in got), got
            _answer(raw, m.Query("ROLLBACK"))  # (r15_g is the harmless one again)
            _answer(raw, m.Query("BEGIN"))
            _answer(raw, m.Parse("", "SELECT id FROM orders WHERE r15_g(1) LIKE '8%'"), m.Bind("P", ""),
                    m.Describe("P", "P"), m.Sync())
            _answer(raw, m.Query(SSN))
        _answer(raw, m.Query("ROLLBACK"))
    finally:
        raw.close()
        operator.execute(CLEAN)


def test_a_statement_parsed_before_another_sessions_change_is_decided_again_at_its_bind(warden, operator):  # noqa: F811
    _caught_up(warden)
    other = Session(warden)
    raw = RawSession(warden)
    guess = "SELECT id FROM orders WHERE r15_g(1) LIKE '8%' ORDER BY id"
    try:
        _ok(other, NAME)
        _answer(raw, m.Parse("r15_s1", guess), m.Sync())
        got = _answer(raw, m.Bind("", "r15_s1"), m.Execute("", 0), m.Sync())
        assert _error(got) is None and not any(isinstance(x, m.DataRow) for x in got), got
        _ok(other, SSN)
        # before: DataRow(b'1'), DataRow(b'2'): the guess right (none for a wrong one)
        got = _answer(raw, m.Bind("", "r15_s1"), m.Execute("", 0), m.Sync())
        error = _error(got)
        assert error is not None and error["C"] == "42501" and "used in WHERE" in error["M"], got
        assert not any(isinstance(x, m.DataRow) for x in got), got
        # the premise, directly: the statement answers the guess
        assert operator.execute(guess).fetchall() == [(1,), (2,)]
        assert operator.execute(guess.replace("'8%'", "'9%'")).fetchall() == []
    finally:
        raw.close()
        other.close()
        operator.execute(CLEAN)


def test_a_transaction_open_across_another_sessions_change_is_judged_behind_it(warden, operator):  # noqa: F811
    _caught_up(warden)
    # The server's backend may keep, until its transaction ends, the plans and function bodies it
    # read before the change: EXECUTE of a prepared statement ran the old body of r15_g (the SSN)
    # where lineage traced the new one (the name), and returned the SSNs in clear
    other = Session(warden)
    try:
        for lax in (False, True):  # (round fourteen's "lax" group allows what pgwarden cannot analyse)
            raw = RawSession(_Lax(warden) if lax else warden)
            try:
                _ok(other, SSN)
                _answer(raw, m.Query("BEGIN"))
                for got in (_answer(raw, m.Parse("r15_s2", "SELECT r15_g(id) AS x FROM orders ORDER BY id"),
                                    m.Bind("", "r15_s2"), m.Describe("P", ""), m.Execute("", 0), m.Sync()),
                            _answer(raw, m.Query("PREPARE r15_q AS SELECT r15_g(id) AS x FROM orders ORDER BY id; "
                                                 "EXECUTE r15_q"))):
                    assert [x.values for x in got if isinstance(x, m.DataRow)] == [(b"***",)] * 2, got
                _answer(raw, m.Query("SAVEPOINT r15"))
                _ok(other, NAME)
                # before: EXECUTE r15_q returned DataRow(b'812-57-3964'), DataRow(b'345-67-8901')
                for messages in ([m.Query("EXECUTE r15_q")],
                                 [m.Bind("", "r15_s2"), m.Describe("P", ""), m.Execute("", 0), m.Sync()]):
                    got = _answer(raw, *messages)
                    rows = [x.values for x in got if isinstance(x, m.DataRow)]
                    assert rows in ([], [(b"***",)] * 2), (lax, messages, got)
                    assert rows or _error(got)["C"] == "42501", (lax, messages, got)
                    _answer(raw, m.Query("ROLLBACK TO SAVEPOINT r15"))
                _answer(raw, m.Query("COMMIT"))
                # the transaction over, the next one reads the new body, and is traced so (an EXECUTE
                # stays refused under "agents": the refused statement's untraced code may have
                # PREPAREd any name, round fourteen's `prepares_unseen`)
                got = _answer(raw, m.Query("SELECT r15_g(id) AS x FROM orders ORDER BY id"))
                assert [x.values for x in got if isinstance(x, m.DataRow)] in (
                    [(b"alice",), (b"bob",)], [(b"***",)] * 2), (lax, got)  # (masked whole while a load is due)
            finally:
                raw.close()
    finally:
        other.close()
        operator.execute(CLEAN)


HOLD = "DECLARE r15_c CURSOR WITH HOLD FOR SELECT r15_g(i) AS x FROM (VALUES (1), (2)) v(i)"
GUESS = "DECLARE r15_k CURSOR WITH HOLD FOR SELECT id FROM orders WHERE r15_g(1) LIKE '8%'"


def test_a_cursor_declared_before_a_change_is_not_read_as_its_declare_saw_it(warden, operator):  # noqa: F811
    _caught_up(warden)
    s = Session(warden)
    other = Session(warden)
    try:
        # the session's own change before the COMMIT (red team three's open limit)
        _play(s, [(NAME, "ok"), ("BEGIN", "ok"), (HOLD, "ok"), (GUESS, "ok"), (SSN, "ok"), ("COMMIT", "ok"),
                  ("FETCH ALL FROM r15_c", "refused"),  # before: [('812-57-3964',), ('345-67-8901',)]
                  ("FETCH ALL FROM r15_k", "refused"),  # before: [(1,), (2,)]: the guess right
                  ("MOVE ALL FROM r15_k", "refused"),  # (its count)
                  ("CLOSE r15_c", "ok"), ("CLOSE r15_k", "ok")])
        # another session's, the transaction taking a new lock after it (its catalog reads it);
        # a cursor without HOLD too (its query runs at the FETCH)
        _play(s, [(NAME, "ok"), ("BEGIN", "ok"), (GUESS.replace(" WITH HOLD", ""), "ok")])
        _ok(other, SSN)
        _play(s, [("SELECT count(*) FROM people", "ok"),
                  ("FETCH ALL FROM r15_k", "refused"),  # before: [(1,), (2,)]
                  ("ROLLBACK", "ok")])
        _play(s, [(NAME, "ok"), ("BEGIN", "ok"), (HOLD, "ok")])
        _ok(other, SSN)
        _play(s, [("SELECT count(*) FROM people", "ok"), ("COMMIT", "ok"),
                  ("FETCH ALL FROM r15_c", "refused"),  # before: the SSNs in clear
                  ("CLOSE r15_c", "ok")])
        # a cursor declared after the change is traced as before
        _play(s, [(NAME, "ok"), ("BEGIN", "ok"), (HOLD, "ok"), ("COMMIT", "ok")])
        assert sorted(s.run("FETCH ALL FROM r15_c")["rows"]) == [("alice",), ("bob",)]
        # the premise, directly: the cursor runs the body of its COMMIT
        operator.execute(NAME)
        with operator.transaction():
            operator.execute(HOLD)
            operator.execute(SSN)
        assert operator.execute("FETCH ALL FROM r15_c").fetchall() == [("812-57-3964",), ("345-67-8901",)]
        operator.execute("CLOSE r15_c; " + NAME)
        with operator.transaction():
            operator.execute(GUESS)
            operator.execute(SSN)
        assert operator.execute("FETCH ALL FROM r15_k").fetchall() == [(1,), (2,)]
        operator.execute("CLOSE r15_k")
    finally:
        s.close()
        other.close()
        operator.execute(CLEAN)


FETCHING = ("CREATE OR REPLACE FUNCTION r15_fetch() RETURNS text LANGUAGE plpgsql AS $$ DECLARE v text; "
            "c refcursor := 'r15_k'; BEGIN FETCH c INTO v; RETURN v; END $$")


def test_plpgsql_fetching_from_the_sessions_cursor_reads_what_it_reads(warden, operator):  # noqa: F811
    _caught_up(warden)
    operator.execute(FETCHING)  # (the schema's own function: an agent under "agents" may not make it now)
    _caught_up(warden)
    s = Session(warden)
    lax = RawSession(_Lax(warden))
    try:
        _play(s, [("BEGIN", "ok"), ("DECLARE r15_k CURSOR FOR SELECT ssn FROM users ORDER BY id", "ok"),
                  ("SELECT r15_fetch()", "refused"),  # before: [('812-57-3964',)] (traced as reading nothing)
                  ("ROLLBACK", "ok"), ("BEGIN", "ok"),
                  ("DECLARE r15_k CURSOR FOR SELECT ssn FROM users ORDER BY id", "ok"),
                  ("DO $$ DECLARE c refcursor := 'r15_k'; v text; BEGIN FETCH c INTO v; RAISE NOTICE '%', v; END $$",
                   "refused"),
                  ("ROLLBACK", "ok"),
                  (FETCHING.replace("r15_fetch", "r15_fetch2"), "refused")])  # (its body: unknown)
        _answer(lax, m.Query("BEGIN"))
        _answer(lax, m.Query("DECLARE r15_k CURSOR FOR SELECT ssn FROM users ORDER BY id"))
        got = _answer(lax, m.Query("SELECT r15_fetch()"))  # (masked whole or refused: never in clear)
        assert [x.values for x in got if isinstance(x, m.DataRow)] in ([], [(b"***",)]), got
        _answer(lax, m.Query("ROLLBACK"))
        # the premise, directly
        with operator.transaction():
            operator.execute("DECLARE r15_k CURSOR FOR SELECT ssn FROM users ORDER BY id")
            assert operator.execute("SELECT r15_fetch()").fetchall() == [("812-57-3964",)]
    finally:
        lax.close()
        s.close()
        operator.execute("DROP FUNCTION IF EXISTS r15_fetch(), r15_fetch2()")


# ------------------------------------------------------------------ 2. controls: the brief's list, masked or refused
CONTROLS = [
    # channels other than rows
    ("LISTEN r15", "ok"),
    ("SELECT pg_notify('r15', ssn) FROM users", "refused"),
    ("SELECT set_config('application_name', ssn, false) FROM users WHERE id = 1", "refused"),
    ("DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM users WHERE id = 1); END $$", "refused"),
    ("CREATE FUNCTION r15_n() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'x' USING DETAIL = "
     "(SELECT ssn FROM users WHERE id = 1); RETURN 1; END $$", "ok"),
    ("SELECT r15_n()", "refused"),
    ("CREATE TABLE r15_t (x text UNIQUE)", "ok"),
    ("INSERT INTO r15_t SELECT ssn FROM users", "refused"),
    ("INSERT INTO r15_t SELECT substr(ssn, 1, 3) FROM users", "refused"),
    ("CREATE DOMAIN r15_d AS text CHECK (VALUE LIKE '8%')", "ok"),
    ("SELECT ssn::r15_d FROM users", "error"),  # (its message withheld)
    ("EXPLAIN (VERBOSE, ANALYZE, FORMAT JSON) SELECT * FROM users WHERE id = "
     "(SELECT ascii(ssn) FROM users WHERE id = 1)", "refused"),
    # values kept where a later statement reads them
    ("SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM users WHERE id = 1", "refused"),
    ("CREATE SEQUENCE r15_s", "ok"),
    ("SELECT setval('r15_s', ssn_num) FROM users WHERE id = 1", "refused"),
    ("SELECT pg_advisory_lock(hashtext(ssn)) FROM users WHERE id = 1", "refused"),
    # transformations
    ("SELECT lag(ssn) OVER (ORDER BY id), first_value(ssn) OVER () FROM users", "masked"),
    ("SELECT ssn, count(*) FROM users GROUP BY ROLLUP (ssn)", "refused"),
    ("SELECT DISTINCT ON (ssn) id FROM users", "refused"),
    ("SELECT md5(ssn), encode(convert_to(ssn, 'UTF8'), 'base64'), ssn::bytea, pg_column_size(ssn) FROM users",
     "masked"),
    ("SELECT CASE WHEN ssn LIKE '8%' THEN 1 ELSE 0 END FROM users", "refused"),
    ("SELECT ascii(ssn), position('8' in ssn), overlay(ssn placing 'x' from 1 for 1), "
     "translate(ssn, '0123456789', 'abcdefghij') FROM users", "masked"),
    ("SELECT x FROM users, LATERAL unnest(string_to_array(ssn, NULL)) x", "refused"),
    ("SELECT regexp_split_to_table(ssn, '') FROM users", "refused"),
    ("SELECT jsonb_path_query(to_jsonb(u), '$.ssn') FROM users u", "refused"),
    ("SELECT * FROM users u, xmltable('/a' PASSING xmlelement(name a, u.ssn) COLUMNS v text PATH '.') x",
     "refused"),
    ("WITH RECURSIVE r(i, c) AS (SELECT 1, substr((SELECT ssn FROM users WHERE id = 1), 1, 1) UNION ALL "
     "SELECT i + 1, substr((SELECT ssn FROM users WHERE id = 1), i + 1, 1) FROM r WHERE i < 11) SELECT c FROM r",
     "masked"),
    # aggregates, ties, set operations
    ("SELECT rank('5') WITHIN GROUP (ORDER BY ssn) FROM users", "refused"),
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM users", "refused"),
    ("SELECT string_agg(name, ',' ORDER BY ssn) FROM users", "refused"),
    ("SELECT jsonb_object_agg(ssn, id) FROM users", "refused"),
    ("SELECT count(*) FROM (SELECT id FROM users ORDER BY substr(ssn, 1, 1) FETCH FIRST 1 ROWS WITH TIES) s",
     "refused"),
    ("SELECT note FROM users UNION ALL SELECT card_number FROM users", "masked"),  # (two partial rules)
    # names the rules go by
    ("BEGIN", "ok"),
    ("ALTER SCHEMA public RENAME TO r15p", "refused"),
    ("ROLLBACK", "ok"),
    ("UPDATE pg_attribute SET attname = 'r15' WHERE attrelid = 'users'::regclass AND attname = 'ssn'", "refused"),
    ("ALTER FOREIGN TABLE users RENAME COLUMN ssn TO r15", "refused"),
]


def test_controls_are_masked_or_refused(warden, operator):  # noqa: F811
    s = Session(warden)
    raw = RawSession(warden)
    try:
        _play(s, CONTROLS)
        got = _answer(raw, m.Query("COPY (SELECT id, ssn FROM users ORDER BY id) TO STDOUT (FORMAT csv, HEADER true)"))
        assert [x.data for x in got if isinstance(x, m.CopyData)] == [b"id,ssn\n", b"1,***\n", b"2,***\n"], got
        got = _answer(raw, m.Query("COPY users TO STDOUT (FORMAT binary)"))
        assert _error(got)["C"] == "42501", got
        # the FunctionCall message (its result is no DataRow): refused whatever it calls
        got = _answer(raw, m.FunctionCall(1, (), (), 0))
        assert _error(got)["C"] == "42501", got
        # binary results of derived outputs: a valid value of the type, or NULL
        got = _answer(raw, m.Parse("", "SELECT ssn || '' AS a, ascii(ssn) AS b, ssn::bytea AS c, ssn_num + 0 AS d "
                                   "FROM users ORDER BY id"),
                      m.Bind("", "", result_formats=(1,)), m.Describe("P", ""), m.Execute("", 0), m.Sync())
        assert [x.values for x in got if isinstance(x, m.DataRow)] == [(b"***", None, None, None)] * 2, got
    finally:
        raw.close()
        s.close()
        operator.execute(CLEAN)
