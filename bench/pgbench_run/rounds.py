"""Running the workloads against the targets (rotating which goes first, and in rounds of short
runs), and the statistics over the results: ratios, medians, the cost of recording.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pgbench_run.pgwardens import PgwardenRunner
from pgbench_run.servers import reset_tables
from pgbench_run.settings import (
    DIRECT,
    PGBOUNCER,
    PGWARDEN,
    PGWARDEN_RECORDING,
    PGWARDEN_RULES,
    RECORDING_TARGET_COST,
    RULES_TARGETS,
    say,
)
from pgbench_run.workloads import RunResult, Target, Workload, run_pgbench
from pgwarden.testing.postgres import TempPostgres


def run_workload(workload: Workload, targets: list[Target], pgwardens: dict[str, PgwardenRunner],
                 pg: TempPostgres, duration: int, script_dir: Path, turn: int,
                 skip: dict[str, str]) -> dict[str, RunResult]:
    """Each target once, back to back, starting with a different one each workload.

    Why rotate: the first run after a heavy one (or after the vacuum) meets a
    slightly different server; rotating spreads that over all targets.
    """
    names = [t.name for t in targets]
    order = names[turn % len(names):] + names[:turn % len(names)]
    results: dict[str, RunResult] = {}
    for name in order:
        if name in skip:
            results[name] = RunResult(target=name, error=skip[name])
            continue
        reset_tables(pg)
        say(f"{workload.name:<16} {name:<14} {duration}s ...")
        if name in pgwardens:
            result = pgwardens[name].run(workload, duration, script_dir)
        else:
            result = run_pgbench(workload, next(t for t in targets if t.name == name), duration, script_dir)
        results[name] = result
        if result.ok:
            say(f"{'':<16} {name:<14} tps {result.tps:,.1f}  latency {result.latency_ms} ms")
        else:
            say(f"{'':<16} {name:<14} FAILED: {result.error}")
        if result.pgwarden_log_errors:
            say(f"{'':<16} {name} logged errors:\n  " + "\n  ".join(result.pgwarden_log_errors))
    return {n: results[n] for n in names}


def rotating_rounds(workload: Workload, runners: list, pg: TempPostgres, duration: int,
                    script_dir: Path, rounds: int) -> list[dict[str, RunResult]]:
    """``rounds`` rounds of one short run of each runner, each round starting with the next one.

    Why: consecutive runs of one target differ by up to 40% here, so a single run of
    each says little about a 10% difference; the median over rounds run close together does.
    """
    out = []
    for r in range(rounds):
        got = {}
        for runner in runners[r % len(runners):] + runners[:r % len(runners)]:
            reset_tables(pg)
            say(f"{workload.name:<16} {runner.name:<14} {duration}s (round {r + 1} of {rounds}) ...")
            got[runner.name] = runner.run(workload, duration, script_dir)
        out.append(got)
    return out


def paired_rounds(workload: Workload, off: PgwardenRunner, rec: PgwardenRunner, pg: TempPostgres,
                  duration: int, script_dir: Path, rounds: int) -> list[tuple[RunResult, RunResult]]:
    """Pairs of runs, recording off and on, in alternating order (off rec, rec off, ...)."""
    return [(got[off.name], got[rec.name])
            for got in rotating_rounds(workload, [off, rec], pg, duration, script_dir, rounds)]


def ratio(a: RunResult | None, b: RunResult | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or not b.tps:
        return None
    return a.tps / b.tps


def ratios_of(results: dict[str, RunResult]) -> dict[str, float | None]:
    ratios = {
        "pgwarden_over_direct": ratio(results.get(PGWARDEN), results.get(DIRECT)),
        "pgwarden_over_pgbouncer": ratio(results.get(PGWARDEN), results.get(PGBOUNCER)),
        "pgbouncer_over_direct": ratio(results.get(PGBOUNCER), results.get(DIRECT)),
    }
    for extra in (PGWARDEN_RULES, PGWARDEN_RECORDING):
        if extra in results:  # only the workloads it ran for, so the others' stay as they were
            key = extra.replace("-", "_")
            ratios.update({
                f"{key}_over_direct": ratio(results.get(extra), results.get(DIRECT)),
                f"{key}_over_pgbouncer": ratio(results.get(extra), results.get(PGBOUNCER)),
                f"{key}_over_pgwarden": ratio(results.get(extra), results.get(PGWARDEN)),
            })
    return ratios


def target_rounds_summary(workload: Workload, duration: int, rounds: list[dict[str, RunResult]]) -> dict | None:
    """The median and range of each target's TPS over direct's, round by round, and the rules target."""
    by_target = {}
    for name in (PGWARDEN_RULES, PGBOUNCER):
        ratios = [ratio(got.get(name), got.get(DIRECT)) for got in rounds]
        ratios = [x for x in ratios if x is not None]
        if ratios:
            by_target[name] = {"ratios": [round(x, 3) for x in ratios], "median": statistics.median(ratios)}
    if PGWARDEN_RULES not in by_target:
        return None
    target = RULES_TARGETS[workload.name]
    return {"rounds": len(rounds), "duration_s": duration, "target": target,
            "met": by_target[PGWARDEN_RULES]["median"] >= target, "over_direct": by_target}


def cpu_us_per_transaction(r: RunResult) -> float | None:
    """pgwarden's CPU per transaction (user + system), from its CPU share over the run."""
    if not r.ok or not r.tps or r.pgwarden_cpu_percent is None:
        return None
    return r.pgwarden_cpu_percent / 100 / r.tps * 1e6


