"""From catalog rows to a `Catalog`: one path for the live server and the shipped snapshot.

`read_rows` runs the queries of `queries` on a DB-API connection (psycopg 3) and
returns the rows as they came; `build_catalog` turns rows into facts. The snapshot
stores rows of the same shape, so what is tested for one is tested for the other.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

from pgwarden.catalog import queries
from pgwarden.catalog.model import Catalog, FunctionFacts, OperatorFacts, RelationFacts

KINDS = tuple(queries.COLUMNS)


class CatalogShapeError(Exception):
    """The rows do not have the columns the facts are built from (a query or snapshot out of date)."""


@attrs.frozen
class CatalogRows:
    """The answer to each query of `queries`, rows as tuples in the order of ``queries.COLUMNS``."""

    server_version: int
    functions: tuple[tuple, ...] = ()
    relations: tuple[tuple, ...] = ()
    dependencies: tuple[tuple, ...] = ()
    operators: tuple[tuple, ...] = ()
    settings: tuple[tuple, ...] = ()
    schemas: tuple[tuple, ...] = ()

    def by_kind(self) -> dict[str, tuple[tuple, ...]]:
        return {kind: getattr(self, kind) for kind in KINDS}


def read_rows(conn: Any, timeout_s: float = 30.0) -> CatalogRows:
    """Runs every query in one read-only, repeatable-read transaction on a psycopg 3 connection.

    The connection must be in autocommit mode: the transaction is begun here, with
    the isolation that makes all the answers one picture of the catalog.
    """
    import psycopg

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction(), conn.cursor() as cur:
        for statement in queries.TRANSACTION:
            cur.execute(statement.format(timeout_ms=int(timeout_s * 1000)))
        cur.execute(queries.VERSION)
        (server_version,) = cur.fetchone()
        answers = {}
        for kind, sql in queries.for_version(server_version).items():
            cur.execute(sql)
            names = tuple(column.name for column in cur.description)
            if names != queries.COLUMNS[kind]:
                raise CatalogShapeError(f"the {kind} query answered {names}, not {queries.COLUMNS[kind]}")
            answers[kind] = tuple(cur.fetchall())
    return CatalogRows(server_version=server_version, **answers)


def _function(row: tuple) -> FunctionFacts:
    fields = dict(zip(queries.COLUMNS["functions"], row))
    fields["config"] = tuple(fields["config"] or ())
    return FunctionFacts(**fields)


def build_catalog(
    rows: CatalogRows,
    *,
    source: str,
    complete: bool,
    base_settings: Mapping[str, str] | None = None,
) -> Catalog:
    """The facts of ``rows``.

    ``base_settings`` (the snapshot's, for a live catalog) fills in the settings the
    server did not show: pg_settings hides superuser-only settings from a role without
    pg_read_all_settings, and those are exactly the ones a plain user may not set.
    """
    for kind, kind_rows in rows.by_kind().items():
        width = len(queries.COLUMNS[kind])
        for row in kind_rows:
            if len(row) != width:
                raise CatalogShapeError(f"a {kind} row has {len(row)} values, not {width}: {row!r}")
    functions_of: dict[int, list[int]] = {}
    relations_of: dict[int, list[int]] = {}
    for relation, kind, target in rows.dependencies:
        if kind == "f":
            functions_of.setdefault(relation, []).append(target)
        elif kind == "r":
            relations_of.setdefault(relation, []).append(target)
        else:
            raise CatalogShapeError(f"a dependency of kind {kind!r} (expected 'f' or 'r')")
    relations = [
        RelationFacts(
            oid, schema, name, kind,
            functions=tuple(functions_of.get(oid, ())), relations=tuple(relations_of.get(oid, ())),
        )
        for oid, schema, name, kind in rows.relations
    ]
    settings = dict(base_settings or {})
    settings.update((name.lower(), context) for name, context in rows.settings)
    return Catalog(
        functions=map(_function, rows.functions),
        relations=relations,
        operators=(OperatorFacts(*row) for row in rows.operators),
        settings=settings,
        schemas=(name for (name,) in rows.schemas),
        server_version=rows.server_version,
        source=source,
        complete=complete,
    )


def rows_from_lists(server_version: int, answers: Mapping[str, Iterable[Iterable]]) -> CatalogRows:
    """`CatalogRows` from plain lists (as JSON gives them back): rows become tuples."""
    return CatalogRows(
        server_version=server_version,
        **{kind: tuple(tuple(row) for row in answers.get(kind, ())) for kind in KINDS},
    )
