#!/usr/bin/env python3
"""pgwarden's own work per statement at one client, in instructions or Python calls: what the
machine's load does not move.

Starts a throwaway PostgreSQL (pgbench data at scale 1), one pgwarden with one of `ab.py`'s
configurations (``pass``: pass-through, as `run.py`'s; ``rules``; ``recording``) and runs
``pgbench -n -S -M MODE -c 1`` against it: a warm-up, then ``--short`` and ``--long``
transactions (one statement each), one pgbench connection per run. The figure per statement is
the difference between the two runs over the difference of their transactions, so the login
and the connection's end cancel out.

* ``--tool callgrind`` (default): pgwarden runs under ``valgrind --tool=callgrind``
  (``PYTHONHASHSEED=0``); the counters are zeroed after the warm-up and dumped after each run
  (``callgrind_control``). Prints instructions per statement and, with ``--top``, the
  functions whose instructions per statement grew the most between the two runs.
* ``--tool cprofile``: pgwarden runs under `cProfile`, switched on after the warm-up by a
  signal; prints Python calls per statement and the functions called most per statement.
  Compiled modules do not show there (mypyc's functions are C).

    .venv/bin/python bench/statement_cost.py --mode simple
    .venv/bin/python bench/statement_cost.py --mode prepared --tool cprofile --top 30
    PGWARDEN_PURE_PYTHON=1 .venv/bin/python bench/statement_cost.py --mode extended
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import write_config  # noqa: E402
from pgbench_run import REPO, pgwardens, servers, settings, workloads  # noqa: E402
from pgbench_run.servers import Service, read_ready_port  # noqa: E402

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402

# Run as pgwarden under cProfile: SIGUSR1 starts the profiler, SIGUSR2 writes its stats to argv[1].
PROFILED = """
import cProfile, signal, sys
out = sys.argv.pop(1)
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
def dump(*_):
    profile.disable()
    profile.dump_stats(out)
    open(out + ".done", "w").close()
