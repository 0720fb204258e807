"""Lineage (pgwarden.sql.lineage) against the shipped snapshot and a table of the database's own
(tests/e2e/test_lineage_live.py runs the same against a live catalog)."""

from __future__ import annotations

import functools

import pytest

from pgwarden.catalog import builtin_catalog
from pgwarden.catalog.model import Catalog, FunctionFacts, RelationFacts
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import SqlContext, default_context
from pgwarden.sql.lineage import (
    NAMING_KINDS,
    Lineage,
    NamedLineage,
    OracleUse,
    Output,
    Source,
    lineage_of,
    reveals_values,
)


@functools.cache
def context() -> SqlContext:
    """The snapshot and public.users (id, name, ssn, email, "Name")."""
    base = builtin_catalog()
    attributes = [(r.oid, [c.name for c in cols], [c.type for c in cols])
                  for r in base.relations for cols in [base.columns_of(r.oid)] if cols is not None]
    attributes.append((20000, ["id", "name", "ssn", "email", "Name"], [23, 25, 25, 25, 25]))
    relations = [*base.relations, RelationFacts(20000, "public", "users", "r")]
    catalog = Catalog(functions=base.functions, relations=relations, operators=base.operators, types=base.types,
                      attributes=attributes, settings=base.settings, schemas=base.schemas | {"public"},
                      source="test", complete=True)
    return SqlContext(catalog)


def one(sql: str, ctx: SqlContext | None = None) -> Lineage:
    (lineage,) = lineage_of(sql, ctx or context())
    return lineage


def users(column: str) -> Source:
    return Source("public", "users", column)


def test_alias_and_quoting_keep_a_direct_source():
    lin = one('SELECT u.ssn AS x, "Name" FROM users AS u')
    assert lin.outputs == (Output("x", frozenset({users("ssn")}), True),
                           Output("Name", frozenset({users("Name")}), True))


def test_an_expression_is_derived_from_every_column_it_names():
    (out,) = one("SELECT lower(name) || ssn FROM users").outputs
    assert out.sources == {users("name"), users("ssn")} and not out.direct and not out.opaque


def test_where_is_an_oracle():
    assert one("SELECT id FROM users WHERE ssn LIKE '1%'").oracles == (OracleUse(users("ssn"), "WHERE"),)


def rows_oracles(sql: str) -> set[str]:
    return {o.source.column for o in one(sql).oracles if o.clause == "rows"}


def test_a_set_returning_function_over_a_fixed_structure_counts_no_value():
    assert rows_oracles("SELECT unnest(ARRAY[email, ssn]) FROM users") == set()
    assert rows_oracles("SELECT unnest(ARRAY[email::text, ssn::varchar(9), ssn::int]) FROM users") == set()
    assert rows_oracles("SELECT key, value FROM users u, json_each_text(row_to_json(u))") == set()
    assert rows_oracles("SELECT * FROM users u, jsonb_object_keys(to_jsonb(u.*))") == set()
    assert rows_oracles("SELECT * FROM jsonb_each((SELECT to_jsonb(u) FROM users u WHERE id = 1))") == set()
    assert rows_oracles("SELECT * FROM users, json_each(json_build_object('s', ssn, 'e', email))") == set()
    # its outputs are still derived from every column of the structure: masked whole
    key, value = one("SELECT key, value FROM users u, json_each_text(row_to_json(u))").outputs
    assert users("ssn") in value.sources and users("ssn") in key.sources and not value.direct


def test_a_set_returning_function_over_a_masked_value_counts_it():
    assert rows_oracles("SELECT unnest(string_to_array(ssn, '-')) FROM users") == {"ssn"}
    assert rows_oracles("SELECT unnest(ARRAY[string_to_array(ssn, '-')]) FROM users") == {"ssn"}
    assert rows_oracles("SELECT unnest(ARRAY[lower(ssn)]) FROM users") == {"ssn"}  # its type is not known here
    assert rows_oracles("SELECT unnest(ARRAY[name::text, ssn::text[]]) FROM users") == {"ssn"}
    assert rows_oracles("SELECT unnest(ARRAY[ssn::_text]) FROM users") == {"ssn"}
    assert rows_oracles("SELECT * FROM users, jsonb_array_elements(ssn::jsonb)") == {"ssn"}
    assert rows_oracles("SELECT * FROM users, jsonb_each(to_jsonb(ssn))") == {"ssn"}
    # s names the column before the row: a JSON value whose keys are the value's
    assert rows_oracles("SELECT * FROM (SELECT ssn::jsonb AS s FROM users) s, jsonb_each(to_jsonb(s))") == {"ssn"}
    assert rows_oracles("SELECT * FROM users, jsonb_each((SELECT to_jsonb(ssn) FROM users LIMIT 1))") == {"ssn"}
    assert rows_oracles("SELECT * FROM users, jsonb_object_keys(jsonb_build_object(ssn, 1))") == {"ssn"}
    assert rows_oracles("SELECT regexp_split_to_table(ssn, '-') FROM users") == {"ssn"}
    assert rows_oracles("SELECT * FROM users, generate_series(1, length(ssn))") == {"ssn"}
    assert rows_oracles("SELECT generate_series(1, ascii(ssn)) FROM users") == {"ssn"}


