#!/usr/bin/env python3
"""The relay's own cost per round trip, without sockets, a server or a reactor.

What the sans-IO `Relay` costs per statement when nothing is decided (an allow-all
decider) and nothing listens: a simple Query and its one-row answer, and an extended
Parse/Bind/Describe/Execute/Sync with its answer. A change on the relay's hot path
shows here long before it can be told apart from noise in `make bench`.

With ``--against REV`` the `relay/engine.py` of git revision REV is loaded beside this
tree's, and both run in alternating rounds in the same process, so the machine's load
moves both alike (the other modules are this tree's: for changes inside the engine).

    .venv/bin/python bench/relay_loop.py                      # 100k round trips, 7 rounds
    .venv/bin/python bench/relay_loop.py --against HEAD~1 --n 50000

The round trips run inside ``functools.reduce``, which nothing else calls meanwhile, so
callgrind can count their instructions alone (one workload, one round):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python bench/relay_loop.py --workload simple --n 5000 --rounds 1  # / 5,000 per round trip
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pgwarden.relay import engine
from pgwarden.wire import messages as m

ROOT = Path(__file__).resolve().parent.parent
COL = m.Column("n", 0, 0, 23, 4, -1, 0)


def _simple() -> tuple[bytes, bytes]:
    query = m.Query("select 1").encode()
    answer = b"".join(x.encode() for x in (
        m.RowDescription((COL,)), m.DataRow((b"1",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I")))
    return query, answer


def _extended() -> tuple[bytes, bytes]:
    client = b"".join(x.encode() for x in (
        m.Parse("", "select $1::int", (23,)), m.Bind("", "", (0,), (b"1",), (0,)), m.Describe("P", ""),
        m.Execute("", 0), m.Sync()))
    answer = b"".join(x.encode() for x in (
        m.ParseComplete(), m.BindComplete(), m.RowDescription((COL,)), m.DataRow((b"1",)),
        m.CommandComplete("SELECT 1"), m.ReadyForQuery("I")))
    return client, answer


def _round_trips(module, client: bytes, answer: bytes, n: int) -> float:
    """µs of this process's CPU per round trip through a fresh relay of ``module`` (CPU time,
    not wall time: on a loaded machine the time waiting for a core is not the relay's)."""
    allow = module.ALLOW
    relay = module.Relay(lambda _request: allow)
    client_data, server_data = relay.client_data, relay.server_data
    pop_upstream, pop_client = relay.pop_upstream, relay.pop_client

    def step(_acc: int, _i: int) -> int:
        client_data(client)
        pop_upstream()
        server_data(answer)
        pop_client()
        return 0

    start = time.process_time()
    functools.reduce(step, range(n), 0)
    return (time.process_time() - start) / n * 1e6


def _engine_at(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:pgwarden/relay/engine.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("pgwarden.relay._engine_" + rev.replace("~", "_"), loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:engine.py", "exec"), module.__dict__)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workload", choices=("simple", "extended"), help="only this one (default: both)")
    parser.add_argument("--against", metavar="REV", help="also run the relay engine of this git revision")
    args = parser.parse_args(argv)
    targets = [("this tree", engine)]
    if args.against:
        targets.insert(0, (args.against, _engine_at(args.against)))
    workloads = {"simple": _simple(), "extended": _extended()}
    if args.workload:
        workloads = {args.workload: workloads[args.workload]}
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = targets if round_ % 2 == 0 else targets[::-1]  # A B B A ...
        for workload, (client, answer) in workloads.items():
            for name, module in order:
                results.setdefault((workload, name), []).append(_round_trips(module, client, answer, args.n))
    for (workload, name), times in results.items():
        print(f"{workload:9} {name:12} median {statistics.median(times):6.2f} µs  "
              f"min {min(times):6.2f} µs  per round trip ({args.rounds} rounds of {args.n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