signal.signal(signal.SIGUSR2, dump)
from pgwarden.cli import main
sys.exit(main(sys.argv[1:]))
"""
# ... and a script (the forwarder) so.
PROFILED_SCRIPT = PROFILED.replace(
    "from pgwarden.cli import main\nsys.exit(main(sys.argv[1:]))",
    "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')")


def pgbench(target: workloads.Target, mode: str, transactions: int) -> None:
    cmd = [settings.tool("pgbench"), "-n", "-S", "-M", mode, "-c", "1", "-t", str(transactions),
           *target.conn_args(), settings.DATABASE]
    done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True)
    if done.returncode != 0 or f"processed: {transactions}/{transactions}" not in done.stdout:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")


def start(argv: list[str], work: Path, stack: contextlib.ExitStack, env: dict[str, str],
          tree: Path | None) -> tuple[Service, int]:
    ready = work / "pgwarden.ready"
    svc = Service("pgwarden", [*argv, "--ready-file", str(ready)], work / "pgwarden.log",
                  cwd=str(tree or REPO), env=env).start()
    stack.callback(svc.stop, 60)
    return svc, read_ready_port(svc, ready, timeout_s=600)


def total_instructions(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_functions(path: Path) -> dict[str, int]:
    """Exclusive instructions per function of one dump (callgrind_annotate's table)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--tree=none", str(path)],
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        if "=>" in line or "PROGRAM TOTALS" in line:
            continue
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if match:
            found[match.group(2)] = found.get(match.group(2), 0) + int(match.group(1).replace(",", ""))
    return found


def dump(pid: int, work: Path, before: set[Path]) -> Path:
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(work.glob("callgrind.out.*")) - before
        if new:
            path = max(new, key=lambda p: p.stat().st_mtime)
            time.sleep(1)  # written by now; a dump is small
            return path
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("simple", "extended", "prepared"), default="simple")
    p.add_argument("--config", choices=("pass", "rules", "recording", "forwarder"), default="pass",
                   help="forwarder: `bench/forwarder.py` instead of pgwarden (what any proxy here costs)")
    p.add_argument("--tool", choices=("callgrind", "cprofile"), default="callgrind")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--short", type=int, default=300)
    p.add_argument("--long", type=int, default=1300)
    p.add_argument("--top", type=int, default=0, help="list this many functions")
    p.add_argument("--callers", metavar="NAME", help="with --tool cprofile: who calls the functions named so")
    p.add_argument("--tree", type=Path, help="run the pgwarden (and built-in plugins) of this checkout instead")
    p.add_argument("--keep", type=Path, help="copy the two callgrind dumps into this directory")
    p.add_argument("--results-delay-ms", type=int, metavar="MS",
                   help="with --config recording: recording.results_delay_ms (default 10). Under callgrind a "
                        "statement takes ~50x as long, so the 10 ms timer that writes waiting result records "
                        "fires about once a statement (at full speed once in ~150), an interpreted Twisted "
                        "timer whose share moves with the machine's load: 1000 leaves it out of A/B figures")
    args = p.parse_args(argv)
    servers.SCALE = 1  # the statements' cost does not depend on the table's size
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgwarden-cost-", dir="/work")))
        pg = servers.start_postgres(stack)
        servers.init_pgbench_data(workloads.Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD))
        jwks, token = pgwardens.mint_bench_token(work)
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        if args.tree is not None:  # as `ab.py --against`: a link makes its built-in plugins load
            shim = work / "shim"
            shim.mkdir()
            (shim / "pgwarden_plugins").symlink_to(args.tree.resolve() / "plugins")
            env["PYTHONPATH"] = os.pathsep.join([str(args.tree.resolve()), str(shim)])
        stats = work / "profile.stats"
        if args.config == "forwarder":
            command = [str(Path(__file__).resolve().parent / "forwarder.py"), "0", pg.host, str(pg.port)]
        else:
            config = write_config(args.config, "cost", pg, work, jwks)
            if args.results_delay_ms is not None:
                doc = yaml.safe_load(config.read_text())
                doc["recording"]["results_delay_ms"] = args.results_delay_ms
                config.write_text(yaml.safe_dump(doc, sort_keys=False))
            command = ["-m", "pgwarden", "run", "-c", str(config)]
        if args.tool == "callgrind":
            argv_ = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out.%p",
                     sys.executable, *command]
        else:
            run = command[2:] if command[0] == "-m" else command
            argv_ = [sys.executable, "-c", PROFILED if command[0] == "-m" else PROFILED_SCRIPT, str(stats), *run]
        svc, port = start(argv_, work, stack, env, args.tree)
        if args.config == "forwarder":
            target = workloads.Target("forwarder", "127.0.0.1", port, APP_USER, APP_PASSWORD)
        else:
            target = workloads.Target("pgwarden", "127.0.0.1", port, settings.BENCH_SUBJECT, token)
        pgbench(target, args.mode, args.warmup)
        if args.tool == "cprofile":
            os.kill(svc.pid, signal.SIGUSR1)
            time.sleep(0.5)
            pgbench(target, args.mode, args.long)
            os.kill(svc.pid, signal.SIGUSR2)
            while not Path(str(stats) + ".done").exists():
                time.sleep(0.1)
            s = pstats.Stats(str(stats))
            per = args.long
            calls = sum(v[1] for v in s.stats.values())  # type: ignore[attr-defined]
            print(f"{args.config} {args.mode}: {calls / per:.1f} Python calls per statement "
                  f"({per} statements, cProfile)")
            if args.top:
                rows = sorted(s.stats.items(), key=lambda kv: -kv[1][1])[:args.top]  # type: ignore[attr-defined]
                for (file, line, name), v in rows:
                    print(f"{v[1] / per:8.2f}  {Path(file).name}:{line}({name})")
            if args.callers:
                s.print_callers(args.callers)
            return 0
        before = set(work.glob("callgrind.out.*"))
        subprocess.run(["callgrind_control", "-z", str(svc.pid)], check=True, capture_output=True)
        pgbench(target, args.mode, args.short)
        first = dump(svc.pid, work, before)
        pgbench(target, args.mode, args.long)
        second = dump(svc.pid, work, before | {first})
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(first, args.keep / f"{args.config}-{args.mode}-{args.short}.callgrind")
            shutil.copy(second, args.keep / f"{args.config}-{args.mode}-{args.long}.callgrind")
        a, b = total_instructions(first), total_instructions(second)
        per = (b - a) / (args.long - args.short)
        print(f"{args.config} {args.mode}: {per:,.0f} instructions per statement "
              f"({args.short}: {a:,}; {args.long}: {b:,}; callgrind, PYTHONHASHSEED=0)")
        if args.top:
            fa, fb = callgrind_functions(first), callgrind_functions(second)
            grew = sorted(((fb[k] - fa.get(k, 0)) / (args.long - args.short), k) for k in fb)[::-1][:args.top]
            for n, name in grew:
                print(f"{n:10,.0f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
