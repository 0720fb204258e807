"""Masking, red team round five (2026-12-06): leaks found through `pgwarden demo`'s policy, where
the agent creates nothing (DDL, DO and functions with side effects are refused). Each test runs
the attack through pgwarden and searches every byte the agent received for the secrets (round
three's table and tap: tests/e2e/test_mask_round3.py).
"""
from __future__ import annotations

import pytest
from test_mask_round3 import (
    CARD,
    POLICY,
    SSN,
    Session,
    direct,  # noqa: F401 (a fixture: asked for by name below)
    leaked,
    received_by,
    rtdb,  # noqa: F401 (round three's database, a fixture: asked for by name below)
    start,
)

# `pgwarden demo`'s refusals, with round three's masks.
DEMO_LIKE = {**POLICY, "rules": [
    {"name": "no-ddl", "block": {"statements": ["ddl", "truncate", "grant", "role", "system"]}},
    {"name": "no-side-effects", "block": {"statements": ["side_effect", "do", "unknown", "server_files"]}},
    *POLICY["rules"][1:]]}


@pytest.fixture
def agent(request, make_pgwarden, tmp_path):
    request.getfixturevalue("rtdb")  # round three's database
    s = Session(start(make_pgwarden, tmp_path, DEMO_LIKE))
    yield s
    s.close()


def test_a_recursive_with_item_named_before_its_place_is_that_item(agent):
    # Under WITH RECURSIVE a query may name a later item of the list: `users` in `a` is the item
    # computed from ssn and card_number, not the table (lineage had walked the items in order).
    got, r = received_by(agent, "WITH RECURSIVE a AS (SELECT id, name, email FROM users), users AS ("
                                "SELECT id, ssn || '' AS name, card_number || '' AS email FROM public.users) "
                                "SELECT id, name, email FROM a ORDER BY id")
    assert r["err"] is None and len(r["rows"]) == 2, r
    assert not leaked(got), leaked(got)
    # and with the items named as each other's, the order is the dependency's, through several
    got, r = received_by(agent, "WITH RECURSIVE a AS (SELECT id, name FROM b), b AS (SELECT id, name FROM users), "
                                "users AS (SELECT id, reverse(ssn) AS name FROM public.users) SELECT * FROM a")
    assert not leaked(got) and SSN[::-1] not in str(r["rows"]), r


@pytest.mark.parametrize("sql", [
    "SELECT 1 AS one WHERE table_to_xml('users', false, false, '')::text LIKE '%<ssn>8%'",
    "SELECT 1 AS one WHERE table_to_xml_and_xmlschema('public.users', true, false, '')::text ~ 'ssn>8'",
    "SELECT count(*) FROM generate_series(1, 2) WHERE length(table_to_xml('users', false, false, '')::text) > 5",
    "SELECT n FROM generate_series(1, 9) n ORDER BY strpos(table_to_xml('users', false, false, '')::text, n::text)",
], ids=["where-like", "and-xmlschema", "where-length", "order-by"])
def test_a_table_read_by_name_is_no_oracle_either(agent, sql):
    # table_to_xml reads the table its argument names: its value is masked whole when returned,
    # and a condition over it (which rows come out, in which order) is an oracle of every
    # column it may hold (whole digits were extracted in one statement this way).
    got, r = received_by(agent, sql)
    assert r["err"] is not None and r["err"][0] == "42501" and "cannot trace" in r["err"][1], r
    assert not leaked(got), leaked(got)


def test_a_table_read_by_name_may_still_be_returned_masked(agent):
    got, r = received_by(agent, "SELECT table_to_xml('users', false, false, '') AS doc")
    assert r["err"] is None and not leaked(got), (r, leaked(got))


def _as_letters(value: str) -> str:
    return value.translate(str.maketrans("0123456789", "abcdefghij"))


@pytest.mark.parametrize("commit", ["COMMIT", "END", "COMMIT AND CHAIN", "COMMIT; SELECT 1"])
def test_the_commit_that_runs_a_held_cursor_keeps_its_error_to_itself(agent, commit):
    # A WITH HOLD cursor's query runs when its transaction commits: its error (a value rewritten
    # out of the detectors' shapes, in "invalid input syntax for type integer") was COMMIT's.
    assert received_by(agent, "BEGIN")[1]["err"] is None
    got, r = received_by(agent, "DECLARE h CURSOR WITH HOLD FOR SELECT translate(ssn, '0123456789', "
                                "'abcdefghij')::int FROM users WHERE id = 1")
    assert r["err"] is None, r
    got, r = received_by(agent, commit)
    assert r["err"] is not None and r["err"][0] == "22P02", r
    assert _as_letters(SSN) not in got.decode("latin-1") and not leaked(got), r
    received_by(agent, "ROLLBACK")


