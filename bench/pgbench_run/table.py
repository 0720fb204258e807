"""Issue 20's table: every figure a fleet of sidecars pays for, as a ratio to PgBouncer, from
rotating rounds of short runs in one run (median and range).

Why PgBouncer and not direct: on this kind of machine a process wake-up costs tens of µs, so
every proxy's ratio to direct is mostly the machine's; PgBouncer, a proxy in C, run in the same
minutes, is the yardstick that moves with it. Why CPU per statement: a sidecar has well under a
core, so what pgwarden costs is its own CPU time per statement (read from /proc, which a loaded
machine inflates far less than wall-clock figures), and at one client (one agent per sidecar)
the latency it adds.

The targets of a round, each workload's in rotating order:

* ``direct`` and ``direct-again``: PostgreSQL itself, twice. The two are the same target, so
  their ratio is the run's noise (a change smaller than that range is not a change);
* ``pgwarden``: pass-through, recording off (`settings.RECORDING_OFF`);
* ``pgwarden-policy``: ten block rules, recording to stdout (pgwarden's default), what the
  issue calls "policy";
* ``pgwarden-rules``: the same ten rules, recording off: recording's CPU per statement is
  ``pgwarden-policy``'s minus this one's;
* ``pgbouncer``: PgBouncer in session mode;
* ``forwarder``: `bench/forwarder.py`, a bare TCP forwarder on pgwarden's reactor that moves
  bytes without reading them (at 1 client and select-only simple at 8; ``--no-forwarder``
  leaves it out). Not held to a target: its ratios to PgBouncer are the floor under
  pgwarden's, what CPython and the reactor cost before pgwarden does any work.

Every target's process CPU (user + system, all threads, /proc/PID/task/*/schedstat in ns) is
read around each run and divided by pgbench's transactions (one statement each).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pgbench_run.pgwardens import PgbenchRunner, PgwardenRunner, read_cpu_seconds, read_status_kib
from pgbench_run.rounds import rotating_rounds
from pgbench_run.settings import DIRECT, FORWARDER, PGBOUNCER, PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, say
from pgbench_run.workloads import LATENCY, WORKLOADS, RunResult, Target, Workload

DIRECT_AGAIN = "direct-again"
#: rounds and seconds per run of the table (`--table-rounds`, `--table-duration`)
TABLE_ROUNDS = 3
TABLE_DURATION = 4

_BY_NAME = {w.name: w for w in (*WORKLOADS, LATENCY)}
#: each workload of the table and the targets it runs; only what a figure needs
TABLE_WORKLOADS: tuple[tuple[Workload, tuple[str, ...]], ...] = (
    (_BY_NAME["select-simple"],
     (DIRECT, DIRECT_AGAIN, PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, PGBOUNCER, FORWARDER)),
    (_BY_NAME["select-extended"], (DIRECT, PGWARDEN, PGWARDEN_POLICY, PGBOUNCER)),
    (_BY_NAME["select-prepared"], (DIRECT, PGWARDEN, PGWARDEN_POLICY, PGBOUNCER)),
    (_BY_NAME["rows-10k"], (PGWARDEN, PGWARDEN_POLICY, PGBOUNCER)),
    # (pgwarden-rules too: the policy's added latency split into its rules' and its recording's)
    (LATENCY, (DIRECT, DIRECT_AGAIN, PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, PGBOUNCER, FORWARDER)),
)


@dataclass(frozen=True)
class Figure:
    """One line of the table: how a round gives its value, and the target it is held to."""

    key: str
    title: str
    value: Callable[[dict[str, dict[str, RunResult]]], float | None]
    target: str  # as the issue words it
    met: Callable[[float], bool] | None = None
    unit: str = "x"
    floor_of: str | None = None  # a floor's: the key of the pgwarden figure it lies under


# ---------------------------------------------------------------------- CPU per statement

def process_cpu_s(pid: int) -> float | None:
    """User + system CPU of every thread of ``pid`` (ns precision from schedstat; /proc/PID/stat's
    10 ms ticks when schedstat is not there)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return None
    return total / 1e9 if total else read_cpu_seconds(pid)


class CpuMeasured:
    """A runner (`PgwardenRunner`, `PgbenchRunner`) whose process's CPU per statement is read
    around each run into ``RunResult.cpu_us_per_statement``."""

    def __init__(self, inner: PgwardenRunner | PgbenchRunner, pid: Callable[[], int | None], name: str) -> None:
        self.inner, self.pid, self.name = inner, pid, name

    def run(self, workload: Workload, duration: int, script_dir: Path) -> RunResult:
        pid = self.pid()
        before = process_cpu_s(pid) if pid is not None else None
        result = self.inner.run(workload, duration, script_dir)
        after = process_cpu_s(pid) if pid is not None else None
        result.target = self.name
        if before is not None and after is not None and result.ok and result.transactions:
            result.cpu_us_per_statement = (after - before) / result.transactions * 1e6
        return result


