#!/usr/bin/env python3
"""Lineage cost per statement, without a database: a miss (parse and trace) and a cached hit.

A catalog of three tables of ten columns each (and the snapshot's built-ins) stands in for a
live one; the statement is a three-table join with an expression, a filter and an ORDER BY.
Prints the p50/p99 in microseconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgwarden.catalog import builtin_catalog  # noqa: E402
from pgwarden.catalog.model import Catalog, RelationFacts  # noqa: E402
from pgwarden.sql.cache import StatementCache  # noqa: E402
from pgwarden.sql.context import SqlContext  # noqa: E402
from pgwarden.sql.lineage import lineage_of  # noqa: E402

JOIN = ("SELECT u.name, u.ssn AS tax, o.id, o.amount * 2 AS doubled, lower(p.title) FROM users u "
        "JOIN orders o ON o.user_id = u.id JOIN products p ON p.id = o.product_id "
        "WHERE u.id = {} ORDER BY o.id LIMIT 20")


def catalog() -> Catalog:
    base = builtin_catalog()
    tables = {"users": ("id", "name", "ssn", "email", "card", "phone", "street", "city", "zip", "created"),
              "orders": ("id", "user_id", "product_id", "amount", "note", "status", "created", "a", "b", "c"),
              "products": ("id", "title", "price", "sku", "stock", "d", "e", "f", "g", "h")}
    relations = list(base.relations)
    attributes = [(r.oid, [c.name for c in cols], [c.type for c in cols])
                  for r in base.relations for cols in [base.columns_of(r.oid)] if cols is not None]
    for i, (name, cols) in enumerate(tables.items()):
        oid = 20000 + i
        relations.append(RelationFacts(oid, "public", name, "r"))
        attributes.append((oid, list(cols), [25] * len(cols)))
    return Catalog(functions=base.functions, relations=relations, operators=base.operators, types=base.types,
                   attributes=attributes, settings=base.settings, schemas=base.schemas | {"public"},
                   source="bench", complete=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> int:
    ctx = SqlContext(catalog())
    lineage_of(JOIN.format(0), ctx)  # (imports, the snapshot)
    miss = []
    for i in range(2000):
        sql = JOIN.format(i)
        t = time.perf_counter()
        lineage_of(sql, ctx)
        miss.append((time.perf_counter() - t) * 1e6)
    cache = StatementCache()
    _ = cache.get(JOIN.format(1), ctx).lineage
    hit = []
    for _ in range(20000):
        t = time.perf_counter()
        _ = cache.get(JOIN.format(1), ctx).lineage
        hit.append((time.perf_counter() - t) * 1e6)
    for label, samples in (("lineage miss (3-table join)", miss), ("lineage cached (same text)", hit)):
        p50, p99 = percentiles(samples)
        print(f"{label:30} p50 {p50:8.1f} us   p99 {p99:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
