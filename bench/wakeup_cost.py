#!/usr/bin/env python3
"""Instructions per select-only transaction at one client, forwarder and pass-through pgwarden.

Why instructions: on this shared 2-core machine wall clock and /proc CPU move by
tens of percent with the neighbours' load; what the event loop, the reads and
the sends cost in user space does not. Each target runs under callgrind
(``PYTHONHASHSEED=0``); after a warm-up, its counters are zeroed, ``pgbench -S
-c 1 -t SHORT`` runs and the counters are dumped, then the same with ``-t LONG``:
(long − short) / (LONG − SHORT) is the cost of one transaction, without the
connection's set-up and tear-down. Only user-space instructions of the target
process count (the kernel's share of a send or a wake-up is not in them).

    .venv/bin/python bench/wakeup_cost.py                          # both targets, simple and prepared
    .venv/bin/python bench/wakeup_cost.py --target forwarder --mode simple
    PGWARDEN_PURE_PYTHON=1 .venv/bin/python bench/wakeup_cost.py   # the pure-Python hot path
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import setting_up  # noqa: E402
from pgbench_run import pgwardens, servers, settings, workloads  # noqa: E402

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

HERE = Path(__file__).resolve().parent
SUMMARY = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def callgrind(argv: list[str], out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}", *argv]


def instructions(pid: int, out: Path) -> int:
    """Dumps the counters of ``pid`` since the last zeroing; their total instructions."""
    before = set(out.parent.glob(out.name + "*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(out.parent.glob(out.name + "*")) - before
        for path in new:
            text = path.read_text(errors="replace")
            found = SUMMARY.search(text)
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def pgbench(target: workloads.Target, mode: str, transactions: int) -> None:
    cmd = [settings.tool("pgbench"), "-n", "-S", "-M", mode, "-c", "1", "-t", str(transactions),
           *target.conn_args(), settings.DATABASE]
    done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")


def per_transaction(target: workloads.Target, pid: int, out: Path, mode: str, short: int, long: int) -> float:
    pgbench(target, mode, 100)  # warm-up: imports, caches, the first statements' analyses
    counts = []
    for n in (short, long):
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        pgbench(target, mode, n)
        counts.append(instructions(pid, out))
    return (counts[1] - counts[0]) / (long - short)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", choices=("forwarder", "pgwarden"))
    p.add_argument("--mode", action="append", choices=("simple", "extended", "prepared"))
    p.add_argument("--short", type=int, default=300)
    p.add_argument("--long", type=int, default=1300)
    p.add_argument("--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)")
    args = p.parse_args(argv)
    os.environ["PYTHONHASHSEED"] = "0"
    with contextlib.ExitStack() as stack:
        work, pg, direct, jwks, token = setting_up(stack, "pgwarden-wakeup-")
        for name in args.target or ["forwarder", "pgwarden"]:
            out = work / f"{name}.callgrind"
            ready = work / f"{name}.ready"
            if name == "forwarder":
                argv_ = [sys.executable, str(HERE / "forwarder.py"), "0", pg.host, str(pg.port),
                         "--ready-file", str(ready)]
            else:
                config = pgwardens.write_pgwarden_config(pg, work, name, settings.PASS_THROUGH_POLICY, jwks)
                argv_ = [sys.executable, "-m", "pgwarden", "run", "-c", str(config), "--ready-file", str(ready)]
            svc = servers.Service(name, callgrind(argv_, out), work / f"{name}.log", cwd=str(HERE.parent)).start()
            stack.callback(svc.stop)
            port = servers.read_ready_port(svc, ready, timeout_s=300)
            user, password = (APP_USER, APP_PASSWORD) if name == "forwarder" else (pgwardens.BENCH_SUBJECT, token)
            target = workloads.Target(name, "127.0.0.1", port, user, password)
            for mode in args.mode or ["simple", "prepared"]:
                cost = per_transaction(target, svc.pid, out, mode, args.short, args.long)
                print(f"{name} {mode}: {cost:,.0f} instructions per transaction", flush=True)
            svc.stop()
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for dump in work.glob(f"{name}.callgrind*"):
                    shutil.copy(dump, args.keep / dump.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
