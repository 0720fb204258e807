"""Graceful shutdown: stop accepting, let running statements finish, then 57P01; records flushed."""

from __future__ import annotations

import json
import signal
import threading

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.testing import wait_until
from pgwarden.testing.pytest_plugin import check_records
from pgwarden.wire import messages as m

LOCK = 4242


def on_lock(pg_server) -> int:
    """How many backends wait for the advisory lock (the test's statement, while it runs)."""
    return int(pg_server.psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                              "and query like '%pg_advisory_lock%' and pid <> pg_backend_pid()", "appdb"))


def running_upstream(pg_server) -> None:
    wait_until(30, lambda: on_lock(pg_server), "the statement to be running upstream", until=lambda n: n == 1)


def cancelled_upstream(pg_server) -> None:
    wait_until(30, lambda: on_lock(pg_server), "the upstream statement to be cancelled", until=lambda n: n == 0)


class Blocked:
    """A statement through pgwarden that runs until the test releases an advisory lock."""

    def __init__(self, dsn: str, pg_server) -> None:
        self.holder = psycopg.connect(pg_server.dsn(), autocommit=True)  # straight to PostgreSQL
        self.holder.execute("select pg_advisory_lock(%s)", (LOCK,))
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.outcome: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        running_upstream(pg_server)

    def _run(self) -> None:
        try:
            self.outcome.append(self.conn.execute("select pg_advisory_lock(%s), 'finished'", (LOCK,)).fetchone())
        except psycopg.Error as e:
            self.outcome.append(e)

    def release(self) -> None:
        self.holder.execute("select pg_advisory_unlock_all()")

    def close(self) -> None:
        self.holder.close()
        self.conn.close()


def test_running_statements_finish_idle_sessions_end_new_ones_are_refused(make_pgwarden, pg_server, tmp_path):
    running = make_pgwarden(shutdown={"grace_s": 60})
    idle = RawClient(running.host, running.port)
    idle.login(running.token())
    busy = Blocked(running.dsn(), pg_server)
    try:
        done = []
        running.call(lambda: running.app.shutdown().addCallback(done.append) and None)  # do not wait for it
        # the idle session ends at once, with 57P01 (read without sending: no race with the close)
        fatal = idle.recv_message()
        assert isinstance(fatal, m.ErrorResponse) and fatal.get("V") == "FATAL" and fatal.get("C") == "57P01"
        assert fatal.get("M") == "pgwarden: terminating connection because pgwarden is shutting down"
        assert idle.closed()
        # nothing new is accepted
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(running.dsn(), connect_timeout=5)
        assert not done, "stopped while a statement was still running"
        # the running statement finishes and its client gets the result ...
        busy.release()
        busy.thread.join(30)
        assert busy.outcome == [("", "finished")]
        # ... then its session ends too (57P01, in the records below), and pgwarden is done
        with pytest.raises(psycopg.OperationalError):
            busy.conn.execute("select 1")
        wait_until(30, lambda: done, "the shutdown to complete")
    finally:
        busy.close()
        idle.close()
    records = check_records([tmp_path / "records.jsonl"])
    ends = [r for r in records if r["type"] == "session_end"]
    assert len(ends) == 2 and all("(57P01)" in r["reason"] for r in ends)


def test_after_the_grace_period_running_statements_are_cancelled(make_pgwarden, pg_server):
    running = make_pgwarden(shutdown={"grace_s": 0.5})
    busy = Blocked(running.dsn(), pg_server)
    try:
        done = []
        running.call(lambda: running.app.shutdown().addCallback(done.append) and None)  # do not wait for it
        busy.thread.join(30)
        assert len(busy.outcome) == 1 and isinstance(busy.outcome[0], psycopg.OperationalError)
        assert "pgwarden is shutting down" in str(busy.outcome[0])
        # the statement does not go on running upstream without its client
        cancelled_upstream(pg_server)
        wait_until(30, lambda: done, "the shutdown to complete")
    finally:
        busy.close()


@pytest.fixture
def draining(pg_server, pgwarden_process):
    """`pgwarden run` (grace 600 s) with a statement running through it, just sent SIGTERM."""
    running = pgwarden_process(shutdown={"grace_s": 600})
    busy = Blocked(running.dsn(), pg_server)
    try:
        running.proc.send_signal(signal.SIGTERM)
        running.wait_for_log("shutting down")
        yield running, busy
    finally:
        if running.proc.poll() is None:
            running.proc.kill()  # at once: the fixture checks the records after
            running.proc.wait()
        busy.close()


def test_sigterm_drains_and_exits_zero(draining):
    running, busy = draining
    assert running.proc.poll() is None  # still draining: the statement runs
    busy.release()
    busy.thread.join(30)
    assert busy.outcome == [("", "finished")]
    assert running.proc.wait(30) == 0
    records = [json.loads(line) for line in (running.directory / "records.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "session_end" and "(57P01)" in records[-1]["reason"]


def test_a_second_sigterm_ends_the_sessions_left_at_once(draining, pg_server):
    running, busy = draining
    running.proc.send_signal(signal.SIGTERM)  # the operator will not wait the grace period out
    assert running.proc.wait(30) == 0
    busy.thread.join(30)
    assert len(busy.outcome) == 1 and isinstance(busy.outcome[0], psycopg.OperationalError)
    cancelled_upstream(pg_server)
