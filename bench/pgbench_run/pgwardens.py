"""The pgwardens of a run: their configs and processes, kept up across workloads.

Also what is measured of them besides pgbench's figures: their memory and CPU, their logged
errors, and the record file of the one that records, verified at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import yaml

from pgbench_run import REPO
from pgbench_run.servers import Service, read_ready_port
from pgbench_run.settings import (
    AUDIENCE,
    BENCH_SUBJECT,
    DATABASE,
    ISSUER,
    RECORDING_OFF,
    RECORDS_FILE,
    RECORDS_KEEP,
    say,
)
from pgbench_run.workloads import RunResult, Target, Workload, run_pgbench
from pgwarden.chain import verify as verify_chain
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres
from pgwarden.tokens import generate_key, mint


def mint_bench_token(workdir: Path) -> tuple[Path, str]:
    """A local JWKS and a token it verifies; one of each serves every pgwarden of the run."""
    private_key, jwks = generate_key(workdir / "keys")
    # Long-lived, so a long --duration never outlives it mid-run.
    token = mint(private_key, subject=BENCH_SUBJECT, issuer=ISSUER, audience=AUDIENCE,
                 groups=["bench"], ttl_s=24 * 3600)
    return jwks, token


def write_pgwarden_config(pg: TempPostgres, workdir: Path, name: str, policy: dict, jwks: Path,
                          recording: dict | None = None) -> Path:
    """A pgwarden before ``pg`` (same shape as the test harness's) with this one policy.

    Port 0 plus --ready-file: the kernel picks a free port, so there is no race
    with anything else choosing one; the admin endpoint also takes port 0, so
    several pgwardens can run side by side. Only the policy and the
    ``recording`` section (None: recording off) differ between the pgwardens of
    a run, so their figures differ by what those cost.
    """
    password_file = workdir / "upstream-password"
    password_file.write_text(APP_PASSWORD + "\n")
    password_file.chmod(0o600)
    doc = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "upstream": {"host": pg.host, "port": pg.port, "database": DATABASE, "user": APP_USER,
                     "password_file": str(password_file)},
        "auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}},
        "admin": {"host": "127.0.0.1", "port": 0},
        "policies": [policy],
        **(RECORDING_OFF if recording is None else {"recording": recording}),
    }
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def recording_section(workdir: Path) -> dict:
    """The recording pgwarden's ``recording:``: one file sink, its defaults but for ``keep``."""
    return {"sinks": [{"file": str(workdir / RECORDS_FILE), "keep": RECORDS_KEEP}]}


def start_pgwarden(name: str, config: Path, workdir: Path, stack: contextlib.ExitStack,
                   tree: Path | None = None, stdout: Path | None = None) -> tuple[Service, int]:
    """`python -m pgwarden run` as a child process; returns it and the port from its ready file.

    ``tree``: another checkout of the repository (`ab.py --against`) whose pgwarden
    and built-in plugins run instead of this one's, on the same interpreter.
    """
    ready = workdir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    env = None
    if tree is not None:
        # The built-in plugins install as the package pgwarden_plugins (setup.cfg): a link of
        # that name to the tree's plugins/ ahead of site-packages makes its own ones load.
        shim = workdir / f"{name}.path"
        shim.mkdir(exist_ok=True)
        link = shim / "pgwarden_plugins"
        if not link.exists():
            link.symlink_to(tree / "plugins")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(shim)])}
    svc = Service(name, [sys.executable, "-m", "pgwarden", "run", "-c", str(config),
                         "--ready-file", str(ready)],
                  workdir / f"{name}.log", stdout, cwd=str(tree or REPO), env=env).start()
    stack.callback(svc.stop)
    return svc, read_ready_port(svc, ready)


# pgwarden's op log is JSON lines when not on a terminal ("level":"error"); the
# bracketed form is Twisted's own text format, kept for older revisions.
ERROR_LINE = re.compile(r'"level":\s*"(error|critical)"|#(error|critical|failure)\]|Traceback|Unhandled',
                        re.IGNORECASE)


def error_lines(log_text: str, limit: int = 20) -> list[str]:
    """The lines of pgwarden's log that report an error, so a run that 'passed' still shows them."""
    found = [line for line in log_text.splitlines() if ERROR_LINE.search(line)]
    if len(found) > limit:
        found = found[:limit] + [f"... and {len(found) - limit} more"]
    return found


