"""What every part of a run agrees on.

The database, pgbench's scale and clients, the targets' names, the policies and recording
configurations compared, and the targets set for them; how progress is said and tools found.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from analysis import RULES as TEN_RULES  # bench/analysis.py: one list for both

from pgbench_run import REPO

RESULTS_FILE = REPO / ".bench" / "results.json"
DATABASE = "appdb"
SCALE = 10
CLIENTS = 8
THREADS = 2
ISSUER = "https://issuer.pgwarden.bench"
AUDIENCE = "pgwarden"
BENCH_SUBJECT = "bench-agent"
PGBOUNCER_RUN_AS = "postgres"

DIRECT, PGWARDEN, PGBOUNCER = "direct", "pgwarden", "pgbouncer"
PGWARDEN_RULES = "pgwarden-rules"
PGWARDEN_RECORDING = "pgwarden-recording"
# Issue 20's "policy": the ten rules with recording to stdout, pgwarden's default (`pgbench_run.table`).
PGWARDEN_POLICY = "pgwarden-policy"
# Issue 20's table's floor: bench/forwarder.py, a bare TCP forwarder on pgwarden's reactor that moves
# bytes without reading them; what pgwarden pays at one client before it does any work of its own.
FORWARDER = "forwarder"

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

# How the report labels the line of each extra pgwarden.
EXTRA_LABELS = {PGWARDEN_RULES: RULES_LABEL, PGWARDEN_RECORDING: RECORDING_LABEL}


def say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """The path of a command, looking in the sbin directories too (pgbouncer lives in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found on PATH")
