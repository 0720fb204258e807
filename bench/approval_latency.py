#!/usr/bin/env python3
"""How long a held statement takes to reach the server once approved, with the postgres store (p50, p99).

A fleet in miniature, on one machine: a throwaway PostgreSQL holding both the application's
database and the store's (a database of its own, as an operator would give it), and two
`pgwarden run` processes sharing the store: the agent's statements are held on the first,
the approver decides through the other's approvals API, as from an inbox. For each of
``--count`` decisions (one at a time):

1. the agent sends ``INSERT ... VALUES (<i>, clock_timestamp())`` through the first pgwarden,
   which holds it;
2. once the request shows in the second pgwarden's API, the approver's POST .../approve is
   sent; ``t0`` is taken just before it;
3. the server's ``clock_timestamp()`` of the row is when the statement ran there.

Reported: decision → statement on the server (the row's time − ``t0``: the API call, the
decision's transaction, the NOTIFY, the holder's read of the request, the statement's way
to the server), and the approve call's own round trip. Same machine, same clock.

    .venv/bin/python bench/approval_latency.py                # 50 decisions
    .venv/bin/python bench/approval_latency.py --count 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import yaml

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres
from pgwarden.testing.pytest_plugin import base_config
from pgwarden.testing.running import launch
from pgwarden.testing.waiting import wait_until
from pgwarden.tokens import generate_key

POLICY = {"name": "agents", "default": "allow", "rules": [
    {"name": "writes", "approve": {"statements": ["insert"]}, "reason": "writes need a human"}]}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def api(port: int, token: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/approvals/api{path}",
                                                       data=data, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="decisions measured (default 50)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgwarden-approval-bench-", dir=Path.cwd()) as tmp, TempPostgres() as pg:
        work = Path(tmp)
        pg.psql("CREATE ROLE apstore LOGIN PASSWORD 'apstore-bench-pw'")
        pg.psql("CREATE DATABASE approvals OWNER apstore")
        pg.psql("CREATE TABLE bench_held (i int PRIMARY KEY, ran_at timestamptz); GRANT ALL ON bench_held TO PUBLIC",
                "appdb")
        (work / "store-password").write_text("apstore-bench-pw\n")
        private, jwks = generate_key(work)
        keys = {"private": private, "jwks": jwks}
        approvals = {"store": "postgres", "approver_groups": ["dba"], "timeout_s": 60, "preview": False,
                     "postgres": {"dsn": f"host={pg.host} port={pg.port} dbname=approvals user=apstore",
                                  "password_file": str(work / "store-password")}}
        sidecars = []
        try:
            for name in ("holder", "inbox"):
                directory = work / name
                directory.mkdir()
                doc = base_config(pg, keys, directory, approvals=approvals, policies=[POLICY],
                                  recording={"sinks": []}, plugins={"disable": ["recording"]})
                (directory / "pgwarden.yaml").write_text(yaml.safe_dump(doc))
                sidecars.append(launch(directory / "pgwarden.yaml", keys, directory))
            holder, inbox = sidecars
            approver = inbox.token("ann", ["dba"])
            to_server: list[float] = []
            round_trips: list[float] = []
            with psycopg.connect(holder.dsn(), autocommit=True) as agent, \
                    psycopg.connect(pg.dsn(APP_USER, APP_PASSWORD, "appdb"), autocommit=True) as direct:
                for i in range(args.count):
                    errors: list[BaseException] = []

                    def send(i: int = i, errors: list[BaseException] = errors) -> None:
                        try:
                            agent.execute("INSERT INTO bench_held VALUES (%s, clock_timestamp())", [i])
                        except BaseException as e:  # noqa: BLE001 - reported below
                            errors.append(e)

                    thread = threading.Thread(target=send)
                    thread.start()
                    pending = wait_until(10, lambda: api(inbox.admin_port, approver, "/requests")["requests"],
                                         "the request in the inbox", until=lambda rs: len(rs) == 1)
                    t0 = time.time()
                    api(inbox.admin_port, approver, f"/requests/{pending[0]['id']}/approve", {"reason": "bench"})
                    round_trips.append(time.time() - t0)
                    thread.join(10)
                    if errors or thread.is_alive():
                        raise SystemExit(f"decision {i}: the statement did not run: {errors or 'still held'}")
                    row = direct.execute("SELECT extract(epoch FROM ran_at) FROM bench_held WHERE i = %s",
                                         [i]).fetchone()
                    assert row is not None
                    to_server.append(float(row[0]) - t0)
        finally:
            for sidecar in sidecars:
                sidecar.stop()
    print(f"{args.count} decisions, postgres store, two pgwarden processes (held on one, approved through the other)")
    for label, values in (("decision -> statement on the server", to_server),
                          ("approve API call (round trip)", round_trips)):
        ms = [v * 1000 for v in values]
        print(f"{label:38} p50 {percentile(ms, 50):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   "
              f"max {max(ms):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
