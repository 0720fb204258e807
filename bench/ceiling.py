#!/usr/bin/env python3
"""How close to direct any Python proxy gets here: direct, a bare forwarder, pgwarden, in rounds.

`bench/forwarder.py` forwards bytes on pgwarden's own reactor without reading
them. Its ratio to direct is the ceiling for a proxy written like pgwarden
(CPython, Twisted, one process) on this machine: what pgwarden's targets ask
beyond it cannot come from pgwarden's own work getting cheaper. The three run
in alternating order (direct, forwarder, pgwarden; then rotated) for several
rounds of short pgbench runs, select-only, for each protocol asked for;
pgwarden runs pass-through (one policy, recording off), as in `run.py`.

    .venv/bin/python bench/ceiling.py                        # simple and prepared, 3 rounds of 8 s
    .venv/bin/python bench/ceiling.py --mode prepared --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402
from ab import process_cpu  # noqa: E402

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

HERE = Path(__file__).resolve().parent


def start_forwarder(pg, work: Path, stack: contextlib.ExitStack) -> tuple[bench.Service, int]:
    ready = work / "forwarder.ready"
    svc = bench.Service("forwarder", [sys.executable, str(HERE / "forwarder.py"), "0", pg.host, str(pg.port),
                                      "--ready-file", str(ready)], work / "forwarder.log").start()
    stack.callback(svc.stop)
    return svc, bench.read_ready_port(svc, ready)


def one_run(target: bench.Target, pid: int | None, mode: str, duration: int) -> dict:
    cmd = [bench.tool("pgbench"), "-n", "-S", "-M", mode, "-c", str(bench.CLIENTS), "-j", str(bench.THREADS),
           "-T", str(duration), *target.conn_args(), bench.DATABASE]
    before = process_cpu(pid) if pid else (0.0, 0.0)
    done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True)
    after = process_cpu(pid) if pid else (0.0, 0.0)
    result = bench.RunResult(target.name)
    bench.parse_pgbench(done.stdout, result)
    if not result.tps:
        raise RuntimeError(f"{target.name}: pgbench failed:\n{done.stdout}\n{done.stderr}")
    cpu = sum(after) - sum(before)
    return {"tps": result.tps, "cpu_us": 1e6 * cpu / (result.tps * duration) if pid else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", action="append", choices=("simple", "extended", "prepared"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds per run")
    args = p.parse_args(argv)
    modes = args.mode or ["simple", "prepared"]
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgwarden-ceiling-")))
        pg = bench.start_postgres(stack)
        direct = bench.Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD)
        bench.init_pgbench_data(direct)
        jwks, token = bench.mint_bench_token(work)
        pgwarden = bench.PgwardenRunner(
            "pgwarden", bench.write_pgwarden_config(pg, work, "pgwarden", bench.PASS_THROUGH_POLICY, jwks),
            work, token, stack)
        forwarder_svc, port = start_forwarder(pg, work, stack)
        targets = {
            "direct": (direct, None),
            "forwarder": (bench.Target("forwarder", "127.0.0.1", port, APP_USER, APP_PASSWORD), forwarder_svc.pid),
            "pgwarden": (pgwarden.target, pgwarden.service.pid),
        }
        names = list(targets)
        for mode in modes:
            rounds = []
            for r in range(args.rounds):
                order = names[r % 3:] + names[:r % 3]
                got = {}
                for name in order:
                    bench.reset_tables(pg)
                    target, pid = targets[name]
                    got[name] = one_run(target, pid, mode, args.duration)
                rounds.append(got)
                print(f"{mode} round {r + 1}: " + " | ".join(
                    f"{n} {got[n]['tps']:8,.0f} TPS" + (f" {got[n]['cpu_us']:4.0f} µs/tx" if got[n]["cpu_us"] else "")
                    for n in names) + f" | forwarder/direct {got['forwarder']['tps'] / got['direct']['tps']:.2f} "
                    f"pgwarden/direct {got['pgwarden']['tps'] / got['direct']['tps']:.2f}", flush=True)
            fwd = statistics.median(g["forwarder"]["tps"] / g["direct"]["tps"] for g in rounds)
            pgw = statistics.median(g["pgwarden"]["tps"] / g["direct"]["tps"] for g in rounds)
            fwd_cpu = statistics.median(g["forwarder"]["cpu_us"] for g in rounds)
            pgw_cpu = statistics.median(g["pgwarden"]["cpu_us"] for g in rounds)
            print(f"select-only {mode}, {args.rounds} rounds of {args.duration} s (medians): forwarder/direct "
                  f"{fwd:.2f} ({fwd_cpu:.0f} µs CPU per transaction), pgwarden/direct {pgw:.2f} "
                  f"({pgw_cpu:.0f} µs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
