"""From catalog rows to a `Catalog`: one path for the live server and the shipped snapshot.

`read_rows` runs the queries of `queries` on a DB-API connection (psycopg 3) and
returns the rows as they came; `build_catalog` turns rows into facts. The snapshot
stores rows of the same shape, so what is tested for one is tested for the other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pgwarden.catalog import queries
from pgwarden.catalog.model import (
    EFFECT_KINDS,
    CastFacts,
    Catalog,
    FunctionFacts,
    OperatorFacts,
    RelationFacts,
    TypeFacts,
)

KINDS = tuple(queries.COLUMNS)


class CatalogShapeError(Exception):
    """The rows do not have the columns the facts are built from (a query or snapshot out of date)."""


@attrs.frozen
class CatalogRows:
    """The answer to each query of `queries`, rows as tuples in the order of ``queries.COLUMNS``."""

    server_version: int
    functions: tuple[tuple, ...] = ()
    relations: tuple[tuple, ...] = ()
    attributes: tuple[tuple, ...] = ()  # (the key "columns" of a snapshot names each kind's columns)
    definitions: tuple[tuple, ...] = ()
    column_types: tuple[tuple, ...] = ()
    dependencies: tuple[tuple, ...] = ()
    effects: tuple[tuple, ...] = ()
    rules: tuple[tuple, ...] = ()
    policies: tuple[tuple, ...] = ()
    aggregates: tuple[tuple, ...] = ()
    operators: tuple[tuple, ...] = ()
    types: tuple[tuple, ...] = ()
    casts: tuple[tuple, ...] = ()
    settings: tuple[tuple, ...] = ()
    tuning: tuple[tuple, ...] = ()
    schemas: tuple[tuple, ...] = ()
    keywords: tuple[tuple, ...] = ()
    session: tuple[tuple, ...] = ()
    event_triggers: tuple[tuple, ...] = ()
    operator_classes: tuple[tuple, ...] = ()
    plain_settings: tuple[tuple, ...] = ()
    indexes: tuple[tuple, ...] = ()
    trusted_extensions: tuple[tuple, ...] = ()
    #: whether the upstream role reads the settings pg_settings hides from a plain role, or may
    #: become one that does (`queries.HIDDEN_READER`): True when not known (a snapshot)
    reads_hidden_settings: bool = True

    def by_kind(self) -> dict[str, tuple[tuple, ...]]:
        return {kind: getattr(self, kind) for kind in KINDS}


class ViewDependencies:
    """What each view's SELECT rule calls and reads, and its query as text, kept from one load
    to the next.

    Keyed by the rule's row version (its OID and xmin): a view created or replaced
    since has a new one and is read again, a view dropped is forgotten. Loads of one
    database may share one (`LoadMemory`, `LiveCatalog.share_memory`): each takes it in turn, and
    what each returns is of its own snapshot (a view whose version differs from the one
    kept is read again, in that snapshot).
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[str, tuple[tuple, ...], tuple[tuple, ...]]] = {}
        #: how many views the last load read (the others were known)
        self.last_read = 0
        self._lock = threading.Lock()

    def read(self, cur: Any, sql: str, definitions_sql: str) -> tuple[tuple[tuple, ...], tuple[tuple, ...]]:
        """The dependencies' rows and the definitions' rows of every view."""
        with self._lock:
            return self._read(cur, sql, definitions_sql)

    def _read(self, cur: Any, sql: str, definitions_sql: str) -> tuple[tuple[tuple, ...], tuple[tuple, ...]]:
        cur.execute(queries.VIEW_RULES)
        versions = dict(cur.fetchall())
        wanted = [view for view, version in versions.items() if self._known.get(view, ("",))[0] != version]
        found: dict[int, list[tuple]] = {view: [] for view in wanted}
        texts: dict[int, list[tuple]] = {view: [] for view in wanted}
        if wanted:
            cur.execute(sql, {"views": wanted})
            _check(cur, "dependencies")
            for row in cur.fetchall():
                found[row[0]].append(row)
            cur.execute(definitions_sql, {"views": wanted})
            _check(cur, "definitions")
            for row in cur.fetchall():
                texts[row[0]].append(row)
        self._known = {
            view: (version, tuple(found[view]), tuple(texts[view])) if view in found else self._known[view]
            for view, version in versions.items()
        }
        self.last_read = len(wanted)
        views = sorted(self._known)
        return (tuple(row for view in views for row in self._known[view][1]),
                tuple(row for view in views for row in self._known[view][2]))


