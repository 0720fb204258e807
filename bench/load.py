#!/usr/bin/env python3
"""`make load`: many sessions held open through one pgwarden, some of them busy, for a minute.

What a central pgwarden (or a busy sidecar) must hold up under: ``--sessions`` sessions
open at once, ``--busy`` of them running statements without pause (pgbench, select-only,
one connection per client for the whole run) and the rest idle (asyncpg connections of
this process that ran one statement each). It checks and reports:

* no error: pgbench's failed or aborted clients, sessions that could not open, errors
  in pgwarden's op log;
* no session starved: per busy session, the statements it ran and the p50 / p99 / max
  latency of its statements (pgbench's per-transaction log); the slowest session's
  figures and the fewest statements any busy session ran;
* memory flat: pgwarden's RSS sampled every second (start, end, max, and after 10 s, once
  its caches are full), its RSS idle and with all sessions open but idle, and with as many
  idle sessions opened again after all closed (whether what the first ones left is reused);
* descriptors released: /proc/PID/fd counted before, with the sessions open, and after
  they closed.

``--churn ROUNDS`` instead opens ``--sessions`` idle sessions and closes them, ROUNDS
times, with pgwarden's RSS with them open and after they closed each round: whether
sessions that come and go give their memory back (flat) or leave some of it behind.

``--find-limit`` instead opens sessions in steps of ``--step`` up to ``--max-sessions``
(or until one fails), with pgwarden's RSS, descriptors and CPU at each step: what the
process runs out of first. ``--nofile SOFT:HARD`` starts pgwarden under that descriptor
limit (prlimit), to see the limit it raises and the one it cannot.

    make load                                         # 500 sessions, 50 busy, 60 s
    .venv/bin/python bench/load.py --duration 20 --sessions 200 --busy 20
    .venv/bin/python bench/load.py --find-limit --max-sessions 2000 --step 250
    .venv/bin/python bench/load.py --find-limit --nofile 1024:1024
    .venv/bin/python bench/load.py --churn 5 --sessions 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgbench_run import REPO
from pgbench_run.pgwardens import (
    error_lines,
    mint_bench_token,
    read_cpu_seconds,
    recording_section,
    write_pgwarden_config,
)
from pgbench_run.servers import Service, read_ready_port
from pgbench_run.sessions import close_sessions, count_fds, mib, open_sessions, rss_kib, wait_for_fds
from pgbench_run.settings import BENCH_SUBJECT, DATABASE, PASS_THROUGH_POLICY, RULES_POLICY, say, tool
from pgbench_run.workloads import Target

from pgwarden.descriptors import raise_soft_limit
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres

RESULTS_FILE = REPO / ".bench" / "load.json"


@dataclass
class Sampler:
    """pgwarden's RSS and descriptors every ``interval`` seconds, in a thread."""

    pid: int
    interval: float = 1.0
    samples: list[tuple[float, int | None, int | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="load-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        began = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - began, rss_kib(self.pid), count_fds(self.pid)))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def rss(self) -> list[int]:
        return [r for _, r, _ in self.samples if r is not None]


def start_pgwarden(args, pg: TempPostgres, workdir: Path, stack: contextlib.ExitStack) -> tuple[Service, Target]:
    jwks, token = mint_bench_token(workdir)
    policy = PASS_THROUGH_POLICY if args.pass_through else RULES_POLICY
    recording = recording_section(workdir) | {"keep": 1} if args.recording else None
    config = write_pgwarden_config(pg, workdir, "pgwarden-load", policy, jwks, recording)
    ready = workdir / "pgwarden-load.ready"
    prefix = ["prlimit", f"--nofile={args.nofile}", "--"] if args.nofile else []
    svc = Service("pgwarden", [*prefix, sys.executable, "-m", "pgwarden", "run", "-c", str(config),
                               "--ready-file", str(ready)],
                  workdir / "pgwarden-load.log", cwd=str(REPO)).start()
    stack.callback(svc.stop)
    port = read_ready_port(svc, ready)
    return svc, Target("pgwarden", "127.0.0.1", port, BENCH_SUBJECT, token)


def start_postgres(max_connections: int, stack: contextlib.ExitStack) -> TempPostgres:
    pg = TempPostgres(settings={"max_connections": max_connections})
    stack.callback(pg.stop)
    say(f"starting PostgreSQL (max_connections {max_connections})")
    pg.start()
    direct = Target("direct", pg.host, pg.port, APP_USER, APP_PASSWORD)
    done = subprocess.run([tool("pgbench"), "-i", "-s", "1", "-q", *direct.conn_args(), DATABASE],
                          env=direct.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {done.stderr}")
    return pg


# ------------------------------------------------------------------ the busy sessions


def run_pgbench(args, target: Target, workdir: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """pgbench with ``--busy`` clients for ``--duration`` seconds, every transaction logged."""
    logs = workdir / "pgbench-logs"
    logs.mkdir()
    cmd = [tool("pgbench"), "-n", "-S", "-M", args.protocol, "-c", str(args.busy), "-j", "2",
           "-T", str(args.duration), "-l", "--log-prefix", str(logs / "tx"), *target.conn_args(), DATABASE]
    return subprocess.run(cmd, env=target.env(), capture_output=True, text=True, cwd=workdir), logs


def per_client_latencies(logs: Path) -> dict[int, list[int]]:
    """Each client's transaction latencies (µs) from pgbench's logs: ``client_id tx_no time_us ...``."""
    found: dict[int, list[int]] = {}
    for path in logs.iterdir():
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():  # "failed"/"skipped" lines hold no latency
                    found.setdefault(int(fields[0]), []).append(int(fields[2]))
    return found


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def starvation_summary(latencies: dict[int, list[int]], busy: int, duration: int) -> dict:
    per_client = []
    for client, values in sorted(latencies.items()):
        values.sort()
        per_client.append({"client": client, "statements": len(values), "p50_us": percentile(values, 0.5),
                           "p99_us": percentile(values, 0.99), "max_us": values[-1]})
    everything = sorted(v for values in latencies.values() for v in values)
    return {
        "busy_sessions_seen": len(per_client),
        "busy_sessions_without_statements": busy - len(per_client),
        "statements": len(everything),
        "statements_per_s": round(len(everything) / duration),
        "min_statements_per_session": min((c["statements"] for c in per_client), default=0),
        "max_statements_per_session": max((c["statements"] for c in per_client), default=0),
        "p50_us": percentile(everything, 0.5) if everything else None,
        "p99_us": percentile(everything, 0.99) if everything else None,
        "max_us": everything[-1] if everything else None,
        "worst_session_p50_us": max((c["p50_us"] for c in per_client), default=None),
        "worst_session_p99_us": max((c["p99_us"] for c in per_client), default=None),
        "per_session": per_client,
    }


def pgbench_failures(done: subprocess.CompletedProcess) -> list[str]:
    """What pgbench says went wrong: its exit status, aborted clients, failed transactions."""
    problems = [] if done.returncode == 0 else [f"pgbench exited {done.returncode}"]
    for line in (done.stdout + done.stderr).splitlines():
        lowered = line.lower()
        if ("failed" in lowered and not lowered.strip().endswith("(0.000%)")) or "abort" in lowered \
                or "error" in lowered:
            problems.append(line.strip())
    return problems


# ------------------------------------------------------------------ the two modes


def load(args, svc: Service, target: Target, workdir: Path) -> tuple[dict, bool]:
    pid = svc.proc.pid
    idle_rss, idle_fds = rss_kib(pid), count_fds(pid)
    idle_count = args.sessions - args.busy
    say(f"pgwarden idle: RSS {mib(idle_rss)}, {idle_fds} descriptors; opening {args.sessions} idle sessions")

    async def scenario() -> dict:
        sessions, errors = await open_sessions(target, args.sessions)
        await asyncio.sleep(1.0)
        with_idle = {"sessions": len(sessions), "rss_kib": rss_kib(pid), "fds": count_fds(pid), "errors": errors}
        say(f"{len(sessions)} idle sessions: RSS {mib(with_idle['rss_kib'])}, {with_idle['fds']} descriptors; "
            f"closing {args.busy} of them and starting {args.busy} busy ones for {args.duration} s")
        await close_sessions(sessions[idle_count:])
        sessions = sessions[:idle_count]
        sampler = Sampler(pid).start()
        cpu_before, began = read_cpu_seconds(pid), time.monotonic()
        done, logs = await asyncio.to_thread(run_pgbench, args, target, workdir)
        wall, cpu_after = time.monotonic() - began, read_cpu_seconds(pid)
        sampler.stop()
        # the idle sessions are still there and still answer
        still = await asyncio.gather(*(s.fetchval("SELECT 1") for s in sessions), return_exceptions=True)
        unanswered = [f"{type(r).__name__}: {r}" for r in still if r != 1]
        await close_sessions(sessions)
        rss = sampler.rss()
        return {
            "with_idle_sessions": with_idle,
            "during": {
                "sessions": len(sessions) + args.busy,
                "rss_start_kib": rss[0] if rss else None, "rss_end_kib": rss[-1] if rss else None,
                "rss_max_kib": max(rss) if rss else None,
                # once the caches (statements, decisions) are full: flat from here, or a leak
                "rss_after_10s_kib": next((r for t, r, _ in sampler.samples if t >= 10 and r is not None), None),
                "fds_max": max((f for _, _, f in sampler.samples if f is not None), default=None),
                "cpu_percent": None if cpu_before is None or cpu_after is None
                else round(100 * (cpu_after - cpu_before) / wall, 1),
                "samples": sampler.samples,
            },
            "busy": starvation_summary(per_client_latencies(logs), args.busy, args.duration),
            "pgbench_problems": pgbench_failures(done),
            "idle_sessions_unanswered": unanswered,
        }

    async def again() -> dict:
        """The idle sessions once more: whether what the first ones left is reused or added to."""
        sessions, errors = await open_sessions(target, args.sessions)
        await asyncio.sleep(1.0)
        found = {"sessions": len(sessions), "rss_kib": rss_kib(pid), "fds": count_fds(pid), "errors": errors}
        await close_sessions(sessions)
        return found

    found = asyncio.run(scenario())
    after_fds = wait_for_fds(pid, idle_fds or 0)
    after_rss = rss_kib(pid)
    say(f"all closed: RSS {mib(after_rss)}, {after_fds} descriptors; opening {args.sessions} idle sessions again")
    found["again"] = asyncio.run(again())
    found["again"]["after_fds"] = wait_for_fds(pid, idle_fds or 0)
    found.update(idle_rss_kib=idle_rss, idle_fds=idle_fds, after_fds=after_fds, after_rss_kib=after_rss,
                 pgwarden_log_errors=error_lines(svc.log_since(0)))
    busy = found["busy"]
    ok = (not found["with_idle_sessions"]["errors"] and not found["pgbench_problems"]
          and not found["idle_sessions_unanswered"] and not found["pgwarden_log_errors"]
          and busy["busy_sessions_without_statements"] == 0 and busy["min_statements_per_session"] > 0
          and after_fds is not None and idle_fds is not None and after_fds <= idle_fds
          and not found["again"]["errors"] and (found["again"]["after_fds"] or 0) <= idle_fds)
    return found, ok


def find_limit(args, svc: Service, target: Target) -> tuple[dict, bool]:
    pid = svc.proc.pid
    steps = [{"sessions": 0, "rss_kib": rss_kib(pid), "fds": count_fds(pid), "cpu_s": read_cpu_seconds(pid)}]

    async def scenario() -> str | None:
        held = []
        failure = None
        while len(held) < args.max_sessions and failure is None:
            want = min(args.step, args.max_sessions - len(held))
            began, cpu_before = time.monotonic(), read_cpu_seconds(pid)
            opened, errors = await open_sessions(target, want)
            wall, cpu_after = time.monotonic() - began, read_cpu_seconds(pid)
            held += opened
            await asyncio.sleep(1.0)
            step = {"sessions": len(held), "rss_kib": rss_kib(pid), "fds": count_fds(pid),
                    "open_s": round(wall, 1), "logins_per_s": round(len(opened) / wall, 1),
                    "cpu_percent_while_opening": None if cpu_before is None or cpu_after is None
                    else round(100 * (cpu_after - cpu_before) / wall, 1)}
            steps.append(step)
            say(f"{step['sessions']} sessions: RSS {mib(step['rss_kib'])}, {step['fds']} descriptors, "
                f"{step['logins_per_s']} logins/s at {step['cpu_percent_while_opening']}% CPU")
            if errors:
                failure = f"{len(errors)} of {want} sessions failed to open; first: {errors[0]}"
            elif not svc.alive():
                failure = f"pgwarden exited ({svc.proc.returncode})"
        await close_sessions(held)
        return failure

    failure = asyncio.run(scenario())
    after_fds = wait_for_fds(pid, steps[0]["fds"] or 0)
    found = {"steps": steps, "failure": failure, "after_fds": after_fds,
             "pgwarden_log_errors": error_lines(svc.log_since(0)),
             "pgwarden_fd_limit": [log_message(line) for line in svc.log_since(0).splitlines()
                                   if "file descriptors" in line]}
    return found, True


def churn(args, svc: Service, target: Target) -> tuple[dict, bool]:
    pid = svc.proc.pid
    idle_rss, idle_fds = rss_kib(pid), count_fds(pid)
    rounds = []
    for number in range(1, args.churn + 1):
        async def one_round() -> dict:
            sessions, errors = await open_sessions(target, args.sessions)
            await asyncio.sleep(1.0)
            found = {"sessions": len(sessions), "rss_kib": rss_kib(pid), "fds": count_fds(pid), "errors": errors}
            await close_sessions(sessions)
            return found

        found = asyncio.run(one_round())
        found["after_fds"] = wait_for_fds(pid, idle_fds or 0)
        time.sleep(1.0)  # what pgwarden does once the last session has gone (it may collect then)
        found["after_rss_kib"] = rss_kib(pid)
        rounds.append(found)
        say(f"round {number}: {found['sessions']} sessions open: RSS {mib(found['rss_kib'])}; "
            f"after they closed: RSS {mib(found['after_rss_kib'])}, {found['after_fds']} descriptors")
    found = {"idle_rss_kib": idle_rss, "idle_fds": idle_fds, "rounds": rounds,
             "pgwarden_log_errors": error_lines(svc.log_since(0))}
    ok = (not found["pgwarden_log_errors"] and all(not r["errors"] for r in rounds)
          and all(r["after_fds"] is not None and idle_fds is not None and r["after_fds"] <= idle_fds
                  for r in rounds))
    return found, ok


# ------------------------------------------------------------------ the report


def log_message(line: str) -> str:
    """The message of one line of pgwarden's op log (JSON lines when not on a terminal)."""
    try:
        return str(json.loads(line)["msg"])
    except (ValueError, KeyError, TypeError):
        return line


def report_load(args, found: dict, ok: bool) -> str:
    w, d, b, a = found["with_idle_sessions"], found["during"], found["busy"], found["again"]
    lines = [
        f"pgwarden under load: {args.sessions} sessions, {args.busy} busy (pgbench -S -M {args.protocol}), "
        f"{args.duration} s; policy: {'pass-through' if args.pass_through else 'ten block rules'}, "
        f"recording {'to a file' if args.recording else 'off'}",
        f"  idle:                      RSS {mib(found['idle_rss_kib'])}, {found['idle_fds']} descriptors",
        f"  {w['sessions']} idle sessions:         RSS {mib(w['rss_kib'])}, {w['fds']} descriptors"
        + (f" ({(w['rss_kib'] - found['idle_rss_kib']) / max(1, w['sessions']):.0f} KiB per session)"
           if w["rss_kib"] and found["idle_rss_kib"] else ""),
        f"  during the run:            RSS start {mib(d['rss_start_kib'])}, end {mib(d['rss_end_kib'])}, "
        f"max {mib(d['rss_max_kib'])}; after 10 s {mib(d['rss_after_10s_kib'])}",
        f"                             descriptors max {d['fds_max']}; pgwarden CPU {d['cpu_percent']}% of one core",
        f"  busy sessions:             {b['statements']:,} statements ({b['statements_per_s']:,}/s); "
        f"per session min {b['min_statements_per_session']:,}, max {b['max_statements_per_session']:,}",
        f"  latency, all statements:   p50 {b['p50_us']} µs, p99 {b['p99_us']} µs, max {b['max_us']} µs",
        f"  latency, worst session:    p50 {b['worst_session_p50_us']} µs, p99 {b['worst_session_p99_us']} µs",
        f"  after all closed:          RSS {mib(found['after_rss_kib'])}, {found['after_fds']} descriptors "
        f"(idle: {found['idle_fds']})",
        f"  {a['sessions']} idle sessions again:   RSS {mib(a['rss_kib'])}, {a['fds']} descriptors; "
        f"after they closed {a['after_fds']} descriptors",
    ]
    problems = (w["errors"][:5] + a["errors"][:5] + found["pgbench_problems"][:5]
                + found["idle_sessions_unanswered"][:5] + found["pgwarden_log_errors"][:5])
    lines += [f"  problem: {p}" for p in problems]
    lines.append("  result: " + ("ok" if ok else "FAILED"))
    return "\n".join(lines)


def report_limit(found: dict) -> str:
    lines = ["pgwarden's limit: sessions opened in steps, idle, held open"]
    lines += [f"  {line}" for line in found["pgwarden_fd_limit"][:1]]
    lines.append(f"  {'sessions':>8} {'RSS':>10} {'descriptors':>12} {'logins/s':>9} {'CPU % opening':>14}")
    for s in found["steps"]:
        lines.append(f"  {s['sessions']:>8} {mib(s['rss_kib']):>10} {s['fds']!s:>12} {s.get('logins_per_s', ''):>9} "
                     f"{s.get('cpu_percent_while_opening', '')!s:>14}")
    lines.append(f"  stopped by: {found['failure'] or 'nothing (the maximum asked for was reached)'}")
    lines.append(f"  after all closed: {found['after_fds']} descriptors (at start: {found['steps'][0]['fds']})")
    lines += [f"  pgwarden log: {e}" for e in found["pgwarden_log_errors"][:5]]
    return "\n".join(lines)


def report_churn(args, found: dict, ok: bool) -> str:
    lines = [f"pgwarden under churn: {args.sessions} idle sessions opened and closed, {args.churn} rounds",
             f"  idle: RSS {mib(found['idle_rss_kib'])}, {found['idle_fds']} descriptors",
             f"  {'round':>5} {'sessions':>8} {'RSS open':>10} {'RSS after':>10} {'descriptors after':>18}"]
    for number, r in enumerate(found["rounds"], 1):
        lines.append(f"  {number:>5} {r['sessions']:>8} {mib(r['rss_kib']):>10} {mib(r['after_rss_kib']):>10} "
                     f"{r['after_fds']!s:>18}")
    problems = [e for r in found["rounds"] for e in r["errors"]][:5] + found["pgwarden_log_errors"][:5]
    lines += [f"  problem: {p}" for p in problems]
    lines.append("  result: " + ("ok" if ok else "FAILED"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=500, help="sessions held open at once (default 500)")
    p.add_argument("--busy", type=int, default=50, help="of them busy, running statements (default 50)")
    p.add_argument("--duration", type=int, default=60, help="seconds the busy sessions run (default 60)")
    p.add_argument("--protocol", default="simple", choices=("simple", "extended", "prepared"))
    p.add_argument("--pass-through", action="store_true", help="no rules (default: ten block rules)")
    p.add_argument("--recording", action="store_true", help="record every statement to a file (default off)")
    p.add_argument("--find-limit", action="store_true", help="open sessions in steps until one fails")
    p.add_argument("--max-sessions", type=int, default=2000, help="--find-limit: stop there (default 2000)")
    p.add_argument("--step", type=int, default=250, help="--find-limit: sessions per step (default 250)")
    p.add_argument("--churn", type=int, metavar="ROUNDS",
                   help="open and close --sessions idle sessions ROUNDS times: RSS each round")
    p.add_argument("--nofile", help="run pgwarden under this descriptor limit, SOFT:HARD (prlimit)")
    args = p.parse_args(argv)
    if not 0 < args.busy <= args.sessions:
        p.error("--busy must be between 1 and --sessions")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say(raise_soft_limit().describe().replace("file descriptors", "this driver's file descriptors"))
    most = args.max_sessions if args.find_limit else args.sessions + args.busy
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="load-", dir=RESULTS_FILE.parent))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        pg = start_postgres(most + 20, stack)
        say("starting pgwarden")
        svc, target = start_pgwarden(args, pg, workdir, stack)
        time.sleep(3.0)  # settled (the live catalog's first load done), before the idle figures
        if args.find_limit:
            found, ok = find_limit(args, svc, target)
            text = report_limit(found)
        elif args.churn:
            found, ok = churn(args, svc, target)
            text = report_churn(args, found, ok)
        else:
            found, ok = load(args, svc, target, workdir)
            text = report_load(args, found, ok)
        RESULTS_FILE.write_text(json.dumps({"args": vars(args), **found}, indent=1, default=str))
    print(text)
    say(f"details in {RESULTS_FILE}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
