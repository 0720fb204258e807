"""The tables a statement touches without naming them as its target, for rules that name tables
(red team seven): a foreign key's action that updates the referencing rows, a partition's rows
that are its parent's, rows an UPDATE moves between partitions, what DROP and schema renames
reach. `tests/e2e/test_hostile_round7.py` runs the same against a server."""

from __future__ import annotations

import itertools

import attrs
import pytest

from pgwarden.catalog import builtin_catalog
from pgwarden.catalog.model import CastFacts, Catalog, FunctionFacts, RelationFacts, TypeFacts
from pgwarden.policy.model import StatementMatch
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.context import default_context
from plugins.block import matches

_OIDS = itertools.count(95000)


def _db(complete: bool = True):
    """h_parent referenced by h_child (ON DELETE SET NULL) and h_cascade (ON DELETE CASCADE, ON
    UPDATE CASCADE); h_part partitioned into h_p1 (itself partitioned into h_p1a) and h_p2;
    h_family with an inheritance child; vault.t with a domain column, a default calling
    public.mk() and a view over it; hunt_free.x alone in its schema."""
    o = lambda: next(_OIDS)  # noqa: E731
    child, cascade = RelationFacts(o(), "public", "h_child", "r"), RelationFacts(o(), "public", "h_cascade", "r")
    parent = RelationFacts(o(), "public", "h_parent", "r", effects=(
        ("c", child.oid), ("n", child.oid), ("c", cascade.oid), ("u", cascade.oid)))
    p1a, p2 = RelationFacts(o(), "public", "h_p1a", "r"), RelationFacts(o(), "public", "h_p2", "r")
    p1 = RelationFacts(o(), "public", "h_p1", "p", effects=(("i", p1a.oid),))
    part = RelationFacts(o(), "public", "h_part", "p", effects=(("i", p1.oid), ("i", p2.oid)))
    heir = RelationFacts(o(), "public", "h_heir", "r")
    family = RelationFacts(o(), "public", "h_family", "r", effects=(("i", heir.oid),))
    code = TypeFacts(o(), "public", "hunt_code", "d", parts=(25,))
    codes = TypeFacts(o(), "public", "_hunt_code", "b", parts=(code.oid,))
    mk = FunctionFacts(o(), "public", "mk", 0, volatility="s", language="sql", trusted_language=True, builtin=False,
                       source="SELECT 7")
    t = RelationFacts(o(), "vault", "t", "r", column_types=(code.oid,), effects=(("d", mk.oid),))
    arrays = RelationFacts(o(), "public", "arrays", "r", column_types=(codes.oid,))
    v = RelationFacts(o(), "public", "over_vault", "v", relations=(t.oid,))
    free = RelationFacts(o(), "hunt_free", "x", "r")
    base = builtin_catalog()
    catalog = Catalog(functions=base.functions + (mk,),
                      relations=base.relations + (child, cascade, parent, p1a, p2, p1, part, heir, family, t, arrays,
                                                  v, free),
                      operators=base.operators, types=base.types + (code, codes), casts=base.casts,
                      settings=base.settings, schemas=base.schemas | {"public", "vault", "hunt_free"},
                      server_version=base.server_version, source="test", complete=complete)
    return attrs.evolve(default_context(), catalog=catalog)


CTX = _db()


def _hits(rule: dict, sql: str) -> list[str]:
    """What a block (or approve) rule's match hits of ``sql`` (`plugins.block.matches`)."""
    spec = StatementMatch(**{k: tuple(v) for k, v in rule.items()})
    return matches(spec, analyze_sql(sql, CTX))


# ---------------------------------------------------------------------- foreign keys' actions

def test_on_delete_set_null_updates_the_referencing_table():
    a = analyze_sql("DELETE FROM h_parent WHERE id = 1", CTX)
    assert a.kinds == {"delete"}
    assert ("update", "public.h_child") in a.indirect_writes
    assert ("update", "public.h_cascade") not in a.indirect_writes  # (ON DELETE CASCADE: a delete)
    assert {"public.h_child", "public.h_cascade"} <= a.writes


def test_on_update_cascade_updates_the_referencing_table_only_on_an_update():
    assert ("update", "public.h_cascade") in analyze_sql("UPDATE h_parent SET id = 5", CTX).indirect_writes
    assert ("update", "public.h_child") not in analyze_sql("UPDATE h_parent SET id = 5", CTX).indirect_writes