class InitdbRows:
    """The rows of initdb's objects for the kinds of `queries.INITDB_KINDS`, kept from one load to
    the next while `queries.INITDB_KEY` answers the same.

    Most of a new database's catalog is initdb's: ~3,200 of its ~3,250 functions. Reading them
    took ~50 ms of the server's time a load and ~20 ms of pgwarden's (converting the rows), and a
    sidecar loads again after every DDL its agent makes. Their rows change only when a superuser
    changes one of initdb's objects, which changes the key (a ~5 ms query); the rows of the
    database's own objects are read at every load, as every other kind is. Loads of one database
    may share one (`LoadMemory`); each asks for the key in its own snapshot, and rows kept under
    the same key are those that snapshot would read.
    """

    def __init__(self) -> None:
        self._key: tuple[int, str] | None = None
        self._rows: dict[str, tuple[tuple, ...]] = {}
        #: whether the last load read the rows (the key had changed): for tests, as `ViewDependencies.last_read`
        self.last_read = False
        self._lock = threading.Lock()

    def read(self, cur: Any, server_version: int) -> dict[str, tuple[tuple, ...]]:
        """The rows of initdb's objects, by kind: those kept, or read again in ``cur``'s transaction."""
        with self._lock:
            cur.execute(queries.INITDB_KEY)
            (answer,) = cur.fetchone()
            key = (server_version, answer)
            self.last_read = key != self._key
            if self.last_read:
                every = queries.for_version(server_version, initdb=True)
                rows = {}
                for kind in queries.INITDB_KINDS:
                    cur.execute(every[kind])
                    _check(cur, kind)
                    rows[kind] = tuple(cur.fetchall())
                self._key, self._rows = key, rows
            return self._rows


class LoadMemory:
    """What one load of a database's catalog leaves for the next: the views' rules
    (`ViewDependencies`) and the rows and `Catalog` it built, whose parts the next build takes
    where its rows are the same (`build_catalog`'s ``previous``).

    Loads of one database may share one (`LiveCatalog.share_memory`): the next load of any of
    them reads only the views made or replaced since, and builds only the parts whose rows differ
    from the latest load's; what each builds is still the catalog of its own rows.
    """

    def __init__(self) -> None:
        self.views = ViewDependencies()
        self.initdb = InitdbRows()
        #: the rows and catalog of the latest load (of any catalog sharing this memory)
        self.last: tuple[CatalogRows, Catalog] | None = None


def _check(cur: Any, kind: str) -> None:
    names = tuple(column.name for column in cur.description)
    if names != queries.COLUMNS[kind]:
        raise CatalogShapeError(f"the {kind} query answered {names}, not {queries.COLUMNS[kind]}")


def read_rows(conn: Any, timeout_s: float = 30.0, views: ViewDependencies | None = None,
              initdb: InitdbRows | None = None) -> CatalogRows:
    """Runs every query in one read-only, repeatable-read transaction on a psycopg 3 connection.

    The connection must be in autocommit mode: the transaction is begun here, with
    the isolation that makes all the answers one picture of the catalog. ``views``
    remembers the views' dependencies between loads (else every view is read), ``initdb``
    the rows of initdb's objects (else they are read).
    """
    import psycopg

    views = views if views is not None else ViewDependencies()
    initdb = initdb if initdb is not None else InitdbRows()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction(), conn.cursor() as cur:
        for statement in queries.TRANSACTION:
            cur.execute(statement.format(timeout_ms=int(timeout_s * 1000)))
        cur.execute(queries.VERSION)
        (server_version,) = cur.fetchone()
        answers = {}
        every = queries.for_version(server_version, initdb=False)
        kept = initdb.read(cur, server_version)
        for kind, sql in every.items():
            if kind == "definitions":
                continue  # read with the dependencies
            if kind == "dependencies":
                answers[kind], answers["definitions"] = views.read(cur, sql, every["definitions"])
                continue
            if kind == "plain_settings":
                answers[kind] = _plain_settings(cur, server_version, sql)
                continue
            cur.execute(sql)
            _check(cur, kind)
            # initdb's objects have the lowest OIDs: their rows come first, as one query gives them
            answers[kind] = kept.get(kind, ()) + tuple(cur.fetchall())
        cur.execute(queries.HIDDEN_READER)
        (reads_hidden,) = cur.fetchone()
    return CatalogRows(server_version=server_version, reads_hidden_settings=reads_hidden is not False, **answers)


