"""The catalog loader on canned rows, the shipped snapshot, and the control connection's parameters.

The queries themselves run against a real server in tests/e2e/test_catalog.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.catalog import queries, snapshot
from pgwarden.catalog.loader import (
    KINDS,
    PART_KINDS,
    CatalogRows,
    CatalogShapeError,
    build_catalog,
    rows_from_lists,
    unchanged_parts,
)
from pgwarden.catalog.model import FIRST_NORMAL_OID, PARTS, CastFacts, Catalog, TypeFacts
from pgwarden.testing.matrix import examples

# oid schema name nargs ndefaults variadic volatility language trusted kind builtin public_execute
# security_definer returns_set source extension config sql_body result_type result_relation
# result_columns argument_names
LOWER = (870, "pg_catalog", "lower", 1, 0, False, "i", "internal", False, "f", True, True, False, False,
         None, None, None, False, 25, 0, [], [""])
READ_FILE = (2624, "pg_catalog", "pg_read_file", 1, 0, False, "v", "internal", False, "f", True, False, False,
             False, None, None, None, False, 25, 0, [], [""])
DBLINK_EXEC = (16416, "public", "dblink_exec", 2, 0, False, "v", "c", False, "f", True, True, False, False,
               None, "dblink", None, False, 25, 0, [], ["", ""])
MINE = (16500, "app", "touch", 1, 1, True, "v", "plpgsql", True, "p", False, False, True, True,
        "BEGIN NULL; END", None, ["search_path=app", "work_mem=1MB"], False, 16601, 16601, ["a", "", "c"], ["x"])


def rows(**overrides) -> CatalogRows:
    answers = dict(
        functions=(LOWER, READ_FILE, DBLINK_EXEC, MINE),
        relations=((1259, "pg_catalog", "pg_class", "r"), (12110, "pg_catalog", "pg_file_settings", "v"),
                   (16600, "app", "files", "v"), (16601, "app", "t", "r"), (16602, "app", "s", "S")),
        dependencies=((12110, "f", 3329), (16600, "f", 2624), (16600, "f", 16500), (16600, "r", 16601),
                      (16600, "r", 1259)),
        operators=((551, "pg_catalog", "+", 177, 23, 23), (16700, "app", "|>", 16500, 0, 25)),
        # oid schema name kind functions parts (lists, as psycopg reads arrays)
        types=((23, "pg_catalog", "int4", "b", [42], []), (1007, "pg_catalog", "_int4", "b", [750], [23]),
               (16800, "app", "positive", "d", [2597, 16500], [23])),
        casts=((16900, 23, 16800, 16500, "a", "f"),),
        column_types=((16601, 16800),),
        # relation, names and types by attnum ("" and 0: dropped)
        attributes=((16601, ["id", "", "ssn"], [23, 0, 25]),),
        definitions=((16600, " SELECT t.id\n   FROM app.t;"),),
        settings=(("work_mem", "user"), ("log_min_messages", "superuser"), ("pgaudit.log", "superuser")),
        schemas=(("app",), ("pg_catalog",), ("public",)),
    )
    answers.update(overrides)
    return CatalogRows(server_version=150006, **answers)


def test_function_rows_become_facts_field_by_field():
    catalog = build_catalog(rows(), source="live", complete=True)
    (mine,) = catalog.functions_named("touch")
    assert mine.oid == 16500 and (mine.schema, mine.name) == ("app", "touch")
    assert (mine.nargs, mine.ndefaults, mine.variadic) == (1, 1, True)
    assert (mine.volatility, mine.language, mine.trusted_language, mine.kind) == ("v", "plpgsql", True, "p")
    assert (mine.builtin, mine.public_execute, mine.security_definer, mine.returns_set) == (False, False, True, True)
    assert mine.source == "BEGIN NULL; END" and mine.extension is None and not mine.sql_body
    assert mine.config == ("search_path=app", "work_mem=1MB")
    assert (mine.result_type, mine.result_relation) == (16601, 16601)
    assert mine.result_columns == ("a", "column2", "c") and mine.argument_names == ("x",)
    (lower,) = catalog.functions_named("lower")
    assert lower.config == () and lower.public_execute and lower.builtin
    assert catalog.function(2624).public_execute is False
    assert catalog.function(16416).extension == "dblink"


def test_views_carry_what_they_call_and_read():
    catalog = build_catalog(rows(), source="live", complete=True)
    (files,) = catalog.relations_named("files")
    assert files.functions == (2624, 16500) and files.relations == (16601, 1259)
    assert catalog.relation(12110).functions == (3329,)
    assert catalog.relation(16601).functions == () and catalog.relation(16602).kind == "S"


def test_columns_by_attnum_and_view_definitions():
    catalog = build_catalog(rows(), source="live", complete=True)
    assert [c.name for c in catalog.columns_of(16601)] == ["id", "ssn"]  # (what * expands to)
    assert catalog.column(16601, 3).name == "ssn" and catalog.column(16601, 2) is None
    assert catalog.column(16601, 9) is None and catalog.columns_of(1) is None
    (files,) = catalog.relations_named("files")
    assert files.definition == " SELECT t.id\n   FROM app.t;" and catalog.relation(16601).definition is None


def test_types_casts_and_the_types_of_columns():
    catalog = build_catalog(rows(), source="live", complete=True)
    (positive,) = catalog.types_named("positive")
    assert positive == TypeFacts(16800, "app", "positive", "d", functions=(2597, 16500), parts=(23,))
    assert catalog.type(1007).parts == (23,)
    assert catalog.casts == (CastFacts(16900, 23, 16800, 16500, "a", "f"),)
    assert catalog.casts_to(16800) == catalog.casts and catalog.casts_to(23) == ()
    assert catalog.ambient_casts == catalog.casts
    assert catalog.relation(16601).column_types == (16800,) and catalog.relation(16602).column_types == ()


def _conversions(*types: TypeFacts, casts=()) -> Catalog:
    return Catalog(types=types, casts=casts)


def test_a_conversion_runs_casts_to_the_type_and_to_what_it_is_made_of():
    """A cast reaches a domain's base type and an array's elements by casting; a composite's fields
    and a range's bounds are read from text (their input functions, no cast)."""
    catalog = _conversions(
        TypeFacts(23, "pg_catalog", "int4", "b", (42,)),
        TypeFacts(100, "app", "checked", "d", (2597, 501), (23,)),  # CHECK calls 501
        TypeFacts(101, "app", "_checked", "b", (750,), (100,)),
        TypeFacts(102, "app", "pair", "c", (2290,), (100, 25)),
        TypeFacts(103, "app", "checked_range", "r", (3834, 502), (100,)),  # canonical 502
        casts=(CastFacts(900, 20, 23, 600, "e"), CastFacts(901, 21, 100, 601, "a"), CastFacts(902, 700, 102, 602, "i")),
    )
    assert set(catalog.conversion(100)) == {600, 601, 2597, 501, 42}
    assert set(catalog.conversion(101)) == {750, 600, 601, 2597, 501, 42}
    assert set(catalog.conversion(102)) == {602, 2290, 2597, 501, 42}  # fields by text: no 600, 601
    assert set(catalog.conversion(103)) == {3834, 502, 2597, 501, 42}
    # a value stored in a column is converted by assignment and implicit casts only
    assert set(catalog.conversion(100, explicit=False)) == {601, 2597, 501, 42}
    assert catalog.conversion(999) == ()  # a type not known (a table's row type): nothing known runs


