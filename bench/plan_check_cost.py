"""What masking's plan check (docs/masking.md, "The server's plan") costs a statement at one client.

One pgwarden before round three's test database with round five's demo-like policy (masked
columns of ``users``); a psycopg session sends 300 distinct statements on ``users`` a round
(``SELECT id, name FROM users WHERE id = <n>``: each a new text, so each asks the server), three
rounds with the check and three with it withheld (the session is not given the plan service);
the median per statement of each round, and how many plans were asked. Run as pytest (it uses
the test suite's fixtures: a throwaway PostgreSQL, pgwarden in-process):

    .venv/bin/python -m pytest -q -s -p no:cacheprovider bench/plan_check_cost.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from test_mask_round3 import DB, rtdb, start  # noqa: E402, F401 (rtdb: a fixture)
from test_mask_round5 import DEMO_LIKE  # noqa: E402


def _median_us(conn: psycopg.Connection, n: int, tag: str) -> float:
    took = []
    for i in range(n):
        began = time.perf_counter()
        conn.execute(f"SELECT id, name FROM users WHERE id = {i} /* {tag} */").fetchall()
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1e6


def test_plan_check_cost(rtdb, make_pgwarden, tmp_path):  # noqa: F811 (rtdb: the fixture)
    import pgwarden.proxy.client as client
    from pgwarden.session import SERVER_PLANS, StoreKey

    warden = start(make_pgwarden, tmp_path, DEMO_LIKE)
    dsn = f"host={warden.host} port={warden.port} user=agent dbname={DB} password={warden.token()} sslmode=disable"
    figures = {}
    for label in ("with the check", "without it"):
        withheld = label == "without it"
        if withheld:  # the session is given the plan service under a key the plugin does not read
            client.SERVER_PLANS = StoreKey("bench.withheld")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                _median_us(conn, 50, f"warm {label}")
                asked = warden.app.plans.asked
                figures[label] = ([round(_median_us(conn, 300, f"{label} {r}")) for r in range(3)],
                                  warden.app.plans.asked - asked)
        finally:
            client.SERVER_PLANS = SERVER_PLANS
    for label, (medians, asked) in figures.items():
        print(f"\n{label}: median µs per statement by round {medians}; plans asked {asked}")
    assert figures["with the check"][1] == 900 and figures["without it"][1] == 0