def _plain_settings(cur: Any, server_version: int, sql: str) -> tuple[tuple, ...]:
    """The settings pg_settings shows a role without privileges (`queries.PLAIN_SETTINGS`), read as
    pg_database_owner in a savepoint whose end gives the role back; () when the server cannot say
    (before 14, or an upstream role that may not take it)."""
    if server_version < 140000:
        return ()
    cur.execute(queries.PLAIN_ROLE)
    (may,) = cur.fetchone()
    if not may:
        return ()
    import psycopg

    cur.execute("SAVEPOINT pgwarden_plain_settings")
    try:
        cur.execute("SET LOCAL ROLE pg_database_owner")
        cur.execute(sql)
        _check(cur, "plain_settings")
        return tuple(cur.fetchall())
    except psycopg.Error:
        return ()  # (the server's refusal: not known, `Catalog.hidden_settings` falls back)
    finally:
        cur.execute("ROLLBACK TO SAVEPOINT pgwarden_plain_settings")


def _function(row: tuple) -> FunctionFacts:
    fields = dict(zip(queries.COLUMNS["functions"], row))
    fields["config"] = tuple(fields["config"] or ())
    fields["result_columns"] = _named(fields["result_columns"])
    fields["argument_names"] = tuple(fields["argument_names"] or ())
    return FunctionFacts(**fields)


def _function_facts(row: tuple, support: tuple[int, ...], before: tuple[tuple, FunctionFacts] | None) -> FunctionFacts:
    if before is not None and before[0] == row and before[1].support == support:
        return before[1]
    facts = _function(row)
    return attrs.evolve(facts, support=support) if support else facts


def _named(names: Iterable[str] | None) -> tuple[str, ...]:
    """Result columns as the server names them: an unnamed OUT argument is columnN (its place
    among the OUT arguments)."""
    return tuple(name or f"column{i}" for i, name in enumerate(names or (), 1))


def _type(row: tuple) -> TypeFacts:
    oid, schema, name, kind, functions, parts = row
    return TypeFacts(oid, schema, name, kind, functions=tuple(functions or ()), parts=tuple(parts or ()))


#: The kinds of rows each part of a `Catalog` (`model.PARTS`) is built from, and only from.
PART_KINDS: dict[str, tuple[str, ...]] = {
    "functions": ("functions", "aggregates"),
    "relations": ("relations", "dependencies", "definitions", "column_types", "effects", "rules", "policies"),
    "operators": ("operators",),
    "types": ("types",),
    "casts": ("casts",),
    "attributes": ("attributes",),
}


def unchanged_parts(rows: CatalogRows, before: CatalogRows) -> frozenset[str]:
    """The parts of a catalog whose rows are equal in ``rows`` and ``before``."""
    return frozenset(part for part, kinds in PART_KINDS.items()
                     if all(getattr(rows, kind) == getattr(before, kind) for kind in kinds))


