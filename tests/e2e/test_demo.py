"""`pgwarden demo` as a newcomer runs it: start it as `make demo` does, do what it prints, Ctrl-C.

What it prints must be true: the psql line connects, each suggested statement does what the
banner says (the refusal word for word), the commands it prints run as printed, and an edit of
its config file applies without a restart.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest

from pgwarden.testing import wait_until
from pgwarden.testing.postgres import free_port


class Demo:
    """A running `pgwarden demo` and what it printed."""

    def __init__(self, proc: subprocess.Popen, banner: str, directory: Path) -> None:
        self.proc = proc
        self.banner = banner
        self.directory = directory
        match = re.search(r'PGPASSWORD="\$\(cat (\S+)\)" psql "([^"]+)"', banner)
        assert match, banner
        self.token = Path(match.group(1)).read_text().strip()
        self.dsn = match.group(2)

    def psql(self, sql: str) -> subprocess.CompletedProcess:
        """``sql`` through the printed psql line, as the newcomer runs it."""
        return subprocess.run(["psql", "-X", self.dsn, "-c", sql], env=dict(os.environ, PGPASSWORD=self.token),
                              capture_output=True, text=True, timeout=60)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, password=self.token, autocommit=True)

    def printed(self, containing: str) -> str:
        """The command printed on the line with ``containing`` (a label before it removed)."""
        line = next(line for line in self.banner.splitlines() if containing in line)
        return re.sub(r"^[A-Z][a-z]+:\s+", "", line.strip()).rstrip(").")


# Runs its arguments with SIGINT ignored, as a shell without job control starts `command &`
# (a script's, `make`'s recipe run in the background, some CI runners): the command inherits it.
IGNORING_SIGINT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                                         "os.execv(sys.argv[1], sys.argv[1:])"]


def demo_command(directory: Path) -> list[str]:
    # The console script in this venv, as `make demo` runs `.venv/bin/pgwarden demo`: not on PATH.
    exe = Path(sys.executable).parent / "pgwarden"
    return [str(exe), "demo", "--dir", str(directory), "--port", str(free_port()), "--reload-poll-s", "0.2"]


def spawn_demo(directory: Path, spawn, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return spawn(  # should the demo hang, the fixture kills it and its PostgreSQL
        [*prefix, *demo_command(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stop_signal=signal.SIGINT,
    )


def start_demo(directory: Path, spawn, prefix: tuple[str, ...] = ()) -> Demo:
    proc = spawn_demo(directory, spawn, prefix)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    return Demo(proc, "".join(lines), directory)


def stop_demo(demo: Demo) -> str:
    """Ctrl-C, as a newcomer stops it; the rest of its output. Should it not stop in time, the
    ``spawn`` fixture kills it and its PostgreSQL."""
    demo.proc.send_signal(signal.SIGINT)
    rest, _ = demo.proc.communicate(timeout=60)
    return rest


def refused_by_pgwarden(conn: psycopg.Connection, sql: str) -> psycopg.errors.Diagnostic:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
        conn.execute(sql)
    diag = excinfo.value.diag
    assert diag.sqlstate == "42501"
    assert diag.message_primary.startswith("pgwarden: blocked:"), diag.message_primary  # not the server's own
    return diag


def wait_for_log(path: Path, text: str, timeout_s: float = 30.0) -> None:
    """Until ``text`` is in the demo's log (the watcher polls the file every 0.2 s)."""
    wait_until(timeout_s, path.read_text, f"{text!r} in {path}", until=lambda log: text in log,
               ignore=(FileNotFoundError,))


