"""A throwaway PostgreSQL server: initdb and pg_ctl in a temporary directory.

PostgreSQL refuses to run as root; when we are root the server runs as an
unprivileged user (``postgres`` if it exists, else one created for the purpose).
Authentication over TCP is SCRAM by default; a few roles exercise the other
methods pgwarden must speak upstream (md5, password, trust) and TLS.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pgwarden.testing.certs import make_ca_and_server

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres-test-secret"
APP_USER = "app"
APP_PASSWORD = "app-upstream-Secr3t!"


def _ephemeral_ports() -> range:
    """The range the kernel hands out for ``bind(("", 0))`` and for every outgoing connection."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A port nothing listens on now, for a server the caller starts next.

    Not one the kernel chose (``bind(0)``): that one comes from the ephemeral range, which every
    client connection of every test session running beside this one draws from too, and one of
    them could take it before the server binds it (a pgwarden that then could not listen). A
    port below that range is only ever taken by a bind that names it: chosen at random among
    thousands, checked free here.
    """
    # Not the random module's shared generator: pytest-randomly seeds it alike in every
    # test session and before every test, and sessions side by side would pick the same ports.
    chooser = random.SystemRandom()
    ephemeral = _ephemeral_ports()
    low, high = (10000, ephemeral.start - 1) if ephemeral.start > 12000 else (ephemeral.stop, 65535)
    for _ in range(100):
        port = chooser.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range is crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    # Test sessions start side by side (make test's passes, pytest-xdist's workers): on a fresh
    # machine each would find no user and run useradd, and all but the first would fail (the
    # user exists, or /etc/passwd is locked). One at a time, and the others find the user made.
    with open(os.path.join(tempfile.gettempdir(), "pgwarden-test-user.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in ("postgres", "pgwarden-test"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgwarden-test"],
            check=True,
        )
        return pwd.getpwnam("pgwarden-test")


@functools.cache
def _bin(name: str) -> str:
    """A PostgreSQL program: the server's own (initdb, pg_ctl) from PATH, else from Debian's
    versioned directories; every other program (psql) from beside the server's when it is there.

    On Debian the ``psql`` on PATH is pg_wrapper, a Perl script that chooses a cluster's version
    and then runs the real psql: ~50 ms of CPU a call where the real one takes ~10
    (`/usr/bin/time`); over a `make test` pass Perl was 2.5% of the machine's CPU (perf). The
    psql of the server's own version is also the right one to run against it."""
    if name not in ("initdb", "pg_ctl"):
        beside = Path(os.path.realpath(_bin("pg_ctl"))).parent / name
        if os.access(beside, os.X_OK):
            return str(beside)
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found on PATH nor under /usr/lib/postgresql")


class TempPostgres:
    """One server, started by `start()` and removed by `stop()`."""

    def __init__(self, base: Path | None = None, port: int | None = None,
                 settings: Mapping[str, str | int] | None = None) -> None:
        """``settings``: postgresql.conf lines written after the defaults, so they win
        (``max_connections`` for a load test, say)."""
        self.base = Path(base or tempfile.mkdtemp(prefix="pgwarden-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.port = port or free_port()
        self._port_chosen_here = port is None
        self.host = "127.0.0.1"
        self._user = _server_user()
        self.certs: dict[str, Path] = {}
        self.settings = dict(settings or {})

    # ------------------------------------------------------------------ running as the server user

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self._user is not None:
            kw.setdefault("user", self._user.pw_uid)
            kw.setdefault("group", self._user.pw_gid)
            kw.setdefault("extra_groups", [])
        done = subprocess.run(args, capture_output=True, text=True, **kw)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def start(self) -> TempPostgres:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        self.certs = make_ca_and_server(self.base / "tls")
        if self._user is not None:
            for p in (self.base, self.socket_dir, pwfile, *self.base.joinpath("tls").iterdir(), self.base / "tls"):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
            os.chmod(self.base, 0o755)
        self._run(
            [
                _bin("initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                "--no-sync",
            ]
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
ssl = on
ssl_cert_file = '{self.certs["cert"]}'
ssl_key_file = '{self.certs["key"]}'
password_encryption = 'scram-sha-256'
log_min_messages = warning
"""
            )
            conf.writelines(f"{name} = '{value}'\n" for name, value in self.settings.items())
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "hostssl all tls_only 127.0.0.1/32 scram-sha-256\n"
            "host all tls_only 127.0.0.1/32 reject\n"
            "host all md5_user 127.0.0.1/32 md5\n"
            "host all clear_user 127.0.0.1/32 password\n"
            "host all trust_user 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._start_on_a_free_port()
        self.psql(
            f"CREATE ROLE {APP_USER} LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}';"
            "SET password_encryption = 'md5';"
            f"CREATE ROLE md5_user LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}';"
            "RESET password_encryption;"
            f"CREATE ROLE clear_user LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}';"
            "CREATE ROLE trust_user LOGIN SUPERUSER;"
            f"CREATE ROLE tls_only LOGIN SUPERUSER PASSWORD '{APP_PASSWORD}';"
        )
        self.psql(f"CREATE DATABASE appdb OWNER {APP_USER}")
        return self

    def _start_on_a_free_port(self, tries: int = 3) -> None:
        """A port found free may be taken before the server binds it, by another test session
        starting beside this one (pytest-xdist's workers): the server then fails to start and
        says so in its log; it is started again on another port."""
        log = self.base / "server.log"
        for attempt in range(tries):
            try:
                self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "start"])
                return
            except RuntimeError:
                taken = log.exists() and "could not bind" in log.read_text(errors="replace")
                if not (taken and self._port_chosen_here) or attempt == tries - 1:
                    raise
            log.unlink()
            self.port = free_port()
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(f"port = {self.port}\n")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs SQL over the Unix socket as the superuser; returns the unaligned output."""
        out = subprocess.run(
            [_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
             "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def dsn(self, user: str = APP_USER, password: str = APP_PASSWORD, database: str = "appdb") -> str:
        return f"host={self.host} port={self.port} user={user} password={password} dbname={database}"

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