# ---------------------------------------------------------------------- the figures

def _tps_over(name: str, over: str, workload: str):
    def value(r: dict[str, dict[str, RunResult]]) -> float | None:
        a, b = r.get(workload, {}).get(name), r.get(workload, {}).get(over)
        if a is None or b is None or not a.ok or not b.ok or not b.tps:
            return None
        return a.tps / b.tps
    return value


def _added_us(r: dict[str, dict[str, RunResult]], name: str) -> float | None:
    got = r.get(LATENCY.name, {})
    a, d = got.get(name), got.get(DIRECT)
    if a is None or d is None or not a.ok or not d.ok or a.latency_ms is None or d.latency_ms is None:
        return None
    return (a.latency_ms - d.latency_ms) * 1000


def _added_over_bouncer(name: str):
    def value(r: dict[str, dict[str, RunResult]]) -> float | None:
        a, b = _added_us(r, name), _added_us(r, PGBOUNCER)
        return None if a is None or b is None or b <= 0 else a / b
    return value


def _cpu(r: dict[str, dict[str, RunResult]], workload: str, name: str) -> float | None:
    got = r.get(workload, {}).get(name)
    return None if got is None else got.cpu_us_per_statement


def _cpu_over_bouncer(name: str, workload: str):
    def value(r: dict[str, dict[str, RunResult]]) -> float | None:
        a, b = _cpu(r, workload, name), _cpu(r, workload, PGBOUNCER)
        return None if a is None or b is None or not b else a / b
    return value


def _recording_cpu(r: dict[str, dict[str, RunResult]]) -> float | None:
    on, off = _cpu(r, "select-simple", PGWARDEN_POLICY), _cpu(r, "select-simple", PGWARDEN_RULES)
    return None if on is None or off is None else on - off


def _noise_tps(r: dict[str, dict[str, RunResult]]) -> float | None:
    return _tps_over(DIRECT_AGAIN, DIRECT, "select-simple")(r)


def _noise_latency(r: dict[str, dict[str, RunResult]]) -> float | None:
    return _added_us(r, DIRECT_AGAIN)


def _at_least(x: float) -> Callable[[float], bool]:
    return lambda v: v >= x


def _at_most(x: float) -> Callable[[float], bool]:
    return lambda v: v <= x


FIGURES: tuple[Figure, ...] = (
    *(Figure(f"tps_pass_{m}", f"throughput, pass-through, {m}, pgwarden/PgBouncer",
             _tps_over(PGWARDEN, PGBOUNCER, f"select-{m}"), ">= 0.9", _at_least(0.9))
      for m in ("simple", "extended", "prepared")),
    *(Figure(f"tps_policy_{m}", f"throughput, policy, {m}, pgwarden/PgBouncer",
             _tps_over(PGWARDEN_POLICY, PGBOUNCER, f"select-{m}"), ">= 0.8", _at_least(0.8))
      for m in ("simple", "extended", "prepared")),
    Figure("tps_rows_pass", "throughput, 10,000-row results, pass-through, pgwarden/PgBouncer",
           _tps_over(PGWARDEN, PGBOUNCER, "rows-10k"), ">= 1.0", _at_least(1.0)),
    Figure("tps_rows_policy", "throughput, 10,000-row results, policy, pgwarden/PgBouncer",
           _tps_over(PGWARDEN_POLICY, PGBOUNCER, "rows-10k"), ">= 1.0", _at_least(1.0)),
    Figure("latency_pass", "added latency at 1 client, pass-through, over PgBouncer's",
           _added_over_bouncer(PGWARDEN), "<= 2", _at_most(2.0)),
    Figure("latency_policy", "added latency at 1 client, policy, over PgBouncer's",
           _added_over_bouncer(PGWARDEN_POLICY), "<= 2", _at_most(2.0)),
    Figure("cpu_1c_pass", "CPU per statement at 1 client, pass-through, over PgBouncer's",
           _cpu_over_bouncer(PGWARDEN, LATENCY.name), "<= 1.3", _at_most(1.3)),
    Figure("cpu_1c_policy", "CPU per statement at 1 client, policy, over PgBouncer's",
           _cpu_over_bouncer(PGWARDEN_POLICY, LATENCY.name), "<= 2", _at_most(2.0)),
    Figure("cpu_8c_pass", "CPU per statement at 8 clients, pass-through, over PgBouncer's",
           _cpu_over_bouncer(PGWARDEN, "select-simple"), "<= 2.5", _at_most(2.5)),
    Figure("recording_cpu_us", "recording's CPU per statement (policy minus recording off), simple, µs",
           _recording_cpu, "<= 15 µs", _at_most(15.0), unit=" µs"),
)