def test_a_held_cursor_over_other_columns_leaves_commit_errors_alone(agent):
    assert received_by(agent, "BEGIN")[1]["err"] is None
    assert received_by(agent, "DECLARE h CURSOR WITH HOLD FOR SELECT name::int FROM users WHERE id = 1")[1]["err"] is None
    _, r = received_by(agent, "COMMIT")
    assert r["err"] is not None and "alice" in r["err"][1], r  # the message as the server wrote it


def test_explain_analyze_of_a_value_computed_and_not_returned_is_an_oracle(agent):
    # The run plan says which sub-plans ran: `COALESCE(nullif(substr(ssn, 1, 1), '8'), (SELECT ...))`
    # runs its sub-select exactly when the first digit is 8, in a column the query does not return.
    sql = ("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT u.id FROM users u, LATERAL ("
           "SELECT COALESCE(nullif(substr(u.ssn, 1, 1), '8'), (SELECT 'x'::text FROM orders o WHERE o.id = u.id))"
           " || random()::text AS v OFFSET 0) x WHERE u.id = 1")
    _, r = received_by(agent, sql)
    assert r["err"] is not None and r["err"][0] == "42501" and "EXPLAIN ANALYZE" in r["err"][1], r
    _, r = received_by(agent, sql.replace("u.ssn", "u.name"))  # the same over a column not masked runs
    assert r["err"] is None and any("never executed" in row[0] or "actual rows" in row[0] for row in r["rows"]), r


# Names: where lineage resolved or named a column otherwise than the server, an outer query read
# the server's column (a masked value computed in a sub-select) as another one.
NAMING = {
    # `oid` is no system column since PostgreSQL 12: inside the sub-select it is the outer column
    "oid": "SELECT s.id, (SELECT oid FROM orders LIMIT 1) AS leaked FROM "
           "(SELECT id, ssn || ' / ' || card_number AS oid FROM users) s ORDER BY s.id",
    # ROWS FROM is named after its first function
    "rows-from": "SELECT u.id, (SELECT string_agg(unnest.unnest, ' / ') FROM ROWS FROM (unnest(ARRAY[u.ssn::text, "
                 "u.card_number::text]), generate_series(1, 2))) AS leaked FROM (SELECT id AS unnest FROM users) AS "
                 "unnest, users u WHERE u.id = unnest.unnest ORDER BY u.id",
    # (x).field[1] is named field
    "indirection": "SELECT q.ts_debug FROM (SELECT (t).ts_debug[1], (ts_debug('a')).lexemes[1] FROM (SELECT id, "
                   "ARRAY[ssn || ' / ' || card_number] AS ts_debug FROM users) t ORDER BY t.id) q",
    # a cast is named after its type, CASE after its ELSE: NATURAL JOIN merges by those names
    "natural-join": "SELECT * FROM (SELECT 1::int4, ssn || ' / ' || card_number AS s, CASE WHEN true THEN 2 ELSE "
                    "z.w END FROM users, (SELECT 2 AS w) z) l NATURAL JOIN (SELECT 1 AS \"case\", 1 AS int4) r",
    # a polymorphic result has the columns of its argument's type
    "populate-record": "SELECT o.ssn AS id, (SELECT ssn || ' / ' || card_number FROM jsonb_populate_record("
                       "NULL::users, (SELECT to_jsonb(x) FROM users x WHERE x.id = o.ssn)) p) AS leaked FROM "
                       "(SELECT id AS ssn, id AS card_number FROM users) o ORDER BY o.ssn",
    # an overload of another shape (unnest(tsvector)) had shifted the columns
    "overloads": "SELECT * FROM unnest(ARRAY[1]), (SELECT ssn || '' AS s FROM users) q",
    # ... and a name such a result lacks is the outer query's column
    "outer-past-populate": "SELECT (SELECT ssn || '' FROM jsonb_populate_record(NULL::orders, to_jsonb(o))) AS x "
                           "FROM users, orders o WHERE o.user_id = users.id",
    "outer-past-unnest": "SELECT (SELECT ssn || '' FROM unnest(ARRAY[users.id])) AS x FROM users",
}


