#!/usr/bin/env python3
"""The decision's own cost per statement, without sockets, a server or a reactor.

What `Application.decide` costs for pgbench's select-only simple statements (one text per
``aid``, so each is new and shares its analysis with the others by normalized text), with
one of `bench/ab.py`'s configurations: ``pass`` (pass-through), ``rules`` (the ten-rule
policy) or ``recording`` (ten rules, records to a file). A real Application on a clock
whose poll ends every eight decisions (`pgwarden.testing.clocks.EndOfPollClock`: the
barrier hands the records over and writes them), the shipped catalog snapshot, and a
stand-in for the session's connection holding what a decision reads of it. CPU time of
the process per decision (not wall time, which a loaded machine inflates); a change on the
decision path (the plugin host, the hooks, the recorder) shows here long before `make bench`
can tell it from noise.

With ``--against REV`` the same loop runs on the pgwarden and built-in plugins of git
revision REV (a temporary checkout, as `bench/ab.py` makes), each round in a fresh process,
in alternating order with this tree's.

The loop runs inside ``functools.reduce``, which nothing else calls meanwhile, so callgrind
can count its instructions alone (repeatable where time is not; docs/performance.md):

    .venv/bin/python bench/decide_loop.py                          # rules, 30,000 decisions, 7 rounds
    .venv/bin/python bench/decide_loop.py --against 5fa5c98 --config recording
    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python bench/decide_loop.py --n 5000 --rounds 1  # instructions / 5,000 per decision
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("pass", "rules", "recording")
TEXT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"


def _application(kind: str, work: Path):
    """An Application with ``kind``'s configuration, and a stand-in for one session's connection."""
    from types import SimpleNamespace

    import yaml

    from pgwarden.app import Application
    from pgwarden.config import load_config
    from pgwarden.identity import Identity
    from pgwarden.limits import session_limits
    from pgwarden.policy import policies_for
    from pgwarden.recorder import SessionLog
    from pgwarden.session import Session
    from pgwarden.testing.clocks import EndOfPollClock

    sys.path.insert(0, str(HERE))  # after pgwarden: the pgwarden under test stays the one loaded
    from pgbench_run import pgwardens, settings

    password = work / "password"
    password.write_text("x\n")
    password.chmod(0o600)
    doc = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "upstream": {"host": "127.0.0.1", "database": settings.DATABASE, "user": "app",
                     "password_file": str(password)},
        "auth": {"jwt": {"issuer": settings.ISSUER, "audience": settings.AUDIENCE,
                         "jwks_file": str(pgwardens.mint_bench_token(work)[0])}},
        "policies": [settings.PASS_THROUGH_POLICY if kind == "pass" else settings.RULES_POLICY],
        "catalog": {"live": False},
        **(settings.RECORDING_OFF if kind != "recording" else
           {"recording": {"sinks": [{"file": str(work / "records.jsonl"), "keep": 1000}]}}),
    }
    (work / "pgwarden.yaml").write_text(yaml.safe_dump(doc))
    app = Application(load_config(str(work / "pgwarden.yaml")), EndOfPollClock())
    identity = Identity(settings.BENCH_SUBJECT, frozenset())
    policies = policies_for(identity, app.config.policies)

    from pgwarden.proxy.client import session_sql_context
    from pgwarden.wire.messages import StartupMessage

    sql_context = session_sql_context(app.catalog.current, app.config.upstream.user, StartupMessage(196608, ()))
    from pgwarden.proxy.state import ConnectionState

    class BenchConnection(ConnectionState):
        """The state a decision and the recorder read of a session, as `ClientConnection` keeps it."""

        def recording_failed(self) -> None:
            raise AssertionError("the bench's records could not be written")

    conn = BenchConnection(SimpleNamespace(catalog=app.catalog), session_limits(policies))
    conn.phase = "relay"
    conn.session = Session("bench", identity, settings.DATABASE, policies=policies)
    conn.log = SessionLog("0123456789abcdef")
    conn.sql_context = sql_context
    return app, conn


def child(kind: str, n: int, rounds: int) -> list[float]:
    """µs of CPU per decision, one figure per round (each round's texts new to the caches)."""
    import functools

    from pgwarden.relay.engine import StatementRequest

    with tempfile.TemporaryDirectory(prefix="decide-loop-") as work:
        app, conn = _application(kind, Path(work))
        decide = app.decisions.decide
        end_of_poll = app.reactor.turn

        def step(seq: int, sql: str) -> int:
            decide(conn, StatementRequest("simple", sql, seq=seq))
            if seq % 8 == 7:
                end_of_poll()  # the barrier (records handed over and written), as a turn of 8 clients
            return seq + 1

        for seq, sql in enumerate(TEXT.format(i) for i in range(1_000_001, 1_002_001)):  # warm, not in reduce
            step(seq, sql)
        gc.collect()
        gc.freeze()
        out = []
        for r in range(rounds):
            texts = [TEXT.format(i) for i in range(1 + r * n, 1 + (r + 1) * n)]
            start = time.process_time()
            functools.reduce(step, texts, 0)
            out.append((time.process_time() - start) / n * 1e6)
        app.close_plugins()
    return out


def _run_in(tree: Path | None, kind: str, n: int, shim: Path) -> float:
    """One round in a fresh process: this tree's pgwarden, or ``tree``'s with its built-in plugins."""
    env = dict(os.environ)
    if tree is not None:
        link = shim / "pgwarden_plugins"  # the built-ins install as pgwarden_plugins (setup.cfg)
        if not link.exists():
            link.symlink_to(tree / "plugins")
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(shim)])
    done = subprocess.run([sys.executable, __file__, "--child", "--config", kind, "--n", str(n), "--rounds", "1"],
                          env=env, cwd=str(tree or HERE.parent), capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=CONFIGS, default="rules")
    p.add_argument("--n", type=int, default=30_000, help="decisions per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--against", metavar="REV", help="also run git revision REV's pgwarden, in alternating rounds")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child or not args.against:
        import pgwarden  # noqa: F401 - the pgwarden under test, before bench/ joins the path

        figures = child(args.config, args.n, args.rounds)
        if args.child:
            print(figures[-1])
            return 0
        print(f"{args.config}: {statistics.median(figures):.2f} µs of CPU per decision (median; min "
              f"{min(figures):.2f}, rounds " + " ".join(f"{f:.2f}" for f in figures) + ")")
        return 0
    sys.path.insert(0, str(HERE))
    from ab import worktree

    results: dict[str, list[float]] = {args.against: [], "working tree": []}
    with worktree(args.against) as tree, tempfile.TemporaryDirectory(prefix="decide-loop-shim-") as shim:
        for r in range(args.rounds):
            order = [(args.against, tree), ("working tree", None)]
            for name, where in order if r % 2 == 0 else reversed(order):
                results[name].append(_run_in(where, args.config, args.n, Path(shim)))
            print(f"round {r + 1}: " + " | ".join(f"{name} {results[name][-1]:.2f} µs" for name in results))
    base, new = (statistics.median(results[k]) for k in results)
    print(f"{args.config}, {args.rounds} rounds of {args.n:,} decisions: {args.against} {base:.2f} µs, working tree "
          f"{new:.2f} µs of CPU per decision (medians; {new - base:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