def test_statement_without_rows():
    assert one("SET work_mem = '4MB'").outputs is None


def test_cursor_fetch_takes_the_declare_lineage():
    named = NamedLineage()
    declare, fetch = lineage_of("DECLARE c CURSOR FOR SELECT ssn FROM users; FETCH 5 FROM c", context())
    named.after(declare)
    assert named.resolve(fetch).outputs == (Output("ssn", frozenset({users("ssn")}), True),)
    assert NamedLineage().resolve(fetch).opaque
    assert fetch.opaque and fetch.reads is None  # unresolved, it fails closed


def test_execute_is_opaque_until_resolved():
    prepare, execute = lineage_of("PREPARE p AS SELECT ssn FROM users; EXECUTE p", context())
    assert execute.opaque and execute.refers == ("prepared", "p")
    named = NamedLineage()
    named.after(prepare)
    resolved = named.resolve(execute)
    assert not resolved.opaque and resolved.outputs == (Output("ssn", frozenset({users("ssn")}), True),)


@pytest.mark.parametrize("sql", [
    "PREPARE p AS SELECT ssn FROM users", "PREPARE p (int) AS SELECT ssn FROM users WHERE id = $1",
    "DEALLOCATE p", "DEALLOCATE ALL", "DECLARE c CURSOR FOR SELECT ssn FROM users",
    "DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1", "CLOSE c", "CLOSE ALL", "DISCARD ALL",
    "SELECT 1; PREPARE q AS SELECT ssn FROM users", "BEGIN; DECLARE c CURSOR FOR SELECT 1",
])
def test_a_statement_that_names_or_forgets_has_a_naming_kind(sql):
    # SessionMasks.ran traces the lineage only of statements of these kinds: one that defines or
    # forgets a name must be among them, or a later EXECUTE or FETCH would be traced wrongly.
    lineages = lineage_of(sql, context())
    assert any(lin.defines or lin.forgets for lin in lineages)
    assert analyze_sql(sql, context()).kinds & NAMING_KINDS


@pytest.mark.parametrize("sql", [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 5", "SELECT ssn FROM users",
    "INSERT INTO users (id) VALUES (1)", "EXECUTE p", "EXPLAIN SELECT ssn FROM users",
])
def test_other_statements_name_nothing(sql):
    assert not any(lin.defines or lin.forgets for lin in lineage_of(sql, context()))
    assert not analyze_sql(sql, context()).kinds & NAMING_KINDS


def test_text_that_does_not_parse_is_opaque():
    (lin,) = lineage_of("SELEC ssn FROM users", default_context())
    assert lin.opaque and lin.reads is None


def test_a_relation_the_catalog_does_not_know_is_opaque():
    lin = one("SELECT * FROM users", default_context())  # (the snapshot: no table of the database's own)
    assert lin.opaque and lin.reads is None and all(o.opaque for o in lin.outputs)
    (out,) = one("SELECT row_to_json(u) FROM users u", default_context()).outputs
    assert out.opaque
    # a column named on it is taken by its name (what explain shows), still opaque: it may be a
    # view made since the catalog was read
    (out,) = one("SELECT tmp.ssn FROM temp_view tmp").outputs
    assert out.opaque and out.sources == {Source("public", "temp_view", "ssn")}


