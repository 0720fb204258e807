"""Starting everything a run measures, in order, and what is known of it once it ran."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgbench_run.pgwardens import (
    PgwardenRunner,
    RecordLog,
    mint_bench_token,
    read_status_kib,
    recording_section,
    write_pgwarden_config,
)
from pgbench_run.report import git_revision
from pgbench_run.servers import init_pgbench_data, setup_pgbouncer, start_forwarder, start_postgres
from pgbench_run.settings import (
    CLIENTS,
    DIRECT,
    EXTRA_TARGET_WORKLOADS,
    FORWARDER,
    PASS_THROUGH_POLICY,
    PGWARDEN,
    PGWARDEN_POLICY,
    PGWARDEN_RECORDING,
    PGWARDEN_RULES,
    RECORDING_OFF,
    RECORDING_WORKLOADS,
    RECORDS_FILE,
    RULES_LABEL,
    RULES_POLICY,
    RULES_WORKLOADS,
    SCALE,
    THREADS,
    say,
    tool,
)
from pgbench_run.workloads import ALL_NAMES, LATENCY, Target, Workload, probe
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres


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
    pgwarden_policy: PgwardenRunner | None = None  # the table's: ten rules, recording to stdout (the default)
    pgbouncer_pid: int | None = None
    sessions: dict | None = None  # pass-through pgwarden's RSS with --sessions idle sessions
    forwarder: Target | None = None  # the table's floor (bench/forwarder.py), when it is wanted
    forwarder_pid: int | None = None

    @property
    def pgwardens(self) -> dict[str, PgwardenRunner]:
        """Every pgwarden of the run, by target name."""
        found = {PGWARDEN: self.pgwarden}
        if self.pgwarden_rules is not None:
            found[PGWARDEN_RULES] = self.pgwarden_rules
        if self.pgwarden_recording is not None:
            found[PGWARDEN_RECORDING] = self.pgwarden_recording
        return found

    @property
    def table_pgwardens(self) -> dict[str, PgwardenRunner]:
        """The pgwardens of issue 20's table (`pgbench_run.table`), by target name."""
        found = {PGWARDEN: self.pgwarden}
        if self.pgwarden_rules is not None:
            found[PGWARDEN_RULES] = self.pgwarden_rules
        if self.pgwarden_policy is not None:
            found[PGWARDEN_POLICY] = self.pgwarden_policy
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
    """Whether to start the pgwarden with rules: not refused, and a workload of it selected (or
    the table, whose recording figure is the policy's CPU minus this one's)."""
    return not args.no_rules and (bool(set(args.only or ALL_NAMES) & set(RULES_WORKLOADS)) or args.table_rounds > 0)


def recording_wanted(args) -> bool:
    """Whether to start the pgwarden that records: not refused, and a workload of it selected."""
    return not args.no_recording and bool(set(args.only or ALL_NAMES) & set(RECORDING_WORKLOADS))


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
    # Idle sessions held open (--sessions) each need a server connection of their own.
    pg = start_postgres(stack, max_connections=args.sessions + 100 if args.sessions else None)
    direct = Target(DIRECT, pg.host, pg.port, APP_USER, APP_PASSWORD)
    init_pgbench_data(direct)

    bouncer, bouncer_version, bouncer_pid = None, None, None
    if args.no_pgbouncer:
        notes.append("PgBouncer left out (--no-pgbouncer).")
    else:
        say("starting PgBouncer")
        bouncer, why, bouncer_version, bouncer_pid = setup_pgbouncer(pg, stack)
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
    sessions = idle_sessions(pgwarden, args.sessions) if args.sessions else None

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
    policy_runner = None
    if args.table_rounds > 0:
        say(f"starting pgwarden with {RULES_LABEL} and recording to stdout (the table's policy)")
        config = write_pgwarden_config(pg, workdir, PGWARDEN_POLICY, RULES_POLICY, jwks, recording={})
        # Its records go to a file of their own, as a container runtime takes a sidecar's stdout.
        policy_runner = PgwardenRunner(PGWARDEN_POLICY, config, workdir, token, stack,
                                       stdout=workdir / f"{PGWARDEN_POLICY}.stdout")
        probe_pgwarden(policy_runner, skip)
    forwarder, forwarder_pid = start_table_forwarder(args, pg, workdir, stack, notes)
    targets = [direct, pgwarden.target] + ([rules.target] if rules else []) + \
        ([recording.target] if recording else []) + ([bouncer] if bouncer else [])
    return Setup(pg, targets, pgwarden, idle_rss, skip, notes, bouncer_version, load_before,
                 pgwarden_rules=rules, pgwarden_recording=recording, pgwarden_policy=policy_runner,
                 pgbouncer_pid=bouncer_pid, sessions=sessions, forwarder=forwarder, forwarder_pid=forwarder_pid)


