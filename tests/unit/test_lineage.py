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
