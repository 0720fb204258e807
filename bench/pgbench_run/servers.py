"""The servers of a run: child processes with their logs, a throwaway PostgreSQL with pgbench's
tables, and PgBouncer (installed with apt-get when missing and possible).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from pgbench_run.settings import DATABASE, PGBOUNCER, PGBOUNCER_RUN_AS, SCALE, say, tool
from pgbench_run.workloads import Target, probe
from pgwarden.testing import WaitTimeout, wait_until
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres, free_port

# bench/forwarder.py: the bare forwarder on pgwarden's reactor (`start_forwarder`)
FORWARDER_SCRIPT = Path(__file__).resolve().parents[1] / "forwarder.py"


class Service:
    """A long-running child process we started, with its output in a log file.

    Started in its own session so a Ctrl-C in the terminal reaches us, not it:
    we then stop it ourselves, in order, and know it is gone.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, stdout_path: Path | None = None,
                 **popen_kw) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.stdout_path = stdout_path  # stdout apart from the log (records to stdout), appended to
        self._popen_kw = popen_kw
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "ab") as log, \
                open(self.stdout_path or self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
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
    def accepts() -> bool:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited ({service.proc.returncode}):\n{service.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        return False

    try:
        wait_until(timeout, accepts, f"{service.name} to listen on {host}:{port}", interval_s=0.1)
    except WaitTimeout:
        raise RuntimeError(f"{service.name} did not listen on {host}:{port} within {timeout:.0f}s:\n"
                           f"{service.log_tail()}") from None


def read_ready_port(svc: Service, ready: Path, timeout_s: float = 30) -> int:
    """The port a service we started wrote to its ready file, once it has."""
    def port() -> int:
        if not svc.alive():
            raise RuntimeError(f"{svc.name} exited ({svc.proc.returncode}) before listening:\n{svc.log_tail()}")
        return int(ready.read_text().strip())

    try:
        return wait_until(timeout_s, port, f"{svc.name} to write its ready file", ignore=(OSError, ValueError))
    except WaitTimeout:
        raise RuntimeError(f"{svc.name} wrote no ready file within {timeout_s:g} s:\n{svc.log_tail()}") from None


def start_forwarder(pg: TempPostgres, work: Path, stack: contextlib.ExitStack,
                    processes: int = 1) -> tuple[list[Service], int]:
    """``processes`` bare forwarders (bench/forwarder.py) to ``pg`` on one port (SO_REUSEPORT when
    more than one); their services and the port. Here, not in bench/ceiling.py, because the
    ceiling and issue 20's table (its floor) both start them."""
    work.mkdir(exist_ok=True)
    services: list[Service] = []
    port = 0
    for i in range(processes):
        ready = work / f"forwarder-{i}.ready"
        extra = ["--reuseport"] if processes > 1 else []
        svc = Service(f"forwarder-{i}", [sys.executable, str(FORWARDER_SCRIPT), str(port), pg.host, str(pg.port),
                                         "--ready-file", str(ready), *extra], work / f"forwarder-{i}.log").start()
        stack.callback(svc.stop)
        port = read_ready_port(svc, ready)
        services.append(svc)
    return services, port


def start_postgres(stack: contextlib.ExitStack, max_connections: int | None = None) -> TempPostgres:
    """A throwaway server; its stop() is registered before start() so a half start is cleaned up."""
    pg = TempPostgres(settings={"max_connections": max_connections} if max_connections else None)
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


def setup_pgbouncer(pg: TempPostgres, stack: contextlib.ExitStack) -> tuple[Target | None, str, str, int | None]:
    """PgBouncer as a target and its pid (whose CPU and memory the table reads), or None with the
    reason it could not be had (the run goes on)."""
    binary, why = find_or_install_pgbouncer()
    if binary is None:
        return None, why, "", None
    version = pgbouncer_version(binary)
    try:
        svc, port = start_pgbouncer(binary, pg, stack)
    except (RuntimeError, OSError, KeyError) as e:
        return None, f"pgbouncer did not start: {e}", version, None
    target = Target(PGBOUNCER, "127.0.0.1", port, APP_USER, APP_PASSWORD)
    failure = probe(target)
    if failure:
        return None, f"pgbouncer does not serve queries: {failure}", version, None
    return target, "", version, svc.pid
