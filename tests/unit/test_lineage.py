"""Lineage (pgwarden.sql.lineage) against the shipped snapshot: names resolved as the server does."""

from __future__ import annotations

from pgwarden.sql.context import default_context
from pgwarden.sql.lineage import Lineage, NamedLineage, OracleUse, Output, Source, lineage_of


def one(sql: str) -> Lineage:
    (lineage,) = lineage_of(sql, default_context())
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


def test_statement_without_rows():
    assert one("SET work_mem = '4MB'").outputs is None


def test_cursor_fetch_takes_the_declare_lineage():
    named = NamedLineage()
    declare, fetch = lineage_of("DECLARE c CURSOR FOR SELECT ssn FROM users; FETCH 5 FROM c", default_context())
    named.after(declare)
    assert named.resolve(fetch).outputs == (Output("ssn", frozenset({users("ssn")}), True),)
    assert NamedLineage().resolve(fetch).opaque
    assert fetch.opaque and fetch.reads is None  # unresolved, it fails closed


def test_execute_is_opaque_until_resolved():
    prepare, execute = lineage_of("PREPARE p AS SELECT ssn FROM users; EXECUTE p", default_context())
    assert execute.opaque and execute.refers == ("prepared", "p")
    named = NamedLineage()
    named.after(prepare)
    resolved = named.resolve(execute)
    assert not resolved.opaque and resolved.outputs == (Output("ssn", frozenset({users("ssn")}), True),)


def test_text_that_does_not_parse_is_opaque():
    (lin,) = lineage_of("SELEC ssn FROM users", default_context())
    assert lin.opaque and lin.reads is None


def test_star_over_a_relation_the_catalog_does_not_know_is_opaque():
    lin = one("SELECT * FROM users")
    assert lin.opaque and lin.reads is None and all(o.opaque for o in lin.outputs)


def test_a_name_that_may_be_a_whole_row_of_an_unknown_relation_is_opaque():
    (out,) = one("SELECT row_to_json(u) FROM users u").outputs
    assert out.opaque


def test_values_and_built_in_views_through_their_definitions():
    assert [(o.name, o.sources) for o in one("VALUES (1, 'a')").outputs] == [
        ("column1", frozenset()), ("column2", frozenset())]
    passwd = {o.name: o for o in one("SELECT * FROM pg_shadow").outputs}["passwd"]
    assert passwd.sources == {Source("pg_catalog", "pg_authid", "rolpassword")} and passwd.direct


def test_deep_expressions_do_not_raise():
    sql = "SELECT " + "(" * 3000 + "ssn" + ")" * 3000 + " || " + " || ".join(["name"] * 2000) + " FROM users"
    (out,) = one(sql).outputs
    assert out.sources == {users("ssn"), users("name")} and not out.direct


def test_lineage_json_names_sources_and_kinds():
    from pgwarden.sql.lineage import lineage_json

    assert lineage_json(one("SELECT ssn FROM users WHERE id = 1")) == {
        "outputs": [{"name": "ssn", "sources": ["public.users.ssn"], "lineage": "direct"}],
        "reads": ["public.users.id", "public.users.ssn"],
        "oracles": [{"source": "public.users.id", "clause": "WHERE"}],
        "opaque": False, "refers": None,
    }
