#!/usr/bin/env python3
"""Per-statement decision cost, without a database: analysis (cache miss) and cached verdicts.

Prints the p50/p99 of: analysing a typical statement the first time (parse and
walk), and the whole decision for a statement already in the cache, with a
ten-rule policy like `pgwarden demo`'s (its block rules: the rules of the
kinds this release interprets; bench/README.md lists them).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgwarden.config import _CONVERTER, Config  # noqa: E402
from pgwarden.identity import Identity  # noqa: E402
from pgwarden.plugins import PluginHost  # noqa: E402
from pgwarden.policy import policies_for  # noqa: E402
from pgwarden.session import Session  # noqa: E402
from pgwarden.sql.analysis import analyze_sql  # noqa: E402
from pgwarden.sql.cache import StatementCache  # noqa: E402

RULES = [
    {"name": "no-ddl", "block": {"statements": ["ddl", "truncate", "grant", "role", "system"]}},
    {"name": "no-files", "block": {"functions": ["pg_read_file", "lo_export", "dblink"]}},
    {"name": "no-programs", "block": {"statements": ["copy_program", "copy_file", "do", "unknown"]}},
    {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
    {"name": "secrets", "block": {"tables": ["vault.*"]}},
    {"name": "no-locks", "block": {"statements": ["lock"]}},
    {"name": "no-listen", "block": {"statements": ["listen"]}},
    {"name": "no-maintenance", "block": {"statements": ["maintenance"]}},
    {"name": "no-call", "block": {"statements": ["call"]}},
    {"name": "audit-tables", "block": {"tables": ["audit.*"], "statements": ["insert", "update", "delete"]}},
]
TYPICAL = "SELECT o.id, o.amount FROM orders o JOIN users u ON u.id = o.user_id WHERE u.id = {} ORDER BY o.id LIMIT 20"


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> int:
    miss = []
    for i in range(3000):
        sql = TYPICAL.format(i)
        t = time.perf_counter()
        analyze_sql(sql)
        miss.append((time.perf_counter() - t) * 1e6)
    doc = {
        "upstream": {"host": "db", "database": "appdb", "user": "app"},
        "auth": {"jwt": {"issuer": "i", "audience": "pgwarden", "public_key_file": "/dev/null"}},
        "policies": [{"name": "agents", "rules": RULES}],
    }
    config = _CONVERTER.structure(doc, Config)
    host = PluginHost(config, reactor=None)
    config = host.config  # its rules read by the kinds the plugins declare
    identity = Identity("bench", frozenset({"ai-agents"}))
    session = Session("bench", identity, "appdb", policies=policies_for(identity, config.policies))
    cache = StatementCache()
    sql = TYPICAL.format(1)
    host.check(cache.get(sql), session)  # warm: analysed once
    hit = []
    for _ in range(20000):
        t = time.perf_counter()
        host.check(cache.get(sql), session)
        hit.append((time.perf_counter() - t) * 1e6)
    # The same statement with another constant each time (pgbench's select-only): shared by
    # normalized text, analysed once.
    shared = []
    for i in range(20000):
        sql = TYPICAL.format(100000 + i)
        t = time.perf_counter()
        host.check(cache.get(sql), session)
        shared.append((time.perf_counter() - t) * 1e6)
    m50, m99 = percentiles(miss)
    h50, h99 = percentiles(hit)
    s50, s99 = percentiles(shared)
    print("Decision cost without a database (10-rule policy):")
    print(f"  analysis, cache miss (typical statement)   p50 {m50:7.1f} µs   p99 {m99:7.1f} µs   (target p50 < 300)")
    print(f"  verdict, statement cached                  p50 {h50:7.1f} µs   p99 {h99:7.1f} µs   (target p50 < 20)")
    print(f"  verdict, new text differing in a constant  p50 {s50:7.1f} µs   p99 {s99:7.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
