#!/usr/bin/env python3
"""What recording costs, from interleaved runs: pgwarden with and without a file sink, A B B A ...

Why a second tool beside `run.py`: on this kind of machine two pgbench runs
of the same target minutes apart differ by 20-40%, so one run per target (what
`run.py` does for its table) cannot resolve a 10% difference. Here two
pgwardens with the same ten-rule policy, one recording every statement to a
file (`run.py`'s `(recording)` pgwarden) and one with recording off, run in
alternating order for several rounds of short runs, and what is reported per
round and as the median is:

* TPS of each, and the recording one's TPS as a ratio to the other's;
* pgwarden's CPU per transaction (user and system, from /proc/PID/stat), which
  moves far less than TPS between runs: the cost of recording in pgwarden's own
  time;
* the whole machine's idle share during the run (/proc/stat): idle CPU while
  pgwarden is below one core means pgwarden's single thread is what bounds TPS,
  so its added CPU per statement costs TPS almost one for one.

    .venv/bin/python bench/ab.py                       # select-only simple, 5 rounds of 8 s
    .venv/bin/python bench/ab.py --mode prepared --rounds 7 --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py: one way of starting everything)

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


def process_cpu(pid: int) -> tuple[float, float]:
    """User and system seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def machine_cpu() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:1 + len(CPU_FIELDS)]]


def one_run(name: str, runner: bench.PgwardenRunner, mode: str, duration: int) -> dict:
    cmd = [bench.tool("pgbench"), "-n", "-S", "-M", mode, "-c", str(bench.CLIENTS), "-j", str(bench.THREADS),
           "-T", str(duration), *runner.target.conn_args(), bench.DATABASE]
    pid = runner.service.pid
    user0, sys0 = process_cpu(pid)
    machine0 = machine_cpu()
    done = subprocess.run(cmd, env=runner.target.env(), capture_output=True, text=True)
    user1, sys1 = process_cpu(pid)
    machine1 = machine_cpu()
    result = bench.RunResult(name)
    bench.parse_pgbench(done.stdout, result)
    if not result.tps:
        raise RuntimeError(f"{name}: pgbench failed:\n{done.stdout}\n{done.stderr}")
    transactions = result.tps * duration
    spent = [b - a for a, b in zip(machine0, machine1)]
    return {
        "tps": result.tps,
        "user_us": 1e6 * (user1 - user0) / transactions,
        "sys_us": 1e6 * (sys1 - sys0) / transactions,
        "machine_idle": spent[CPU_FIELDS.index("idle")] / max(1, sum(spent)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("simple", "prepared"), default="simple")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=8, help="seconds per run")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgwarden-ab-")))
        pg = bench.start_postgres(stack)
        bench.init_pgbench_data(bench.Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD))
        jwks, token = bench.mint_bench_token(work)
        sink = {"file": str(work / bench.RECORDS_FILE), "keep": bench.RECORDS_KEEP}
        runners = {
            "off": bench.PgwardenRunner(
                "off", bench.write_pgwarden_config(pg, work, "off", bench.RULES_POLICY, jwks), work, token, stack),
            "recording": bench.PgwardenRunner(
                "recording", bench.write_pgwarden_config(pg, work, "recording", bench.RULES_POLICY, jwks,
                                                         recording={"sinks": [sink]}), work, token, stack),
        }
        rounds = []
        for r in range(args.rounds):
            order = ["off", "recording"] if r % 2 == 0 else ["recording", "off"]
            got = {}
            for name in order:
                bench.reset_tables(pg)
                got[name] = one_run(name, runners[name], args.mode, args.duration)
            rounds.append(got)
            off, rec = got["off"], got["recording"]
            print(f"round {r + 1}: off {off['tps']:8,.0f} TPS {off['user_us']:5.0f}+{off['sys_us']:3.0f} µs/tx "
                  f"idle {off['machine_idle']:4.0%} | recording {rec['tps']:8,.0f} TPS "
                  f"{rec['user_us']:5.0f}+{rec['sys_us']:3.0f} µs/tx idle {rec['machine_idle']:4.0%} | "
                  f"ratio {rec['tps'] / off['tps']:.2f}", flush=True)
    ratios = [g["recording"]["tps"] / g["off"]["tps"] for g in rounds]
    added = [(g["recording"]["user_us"] + g["recording"]["sys_us"]) - (g["off"]["user_us"] + g["off"]["sys_us"])
             for g in rounds]
    base = statistics.median(g["off"]["user_us"] + g["off"]["sys_us"] for g in rounds)
    print(f"select-only {args.mode}, {args.rounds} rounds of {args.duration} s, ten-rule policy: recording "
          f"costs {1 - statistics.median(ratios):.0%} of TPS (median; rounds {min(ratios):.2f}-{max(ratios):.2f}), "
          f"pgwarden CPU +{statistics.median(added):.0f} µs per transaction on {base:.0f} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