def test_after_ddl_in_the_same_string_nothing_is_traced():
    _, after, plain = lineage_of("CREATE OR REPLACE VIEW v AS SELECT ssn FROM users; SELECT * FROM users; SET x.y = 1",
                                 context())
    assert after.opaque and after.reads is None
    assert not plain.opaque  # (it reads nothing)
    _, fine = lineage_of("SELECT 1; SELECT ssn FROM users", context())
    assert not fine.opaque and fine.outputs == (Output("ssn", frozenset({users("ssn")}), True),)


def test_values_and_built_in_views_through_their_definitions():
    assert [(o.name, o.sources) for o in one("VALUES (1, 'a')").outputs] == [
        ("column1", frozenset()), ("column2", frozenset())]
    passwd = {o.name: o for o in one("SELECT * FROM pg_shadow").outputs}["passwd"]
    assert passwd.sources == {Source("pg_catalog", "pg_authid", "rolpassword")} and passwd.direct


def test_deep_expressions_do_not_raise():
    sql = "SELECT " + "(" * 3000 + "ssn" + ")" * 3000 + " || " + " || ".join(["name"] * 2000) + " FROM users"
    (out,) = one(sql).outputs
    assert out.sources == {users("ssn"), users("name")} and not out.direct


def test_nested_scalar_sub_selects_are_named_by_their_innermost_output(monkeypatch):
    # each level named after the one inside, as the server does, from the one walk of the tree:
    # naming each level by walking it again walks 2**depth sub-selects (a hostile text's hang)
    from pgwarden.sql import lineage

    walked = []
    query = lineage._Walker.query
    monkeypatch.setattr(lineage._Walker, "query", lambda self, *a, **kw: walked.append(1) or query(self, *a, **kw))
    sql = "SELECT " + "(SELECT " * 12 + "ssn AS inner_most FROM users" + ")" * 12
    (out,) = one(sql).outputs
    assert out.name == "inner_most" and out.sources == {users("ssn")}
    assert len(walked) <= 2 * 13, len(walked)


def test_lineage_json_names_sources_and_kinds():
    from pgwarden.sql.lineage import lineage_json

    assert lineage_json(one("SELECT ssn FROM users WHERE id = 1")) == {
        "outputs": [{"name": "ssn", "sources": ["public.users.ssn"], "lineage": "direct"}],
        "reads": ["public.users.id", "public.users.ssn"],
        "oracles": [{"source": "public.users.id", "clause": "WHERE"}],
        "opaque": False, "refers": None,
    }


def test_statistics_and_statement_text_are_traced_to_sources_that_reveal_any_columns_values():
    """The planner's statistics and the text of statements may hold any column's value: their
    outputs are traced to sources `reveals_values` names, the other columns of those views are not."""
    def revealing(sql: str) -> list[bool]:
        return [any(reveals_values(str(s)) for s in o.sources) for o in one(sql).outputs]

    assert revealing("SELECT attname, most_common_vals, histogram_bounds, null_frac FROM pg_stats") \
        == [False, True, True, False]
    # (the numbers too: a correlation orders the values, n_distinct tells equal ones)
    assert revealing("SELECT stavalues1, stanumbers1, stadistinct, starelid FROM pg_statistic") \
        == [True, True, True, False]
    assert revealing("SELECT statistics_name, most_common_vals FROM pg_stats_ext") == [False, True]
    assert revealing("SELECT expr, most_common_vals FROM pg_stats_ext_exprs") == [False, True]
    assert revealing("SELECT pid, state, reverse(query) FROM pg_stat_activity") == [False, False, True]
    assert revealing("SELECT name, statement FROM pg_prepared_statements") == [False, True]
    assert revealing("SELECT statement FROM pg_cursors") == [True]
    assert revealing("SELECT pg_stat_get_backend_activity(1), current_query()") == [True, False]
    # (the view's own joins are oracles on catalog columns too: a view is a query the reader runs)
    assert Source("pg_catalog", "pg_stat_get_activity", "query") in [
        o.source for o in one("SELECT pid FROM pg_stat_activity WHERE query LIKE '%x%'").oracles]
    assert not reveals_values("public.users.ssn") and reveals_values("pg_catalog.pg_statistic.stanumbers1")