def start_table_forwarder(args, pg: TempPostgres, workdir: Path, stack: contextlib.ExitStack,
                          notes: list[str]) -> tuple[Target | None, int | None]:
    """The table's floor, bench/forwarder.py, as a target and its pid; None when there is no table,
    it is refused (--no-forwarder) or it cannot serve `SELECT 1` (said in ``notes``, the run goes on).

    Why: what the reactor costs before pgwarden does any work, beside pgwarden's ratios to
    PgBouncer; `bench/ceiling.py` has it against direct in rounds of its own.
    """
    if args.table_rounds <= 0:
        return None, None
    if args.no_forwarder:
        notes.append("The table's floor (bench/forwarder.py) left out (--no-forwarder).")
        return None, None
    say("starting the bare forwarder on pgwarden's reactor (the table's floor)")
    try:
        services, port = start_forwarder(pg, workdir / FORWARDER, stack)
    except RuntimeError as e:
        notes.append(f"The table's floor (bench/forwarder.py) left out: it did not start: {e}")
        return None, None
    target = Target(FORWARDER, "127.0.0.1", port, APP_USER, APP_PASSWORD)
    failure = probe(target)
    if failure:
        say(f"the forwarder cannot serve SELECT 1: {failure}\n{services[0].log_tail()}")
        notes.append(f"The table's floor (bench/forwarder.py) left out: SELECT 1 failed through it: {failure}")
        return None, None
    return target, services[0].pid


def idle_sessions(pgwarden: PgwardenRunner, n: int) -> dict:
    """pgwarden's RSS and descriptors with ``n`` idle sessions (`pgbench_run.sessions`, which
    `make load` uses too), right after its idle RSS was read; the error instead if it failed."""
    from pgbench_run.sessions import measure_idle_sessions  # asyncpg: only when asked for

    say(f"opening {n} idle sessions through pgwarden")
    try:
        found = measure_idle_sessions(pgwarden.target, pgwarden.service.pid, n=n)
    except Exception as e:  # noqa: BLE001 - a figure not had is reported, the run goes on
        return {"sessions": n, "error": f"{n} idle sessions failed: {e!r}"[:300]}
    say("; ".join(found.lines()))
    return {**asdict(found), "per_session_kib": found.per_session_kib}


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


def interpreter_build() -> str:
    """The interpreter every pgwarden of the run runs on (this one: `start_pgwarden` starts
    ``sys.executable``), and how it was built, as far as it says: a figure of pgwarden's own CPU
    depends on it. CPython's profile-guided and link-time optimisations (``--enable-optimizations
    --with-lto``, as the official python images and so deploy/Dockerfile's base are built) and a
    libpython linked into the executable (Debian's /usr/bin/python3) run the same statement in
    less CPU than a default build, pyenv's (docs/performance.md, "The interpreter's build")."""
    from pgwarden.compiled import build

    configure = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = [flag for flag in ("--enable-optimizations", "--with-lto") if flag in configure]
    with open("/proc/self/maps") as maps:
        shared = any("libpython" in line for line in maps)
    return (f"CPython {platform.python_version()} ({os.path.realpath(sys.executable)}; libpython "
            f"{'shared' if shared else 'in the executable'}; configured "
            f"{'with ' + ' '.join(flags) if flags else 'without --enable-optimizations or --with-lto'}), "
            f"pgwarden {build()}")


def run_metadata(args, setup: Setup) -> dict:
    """Enough context to tell whether two results files can be compared."""
    pgbench = subprocess.run([tool("pgbench"), "--version"], capture_output=True, text=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": args.duration, "clients": CLIENTS, "threads": THREADS, "scale": SCALE,
        "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "interpreter": interpreter_build(),
        "pgbench": pgbench.stdout.strip(), "pgbouncer": setup.pgbouncer_version,
        "pgwarden_revision": git_revision(), "targets": [t.name for t in setup.targets],
        "pgwarden_rules_policy": RULES_POLICY if setup.pgwarden_rules is not None else None,
        "recording_off": RECORDING_OFF,
        "pgwarden_recording": (recording_section(Path("$WORKDIR")) if setup.pgwarden_recording is not None
                               else None),
        "load_average_before": setup.load_before, "load_average_after": list(os.getloadavg()),
    }
