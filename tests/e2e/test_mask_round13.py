"""Red team thirteen (masking, 2026-12-07, hunt 13b): built-ins that run a query given as text, or
return values of any column, reached where the text does not call them by name (an operator's or
a cast's function, an aggregate's state function); and a sweep of the brief's list (functions that
run SQL text or read a table by name, side channels the session reads back, encodings and formats,
order and count oracles), kept as controls.
Round three's database and masks (tests/e2e/test_mask_round3.py) under its POLICY (default allow;
roles and system blocked: the agent may create tables, functions, operators, casts and aggregates).
Each test of sections 1 to 3 failed before its fix.

Found, closed:

* **a built-in running SQL text through an operator** of the agent's own: ``CREATE OPERATOR ###
  (FUNCTION = ts_rewrite, LEFTARG = tsquery, RIGHTARG = text)``, then ``SELECT 'a'::tsquery ###
  'SELECT ''a''::tsquery, quote_literal(ssn)::tsquery FROM users WHERE id = 1'`` returned
  ``'812-57-3964'`` (the SSN in clear); the query read from a table of the agent's (``SELECT
  'a'::tsquery ### q FROM qs``) the same; ``CREATE OPERATOR #%# (FUNCTION = ts_stat, RIGHTARG =
  text)`` and ``SELECT #%# 'select to_tsvector(ssn) from users'`` returned the SSN's words (``812``,
  ``-57``, ``-3964``), also through an SQL function's body. A call of ``ts_rewrite``/``ts_stat``
  by name was refused (its text analysed, or unknown when computed); lineage skipped an
  operator's built-in function as reading nothing, and the analysis judged it by its volatility
  alone. Now an operator's, a cast's or an aggregate's built-in function that runs SQL text (or
  reads a relation by name) runs what pgwarden cannot know (``statements pgwarden cannot
  analyse``), and lineage reads it as such a call by name (unknown reads, outputs masked whole);
* **a built-in returning values of any column through an operator or a cast**: ``CREATE OPERATOR
  #!# (FUNCTION = pg_stat_get_backend_activity, RIGHTARG = int4)`` then ``SELECT #!# n FROM
  pg_stat_get_backend_idset() n`` returned the operator's other session's ``... WHERE ssn =
  '812-57-3964'`` in clear (the call by name is masked whole: "Statistics and statements' text");
  the same through ``CREATE CAST (int4 AS text) WITH FUNCTION pg_stat_get_backend_activity(int4)``
  and ``n::text``, and, with the cast ``AS IMPLICIT``, through ``ltrim(n)``, where no text shows a
  cast. Now such a function reached by an operator or an explicit cast is its call's source (masked
  whole, an oracle in a condition), and while the catalog holds an implicit or assignment cast whose
  function is one, every statement is traced as unknown (as after the session's own DDL: outputs
  masked whole, conditions over untraced values), and every value it writes is one pgwarden
  cannot trace (refused: with the cast ``AS ASSIGNMENT``, ``INSERT INTO r13_t SELECT n FROM
  pg_stat_get_backend_idset() n`` stored the statements, and ``SELECT * FROM r13_t`` after ``DROP
  CAST`` returned them in clear).

* **a set-returning function reached by an operator**: ``CREATE OPERATOR #~# (FUNCTION =
  generate_series, LEFTARG = int4, RIGHTARG = int4)``, then ``SELECT count(*) FROM (SELECT 1 #~#
  ascii(substr(ssn, 1, 1)) FROM users WHERE id = 1) s`` returned ``56`` (``'8'``): one character
  of the SSN a statement (``regexp_split_to_table``, ``jsonb_array_elements`` likewise); the call by
  name was refused as a set-returning function's argument, the operator was no such call. Now an
  operator whose function returns a set is an oracle of its operands, as the call's arguments are
  (``used in rows``, unless the statement fixes their structure).

Controls (section 4): the brief's list held (masked or refused): query_to_xml, table_to_xml under
xpath, cursor_to_xml, schema_to_xml, database_to_xml, ts_stat, ts_rewrite by name, a LANGUAGE
internal alias of query_to_xml or pg_stat_get_backend_activity, pg_notify with LISTEN, set_config
then SHOW, errors of casts (int, jsonb), an INSERT into a table with a unique key, an advisory lock,
lo_from_bytea, CREATE TEMP TABLE AS and SELECT INTO, setval, SET client_encoding, binary results of
masked columns (arrays, rows, ranges, json), COPY with ENCODING, DISTINCT ON, count(DISTINCT),
min/max, ORDER BY an ordinal, UNION, jsonb keys made of values, OFFSET, whole-row comparisons and
orders, EXPLAIN of a condition, and a session started in BIG5 whose COPY text holds a character
whose second byte is a backslash before the masked field.

Left (reported): a session started in a client encoding other than UTF-8 whose COPY output holds a
byte sequence that is not UTF-8 ends with an internal error (fails closed; a false refusal for such
sessions); ``ts_rewrite('a', 'SELECT ''a''::tsquery, ''b''::tsquery')`` reading no masked table is
refused as keeping values elsewhere (ts_rewrite is VOLATILE).
"""

