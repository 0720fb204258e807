#!/usr/bin/env python3
"""pgbench against PostgreSQL directly, through pgwarden and through PgBouncer, in one run.

Why one script does everything: the figures of a workload only mean something
next to each other when they were taken on the same machine, the same data and
the same minute. So this starts a throwaway PostgreSQL, fills it with
``pgbench -i``, puts pgwarden and PgBouncer in front of it, and then runs each
workload against the targets back to back (rotating which goes first) before
moving on to the next workload. For the select-only simple and prepared
workloads two more targets join: a second pgwarden whose policy has ten block
rules, so what checking rules costs is measured beside the pass-through figure,
and a third that records every statement to a file, so what recording costs is
measured against recording off in the same run, once per workload like the
other targets and then in a few paired rounds of shorter runs (recording off
and on, alternating order) whose median resolves what one pair cannot. The
ratios to direct of the pgwarden with rules, for which the targets are set,
are also measured that way: rounds of direct, it and PgBouncer. The
pgwardens without a record sink run with recording off (no sink, the
recording plugin disabled).

Prints a table of TPS and ratios, the cost of recording and the size of its
records, the latency pgwarden adds per statement, and pgwarden's memory; writes
the same to ``.bench/results.json``. At the end the record file is checked with
`pgwarden.chain.verify` against the chain head pgwarden logged when it closed it.
Everything it started is stopped and every temporary directory removed on exit,
Ctrl-C and errors included.

    make bench                      # default: 15 s per run
    .venv/bin/python bench/run.py --quick --only select-simple --no-pgbouncer
    .venv/bin/python bench/run.py --no-rules        # without the pgwarden with rules
    .venv/bin/python bench/run.py --no-recording    # without the pgwarden that records
    .venv/bin/python bench/run.py --paired-rounds 5 # more rounds for the recording cost and the rules targets
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmark the working tree, not some other install

import yaml  # noqa: E402  (after the path tweak on purpose)

from analysis import RULES as TEN_RULES  # noqa: E402  (bench/analysis.py: one list for both)
from pgwarden.chain import verify as verify_chain  # noqa: E402
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres, free_port  # noqa: E402
from pgwarden.tokens import generate_key, mint  # noqa: E402

RESULTS_FILE = REPO / ".bench" / "results.json"
DATABASE = "appdb"
SCALE = 10
CLIENTS = 8
THREADS = 2
ISSUER = "https://issuer.pgwarden.bench"
AUDIENCE = "pgwarden"
BENCH_SUBJECT = "bench-agent"
PGBOUNCER_RUN_AS = "postgres"
ROWS_SCRIPT = "SELECT * FROM pgbench_accounts WHERE aid <= 10000;\n"

DIRECT, PGWARDEN, PGBOUNCER = "direct", "pgwarden", "pgbouncer"
PGWARDEN_RULES = "pgwarden-rules"
PGWARDEN_RECORDING = "pgwarden-recording"

# The pass-through pgwarden: one policy for everyone, no rules.
PASS_THROUGH_POLICY = {"name": "everyone", "default": "allow"}
# The pgwarden with rules: ten block rules of the kinds this release interprets
# (the same as bench/analysis.py's), as an agent deployment might have. Every
# statement is checked against all of them; none matches pgbench's statements,
# so the figure is the cost of checking, not of refusing.
BLOCK_RULES = TEN_RULES
RULES_POLICY = {"name": "agents", "rules": BLOCK_RULES}
RULES_LABEL = f"{len(BLOCK_RULES)} rules"
# Only where the targets for pgwarden with rules are set (a share of direct TPS with
# -M simple and with -M prepared): a run for every workload would add minutes. Its
# ratios are also measured from --paired-rounds rounds of short runs of direct, it
# and PgBouncer in rotating order.
RULES_TARGETS = {"select-simple": 0.45, "select-prepared": 0.55}
RULES_WORKLOADS = tuple(RULES_TARGETS)

# Recording off, for every pgwarden but the recording one: no sink, and the
# recording plugin disabled. Why both: with `sinks: []` alone the core still
# builds every record and hands it to the plugin (which has nowhere to write
# it), a cost pgwarden before recording did not have; disabled, no record is
# built and the figures compare with those of earlier releases.
RECORDING_OFF = {"recording": {"sinks": []}, "plugins": {"disable": ["recording"]}}
# The pgwarden that records: every statement to one file sink in the run's temp
# dir, with the defaults of a file sink (fsync_s 1, max_bytes 100 MiB) but
# enough rotated files kept that no record of the run is dropped.
RECORDS_FILE = "records.jsonl"
RECORDS_KEEP = 1000
RECORDING_LABEL = "recording"
# Where the target for recording is set (at most 10% of select-only TPS, against
# recording off in the same run).
RECORDING_WORKLOADS = ("select-simple", "select-prepared")
# One run each of recording on and off cannot resolve 10% on a machine where a
# target's TPS moves by 20-40% between runs; the cost is also measured from this
# many rounds of a shorter pair of runs in alternating order (median and range).
PAIRED_ROUNDS = 3
RECORDING_TARGET_COST = 0.10
# The extra pgwardens run only for their workloads: a run for every workload would add minutes.
EXTRA_TARGET_WORKLOADS = {PGWARDEN_RULES: RULES_WORKLOADS, PGWARDEN_RECORDING: RECORDING_WORKLOADS}


# ---------------------------------------------------------------------------------------------
# What is measured


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


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 5 if args.quick else 15
    if args.duration <= 0:
        p.error("--duration must be positive")
    return args


def say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Child processes


class Service:
    """A long-running child process we started, with its output in a log file.

    Started in its own session so a Ctrl-C in the terminal reaches us, not it:
    we then stop it ourselves, in order, and know it is gone.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, **popen_kw) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._popen_kw = popen_kw
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, **self._popen_kw)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_since(0).splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it will not go; only ever our own pid."""
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def wait_for_port(host: str, port: int, service: Service, timeout: float = 20.0) -> None:
    """Returns once something accepts TCP connections there; raises if the service died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited ({service.proc.returncode}):\n{service.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not listen on {host}:{port} within {timeout:.0f}s:\n"
                       f"{service.log_tail()}")