def test_logical_decoding_and_raw_storage_readers_reveal_any_columns_values():
    """A slot's changes (test_decoding prints every written row's columns) and every function of
    pageinspect or pg_walinspect (raw pages, tuples, WAL block images: known by the catalog's
    ``extension``, whatever their names) hold values of any column: traced to sources
    `reveals_values` names, and a condition over them is an oracle (red team eight)."""
    base = context()
    catalog = base.catalog
    readers = [FunctionFacts(30000, "public", "get_raw_page", 2, extension="pageinspect", result_type=17),
               FunctionFacts(30001, "public", "heap_page_items", 1, extension="pageinspect", returns_set=True,
                             result_type=2249, result_columns=("lp", "t_data")),
               FunctionFacts(30002, "public", "my_page", 1, builtin=False, language="sql", source="SELECT $1")]
    ctx = SqlContext(Catalog(functions=[*catalog.functions, *readers], relations=catalog.relations,
                             operators=catalog.operators, types=catalog.types,
                             attributes=[(r.oid, [c.name for c in cols], [c.type for c in cols])
                                         for r in catalog.relations for cols in [catalog.columns_of(r.oid)]
                                         if cols is not None],
                             settings=catalog.settings, schemas=catalog.schemas, source="test", complete=True))

    def revealing(sql: str, context: SqlContext = base) -> list[bool]:
        return [any(reveals_values(str(s)) for s in o.sources) for o in one(sql, context).outputs]

    assert revealing("SELECT lsn, xid, data FROM pg_logical_slot_peek_changes('s', NULL, NULL)") == [True] * 3
    assert revealing("SELECT data FROM pg_catalog.pg_logical_slot_get_binary_changes('s', NULL, NULL)") == [True]
    assert revealing("SELECT encode(get_raw_page('users', 0), 'hex'), my_page(1)", ctx) == [True, False]
    assert revealing("SELECT lp, t_data FROM heap_page_items(get_raw_page('users', 0))", ctx) == [True, True]
    assert any(reveals_values(str(use.source)) for use in one(
        "SELECT 1 AS x FROM pg_logical_slot_peek_changes('s', NULL, NULL) WHERE data LIKE '%8%'").oracles)
    assert reveals_values("pg_catalog.pageinspect:heap_page_items.t_data")
    assert not reveals_values("pg_catalog.pg_class.relname") and not reveals_values("public.pageinspect:x.y")


def test_a_toast_relations_chunks_are_derived_from_every_column_of_its_owner():
    """pg_toast.pg_toast_N holds its owner's values stored out of line (the catalog's 'o' effect):
    every column of it is derived from every column of the owner, so a condition on its chunks is
    an oracle of the masked ones (red team eight), and reading it reads the owner."""
    base = context()
    catalog = base.catalog
    attributes = [(r.oid, [c.name for c in cols], [c.type for c in cols])
                  for r in catalog.relations for cols in [catalog.columns_of(r.oid)] if cols is not None]
    attributes.append((20001, ["chunk_id", "chunk_seq", "chunk_data"], [26, 23, 17]))
    toast = RelationFacts(20001, "pg_toast", "pg_toast_20000", "t", effects=(("o", 20000),))
    ctx = SqlContext(Catalog(functions=catalog.functions, relations=[*catalog.relations, toast],
                             operators=catalog.operators, types=catalog.types, attributes=attributes,
                             settings=catalog.settings, schemas=catalog.schemas | {"pg_toast"}, source="test",
                             complete=True))
    every = {users(c) for c in ("id", "name", "ssn", "email", "Name")}
    lin = one("SELECT chunk_id FROM pg_toast.pg_toast_20000 WHERE position('8' in chunk_data) > 0", ctx)
    assert lin.outputs[0].sources == every and not lin.outputs[0].direct
    assert OracleUse(users("ssn"), "WHERE") in lin.oracles
    assert analyze_sql('SELECT 1 FROM "pg_toast"."pg_toast_20000"', ctx).tables == {
        "pg_toast.pg_toast_20000", "public.users"}


