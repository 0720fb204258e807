"""`pgwarden run` in a process of its own, started the one way every test (and script) starts it.

Most tests run pgwarden in their own process (`make_pgwarden`), where an inline
plugin can be handed in. Some need the real command: signals (SIGTERM drains,
SIGHUP reloads), the process's own memory, its stdout and op log, the console
script or the image's entrypoint. They all start it the same way: ``run -c
CONFIG`` plus ``--ready-file`` and ``--admin-port-file`` in a directory of the
run, stdout and stderr to files there, and then wait for the ports; a process
that exits first fails at once, with its log, rather than at the deadline.

The process is a `ProcessGroup`, so it and whatever it started are gone after
`PgwardenProcess.stop`, however the test ended.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import attrs

from pgwarden.testing.endpoint import Endpoint
from pgwarden.testing.processes import ProcessGroup
from pgwarden.testing.waiting import wait_until

#: how `pgwarden` is run unless a test says otherwise: this interpreter's package
PYTHON_PGWARDEN = (sys.executable, "-m", "pgwarden")


class ExitedEarly(RuntimeError):
    """pgwarden exited while a test was waiting for it to listen or to log something."""


@attrs.define(eq=False)
class PgwardenProcess(Endpoint):
    """A running `pgwarden run`, its ports, and the files of its run.

    ``directory`` holds ``pgwarden.out`` (its stdout: the records, with the default
    ``stdout`` sink), ``pgwarden.log`` (its stderr: the op log) and the port files.
    """

    group: ProcessGroup
    port: int
    admin_port: int
    keys: dict[str, Path]
    config: Path
    directory: Path
    host: str = "127.0.0.1"

    @property
    def proc(self) -> subprocess.Popen:
        return self.group.proc

    @property
    def pid(self) -> int:
        return self.group.proc.pid

    def log(self) -> str:
        """Its op log (stderr) so far."""
        return read_text(self.directory / "pgwarden.log")

    def output(self) -> str:
        """Its stdout so far."""
        return read_text(self.directory / "pgwarden.out")

    def wait_for_log(self, text: str, timeout_s: float = 30.0) -> str:
        """Until ``text`` is in its op log; the log. Fails at once if it exits without logging it."""
        def poll() -> str:
            exited = self.proc.poll() is not None  # before reading: what it wrote before exiting is read
            log = self.log()
            if text not in log and exited:
                raise ExitedEarly(f"pgwarden exited ({self.proc.returncode}) without logging {text!r}:\n{log}")
            return log

        return wait_until(timeout_s, poll, f"{text!r} in pgwarden's log", until=lambda log: text in log)

    def stop(self) -> int:
        """Asks it to stop (SIGTERM unless started otherwise), kills what is left; its exit status."""
        return self.group.stop()


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def launch(
    config: Path,
    keys: dict[str, Path],
    directory: Path,
    *,
    command: Sequence[str] = PYTHON_PGWARDEN,
    args: Sequence[str] = (),
    timeout_s: float = 60.0,
    stop_signal: int = signal.SIGTERM,
    grace_s: float = 15.0,
    **popen,
) -> PgwardenProcess:
    """``[*command, "run", "-c", config, *args]`` with the port files in ``directory``; returns once it listens.

    :param command: what runs pgwarden: this interpreter by default; a console script, or
        ``setpriv ... pgwarden`` to run it as another user (who must be able to write ``directory``).
    :param popen: further `subprocess.Popen` arguments (``env``, ``cwd``, ...).
    :raises ExitedEarly: it exited before listening (the message has its log).
    :raises WaitTimeout: it did not listen within ``timeout_s``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ready, admin = directory / "ready", directory / "admin-port"
    for stale in (ready, admin):
        stale.unlink(missing_ok=True)
    argv = [*command, "run", "-c", str(config), *args, "--ready-file", str(ready), "--admin-port-file", str(admin)]
    with open(directory / "pgwarden.out", "ab") as out, open(directory / "pgwarden.log", "ab") as err:
        group = ProcessGroup(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             stop_signal=stop_signal, grace_s=grace_s, **popen)
    log = directory / "pgwarden.log"

    def ports() -> tuple[int, int] | None:
        if group.proc.poll() is not None:
            raise ExitedEarly(f"pgwarden exited ({group.proc.returncode}) before listening:\n{read_text(log)}")
        texts = (read_text(ready).strip(), read_text(admin).strip())
        return (int(texts[0]), int(texts[1])) if all(texts) else None

    try:
        port, admin_port = cast("tuple[int, int]", wait_until(  # until it is not None
            timeout_s, ports, "pgwarden to write its ready file", detail=lambda: read_text(log)))
    except BaseException:
        group.stop()
        raise
    return PgwardenProcess(group, port, admin_port, keys, config, directory)