def test_operators_settings_schemas_and_where_they_come_from():
    catalog = build_catalog(rows(), source="live", complete=True)
    (custom,) = catalog.operators_named("|>")
    assert (custom.function, custom.left, custom.right) == (16500, 0, 25)
    assert catalog.operators_named("+")[0].function == 177
    assert catalog.setting_context("log_min_messages") == "superuser"
    assert catalog.setting_context("pgaudit.log") == "superuser"
    assert catalog.setting_context("no_such_setting") is None
    assert catalog.schemas == {"app", "pg_catalog", "public"}
    assert (catalog.server_version, catalog.source, catalog.complete) == (150006, "live", True)


def test_settings_the_server_hid_come_from_the_base_and_the_server_wins():
    catalog = build_catalog(
        rows(settings=(("WORK_MEM", "user"),)), source="live", complete=True,
        base_settings={"dynamic_library_path": "superuser", "work_mem": "superuser"},
    )
    assert catalog.settings == {"dynamic_library_path": "superuser", "work_mem": "user"}


@pytest.mark.parametrize(
    "broken",
    [
        {"functions": (LOWER[:-1],)},
        {"relations": ((1, "s", "t"),)},
        {"dependencies": ((16600, "x", 1),)},
        {"operators": ((1, "s", "+", 2, 3),)},
        {"settings": (("work_mem",),)},
        {"types": ((1, "s", "t", "b", []),)},
        {"casts": ((1, 2, 3, 4, "e"),)},
        {"column_types": ((1,),)},
    ],
)
def test_rows_of_another_shape_are_refused(broken):
    with pytest.raises(CatalogShapeError):
        build_catalog(rows(**broken), source="live", complete=True)