from __future__ import annotations

import psycopg
import pytest
from test_mask_round3 import DB, POLICY, SSN, Session, direct, leaked, rtdb, start  # noqa: F401 (fixtures)

SSN_WORDS = ("812", "-57", "-3964")


@pytest.fixture
def operator(request):
    """A direct connection to the database (the operator's)."""
    return request.getfixturevalue("direct")


@pytest.fixture
def warden(request, make_pgwarden, tmp_path):
    request.getfixturevalue("rtdb")
    return start(make_pgwarden, tmp_path, POLICY)


def _refused(r: dict, why: str = "") -> bool:
    return r["err"] is not None and r["err"][0] == "42501" and why in r["err"][1]


def _run(s: Session, sql: str) -> tuple[dict, bytes]:
    """``sql``'s answer in ``s`` and every byte received for it (its notices too)."""
    before = len(s.received)
    s.notices.clear()
    r = s.run(sql)
    return r, s.received[before:] + repr((r, s.notices)).encode()


def _holds_ssn(got: bytes) -> list[str]:
    """The secrets ``got`` holds: round three's, and the SSN's words as to_tsvector splits it."""
    return leaked(got) + [w for w in SSN_WORDS if repr((w,)).encode() in got or f"'{w}'".encode() in got]


CLEAN = ("DROP FUNCTION IF EXISTS r13_words() CASCADE; DROP AGGREGATE IF EXISTS r13_agg(text); "
         "DROP OPERATOR IF EXISTS ### (tsquery, text); DROP OPERATOR IF EXISTS #%# (NONE, text); "
         "DROP OPERATOR IF EXISTS #!# (NONE, int4); DROP CAST IF EXISTS (int4 AS text); "
         "DROP FUNCTION IF EXISTS r13_qx(text, bool, bool, text), r13_act(int); "
         "DROP OPERATOR IF EXISTS #&& (text, text), #@@ (regclass, int8), #^^ (int4, int4), #== (oid, bytea); "
         "DROP TABLE IF EXISTS r13_qs, r13_uq, r13_t; DROP SEQUENCE IF EXISTS r13_sq")