def test_a_row_level_policys_condition_is_the_statements():
    """The server adds a table's row-level security policies' conditions to the statements that
    read or write it: what they read is read, what they test is an oracle (red team eight)."""
    base = context()
    catalog = base.catalog
    attributes = [(r.oid, [c.name for c in cols], [c.type for c in cols])
                  for r in catalog.relations for cols in [catalog.columns_of(r.oid)] if cols is not None]
    attributes.append((20002, ["g"], [25]))
    guarded = RelationFacts(20002, "public", "guesses", "r", policies=(
        "(EXISTS ( SELECT 1 FROM public.users WHERE ((users.id = 1) AND (users.ssn ~~ (guesses.g || '%'::text)))))",
        "(g <> ''::text)"))
    ctx = SqlContext(Catalog(functions=catalog.functions, relations=[*catalog.relations, guarded],
                             operators=catalog.operators, types=catalog.types, attributes=attributes,
                             settings=catalog.settings, schemas=catalog.schemas, source="test", complete=True))
    for sql in ("SELECT g FROM guesses", "DELETE FROM guesses WHERE g = 'x'", "SELECT 1 FROM (SELECT g FROM guesses) s"):
        lin = one(sql, ctx)
        assert OracleUse(users("ssn"), "policy") in lin.oracles, sql
        assert users("ssn") in (lin.reads or ())
    assert OracleUse(Source("public", "guesses", "g"), "policy") in one("SELECT 1 FROM guesses", ctx).oracles


# ---------------------------------------------------------------------- ordinary work (2026-12-07)


def pg_index(column: str) -> Source:
    return Source("pg_catalog", "pg_index", column)


def test_unnest_of_several_columns_is_the_servers_rows_from():
    """``unnest(a, b)`` in FROM is ``ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b))``: each
    column from its own array (Django's index introspection), through a sub-select's ``*`` too."""
    lin = one("SELECT koi.key, koi.option, koi.n FROM pg_index i, unnest(i.indkey, i.indoption) "
              "WITH ORDINALITY koi(key, option, n)")
    assert [(o.name, o.sources, o.opaque) for o in lin.outputs] == [
        ("key", {pg_index("indkey")}, False), ("option", {pg_index("indoption")}, False), ("n", set(), False)]
    lin = one("SELECT CASE (option & 1) WHEN 1 THEN 'DESC' END FROM (SELECT * FROM pg_index i, "
              "unnest(i.indkey, i.indoption) koi(key, option)) idx")
    assert not lin.opaque and lin.outputs[0].sources == {pg_index("indoption")}
    assert OracleUse(pg_index("indoption"), "CASE") in lin.oracles or any(
        o.source == pg_index("indoption") for o in lin.oracles)


def test_unnest_of_a_masked_column_beside_another_keeps_its_source_and_oracles():
    lin = one("SELECT x.a FROM users u, unnest(ARRAY[u.ssn], ARRAY[u.id]) x(a, b) WHERE x.b = 1")
    assert lin.outputs[0].sources == {users("ssn")}
    assert OracleUse(users("id"), "WHERE") in lin.oracles
    lin = one("SELECT x.b FROM users u, unnest(ARRAY[u.id], ARRAY[u.ssn]) x(a, b) WHERE x.b LIKE '1%'")
    assert OracleUse(users("ssn"), "WHERE") in lin.oracles
    # an array computed from a masked value: how many rows it makes is an oracle of it
    lin = one("SELECT x.a FROM users u, unnest(ARRAY[1], string_to_array(u.ssn, '-')) x(a, b)")
    assert any(o.source == users("ssn") and o.clause == "rows" for o in lin.oracles)


def test_a_qualified_unnest_of_several_arguments_is_not_expanded():
    """The server expands only an unqualified ``unnest``: ``pg_catalog.unnest(a, b)`` is a function
    of two arguments, which it does not have (an error), and a schema's own ``unnest`` is its own."""
    lin = one("SELECT x.a FROM pg_index i, public.unnest(i.indkey, i.indoption) x(a, b)")
    assert lin.outputs[0].opaque


def test_a_name_of_no_column_of_known_tables_is_a_column_of_each():
    """A typo, or a column added since the catalog was read: that column of the tables in scope
    (mask rules match it by name), not a value of any column."""
    lin = one("SELECT id FROM users WHERE nmae = 'x'")
    assert lin.oracles == (OracleUse(users("nmae"), "WHERE"),) and not lin.opaque
    lin = one("SELECT nmae FROM users u JOIN pg_index i ON true")
    assert lin.outputs[0].sources == {users("nmae"), pg_index("nmae")} and not lin.outputs[0].opaque


def test_a_name_of_no_column_beside_a_sub_select_stays_untraced():
    """A sub-select, a function, a view's alias may hold columns lineage does not list: as before."""
    for sql in ("SELECT nmae FROM (SELECT * FROM users) s",
                "SELECT nmae FROM users, (SELECT 1 AS one) s",
                "SELECT nmae FROM users, generate_series(1, 2) g"):
        assert one(sql).outputs[0].opaque, sql