def test_rows_from_json_lists():
    document = json.loads(json.dumps({kind: list(answer) for kind, answer in rows().by_kind().items()}))
    again = rows_from_lists(150006, document)
    assert again == rows()
    assert build_catalog(again, source="x", complete=False).function(16500).config == (
        "search_path=app", "work_mem=1MB")


# ---------------------------------------------------------------------------- queries


def test_queries_by_release():
    assert "prosqlbody" in queries.for_version(150006)["functions"]
    assert "prosqlbody" not in queries.for_version(130010)["functions"]
    with pytest.raises(ValueError, match="older"):
        queries.for_version(100023)
    assert set(queries.for_version(150006)) == set(queries.COLUMNS)


def test_every_query_names_the_columns_the_facts_are_built_from():
    for kind, sql in queries.for_version(150006).items():
        for column in queries.COLUMNS[kind]:
            assert f" AS {column}" in sql, (kind, column)


# ---------------------------------------------------------------------------- the snapshot


def test_the_shipped_snapshot_is_postgresql_15s_builtin_catalog():
    catalog = snapshot.load_snapshot()
    assert catalog.source == "snapshot postgresql-15" and not catalog.complete
    assert catalog.server_version // 10000 == 15
    assert catalog.schemas == {"pg_catalog", "information_schema"}
    assert all(f.oid < FIRST_NORMAL_OID and f.builtin and f.source is None for f in catalog.functions)
    assert all(r.oid < FIRST_NORMAL_OID for r in catalog.relations)
    assert len(catalog.functions) > 3000 and len(catalog.settings) > 300
    # initdb revokes these from PUBLIC; lower is everyone's
    assert not any(f.public_execute for f in catalog.functions_named("pg_read_file"))
    assert not any(f.public_execute for f in catalog.functions_named("pg_ls_logdir"))
    assert all(f.public_execute for f in catalog.functions_named("lower"))
    assert catalog.setting_context("log_min_messages") == "superuser"
    assert catalog.setting_context("dynamic_library_path") == "superuser"
    assert catalog.setting_context("work_mem") == "user"
    # views that read server files say so
    (file_settings,) = catalog.relations_named("pg_file_settings")
    assert [catalog.function(o).name for o in file_settings.functions] == ["pg_show_all_file_settings"]
    (activity,) = catalog.relations_named("pg_stat_activity")
    assert {catalog.relation(o).name for o in activity.relations} == {"pg_authid", "pg_database"}
    assert "plpgsql" in {f.extension for f in catalog.functions}
    # every type a value can be cast to, but tables' row types; no casts (only those made after initdb)
    (int4,) = catalog.types_named("int4")
    assert [catalog.function(o).name for o in int4.functions] == ["int4in"]
    assert catalog.types_named("_int4")[0].parts == (int4.oid,)
    assert not catalog.types_named("pg_class") and not catalog.types_named("_pg_class")
    (cardinal,) = catalog.types_named("cardinal_number")  # information_schema's: CHECK (VALUE >= 0)
    assert cardinal.kind == "d" and cardinal.parts == (int4.oid,)
    assert {catalog.function(o).name for o in cardinal.functions} == {"domain_in", "int4ge"}
    assert catalog.casts == ()
    (roles,) = catalog.relations_named("applicable_roles")
    assert {catalog.type(t).name for t in roles.column_types} == {"sql_identifier", "yes_or_no"}