#: the run's noise: the same target twice in the same rounds
NOISE: tuple[Figure, ...] = (
    Figure("noise_tps", "direct-again/direct, select-only simple, 8 clients", _noise_tps, "1.0"),
    Figure("noise_latency_us", "direct-again minus direct, latency at 1 client, µs", _noise_latency, "0",
           unit=" µs"),
)

#: the floor under pgwarden's one-client ratios: the bare forwarder's, for the reader (not targets)
FLOOR: tuple[Figure, ...] = (
    Figure("floor_cpu_1c", "floor: forwarder CPU per statement at 1 client over PgBouncer's",
           _cpu_over_bouncer(FORWARDER, LATENCY.name), "reference", floor_of="cpu_1c_pass"),
    Figure("floor_latency", "floor: forwarder added latency at 1 client over PgBouncer's",
           _added_over_bouncer(FORWARDER), "reference", floor_of="latency_pass"),
    Figure("floor_cpu_8c", "floor: forwarder CPU per statement at 8 clients over PgBouncer's",
           _cpu_over_bouncer(FORWARDER, "select-simple"), "reference", floor_of="cpu_8c_pass"),
    Figure("floor_tps", "floor: forwarder throughput, simple, 8 clients, over PgBouncer's",
           _tps_over(FORWARDER, PGBOUNCER, "select-simple"), "reference", floor_of="tps_pass_simple"),
)

#: the absolute figures a round gives beside the ratios, for the reader (µs)
ABSOLUTE: tuple[tuple[str, Callable[[dict[str, dict[str, RunResult]]], float | None]], ...] = (
    *((f"added latency at 1 client, {n}", (lambda r, n=n: _added_us(r, n)))
      for n in (PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, PGBOUNCER, FORWARDER)),
    *((f"CPU per statement at 1 client, {n}", (lambda r, n=n: _cpu(r, LATENCY.name, n)))
      for n in (PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, PGBOUNCER, FORWARDER)),
    *((f"CPU per statement at 8 clients (simple), {n}", (lambda r, n=n: _cpu(r, "select-simple", n)))
      for n in (PGWARDEN, PGWARDEN_POLICY, PGWARDEN_RULES, PGBOUNCER, FORWARDER)),
)


# ---------------------------------------------------------------------- running and summarising

def runners(direct: Target, bouncer: Target | None, bouncer_pid: int | None,
            pgwardens: dict[str, PgwardenRunner], forwarder: Target | None = None,
            forwarder_pid: int | None = None) -> dict[str, CpuMeasured]:
    """The table's targets by name, each with its process's CPU read around every run."""
    found = {DIRECT: CpuMeasured(PgbenchRunner(direct), lambda: None, DIRECT),
             DIRECT_AGAIN: CpuMeasured(PgbenchRunner(direct), lambda: None, DIRECT_AGAIN)}
    if bouncer is not None:
        found[PGBOUNCER] = CpuMeasured(PgbenchRunner(bouncer), lambda: bouncer_pid, PGBOUNCER)
    if forwarder is not None:
        found[FORWARDER] = CpuMeasured(PgbenchRunner(forwarder), lambda: forwarder_pid, FORWARDER)
    for name, runner in pgwardens.items():
        found[name] = CpuMeasured(runner, lambda runner=runner: runner.service.pid, name)
    return found


def run_table(targets: dict[str, CpuMeasured], pg, script_dir: Path, rounds: int,
              duration: int) -> list[dict[str, dict[str, RunResult]]]:
    """``rounds`` rounds of every workload of the table: per round, workload, target, the result."""
    by_round: list[dict[str, dict[str, RunResult]]] = [{} for _ in range(rounds)]
    for workload, names in TABLE_WORKLOADS:
        present = [targets[n] for n in names if n in targets]
        if not present:
            continue
        say(f"table: {workload.name}, {rounds} rounds of {duration} s ({', '.join(t.name for t in present)})")
        for i, got in enumerate(rotating_rounds(workload, present, pg, duration, script_dir, rounds)):
            by_round[i][workload.name] = got
    return by_round


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": statistics.median(values), "low": min(values), "high": max(values),
            "rounds": [round(v, 3) for v in values]}