def test_a_function_body_that_deletes_the_parent_carries_the_update():
    fn = FunctionFacts(next(_OIDS), "public", "wipe_parent", 0, language="sql", trusted_language=True, builtin=False,
                       source="DELETE FROM public.h_parent WHERE id = 1")
    catalog = CTX.catalog
    ctx = attrs.evolve(CTX, catalog=Catalog(
        functions=catalog.functions + (fn,), relations=catalog.relations, operators=catalog.operators,
        types=catalog.types, casts=catalog.casts, settings=catalog.settings, schemas=catalog.schemas,
        server_version=catalog.server_version, source="test", complete=True))
    assert ("update", "public.h_child") in analyze_sql("SELECT wipe_parent()", ctx).indirect_writes


@pytest.mark.parametrize("rule, sql, hit", [
    ({"statements": ["update"], "tables": ["public.h_child"]}, "DELETE FROM h_parent WHERE id = 1", True),
    ({"statements": ["update"], "tables": ["public.h_*"]}, "DELETE FROM h_parent WHERE id = 1", True),
    # not an UPDATE of the parent, nor a statement of kind update
    ({"statements": ["update"], "tables": ["public.h_parent"]}, "DELETE FROM h_parent WHERE id = 1", False),
    ({"statements": ["update"]}, "DELETE FROM h_parent WHERE id = 1", False),
    ({"statements": ["delete"], "tables": ["public.h_child"]}, "DELETE FROM h_parent WHERE id = 1", True),
])
def test_a_rule_naming_kind_and_table_matches_the_actions_write(rule, sql, hit):
    assert bool(_hits(rule, sql)) is hit


# ---------------------------------------------------------------------- partitions and inheritance

@pytest.mark.parametrize("sql, table", [
    ("DELETE FROM h_p1a WHERE v = 1", "public.h_part"),
    ("DELETE FROM h_p1a WHERE v = 1", "public.h_p1"),
    ("INSERT INTO h_heir VALUES (1)", "public.h_family"),
    ("SELECT * FROM h_p2", "public.h_part"),
])
def test_a_partitions_rows_are_its_parents(sql, table):
    a = analyze_sql(sql, CTX)
    assert table in a.tables
    if a.kinds != {"select"}:
        assert table in a.writes


def test_a_partition_does_not_bring_its_siblings():
    assert "public.h_p2" not in analyze_sql("DELETE FROM h_p1a WHERE v = 1", CTX).tables


def test_an_update_of_a_partitioned_table_may_move_rows_between_its_partitions():
    a = analyze_sql("UPDATE h_part SET k = 2 WHERE v = 1", CTX)
    for below in ("public.h_p1", "public.h_p1a", "public.h_p2"):
        assert {("delete", below), ("insert", below)} <= a.indirect_writes
    assert ("delete", "public.h_part") not in a.indirect_writes  # (the rows stay in h_part)
    assert not analyze_sql("DELETE FROM h_part WHERE v = 1", CTX).indirect_writes
    assert not analyze_sql("UPDATE h_family SET v = 1 WHERE v = 2", CTX).indirect_writes  # (inheritance: no move)


@pytest.mark.parametrize("rule, sql, hit", [
    ({"statements": ["delete"], "tables": ["public.h_part"]}, "DELETE FROM h_p1a WHERE v = 1", True),
    ({"statements": ["insert"], "tables": ["public.h_family"]}, "INSERT INTO h_heir VALUES (1)", True),
    ({"statements": ["delete"], "tables": ["public.h_p2"]}, "UPDATE h_part SET k = 2 WHERE v = 1", True),
    ({"statements": ["delete"], "tables": ["public.h_part"]}, "UPDATE h_part SET k = 2 WHERE v = 1", False),
    ({"statements": ["delete"]}, "UPDATE h_part SET k = 2 WHERE v = 1", False),
    ({"statements": ["update"], "tables": ["public.h_p2"]}, "DELETE FROM h_p1a WHERE v = 1", False),
])
def test_rules_on_partitions_and_parents(rule, sql, hit):
    assert bool(_hits(rule, sql)) is hit


# ---------------------------------------------------------------------- DROP and schemas