def test_the_snapshot_is_chosen_by_release_and_loaded_once():
    assert snapshot.release_for(150006) == 15 and snapshot.release_for(15) == 15
    assert snapshot.release_for(None) == max(snapshot.available())
    assert snapshot.release_for(990001) == max(snapshot.available())  # unknown: the newest
    assert snapshot.load_snapshot(150006) is snapshot.load_snapshot(15) is snapshot.load_snapshot()


def test_a_snapshot_of_other_columns_is_refused():
    document = json.loads(gzip.decompress(snapshot.available()[15].read_bytes()))
    snapshot.rows_of(document)
    document["columns"]["functions"] = document["columns"]["functions"][:-1]
    with pytest.raises(CatalogShapeError, match="regenerate"):
        snapshot.rows_of(document)
    with pytest.raises(CatalogShapeError, match="format"):
        snapshot.rows_of({**document, "format": 0})
    older = json.loads(gzip.decompress(snapshot.available()[15].read_bytes()))
    del older["columns"]["types"]  # a snapshot written before a kind of fact was loaded
    with pytest.raises(CatalogShapeError, match="regenerate"):
        snapshot.rows_of(older)


def test_builtin_rows_keep_only_what_initdb_made_without_bodies():
    plpgsql = (13560, "pg_catalog", "plpgsql_call_handler", 0, 0, False, "v", "c", False, "f", True, True,
               False, False, None, "plpgsql", None, False)
    sql_builtin = (13000, "information_schema", "_pg_expandarray", 1, 0, False, "i", "sql", True, "f", True,
                   True, False, True, "select $1[s] ...", None, None, False)
    public_builtin = (13001, "public", "odd", 0, 0, False, "v", "sql", True, "f", True, True, False, False,
                      "select 1", None, None, False)
    kept = snapshot.builtin_rows(rows(functions=(LOWER, MINE, DBLINK_EXEC, plpgsql, sql_builtin, public_builtin)))
    assert [f[0] for f in kept.functions] == [870, 13560, 13000]
    assert all(f[queries.COLUMNS["functions"].index("source")] is None for f in kept.functions)
    assert [r[0] for r in kept.relations] == [1259, 12110]
    assert kept.dependencies == ((12110, "f", 3329),)
    assert [o[0] for o in kept.operators] == [551]
    assert [t[0] for t in kept.types] == [23, 1007] and kept.casts == ()  # casts: only those made after initdb
    assert kept.column_types == ()  # app.t's are not initdb's
    assert kept.schemas == (("pg_catalog",),)
    assert kept.settings == rows().settings


def test_encoding_is_deterministic_and_round_trips():
    data = snapshot.encode(rows())
    assert data == snapshot.encode(rows())
    again = snapshot.rows_of(json.loads(gzip.decompress(data)))
    assert again == CatalogRows(150006, **{kind: tuple(sorted(answer)) for kind, answer in rows().by_kind().items()})


def test_the_snapshot_is_package_data():
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    data = cfg["options.package_data"]["pgwarden.catalog"].split()
    shipped = sorted(p.name for p in (root / "pgwarden/catalog/snapshots").iterdir())
    assert shipped and all(any(Path(name).match(glob.split("/")[-1]) for glob in data) for name in shipped)
    assert "pgwarden.catalog" in cfg["options"]["packages"].split()


