"""Masking, round six (2026-12-06): what the session's own checks found, each seen delivering the
value before its fix."""

from __future__ import annotations

import psycopg
import pytest
from test_mask_round3 import (
    DB,
    Session,
    leaked,
    received_by,
    rtdb,  # noqa: F401 (round three's database, a fixture: asked for by name below)
    start,
)
from test_mask_round5 import DEMO_LIKE

from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

SSN = "123-45-6789"


# The demo's refusals; every mask lets its column be compared (``oracle: allow``): an operator's
# choice where what rows come back may depend on the values, never that the values come back.
ORACLES_ALLOWED = {**DEMO_LIKE, "rules": [
    {**rule, "mask": {**rule["mask"], "oracle": "allow"}} if "mask" in rule else rule for rule in DEMO_LIKE["rules"]]}


@pytest.fixture
def agent(request, make_pgwarden, tmp_path):
    request.getfixturevalue("rtdb")  # round three's database: users.ssn and others masked
    s = Session(start(make_pgwarden, tmp_path, ORACLES_ALLOWED))
    yield s
    s.close()


@pytest.mark.parametrize("sql", [
    # SEARCH and CYCLE add columns to a recursive CTE: an outer column of the same name had taken them
    "SELECT (WITH RECURSIVE r(id, s) AS (SELECT id, ssn FROM users UNION ALL SELECT r.id, r.s FROM r WHERE false) "
    "SEARCH DEPTH FIRST BY s SET ord SELECT ord::text FROM r LIMIT 1) AS v FROM (VALUES (1)) v(ord)",
    "SELECT (WITH RECURSIVE r(id, s) AS (SELECT id, ssn FROM users UNION ALL SELECT r.id, r.s FROM r WHERE false) "
    "CYCLE s SET user_id USING amount SELECT amount::text FROM r LIMIT 1) AS v FROM orders",
    "WITH RECURSIVE r(id, s) AS (SELECT id, ssn FROM users UNION ALL SELECT r.id, r.s FROM r WHERE false) "
    "SEARCH BREADTH FIRST BY s SET ord SELECT id, ord::text FROM r",
    # JOIN ... USING (...) AS j names the merged columns (PostgreSQL 14): j.ssn had resolved outside
    "SELECT (SELECT j.ssn FROM users a JOIN users b USING (ssn) AS j LIMIT 1) AS v FROM (VALUES (1)) j(x)",
    "SELECT (SELECT j.ssn FROM users a JOIN users b USING (ssn) AS j LIMIT 1) AS v FROM orders j",
    "SELECT s FROM orders j, LATERAL (SELECT j.ssn AS s FROM users a JOIN users b USING (ssn) AS j) l",
], ids=["search-depth", "cycle-path", "search-breadth", "using-alias-values", "using-alias-table", "using-alias-lateral"])
def test_columns_named_by_newer_syntax_are_traced(agent, sql):
    got, r = received_by(agent, sql)
    assert r["err"] is None and r["rows"], r
    assert not leaked(got), leaked(got)


@pytest.fixture
def family(pg_server, make_pgwarden):
    """A partitioned table and an inheritance parent, their column masked by the parent's name."""
    pg_server.psql("drop table if exists r6_part cascade; drop table if exists r6_parent cascade;"
                   "create table r6_part (id int, ssn text) partition by range (id);"
                   "create table r6_part_1 partition of r6_part for values from (0) to (10);"
                   "create table r6_part_1x partition of r6_part for values from (10) to (20) partition by range (id);"
                   "create table r6_part_1x_a partition of r6_part_1x for values from (10) to (20);"
                   f"insert into r6_part values (1, '{SSN}'), (11, '{SSN}');"
                   "create table r6_parent (id int, ssn text); create table r6_child (extra int) inherits (r6_parent);"
                   f"insert into r6_child values (1, '{SSN}', 0)", "appdb")
    yield make_pgwarden(policies=[{"name": "a", "default": "allow", "rules": [
        {"name": "s", "mask": {"columns": ["public.r6_part.ssn", "public.r6_parent.ssn"], "with": "redact"}}]}],
        only=BUILTIN_PLUGINS)
    pg_server.psql("drop table if exists r6_part cascade; drop table if exists r6_parent cascade", "appdb")


