"""Processes a test starts, and the guarantee that none of them outlives it.

A test that starts ``pgwarden run`` or ``pgwarden demo`` and then fails (an
assertion, a timeout waiting for it to stop) must not leave it running, nor what
it started: the demo's PostgreSQL is started by ``pg_ctl``, which puts the server
in a session of its own, so killing the demo's process group alone would leave
the server behind. Hence two nets: the process starts in a new session (its
group is killed when it does not stop when asked), and it carries a marker in its
environment that every descendant inherits, however it detached; whatever
carries the marker when the process is stopped is killed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess

#: the environment variable that marks every process started from one ProcessGroup
MARKER = "PGWARDEN_TEST_PROCESS_GROUP"


class ProcessGroup:
    """A process started as ``subprocess.Popen(argv, **popen)`` would be, in a session of its own.

    ``stop()`` (or leaving the ``with`` block, which gives the Popen) asks it to stop
    with ``stop_signal``, waits ``grace_s``, then kills its group; in any case every
    process it left behind is killed. ``leftovers`` then lists what was killed that
    way (pid and name), so a test can assert that the process cleaned up after itself.
    """

    def __init__(self, argv, *, stop_signal: int = signal.SIGTERM, grace_s: float = 15.0, **popen) -> None:
        try:  # stop() needs it: a missing psutil fails here, before anything was started
            import psutil  # noqa: F401
        except ImportError as e:
            raise ImportError("starting processes for a test needs psutil, to kill what they leave behind "
                              "(pip install psutil, or pgwarden[test])") from e
        self.stop_signal = stop_signal
        self.grace_s = grace_s
        self.marker = secrets.token_hex(8)
        env = dict(popen.pop("env", None) or os.environ)
        env[MARKER] = self.marker
        self.proc = subprocess.Popen(argv, start_new_session=True, env=env, **popen)
        self.leftovers: list[str] = []

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int:
        """Stops the process and all it started; its exit status."""
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so its pid, which is its group's id, cannot have been reused.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.leftovers += kill_marked(self.marker)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return proc.returncode


def kill_marked(marker: str) -> list[str]:
    """Kills every process whose environment carries ``marker``; what was killed ("pid name")."""
    import psutil

    killed: list[str] = []
    while True:  # again until none is found: one may have started another while we looked
        found = []
        for p in psutil.process_iter(["name"]):
            try:
                if p.pid != os.getpid() and p.environ().get(MARKER) == marker:
                    p.kill()
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not found:
            return killed
        psutil.wait_procs(found, timeout=10)
        killed += [f"{p.pid} {p.info['name']}" for p in found]
