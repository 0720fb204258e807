#!/usr/bin/env python3
"""Recording's work per select-only statement at one client, split where the latency is.

One client's statement is two reactor turns: the Query's (decided, its ``statement`` record
written at the turn's barrier, then sent upstream) and the ReadyForQuery's (the reply sent to
the client, then the ``result`` record built after the sends). This loop plays both on a real
Application (`bench/decide_loop.py`'s, pgbench's texts, `EndOfPollClock`) without sockets:

* ``before-send``: the Query's turn only (decision, statement record, barrier): what stands
  between the client's Query and its bytes leaving for the server;
* ``all``: both turns: the CPU.

Run under callgrind, whose ``--toggle-collect=functools_reduce`` counts only what runs inside
``functools.reduce`` (each measured part runs in one, the rest outside), and compare
``--config recording`` (ten rules, records to a file) with ``--config rules`` (recording off):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --callgrind-out-file=OUT .venv/bin/python bench/record_path.py --config recording --part before-send
    callgrind_annotate OUT | head        # instructions / --n per statement
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from decide_loop import TEXT, _application  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("rules", "recording"), default="recording")
    p.add_argument("--part", choices=("before-send", "all"), default="all")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--time", action="store_true",
                   help="natively, not under callgrind: print the measured part's µs per statement "
                        "(median of 5 rounds of --n; wall clock of the part, noisy on a loaded machine)")
    args = p.parse_args(argv)

    import pgwarden  # noqa: F401 - the pgwarden under test, loaded before bench/'s modules need it
    from pgwarden.relay.engine import StatementRequest
    from pgwarden.relay.execution import Execution

    with tempfile.TemporaryDirectory(prefix="record-path-", dir="/work") as work:
        app, conn = _application(args.config, Path(work))
        conn.log.search_path = conn.sql_context.search_path  # what the session's start records
        recording = app.plugins.pm.get_plugin("recording")
        if recording is not None:
            from twisted.internet.defer import maybeDeferred

            # As in pgwarden, whose reactor has a thread pool for the file sink's periodic fsync
            # (this loop's clock has none: the sink would consider an fsync at every write).
            for sink in recording.sinks:
                sink._in_thread = maybeDeferred
                sink.configured()
        decide, turn, recorder = app.decisions.decide, app.reactor.turn, app.recorder

        def query(seq: int, sql: str) -> int:
            decide(conn, StatementRequest("simple", sql, seq=seq))
            turn()  # the barrier, then the Query's sends
            return seq

        def reply(seq: int) -> None:
            ex = Execution(seq, "simple", 0.0, 0.0001)
            ex.finished, ex.rows, ex.bytes = 0.0003, 1, 11
            if recorder.active:
                recorder.result(conn, ex)  # what the relay does at the ReadyForQuery
            turn()  # the reply's sends, then the result record

        def statement(seq: int, sql: str, measured: str) -> None:
            if measured == "before-send":
                functools.reduce(lambda _, s: query(s, sql), (seq,), 0)
                reply(seq)
            elif measured == "all":
                functools.reduce(lambda _, s: (query(s, sql), reply(s))[0], (seq,), 0)
            else:
                query(seq, sql)
                reply(seq)

        for seq in range(2000):  # warm up, outside any reduce
            statement(seq, TEXT.format(1_000_001 + seq), "none")
        gc.collect()
        gc.freeze()
        if args.time:
            import statistics
            import time

            clock = time.perf_counter_ns
            rounds = []
            for r in range(5):
                spent = 0
                for seq in range(10_000_000 * (r + 1), 10_000_000 * (r + 1) + args.n):
                    sql = TEXT.format(seq)
                    start = clock()
                    if args.part == "before-send":
                        query(seq, sql)
                        spent += clock() - start
                        reply(seq)
                    else:
                        query(seq, sql)
                        reply(seq)
                        spent += clock() - start
                rounds.append(spent / args.n / 1000)
            print(f"{args.config} {args.part}: {statistics.median(rounds):.2f} µs per statement "
                  f"(rounds {', '.join(f'{x:.2f}' for x in rounds)})")
        for seq in range(2000, 2000 + args.n):
            statement(seq, TEXT.format(seq), args.part)
        app.close_plugins()
    return 0


if __name__ == "__main__":
    sys.exit(main())
