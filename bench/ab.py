#!/usr/bin/env python3
"""Two pgwardens in interleaved runs, A B B A ...: what recording costs, or what a code change did.

Why a second tool beside `run.py`: on this kind of machine two pgbench runs
of the same target minutes apart differ by 20-40%, so one run per target (what
`run.py` does for its table) cannot resolve a 10% difference. Here two
pgwardens run in alternating order for several rounds of short runs:

* by default, both with the same ten-rule policy, one recording every
  statement to a file (`run.py`'s `(recording)` pgwarden) and one with
  recording off: what recording costs;
* with ``--approve``, the ten-rule policy against the same policy with an
  ``approve`` rule on writes (docs/approvals.md): what an approval rule costs
  the statements that need none (select-only: all of pgbench's);
* with ``--against REV``, this working tree's pgwarden and the one of git
  revision REV (checked out into a temporary worktree), both with the same
  configuration (``--config``): what the change since REV did.

What is reported per round and as the median:

* TPS of each, and the second one's TPS as a ratio to the first's;
* pgwarden's CPU per transaction (user and system, from /proc/PID/stat), which
  moves far less than TPS between runs: the cost in pgwarden's own time;
* the whole machine's idle share during the run (/proc/stat): idle CPU while
  pgwarden is below one core means pgwarden's single thread is what bounds TPS,
  so its added CPU per statement costs TPS almost one for one.

    .venv/bin/python bench/ab.py                       # select-only simple, 5 rounds of 8 s
    .venv/bin/python bench/ab.py --mode prepared --rounds 7 --duration 10
    .venv/bin/python bench/ab.py --against HEAD~3 --config rules
    .venv/bin/python bench/ab.py --against-tree ../base --config pass --clients 1   # ../base: built compiled
    .venv/bin/python bench/ab.py --approve --rounds 6 --duration 5
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

# bench/run.py's package: one way of starting everything
from pgbench_run import REPO, pgwardens, servers, settings, workloads  # noqa: E402

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


def process_cpu(pid: int) -> tuple[float, float]:
    """User and system seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def machine_cpu() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:1 + len(CPU_FIELDS)]]


def one_run(name: str, runner: pgwardens.PgwardenRunner, mode: str, duration: int,
            clients: int = settings.CLIENTS, script: Path | None = None) -> dict:
    what = ["-f", str(script)] if script is not None else ["-S"]
    cmd = [settings.tool("pgbench"), "-n", *what, "-M", mode, "-c", str(clients),
           "-j", str(min(clients, settings.THREADS)),
           "-T", str(duration), *runner.target.conn_args(), settings.DATABASE]
    pid = runner.service.pid
    user0, sys0 = process_cpu(pid)
    machine0 = machine_cpu()
    done = subprocess.run(cmd, env=runner.target.env(), capture_output=True, text=True)
    user1, sys1 = process_cpu(pid)
    machine1 = machine_cpu()
    result = workloads.RunResult(name)
    workloads.parse_pgbench(done.stdout, result)
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


CONFIGS = ("pass", "rules", "recording")


def write_config(kind: str, name: str, pg, work: Path, jwks: Path) -> Path:
    """One of the configurations `run.py` measures: pass-through, ten rules, ten rules + file sink."""
    if kind == "pass":
        return pgwardens.write_pgwarden_config(pg, work, name, settings.PASS_THROUGH_POLICY, jwks)
    if kind == "rules":
        return pgwardens.write_pgwarden_config(pg, work, name, settings.RULES_POLICY, jwks)
    if kind == "approve":
        approve = {"name": "writes", "approve": {"statements": ["insert", "update", "delete"]},
                   "reason": "writes need a human"}
        policy = dict(settings.RULES_POLICY, rules=[*settings.RULES_POLICY["rules"], approve])
        return pgwardens.write_pgwarden_config(pg, work, name, policy, jwks)
    sink = {"file": str(work / f"{name}-{settings.RECORDS_FILE}"), "keep": settings.RECORDS_KEEP}
    return pgwardens.write_pgwarden_config(pg, work, name, settings.RULES_POLICY, jwks,
                                           recording={"sinks": [sink]})


