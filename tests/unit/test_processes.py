"""A process a test starts never outlives the test, nor does anything it started, detached or not."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from pgwarden.testing.processes import ProcessGroup
from pgwarden.testing.running import ExitedEarly, launch

# Starts a grandchild the way pg_ctl starts PostgreSQL (a session of its own: only the marker
# in its environment finds it), another in its group with an environment of its own (only the
# group finds it), prints their pids, then ignores the signal it is asked to stop with, as a
# hung `pgwarden demo` would.
STUBBORN = """
import signal, subprocess, sys, time
detached = subprocess.Popen(["sleep", "600"], start_new_session=True)
in_group = subprocess.Popen(["sleep", "600"], env={})
signal.signal(int(sys.argv[1]), signal.SIG_IGN)
print(detached.pid, in_group.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_process_that_will_not_stop_is_killed_with_all_it_started(stop_signal):
    group = ProcessGroup([sys.executable, "-c", STUBBORN, str(int(stop_signal))], stop_signal=stop_signal,
                         grace_s=0.5, stdout=subprocess.PIPE, text=True)
    detached, in_group = map(int, group.proc.stdout.readline().split())
    assert group.stop() == -signal.SIGKILL
    assert gone(group.proc.pid) and gone(detached) and gone(in_group)
    assert f"{detached} sleep" in group.leftovers


def test_leaving_the_block_on_a_failure_stops_everything():
    with pytest.raises(subprocess.TimeoutExpired):
        with ProcessGroup([sys.executable, "-c", STUBBORN, str(int(signal.SIGINT))], stop_signal=signal.SIGINT,
                          grace_s=0.5, stdout=subprocess.PIPE, text=True) as proc:
            pids = [proc.pid, *map(int, proc.stdout.readline().split())]
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=0.2)  # what the demo test's wait for Ctrl-C does when the demo hangs
    assert all(gone(pid) for pid in pids)


def test_a_process_that_stops_when_asked_exits_on_its_own():
    with ProcessGroup([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
                      stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline() == "up\n"
    assert proc.returncode == -signal.SIGTERM


def test_a_pgwarden_that_cannot_start_fails_at_once_with_its_log(tmp_path):
    """Not at the deadline, and with what pgwarden said (here: the config's problem)."""
    config = tmp_path / "pgwarden.yaml"
    config.write_text("listen: {port: 0}\npolicies: [{name: p, rules: [{blok: {}}]}]\n")
    started = time.monotonic()
    with pytest.raises(ExitedEarly) as failure:
        launch(config, {}, tmp_path / "run", timeout_s=30)
    assert time.monotonic() - started < 20
    assert "pgwarden exited (2) before listening" in str(failure.value)
    assert "blok" in str(failure.value)