def summarize(by_round: list[dict[str, dict[str, RunResult]]], duration: int, memory: dict) -> dict:
    """Median and range over the rounds of every figure, whether its target is met, the noise, and
    each floor's share of the pgwarden figure it lies under (of their medians)."""
    figures: dict[str, dict] = {}
    for f in (*FIGURES, *NOISE, *FLOOR):
        values = [v for v in (f.value(r) for r in by_round) if v is not None]
        spread = _spread(values)
        figures[f.key] = {"title": f.title, "target": f.target, **(spread or {}),
                          "met": None if spread is None or f.met is None else f.met(spread["median"])}
        if f.floor_of is not None:
            over = figures[f.floor_of].get("median")
            figures[f.key]["share_of"] = {
                "figure": f.floor_of,
                "share": None if spread is None or not over else spread["median"] / over}
    absolute = {title: _spread([v for v in (value(r) for r in by_round) if v is not None])
                for title, value in ABSOLUTE}
    failed = sorted({f"{w}/{n}: {res.error.splitlines()[0] if res.error else 'failed'}"
                     for r in by_round for w, got in r.items() for n, res in got.items() if not res.ok})
    return {"rounds": len(by_round), "duration_s": duration, "figures": figures, "absolute_us": absolute,
            "memory": memory, "failed": failed}


def memory_figures(pgwarden: PgwardenRunner, idle_rss_kib: int | None, bouncer_pid: int | None,
                   sessions: dict | None) -> dict:
    """Idle RSS of pass-through pgwarden (read at start) and of PgBouncer, and pgwarden's RSS
    with the idle sessions of `--sessions` (None: not measured, `make load` has it)."""
    return {"pgwarden_idle_rss_kib": idle_rss_kib,
            "pgbouncer_rss_kib": read_status_kib(bouncer_pid, "VmRSS") if bouncer_pid else None,
            "pgwarden_pid": pgwarden.service.pid, "sessions": sessions}


def _fmt(spread: dict | None, unit: str) -> str:
    if not spread:
        return "not measured"
    digits = 0 if unit.strip() == "µs" else 2
    return (f"{spread['median']:.{digits}f}{unit} ({spread['low']:.{digits}f}-{spread['high']:.{digits}f})")


def render(summary: dict) -> list[str]:
    """The table as printed under the report."""
    n, d = summary["rounds"], summary["duration_s"]
    out = ["", f"Issue 20's figures against PgBouncer: median (range) of {n} rotating rounds of {d} s runs",
           f"  {'figure':<78} {'value':<24} target"]
    for f in FIGURES:
        got = summary["figures"][f.key]
        verdict = "" if got.get("met") is None else ("  met" if got["met"] else "  NOT met")
        out.append(f"  {f.title:<78} {_fmt(got if 'median' in got else None, f.unit):<24} {f.target}{verdict}")
    mem = summary["memory"]
    idle, bouncer = mem.get("pgwarden_idle_rss_kib"), mem.get("pgbouncer_rss_kib")
    out.append(f"  {'idle RSS, pgwarden (PgBouncer after the run)':<78} "
               f"{_mib(idle)} ({_mib(bouncer)}){'':<6} <= 40 MiB"
               + ("" if idle is None else ("  met" if idle <= 40 * 1024 else "  NOT met")))
    sessions = mem.get("sessions")
    if sessions and sessions.get("rss_kib"):
        rss = sessions["rss_kib"]
        out.append(f"  {'RSS with ' + str(sessions['sessions']) + ' idle sessions':<78} {_mib(rss):<24} <= 150 MiB"
                   + ("  met" if rss <= 150 * 1024 else "  NOT met"))
    else:
        why = (sessions or {}).get("error") or "not measured here: see `make load`"
        out.append(f"  {'RSS with 500 idle sessions':<78} {why}")
    out.append("  noise (the same target twice in the same rounds):")
    for f in NOISE:
        got = summary["figures"][f.key]
        out.append(f"    {f.title:<76} {_fmt(got if 'median' in got else None, f.unit)}")
    out.append("  floor (bench/forwarder.py: a bare forwarder on pgwarden's reactor; a reference, not a target):")
    for f in FLOOR:
        got = summary["figures"][f.key]
        share = (got.get("share_of") or {}).get("share")
        of = "" if share is None else (f"{share * 100:.0f}% of pass-through's "
                                       f"{summary['figures'][f.floor_of]['median']:.2f}x")
        out.append(f"    {f.title:<76} {_fmt(got if 'median' in got else None, f.unit):<24} {of}".rstrip())
    out.append("  absolute (µs, median and range):")
    for title, spread in summary["absolute_us"].items():
        out.append(f"    {title:<76} {_fmt(spread, ' µs')}")
    for failure in summary["failed"]:
        out.append(f"  FAILED run: {failure}")
    return out


def _mib(kib: int | float | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"
