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
    .venv/bin/python bench/ceiling.py --forwarder-processes 1 --forwarder-processes 2   # one against two
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

from ab import process_cpu  # noqa: E402
from pgbench_run import pgwardens, servers, settings, workloads  # noqa: E402

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

HERE = Path(__file__).resolve().parent


def one_run(target: workloads.Target, pids: list[int], mode: str, duration: int) -> dict:
    cmd = [settings.tool("pgbench"), "-n", "-S", "-M", mode, "-c", str(settings.CLIENTS),
           "-j", str(settings.THREADS),
           "-T", str(duration), *target.conn_args(), settings.DATABASE]
    before = sum(sum(process_cpu(pid)) for pid in pids)
    done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True)
    after = sum(sum(process_cpu(pid)) for pid in pids)
    result = workloads.RunResult(target.name)
    workloads.parse_pgbench(done.stdout, result)
    if not result.tps:
        raise RuntimeError(f"{target.name}: pgbench failed:\n{done.stdout}\n{done.stderr}")
    cpu = after - before
    return {"tps": result.tps, "cpu_us": 1e6 * cpu / (result.tps * duration) if pids else None}


def setting_up(stack: contextlib.ExitStack, prefix: str):
    """A temp dir, PostgreSQL with pgbench's data, the direct target, and a JWKS with a token for pgwarden."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    pg = servers.start_postgres(stack)
    direct = workloads.Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD)
    servers.init_pgbench_data(direct)
    jwks, token = pgwardens.mint_bench_token(work)
    return work, pg, direct, jwks, token


def round_arguments(p: argparse.ArgumentParser, rounds: int, duration: int) -> None:
    """The options every rounds script takes: which protocols, how many rounds, how long each run."""
    p.add_argument("--mode", action="append", choices=("simple", "extended", "prepared"))
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--duration", type=int, default=duration, help="seconds per run")


def serve_through(script: str, name: str, config: Path, work: Path, stack: contextlib.ExitStack):
    """`pgwarden run -c config` started through ``script --serve`` (which changes something first);
    the service and its port (0 in the config: its own free one)."""
    ready = work / f"{name}.ready"
    svc = servers.Service(name, [sys.executable, script, "--serve", "run", "-c", str(config), "--ready-file",
                               str(ready)], work / f"{name}.log", cwd=str(HERE.parent)).start()
    stack.callback(svc.stop)
    return svc, servers.read_ready_port(svc, ready)


def compare(pg, targets: dict, modes: list[str], rounds: int, duration: int, title: str = "") -> None:
    """For each mode, rounds of one run of each target in rotating order; each round's line, then
    every target's median ratio to the first target (direct, say), its range and its CPU per transaction.

    ``targets``: name -> (workloads.Target, the pids whose CPU is the target's; none for direct).
    """
    names = list(targets)
    first, others = names[0], names[1:]
    for mode in modes:
        results = []
        for r in range(rounds):
            got = {}
            for name in names[r % len(names):] + names[:r % len(names)]:
                servers.reset_tables(pg)
                target, pids = targets[name]
                got[name] = one_run(target, pids, mode, duration)
            results.append(got)
            print(f"{mode} round {r + 1}: " + " | ".join(
                f"{n} {got[n]['tps']:8,.0f} TPS" + (f" {got[n]['cpu_us']:4.0f} µs/tx" if got[n]["cpu_us"] else "")
                for n in names) + " | " + " ".join(
                f"{n}/{first} {got[n]['tps'] / got[first]['tps']:.2f}" for n in others), flush=True)

        def to_first(n: str) -> list[float]:
            return [g[n]["tps"] / g[first]["tps"] for g in results]  # noqa: B023 (used in this iteration)

        own = [g[first]["cpu_us"] for g in results if g[first]["cpu_us"]]  # none for direct
        print(f"select-only {mode}{title}, {rounds} rounds of {duration} s (medians): " + (
            f"{first} {statistics.median(own):.0f} µs CPU per transaction, " if own else "") + ", ".join(
            f"{n}/{first} {statistics.median(to_first(n)):.2f} ({min(to_first(n)):.2f}-{max(to_first(n)):.2f}; "
            f"{statistics.median(g[n]['cpu_us'] for g in results):.0f} µs CPU per transaction)"
            for n in others), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    round_arguments(p, rounds=3, duration=8)
    p.add_argument("--forwarder-processes", type=int, action="append", metavar="N",
                   help="forwarders sharing one port (SO_REUSEPORT), their CPU summed; repeat to compare "
                        "several counts in the same rounds (default: 1)")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work, pg, direct, jwks, token = setting_up(stack, "pgwarden-ceiling-")
        pgwarden = pgwardens.PgwardenRunner(
            "pgwarden", pgwardens.write_pgwarden_config(pg, work, "pgwarden", settings.PASS_THROUGH_POLICY, jwks),
            work, token, stack)
        targets = {"direct": (direct, [])}
        for n in args.forwarder_processes or [1]:
            name = "forwarder" if n == 1 else f"forwarder-x{n}"
            forwarders, port = servers.start_forwarder(pg, work / name, stack, n)
            targets[name] = (workloads.Target(name, "127.0.0.1", port, APP_USER, APP_PASSWORD),
                             [svc.pid for svc in forwarders])
        targets["pgwarden"] = (pgwarden.target, [pgwarden.service.pid])
        compare(pg, targets, args.mode or ["simple", "prepared"], args.rounds, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