@pytest.mark.parametrize("sql", list(NAMING.values()), ids=list(NAMING))
def test_a_column_the_server_names_is_the_one_masked(agent, sql):
    _assert_not_in_clear(*received_by(agent, sql))


def _assert_not_in_clear(got: bytes, r: dict) -> None:
    """No secret in the bytes the agent received, nor in its rows, nor rewritten out of the
    detectors' shapes (``translate(ssn, '0123456789', 'abcdefghij')``)."""
    text = got.decode("latin-1")
    assert not leaked(got), (leaked(got), r)
    assert SSN not in str(r["rows"]) and CARD[:12] not in str(r["rows"]).replace(" ", ""), r
    assert _as_letters(SSN) not in text and _as_letters(SSN)[:3] not in text.replace("abc", ""), r


def test_join_using_a_name_only_the_server_finds_is_an_oracle(agent):
    # USING (text): both sides' column is `text` for the server; one digit per statement, all rows
    got, r = received_by(agent, "SELECT a.id, b.d FROM (SELECT id, (substr(ssn, 1, 1) || '')::text FROM users) a "
                                "JOIN (SELECT d, (d || '')::text FROM generate_series(0, 9) d) b USING (text) "
                                "ORDER BY a.id")
    assert r["err"] is not None and r["err"][0] == "42501", r


@pytest.mark.parametrize("deallocate", ["SELECT 1/0; DEALLOCATE p", "DEALLOCATE p; DROP TABLE no_such_table"])
def test_a_deallocate_that_does_not_run_leaves_the_prepared_body_masked(agent, deallocate):
    # the DEALLOCATE does not run, the PREPARE after it fails (the name is held): EXECUTE p runs
    # the first body, whose output is a masked value
    assert received_by(agent, "PREPARE p AS SELECT ssn || '' AS x FROM users WHERE id = 1")[1]["err"] is None
    received_by(agent, deallocate)
    received_by(agent, "PREPARE p AS SELECT 'constant' AS x")
    got, r = received_by(agent, "EXECUTE p")
    assert not leaked(got), (leaked(got), r)


# Round five, second pass (on the fixes above): more places where lineage named, scoped or
# listed columns otherwise than the server, each a masked value read in clear as another column.
LEAKS_5B = {
    "user-named-user": "SELECT o.id, (SELECT \"current_user\" FROM (SELECT user) s) AS leaked FROM (SELECT id, "
                       "ssn || ' / ' || card_number AS \"current_user\" FROM users) o ORDER BY o.id",
    "user-natural-full": "SELECT * FROM (SELECT user) a NATURAL FULL JOIN (SELECT 'x' AS \"current_user\", ssn || "
                         "' / ' || card_number AS \"user\" FROM users WHERE id <= 3) b",
    "unnest-overloads": "SELECT o.id, (SELECT lexeme FROM unnest(ARRAY[1]) u) AS leaked FROM (SELECT id, ssn || ' / ' "
                        "|| card_number AS lexeme FROM users) o ORDER BY o.id",
    "coalesce-row": "SELECT o.ssn AS id, (SELECT ssn || ' / ' || card_number FROM coalesce((SELECT x FROM users x "
                    "WHERE x.id = o.ssn)) p) AS leaked FROM (SELECT id AS ssn, id AS card_number FROM users) o",
    "cast-row": "SELECT o.ssn AS id, (SELECT ssn FROM CAST((SELECT x FROM users x WHERE x.id = o.ssn) AS users) p) "
                "AS leaked FROM (SELECT id AS ssn FROM users) o",
    "rows-from-coldefs": "SELECT o.a AS id, (SELECT a FROM ROWS FROM (jsonb_to_record((SELECT jsonb_build_object('a', "
                         "x.ssn || ' / ' || x.card_number) FROM users x WHERE x.id = o.a)) AS (a text), lower('x')) r) "
                         "AS leaked FROM (SELECT id AS a FROM users) o",
    "shadowed-cycle": "SELECT o.id, (WITH RECURSIVE b AS (SELECT ssn2 FROM a), a AS (SELECT (SELECT 1 FROM (WITH b AS "
                      "(SELECT 1) SELECT * FROM b) s) AS z, ssn || ' / ' || card_number AS ssn2 FROM users x WHERE "
                      "x.id = o.id) SELECT ssn2 FROM b) AS leaked FROM (SELECT id, id AS ssn2 FROM users) o",
    "schema-qualified": "SELECT id, (SELECT public.users.ssn || ' / ' || public.users.card_number FROM (SELECT 1 AS ssn, "
                        "2 AS card_number) users) AS leaked FROM users",
    "alias-stand-in": "SELECT o.id, (SELECT p FROM jsonb_populate_record(NULL::orders, '{}') p) AS leaked FROM "
                      "(SELECT id, ssn || ' / ' || card_number AS p FROM users) o",
    "star-named-column": "SELECT o.id, (SELECT \"*\" FROM (SELECT (SELECT u.ssn || ' / ' || u.card_number AS \"*\" "
                         "FROM users u WHERE u.id = o.id)) q) AS leaked FROM (SELECT id, 1 AS \"*\" FROM users) o",
    "is-document": "SELECT * FROM (SELECT ('<a/>'::xml IS DOCUMENT)::text) a NATURAL FULL JOIN (SELECT 'x' AS "
                   "\"?column?\", ssn || ' / ' || card_number AS text FROM users WHERE id <= 3) b",
}