def tool(name: str) -> str:
    """The path of a command, looking in the sbin directories too (pgbouncer lives in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found on PATH")


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


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def start_postgres(stack: contextlib.ExitStack) -> TempPostgres:
    """A throwaway server; its stop() is registered before start() so a half start is cleaned up."""
    pg = TempPostgres()
    stack.callback(pg.stop)
    say(f"starting PostgreSQL on {pg.host}:{pg.port}")
    return pg.start()


def init_pgbench_data(direct: Target) -> None:
    """`pgbench -i` as the application role over TCP, the way the benchmark clients connect."""
    say(f"pgbench -i -s {SCALE} (about {SCALE * 100_000:,} accounts)")
    cmd = [tool("pgbench"), "-i", "-s", str(SCALE), "-q", *direct.conn_args(), DATABASE]
    done = subprocess.run(cmd, env=direct.env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench -i failed ({done.returncode}):\n{done.stderr.strip()}")


def reset_tables(pg: TempPostgres) -> None:
    """What pgbench does before a run (vacuum, empty history), done here directly.

    Why here and not by pgbench: it is then the same for every target, costs no
    target anything, and the runs pass -n. The checkpoint keeps one run's dirty
    pages from being written during the next.
    """
    pg.psql("VACUUM pgbench_branches, pgbench_tellers", DATABASE)
    pg.psql("TRUNCATE pgbench_history", DATABASE)
    pg.psql("CHECKPOINT", DATABASE)


# ---------------------------------------------------------------------------------------------
# pgwarden


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


def start_pgwarden(name: str, config: Path, workdir: Path,
                   stack: contextlib.ExitStack, tree: Path | None = None) -> tuple[Service, int]:
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
                  workdir / f"{name}.log", cwd=str(tree or REPO), env=env).start()
    stack.callback(svc.stop)
    return svc, read_ready_port(svc, ready)


def read_ready_port(svc: Service, ready: Path, timeout_s: float = 30) -> int:
    """The port a service we started wrote to its ready file, once it has."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not svc.alive():
            raise RuntimeError(f"{svc.name} exited ({svc.proc.returncode}) before listening:\n{svc.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            return int(ready.read_text().strip())
        time.sleep(0.05)
    raise RuntimeError(f"{svc.name} wrote no ready file within {timeout_s:g} s:\n{svc.log_tail()}")


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


# ---------------------------------------------------------------------------------------------
# PgBouncer


def find_or_install_pgbouncer() -> tuple[str | None, str]:
    """pgbouncer's path, installing the Debian package if needed; or None and the reason."""
    with contextlib.suppress(FileNotFoundError):
        return tool("pgbouncer"), ""
    if os.geteuid() != 0:
        return None, "pgbouncer is not installed and we are not root, so apt-get cannot install it"
    if not shutil.which("apt-get"):
        return None, "pgbouncer is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
    say("pgbouncer not found; installing it with apt-get")
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # perhaps stale package lists: refresh once and retry
        say("apt-get install failed; running apt-get update and retrying")
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        return None, f"apt-get install pgbouncer failed ({done.returncode}): {tail}"
    try:
        return tool("pgbouncer"), ""
    except FileNotFoundError:
        return None, "apt-get installed pgbouncer but no pgbouncer binary was found"


def pgbouncer_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "unknown"


def write_pgbouncer_config(pg: TempPostgres, directory: Path, port: int) -> Path:
    """Session pooling, SCRAM with a userlist, TCP on loopback only, no Unix socket.

    The userlist holds the plain password so PgBouncer can both check the
    client's SCRAM login and log in upstream with SCRAM itself.
    """
    (directory / "userlist.txt").write_text(f'"{APP_USER}" "{APP_PASSWORD}"\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{DATABASE} = host={pg.host} port={pg.port} dbname={DATABASE}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory / "userlist.txt"}
pool_mode = session
max_client_conn = 100
default_pool_size = 20
server_tls_sslmode = disable
client_tls_sslmode = disable
logfile =
syslog = 0
log_connections = 0
log_disconnections = 0
"""
    )
    return ini


def start_pgbouncer(binary: str, pg: TempPostgres, stack: contextlib.ExitStack) -> tuple[Service, int]:
    """PgBouncer in the foreground as an unprivileged user, in a temp dir only that user can read."""
    user = pwd.getpwnam(PGBOUNCER_RUN_AS) if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="pgwarden-bench-pgbouncer-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    port = free_port()
    ini = write_pgbouncer_config(pg, directory, port)
    popen_kw: dict = {"cwd": str(directory)}
    if user is not None:
        for path in (directory, *directory.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        popen_kw.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    directory.chmod(0o700)
    svc = Service(PGBOUNCER, [binary, str(ini)], directory / "pgbouncer.log", **popen_kw).start()
    stack.callback(svc.stop)
    wait_for_port("127.0.0.1", port, svc)
    return svc, port


def setup_pgbouncer(pg: TempPostgres, stack: contextlib.ExitStack) -> tuple[Target | None, str, str]:
    """PgBouncer as a target, or None with the reason it could not be had (the run goes on)."""
    binary, why = find_or_install_pgbouncer()
    if binary is None:
        return None, why, ""
    version = pgbouncer_version(binary)
    try:
        _svc, port = start_pgbouncer(binary, pg, stack)
    except (RuntimeError, OSError, KeyError) as e:
        return None, f"pgbouncer did not start: {e}", version
    target = Target(PGBOUNCER, "127.0.0.1", port, APP_USER, APP_PASSWORD)
    failure = probe(target)
    if failure:
        return None, f"pgbouncer does not serve queries: {failure}", version
    return target, "", version


# ---------------------------------------------------------------------------------------------
# pgwarden's memory and CPU


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


# ---------------------------------------------------------------------------------------------
# pgbench


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


# ---------------------------------------------------------------------------------------------
# Records of the recording pgwarden


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


# ---------------------------------------------------------------------------------------------
# Running the workloads


class PgwardenRunner:
    """Keeps pgwarden up across workloads and notes what it did during each run.

    Why a class: a pgwarden that crashes in one workload is a finding to report,
    not a reason to lose the others, so it is restarted (and the crash recorded).
    """

    def __init__(self, name: str, config: Path, workdir: Path, token: str,
                 stack: contextlib.ExitStack, record_log: RecordLog | None = None,
                 tree: Path | None = None) -> None:
        self.name, self.config, self.workdir, self.token, self.stack = name, config, workdir, token, stack
        self.tree = tree
        self.record_log = record_log  # its record file, if it records
        self.service, port = start_pgwarden(name, config, workdir, stack, tree)
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
        self.service, port = start_pgwarden(self.name, self.config, self.workdir, self.stack, self.tree)
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


# ---------------------------------------------------------------------------------------------
# Reporting


def ratio(a: RunResult | None, b: RunResult | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or not b.tps:
        return None
    return a.tps / b.tps


def fmt_tps(r: RunResult | None) -> str:
    if r is None:
        return "-"
    return f"{r.tps:,.0f}" if r.ok else "FAIL"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


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


EXTRA_LABELS = {PGWARDEN_RULES: RULES_LABEL, PGWARDEN_RECORDING: RECORDING_LABEL}


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


class PgbenchRunner:
    """A target that is not a pgwarden (direct, PgBouncer) with the interface of `PgwardenRunner`."""

    def __init__(self, target: Target) -> None:
        self.name, self.target = target.name, target

    def run(self, workload: Workload, duration: int, script_dir: Path) -> RunResult:
        return run_pgbench(workload, self.target, duration, script_dir)


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


def added_latency(results: dict[str, RunResult]) -> dict:
    """Per-statement latency of each target at one client, and what each proxy adds to direct (µs)."""
    out: dict = {"latency_ms": {n: r.latency_ms for n, r in results.items() if r.ok}}
    direct = results.get(DIRECT)
    for name in (PGWARDEN, PGBOUNCER):
        r = results.get(name)
        if direct and direct.ok and r and r.ok:
            out[f"{name}_added_us"] = round((r.latency_ms - direct.latency_ms) * 1000, 1)
    return out


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
        parts.append(f"  {name:<16} {w['tps_recording']:,.0f} TPS against {w['tps_off']:,.0f} ({against}, recording off): "
                     f"{w['recording_over_off']:.2f}x; {size} per statement{cpu}")
        pr = w.get("paired")
        if pr is not None:
            cpu_added = ("" if pr["cpu_us_added_median"] is None else
                         f"; pgwarden CPU {pr['cpu_us_added_median']:+.0f} µs per statement on "
                         f"{pr['cpu_us_off_median']:.0f}")
            parts.append(f"  {'':<16} paired rounds: cost {pr['cost_median'] * 100:.0f}% (median of {pr['rounds']} pairs "
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
                  recording: dict | None = None, target_rounds: dict | None = None) -> str:
    parts = [f"pgbench {duration} s per run, scale {SCALE}; throughput runs with {CLIENTS} clients / "
             f"{THREADS} threads", ""]
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
               recording: dict | None = None, target_rounds: dict | None = None) -> None:
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
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class Setup:
    """What is running: the server, the targets in report order, and what to skip."""

    pg: TempPostgres
    targets: list[Target]
    pgwarden: PgwardenRunner
    idle_rss_kib: int | None
    skip: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pgbouncer_version: str | None = None
    load_before: list[float] = field(default_factory=list)
    pgwarden_rules: PgwardenRunner | None = None  # the pgwarden with rules, when it is wanted
    pgwarden_recording: PgwardenRunner | None = None  # the pgwarden that records, when it is wanted

    @property
    def pgwardens(self) -> dict[str, PgwardenRunner]:
        """Every pgwarden of the run, by target name."""
        found = {PGWARDEN: self.pgwarden}
        if self.pgwarden_rules is not None:
            found[PGWARDEN_RULES] = self.pgwarden_rules
        if self.pgwarden_recording is not None:
            found[PGWARDEN_RECORDING] = self.pgwarden_recording
        return found

    def targets_for(self, workload: Workload) -> list[Target]:
        """The targets of one workload: all but the extra pgwardens outside their workloads."""
        return [t for t in self.targets
                if t.name not in EXTRA_TARGET_WORKLOADS or workload.name in EXTRA_TARGET_WORKLOADS[t.name]]


def probe_pgwarden(pgwarden: PgwardenRunner, skip: dict[str, str]) -> None:
    """Marks a pgwarden that cannot serve `SELECT 1` to be skipped, saying why."""
    failure = probe(pgwarden.target)
    if failure:
        say(f"{pgwarden.name} cannot serve SELECT 1: {failure}\n{pgwarden.service.log_tail()}")
        skip[pgwarden.name] = f"skipped: the SELECT 1 probe failed: {failure}"


def rules_wanted(args) -> bool:
    """Whether to start the pgwarden with rules: not refused, and a workload of it selected."""
    return not args.no_rules and bool(set(args.only or ALL_NAMES) & set(RULES_WORKLOADS))


def recording_wanted(args) -> bool:
    """Whether to start the pgwarden that records: not refused, and a workload of it selected."""
    return not args.no_recording and bool(set(args.only or ALL_NAMES) & set(RECORDING_WORKLOADS))


def recording_section(workdir: Path) -> dict:
    """The recording pgwarden's ``recording:``: one file sink, its defaults but for ``keep``."""
    return {"sinks": [{"file": str(workdir / RECORDS_FILE), "keep": RECORDS_KEEP}]}


def set_up(args, workdir: Path, stack: contextlib.ExitStack) -> Setup:
    """PostgreSQL with pgbench's tables, PgBouncer (if wanted and possible), and the pgwardens."""
    for name in ("pgbench", "psql", "initdb", "pg_ctl"):
        tool(name)  # fail early and clearly if PostgreSQL's tools are missing
    load_before = list(os.getloadavg())
    notes: list[str] = []
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        # Not refused: but figures taken on a busy machine should say so.
        notes.append(f"The machine was busy before the run started (load average {load_before[0]:.2f} "
                     f"on {os.cpu_count()} CPUs): absolute figures are lower and noisier than usual.")
    pg = start_postgres(stack)
    direct = Target(DIRECT, pg.host, pg.port, APP_USER, APP_PASSWORD)
    init_pgbench_data(direct)

    bouncer, bouncer_version = None, None
    if args.no_pgbouncer:
        notes.append("PgBouncer left out (--no-pgbouncer).")
    else:
        say("starting PgBouncer")
        bouncer, why, bouncer_version = setup_pgbouncer(pg, stack)
        if bouncer is None:
            say(f"continuing without PgBouncer: {why}")
            notes.append(f"PgBouncer left out: {why}")

    say("starting pgwarden")
    jwks, token = mint_bench_token(workdir)
    config = write_pgwarden_config(pg, workdir, PGWARDEN, PASS_THROUGH_POLICY, jwks)
    pgwarden = PgwardenRunner(PGWARDEN, config, workdir, token, stack)
    time.sleep(1.0)  # let the interpreter settle before calling its memory "idle"
    idle_rss = read_status_kib(pgwarden.service.pid, "VmRSS")
    skip: dict[str, str] = {}
    probe_pgwarden(pgwarden, skip)

    rules = None
    if args.no_rules:
        notes.append(f"pgwarden with {RULES_LABEL} left out (--no-rules).")
    elif rules_wanted(args):
        say(f"starting pgwarden with {RULES_LABEL}")
        config = write_pgwarden_config(pg, workdir, PGWARDEN_RULES, RULES_POLICY, jwks)
        rules = PgwardenRunner(PGWARDEN_RULES, config, workdir, token, stack)
        probe_pgwarden(rules, skip)

    recording = None
    if args.no_recording:
        notes.append("pgwarden with recording left out (--no-recording).")
    elif recording_wanted(args):
        say("starting pgwarden with recording to a file")
        section = recording_section(workdir)
        # The same policy as the pgwarden it is compared with (see recording_summary).
        policy = RULES_POLICY if rules is not None else PASS_THROUGH_POLICY
        config = write_pgwarden_config(pg, workdir, PGWARDEN_RECORDING, policy, jwks, section)
        recording = PgwardenRunner(PGWARDEN_RECORDING, config, workdir, token, stack,
                                   record_log=RecordLog(workdir / RECORDS_FILE))
        probe_pgwarden(recording, skip)
    targets = [direct, pgwarden.target] + ([rules.target] if rules else []) + \
        ([recording.target] if recording else []) + ([bouncer] if bouncer else [])
    return Setup(pg, targets, pgwarden, idle_rss, skip, notes, bouncer_version, load_before,
                 pgwarden_rules=rules, pgwarden_recording=recording)


def summarize_pgwarden(setup: Setup, rows, latency) -> dict:
    """pgwarden's memory and CPU: idle, per workload, and its high-water mark at the end."""
    runs = [(w.name, res[PGWARDEN]) for w, res in rows if PGWARDEN in res]
    if latency and PGWARDEN in latency:
        runs.append((LATENCY.name, latency[PGWARDEN]))
    return {
        "idle_rss_kib": setup.idle_rss_kib,
        "peak_rss_kib_by_workload": {n: r.pgwarden_peak_rss_kib for n, r in runs},
        "cpu_percent_by_workload": {n: None if r.pgwarden_cpu_percent is None
                                    else round(r.pgwarden_cpu_percent, 1) for n, r in runs},
        "vmhwm_kib": read_status_kib(setup.pgwarden.service.pid, "VmHWM"),
        # the extra pgwardens crashing is as much a finding, so it is listed here too
        "crashes": setup.pgwarden.crashes + [
            {**c, "during": f"{c['during']} ({extra.name})"}
            for extra in (setup.pgwarden_rules, setup.pgwarden_recording) if extra is not None
            for c in extra.crashes],
    }


def run_metadata(args, setup: Setup) -> dict:
    """Enough context to tell whether two results files can be compared."""
    pgbench = subprocess.run([tool("pgbench"), "--version"], capture_output=True, text=True)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": args.duration, "clients": CLIENTS, "threads": THREADS, "scale": SCALE,
        "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "pgbench": pgbench.stdout.strip(), "pgbouncer": setup.pgbouncer_version,
        "pgwarden_revision": git_revision(), "targets": [t.name for t in setup.targets],
        "pgwarden_rules_policy": RULES_POLICY if setup.pgwarden_rules is not None else None,
        "recording_off": RECORDING_OFF,
        "pgwarden_recording": (recording_section(Path("$WORKDIR")) if setup.pgwarden_recording is not None
                               else None),
        "load_average_before": setup.load_before, "load_average_after": list(os.getloadavg()),
    }


def run_benchmark(args, stack: contextlib.ExitStack) -> int:
    names = set(args.only or ALL_NAMES)
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
    print(render_report(rows, latency, pgwarden_info, notes, args.duration, recording, target_rounds), flush=True)
    write_json(RESULTS_FILE, rows, latency, pgwarden_info, run_metadata(args, setup), notes, recording,
               target_rounds)
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


if __name__ == "__main__":
    sys.exit(main())