# ------------------------------------------------------------------ 1. SQL text run by an operator's built-in
REWRITE = "SELECT ''a''::tsquery, quote_literal(ssn)::tsquery FROM users WHERE id = 1"
SQL_TEXT = [
    # (statement, expected): "ok" for the set-up, "refused" for the reads
    ("CREATE OPERATOR ### (FUNCTION = ts_rewrite, LEFTARG = tsquery, RIGHTARG = text)", "ok"),
    (f"SELECT 'a'::tsquery ### '{REWRITE}'", "refused"),  # before: [("'812-57-3964'",)]
    ("CREATE TABLE r13_qs (q text)", "ok"),
    (f"INSERT INTO r13_qs VALUES ('{REWRITE}')", "ok"),
    ("SELECT 'a'::tsquery ### q FROM r13_qs", "refused"),  # before: the SSN
    (f"SELECT id FROM users WHERE 'a'::tsquery ### '{REWRITE}' = 'x'::tsquery", "refused"),
    ("CREATE OPERATOR #%# (FUNCTION = ts_stat, RIGHTARG = text)", "ok"),
    ("SELECT #%# 'select to_tsvector(ssn) from users'", "refused"),  # before: ('812', ...), ('-3964', ...)
    ("CREATE FUNCTION r13_words() RETURNS SETOF record LANGUAGE sql AS "
     "$$ SELECT #%# 'select to_tsvector(ssn) from users' $$", "ok"),
    ("SELECT r13_words()", "refused"),  # before: the same words, through the body
    # (refused before too: the aggregate's state function is VOLATILE)
    ("CREATE AGGREGATE r13_agg(text) (sfunc = ts_rewrite, stype = tsquery, initcond = 'a')", "ok"),
    ("SELECT r13_agg(q) FROM r13_qs", "refused"),
]


def test_a_built_in_running_sql_text_through_an_operator_is_refused(warden, operator):
    s = Session(warden)
    try:
        for sql, expected in SQL_TEXT:
            r, got = _run(s, sql)
            assert not _holds_ssn(got), (sql, _holds_ssn(got), r)
            if expected == "ok":
                assert r["err"] is None, (sql, r)
            else:
                assert _refused(r), (sql, r)
        # the operator's own answer, directly: what the agent would have read
        assert operator.execute(f"SELECT 'a'::tsquery ### '{REWRITE}'").fetchone()[0] == f"'{SSN}'"
    finally:
        s.close()
        operator.execute(CLEAN)


# ------------------------------------------------------------------ 2. values of any column through an operator or a cast
REVEALING = [
    ("SELECT pg_stat_get_backend_activity(n) FROM pg_stat_get_backend_idset() AS n", "masked"),  # (as before)
    ("CREATE OPERATOR #!# (FUNCTION = pg_stat_get_backend_activity, RIGHTARG = int4)", "ok"),
    ("SELECT #!# n FROM pg_stat_get_backend_idset() AS n", "masked"),  # before: the operator's statement
    ("SELECT n FROM pg_stat_get_backend_idset() AS n WHERE (#!# n) LIKE '%812%'", "refused"),
    ("CREATE CAST (int4 AS text) WITH FUNCTION pg_stat_get_backend_activity(int4)", "ok"),
    ("SELECT n::text FROM pg_stat_get_backend_idset() AS n", "masked"),  # before: the same
    ("SELECT CAST(n AS text) FROM pg_stat_get_backend_idset() AS n", "masked"),
    ("SELECT id, name FROM users", "ok"),
    ("DROP CAST (int4 AS text)", "ok"),
    ("CREATE CAST (int4 AS text) WITH FUNCTION pg_stat_get_backend_activity(int4) AS IMPLICIT", "ok"),
    ("SELECT ltrim(n) FROM pg_stat_get_backend_idset() AS n", "masked"),  # before: the same, no cast shown
    ("SELECT id, name FROM users WHERE id = 1", "refused"),  # (every condition untraced meanwhile)
    ("DROP CAST (int4 AS text)", "ok"),
    ("SELECT id, name, ssn FROM users WHERE id = 1", "ok"),  # (and traced again after)
    # an assignment cast converts what is written: before, the INSERT stored the statements, and
    # the SELECT after the DROP CAST returned them in clear
    ("CREATE TABLE r13_t (t text)", "ok"),
    ("CREATE CAST (int4 AS text) WITH FUNCTION pg_stat_get_backend_activity(int4) AS ASSIGNMENT", "ok"),
    ("INSERT INTO r13_t SELECT n FROM pg_stat_get_backend_idset() AS n", "refused"),
    ("UPDATE r13_t SET t = 4", "refused"),
    ("DROP CAST (int4 AS text)", "ok"),
    ("SELECT * FROM r13_t", "ok"),
    ("INSERT INTO r13_t VALUES ('y') RETURNING t", "ok"),
]


