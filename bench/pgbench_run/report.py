"""The report: the table and summaries printed on stdout, the same figures in `.bench/results.json`."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from pgbench_run import REPO
from pgbench_run.rounds import added_latency, ratio, ratios_of
from pgbench_run.settings import (
    BLOCK_RULES,
    CLIENTS,
    DIRECT,
    EXTRA_LABELS,
    PGBOUNCER,
    PGWARDEN,
    PGWARDEN_RECORDING,
    PGWARDEN_RULES,
    RECORDING_LABEL,
    RULES_LABEL,
    SCALE,
    THREADS,
)
from pgbench_run.workloads import LATENCY, RunResult, Workload


def fmt_tps(r: RunResult | None) -> str:
    if r is None:
        return "-"
    return f"{r.tps:,.0f}" if r.ok else "FAIL"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def extra_row(workload: Workload, results: dict[str, RunResult], name: str) -> tuple[str, ...]:
    """The line of an extra pgwarden (with rules, recording) under its workload's, in the pgwarden columns.

    Why a row of its own rather than columns: it runs for two workloads only, so
    columns of its own would be empty on every other line. Direct and PgBouncer
    were not run again, so their cells are empty; the ratios are to the runs of
    the line above.
    """
    extra = results[name]
    return (f"{workload.name} ({EXTRA_LABELS[name]})", "", fmt_tps(extra), "",
            fmt_ratio(ratio(extra, results.get(DIRECT))), fmt_ratio(ratio(extra, results.get(PGBOUNCER))), "")


def short_name(workload_name: str) -> str:
    return workload_name.removeprefix("select-")


def render_table(rows: list[tuple[Workload, dict[str, RunResult]]]) -> str:
    header = ("workload", "TPS direct", "TPS pgwarden", "TPS pgbouncer",
              "pgwarden/direct", "pgwarden/pgbouncer", "pgbouncer/direct")
    body = []
    for workload, results in rows:
        r = ratios_of(results)
        body.append((workload.name, fmt_tps(results.get(DIRECT)), fmt_tps(results.get(PGWARDEN)),
                     fmt_tps(results.get(PGBOUNCER)), fmt_ratio(r["pgwarden_over_direct"]),
                     fmt_ratio(r["pgwarden_over_pgbouncer"]), fmt_ratio(r["pgbouncer_over_direct"])))
        for extra in (PGWARDEN_RULES, PGWARDEN_RECORDING):
            if extra in results:
                body.append(extra_row(workload, results, extra))
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    line = lambda row: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, body)])


def render_target_rounds(summaries: dict[str, dict]) -> list[str]:
    first = next(iter(summaries.values()))
    parts = [f"{RULES_LABEL} against direct, median of {first['rounds']} rounds of {first['duration_s']} s runs "
             "(direct, pgwarden-rules and PgBouncer in rotating order):"]
    for name, s in summaries.items():
        line = [f"  {name:<16}"]
        for target, label in ((PGWARDEN_RULES, RULES_LABEL), (PGBOUNCER, "PgBouncer")):
            r = s["over_direct"].get(target)
            if r is not None:
                line.append(f"{label} {r['median']:.2f}x ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})")
        line.append(f"target {s['target']:.2f}: {'met' if s['met'] else 'NOT met'}")
        parts.append("  ".join(line))
    return parts


def render_recording(summary: dict) -> list[str]:
    """The cost of recording, the size of its records, and whether their chain verified."""
    parts = []
    costs = ", ".join(f"{short_name(n)} " + ("FAILED" if w["cost"] is None else f"{-w['cost'] * 100:+.0f}%")
                      for n, w in summary["workloads"].items())
    parts.append(f"recording cost: {costs}  (TPS recording every statement to a file against recording off, "
                 f"same run; target: at most {summary['target_cost'] * 100:.0f}%)")
    for name, w in summary["workloads"].items():
        if w["cost"] is None:
            parts.append(f"  {name:<16} no figure (a run failed, see below)")
            continue
        size = "-" if w["bytes_per_statement"] is None else f"{w['bytes_per_statement']:,.0f} bytes of records"
        cpu = ""
        if w["cpu_percent_recording"] is not None and w["cpu_percent_off"] is not None:
            cpu = (f"; pgwarden CPU {w['cpu_percent_recording']:.0f}% against "
                   f"{w['cpu_percent_off']:.0f}% of one core")
        against = RULES_LABEL if w.get("baseline") == PGWARDEN_RULES else "pass-through"
        parts.append(f"  {name:<16} {w['tps_recording']:,.0f} TPS against {w['tps_off']:,.0f} "
                     f"({against}, recording off): "
                     f"{w['recording_over_off']:.2f}x; {size} per statement{cpu}")
        pr = w.get("paired")
        if pr is not None:
            cpu_added = ("" if pr["cpu_us_added_median"] is None else
                         f"; pgwarden CPU {pr['cpu_us_added_median']:+.0f} µs per statement on "
                         f"{pr['cpu_us_off_median']:.0f}")
            parts.append(f"  {'':<16} paired rounds: cost {pr['cost_median'] * 100:.0f}% "
                         f"(median of {pr['rounds']} pairs "
                         f"of {pr['duration_s']} s runs, recording/off "
                         f"{min(pr['ratios']):.2f}-{max(pr['ratios']):.2f}){cpu_added}")
    v = summary["verification"]
    if v is None:
        parts.append("  record file: not verified (the recording pgwarden did not run to the end)")
    else:
        against = (f"up to the chain head pgwarden logged when it closed the file ({v['closed_head'][:16]}…)"
                   if v["closed_head"] else "without a chain head (pgwarden logged none when it stopped)")
        outcome = "intact" if v["ok"] else f"BROKEN: {v['problem']}"
        parts.append(f"  record file: {v['bytes'] / 1e6:,.1f} MB in {len(v['files'])} file(s), "
                     f"{v['records']:,} records; chain checked with pgwarden.chain.verify {against}: {outcome}")
    return parts


def render_report(rows, latency, pgwarden_info: dict, notes: list[str], duration: int,
                  recording: dict | None = None, target_rounds: dict | None = None,
                  interpreter: str | None = None) -> str:
    parts = [f"pgbench {duration} s per run, scale {SCALE}; throughput runs with {CLIENTS} clients / "
             f"{THREADS} threads"]
    if interpreter is not None:
        parts.append(f"pgwarden on {interpreter}")
    parts.append("")
    if rows:
        parts += [render_table(rows), ""]
        if any(PGWARDEN_RULES in results for _w, results in rows):
            parts += [f"  ({RULES_LABEL}): a second pgwarden whose one policy has {len(BLOCK_RULES)} block rules "
                      f"(bench/README.md);",
                      "  its ratios are to the direct and PgBouncer runs of the line above."]
        if any(PGWARDEN_RECORDING in results for _w, results in rows):
            parts += [f"  ({RECORDING_LABEL}): a pgwarden that records every statement to a file sink "
                      f"(default fsync_s), with the {RULES_LABEL} policy when that pgwarden runs, else "
                      "pass-through; the others run with recording off;",
                      "  its ratios are to the direct and PgBouncer runs of the line above."]
        if any(PGWARDEN_RULES in results or PGWARDEN_RECORDING in results for _w, results in rows):
            parts.append("")
        for workload, results in rows:
            parts.append(f"  {workload.name:<16} {workload.title}")
            bases = sorted({r.tps_basis for r in results.values() if r.ok and r.tps_basis})
            if bases and not all(b.startswith(("without", "excluding")) for b in bases):
                parts.append(f"  {'':<16} TPS {' / '.join(bases)}")
            connect = [f"{r.target} {r.connection_ms:.1f} ms" for r in results.values()
                       if r.ok and r.connection_ms is not None]
            if connect and "-C" in workload.args:
                parts.append(f"  {'':<16} average connection time: {', '.join(connect)}")
        parts.append("")
    if target_rounds:
        parts += [*render_target_rounds(target_rounds), ""]
    if recording is not None:
        parts += [*render_recording(recording), ""]
    if latency is not None:
        lat = added_latency(latency)
        per = ", ".join(f"{n} {v:.3f} ms" for n, v in lat["latency_ms"].items())
        parts.append(f"Latency, 1 client, select-only simple: {per}")
        for name in (PGWARDEN, PGBOUNCER):
            if f"{name}_added_us" in lat:
                parts.append(f"  {name} adds {lat[f'{name}_added_us']:+.0f} µs per statement over direct")
        for r in latency.values():
            if not r.ok:
                parts.append(f"  {r.target}: FAILED (see below)")
        parts.append("")
    parts.append("pgwarden memory (RSS):")
    parts.append(f"  {'idle after start':<28} {fmt_mib(pgwarden_info.get('idle_rss_kib'))}")
    for name, peak in pgwarden_info.get("peak_rss_kib_by_workload", {}).items():
        cpu = pgwarden_info["cpu_percent_by_workload"].get(name)
        cpu_text = f"   (CPU {cpu:.0f}% of one core)" if cpu is not None else ""
        parts.append(f"  {'peak during ' + name:<28} {fmt_mib(peak)}{cpu_text}")
    parts.append(f"  {'VmHWM at the end':<28} {fmt_mib(pgwarden_info.get('vmhwm_kib'))}")
    failures = [(w.name, r) for w, res in rows for r in res.values() if not r.ok]
    failures += [(LATENCY.name, r) for r in (latency or {}).values() if not r.ok]
    if failures:
        parts += ["", "FAILURES:"]
        for name, r in failures:
            error = (r.error or "").strip().replace("\n", "\n      ")
            parts.append(f"  {name} / {r.target}: {error}")
            parts.append(f"    command: {r.command}")
    log_errors = [(w.name, r) for w, res in rows for r in res.values() if r.pgwarden_log_errors]
    log_errors += [(LATENCY.name, r) for r in (latency or {}).values() if r.pgwarden_log_errors]
    if log_errors:
        parts += ["", "pgwarden logged errors:"]
        for name, r in log_errors:
            parts.append(f"  {name}:" if r.target == PGWARDEN else f"  {name} ({r.target}):")
            parts += [f"    {ln}" for ln in r.pgwarden_log_errors]
    if pgwarden_info.get("crashes"):
        parts += ["", "pgwarden CRASHED:"]
        for c in pgwarden_info["crashes"]:
            parts.append(f"  during {c['during']} (exit {c['exit_code']}):")
            parts += [f"    {ln}" for ln in c["log_tail"].splitlines()]
    if notes:
        parts += ["", "Notes:", *(f"  {n}" for n in notes)]
    return "\n".join(parts)


def git_revision() -> str:
    def git(*a):
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)

    rev = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    dirty = git("diff", "--quiet", "HEAD", "--", "pgwarden").returncode != 0
    return rev + ("+dirty" if dirty else "")


def write_json(path: Path, rows, latency, pgwarden_info, meta: dict, notes: list[str],
               recording: dict | None = None, target_rounds: dict | None = None, table: dict | None = None) -> None:
    """The same figures as the printed report, for comparing runs over time."""
    doc = {
        "meta": meta,
        "workloads": [
            {"name": w.name, "title": w.title, "pgbench_args": list(w.args), "script": w.script,
             "clients": w.clients, "threads": w.threads,
             "results": {n: asdict(r) for n, r in res.items()}, "ratios": ratios_of(res)}
            for w, res in rows
        ],
        "latency_1_client": None if latency is None else {
            **added_latency(latency), "results": {n: asdict(r) for n, r in latency.items()}},
        "pgwarden": pgwarden_info,
        "recording": recording,
        "rules_target_rounds": target_rounds or None,
        "against_pgbouncer": table,
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