@pytest.mark.parametrize("table", ["r6_part_1", "r6_part_1x_a", "r6_child", "only r6_child"])
def test_a_partition_or_child_read_by_its_own_name_is_masked_by_its_parents_rule(family, table):
    # Its rows are the parent's rows (read through the parent they were masked); by its own name
    # they came back in clear, and a condition on them was no oracle.
    with psycopg.connect(family.dsn(), autocommit=True) as c:
        got = c.execute(f"select id, ssn from {table}").fetchall()
        assert got and SSN not in repr(got) and {ssn for _, ssn in got} == {"***"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked column public.r6_p"):
            c.execute(f"select id from {table} where ssn like '1%'")


# An operator's SQL functions whose parameter has the name of a FROM item in their body.
FUNCTIONS = """
CREATE OR REPLACE FUNCTION r6_rows(u text) RETURNS SETOF text LANGUAGE sql STABLE AS $$ SELECT u::text FROM users u $$;
CREATE OR REPLACE FUNCTION r6_one(u text) RETURNS text LANGUAGE sql STABLE AS $$ SELECT u::text FROM users u ORDER BY id LIMIT 1 $$;
CREATE OR REPLACE FUNCTION r6_sub(s text) RETURNS SETOF text LANGUAGE sql STABLE AS $$ SELECT s::text FROM (SELECT ssn FROM users) s $$;
CREATE OR REPLACE FUNCTION r6_ids(u text) RETURNS SETOF int LANGUAGE sql STABLE AS $$ SELECT id FROM users u WHERE u::text LIKE $1 $$;
DROP TYPE IF EXISTS r6_pair CASCADE;
CREATE TYPE r6_pair AS (ssn text, name text);
CREATE DOMAIN r6_pairdom AS r6_pair;
CREATE DOMAIN r6_pairdom2 AS r6_pairdom;
CREATE OR REPLACE FUNCTION r6_pairs() RETURNS SETOF r6_pairdom LANGUAGE sql STABLE AS
    $$ SELECT ROW(ssn, name)::r6_pairdom FROM users $$;
CREATE OR REPLACE FUNCTION r6_pair1() RETURNS r6_pairdom2 LANGUAGE sql STABLE AS
    $$ SELECT ROW(ssn, name)::r6_pairdom2 FROM users ORDER BY id LIMIT 1 $$;
CREATE OR REPLACE FUNCTION r6_recs() RETURNS SETOF record LANGUAGE sql STABLE AS $$ SELECT id, ssn FROM users $$;
CREATE OR REPLACE FUNCTION r6_same(anyelement) RETURNS anyelement LANGUAGE sql IMMUTABLE AS $$ SELECT $1 $$;
"""


def _agent_after(request, make_pgwarden, tmp_path, objects: str, cleanup: str = "", policy=DEMO_LIKE):
    """A session under ``policy`` (demo-like) on round three's database after an operator made ``objects``."""
    db = request.getfixturevalue("rtdb")
    db.psql(objects, DB)
    s = Session(start(make_pgwarden, tmp_path, policy))
    yield s
    s.close()
    if cleanup:
        db.psql(cleanup, DB)


@pytest.fixture
def agent_with_functions(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, FUNCTIONS)


@pytest.mark.parametrize("sql", ["SELECT * FROM r6_rows('x')", "SELECT r6_rows FROM r6_rows('x')", "SELECT r6_one('x')",
                                 "SELECT * FROM r6_sub('x')"])
def test_a_functions_parameter_loses_to_a_from_item_of_its_name(agent_with_functions, sql):
    # In a SQL function's body, `u` is the whole row of `FROM users u` even when the function
    # takes a parameter `u` (the server prefers any column or FROM item to a parameter): lineage
    # had taken the parameter, and the row came back in clear.
    got, r = received_by(agent_with_functions, sql)
    assert not leaked(got), (leaked(got), r)


def test_a_condition_on_the_whole_row_inside_such_a_function_is_an_oracle(agent_with_functions):
    got, r = received_by(agent_with_functions, "SELECT count(*) FROM r6_ids('%812-57%')")
    assert r["err"] is not None and r["err"][0] == "42501", r


# An operator's tables with rules that read the masked table when written.
RULES = """
DROP TABLE IF EXISTS r6_audit, r6_audit2;
CREATE TABLE r6_audit (id int, ssn text);
CREATE TABLE r6_audit2 (id int, ssn text);
CREATE RULE r6_also AS ON INSERT TO r6_audit DO ALSO
    INSERT INTO orders SELECT 100 + id, id, 1 FROM users WHERE ssn LIKE NEW.ssn;
CREATE RULE r6_instead AS ON INSERT TO r6_audit2 DO INSTEAD
    INSERT INTO orders VALUES (NEW.id, 1, 1) RETURNING orders.id, (SELECT u.ssn FROM users u ORDER BY u.id LIMIT 1);
"""


@pytest.fixture
def agent_with_rules(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, RULES,
                            "DROP TABLE IF EXISTS r6_audit, r6_audit2; DELETE FROM orders WHERE id > 2")


def test_a_rule_that_compares_a_written_value_with_a_masked_column_is_an_oracle(agent_with_rules):
    # The rewriter adds the rule's INSERT ... WHERE ssn LIKE NEW.ssn to the agent's INSERT: whether
    # orders grew answers the guess, one digit at a time (lineage had not looked at rules).
    got, r = received_by(agent_with_rules, "INSERT INTO r6_audit VALUES (1, '8%')")
    assert r["err"] is not None and r["err"][0] == "42501" and "public.users.ssn" in r["err"][1], r


def test_returning_of_an_instead_rule_is_not_the_tables(agent_with_rules):
    # RETURNING * of r6_audit2 returns what the rule's action returns: its second column the SSN.
    got, r = received_by(agent_with_rules, "INSERT INTO r6_audit2 VALUES (7, 'x') RETURNING *")
    assert not leaked(got), (leaked(got), r)


@pytest.mark.parametrize("sql", [
    # a domain over a composite type: the server expands the function's rows into its columns
    "SELECT (SELECT ssn FROM r6_pairs() LIMIT 1) AS v FROM (VALUES ('x')) v(ssn)",
    "SELECT (SELECT ssn FROM r6_pair1()) AS v FROM (VALUES ('x')) v(ssn)",
    "SELECT * FROM r6_pairs()",
    # an operator's polymorphic function given a row: its result is that row's columns
    "SELECT (SELECT ssn FROM r6_same((SELECT u FROM users u ORDER BY id LIMIT 1))) AS v FROM (VALUES ('x')) v(ssn)",
    # a record with a column definition list: its columns are the body's (they had come out untraced)
    "SELECT b FROM r6_recs() AS r(a int, b text)",
], ids=["domain-setof", "domain-of-domain", "domain-star", "polymorphic", "record-coldefs"])
def test_a_functions_row_whose_columns_its_type_lists_elsewhere(agent_with_functions, sql):
    got, r = received_by(agent_with_functions, sql)
    assert not leaked(got), (leaked(got), r)


def test_a_condition_on_a_column_of_a_record_function_is_an_oracle(agent_with_functions):
    got, r = received_by(agent_with_functions, "SELECT 1 AS one FROM r6_recs() AS r(a int, b text) WHERE b LIKE '8%'")
    assert r["err"] is not None and r["err"][0] == "42501" and "public.users.ssn" in r["err"][1], r


# Round six, second pass (through pgwarden, after the plan check): an operator's IMMUTABLE lookup
# (a common mistake: it reads a table) reached without being named, and a PL/pgSQL search helper.
HELPERS = """
CREATE OR REPLACE FUNCTION r6_imm(i int) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT ssn FROM users WHERE id = i $$;
CREATE OR REPLACE VIEW r6_imm_view AS SELECT r6_imm(1) AS x;
CREATE OR REPLACE VIEW r6_imm_view2 AS SELECT x FROM r6_imm_view;
DROP OPERATOR IF EXISTS ### (none, int);
CREATE OPERATOR ### (RIGHTARG = int, FUNCTION = r6_imm);
CREATE OR REPLACE FUNCTION r6_ids_pl(p text) RETURNS SETOF int LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN QUERY SELECT id FROM users WHERE ssn LIKE p; END $$;
CREATE OR REPLACE FUNCTION r6_if_pl(p text) RETURNS SETOF int LANGUAGE plpgsql STABLE AS
  $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = 1; IF s LIKE p THEN RETURN NEXT 1; END IF; END $$;
CREATE OR REPLACE FUNCTION r6_by_name_pl(p text) RETURNS SETOF users LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN QUERY SELECT * FROM users WHERE name = p; END $$;
"""


@pytest.fixture
def agent_with_helpers(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, HELPERS)


@pytest.mark.parametrize("sqls", [
    ["EXPLAIN VERBOSE SELECT * FROM r6_imm_view"],
    ["EXPLAIN VERBOSE SELECT * FROM r6_imm_view2"],
    ["EXPLAIN VERBOSE SELECT ### 1"],
    ["PREPARE p1 AS SELECT r6_imm(1)", "EXPLAIN VERBOSE EXECUTE p1"],
    ["PREPARE p2(int) AS SELECT r6_imm($1)", "EXPLAIN VERBOSE EXECUTE p2(1)"],
], ids=["view", "view-of-view", "operator", "execute", "execute-param"])
def test_explain_of_a_folded_function_reached_without_its_name_is_refused(agent_with_helpers, sqls):
    # The planner folds the IMMUTABLE call into a constant and EXPLAIN VERBOSE printed it
    # (`Output: '812-57-3964'::text`); only a function named in the text was refused.
    got, r = received_by(agent_with_helpers, *sqls)
    assert not leaked(got), (leaked(got), r)
    assert r["err"] is not None and r["err"][0] == "42501", r


def test_the_rows_of_a_plpgsql_function_that_reads_masked_columns_are_an_oracle(agent_with_helpers):
    # Its body compares ssn with the argument; how many rows come back answered the guess.
    for sql in ("SELECT * FROM r6_ids_pl('812-57%')", "SELECT * FROM r6_if_pl('8%')",
                "SELECT id FROM orders WHERE EXISTS (SELECT 1 FROM r6_ids_pl('812-5%'))",
                "SELECT o.id FROM orders o, LATERAL (SELECT 1 FROM r6_ids_pl('812%') LIMIT 1) x"):
        got, r = received_by(agent_with_helpers, sql)
        assert r["err"] is not None and r["err"][0] == "42501", (sql, r)


def test_a_view_or_operator_of_such_code_still_answers_a_plain_read(agent_with_helpers):
    got, r = received_by(agent_with_helpers, "SELECT x FROM r6_imm_view")
    assert r["err"] is None and not leaked(got), r


def test_a_plpgsql_function_returning_a_query_is_steered_by_that_querys_conditions(agent_with_helpers):
    # RETURN QUERY ... WHERE name = p: its rows follow name, not the masked columns it returns
    got, r = received_by(agent_with_helpers, "SELECT id, ssn FROM r6_by_name_pl('alice')")
    assert r["err"] is None and len(r["rows"]) == 1 and not leaked(got), r


# Round six, third pass: what a written row takes from its table's own expressions.
STORED = """
DROP TABLE IF EXISTS r6_def, r6_dom, r6_gen, r6_xml, r6_notes CASCADE;
DROP DOMAIN IF EXISTS r6_d_ssn CASCADE;
CREATE OR REPLACE FUNCTION r6_ssn(i int) RETURNS text LANGUAGE sql STABLE AS $$ SELECT ssn FROM users WHERE id = i $$;
CREATE OR REPLACE FUNCTION r6_imm(i int) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT ssn FROM users WHERE id = i $$;
CREATE DOMAIN r6_d_ssn AS text DEFAULT r6_ssn(1);
CREATE TABLE r6_def (id int, v text DEFAULT r6_ssn(1));
CREATE TABLE r6_dom (id int, v r6_d_ssn);
CREATE TABLE r6_gen (id int, v text GENERATED ALWAYS AS (r6_imm(id)) STORED);
CREATE TABLE r6_xml (id int, v text DEFAULT query_to_xml('SELECT ssn FROM users', false, false, '')::text);
CREATE TABLE r6_notes (id int, t text);
"""


@pytest.fixture
def agent_with_stored(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, STORED)


@pytest.mark.parametrize("sqls", [
    ["INSERT INTO r6_def (id) VALUES (1) RETURNING v"],
    ["INSERT INTO r6_def VALUES (1, DEFAULT) RETURNING *"],
    ["INSERT INTO r6_def DEFAULT VALUES RETURNING v"],
    ["INSERT INTO r6_def (id) VALUES (1)", "SELECT v FROM r6_def"],
    ["INSERT INTO r6_dom (id) VALUES (1) RETURNING v"],
    ["INSERT INTO r6_dom VALUES (1, 'x')", "UPDATE r6_dom SET v = DEFAULT RETURNING v"],
    ["INSERT INTO r6_gen (id) VALUES (1) RETURNING v"],
    ["INSERT INTO r6_xml (id) VALUES (1) RETURNING v"],
], ids=["default", "default-kw", "default-values", "default-read-back", "domain-default", "update-set-default",
        "generated", "default-query_to_xml"])
def test_a_value_a_written_row_takes_from_its_tables_expressions_is_a_value_written(agent_with_stored, sqls):
    # The default looks the SSN up: the row stored it and RETURNING returned it, traced to r6_def.v
    # (no rule's column). What the table's defaults, generated columns and CHECKs read is written.
    got, r = received_by(agent_with_stored, *sqls)
    assert not leaked(got), (leaked(got), r)


@pytest.fixture
def agent_allowing_oracles(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, STORED,
                            "DELETE FROM orders WHERE id > 2; UPDATE users SET name = 'alice' WHERE id = 1",
                            ORACLES_ALLOWED)


@pytest.mark.parametrize("sqls", [
    ["UPDATE users SET name = ssn WHERE id = 1", "SELECT name FROM users WHERE id = 1"],
    ["INSERT INTO orders SELECT 100 + id, id, ssn_num FROM users", "SELECT amount FROM orders WHERE id > 2"],
    ["INSERT INTO r6_notes SELECT id, ssn FROM users", "SELECT t FROM r6_notes"],
    ["MERGE INTO r6_notes n USING users u ON n.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (u.id, u.card_number)",
     "SELECT t FROM r6_notes"],
], ids=["update-same-row", "insert-number", "insert-copy", "merge-copy"])
def test_oracle_allow_does_not_let_a_write_copy_the_value(agent_allowing_oracles, sqls):
    # `oracle: allow` lifts comparisons (which rows come back); a value written is read back as it
    # is: refused whatever the rule says.
    got, r = received_by(agent_allowing_oracles, *sqls)
    assert not leaked(got) and "812" not in repr(r["rows"]), (leaked(got), r)
    assert received_by(agent_allowing_oracles, sqls[0])[1]["err"][0] == "42501"


def test_a_filter_under_oracle_allow_is_answered_as_its_where_is(agent_allowing_oracles):
    # the plan's result column computes from ssn through FILTER, a comparison lineage saw and the rule allows
    got, r = received_by(agent_allowing_oracles, "SELECT count(*) FILTER (WHERE ssn LIKE '8%') AS n FROM users")
    assert r["err"] is None and r["rows"] == [(1,)], r


# Round six, fourth pass: PL/pgSQL set-returning functions steered by what the agent controls
# without arguments, and ordinary statements that the passes' rules must still answer.
STEERED = """
DROP TABLE IF EXISTS r6_watch CASCADE;
CREATE TABLE r6_watch (pattern text);
CREATE OR REPLACE FUNCTION r6_watch_hits() RETURNS SETOF int LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN QUERY SELECT u.id FROM users u JOIN r6_watch w ON u.ssn LIKE w.pattern; END $$;
CREATE OR REPLACE FUNCTION r6_me() RETURNS SETOF users LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN QUERY SELECT * FROM users WHERE email LIKE current_setting('app.email', true); END $$;
CREATE OR REPLACE FUNCTION r6_fmt(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT initcap(t) $$;
CREATE OR REPLACE VIEW r6_fmt_view AS SELECT id, r6_fmt(name) AS display, ssn FROM users;
CREATE OR REPLACE FUNCTION r6_users_sql(p int) RETURNS SETOF users LANGUAGE sql STABLE AS $$ SELECT * FROM users WHERE id = p $$;
"""


@pytest.fixture
def agent_steering(request, make_pgwarden, tmp_path):
    yield from _agent_after(request, make_pgwarden, tmp_path, STEERED, "DROP TABLE IF EXISTS r6_watch CASCADE")


@pytest.mark.parametrize("sqls", [
    ["DELETE FROM r6_watch", "INSERT INTO r6_watch VALUES ('8%')", "SELECT 1 AS one FROM r6_watch_hits()"],
    ["SET app.email = 'zorb%'", "SELECT count(*) AS n FROM r6_me()"],
], ids=["a-table-it-writes", "a-setting-it-sets"])
def test_a_plpgsql_function_without_arguments_steered_by_what_the_agent_controls_is_an_oracle(agent_steering, sqls):
    # No argument, yet its rows follow a table the agent writes or a setting it sets: one row for a
    # right guess, none for a wrong one (the masked value a character a statement).
    got, r = received_by(agent_steering, *sqls)
    assert r["err"] is not None and r["err"][0] == "42501", r


@pytest.mark.parametrize("sql", [
    # an ORM's upsert: EXCLUDED is the row proposed, the agent's own constants (was refused as a
    # masked value written)
    "INSERT INTO users (id, name, ssn) VALUES (2, 'bob', '345-67-8901') ON CONFLICT (id) DO UPDATE SET ssn = EXCLUDED.ssn",
    # an operator's harmless IMMUTABLE function in a view beside a masked column; a STABLE function
    # (the planner folds neither into a value of a masked column)
    "EXPLAIN SELECT * FROM r6_fmt_view",
    "EXPLAIN SELECT * FROM r6_users_sql(1)",
], ids=["upsert-excluded", "explain-harmless-function", "explain-stable-function"])
def test_ordinary_statements_are_still_answered(agent_steering, sql):
    got, r = received_by(agent_steering, sql)
    assert r["err"] is None and not leaked(got), r


def test_an_upsert_writing_a_stored_masked_value_is_still_a_write(agent_steering):
    got, r = received_by(agent_steering, "INSERT INTO users (id, name) VALUES (2, 'b') "
                                         "ON CONFLICT (id) DO UPDATE SET name = users.ssn")
    assert r["err"] is not None and r["err"][0] == "42501", r


# Round six, fifth pass: what an ORM sends.
@pytest.mark.parametrize("table, columns, types, values", [
    ("orders", '"id", "user_id", "amount"', ("integer", "integer", "integer"), ([10, 11], [1, 2], [5, 6])),
    ("users", '"id", "name", "ssn"', ("integer", "text", "text"), ([10, 11], ["x", "y"], ["000-00-0000", "1"])),
], ids=["unmasked-table", "masked-table"])
def test_djangos_bulk_insert_through_unnest_is_answered(agent_with_stored, table, columns, types, values):
    # INSERT ... SELECT * FROM UNNEST($1::int[], ...) (Django 5.2's bulk_create): an unnest of
    # several arrays was a function of unknown columns, every value written untraced: refused on
    # every table of a session with masks
    arrays = ", ".join(f"(%s)::{t}[]" for t in types)
    r = agent_with_stored.run(f'INSERT INTO "{table}" ({columns}) SELECT * FROM UNNEST({arrays}) '
                              f'RETURNING "{table}"."id"', values)
    assert r["err"] is None and sorted(r["rows"]) == [(10,), (11,)], r
    agent_with_stored.run(f'DELETE FROM "{table}" WHERE id IN (10, 11)')


def test_an_unnest_of_a_value_split_from_a_masked_column_is_still_an_oracle(agent_with_stored):
    got, r = received_by(agent_with_stored, "SELECT count(*) AS n FROM users u, "
                                            "unnest(string_to_array(u.ssn, '-')::text[], ARRAY[1]) x")
    assert r["err"] is not None and r["err"][0] == "42501", r
