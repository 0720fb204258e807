"""The built-in catalog of each supported PostgreSQL release, shipped with pgwarden.

A snapshot is what `pgwarden explain` knows without a database, and what the
proxy falls back to while the live catalog cannot be read: the functions,
relations, operators and types initdb creates (OID below 16384, in pg_catalog
and information_schema) and every setting with its context. It knows nothing of a
database's own objects, so it is never `complete`: a name it lacks may exist.

Snapshots are generated, never edited: one gzip'd JSON file per major release in
``pgwarden/catalog/snapshots/postgresql-<major>.json.gz``, written by::

    python -m pgwarden.catalog.snapshot generate -o pgwarden/catalog/snapshots/postgresql-15.json.gz

against a fresh server of that release (``--dsn`` names one; without it a throwaway
server is initdb'd from the PostgreSQL binaries found on PATH or under
/usr/lib/postgresql). The output is byte-for-byte the same for the same release.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import re
import sys
from importlib import resources
from typing import Any

from pgwarden.catalog import queries
from pgwarden.catalog.loader import KINDS, CatalogRows, CatalogShapeError, build_catalog, read_rows, rows_from_lists
from pgwarden.catalog.model import FIRST_NORMAL_OID, Catalog

FORMAT = 1
BUILTIN_SCHEMAS = ("pg_catalog", "information_schema")
_FILE = re.compile(r"postgresql-(\d+)\.json\.gz")


def major(server_version: int) -> int:
    """The major release of a server_version_num (150006 -> 15)."""
    return server_version // 10000


def available() -> dict[int, Any]:
    """The shipped snapshots by major release."""
    found = {}
    for entry in resources.files("pgwarden.catalog").joinpath("snapshots").iterdir():
        matched = _FILE.fullmatch(entry.name)
        if matched:
            found[int(matched.group(1))] = entry
    return found


def release_for(version: int | None) -> int:
    """The release whose snapshot describes a server of ``version`` (a major release or a
    server_version_num): that release if pgwarden ships it, else the newest shipped."""
    shipped = available()
    if not shipped:
        raise FileNotFoundError("pgwarden ships no catalog snapshot (pgwarden/catalog/snapshots/ is empty)")
    if version is not None and version >= 10000:
        version = major(version)
    return version if version in shipped else max(shipped)


def load_snapshot(version: int | None = None) -> Catalog:
    """The built-in catalog of PostgreSQL ``version`` (a major release, or a server_version_num).

    Without a version, or for a release pgwarden ships no snapshot of, the newest.
    The same release gives the same `Catalog` (same generation) every time.
    """
    return _load(release_for(version))


def stand_in_snapshot(version: int | None = None) -> Catalog:
    """`load_snapshot`, as it stands in for a live catalog not loaded yet or no longer fresh: a
    `Catalog` of its own (``stand_in``), under which a statement naming a relation of the
    database's own is `unknown` (its views, triggers, defaults and policies are not known)."""
    return _load(release_for(version), stand_in=True)


@functools.cache
def _load(release: int, stand_in: bool = False) -> Catalog:
    document = json.loads(gzip.decompress(available()[release].read_bytes()))
    rows = rows_of(document)
    source = f"snapshot postgresql-{release}" + (" (standing in for the live catalog)" if stand_in else "")
    return build_catalog(rows, source=source, complete=False, stand_in=stand_in)


#: kinds of facts initdb's catalog has none of (rules on writes, aggregates made after initdb,
#: row-level security policies): a snapshot may leave them out. Its effects are kept: those of the
#: built-in relations (no trigger, default or foreign key of the database's own: 'A', a relation
#: PUBLIC may not read, pg_authid's password hashes, red team ten)
LIVE_ONLY = frozenset({"rules", "aggregates", "policies", "event_triggers", "operator_classes", "tuning",
                       "plain_settings", "indexes", "trusted_extensions"})


def rows_of(document: dict) -> CatalogRows:
    """The rows a snapshot document holds, checked against the columns the facts are built from."""
    if document.get("format") != FORMAT:
        raise CatalogShapeError(f"snapshot format {document.get('format')!r}, expected {FORMAT}")
    for kind in KINDS:
        columns = document["columns"].get(kind)
        if columns is None and kind in LIVE_ONLY:
            continue
        if tuple(columns or ()) != queries.COLUMNS[kind]:
            raise CatalogShapeError(
                f"the snapshot's {kind} columns are {columns}, not {queries.COLUMNS[kind]}: "
                "regenerate it (python -m pgwarden.catalog.snapshot generate)"
            )
    return rows_from_lists(document["server_version"], document)


