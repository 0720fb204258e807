"""The workloads, the targets pgbench runs them against, and one pgbench run and its result."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pgbench_run.settings import CLIENTS, DATABASE, THREADS, tool

# The rows-10k workload's script: a large result per transaction.
ROWS_SCRIPT = "SELECT * FROM pgbench_accounts WHERE aid <= 10000;\n"


@dataclass(frozen=True)
class Workload:
    """One pgbench invocation pattern, run identically against every target."""

    name: str
    title: str
    args: tuple[str, ...]
    script: str | None = None  # a custom script file's text, instead of a built-in script
    clients: int = CLIENTS
    threads: int = THREADS


WORKLOADS: tuple[Workload, ...] = (
    Workload("select-simple", "select-only, simple protocol", ("-S", "-M", "simple")),
    Workload("select-extended", "select-only, extended protocol", ("-S", "-M", "extended")),
    Workload("select-prepared", "select-only, prepared statements", ("-S", "-M", "prepared")),
    Workload("tpcb", "TPC-B-like (pgbench default script)", ("-M", "simple")),
    Workload("rows-10k", "10,000-row result per transaction", ("-M", "simple"), script=ROWS_SCRIPT),
    Workload("connect", "new connection per transaction (-C), select-only simple",
             ("-S", "-M", "simple", "-C")),
)

# Not a throughput figure: one client, so pgbench's average latency is the round
# trip of one statement and the difference to direct is what the proxy adds.
LATENCY = Workload("latency-1c", "1 client, select-only simple (added latency)",
                   ("-S", "-M", "simple"), clients=1, threads=1)

ALL_NAMES = [w.name for w in WORKLOADS] + [LATENCY.name]


@dataclass(frozen=True)
class Target:
    """Where pgbench connects, and as whom."""

    name: str
    host: str
    port: int
    user: str
    password: str

    def env(self) -> dict[str, str]:
        """The environment for libpq clients: our password, and no inherited PG* surprises.

        TLS and GSS encryption are off for every target so that none of them pays
        for encryption the others do not (the test server does have ssl = on).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=self.password, PGSSLMODE="disable", PGGSSENCMODE="disable",
                   PGCONNECT_TIMEOUT="15")
        return env

    def conn_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]


@dataclass
class RunResult:
    """The outcome of one pgbench run against one target."""

    target: str
    ok: bool = False
    tps: float | None = None
    tps_basis: str | None = None  # pgbench's words, e.g. "without initial connection time"
    latency_ms: float | None = None
    connection_ms: float | None = None  # pgbench's "average connection time" (-C runs)
    transactions: int | None = None
    failed_transactions: int | None = None
    error: str | None = None
    command: str = ""
    # pgwarden only: its resources while this run lasted
    pgwarden_peak_rss_kib: int | None = None
    pgwarden_cpu_percent: float | None = None
    pgwarden_log_errors: list[str] = field(default_factory=list)
    # the recording pgwarden only: bytes its record file grew by during the run
    record_bytes: int | None = None
    # the table's runs (`pgbench_run.table`): the target process's CPU per transaction, µs
    cpu_us_per_statement: float | None = None


def probe(target: Target) -> str | None:
    """One `SELECT 1` through the target; returns why it failed, or None.

    Why: a target that cannot serve a trivial query would otherwise fail every
    workload one by one (or hang each until its timeout) with less clear output.
    """
    cmd = [tool("psql"), "-X", "-q", "-A", "-t", *target.conn_args(), "-d", DATABASE, "-c", "SELECT 1"]
    try:
        done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "SELECT 1 did not answer within 30 s"
    if done.returncode != 0 or done.stdout.strip() != "1":
        return f"SELECT 1 failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
    return None


TPS_LINE = re.compile(r"^tps = ([0-9.]+) \(([^)]*)\)", re.MULTILINE)
LATENCY_LINE = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
CONNECTION_LINE = re.compile(r"^average connection time = ([0-9.]+) ms", re.MULTILINE)
PROCESSED_LINE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
FAILED_LINE = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def parse_pgbench(stdout: str, result: RunResult) -> None:
    """Fills TPS, latency and counts from pgbench's summary.

    pgbench 15 prints "tps = N (without initial connection time)" normally, and
    with -C only "tps = N (including reconnection times)", connecting being the
    point there; pgbench before 14 printed both an "including connections
    establishing" and an "excluding" line. The figure without connection time is
    taken where there is one, else the one including it; which one is recorded.
    """
    lines = TPS_LINE.findall(stdout)
    without = [(v, b) for v, b in lines if b.startswith(("without", "excluding"))]
    chosen = (without or lines or [None])[0]
    if chosen is not None:
        result.tps, result.tps_basis = float(chosen[0]), chosen[1]
    if m := LATENCY_LINE.search(stdout):
        result.latency_ms = float(m.group(1))
    if m := CONNECTION_LINE.search(stdout):
        result.connection_ms = float(m.group(1))
    if m := PROCESSED_LINE.search(stdout):
        result.transactions = int(m.group(1))
    if m := FAILED_LINE.search(stdout):
        result.failed_transactions = int(m.group(1))


def summarize_failure(done: subprocess.CompletedProcess) -> str:
    """pgbench's own error lines (all of them, bounded), then the tail of its stderr."""
    lines = (done.stderr or "").strip().splitlines()
    errors = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()]
    picked = errors[:8] + (["..."] if len(errors) > 8 else []) + lines[-4:]
    seen: list[str] = []
    for ln in picked:
        if ln not in seen:
            seen.append(ln)
    return f"pgbench exited {done.returncode}:\n" + "\n".join(seen)


def run_pgbench(workload: Workload, target: Target, duration: int, script_dir: Path) -> RunResult:
    """One timed pgbench run; never raises for a failing target, the failure is the result."""
    cmd = [tool("pgbench"), *target.conn_args(), "-n", "-T", str(duration),
           "-c", str(workload.clients), "-j", str(workload.threads), *workload.args]
    if workload.script is not None:
        script = script_dir / f"{workload.name}.sql"
        script.write_text(workload.script)
        cmd += ["-f", str(script)]
    cmd.append(DATABASE)
    result = RunResult(target=target.name, command=" ".join(cmd))
    try:
        done = subprocess.run(cmd, env=target.env(), capture_output=True, text=True,
                              timeout=duration + 120)
    except subprocess.TimeoutExpired as e:
        result.error = f"pgbench did not finish within {duration + 120} s (killed)\n" + \
            (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))[-2000:]
        return result
    parse_pgbench(done.stdout, result)
    if done.returncode != 0:
        result.error = summarize_failure(done)
    elif result.tps is None:
        result.error = f"no tps line in pgbench's output:\n{done.stdout[-1500:]}"
    elif result.failed_transactions:
        result.error = f"{result.failed_transactions} failed transactions"
    result.ok = result.error is None
    return result