@pytest.mark.parametrize("sql", list(LEAKS_5B.values()), ids=list(LEAKS_5B))
def test_second_pass_a_column_the_server_names_is_the_one_masked(agent, sql):
    _assert_not_in_clear(*received_by(agent, sql))


# ... and conditions on masked values the server answered unchecked: each must be refused.
ORACLES_5B = {
    "on-sees-its-sides": "SELECT o.id, (SELECT string_agg(g.d, '' ORDER BY g.p) FROM (SELECT 1 AS s) a, (SELECT p, d "
                         "FROM generate_series(1, 11) p, unnest(ARRAY['0','1','2','3','4','5','6','7','8','9','-']) d) g "
                         "JOIN (SELECT 1 AS one) z ON substr(s, g.p, 1) = g.d) AS x FROM (SELECT id, ssn AS s FROM users) o",
    "values-order-by": "VALUES ((SELECT ssn FROM users WHERE id = 1), 'target'), ('7', 'g7'), ('8', 'g8') ORDER BY 1",
    "values-limit": "SELECT count(*) FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10) LIMIT (SELECT ascii(substr("
                    "ssn, 1, 1)) - 48 FROM users WHERE id = 1)) v",
    "ordinal-past-lineage": "SELECT u0.id, p.* FROM users u0, jsonb_populate_record(NULL::users, to_jsonb(u0)) p ORDER BY 5",
    "group-by-local-first": "SELECT (SELECT string_agg(q.grp, ' ; ') FROM (SELECT string_agg(s.tag, ',' ORDER BY s.tag) "
                            "AS grp, s.v AS x FROM (SELECT u.id::text AS tag, substr(u.ssn, 1, 1) AS v FROM users u "
                            "UNION ALL SELECT 'g' || d, d::text FROM generate_series(0, 9) d) s GROUP BY x) q) AS groups "
                            "FROM (SELECT 1 AS x) o",
    "jsonb-each-of-a-scalar": "SELECT count(*) FROM users u, jsonb_build_object(substr(u.ssn, 1, 1), 1, '8', 2) AS j(v), "
                              "jsonb_each(to_jsonb(j)) e WHERE u.id = 1",
    "recursive-list-intersect": "WITH RECURSIVE c AS (SELECT ssn FROM users INTERSECT ALL SELECT '819-11-1031') "
                                "SELECT count(*) FROM c",
    "recursive-list-order": "WITH RECURSIVE c AS (SELECT ssn AS v, id FROM users UNION ALL SELECT '5', 0 ORDER BY v "
                            "LIMIT 8) SELECT id FROM c",
    "natural-join-unknown-columns": "SELECT count(*) FROM users u, jsonb_populate_record(NULL::users, to_jsonb(u)) p "
                                    "NATURAL JOIN (SELECT '819-11-1031'::text AS ssn) g",
}