@pytest.fixture
def holder(request):
    """Another client's session, idle after a statement holding the SSN (its pg_stat_activity.query)."""
    with psycopg.connect(request.getfixturevalue("rtdb").dsn(database=DB), autocommit=True) as c:
        c.execute(f"SELECT count(*) FROM users WHERE ssn = '{SSN}'")
        yield c


def test_a_revealing_built_in_through_an_operator_or_a_cast_is_masked(warden, operator, holder):
    s = Session(warden)
    try:
        for sql, expected in REVEALING:
            r, got = _run(s, sql)
            assert not leaked(got), (sql, leaked(got), r)
            if expected == "refused":
                assert _refused(r), (sql, r)
                continue
            assert r["err"] is None, (sql, r)
            if expected == "masked":
                assert r["rows"] and all(row == ("***",) for row in r["rows"]), (sql, r)
        assert s.run("SELECT t FROM r13_t")["rows"] == [("y",)]
        # what the operator's function returns, directly (the premise)
        got = operator.execute("SELECT string_agg(pg_stat_get_backend_activity(n), '|') "
                             "FROM pg_stat_get_backend_idset() AS n").fetchone()[0]
        assert SSN in got, got
    finally:
        s.close()
        operator.execute(CLEAN)


# ------------------------------------------------------------------ 3. rows multiplied by an operator's set-returning function
ROWS = [
    ("CREATE OPERATOR #~# (FUNCTION = generate_series, LEFTARG = int4, RIGHTARG = int4)", "ok"),
    # before: [(56,)], the code of the SSN's first character ('8'), one character a statement
    ("SELECT count(*) FROM (SELECT 1 #~# ascii(substr(ssn, 1, 1)) FROM users WHERE id = 1) AS s", "refused"),
    ("SELECT count(*) FROM users AS u, LATERAL (SELECT 1 #~# ascii(substr(u.ssn, 2, 1))) AS s WHERE u.id = 1",
     "refused"),  # before: [(49,)], '1'
    ("CREATE OPERATOR #<# (FUNCTION = regexp_split_to_table, LEFTARG = text, RIGHTARG = text)", "ok"),
    ("SELECT count(*) FROM (SELECT ssn #<# '8' FROM users WHERE id = 1) AS s", "refused"),  # before: [(2,)]
    ("CREATE OPERATOR #*# (FUNCTION = jsonb_array_elements, RIGHTARG = jsonb)", "ok"),
    ("SELECT count(*) FROM (SELECT #*# to_jsonb(string_to_array(ssn, '8')) FROM users WHERE id = 1) AS s",
     "refused"),  # before: [(2,)]
    # the controls: the same operators over values the statement fixes, or no masked column
    ("SELECT ssn, #*# '[1, 2]'::jsonb FROM users", "ok"),
    ("SELECT count(*) FROM (SELECT 1 #~# id FROM users) AS s", "ok"),
    ("SELECT count(*) FROM (SELECT generate_series(1, ascii(substr(ssn, 1, 1))) FROM users WHERE id = 1) AS s",
     "refused"),  # (the call by name: refused before too)
]


def test_an_operators_set_returning_function_steers_rows(warden, operator):
    s = Session(warden)
    try:
        for sql, expected in ROWS:
            r, got = _run(s, sql)
            assert not leaked(got), (sql, leaked(got), r)
            assert _refused(r, "used in rows") if expected == "refused" else r["err"] is None, (sql, r)
        assert s.run("SELECT count(*) FROM (SELECT 1 #~# id FROM users) AS s")["rows"] == [(3,)]
        # no built-in operator returns a set: the check costs ordinary statements nothing
        assert operator.execute("SELECT count(*) FROM pg_operator AS o JOIN pg_proc AS p ON p.oid = o.oprcode "
                                "WHERE p.proretset AND o.oid < 16384").fetchone() == (0,)
    finally:
        s.close()
        operator.execute("DROP OPERATOR IF EXISTS #~# (int4, int4); DROP OPERATOR IF EXISTS #<# (text, text); "
                         "DROP OPERATOR IF EXISTS #*# (NONE, jsonb)")