class ResourceSampler:
    """Polls /proc/<pid>/status for VmRSS in a background thread.

    Why poll: the peak while a large result streams through is what matters for
    sizing, and it lasts only as long as the stream; VmHWM at the end gives the
    true high-water mark, the per-run peaks say which workload reached it.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._phase_peak = 0
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._phase_cpu: tuple[float, float] | None = None

    def start(self) -> ResourceSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def watch(self, pid: int) -> None:
        """Follow a restarted pgwarden."""
        with self._lock:
            self.pid = pid

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = read_status_kib(self.pid, "VmRSS")
            if rss is not None:
                with self._lock:
                    self._phase_peak = max(self._phase_peak, rss)

    def begin_phase(self) -> None:
        with self._lock:
            self._phase_peak = read_status_kib(self.pid, "VmRSS") or 0
        self._phase_cpu = (time.monotonic(), read_cpu_seconds(self.pid) or 0.0)

    def end_phase(self) -> tuple[int, float | None]:
        """Peak RSS (KiB) since begin_phase, and CPU use as a percentage of one core."""
        with self._lock:
            peak = max(self._phase_peak, read_status_kib(self.pid, "VmRSS") or 0)
        cpu_percent = None
        cpu_now = read_cpu_seconds(self.pid)
        if self._phase_cpu and cpu_now is not None:
            started, cpu_then = self._phase_cpu
            wall = time.monotonic() - started
            if wall > 0 and cpu_now >= cpu_then:
                cpu_percent = 100.0 * (cpu_now - cpu_then) / wall
        return peak, cpu_percent


def read_status_kib(pid: int, key: str) -> int | None:
    """A `kB` line (VmRSS, VmHWM, ...) of /proc/<pid>/status, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of the process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class RecordLog:
    """The record file of the recording pgwarden, with the files rotated out of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> list[Path]:
        """Oldest first, the order `pgwarden verify` wants: path.N, ..., path.1, path."""
        rotated = [p for p in self.path.parent.glob(self.path.name + ".*") if p.suffix[1:].isdigit()]
        live = [self.path] if self.path.exists() else []
        return sorted(rotated, key=lambda p: -int(p.suffix[1:])) + live

    def size(self) -> int:
        total = 0
        for p in self.files():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def settled_size(self, quiet_s: float = 0.2, timeout_s: float = 3.0) -> int:
        """The size once nothing has been appended for ``quiet_s`` (the last session_end records)."""
        deadline = time.monotonic() + timeout_s
        size = self.size()
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.size()
            if now == size:
                break
            size = now
        return size


def closed_head(log_text: str, path: Path) -> str | None:
    """The chain head pgwarden logged when it last closed ``path`` ("... closed; chain head H")."""
    for line in reversed(log_text.splitlines()):
        if "closed; chain head" not in line:
            continue
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(line)
            if event.get("path") == str(path) and isinstance(event.get("head"), str):
                return event["head"]
        m = re.search(rf"{re.escape(str(path))} closed; chain head ([0-9a-f]{{64}})", line)
        if m:
            return m.group(1)
    return None


def verify_records(runner: PgwardenRunner, log: RecordLog) -> dict:
    """Stops the recording pgwarden, then checks its record files with `pgwarden.chain.verify`.

    Why stop it first: closing the sink makes pgwarden log the chain head it
    last wrote ("closed; chain head H", its op log). Verifying against that head
    also catches records cut off the end, which the chain alone cannot show
    (the procedure docs/records.md describes for auditors).
    """
    runner.service.stop(timeout=30)
    head = closed_head(runner.service.log_since(0), log.path)
    files = log.files()
    started = time.monotonic()
    report = verify_chain([str(p) for p in files], head=head)
    return {
        "ok": report.problem is None,
        "problem": None if report.problem is None else str(report.problem),
        "files": [p.name for p in files],
        "bytes": sum(p.stat().st_size for p in files),
        "records": report.records,
        "head": report.head,
        "closed_head": head,
        "verify_s": round(time.monotonic() - started, 2),
    }


class PgwardenRunner:
    """Keeps pgwarden up across workloads and notes what it did during each run.

    Why a class: a pgwarden that crashes in one workload is a finding to report,
    not a reason to lose the others, so it is restarted (and the crash recorded).
    """

    def __init__(self, name: str, config: Path, workdir: Path, token: str,
                 stack: contextlib.ExitStack, record_log: RecordLog | None = None,
                 tree: Path | None = None, stdout: Path | None = None) -> None:
        self.name, self.config, self.workdir, self.token, self.stack = name, config, workdir, token, stack
        self.tree = tree
        self.stdout = stdout  # where its stdout goes when not to its log (records to stdout)
        self.record_log = record_log  # its record file, if it records
        self.service, port = start_pgwarden(name, config, workdir, stack, tree, stdout)
        self.target = Target(name, "127.0.0.1", port, BENCH_SUBJECT, token)
        self.sampler = ResourceSampler(self.service.pid).start()
        stack.callback(self.sampler.stop)
        self.crashes: list[dict] = []

    def restart_if_dead(self, during: str) -> None:
        if self.service.alive():
            return
        crash = {"during": during, "exit_code": self.service.proc.returncode,
                 "log_tail": self.service.log_tail(40)}
        self.crashes.append(crash)
        say(f"{self.name} DIED during {during} (exit {crash['exit_code']}); restarting it. Log tail:\n"
            f"{crash['log_tail']}")
        self.service, port = start_pgwarden(self.name, self.config, self.workdir, self.stack, self.tree,
                                            self.stdout)
        self.target = Target(self.name, "127.0.0.1", port, BENCH_SUBJECT, self.token)
        self.sampler.watch(self.service.pid)

    def run(self, workload: Workload, duration: int, script_dir: Path) -> RunResult:
        log_offset = self.service.log_size()
        records_before = self.record_log.size() if self.record_log is not None else 0
        self.sampler.begin_phase()
        result = run_pgbench(workload, self.target, duration, script_dir)
        result.pgwarden_peak_rss_kib, result.pgwarden_cpu_percent = self.sampler.end_phase()
        if self.record_log is not None:
            result.record_bytes = self.record_log.settled_size() - records_before
        result.pgwarden_log_errors = error_lines(self.service.log_since(log_offset))
        if not self.service.alive():
            result.ok = False
            result.error = (result.error or "") + f"\n{self.name} exited ({self.service.proc.returncode})"
        self.restart_if_dead(workload.name)
        return result


class PgbenchRunner:
    """A target that is not a pgwarden (direct, PgBouncer) with the interface of `PgwardenRunner`."""

    def __init__(self, target: Target) -> None:
        self.name, self.target = target.name, target

    def run(self, workload: Workload, duration: int, script_dir: Path) -> RunResult:
        return run_pgbench(workload, self.target, duration, script_dir)