def test_the_facts_import_no_twisted_and_no_database_client():
    """The analysis reads `Catalog`s on the hot path; building one must not drag in the reactor."""
    probe = ("import sys, pgwarden.catalog, pgwarden.catalog.loader, pgwarden.catalog.snapshot;"
             "pgwarden.catalog.snapshot.load_snapshot();"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'psycopg'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- a build from the previous one

def _facts(catalog: Catalog) -> dict:
    """Everything a catalog answers, by value."""
    names = {f.name for f in catalog.functions} | {r.name for r in catalog.relations} | \
        {o.name for o in catalog.operators} | {t.name for t in catalog.types}
    oids = {f.oid for f in catalog.functions} | {r.oid for r in catalog.relations} | {t.oid for t in catalog.types}
    return {
        "parts": (catalog.functions, catalog.relations, catalog.operators, catalog.types, catalog.casts,
                  catalog.ambient_casts, catalog.settings, catalog.schemas, catalog.keywords),
        "by name": {n: (catalog.functions_named(n), catalog.relations_named(n), catalog.operators_named(n),
                        catalog.types_named(n)) for n in names},
        "by oid": {o: (catalog.function(o), catalog.relation(o), catalog.type(o), catalog.casts_to(o),
                       catalog.columns_of(o), [catalog.column(o, n) for n in range(4)],
                       catalog.conversion(o, True), catalog.conversion(o, False)) for o in oids},
    }


_ROW_EDITS = {
    "functions": [(16501, "app", "touch", 0, 0, False, "s", "sql", True, "f", False, True, False, False,
                   "SELECT 1", None, None, False, 23, 0, [], [])],
    "relations": [(16603, "app", "u", "r")],
    "dependencies": [(16600, "f", 870)],
    "definitions": [(16600, " SELECT 2;")],
    "column_types": [(16601, 23)],
    "effects": [(16601, "t", 16500)],
    "rules": [(16601, "CREATE RULE r AS ON DELETE TO app.t DO INSTEAD NOTHING")],
    "aggregates": [(16500, 870)],
    "operators": [(16701, "app", "|>", 870, 23, 23)],
    "types": [(16801, "app", "negative", "d", [16500], [23])],
    "casts": [(16901, 25, 16800, 870, "i", "f")],
    "attributes": [(16603, ["a"], [23]), (16601, ["id", "ssn", "ssn2"], [23, 25, 25])],
    "settings": [("work_mem", "superuser")],
    "schemas": [("other",)],
}


@given(edits=st.lists(st.tuples(st.sampled_from(sorted(_ROW_EDITS)), st.sampled_from(["add", "drop", "replace"]),
                                st.integers(0, 3)), max_size=4))
@settings(max_examples=examples(150), deadline=None)
def test_property_a_catalog_built_from_the_previous_one_is_the_one_built_afresh(edits):
    """Whatever rows changed, a build that takes the unchanged parts from the previous load
    answers every lookup as a build from nothing; the parts whose rows are the same are the
    previous catalog's own objects (not built again), and it is a new generation."""
    before = rows()
    previous = build_catalog(before, source="live", complete=True)
    answers = before.by_kind()
    for kind, edit, pick in edits:
        current = list(answers[kind])
        extra = _ROW_EDITS[kind][pick % len(_ROW_EDITS[kind])]
        if edit == "add" or not current:
            current.append(extra)
        elif edit == "drop":
            del current[pick % len(current)]
        else:
            current[pick % len(current)] = extra
        answers[kind] = tuple(current)
    after = CatalogRows(server_version=before.server_version, **answers)
    built = build_catalog(after, source="live", complete=True, previous=(before, previous))
    fresh = build_catalog(after, source="live", complete=True)
    assert _facts(built) == _facts(fresh)
    assert built.generation not in (previous.generation, fresh.generation)
    unchanged = unchanged_parts(after, before)
    assert unchanged == {part for part, kinds in PART_KINDS.items() if all(answers[k] == before.by_kind()[k] for k in kinds)}
    for part in ("functions", "relations", "operators", "types", "casts"):
        assert (getattr(built, part) is getattr(previous, part)) == (part in unchanged), part
    # a function whose row (and aggregate's functions) did not change is the previous object
    same = {row[0] for row in after.functions if row in before.functions} - \
        {a for a, _ in set(after.aggregates) ^ set(before.aggregates)}
    for f in built.functions:
        assert (f is previous.function(f.oid)) == (f.oid in same and previous.function(f.oid) is not None), f.oid


def test_parts_are_the_catalogs_parts():
    assert set(PART_KINDS) == PARTS
    assert set(KINDS) - {kind for kinds in PART_KINDS.values() for kind in kinds} == \
        {"settings", "tuning", "schemas", "keywords", "session", "event_triggers", "operator_classes",
         "plain_settings", "indexes", "trusted_extensions"}  # small: built every time
    with pytest.raises(ValueError, match="previous"):
        Catalog(unchanged=frozenset({"functions"}))
    with pytest.raises(ValueError, match="unknown parts"):
        Catalog(previous=Catalog(), unchanged=frozenset({"settings"}))
