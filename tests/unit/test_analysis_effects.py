"""`Analysis.effects`: the decision's four tests of an allowed statement in one attribute, each
bit set exactly when its flag holds (`pgwarden.decisions.Decisions._enforce` reads only it)."""

from __future__ import annotations

import pytest

from pgwarden.sql.analysis import (
    CHANGES_CATALOG,
    CHANGES_CONTEXT,
    MAY_CHANGE_SETTINGS_BIT,
    NAMES,
    NAMING_KINDS,
    analyze_sql,
)
from pgwarden.sql.lineage import NAMING_KINDS as LINEAGE_NAMING_KINDS


@pytest.mark.parametrize("sql", [
    "select 1", "select * from t where id = 1", "delete from t where id = 1", "create table t (a int)",
    "set search_path = x", "set client_encoding = 'latin1'", "reset all", "discard all", "prepare p as select 1",
    "execute p", "deallocate p", "declare c cursor for select 1", "close c", "do $$ begin end $$",
    "select set_config('search_path', 'x', false)", "select nextval('s')", "set role r", "begin", "commit",
    "select frobnicate(1)", "grant select on t to r", "call p()", "vacuum", "show search_path", "",
])
def test_each_bit_is_its_flag(sql):
    a = analyze_sql(sql)
    assert bool(a.effects & CHANGES_CATALOG) == a.changes_catalog
    assert bool(a.effects & CHANGES_CONTEXT) == a.changes_context
    assert bool(a.effects & MAY_CHANGE_SETTINGS_BIT) == a.may_change_settings
    assert bool(a.effects & NAMES) == (not a.kinds.isdisjoint(NAMING_KINDS))
    assert a.effects < 16


def test_the_bits_are_distinct_and_the_naming_kinds_are_lineages():
    assert len({CHANGES_CATALOG, CHANGES_CONTEXT, MAY_CHANGE_SETTINGS_BIT, NAMES}) == 4
    assert all(bit & (bit - 1) == 0 for bit in (CHANGES_CATALOG, CHANGES_CONTEXT, MAY_CHANGE_SETTINGS_BIT, NAMES))
    assert NAMING_KINDS is LINEAGE_NAMING_KINDS
    assert analyze_sql("set search_path = x").effects == CHANGES_CONTEXT | MAY_CHANGE_SETTINGS_BIT | NAMES
    assert analyze_sql("select 1").effects == 0