@pytest.mark.parametrize("sql", list(ORACLES_5B.values()), ids=list(ORACLES_5B))
def test_second_pass_a_condition_on_a_masked_value_is_refused(agent, sql):
    got, r = received_by(agent, sql)
    assert r["err"] is not None and r["err"][0] == "42501", (r, leaked(got))


# Round five, third pass: ssn rewritten out of the detectors' shapes (translate) came back in clear.
LEAKS_5C = {
    "xmltable-namespaces": "SELECT u.id, string_agg(x.v, '' ORDER BY p) FROM users u, generate_series(1,11) p, LATERAL "
                           "XMLTABLE(XMLNAMESPACES('urn:d' || substr(u.ssn,p,1) AS n), '/r/n:a' PASSING ('<r><a "
                           "xmlns=\"urn:d0\" v=\"0\"/><a xmlns=\"urn:d1\" v=\"1\"/><a xmlns=\"urn:d2\" v=\"2\"/><a "
                           "xmlns=\"urn:d3\" v=\"3\"/><a xmlns=\"urn:d4\" v=\"4\"/><a xmlns=\"urn:d5\" v=\"5\"/><a "
                           "xmlns=\"urn:d6\" v=\"6\"/><a xmlns=\"urn:d7\" v=\"7\"/><a xmlns=\"urn:d8\" v=\"8\"/><a "
                           "xmlns=\"urn:d9\" v=\"9\"/><a xmlns=\"urn:d-\" v=\"-\"/></r>'::xml) COLUMNS v text PATH "
                           "'@v') x GROUP BY u.id",
    "system-column-in-a-join": "SELECT (SELECT translate(ctid::text, '0123456789', 'abcdefghij') FROM users JOIN orders "
                               "USING (id) LIMIT 1) FROM (SELECT ssn AS ctid FROM users WHERE id = 1) o",
    "aliased-join-of-a-row-function": "SELECT translate(j.ssn || ' / ' || j.card_number, '0123456789', 'abcdefghij') "
                                      "FROM users u2 CROSS JOIN (jsonb_populate_record(NULL::users, to_jsonb(u2)) p "
                                      "JOIN orders o ON o.id = 1) j",
    "rows-from-whole-row": "SELECT (SELECT translate(g::text, '0123456789', 'abcdefghij') FROM ROWS FROM "
                           "(generate_series(1,1), lower(u.ssn || ' / ' || u.card_number)) g) FROM users u",
}


@pytest.mark.parametrize("sql", list(LEAKS_5C.values()), ids=list(LEAKS_5C))
def test_third_pass_a_masked_value_is_not_read_in_clear(agent, sql):
    _assert_not_in_clear(*received_by(agent, sql))


def test_a_write_to_a_table_named_like_a_with_item_is_the_tables(agent):
    # WITH users AS (...) UPDATE users: the server writes the table, whatever the WITH item
    got, r = received_by(agent, "WITH users AS (SELECT 0 AS id, 'x' AS ssn, 'y' AS card_number) UPDATE users SET name "
                                "= translate(ssn, '0123456789', 'abcdefghij') WHERE id = 1")
    assert r["err"] is not None and r["err"][0] == "42501", r
    got, r = received_by(agent, "SELECT name FROM users WHERE id = 1")
    assert _as_letters(SSN) not in str(r["rows"]), r


@pytest.mark.parametrize("write", [
    "UPDATE notes5 SET arr[ascii(substr((SELECT ssn FROM users WHERE id = 1), 1, 1))] = 1 WHERE id = 1",
    "INSERT INTO notes5 (id, arr[ascii(substr((SELECT ssn FROM users WHERE id = 1), 1, 1))]) VALUES (2, 1)",
], ids=["update", "insert"])
def test_a_subscript_of_a_written_column_is_a_write_of_what_it_reads(agent, request, write):
    # the element written says the value: SET arr[ascii(first digit)] = 1, then read arr's bounds
    request.getfixturevalue("direct").execute("CREATE TABLE IF NOT EXISTS notes5 (id int, arr int[]); GRANT ALL ON notes5 TO PUBLIC; "
                   "DELETE FROM notes5; INSERT INTO notes5 VALUES (1, '{}')")
    _, r = received_by(agent, write)
    assert r["err"] is not None and r["err"][0] == "42501" and "written to a table" in r["err"][1], r