# ------------------------------------------------------------------ 4. controls: the brief's list, masked or refused
CONTROLS = [
    ("SELECT query_to_xml('select ssn from users', true, false, '')", "refused"),
    ("SELECT query_to_xml_and_xmlschema('select ssn from users', true, false, '')", "refused"),
    ("SELECT xpath('//ssn/text()', table_to_xml('users', true, false, ''))", "masked-null"),
    ("SELECT schema_to_xml('public', true, false, '')", "refused"),
    ("SELECT database_to_xml(true, false, '')", "refused"),
    ("SELECT * FROM ts_stat('select to_tsvector(ssn) from users')", "refused"),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, quote_literal(ssn)::tsquery FROM users')", "refused"),
    # (refused since round thirteen's blocking: code in a language pgwarden does not read is `system`)
    ("CREATE FUNCTION r13_qx(text, bool, bool, text) RETURNS xml LANGUAGE internal STABLE STRICT "
     "AS 'query_to_xml'", "refused"),
    ("SELECT r13_qx('select ssn from users', true, false, '')", "refused"),
    ("BEGIN", "ok"),
    ("DECLARE c CURSOR FOR SELECT ssn FROM users", "ok"),
    ("SELECT cursor_to_xml('c', 10, true, false, '')", "masked-null"),
    ("COMMIT", "ok"),
    ("LISTEN r13", "ok"),
    ("SELECT pg_notify('r13', ssn) FROM users", "refused"),
    ("SELECT set_config('r13.x', ssn, false) FROM users WHERE id = 1", "refused"),
    ("SELECT ssn::int FROM users", "error"),
    ("SELECT ssn::jsonb FROM users", "error"),
    ("SELECT ssn::xml FROM users", "masked-null"),
    ("CREATE TABLE r13_uq (v text PRIMARY KEY)", "ok"),
    (f"INSERT INTO r13_uq VALUES ('{SSN}')", "ok"),
    ("INSERT INTO r13_uq SELECT ssn FROM users", "refused"),
    ("SELECT pg_advisory_lock(hashtext(ssn)) FROM users", "refused"),
    ("SELECT lo_from_bytea(0, ssn::bytea) FROM users", "refused"),
    ("CREATE TEMP TABLE r13_tt AS SELECT ssn FROM users", "refused"),
    ("SELECT ssn INTO TEMP r13_tt FROM users", "refused"),
    ("CREATE SEQUENCE r13_sq", "ok"),
    ("SELECT setval('r13_sq', ssn_num) FROM users", "refused"),
    ("SET client_encoding = 'BIG5'", "refused"),
    ("SELECT DISTINCT ON (name) id FROM users ORDER BY name, ssn", "refused"),
    ("SELECT count(DISTINCT ssn) FROM users", "refused"),
    ("SELECT min(ssn), max(card_number) FROM users", "refused"),
    ("SELECT id, ssn FROM users ORDER BY 2", "refused"),
    ("SELECT ssn FROM users UNION SELECT '812-57-3964'", "refused"),
    ("SELECT jsonb_object_keys(jsonb_build_object(ssn, 1, '812-57-3964', 2)) FROM users", "refused"),
    ("SELECT 1 FROM generate_series(1, 10) OFFSET (SELECT ssn_num % 10 FROM users WHERE id = 1)", "refused"),
    ("SELECT id FROM users u WHERE u = u", "refused"),
    ("SELECT id FROM users u ORDER BY md5(u::text)", "refused"),
    ("SELECT count(*) FROM (SELECT DISTINCT u FROM users u) s", "refused"),
    ("EXPLAIN SELECT 1 FROM users WHERE ssn < '5'", "refused"),
    ("SELECT current_query(), ssn FROM users", "ok"),
    # functions that keep values elsewhere, reached by operators: judged as their calls
    ("CREATE OPERATOR #&& (FUNCTION = pg_notify, LEFTARG = text, RIGHTARG = text)", "ok"),
    ("SELECT 'r13' #&& ssn FROM users", "refused"),
    ("CREATE OPERATOR #@@ (FUNCTION = setval, LEFTARG = regclass, RIGHTARG = int8)", "ok"),
    ("SELECT 'r13_sq'::regclass #@@ ssn_num FROM users WHERE id = 1", "refused"),
    ("CREATE OPERATOR #^^ (FUNCTION = pg_advisory_lock, LEFTARG = int4, RIGHTARG = int4)", "ok"),
    ("SELECT 1 #^^ ascii(ssn) FROM users WHERE id = 1", "refused"),
    ("CREATE OPERATOR #== (FUNCTION = lo_from_bytea, LEFTARG = oid, RIGHTARG = bytea)", "ok"),
    ("SELECT 0::oid #== ssn::bytea FROM users WHERE id = 1", "refused"),
]


