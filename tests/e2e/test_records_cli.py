"""`pgwarden replay` and `pgwarden tail` on records of real sessions; approvals in records; the op log."""

from __future__ import annotations

import io
import os
import selectors
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg
import pytest
from twisted.internet.defer import Deferred

from pgwarden import Verdict, hookimpl
from pgwarden.chain import seal_record
from pgwarden.cli import main
from pgwarden.testing.pytest_plugin import check_records


@pytest.fixture
def session_log(make_pgwarden, pg_server, tmp_path):
    """The records of one session: a read with rows, a refusal, an error, a prepared execution."""
    pg_server.psql("drop table if exists cli_items; create table cli_items (n int, name text);"
                   "insert into cli_items values (1, 'one'), (2, 'two'), (3, 'three')", "appdb")
    running = make_pgwarden(recording={"results": {"max_rows": 2}}, policies=[{
        "name": "agents", "default": "allow",
        "rules": [{"name": "no-ddl", "block": {"statements": ["ddl"]},
                   "reason": "schema changes go through migrations"}],
    }])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select n, name from cli_items order by n")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("drop table cli_items")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("select 1/0")
        c.execute("select name from cli_items where n = %s", (2,))
    running.call(running.app.stop)
    records = check_records([tmp_path / "records.jsonl"])
    return tmp_path / "records.jsonl", records[0]["session"]