def builtin_rows(rows: CatalogRows) -> CatalogRows:
    """Only what initdb creates: objects below FirstNormalObjectId in the built-in schemas.

    Function bodies are left out (a built-in is decided by its facts, not its text).
    """

    def builtin(row: tuple) -> bool:
        return row[0] < FIRST_NORMAL_OID and row[1] in BUILTIN_SCHEMAS

    source = queries.COLUMNS["functions"].index("source")
    functions = tuple(row[:source] + (None,) + row[source + 1:] for row in rows.functions if builtin(row))
    relations = tuple(row for row in rows.relations if builtin(row))
    kept = {row[0] for row in relations}
    # the built-in composite types' columns too (what a built-in function returning one names);
    # not the catalogs' TOAST relations (pg_toast)
    type_relations = {row[0] for row in rows.attributes if row[0] < FIRST_NORMAL_OID} - {
        row[0] for row in rows.relations}
    return CatalogRows(
        server_version=rows.server_version,
        functions=functions,
        relations=relations,
        attributes=tuple(row for row in rows.attributes if row[0] in kept or row[0] in type_relations),
        definitions=tuple(row for row in rows.definitions if row[0] in kept),
        column_types=tuple(row for row in rows.column_types if row[0] in kept),
        dependencies=tuple(row for row in rows.dependencies if row[0] in kept and row[2] < FIRST_NORMAL_OID),
        effects=tuple(row for row in rows.effects if row[0] in kept),
        operators=tuple(row for row in rows.operators if builtin(row)),
        types=tuple(row for row in rows.types if builtin(row)),
        casts=(),  # the casts query reads only those made after initdb
        settings=rows.settings,
        schemas=tuple(row for row in rows.schemas if row[0] in BUILTIN_SCHEMAS),
        keywords=rows.keywords,
        session=(),  # (a server's own, not the release's)
    )


def encode(rows: CatalogRows) -> bytes:
    """The snapshot file: gzip'd JSON, byte-for-byte the same for the same rows."""
    def dumps(value) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    head = {
        "format": FORMAT,
        "postgresql": major(rows.server_version),
        "server_version": rows.server_version,
        "columns": {kind: list(queries.COLUMNS[kind]) for kind in KINDS if kind not in LIVE_ONLY},
    }
    # One row per line (a row's own lists stay on it): a regenerated snapshot diffs readably
    # once decompressed.
    parts = [dumps(head)[:-1]]
    for kind, answer in rows.by_kind().items():
        if kind in LIVE_ONLY:
            continue
        parts.append(f",{dumps(kind)}:[" + ",\n".join(dumps(list(row)) for row in sorted(answer)) + "]")
    text = "".join(parts) + "}"
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def generate(dsn: str) -> bytes:
    """The snapshot of the server at ``dsn`` (which should be freshly initdb'd)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return encode(builtin_rows(read_rows(conn)))


def _generate_fresh() -> bytes:
    from pgwarden.testing.postgres import SUPERUSER, SUPERUSER_PASSWORD, TempPostgres

    with TempPostgres() as server:
        return generate(server.dsn(SUPERUSER, SUPERUSER_PASSWORD, "postgres"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgwarden.catalog.snapshot", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write the snapshot of a fresh server's built-in catalog")
    gen.add_argument("--dsn", help="a libpq connection string (default: initdb a throwaway server)")
    gen.add_argument("-o", "--output", required=True, help="the file to write (postgresql-<major>.json.gz)")
    args = parser.parse_args(argv)
    data = generate(args.dsn) if args.dsn else _generate_fresh()
    release = json.loads(gzip.decompress(data))["postgresql"]
    if not args.output.endswith(f"postgresql-{release}.json.gz"):
        print(f"warning: the server is PostgreSQL {release}; name the file postgresql-{release}.json.gz "
              "for pgwarden to find it", file=sys.stderr)
    with open(args.output, "wb") as out:
        out.write(data)
    print(f"{args.output}: PostgreSQL {release}, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