def test_controls_are_masked_or_refused(warden, operator):
    s = Session(warden)
    try:
        for sql, expected in CONTROLS:
            r, got = _run(s, sql)
            assert not _holds_ssn(got), (sql, _holds_ssn(got), r)
            if expected == "refused":
                assert _refused(r), (sql, r)
            elif expected == "error":
                assert r["err"] is not None and "message withheld" in r["err"][1], (sql, r)
            else:
                assert r["err"] is None, (sql, r)
            if expected == "masked-null":
                assert r["rows"] and all(row == (None,) for row in r["rows"]), (sql, r)
        # binary results of masked columns and of values made of them
        r, got = _run(s, "SELECT 1")
        before = len(s.received)
        binary = s.run("SELECT id, ssn, card_number, email, ssn_num, dob, blob, ARRAY[ssn], ROW(ssn, id), "
                       "int8range(ssn_num, ssn_num + 1), to_jsonb(ssn), ARRAY[dob] FROM users ORDER BY id",
                       binary=True)
        assert not leaked(s.received[before:]), leaked(s.received[before:])
        assert binary["rows"][0][:8] == (1, "***", "************6467", "***@example.com", None, None, None, None)
        # COPY in an encoding of its own
        with pytest.raises(Exception, match="COPY of masked columns"):
            with s.conn.cursor() as cur, cur.copy("COPY users (name, ssn) TO STDOUT WITH (ENCODING 'BIG5')") as copy:
                b"".join(bytes(chunk) for chunk in copy)
    finally:
        s.close()
        operator.execute(CLEAN)


def test_a_big5_session_copy_is_masked(warden, operator):
    # A session started in BIG5: the name (a column the agent may write) ends in 功 (A5 5C: its
    # second byte is a backslash), after 䡥 (E4 A1), so that the line is valid UTF-8 too; COPY TO
    # STDOUT writes the 5C unescaped before the tab that ends the field. The masked field stays masked.
    operator.execute("UPDATE users SET name = convert_from('\\xe4a1a55c'::bytea, 'BIG5') WHERE id = 1")
    try:
        s = Session(warden, client_encoding="BIG5")
        try:
            before = len(s.received)
            with s.conn.cursor() as cur, cur.copy("COPY (SELECT name, ssn, id FROM users WHERE id = 1) TO STDOUT") as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
            assert not leaked(s.received[before:]), (leaked(s.received[before:]), data)
            assert data == b"\xe4\xa1\xa5\\\t***\t1\n", data
        finally:
            s.close()
    finally:
        operator.execute("UPDATE users SET name = 'alice' WHERE id = 1")
