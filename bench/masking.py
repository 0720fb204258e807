#!/usr/bin/env python3
"""What masking costs: a 10,000-row, 10-column result through pgwarden, masked and not.

Three pgwardens before one PostgreSQL, in rotating rounds of pgbench runs of the same script
(``SELECT * FROM wide``, 10,000 rows of 10 columns, simple protocol, text results):

* ``pass-through``: a policy with no rules (rows relayed raw);
* ``mask-2``: two columns masked (``ssn`` partial, ``card`` redact): every row is rewritten;
* ``detect``: the same, and detectors (ssn, credit_card, email, phone, jwt, api_key) on every
  text column.

Reported: the median TPS of each over the rounds, and each as a ratio to pass-through (the
issue's targets: mask-2 >= 0.6, detect >= 0.4).

    .venv/bin/python bench/masking.py                  # 3 rounds of 5 s runs
    .venv/bin/python bench/masking.py --rounds 5 --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgbench_run import pgwardens, servers  # noqa: E402
from pgbench_run.settings import DATABASE  # noqa: E402

from pgwarden.testing.postgres import APP_USER  # noqa: E402

ROWS = 10_000
TABLE = f"""
CREATE TABLE wide (id int PRIMARY KEY, name text, email text, ssn text, card text, city text,
                   note text, amount numeric(10, 2), created date, score int);
INSERT INTO wide
SELECT g, 'User ' || g, 'user' || g || '@example.com',
       lpad((g % 899 + 100)::text, 3, '0') || '-' || lpad((g % 89 + 10)::text, 2, '0') || '-'
           || lpad((g % 8999 + 1000)::text, 4, '0'),
       '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0'), 'City ' || (g % 100),
       'a note about order ' || g, (g * 13.37)::numeric(10, 2), date '2020-01-01' + g % 1000, g % 1000
FROM generate_series(1, {ROWS}) g;
"""
SCRIPT = "SELECT * FROM wide;\n"
MASK_RULES = [
    {"name": "ssn", "mask": {"columns": ["public.wide.ssn"], "with": "partial", "keep_last": 4}},
    {"name": "card", "mask": {"columns": ["public.wide.card"], "with": "redact"}},
]
DETECT_RULE = {"name": "detect", "mask": {"detect": ["ssn", "credit_card", "email", "phone", "jwt", "api_key"]}}
TARGETS = {
    "pass-through": {"name": "bench", "default": "allow"},
    "mask-2": {"name": "bench", "default": "allow", "rules": MASK_RULES},
    "detect": {"name": "bench", "default": "allow", "rules": MASK_RULES + [DETECT_RULE]},
}


def pgbench(port: int, token: str, script: Path, duration: int, clients: int) -> float:
    cmd = [servers.tool("pgbench"), "-n", "-M", "simple", "-T", str(duration), "-c", str(clients),
           "-j", str(min(clients, 2)), "-f", str(script), "-h", "127.0.0.1", "-p", str(port), "-U", APP_USER,
           DATABASE]
    done = subprocess.run(cmd, env={**os.environ, "PGPASSWORD": token, "PGSSLMODE": "disable"},
                          capture_output=True, text=True)
    found = re.search(r"tps = ([\d.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per pgbench run")
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pgwarden-mask-bench-",
                                                                      dir=os.environ.get("TMPDIR")) as tmp:
        workdir = Path(tmp)
        pg = servers.start_postgres(stack)
        pg.psql(TABLE, DATABASE)
        jwks, token = pgwardens.mint_bench_token(workdir)
        ports = {}
        for name, policy in TARGETS.items():
            config = pgwardens.write_pgwarden_config(pg, workdir, name, policy, jwks)
            _, ports[name] = pgwardens.start_pgwarden(name, config, workdir, stack)
        script = workdir / "wide.sql"
        script.write_text(SCRIPT)
        tps: dict[str, list[float]] = {name: [] for name in TARGETS}
        names = list(TARGETS)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                tps[name].append(pgbench(ports[name], token, script, args.duration, args.clients))
            print(f"round {r + 1}: " + ", ".join(f"{n} {tps[n][-1]:.1f}" for n in names), flush=True)
        base = statistics.median(tps["pass-through"])
        print(f"\n{ROWS:,}-row, 10-column result, {args.rounds} rounds of {args.duration} s, "
              f"{args.clients} clients (median TPS; ratio to pass-through pgwarden)")
        for name in names:
            median = statistics.median(tps[name])
            print(f"  {name:14} {median:8.1f} tps   {median / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