def paired_summary(duration: int, pairs: list[tuple[RunResult, RunResult]]) -> dict | None:
    """The median and range of recording/off over the pairs, and pgwarden's CPU per transaction."""
    ratios = [rec.tps / off.tps for off, rec in pairs if off.ok and rec.ok and off.tps]
    if not ratios:
        return None
    added = [cpu_us_per_transaction(rec) - cpu_us_per_transaction(off) for off, rec in pairs
             if cpu_us_per_transaction(rec) is not None and cpu_us_per_transaction(off) is not None]
    base = [cpu_us_per_transaction(off) for off, _ in pairs if cpu_us_per_transaction(off) is not None]
    return {
        "rounds": len(ratios), "duration_s": duration,
        "ratios": [round(x, 3) for x in ratios],
        "recording_over_off_median": statistics.median(ratios),
        "cost_median": 1.0 - statistics.median(ratios),
        "cpu_us_added_median": statistics.median(added) if added else None,
        "cpu_us_off_median": statistics.median(base) if base else None,
    }


def recording_summary(rows, verification: dict | None, paired: dict | None = None) -> dict | None:
    """What recording costs per workload (TPS against recording off, same run), its bytes, the check."""
    per_workload = {}
    for workload, results in rows:
        # Against the same policy with recording off: the 10-rule pgwarden when it ran (records
        # and rules both need the statement's analysis, so only recording's own cost shows),
        # else the pass-through one (then the analysis records need is part of the cost).
        baseline = PGWARDEN_RULES if PGWARDEN_RULES in results else PGWARDEN
        rec, off = results.get(PGWARDEN_RECORDING), results.get(baseline)
        if rec is None:
            continue
        over_off = ratio(rec, off)
        statements = rec.transactions if rec.ok else None  # select-only: one statement per transaction
        per_workload[workload.name] = {
            "tps_recording": rec.tps if rec.ok else None,
            "tps_off": off.tps if off is not None and off.ok else None,
            "baseline": baseline,
            "recording_over_off": over_off,
            "cost": None if over_off is None else 1.0 - over_off,
            "record_bytes": rec.record_bytes,
            "statements": statements,
            "bytes_per_statement": (rec.record_bytes / statements
                                    if statements and rec.record_bytes is not None else None),
            "cpu_percent_recording": rec.pgwarden_cpu_percent,
            "cpu_percent_off": off.pgwarden_cpu_percent if off is not None else None,
            "paired": paired_summary(*(paired or {}).get(workload.name, (0, []))),
        }
    if not per_workload:
        return None
    return {"target_cost": RECORDING_TARGET_COST, "workloads": per_workload, "verification": verification}


def added_latency(results: dict[str, RunResult]) -> dict:
    """Per-statement latency of each target at one client, and what each proxy adds to direct (µs)."""
    out: dict = {"latency_ms": {n: r.latency_ms for n, r in results.items() if r.ok}}
    direct = results.get(DIRECT)
    for name in (PGWARDEN, PGBOUNCER):
        r = results.get(name)
        if direct and direct.ok and r and r.ok:
            out[f"{name}_added_us"] = round((r.latency_ms - direct.latency_ms) * 1000, 1)
    return out
