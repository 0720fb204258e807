"""The `pgwarden_process` fixture: `pgwarden run` as its own process, reached through the ports it reports."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

from pgwarden.testing.running import ExitedEarly


def test_it_listens_on_the_ports_it_reports_and_keeps_its_runs_apart(pgwarden_process):
    first, second = pgwarden_process(), pgwarden_process(policies=[{"name": "nobody", "when": {"groups": ["x"]}}])
    assert first.directory != second.directory and first.port != second.port
    with psycopg.connect(first.dsn(), autocommit=True) as c:
        assert c.execute("select 'through the process'").fetchone() == ("through the process",)
    with pytest.raises(psycopg.OperationalError, match="pgwarden: no policy"):
        psycopg.connect(second.dsn())
    with urllib.request.urlopen(f"http://127.0.0.1:{first.admin_port}/healthz", timeout=10) as answer:
        assert answer.status == 200
    assert "pgwarden listening on" in first.log()
    assert first.stop() == 0
    assert '"sql":"select \'through the process\'"' in (first.directory / "records.jsonl").read_text()


def test_waiting_for_a_log_line_ends_when_pgwarden_exits(pgwarden_process):
    running = pgwarden_process()
    running.proc.send_signal(signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(ExitedEarly, match=r"pgwarden exited \(-9\) without logging 'never said'"):
        running.wait_for_log("never said", timeout_s=60)
    assert time.monotonic() - started < 30


TAMPERING_TEST = """
import psycopg


def test_changes_a_record(pgwarden_process):
    running = pgwarden_process()
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 'as sent'")
    assert running.stop() == 0
    records = running.directory / "records.jsonl"
    records.write_text(records.read_text().replace("as sent", "as told"))
"""


def test_after_the_test_the_records_of_its_sinks_are_checked(tmp_path):
    """In a pytest session of its own, since what is tested is that session's teardown."""
    (tmp_path / "test_tampering.py").write_text(TAMPERING_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_tampering.py"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "1 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert "record chain broken" in done.stdout