def test_replay_renders_a_psql_like_transcript(session_log, capsys):
    path, session = session_log
    assert main(["replay", str(path), "--session", session[:6]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"-- session {session} · agent-1 (ai-agents) from 127.0.0.1:")
    start = out.index("appdb=> select n, name from cli_items order by n;")
    assert out[start + 1:start + 5] == [" 1 | one", " 2 | two", " … (1 more rows not recorded)", "(3 rows)"]
    blocked = out.index("appdb=> drop table cli_items;")
    assert out[blocked + 1] == "-- BLOCK by policy agents, rule no-ddl: schema changes go through migrations"
    assert out[blocked + 2].startswith("ERROR:  42501: pgwarden: blocked: schema changes go through migrations")
    assert "ERROR:  22012: division by zero" in out
    prepared = out.index("appdb=> select name from cli_items where n = $1;")
    assert out[prepared + 1] == "-- parameters: '\\x0002'"  # binary int2 2, as psycopg sent it
    assert out[-1].startswith("-- session ended: client ")  # terminated (Terminate read) or disconnected
    assert " · 4 statements, 1 refused, 4 rows, " in out[-1]
    assert all(line.startswith("-- ") or "ms (upstream" not in line for line in out)


def test_replay_says_when_no_session_matches(session_log, capsys):
    path, _ = session_log
    assert main(["replay", str(path), "--session", "ffffffff"]) == 1
    assert "no session 'ffffffff'" in capsys.readouterr().err


class _Args:
    def __init__(self, files, **kw) -> None:
        self.files, self.follow, self.json, self.color = files, False, False, "never"
        self.type = self.verdict = self.subject = None
        self.__dict__.update(kw)


def tail(path, **kw) -> list[str]:
    from pgwarden.records_cli import cmd_tail

    out = io.StringIO()
    assert cmd_tail(_Args([str(path)], **kw), out) == 0
    return out.getvalue().splitlines()


def test_tail_filters_and_colours(session_log):
    path, _ = session_log
    everything = tail(path)
    assert len(everything) == len(path.read_text().splitlines())
    blocked = tail(path, verdict=["block"])
    assert len(blocked) == 1 and "BLOCK   drop table cli_items [agents/no-ddl]" in blocked[0]
    statements = tail(path, type=["statement"])
    assert len(statements) == 4 and all(" ALLOW " in s or " BLOCK " in s for s in statements)
    assert tail(path, subject=["agent-*"], type=["session_start"])[0].split()[3] == "START"
    assert tail(path, subject=["someone-else"]) == []
    coloured = tail(path, verdict=["block"], color="always")
    assert coloured[0].startswith("\x1b[31m") and coloured[0].endswith("\x1b[0m")


@pytest.mark.parametrize("option, value, expected", [
    ("--type", "statments", "argument --type: invalid choice: 'statments' (choose from 'session_start', 'statement'"),
    ("--verdict", "deny", "argument --verdict: invalid choice: 'deny' (choose from 'allow', 'approve', 'block')"),
])
def test_tail_refuses_a_filter_no_record_can_match(tmp_path, option, value, expected):
    log = tmp_path / "r.jsonl"
    log.write_text("")
    done = subprocess.run([sys.executable, "-m", "pgwarden", "tail", option, value, str(log)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and expected in done.stderr, done.stderr


def _read_line(proc, timeout_s: float = 20.0) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    assert selector.select(timeout_s), "tail -f printed nothing"
    return proc.stdout.readline().decode()


def test_tail_follows_appends_and_rotation(tmp_path, spawn):
    log = tmp_path / "r.jsonl"
    prev = "0" * 64

    def append(path, sql):
        nonlocal prev
        record = {"ts": "2026-11-25T10:00:00.000000Z", "type": "statement", "session": "ab" * 8, "seq": 1,
                  "identity": {"subject": "agent-1", "groups": []}, "statement": 1, "protocol": "simple",
                  "sql": sql, "verdict": {"action": "allow", "policy": None, "rule": None, "reason": None}}
        line, prev = seal_record(record, prev)
        with open(path, "ab") as f:
            f.write(line)

    append(log, "select 'before'")
    proc = spawn([sys.executable, "-m", "pgwarden", "tail", "-f", str(log), "--color", "never"],
                 stdout=subprocess.PIPE)
    assert "select 'before'" in _read_line(proc)
    append(log, "select 'appended'")
    assert "select 'appended'" in _read_line(proc)
    os.replace(log, tmp_path / "r.jsonl.1")  # rotation: renamed, a new file takes the name
    append(log, "select 'after rotation'")
    assert "select 'after rotation'" in _read_line(proc)


class Approvals:
    """An approval store that approves statements mentioning 'ok' and denies the others."""

    @hookimpl
    def pgwarden_check(self, statement, session):
        if "orders" in statement.sql:
            return Verdict.approve("writes to orders need a human", policy="agents", rule="prod-writes")
        return None

    @hookimpl
    def pgwarden_await_approval(self, request, session):
        d = Deferred()

        answer = Verdict.allow() if "'ok'" in request.statement.sql else Verdict.block("not today")
        d.callback(answer)
        return d


def test_approvals_are_recorded_before_the_statement_runs(make_pgwarden, pg_server, tmp_path):
    pg_server.psql("drop table if exists orders; create table orders (note text)", "appdb")
    running = make_pgwarden(plugins=[("approvals", Approvals())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into orders values ('ok')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into orders values ('nope')")
        assert excinfo.value.diag.message_primary == "pgwarden: approval denied: not today"
    running.call(running.app.stop)
    records = check_records([tmp_path / "records.jsonl"])
    approvals = [(r["state"], r["statement"]) for r in records if r["type"] == "approval"]
    assert [a[0] for a in approvals] == ["requested", "approved", "requested", "denied"]
    statement = next(r for r in records if r.get("sql") == "insert into orders values ('ok')")
    assert statement["verdict"]["action"] == "approve" and statement["verdict"]["rule"] == "prod-writes"
    assert pg_server.psql("select string_agg(note, ',') from orders", "appdb") == "ok"


def test_op_log_is_text_on_a_terminal_and_json_otherwise():
    from twisted.logger import Logger, LogPublisher

    from pgwarden.oplog import observer_for

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for out, check in ((Terminal(), lambda s: " info  [pgwarden.test] reloaded x.yaml" in s),
                       (io.StringIO(), lambda s: '"msg":"reloaded x.yaml"' in s and '"source":"x.yaml"' in s)):
        publisher = LogPublisher(observer_for(out))
        Logger(namespace="pgwarden.test", observer=publisher).info("reloaded {source}", source="x.yaml")
        assert check(out.getvalue()), out.getvalue()


def test_tail_into_a_closed_pipe_ends_quietly(tmp_path):
    log, prev = tmp_path / "big.jsonl", "0" * 64
    lines = []
    for i in range(5000):  # far more than a pipe holds, so the writer meets the closed pipe
        record = {"ts": "2026-11-25T10:00:00.000000Z", "type": "statement", "session": "ab" * 8, "seq": i + 1,
                  "identity": {"subject": "agent-1", "groups": []}, "statement": i + 1, "protocol": "simple",
                  "sql": f"select {i}", "verdict": {"action": "allow", "policy": None, "rule": None, "reason": None}}
        line, prev = seal_record(record, prev)
        lines.append(line)
    log.write_bytes(b"".join(lines))
    done = subprocess.run(f"{sys.executable} -m pgwarden tail --color never {log} | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 1
    assert done.stderr == ""


def test_verify_of_a_rotated_log_given_as_a_glob_says_the_order_it_needs(tmp_path):
    from pgwarden_plugins.recording.sinks import FileSink

    log = tmp_path / "records.jsonl"
    sink = FileSink(str(log), max_bytes=300, keep=20, fsync_s=1, on_error="closed")
    for n in range(14):  # a record per file: records.jsonl.1 .. records.jsonl.13, and records.jsonl
        sink.add([orjson.dumps({"type": "statement", "n": n, "pad": "x" * 100})])
        sink.flush()
    sink.close()
    as_the_shell_expands = sorted(str(p) for p in tmp_path.glob("records.jsonl*"))  # .1 .10 .11 ... .2
    oldest_first = [str(log) + f".{k}" for k in range(13, 0, -1)] + [str(log)]

    def verify(paths):
        return subprocess.run([sys.executable, "-m", "pgwarden", "verify", *paths], capture_output=True, text=True)

    done = verify(as_the_shell_expands)
    assert done.returncode == 1 and "reordered" in done.stdout
    assert f"oldest first: pgwarden verify {' '.join(oldest_first)}\n" in done.stdout, done.stdout
    done = verify(oldest_first)
    assert done.returncode == 0 and "ok: 14 records from the start of the chain" in done.stdout, done.stdout
    Path(oldest_first[3]).write_text('{"edited": true}\n')  # in order but damaged: no hint about order
    done = verify(oldest_first)
    assert done.returncode == 1 and "hint" not in done.stdout, done.stdout