def test_a_newcomers_session_through_the_demo(tmp_path, spawn):
    directory = tmp_path / "demo"
    demo = start_demo(directory, spawn)
    try:
        # The upstream role is an ordinary one (seen through the proxy), owning the sample data.
        with demo.connect() as conn:
            assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
            owners = conn.execute("select distinct tableowner = current_user from pg_tables "
                                  "where tablename in ('users', 'orders')").fetchall()
            assert owners == [(True,)]

        # The three statements the banner suggests do what it says they do.
        tries = re.findall(r"^  ([A-Z][^\n]*;)$", demo.banner, re.M)
        assert len(tries) == 4, demo.banner
        drop, read, write, held = tries
        assert drop.startswith("DROP TABLE")
        dropped = demo.psql(drop)
        assert dropped.returncode != 0
        printed_error = re.findall(r"^      ((?:ERROR|DETAIL|HINT):  .*)$", demo.banner, re.M)
        assert dropped.stderr.splitlines() == printed_error  # word for word
        assert "three rows" in demo.banner and "(3 rows)" in demo.psql(read).stdout
        # the seeded SSN and card columns come back masked
        read_out = demo.psql(read).stdout
        assert " User 1 | *** | **** **** **** 0097" in read_out, read_out
        assert not re.search(r"\d{3}-\d{2}-\d{4}|4111", read_out)
        assert demo.psql(write).stdout.strip() == "UPDATE 1"

        with demo.connect() as conn:
            assert "schema changes" in refused_by_pgwarden(conn, drop).message_primary
            assert conn.execute("select count(*) from orders").fetchone() == (500,)  # still there
            refused_by_pgwarden(conn, "COPY users TO PROGRAM 'id'")
            refused_by_pgwarden(conn, "select pg_read_file('/etc/passwd')")
            refused_by_pgwarden(conn, "DELETE FROM orders")

        # The commands it prints run as printed: pgwarden is not on the PATH.
        check, tail = demo.printed(" check -c "), demo.printed(" tail -f ")
        for command in (check, tail):
            exe = shlex.split(command)[0]
            assert os.path.isabs(exe) and os.access(exe, os.X_OK), command
        checked = subprocess.run(check, shell=True, capture_output=True, text=True).stdout
        assert "block    unfiltered-writes: statements=('delete', 'update'), where=absent\n" in checked, checked
        assert "new-orders" in checked, checked
        assert ("mask     cards: columns=('public.users.card_number',), with=partial, keep_last=4, oracle=refuse, "
                "unknown=mask\n") in checked, checked
        # the policy's test cases, beside it, pass (docs/policies.md)
        tested = subprocess.run(demo.printed(" test -c "), shell=True, capture_output=True, text=True)
        assert tested.returncode == 0 and " passed, 0 failed" in tested.stdout, tested.stdout + tested.stderr
        shown = subprocess.run(tail.replace(" -f ", " "), shell=True, capture_output=True, text=True)
        assert "BLOCK   DROP TABLE orders" in shown.stdout, shown.stdout + shown.stderr

        # The held INSERT waits for a person, who approves it with the commands printed.
        assert held.startswith("INSERT INTO orders")
        waiting = subprocess.Popen(["psql", "-X", demo.dsn, "-c", held], env=dict(os.environ, PGPASSWORD=demo.token),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        approver = dict(os.environ, PGWARDEN_TOKEN=(directory / "approver-token").read_text().strip())
        listing, approving = demo.printed(" approvals list "), demo.printed(" approvals approve ")
        listed = wait_until(30, lambda: subprocess.run(listing, shell=True, capture_output=True, text=True,
                                                       env=approver).stdout,
                            "the held INSERT listed", until=lambda out: "INSERT INTO orders" in out)
        request = listed.split()[0]
        approved = subprocess.run(approving.replace(" ID ", f" {request} "), shell=True, capture_output=True,
                                  text=True, env=approver)
        assert f"request {request}: approved" in approved.stdout, approved.stdout + approved.stderr
        out, err = waiting.communicate(timeout=30)
        assert out.strip() == "INSERT 0 1" and f"waiting for approval: request {request}" in err, out + err
        # The inbox it names lists that request, for the approver's token (the page's script sends it so).
        inbox = re.search(r"http://\S+/approvals/inbox/", demo.printed("/approvals/inbox/")).group(0)
        page = urllib.request.urlopen(urllib.request.Request(
            inbox + "requests", headers={"Authorization": "Bearer " + approver["PGWARDEN_TOKEN"]}), timeout=10)
        assert f'id="request-{request}"' in page.read().decode()

        # An edit of the config file applies without a restart, as `pgwarden run` does it.
        config = directory / "pgwarden.yaml"
        with demo.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            with config.open("a") as f:
                f.write("      - {name: no-reads, block: {statements: [select]}}\n")
            wait_for_log(directory / "pgwarden.log", f"reloaded {config}")
            assert refused_by_pgwarden(conn, "select 1").message_detail == \
                "Refused by policy 'agents', rule 'no-reads'."
    finally:
        rest = stop_demo(demo)
    assert demo.proc.returncode == 0, rest
    assert "cleaned up" in rest
    assert not directory.exists()


def test_ctrl_c_stops_a_demo_that_inherited_sigint_ignored(tmp_path, spawn):
    """Started with SIGINT ignored, Python keeps it ignored and Twisted installs its handler only
    over Python's default one: the demo printed "Press Ctrl-C" and then ignored it, nothing in its
    log after what came before, its directory left behind (as in a failure of the newcomer's
    session above in a full run: TimeoutExpired in `stop_demo`)."""
    directory = tmp_path / "demo"
    demo = start_demo(directory, spawn, prefix=tuple(IGNORING_SIGINT))
    assert "Press Ctrl-C" in demo.banner, demo.banner
    rest = stop_demo(demo)
    assert demo.proc.returncode == 0, rest
    assert "cleaned up" in rest
    assert not directory.exists()


@pytest.mark.parametrize("prefix", [(), tuple(IGNORING_SIGINT)], ids=["sigint-default", "sigint-ignored"])
def test_ctrl_c_while_the_demo_starts_stops_it_and_cleans_up(tmp_path, spawn, prefix):
    """Ctrl-C before the demo is ready (PostgreSQL starting): it stops, removes what it made, and
    says so, without a traceback."""
    directory = tmp_path / "demo"
    proc = spawn_demo(directory, spawn, prefix)
    first = proc.stdout.readline()
    assert "starting a throwaway PostgreSQL" in first, first
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, first + rest
    assert "Press Ctrl-C" not in rest, rest  # stopped while starting, not once ready
    assert "Traceback" not in rest, rest
    assert "cleaned up" in rest, rest
    assert not directory.exists()