def _relations(rows: CatalogRows) -> list[RelationFacts]:
    """The relations, each with what a view reads and calls and what a use of it runs."""
    functions_of: dict[int, list[int]] = {}
    relations_of: dict[int, list[int]] = {}
    for relation, kind, target in rows.dependencies:
        if kind == "f":
            functions_of.setdefault(relation, []).append(target)
        elif kind == "r":
            relations_of.setdefault(relation, []).append(target)
        else:
            raise CatalogShapeError(f"a dependency of kind {kind!r} (expected 'f' or 'r')")
    definitions = dict(rows.definitions)
    column_types: dict[int, list[int]] = {}
    for relation, type_oid in rows.column_types:
        column_types.setdefault(relation, []).append(type_oid)
    effects: dict[int, list[tuple[str, int]]] = {}
    for relation, kind, target in rows.effects:
        if kind not in EFFECT_KINDS:
            raise CatalogShapeError(f"an effect of kind {kind!r} (expected one of {', '.join(EFFECT_KINDS)})")
        effects.setdefault(relation, []).append((kind, target))
    rules: dict[int, list[str]] = {}
    for relation, definition in rows.rules:
        rules.setdefault(relation, []).append(definition)
    policies: dict[int, list[str]] = {}
    for relation, expression in rows.policies:
        policies.setdefault(relation, []).append(expression)
    return [
        RelationFacts(
            oid, schema, name, kind,
            functions=tuple(functions_of.get(oid, ())), relations=tuple(relations_of.get(oid, ())),
            column_types=tuple(column_types.get(oid, ())), definition=definitions.get(oid),
            effects=tuple(effects.get(oid, ())), rules=tuple(rules.get(oid, ())),
            policies=tuple(policies.get(oid, ())),
        )
        for oid, schema, name, kind in rows.relations
    ]


def build_catalog(
    rows: CatalogRows,
    *,
    source: str,
    complete: bool,
    base_settings: Mapping[str, str] | None = None,
    stand_in: bool = False,
    previous: tuple[CatalogRows, Catalog] | None = None,
) -> Catalog:
    """The facts of ``rows``.

    ``base_settings`` (the snapshot's, for a live catalog) fills in the settings the
    server did not show: pg_settings hides superuser-only settings from a role without
    pg_read_all_settings, and those are exactly the ones a plain user may not set.
    ``previous``: the rows and catalog of the load before; the parts whose rows are the same
    are taken from it, not built again (a new table leaves the ~3,000 functions as they were).
    """
    unchanged = unchanged_parts(rows, previous[0]) if previous is not None else frozenset()
    for kind, kind_rows in rows.by_kind().items():
        width = len(queries.COLUMNS[kind])
        for row in kind_rows:
            if len(row) != width:
                raise CatalogShapeError(f"a {kind} row has {len(row)} values, not {width}: {row!r}")
    relations = () if "relations" in unchanged else _relations(rows)
    support: dict[int, list[int]] = {}
    for aggregate, function in rows.aggregates:
        support.setdefault(aggregate, []).append(function)
    functions: Iterable[FunctionFacts] = ()
    if "functions" not in unchanged:
        # A function whose row is the previous load's, and its aggregate's functions too, is the
        # previous facts object: a function made or dropped builds one, not ~3,000.
        before = dict(zip((row[0] for row in previous[0].functions),
                          zip(previous[0].functions, previous[1].functions))) if previous is not None else {}
        functions = [_function_facts(row, tuple(support.get(row[0], ())), before.get(row[0]))
                     for row in rows.functions]
    settings = dict(base_settings or {})
    settings.update((name.lower(), context) for name, context in rows.settings)
    return Catalog(
        functions=functions,
        relations=relations,
        operators=(OperatorFacts(*row) for row in rows.operators),
        types=map(_type, rows.types),
        casts=(CastFacts(*row) for row in rows.casts),
        attributes=((relation, tuple(names), tuple(types)) for relation, names, types in rows.attributes),
        previous=previous[1] if unchanged and previous is not None else None,
        unchanged=unchanged,
        settings=settings,
        tuning=(name.lower() for (name,) in rows.tuning),
        schemas=(name for (name,) in rows.schemas),
        keywords=(word for (word,) in rows.keywords),
        session_defaults={name: value for name, value in rows.session},
        event_triggers=(function for (function,) in rows.event_triggers),
        operator_classes=rows.operator_classes,
        plain_settings=(name.lower() for (name,) in rows.plain_settings),
        upstream_reads_hidden=rows.reads_hidden_settings,
        indexes=rows.indexes,
        trusted_extensions=(name for (name,) in rows.trusted_extensions),
        server_version=rows.server_version,
        source=source,
        complete=complete,
        stand_in=stand_in,
    )


def rows_from_lists(server_version: int, answers: Mapping[str, Iterable[Iterable]]) -> CatalogRows:
    """`CatalogRows` from plain lists (as JSON gives them back): rows become tuples."""
    rows: dict[str, Any] = {kind: tuple(tuple(row) for row in answers.get(kind, ())) for kind in KINDS}
    return CatalogRows(server_version=server_version, **rows)