@pytest.mark.parametrize("sql, tables", [
    ("DROP TABLE vault.t", {"vault.t", "public.over_vault"}),
    ("DROP TABLE h_part", {"public.h_part", "public.h_p1", "public.h_p1a", "public.h_p2"}),
    ("DROP VIEW over_vault", {"public.over_vault"}),
    ("DROP SEQUENCE vault.s, vault.s2", {"vault.s", "vault.s2"}),
    ("DROP INDEX vault.t_code", {"vault.t_code"}),
    ("DROP TRIGGER tg ON vault.t", {"vault.t"}),
    ("DROP POLICY p ON vault.t", {"vault.t"}),
    ("DROP RULE r ON vault.t", {"vault.t"}),
    ("DROP SCHEMA vault CASCADE", {"vault.t", "public.over_vault"}),
    ("DROP SCHEMA vault", set()),  # (RESTRICT: only an empty schema goes)
    ("ALTER SCHEMA vault RENAME TO opened", {"vault.t"}),  # (the views over its tables stay as they are)
    ("ALTER SCHEMA vault OWNER TO bob", {"vault.t"}),
    ("GRANT SELECT ON ALL TABLES IN SCHEMA vault TO bob", {"vault.t"}),
    ("REVOKE ALL ON ALL SEQUENCES IN SCHEMA vault FROM bob", {"vault.t"}),
    ("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA vault TO bob", set()),
    ("CREATE PUBLICATION p FOR TABLES IN SCHEMA vault", {"vault.t"}),
    ("ALTER PUBLICATION p ADD TABLES IN SCHEMA vault", {"vault.t"}),
    ("DROP DOMAIN public.hunt_code CASCADE", {"vault.t", "public.arrays", "public.over_vault"}),
    ("DROP DOMAIN public.hunt_code", set()),
    ("DROP FUNCTION public.mk() CASCADE", {"vault.t", "public.over_vault"}),
    ("ALTER TABLE vault.t RENAME TO u", {"vault.t"}),
    ("ALTER TABLE vault.t SET SCHEMA public", {"vault.t"}),
    ("TRUNCATE vault.t", {"vault.t"}),
])
def test_ddl_names_the_tables_it_touches(sql, tables):
    a = analyze_sql(sql, CTX)
    assert a.tables == tables, a
    assert "unknown" not in a.kinds


@pytest.mark.parametrize("sql", ["DROP OWNED BY bob", "DROP EXTENSION hstore CASCADE", "DROP SERVER s CASCADE",
                                 "CREATE PUBLICATION p FOR ALL TABLES", "CREATE PUBLICATION p FOR TABLES IN SCHEMA CURRENT_SCHEMA"])
def test_what_cannot_be_followed_touches_every_table(sql):
    a = analyze_sql(sql, CTX)
    assert {"vault.t", "hunt_free.x", "public.h_part"} <= a.tables


def test_a_dropped_table_runs_nothing_of_it():
    # (its default's function: neither called nor counted as the statement's)
    assert analyze_sql("DROP TABLE vault.t", CTX).functions == frozenset()


@pytest.mark.parametrize("sql", ["DROP SCHEMA vault CASCADE", "ALTER SCHEMA vault RENAME TO opened",
                                 "DROP OWNED BY bob", "DROP DOMAIN public.hunt_code CASCADE"])
def test_a_catalog_that_does_not_know_every_object_cannot_list_them(sql):
    assert "unknown" in analyze_sql(sql, _db(complete=False)).kinds


@pytest.mark.parametrize("sql", ["DROP TABLE hunt_free.x", "DROP SCHEMA hunt_free CASCADE",
                                 "ALTER SCHEMA hunt_free RENAME TO y", "DROP TABLE h_child"])
def test_ddl_of_other_tables_is_no_match(sql):
    assert not _hits({"tables": ["vault.*"]}, sql)


