#!/usr/bin/env python3
"""Instructions per statement of a running pgwarden at one client, counted by callgrind.

What a loaded machine cannot move: pgwarden runs under ``valgrind --tool=callgrind``
(``PYTHONHASHSEED=0``); after 200 statements to warm up, the counters are zeroed, ``pgbench -S
-M simple -c 1 -t 300`` runs and the counters are dumped, then the same with ``-t 1300``: the
difference over the 1,000 statements between the two is the figure, connection set-up and
start-up cancelled out. Configurations, as `bench/pgbench_run` has them: ``pass``
(pass-through), ``rules`` (ten block rules, recording off), ``policy`` (ten rules, records to
stdout, the default); recording's instructions per statement are ``policy`` minus ``rules``.
Under callgrind pgwarden runs ~50x slower, so the 10 ms timer that writes waiting ``result``
records fires far more often relative to statements than at full speed; ``policy500`` sets
``recording.results_delay_ms`` to 500 to keep that ratio about as it is at full speed.

    .venv/bin/python bench/statement_callgrind.py rules policy      # a few minutes each
    .venv/bin/python bench/statement_callgrind.py --out DIR policy  # keep the profiles
    callgrind_annotate --inclusive=yes DIR/policy.cg.PID.2          # the -t 1300 part
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ceiling import setting_up  # noqa: E402
from pgbench_run import pgwardens, servers, settings, workloads  # noqa: E402

CONFIGS = ("pass", "rules", "policy", "policy500")


def _total(profile: Path) -> int:
    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"{profile}: no totals")


def _pgbench(target: workloads.Target, n: int) -> None:
    cmd = [settings.tool("pgbench"), *target.conn_args(), "-n", "-S", "-M", "simple", "-c", "1", "-t", str(n),
           settings.DATABASE]
    done = subprocess.run(cmd, env={**target.env(), "PGCONNECT_TIMEOUT": "300"}, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)


def count(name: str, pg, work: Path, out: Path, jwks: Path, token: str, a: int, b: int) -> float:
    """Instructions per statement of configuration ``name`` between ``-t a`` and ``-t b``."""
    policy = settings.PASS_THROUGH_POLICY if name == "pass" else settings.RULES_POLICY
    recording = {"policy": {}, "policy500": {"results_delay_ms": 500}}.get(name)
    config = pgwardens.write_pgwarden_config(pg, work, name, policy, jwks, recording=recording)
    ready = work / f"{name}.ready"
    svc = servers.Service(name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/{name}.cg.%p",
                                 sys.executable, "-m", "pgwarden", "run", "-c", str(config), "--ready-file",
                                 str(ready)],
                          out / f"{name}.log", out / f"{name}.stdout", cwd=str(HERE.parent),
                          env={**os.environ, "PYTHONHASHSEED": "0"}).start()
    try:
        port = servers.read_ready_port(svc, ready, timeout_s=600)
        target = workloads.Target(name, "127.0.0.1", port, settings.BENCH_SUBJECT, token)
        _pgbench(target, 200)
        for n in (a, b):
            subprocess.run(["callgrind_control", "-z", str(svc.pid)], check=True, capture_output=True)
            _pgbench(target, n)
            subprocess.run(["callgrind_control", "-d", f"t{n}", str(svc.pid)], check=True, capture_output=True)
    finally:
        svc.stop()
    totals = {}
    for profile in out.glob(f"{name}.cg.{svc.pid}.*"):
        found = re.search(r"^desc: Trigger: dump (t\d+)$", profile.read_text(errors="replace")[:4000],
                          re.MULTILINE)
        if found:
            totals[found.group(1)] = _total(profile)
    return (totals[f"t{b}"] - totals[f"t{a}"]) / (b - a)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", choices=CONFIGS)
    p.add_argument("--out", type=Path, help="keep the profiles and logs here (default: a temporary directory)")
    p.add_argument("--short", type=int, default=300)
    p.add_argument("--long", type=int, default=1300)
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work, pg, _, jwks, token = setting_up(stack, "pgwarden-statement-callgrind-")
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callgrind-", dir=work)))
        out.mkdir(parents=True, exist_ok=True)
        for name in args.configs:
            figure = count(name, pg, work, out, jwks, token, args.short, args.long)
            print(f"{name}: {figure:,.0f} instructions per statement (-t {args.short} to -t {args.long})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