@contextlib.contextmanager
def worktree(rev: str):
    """A checkout of ``rev`` in a temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pgwarden-ab-tree-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                       capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("simple", "extended", "prepared"), default="simple")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=8, help="seconds per run")
    p.add_argument("--against", metavar="REV",
                   help="compare this working tree with git revision REV instead of recording on and off")
    p.add_argument("--against-tree", metavar="PATH", type=Path,
                   help="as --against, with a checkout already there: built with `make compiled`, its compiled "
                        "hot path runs (a --against worktree runs pure Python)")
    p.add_argument("--clients", type=int, default=settings.CLIENTS)
    p.add_argument("--rows", action="store_true",
                   help="run.py's rows-10k workload (a 10,000-row result per transaction) instead of select-only")
    p.add_argument("--approve", action="store_true",
                   help="the ten-rule policy against the same with an approve rule on writes")
    p.add_argument("--config", choices=CONFIGS, default="rules",
                   help="with --against: the configuration both run (default: the ten-rule policy)")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgwarden-ab-")))
        pg = servers.start_postgres(stack)
        servers.init_pgbench_data(workloads.Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD))
        jwks, token = pgwardens.mint_bench_token(work)
        if args.against or args.against_tree:
            tree = args.against_tree.resolve() if args.against_tree else stack.enter_context(worktree(args.against))
            first, second = str(args.against or args.against_tree), "working tree"
            runners = {
                first: pgwardens.PgwardenRunner("base", write_config(args.config, "base", pg, work, jwks),
                                            work, token, stack, tree=tree),
                second: pgwardens.PgwardenRunner("work", write_config(args.config, "work", pg, work, jwks),
                                             work, token, stack),
            }
            what = f"{args.config} configuration, the working tree against {first}"
        elif args.approve:
            first, second = "rules", "rules+approve"
            runners = {
                first: pgwardens.PgwardenRunner("rules", write_config("rules", "rules", pg, work, jwks),
                                                work, token, stack),
                second: pgwardens.PgwardenRunner("approve", write_config("approve", "approve", pg, work, jwks),
                                                 work, token, stack),
            }
            what = "ten-rule policy, with an approve rule on writes against without"
        else:
            first, second = "off", "recording"
            runners = {
                first: pgwardens.PgwardenRunner("off", write_config("rules", "off", pg, work, jwks),
                                                work, token, stack),
                second: pgwardens.PgwardenRunner("recording",
                                                 write_config("recording", "recording", pg, work, jwks),
                                                 work, token, stack),
            }
            what = "ten-rule policy, recording against recording off"
        script = None
        if args.rows:
            script = work / "rows-10k.sql"
            script.write_text(workloads.ROWS_SCRIPT)
        rounds = []
        for r in range(args.rounds):
            order = [first, second] if r % 2 == 0 else [second, first]
            got = {}
            for name in order:
                servers.reset_tables(pg)
                got[name] = one_run(name, runners[name], args.mode, args.duration, args.clients, script)
            rounds.append(got)
            a, b = got[first], got[second]
            print(f"round {r + 1}: {first} {a['tps']:8,.0f} TPS {a['user_us']:5.0f}+{a['sys_us']:3.0f} µs/tx "
                  f"idle {a['machine_idle']:4.0%} | {second} {b['tps']:8,.0f} TPS "
                  f"{b['user_us']:5.0f}+{b['sys_us']:3.0f} µs/tx idle {b['machine_idle']:4.0%} | "
                  f"ratio {b['tps'] / a['tps']:.2f}", flush=True)
    ratios = [g[second]["tps"] / g[first]["tps"] for g in rounds]
    added = [(g[second]["user_us"] + g[second]["sys_us"]) - (g[first]["user_us"] + g[first]["sys_us"])
             for g in rounds]
    base = statistics.median(g[first]["user_us"] + g[first]["sys_us"] for g in rounds)
    workload = "rows-10k" if args.rows else "select-only"
    print(f"{workload} {args.mode}, {args.clients} clients, {args.rounds} rounds of {args.duration} s, {what}: "
          f"TPS ratio {statistics.median(ratios):.2f} (median; rounds {min(ratios):.2f}-{max(ratios):.2f}), "
          f"pgwarden CPU {statistics.median(added):+.0f} µs per transaction on {base:.0f} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
