#!/usr/bin/env python3
"""What an MCP ``query`` call adds to the same statement on the wire, at one client (p50, p99).

One throwaway PostgreSQL and one `pgwarden run` with ``mcp:``. The same statement, one at a time,
interleaved so that drift hits both alike:

* **wire**: psycopg over pgwarden's PostgreSQL port, extended protocol (``prepare=False`` with a
  parameter: Parse/Bind/Describe/Execute/Sync each time, as the MCP call sends it);
* **mcp**: a ``tools/call`` of ``query`` over one keep-alive HTTP connection (httpx2), in the
  stateless revision (no session): HTTP, JSON-RPC, the bearer check, the internal session's
  round trip and the JSON of the result;
* **http**: a ``tools/call`` of ``whoami`` the same way, which touches no database: what HTTP,
  JSON-RPC and the bearer check cost alone (the rest of mcp − wire is the internal session's).

Reported: the median and p99 of each, mcp − wire, and that against issue 22's target (a
``query`` call adds at most 1 ms at p50 and p99: "met" / "NOT met", as `bench/run.py`'s table
says it). Wall-clock times on whatever machine runs it (`make bench` runs it with ``--count
500``; not part of `make test`; on a loaded machine the figures are noisy: run it idle).

    .venv/bin/python bench/mcp_query.py                 # 500 of each
    .venv/bin/python bench/mcp_query.py --count 2000 --sql "SELECT * FROM t WHERE id = \\$1"
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import psycopg
import yaml

from pgwarden.testing.endpoint import AUDIENCE, ISSUER
from pgwarden.testing.postgres import TempPostgres, free_port
from pgwarden.testing.pytest_plugin import base_config
from pgwarden.testing.running import launch
from pgwarden.tokens import generate_key, mint

MODERN = "2026-07-28"
#: issue 22: what a ``query`` call may add to the same statement on the wire (ms)
TARGET_MS = 1.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--sql", default="SELECT id, name FROM bench_mcp WHERE id = $1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgwarden-bench-mcp-", dir=Path.cwd()) as tmp:
        work = Path(tmp)
        pg = TempPostgres()
        pg.start()
        try:
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute("CREATE TABLE bench_mcp (id int PRIMARY KEY, name text)")
                conn.execute("INSERT INTO bench_mcp SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
            private, jwks = generate_key(work / "keys")
            keys = {"private": private, "jwks": jwks}
            port = free_port()
            url = f"http://127.0.0.1:{port}/mcp"
            doc = base_config(pg, keys, work, mcp={"url": url, "port": port},
                              policies=[{"name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow"}])
            config = work / "pgwarden.yaml"
            config.write_text(yaml.safe_dump(doc))
            running = launch(config, keys, work / "run")
            try:
                return measure(running, url, private, args)
            finally:
                running.stop()
        finally:
            pg.stop()


def measure(running, url: str, private: Path, args) -> int:
    wire_token = mint(private, subject="bench", issuer=ISSUER, audience=AUDIENCE, groups=["ai-agents"])
    mcp_token = mint(private, subject="bench", issuer=ISSUER, audience=url, groups=["ai-agents"])
    headers = {"Authorization": f"Bearer {mcp_token}", "Content-Type": "application/json",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "query"}
    wire: list[float] = []
    mcp: list[float] = []
    http_only: list[float] = []
    wire_sql = re.sub(r"\$\d+", "%s", args.sql)  # psycopg's placeholders; it sends $1 to the server
    with psycopg.connect(running.dsn(wire_token), autocommit=True) as conn, \
            httpx2.Client(headers=headers, timeout=30) as http:
        for i in range(args.count + 20):  # the first 20 of each warm up (sessions, caches)
            value = i % 1000 + 1
            started = time.perf_counter()
            conn.execute(wire_sql, (value,), prepare=False).fetchall()
            wire_s = time.perf_counter() - started
            body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "query", "arguments": {"sql": args.sql, "params": [value]},
                "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                          "io.modelcontextprotocol/clientCapabilities": {}}}})
            started = time.perf_counter()
            r = http.post(url, content=body)
            mcp_s = time.perf_counter() - started
            if r.status_code != 200 or r.json()["result"]["isError"]:
                print(f"the MCP call failed: {r.text}", file=sys.stderr)
                return 1
            who = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "whoami", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                                              "io.modelcontextprotocol/clientCapabilities": {}}}})
            started = time.perf_counter()
            http.post(url, content=who, headers={"Mcp-Name": "whoami"})
            http_s = time.perf_counter() - started
            if i >= 20:
                wire.append(wire_s * 1000)
                mcp.append(mcp_s * 1000)
                http_only.append(http_s * 1000)
    print(f"{args.count} calls each, one client, wall clock (ms):")
    for name, values in (("wire", wire), ("mcp", mcp), ("http", http_only)):
        print(f"  {name:5} p50 {statistics.median(values):7.3f}   p99 {percentile(values, 99):7.3f}")
    added_p50 = statistics.median(mcp) - statistics.median(wire)
    added_p99 = percentile(mcp, 99) - percentile(wire, 99)
    print(f"  added p50 {added_p50:7.3f}   p99 {added_p99:7.3f}")
    print(f"MCP query call over the wire path, added latency 1 client: p50 {added_p50:+.3f} ms, "
          f"p99 {added_p99:+.3f} ms   target <= {TARGET_MS:g} ms  "
          f"{verdict(added_p50)} (p50), {verdict(added_p99)} (p99)")
    return 0


def verdict(added_ms: float) -> str:
    return "met" if added_ms <= TARGET_MS else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
