"""A test that gives up on `pgwarden demo` leaves nothing running: not the demo, not its PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from pgwarden.testing import wait_until
from pgwarden.testing.postgres import free_port
from pgwarden.testing.processes import MARKER, ProcessGroup


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.environ().get(MARKER) == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def detached(group: ProcessGroup) -> list[psutil.Process]:
    """The PostgreSQL processes the group started outside its session."""
    found = []
    for p in marked(group.marker):
        try:
            if p.info["name"] == "postgres" and os.getsid(p.pid) != group.proc.pid:
                found.append(p)
        except ProcessLookupError:
            continue
    return found


def alive(group: ProcessGroup) -> bool:
    assert group.proc.poll() is None, f"the demo exited ({group.proc.returncode})"
    return True


def test_a_demo_that_ignores_ctrl_c_is_killed_with_its_postgresql(tmp_path):
    group = ProcessGroup([sys.executable, "-m", "pgwarden", "demo", "--dir", str(tmp_path / "demo"),
                          "--port", str(free_port())],
                         stop_signal=signal.SIGINT, grace_s=0.5, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        # The server, once pg_ctl has started it, runs in a session of its own: the demo's
        # process group does not hold it (initdb's own runs of postgres are in the group).
        postmaster = wait_until(60, lambda: alive(group) and detached(group), "the demo to start its PostgreSQL")
        # The server's data directory, left behind by a kill. psutil answers "" for a process that
        # is exiting, and Path("").parent is the current directory: only a TempPostgres directory
        # is ever removed below (an rmtree of "." once emptied the worktree the suite ran in).
        data = Path(postmaster[0].cwd())
        group.proc.send_signal(signal.SIGSTOP)  # a demo that hangs: Ctrl-C will do nothing
    finally:
        group.stop()
    assert group.proc.returncode == -signal.SIGKILL
    assert not marked(group.marker)
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in postmaster)
    assert any(entry.endswith(" postgres") for entry in group.leftovers)
    if data.is_absolute() and data.parent.name.startswith("pgwarden-pg-"):
        shutil.rmtree(data.parent, ignore_errors=True)  # TempPostgres's directory