def test_what_a_cascaded_update_stores_runs_and_a_cascaded_delete_stores_nothing():
    # red team seven, finding 7: ON DELETE SET DEFAULT computes the child's default, SET NULL and
    # ON UPDATE CASCADE run its CHECK constraints ('d' effects), as an UPDATE of it does
    o = lambda: next(_OIDS)  # noqa: E731
    wipe = FunctionFacts(o(), "public", "wipe", 0, language="sql", trusted_language=True, builtin=False,
                         source="WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 1")
    secret = RelationFacts(o(), "secret", "things", "r")
    nulled = RelationFacts(o(), "public", "nulled", "r", effects=(("d", wipe.oid),))
    deleted = RelationFacts(o(), "public", "deleted", "r", effects=(("d", wipe.oid),))
    parent = RelationFacts(o(), "public", "parent", "r", effects=(("c", nulled.oid), ("n", nulled.oid),
                                                                   ("c", deleted.oid)))
    other = RelationFacts(o(), "public", "other", "r", effects=(("c", deleted.oid),))
    base = builtin_catalog()
    ctx = attrs.evolve(default_context(), catalog=Catalog(
        functions=base.functions + (wipe,), relations=base.relations + (secret, nulled, deleted, parent, other),
        operators=base.operators, types=base.types, casts=base.casts, settings=base.settings,
        schemas=base.schemas | {"public", "secret"}, server_version=base.server_version, source="test",
        complete=True))
    a = analyze_sql("DELETE FROM parent WHERE id = 1", ctx)
    assert "secret.things" in a.tables and "wipe" in a.functions
    assert "secret.things" not in analyze_sql("UPDATE parent SET id = 2 WHERE id = 1", ctx).tables  # (no ON UPDATE action)
    assert "secret.things" not in analyze_sql("DELETE FROM other WHERE id = 1", ctx).tables  # (ON DELETE CASCADE)


def _keyed():
    """k_part partitioned by (k) into k_1 (itself partitioned by (j) into k_1a) and k_2, with
    their key columns in the catalog ('k' effects, attnums)."""
    o = lambda: next(_OIDS)  # noqa: E731
    k1a, k2 = RelationFacts(o(), "public", "k_1a", "r"), RelationFacts(o(), "public", "k_2", "r")
    k1 = RelationFacts(o(), "public", "k_1", "p", effects=(("i", k1a.oid), ("k", 3)))
    part = RelationFacts(o(), "public", "k_part", "p", effects=(("i", k1.oid), ("i", k2.oid), ("k", 1)))
    base = builtin_catalog()
    relations = (k1a, k2, k1, part)
    attributes = [(r.oid, ("k", "v", "j"), (23, 23, 23)) for r in relations]
    return attrs.evolve(default_context(), catalog=Catalog(
        functions=base.functions, relations=base.relations + relations, operators=base.operators,
        types=base.types, casts=base.casts, settings=base.settings, schemas=base.schemas | {"public"},
        attributes=attributes, server_version=base.server_version, source="test", complete=True))


@pytest.mark.parametrize("sql, moves", [
    ("UPDATE k_part SET v = 1 WHERE v = 2", False),
    ("UPDATE k_part SET k = 2 WHERE v = 1", True),
    ("UPDATE k_part SET j = 2 WHERE v = 1", True),  # (k_1's own key: rows move from k_1a)
    ("UPDATE k_part AS p SET (v, k) = (1, 2) WHERE v = 1", True),
    ("MERGE INTO k_part USING (SELECT 1 AS x) s ON v = x WHEN MATCHED THEN UPDATE SET v = 3", False),
    ("MERGE INTO k_part USING (SELECT 1 AS x) s ON v = x WHEN MATCHED THEN UPDATE SET k = 3", True),
    ("UPDATE k_1 SET k = 2 WHERE v = 1", False),  # (k_1's key is j; k out of its range is an error)
    ("INSERT INTO k_part VALUES (1, 1, 1); UPDATE k_2 SET v = 1 WHERE v = 2", False),
])
def test_rows_move_between_partitions_when_the_update_sets_a_key_column(sql, moves):
    indirect = analyze_sql(sql, _keyed()).indirect_writes
    assert (("delete", "public.k_1a") in indirect) is moves, indirect


def test_a_drop_computes_nothing():
    # an implicit cast of the database's own counts wherever values are computed; a DROP names
    # its relations and computes no value
    o = lambda: next(_OIDS)  # noqa: E731
    wipe = FunctionFacts(o(), "public", "wipe_cast", 1, language="sql", trusted_language=True, builtin=False,
                         source="DELETE FROM public.h_child")
    ticket = TypeFacts(o(), "public", "ticket", "b")
    catalog = CTX.catalog
    ctx = attrs.evolve(CTX, catalog=Catalog(
        functions=catalog.functions + (wipe,), relations=catalog.relations, operators=catalog.operators,
        types=catalog.types + (ticket,), casts=catalog.casts + (CastFacts(o(), ticket.oid, 23, wipe.oid, "i"),),
        settings=catalog.settings, schemas=catalog.schemas, server_version=catalog.server_version, source="test",
        complete=True))
    assert "delete" in analyze_sql("SELECT 1 FROM vault.t", ctx).kinds
    assert analyze_sql("DROP TABLE vault.t", ctx).kinds == {"ddl"}
