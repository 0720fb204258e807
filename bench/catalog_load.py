#!/usr/bin/env python3
"""How long the live catalog takes to load from a large database (docs/catalog.md, "Load time").

Starts a throwaway PostgreSQL, generates a schema (tables, views over them calling a
function each, functions), then times `read_rows` + `build_catalog` a few times with
one `ViewDependencies`, as `LiveCatalog` does: the first load reads every view's
query tree, the later ones only what changed (here: nothing; with ``--change``, one new table
before each, and each build also from the previous load's parts, as `LiveCatalog` builds).
Generating takes about a millisecond a table.

    python bench/catalog_load.py --tables 20000 --views 4000 --functions 2000
    python bench/catalog_load.py --tables 0 --views 0 --functions 0 --loads 5 --change
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from pgwarden.catalog.loader import ViewDependencies, build_catalog, read_rows  # noqa: E402
from pgwarden.catalog.snapshot import load_snapshot  # noqa: E402
from pgwarden.testing.postgres import SUPERUSER, TempPostgres, _bin  # noqa: E402


def schema(tables: int, views: int, functions: int) -> str:
    lines = [f"CREATE TABLE t{i} (id int PRIMARY KEY, name text, created timestamptz DEFAULT now());"
             for i in range(tables)]
    lines += [f"CREATE FUNCTION f{i}(a int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + {i}';"
              for i in range(functions)]
    lines += [
        f"CREATE VIEW v{i} AS SELECT t.id, f{i % max(1, functions)}(t.id) AS x, upper(t.name) AS n, "
        f"t.created > now() - interval '1 day' AS recent FROM t{i % tables} t JOIN t{(i + 1) % tables} u "
        "USING (id) WHERE t.id > 0 ORDER BY t.id;"
        for i in range(views)
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=20000)
    parser.add_argument("--views", type=int, default=4000)
    parser.add_argument("--functions", type=int, default=2000)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--change", action="store_true", help="a new table before each load after the first")
    args = parser.parse_args()
    with TempPostgres() as server:
        sql = Path(tempfile.mkdtemp(prefix="pgwarden-bench-")) / "schema.sql"
        sql.write_text(schema(args.tables, args.views, args.functions) if args.tables else "SELECT;\n")
        sql.chmod(0o644)
        sql.parent.chmod(0o755)
        started = time.perf_counter()
        server._run([_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(server.socket_dir),
                     "-p", str(server.port), "-U", SUPERUSER, "-d", "appdb", "-f", str(sql)])
        print(f"generated in {time.perf_counter() - started:.0f}s")
        views = ViewDependencies()
        base = load_snapshot().settings
        with psycopg.connect(server.dsn(), autocommit=True, prepare_threshold=None) as conn:
            previous = None
            for n in range(args.loads):
                if args.change and n:
                    conn.execute(f"CREATE TABLE bench_new_{n} (id int PRIMARY KEY, name text)")
                t0 = time.perf_counter()
                rows = read_rows(conn, views=views)
                t1 = time.perf_counter()
                catalog = build_catalog(rows, source="live", complete=True, base_settings=base)  # noqa: F841 (alive while measured)
                t2 = time.perf_counter()
                print(f"load {n}: {t2 - t0:.3f}s (reading {t1 - t0:.3f}s, {views.last_read} views' trees; "
                      f"building {t2 - t1:.3f}s): {len(catalog.relations)} relations, {len(catalog.functions)} "
                      f"functions, {len(rows.dependencies)} view dependencies")
                if previous is not None:
                    t3 = time.perf_counter()
                    catalog = build_catalog(rows, source="live", complete=True, base_settings=base, previous=previous)
                    print(f"        building from the previous load's parts: {time.perf_counter() - t3:.3f}s")
                previous = (rows, catalog)
            del catalog
            tracemalloc.start()  # slows everything down: only for the size, after the timings
            catalog = build_catalog(rows, source="live", complete=True, base_settings=base)  # noqa: F841 (alive while measured)
            print(f"the Catalog takes {tracemalloc.get_traced_memory()[0] / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
