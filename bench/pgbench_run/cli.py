"""The command line of `bench/run.py` (what `make bench` runs): its options, the whole run, and
its teardown on errors and signals.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
import traceback
from pathlib import Path

import pgbench_run
from pgbench_run import REPO, table
from pgbench_run.launch import run_metadata, set_up, summarize_pgwarden
from pgbench_run.pgwardens import PgbenchRunner, verify_records
from pgbench_run.report import render_report, write_json
from pgbench_run.rounds import (
    paired_rounds,
    recording_summary,
    rotating_rounds,
    run_workload,
    target_rounds_summary,
)
from pgbench_run.settings import (
    DIRECT,
    PAIRED_ROUNDS,
    PGBOUNCER,
    PGWARDEN_RECORDING,
    PGWARDEN_RULES,
    RECORDING_WORKLOADS,
    RESULTS_FILE,
    RULES_LABEL,
    RULES_TARGETS,
    RULES_WORKLOADS,
    say,
)
from pgbench_run.workloads import ALL_NAMES, LATENCY, WORKLOADS, RunResult, Workload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=pgbench_run.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=None,
                   help="seconds per pgbench run (default 15, or 5 with --quick)")
    p.add_argument("--quick", action="store_true", help="5-second runs: a smoke test, not a measurement")
    p.add_argument("--only", action="append", choices=ALL_NAMES, metavar="WORKLOAD",
                   help=f"run only this workload (repeatable): {', '.join(ALL_NAMES)}")
    p.add_argument("--no-pgbouncer", action="store_true", help="leave PgBouncer out")
    p.add_argument("--no-rules", action="store_true",
                   help=f"leave out the pgwarden with {RULES_LABEL} (run for {', '.join(RULES_WORKLOADS)})")
    p.add_argument("--no-recording", action="store_true",
                   help="leave out the pgwarden that records every statement to a file "
                        f"(run for {', '.join(RECORDING_WORKLOADS)})")
    p.add_argument("--paired-rounds", type=int, default=PAIRED_ROUNDS, metavar="N",
                   help="rounds of short runs in rotating order that give the recording cost (recording "
                        f"off, on) and the {RULES_LABEL} ratios to direct (direct, {PGWARDEN_RULES}, "
                        f"PgBouncer) as medians (default {PAIRED_ROUNDS}; 0: none)")
    p.add_argument("--table-rounds", type=int, default=table.TABLE_ROUNDS, metavar="N",
                   help="rounds of issue 20's table: every figure as a ratio to PgBouncer, the median and "
                        f"range of rotating rounds, with a direct-vs-direct noise line (default "
                        f"{table.TABLE_ROUNDS}; 0: no table)")
    p.add_argument("--table-duration", type=int, default=table.TABLE_DURATION, metavar="S",
                   help=f"seconds per run of the table's rounds (default {table.TABLE_DURATION})")
    p.add_argument("--no-forwarder", action="store_true",
                   help="leave out the table's floor: bench/forwarder.py, a bare forwarder on pgwarden's reactor "
                        "(run at 1 client and select-only simple at 8)")
    p.add_argument("--table-only", action="store_true",
                   help="only the table (and the pgwardens it needs): no per-workload runs, no paired rounds")
    p.add_argument("--sessions", type=int, default=0, metavar="N",
                   help="pass-through pgwarden's RSS with N idle sessions, measured at the start (asyncpg; "
                        "`make bench` asks for 500; default 0: not measured, `make load` has it)")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 5 if args.quick else 15
    if args.duration <= 0 or args.table_duration <= 0:
        p.error("--duration and --table-duration must be positive")
    if args.table_only:
        args.only, args.no_recording, args.paired_rounds = [], True, 0
        args.table_rounds = args.table_rounds or table.TABLE_ROUNDS
    return args


def run_benchmark(args, stack: contextlib.ExitStack) -> int:
    names = set(ALL_NAMES if args.only is None else args.only)
    workloads = [w for w in WORKLOADS if w.name in names]
    workdir = Path(tempfile.mkdtemp(prefix="pgwarden-bench-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    setup = set_up(args, workdir, stack)
    script_dir = workdir / "scripts"
    script_dir.mkdir()

    def run(workload: Workload, turn: int) -> dict[str, RunResult]:
        return run_workload(workload, setup.targets_for(workload), setup.pgwardens, setup.pg,
                            args.duration, script_dir, turn, setup.skip)

    rows = [(w, run(w, turn)) for turn, w in enumerate(workloads)]
    paired: dict[str, list] = {}
    if setup.pgwarden_recording is not None and args.paired_rounds > 0:
        off = setup.pgwarden_rules or setup.pgwarden  # the same baseline as recording_summary's
        for w in workloads:
            if w.name in RECORDING_WORKLOADS:
                duration = max(3, args.duration // 3)
                paired[w.name] = (duration, paired_rounds(w, off, setup.pgwarden_recording, setup.pg,
                                                          duration, script_dir, args.paired_rounds))
    target_rounds: dict[str, dict] = {}
    if setup.pgwarden_rules is not None and args.paired_rounds > 0:
        duration = max(3, args.duration // 3)
        for w in workloads:
            if w.name in RULES_TARGETS:
                runners = [PgbenchRunner(t) if t.name not in setup.pgwardens else setup.pgwardens[t.name]
                           for t in setup.targets_for(w) if t.name in (DIRECT, PGWARDEN_RULES, PGBOUNCER)
                           and t.name not in setup.skip]
                summary = target_rounds_summary(
                    w, duration, rotating_rounds(w, runners, setup.pg, duration, script_dir, args.paired_rounds))
                if summary is not None:
                    target_rounds[w.name] = summary
    # PgBouncer too, where there, as a yardstick for what a proxy adds.
    latency = run(LATENCY, len(workloads)) if LATENCY.name in names else None
    table_summary = None
    if args.table_rounds > 0:
        bouncer = next((t for t in setup.targets if t.name == PGBOUNCER and t.name not in setup.skip), None)
        direct = next(t for t in setup.targets if t.name == DIRECT)
        targets = table.runners(direct, bouncer, setup.pgbouncer_pid,
                                {n: r for n, r in setup.table_pgwardens.items() if n not in setup.skip},
                                setup.forwarder, setup.forwarder_pid)
        by_round = table.run_table(targets, setup.pg, script_dir, args.table_rounds, args.table_duration)
        memory = table.memory_figures(setup.pgwarden, setup.idle_rss_kib, setup.pgbouncer_pid, setup.sessions)
        table_summary = table.summarize(by_round, args.table_duration, memory)

    pgwarden_info = summarize_pgwarden(setup, rows, latency)
    recording = None
    if setup.pgwarden_recording is not None and any(PGWARDEN_RECORDING in res for _w, res in rows):
        say("stopping pgwarden-recording and verifying its record file")
        verification = verify_records(setup.pgwarden_recording, setup.pgwarden_recording.record_log)
        say(f"record chain {'intact' if verification['ok'] else 'BROKEN: ' + str(verification['problem'])} "
            f"({verification['records']:,} records, {verification['verify_s']} s)")
        recording = recording_summary(rows, verification, paired)
    notes = list(setup.notes)
    if setup.pgwarden.crashes:
        notes.append("pgwarden was restarted after a crash, so VmHWM covers only the last process.")
    if any(t.name == PGBOUNCER for t in setup.targets) and any("-C" in w.args for w in workloads):
        notes.append("PgBouncer pools server connections (session mode): with -C each new client "
                     "still logs in to PgBouncer (SCRAM) but reuses a server connection, skipping the "
                     "backend start and upstream login that direct and pgwarden pay for every time.")
    metadata = run_metadata(args, setup)
    report = render_report(rows, latency, pgwarden_info, notes, args.duration, recording, target_rounds,
                           metadata["interpreter"])
    if table_summary is not None:
        report += "\n" + "\n".join(table.render(table_summary))
    print(report, flush=True)
    write_json(RESULTS_FILE, rows, latency, pgwarden_info, metadata, notes, recording,
               target_rounds, table_summary)
    print(f"\nresults written to {RESULTS_FILE.relative_to(REPO)}", flush=True)
    return 0 if recording is None or recording["verification"]["ok"] else 1


def _terminate(signum, _frame):
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so the teardown below runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    with contextlib.ExitStack() as stack:
        try:
            return run_benchmark(args, stack)
        except KeyboardInterrupt:
            say("interrupted; tearing everything down")
            return 130
        except RuntimeError as e:  # our own, already explanatory
            say(f"benchmark failed: {e}")
            return 1
        except Exception:  # noqa: BLE001  unexpected: the whole traceback, then the same teardown
            say("benchmark failed:\n" + traceback.format_exc())
            return 1
        finally:
            # Ctrl-C again during teardown must not leave servers behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 1
