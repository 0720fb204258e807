"""Records through real clients: what they say, that they precede what they record, and fail-closed sinks."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import tcp

from pgwarden import hookimpl
from pgwarden.api import RECORDING
from pgwarden.testing.clocks import EndOfPollClock, StockClock
from pgwarden.testing.matrix import examples
from pgwarden.testing.pytest_plugin import check_records

POLICY = {
    "name": "agents",
    "default": "allow",
    "rules": [{"name": "no-ddl", "block": {"statements": ["ddl"]}, "reason": "schema changes go through migrations"}],
}


def _records(tmp_path: Path) -> list[dict]:
    return check_records([tmp_path / "records.jsonl"])


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class SecretMask:
    """Masks every column named ``secret`` (a stand-in for the masking plugin)."""

    @hookimpl
    def pgwarden_result_masks(self, shape, statement, session):
        return {i: (lambda v, c: b"***") for i, c in enumerate(shape.columns) if c.name == "secret"}


def test_a_session_in_records(make_pgwarden, pg_server, tmp_path):
    pg_server.psql("drop table if exists rec_items; create table rec_items (n int, secret text);"
                   "insert into rec_items select g, 's' || g from generate_series(1, 5) g", "appdb")
    running = make_pgwarden(policies=[POLICY], plugins=[("secret-mask", SecretMask())],
                            recording={"results": {"max_rows": 2}})
    with psycopg.connect(running.dsn(application_name="agent-app"), autocommit=True) as c:
        c.execute("select n, secret from rec_items where n > %s order by n", (1,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("create table rec_nope (x int)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("select 1/0")
        c.execute("select n from rec_items limit 3", prepare=True)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(running.dsn(token="not-a-token"))
    running.call(running.app.stop)
    records = _records(tmp_path)
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r)

    start = by_type["session_start"][0]
    assert start["identity"] == {"subject": "agent-1", "groups": ["ai-agents"]}
    assert start["application_name"] == "agent-app" and start["database"] == "appdb"
    assert start["client"].startswith("127.0.0.1:") and start["policies"] == ["agents"]
    session = start["session"]
    ours = [r for r in records if r["session"] == session]
    assert [r["seq"] for r in ours] == list(range(1, len(ours) + 1))

    stmts = {r["sql"]: r for r in by_type["statement"]}
    select = stmts["select n, secret from rec_items where n > $1 order by n"]
    assert select["protocol"] == "extended" and select["kinds"] == ["select"]
    assert select["tables"] == ["public.rec_items"] and select["verdict"]["action"] == "allow"
    result = next(r for r in by_type["result"] if r["statement"] == select["statement"])
    assert result["rows"] == 4 and result["sqlstate"] is None and result["bytes"] > 0
    assert result["parameters"] is not None and len(result["parameters"]) == 1
    # the first rows exactly as the agent got them: masked
    assert result["rows_sample"] == [["2", "***"], ["3", "***"]] and result["masked"] == ["secret"]
    assert result["duration_ms"] >= result["upstream_ms"] >= 0 and result["pgwarden_ms"] >= 0

    blocked = stmts["create table rec_nope (x int)"]
    assert blocked["verdict"] == {"action": "block", "policy": "agents", "rule": "no-ddl",
                                  "reason": "schema changes go through migrations"}
    refused = next(r for r in by_type["result"] if r["statement"] == blocked["statement"])
    assert refused["sqlstate"] == "42501" and refused["error"].startswith("pgwarden: blocked:")
    failed = next(r for r in by_type["result"] if r["statement"] == stmts["select 1/0"]["statement"])
    assert failed["sqlstate"] == "22012"

    end = by_type["session_end"][0]
    assert end["statements"] == 4 and end["refused"] == 1 and end["rows"] == 4 + 3
    assert by_type["auth_failure"][0]["sqlstate"] == "28P01"
    assert "ExpiredSignature" not in by_type["auth_failure"][0]["reason"]  # it was malformed, not expired
    # the upstream credential appears nowhere in the records
    password = (tmp_path / "upstream-password").read_text().strip()
    assert password not in (tmp_path / "records.jsonl").read_text()


class _WatchedSocket:
    """A socket whose ``send`` calls ``watch(data)`` first; everything else is the socket's."""

    def __init__(self, sock, watch) -> None:
        self._sock, self._watch = sock, watch

    def send(self, data, *flags):
        self._watch(bytes(data))
        return self._sock.send(data, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_the_record_reaches_the_file_before_the_statement_reaches_the_server(make_pgwarden, tmp_path,
                                                                             monkeypatch):
    # Watched at the upstream socket's send, whatever hands it the bytes (pgwarden.turns, compiled
    # or not, or Twisted's write): what the file holds when the Query leaves for the server.
    running = make_pgwarden()
    log = tmp_path / "records.jsonl"
    seen = []

    def watch(data):
        if b"record-before-run" in data and not seen:  # the first time: the Query on its way upstream
            seen.append(b"record-before-run" in log.read_bytes())

    created = tcp.Client.createInternetSocket
    monkeypatch.setattr(tcp.Client, "createInternetSocket", lambda self: _WatchedSocket(created(self), watch))
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 'record-before-run'")
    assert seen == [True]


def _watch_replies(running, watch) -> None:
    """``watch(data)`` at each send on the client sockets of ``running``'s sessions (reactor thread)."""
    def wrap():
        for conn in running.app.connections:
            conn.transport.socket = _WatchedSocket(conn.transport.socket, watch)

    running.call(wrap)


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_reply_leaves_before_its_result_record_is_sealed_and_written(make_pgwarden, tmp_path):
    # No delay for records without a verdict: the result is written in the poll iteration of the
    # reply, and still after the reply's bytes went to the client (watched at its socket's send).
    log = tmp_path / "records.jsonl"
    running = make_pgwarden(recording={"sinks": [{"file": str(log), "fsync_s": 60}], "results_delay_ms": 0})
    sink = running.call(lambda: running.app.plugins.pm.get_plugin("recording").sinks[0])
    seen = []

    def watch(data):
        if b"reply-first" in data and not seen:  # the reply (its DataRow) on its way to the client
            seen.append(([r["type"] for r in _lines(log) if r.get("sql") == "select 'reply-first'" or
                          r["type"] == "result"], len(sink.chain.lines)))

    with psycopg.connect(running.dsn(), autocommit=True) as c:
        _watch_replies(running, watch)
        c.execute("select 'reply-first'")
        running.call(lambda: None)  # the reply's poll iteration is over (a stock reactor: its next)
        running.call(lambda: None)
        # the statement's record was written before the Query left; its result was not yet built,
        # let alone sealed (nothing in the sink's buffer) or written
        assert seen == [(["statement"], 0)]
        records = _records(tmp_path)
        ours = [r for r in records if r["session"] == records[-1]["session"]]
        assert [r["type"] for r in ours][-2:] == ["statement", "result"]  # written since, in order
        assert ours[-1]["statement"] == ours[-2]["statement"] and ours[-1]["rows"] == 1


def test_a_result_record_that_cannot_be_written_refuses_the_next_statement(make_pgwarden, pg_server,
                                                                           tmp_path):
    # The file sink's writes start failing (its descriptor now /dev/full: ENOSPC) at the moment
    # the first statement's reply leaves: after its statement record was written, before its
    # result record is.
    pg_server.psql("drop table if exists rec_results; create table rec_results (n int)", "appdb")
    log = tmp_path / "records.jsonl"
    running = make_pgwarden(recording={"sinks": [{"file": str(log), "fsync_s": 60}], "results_delay_ms": 0})
    sink = running.call(lambda: running.app.plugins.pm.get_plugin("recording").sinks[0])
    full = os.open("/dev/full", os.O_WRONLY)
    kept = []

    def watch(data):
        if b"INSERT 0 1" in data and not kept:
            kept.append(sink._fd)
            sink._fd = full
            sink._direct()  # its chain writes there too while it writes directly

    try:
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            _watch_replies(running, watch)
            c.execute("insert into rec_results values (1)")
            assert kept  # the reply went out: the statement ran, its result record could not follow
            # Its write is tried right after the reply's turn; on Twisted's stock reactor (whose turn
            # ends in a callLater(0)) the client's next statement may arrive first and be ended with
            # its session, held behind the failing write: also refused, by another path. Waited
            # for, so that this test checks the refusal of a statement after a known failure.
            deadline = time.monotonic() + 10
            while running.call(lambda: running.app.recorder.failure) is None:
                assert time.monotonic() < deadline, "the failed result write was never tried"
                time.sleep(0.01)
            with pytest.raises(psycopg.errors.IoError) as excinfo:
                c.execute("insert into rec_results values (2)")
            assert excinfo.value.diag.message_primary == "pgwarden: statement refused: records cannot be written"
            running.call(lambda: (setattr(sink, "_fd", kept[0]), sink._direct()))
            c.execute("insert into rec_results values (3)")  # written again: statements run
    finally:
        os.close(full)
    assert pg_server.psql("select string_agg(n::text, ',' order by n) from rec_results", "appdb") == "1,3"
    running.call(running.app.stop)
    records = _records(tmp_path)  # the chain whole: the result that failed was written on the retry
    ours = [(r["type"], r.get("sql"), r.get("sqlstate")) for r in records if r["type"] in ("statement", "result")]
    assert ours[-6:] == [
        ("statement", "insert into rec_results values (1)", None), ("result", None, None),
        ("statement", "insert into rec_results values (2)", None), ("result", None, "58030"),
        ("statement", "insert into rec_results values (3)", None), ("result", None, None)]


class ToggledSink:
    """A third-party sink whose writes fail while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.records: list[dict] = []
        self._buffer: list[dict] = []

    @hookimpl
    def pgwarden_record(self, record):
        self._buffer.append(record)

    @hookimpl
    def pgwarden_records_flush(self):
        if self.failing:
            raise OSError(28, "No space left on device")
        self.records += self._buffer
        self._buffer.clear()


def test_a_statement_whose_record_cannot_be_written_never_runs(make_pgwarden, pg_server, tmp_path):
    pg_server.psql("drop table if exists rec_writes; create table rec_writes (n int)", "appdb")
    sink = ToggledSink()
    running = make_pgwarden(plugins=[("toggled", sink)])
    admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into rec_writes values (1)")
        running.call(setattr, sink, "failing", True)
        with pytest.raises(psycopg.OperationalError) as excinfo:
            c.execute("insert into rec_writes values (2)")
        assert "records cannot be written" in str(excinfo.value)
    assert pg_server.psql("select string_agg(n::text, ',') from rec_writes", "appdb") == "1"
    status, body = _http(admin, "/readyz")
    assert status == 503 and "records cannot be written: toggled: [Errno 28] No space left on device" in body
    # while the sink fails, new statements are refused with a clear error ...
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.IoError) as excinfo:
            c.execute("insert into rec_writes values (3)")
        assert excinfo.value.diag.message_primary == "pgwarden: statement refused: records cannot be written"
        running.call(setattr, sink, "failing", False)
        # ... and once a write succeeds (the refusal's own record), they run again
        c.execute("insert into rec_writes values (4)")
    assert pg_server.psql("select string_agg(n::text, ',' order by n) from rec_writes", "appdb") == "1,4"
    assert _http(admin, "/readyz")[0] == 200
    _, metrics = _http(admin, "/metrics")
    assert "pgwarden_record_sink_errors_total" in metrics


class ToggledTaker:
    """A third-party sink on the v1 hook that cannot take records while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.records: list[dict] = []

    @hookimpl
    def pgwarden_records(self, records):
        if self.failing:
            raise OSError(28, "No space left on device")
        self.records += records


def test_a_statement_whose_record_a_sink_cannot_take_never_runs(make_pgwarden, pg_server, tmp_path):
    pg_server.psql("drop table if exists rec_takes; create table rec_takes (n int)", "appdb")
    sink = ToggledTaker()
    running = make_pgwarden(plugins=[("taker", sink)])
    admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into rec_takes values (1)")
        running.call(setattr, sink, "failing", True)
        with pytest.raises(psycopg.OperationalError) as excinfo:
            c.execute("insert into rec_takes values (2)")
        assert "records cannot be written" in str(excinfo.value)
    assert pg_server.psql("select string_agg(n::text, ',') from rec_takes", "appdb") == "1"
    assert running.app.recorder.sink_errors >= 1
    # Nothing it is handed can be taken: another session's statement does not run either (refused,
    # or its session ended, depending on whether a retry in between ended the failure).
    with pytest.raises(psycopg.OperationalError), psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into rec_takes values (3)")
    assert pg_server.psql("select string_agg(n::text, ',') from rec_takes", "appdb") == "1"
    running.call(setattr, sink, "failing", False)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into rec_takes values (4)")
    assert _http(admin, "/readyz")[0] == 200
    assert pg_server.psql("select string_agg(n::text, ',' order by n) from rec_takes", "appdb") == "1,4"
    running.call(running.app.stop)
    taken = [r["sql"] for r in sink.records if r["type"] == "statement"]
    assert taken[0] == "insert into rec_takes values (1)" and taken[-1] == "insert into rec_takes values (4)"
    # the other sink (the built-in file) got the records the failing one could not take: no gap
    written = [r["sql"] for r in _records(tmp_path) if r["type"] == "statement"]
    assert [f"insert into rec_takes values ({n})" for n in (1, 2, 3, 4)] == \
        [sql for sql in written if sql.startswith("insert into rec_takes")]


def test_a_file_on_a_full_device_fails_closed(make_pgwarden, full_disk):
    records = full_disk / "records.jsonl"
    running = make_pgwarden(recording={"sinks": [{"file": str(records)}]})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.IoError):
            c.execute("select 1")
    admin = running.call(running.app.listen_admin).getHost().port
    status, body = _http(admin, "/readyz")
    assert status == 503 and f"file:{records}: No space left on device" in body


def test_a_sink_may_fail_open_when_configured_so(make_pgwarden, full_disk, tmp_path):
    full = full_disk / "records.jsonl"
    running = make_pgwarden(recording={"sinks": [{"file": str(full), "on_error": "open"},
                                                 {"file": str(tmp_path / "records.jsonl")}]})
    admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 41 + 1").fetchone() == (42,)
    status, body = _http(admin, "/readyz")
    assert status == 200 and f"records failing open: file:{full}" in body
    assert "select 41 + 1" in (tmp_path / "records.jsonl").read_text()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def full_disk(small_disk):
    """A small tmpfs with no space left: files can be created there, not written."""
    _fill(small_disk / "filler")
    return small_disk


def _fill(path: Path) -> None:
    """Writes to ``path`` until its device is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass


def test_a_full_disk_refuses_statements_until_space_is_freed(make_pgwarden, small_disk):
    filler = small_disk / "filler"
    running = make_pgwarden(recording={"sinks": [{"file": str(small_disk / "records.jsonl"), "fsync_s": 0}]})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 1")
        _fill(filler)
        with pytest.raises((psycopg.errors.IoError, psycopg.OperationalError)):
            for _ in range(200):  # the records of a few statements fit in what the filler left
                c.execute("select 'a statement with a longer text, to fill the last bytes of the device'")
    filler.unlink()
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 2").fetchone() == (2,)
    running.call(running.app.stop)
    check_records([small_disk / "records.jsonl"])  # nothing half-written, the chain whole


def test_rotation_keeps_the_chain_and_a_restart_continues_it(make_pgwarden, tmp_path):
    log = tmp_path / "rot.jsonl"
    sinks = {"sinks": [{"file": str(log), "max_bytes": 4000, "keep": 50}]}
    running = make_pgwarden(recording=sinks)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        for i in range(20):
            c.execute(f"select {i}")
    running.call(running.app.stop)
    again = make_pgwarden(recording=sinks)
    with psycopg.connect(again.dsn(), autocommit=True) as c:
        c.execute("select 'after restart'")
    again.call(again.app.stop)
    rotated = sorted(tmp_path.glob("rot.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) >= 3
    files = rotated + [log]
    assert all(p.stat().st_size <= 4000 for p in files)
    records = check_records(files)  # one chain through every file, across the restart
    assert any(r.get("sql") == "select 'after restart'" for r in records)
    assert sum(1 for r in records if r["type"] == "session_start") == 2


def test_metrics_and_health(make_pgwarden, tmp_path):
    running = make_pgwarden(policies=[POLICY])
    admin = running.call(running.app.listen_admin).getHost().port
    assert _http(admin, "/healthz") == (200, "ok\n")
    assert _http(admin, "/readyz")[0] == 200
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("drop table whatever")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(running.dsn(token="x.y.z"))
    status, text = _http(admin, "/metrics")
    assert status == 200
    assert 'pgwarden_statements_total{kind="select",verdict="allow"} 1.0' in text
    assert 'pgwarden_statements_total{kind="ddl",verdict="block"} 1.0' in text
    assert 'pgwarden_auth_failures_total{reason="malformed_token"} 1.0' in text
    assert "pgwarden_overhead_seconds_bucket" in text and 'pgwarden_bytes_total{direction="from_client"}' in text
    # each execution's time counted once (the select and the refused DDL), the bytes read both ways
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["pgwarden_overhead_seconds_count"] == 2.0
    assert values['pgwarden_bytes_total{direction="from_client"}'] > 0
    assert values['pgwarden_bytes_total{direction="from_upstream"}'] > 0
    assert "pgwarden_connections_total 2.0" in text
    password = (tmp_path / "upstream-password").read_text().strip()
    assert password not in text
    assert _http(admin, "/nothing")[0] == 404


@pytest.mark.parametrize("recording, kind", [
    (None, "select"),  # the record carries the kinds: the metric has them too, from the first time
    # the blocking plugin analyses every statement, rules or none (what cannot be analysed is refused)
    ({"recording": {"sinks": []}, "plugins_section": {"disable": ["recording"]}}, "select"),
    ({"recording": {"sinks": []}, "plugins_section": {"disable": ["recording", "block"]}}, "unanalysed"),
])
def test_statements_are_counted_by_kind_whenever_their_record_needs_the_analysis(make_pgwarden, recording,
                                                                                  kind):
    running = make_pgwarden(policies=[{"name": "everyone", "default": "allow"}], **(recording or {}))
    admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 'seen once'")  # nothing checks it (no rules), and its text is new
    text = _http(admin, "/metrics")[1]
    counted = [line for line in text.splitlines() if line.startswith("pgwarden_statements_total{")]
    assert counted == [f'pgwarden_statements_total{{kind="{kind}",verdict="allow"}} 1.0'], counted


def test_readyz_names_an_unreachable_database(make_pgwarden):
    from pgwarden.testing.postgres import free_port

    port = free_port()
    running = make_pgwarden(upstream={"port": port})
    admin = running.call(running.app.listen_admin).getHost().port
    status, body = _http(admin, "/readyz")
    assert status == 503 and f"database 127.0.0.1:{port} unreachable" in body


def test_a_plugin_sink_that_raises_refuses_the_statement(make_pgwarden):
    class Broken:
        @hookimpl
        def pgwarden_record(self, record):
            if record["type"] == "statement":
                raise RuntimeError("sink is broken")

    running = make_pgwarden(plugins=[("broken-sink", Broken())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.IoError):
            c.execute("select 1")
    assert running.app.recorder.sink_errors >= 1


def test_stdout_records_and_json_op_log_from_pgwarden_run(pgwarden_process, tmp_path):
    """`pgwarden run` with the default sink: records on stdout, its own log as JSON on stderr."""
    from pgwarden.chain import verify
    from pgwarden.proxy.reactor import chosen

    running = pgwarden_process(recording=None)  # the default sink: stdout
    with psycopg.connect(running.dsn(running.token("agent-9", ["g"])), autocommit=True) as c:
        c.execute("select 'from stdout'")
    assert running.stop() == 0
    lines = running.output().splitlines()
    assert any('"sql":"select \'from stdout\'"' in line for line in lines)
    (tmp_path / "stdout.jsonl").write_text("\n".join(lines) + "\n")
    assert verify([str(tmp_path / "stdout.jsonl")]).problem is None
    oplog = [json.loads(line) for line in running.log().splitlines()]
    assert any(e["msg"].startswith("pgwarden listening on") and e["level"] == "info" for e in oplog)
    # on the reactor PGWARDEN_REACTOR names (inherited from the suite's environment)
    reactor = next(e["reactor"] for e in oplog if e["msg"].startswith("reactor: "))
    assert reactor == {"pgwarden": "pgwarden.proxy.reactor.PgwardenReactor",
                       "default": "twisted.internet.epollreactor.EPollReactor"}[chosen()]
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in oplog)
    assert not any('"type":' in line for line in running.log().splitlines())


def test_a_prepared_statement_does_not_run_again_while_records_cannot_be_written(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists rec_prepared; create table rec_prepared (n int)", "appdb")
    sink = ToggledSink()
    running = make_pgwarden(plugins=[("toggled", sink)])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("insert into rec_prepared values (%s)", (1,), prepare=True)  # parsed once, named
        running.call(setattr, sink, "failing", True)
        with pytest.raises(psycopg.OperationalError):  # another session finds the sink failing
            with psycopg.connect(running.dsn(), autocommit=True) as other:
                other.execute("select 1")
        # an Execute of a statement parsed (and recorded) before: no new record precedes it, so
        # while records cannot be written it must not run either
        with pytest.raises(psycopg.OperationalError) as excinfo:
            c.execute("insert into rec_prepared values (%s)", (2,), prepare=True)  # Bind/Execute only
        assert "records cannot be written" in str(excinfo.value)
    assert pg_server.psql("select string_agg(n::text, ',') from rec_prepared", "appdb") == "1"


def test_no_sinks_means_no_records_are_built(make_pgwarden):
    running = make_pgwarden(recording={"sinks": []})
    assert running.app.recorder.active is False
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_readyz_notices_that_the_sink_writes_again(make_pgwarden):
    sink = ToggledSink()
    running = make_pgwarden(plugins=[("toggled", sink)])
    admin = running.call(running.app.listen_admin).getHost().port
    running.call(setattr, sink, "failing", True)
    with pytest.raises(psycopg.OperationalError):
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            c.execute("select 1")
    assert _http(admin, "/readyz")[0] == 503
    running.call(setattr, sink, "failing", False)
    assert _http(admin, "/readyz")[0] == 200  # without waiting for a statement to try


def test_periodic_fsync_runs_off_the_reactor_on_its_own_descriptor_and_a_failure_fails_closed(tmp_path):
    """With fsync_s > 0 a write never waits for fsync: the ticker hands it to a thread."""
    from twisted.internet.defer import Deferred

    from pgwarden_plugins.recording.sinks import FileSink, SinkFailed

    now = [0.0]
    handed: list[tuple] = []

    def in_thread(f):  # what the reactor's pool would do, run when the test says
        d = Deferred()
        handed.append((f, d))
        return d

    class Disk(FileSink):
        broken = False
        inline_syncs = 0

        def _sync(self):
            self.inline_syncs += 1
            if self.broken:
                raise OSError(5, "Input/output error")
            super()._sync()

    path = tmp_path / "r.jsonl"
    sink = Disk(str(path), max_bytes=10**9, keep=0, fsync_s=1, on_error="closed",
                clock=lambda: now[0], in_thread=in_thread)
    now[0] = 5.0  # long past the interval: inline, this write would have synced
    sink.add([orjson.dumps({"type": "statement", "n": 1})])
    sink.flush()
    assert sink.inline_syncs == 0 and not handed
    sink.tick()
    sink.tick()  # one sync in flight at a time
    assert len(handed) == 1
    fsynced = []
    real_fsync = os.fsync
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
        handed[0][0]()
    assert fsynced and fsynced[0] != sink._fd  # a duplicate: a rotation may close the sink's own
    handed[0][1].callback(None)
    sink.tick()
    assert len(handed) == 1  # synced, nothing written since

    # A background fsync that fails: the next flush syncs inline first and, failing, refuses.
    sink.add([orjson.dumps({"type": "statement", "n": 2})])
    sink.flush()
    now[0] = 10.0
    sink.tick()
    handed[1][1].errback(OSError(5, "Input/output error"))
    sink.broken = True
    sink.add([orjson.dumps({"type": "statement", "n": 3})])
    with pytest.raises(SinkFailed, match="fsync: Input/output error"):
        sink.flush()
    sink.broken = False
    sink.flush()  # the disk is back: the held record is written, once
    sink.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_fsync_failure_never_writes_records_twice(tmp_path):
    from pgwarden_plugins.recording.sinks import FileSink, SinkFailed

    class FlakyDisk(FileSink):
        fail_next = False

        def _sync(self):
            if self.fail_next:
                self.fail_next = False
                raise OSError(5, "Input/output error")
            super()._sync()

    path = tmp_path / "r.jsonl"
    sink = FlakyDisk(str(path), max_bytes=10**9, keep=0, fsync_s=0, on_error="closed")
    sink.add([orjson.dumps({"type": "statement", "n": 1})])
    sink.fail_next = True
    with pytest.raises(SinkFailed, match="Input/output error"):
        sink.flush()
    sink.add([orjson.dumps({"type": "statement", "n": 2})])
    sink.flush()
    sink.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2]
    from pgwarden.chain import verify

    assert verify([str(path)]).problem is None


def test_an_incomplete_last_record_is_kept_aside_and_the_chain_goes_on(tmp_path):
    from pgwarden.chain import verify
    from pgwarden_plugins.recording.sinks import FileSink

    path = tmp_path / "r.jsonl"
    sink = FileSink(str(path), max_bytes=10**9, keep=0, fsync_s=0, on_error="closed")
    sink.add([orjson.dumps({"type": "statement", "n": 1})])
    sink.flush()
    sink.close()
    with open(path, "ab") as f:
        f.write(b'{"type":"statement","n":2,"pre')  # a write cut short by a crash
    again = FileSink(str(path), max_bytes=10**9, keep=0, fsync_s=0, on_error="closed")
    again.add([orjson.dumps({"type": "statement", "n": 3})])
    again.flush()
    again.close()
    assert verify([str(path)]).problem is None
    (aside,) = tmp_path.glob("r.jsonl.incomplete-*")
    assert aside.read_bytes() == b'{"type":"statement","n":2,"pre'


def test_the_chain_goes_on_after_a_record_longer_than_any_read_window(tmp_path):
    from pgwarden.chain import verify
    from pgwarden_plugins.recording.sinks import FileSink

    path = tmp_path / "r.jsonl"
    sink = FileSink(str(path), max_bytes=10**9, keep=0, fsync_s=0, on_error="closed")
    sink.add([orjson.dumps({"type": "statement", "sql": "select '" + "x" * 3_000_000 + "'"})])  # a 3 MB statement
    sink.flush()
    sink.close()
    again = FileSink(str(path), max_bytes=10**9, keep=0, fsync_s=0, on_error="closed")
    again.add([orjson.dumps({"type": "statement", "sql": "select 1"})])
    again.flush()
    again.close()
    report = verify([str(path)])
    assert report.problem is None and report.records == 2


def test_statements_are_recorded_when_no_plugin_judges_them(make_pgwarden, tmp_path):
    running = make_pgwarden(plugins_section={"disable": ["block", "mask"]})
    assert not running.app.plugins.checks
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 'unjudged'").fetchone() == ("unjudged",)
    running.call(running.app.stop)
    statement = next(r for r in _records(tmp_path) if r["type"] == "statement")
    assert statement["sql"] == "select 'unjudged'" and statement["verdict"]["action"] == "allow"
    assert statement["kinds"] == ["select"]


#: The two ways a turn ends (`pgwarden.turns`): the same records must be written the same way.
CLOCKS = [pytest.param(EndOfPollClock, id="pgwarden-reactor"), pytest.param(StockClock, id="stock-reactor")]


class _Writes:
    """A sink that notes what each of its writes contained (records by the deprecated per-record hook)."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.writes: list[list[str]] = []

    @hookimpl
    def pgwarden_record(self, record):
        self.buffer.append(record["type"])

    @hookimpl
    def pgwarden_records_flush(self):
        if self.buffer:
            self.writes.append(self.buffer)
            self.buffer = []

    def forget(self) -> None:
        self.writes.clear()


class _WritesBatches(_Writes):
    """The same sink on the v1 hook: the records of a barrier in one call, just before its flush."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[int] = []  # how many records each pgwarden_records call brought

    @hookimpl
    def pgwarden_records(self, records):
        assert not self.buffer, "records handed over again before the flush of the last ones"
        self.handed.append(len(records))
        self.buffer.extend(r["type"] for r in records)

    def forget(self) -> None:
        super().forget()
        self.handed.clear()


#: The two ways a sink gets records: the same records must be written the same way.
SINKS = [pytest.param(_WritesBatches, id="pgwarden_records"), pytest.param(_Writes, id="pgwarden_record")]


class _Recorded:
    """A Recorder of a real Application on a clock the test plays, writing to `_Writes` only."""

    def __init__(self, directory: Path, clock, results_delay_ms: float | None = None,
                 sink: type[_Writes] = _WritesBatches) -> None:
        from types import SimpleNamespace

        from pgwarden.app import Application
        from pgwarden.config import load_config
        from pgwarden.recorder import SessionLog
        from pgwarden.tokens import generate_key

        _, jwks = generate_key(directory / "keys")
        password = directory / "pw"
        password.write_text("x\n")
        password.chmod(0o600)
        config = directory / "pgwarden.yaml"
        config.write_text(yaml.safe_dump({
            "listen": {"host": "127.0.0.1", "port": 0},
            "upstream": {"host": "127.0.0.1", "database": "appdb", "user": "app", "password_file": str(password)},
            "auth": {"jwt": {"issuer": "i", "audience": "a", "jwks_file": str(jwks)}},
            "policies": [POLICY],
            "recording": {"sinks": [],  # only the sink of this test
                          **({} if results_delay_ms is None else {"results_delay_ms": results_delay_ms})},
        }))
        self.reactor, self.sink = clock(), sink()
        app = Application(load_config(str(config)), self.reactor, extra_plugins=[("writes", self.sink)])
        self.app, self.recorder = app, app.recorder
        # what the recorder reads of a session's connection: its native base's log and shadow
        from pgwarden.limits import SessionLimits
        from pgwarden.proxy.state import ConnectionState

        self.conn = ConnectionState(SimpleNamespace(), SessionLimits())
        self.conn.log = SessionLog("0123456789abcdef")

    def result(self, seq: int) -> None:
        from pgwarden.relay.execution import Execution

        self.recorder.result(self.conn, Execution(seq, "extended", 0.0, 0.0, 0.0, None))

    def statement(self, seq: int, allowed: bool = True) -> None:
        from pgwarden.relay.engine import StatementRequest
        from pgwarden.verdict import Verdict

        verdict = Verdict.allow() if allowed else Verdict.block("no")
        self.recorder.statement(self.conn, StatementRequest("simple", "select 1", None, seq), None, verdict,
                                waits=allowed)

    def timers(self) -> list:
        return [c for c in self.reactor.getDelayedCalls() if c.func == self.recorder._lazy_due]


@pytest.fixture(scope="module", params=[pytest.param((c.values[0], s.values[0]), id=f"{c.id}-{s.id}")
                                        for c in CLOCKS for s in SINKS])
def recorded(request, tmp_path_factory) -> _Recorded:
    clock, sink = request.param
    return _Recorded(tmp_path_factory.mktemp("lazy"), clock, sink=sink)


def _one_hand_over_per_write(sink: _Writes) -> None:
    """A sink on pgwarden_records got the records of each write in one call, never one per record."""
    if isinstance(sink, _WritesBatches):
        assert sink.handed == [len(w) for w in sink.writes]


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("clock", CLOCKS)
def test_records_without_a_verdict_wait_a_little_and_records_with_one_never(tmp_path, clock, sink):
    from pgwarden.recorder import LAZY_RECORDS

    r = _Recorded(tmp_path, clock, results_delay_ms=25, sink=sink)
    reactor, sink = r.reactor, r.sink
    result = r.result
    LAZY_S = 0.025  # noqa: N806 - recording.results_delay_ms, as configured
    assert r.recorder.lazy_s == LAZY_S

    result(0)
    reactor.turn()
    reactor.turn()
    reactor.advance(LAZY_S * 0.9)  # within the delay: still waiting
    assert sink.writes == []
    reactor.advance(LAZY_S * 0.1 + 1e-9)
    assert sink.writes == [["result"]]
    sink.forget()

    result(1)
    reactor.turn()  # built after the turn's sends
    reactor.turn()  # a barrier: a result carries no verdict, so it may wait
    assert sink.writes == []
    reactor.advance(LAZY_S)  # but not longer than this
    assert sink.writes == [["result"]]

    for seq in range(LAZY_RECORDS):  # nor for more than this many
        result(seq)
    reactor.turn()
    reactor.turn()
    assert sink.writes[1:] == [["result"] * LAZY_RECORDS]

    result(100)
    reactor.turn()
    r.statement(101)
    reactor.turn()  # a verdict: written by this very barrier, with what waited before it, in order
    assert sink.writes[2:] == [["result", "statement"]]
    r.statement(102, allowed=False)
    reactor.turn()  # a refusal's record too, though no statement waits on it
    assert sink.writes[3:] == [["statement"]]
    armed = r.timers()
    for seq in range(200, 210, 2):  # a result, then a statement that writes it: the timer stays as it is
        r.result(seq)
        reactor.turn()
        reactor.turn()
        r.statement(seq + 1)
        reactor.turn()
    assert sink.writes[4:] == [["result", "statement"]] * 5
    assert len(armed) == 1 and r.timers() == armed  # armed once, not once per statement
    # No timer left behind: the one armed for result 100 (not cancelled when a verdict wrote
    # the result, which would cost a timer per statement) fires once, finds nothing waiting and
    # is not armed again.
    reactor.advance(LAZY_S)
    assert not r.timers() and sink.writes[9:] == []
    _one_hand_over_per_write(sink)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["result", "allowed", "refused", "turn", "wait"]), max_size=120))
def test_whatever_the_order_records_are_written_in_order_verdicts_at_once_the_rest_in_time(recorded, steps):
    from pgwarden.recorder import LAZY_RECORDS

    r = recorded
    LAZY_S = r.recorder.lazy_s  # noqa: N806 - recording.results_delay_ms (its default)
    sink, reactor = r.sink, r.reactor
    reactor.turn()  # what an example that failed left behind (while hypothesis shrinks)
    reactor.sleep(LAZY_S)
    sink.forget()
    emitted: list[str] = []
    emitted_at: list[float] = []  # when each was passed to the sinks

    def emit(kind: str, n: int = 1) -> None:
        emitted.extend([kind] * n)
        emitted_at.extend([reactor.seconds()] * n)

    for n, step in enumerate(steps):
        if step == "result":
            r.result(n)  # passed on after the turn's sends
        elif step in ("allowed", "refused"):
            emit("result", len(r.recorder._results))  # a session's results go before its next record
            r.statement(n, allowed=step == "allowed")
            emit("statement")
        else:  # the turn ends; "wait": then nothing happens for a while
            before = len(r.recorder._results)
            reactor.turn()
            emit("result", before)
            if step == "wait":
                reactor.sleep(LAZY_S / 3)
        written = [t for w in sink.writes for t in w]
        assert written == emitted[:len(written)]  # in order, nothing twice
        waiting = emitted[len(written):]
        if step in ("turn", "wait"):
            assert "statement" not in waiting  # a verdict never waits past its barrier
            assert len(waiting) < LAZY_RECORDS
        if waiting:  # nothing waits longer than LAZY_S (give or take the clock's float sums)
            assert reactor.seconds() - emitted_at[len(written)] <= LAZY_S + 1e-6
    before = len(r.recorder._results)
    reactor.turn()  # the last results are passed on after this turn's sends,
    reactor.sleep(LAZY_S)  # and are written in time while nothing else happens
    assert [t for w in sink.writes for t in w] == emitted + ["result"] * before
    assert not sink.buffer and not r.timers()
    _one_hand_over_per_write(sink)


@pytest.mark.parametrize("sink", SINKS)
@pytest.mark.parametrize("clock", CLOCKS)
def test_with_no_results_delay_every_record_is_written_at_the_end_of_its_turn(tmp_path, clock, sink):
    """recording.results_delay_ms: 0, for an operator who wants no record to wait (docs/records.md)."""
    r = _Recorded(tmp_path, clock, results_delay_ms=0, sink=sink)
    reactor, sink = r.reactor, r.sink
    r.result(1)
    reactor.turn()  # built after the turn's sends ...
    reactor.turn()  # ... and written by the next barrier, with no timer
    assert sink.writes == [["result"]]
    r.result(2)
    r.result(3)
    reactor.turn()
    reactor.turn()
    assert sink.writes[1:] == [["result", "result"]]
    assert not r.timers()


class _TakesEarly(_Writes):
    """A sink on the v1 hook that only buffers what it is handed, and says so (TAKES_EARLY)."""

    pgwarden_takes_records_early = True

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[list[str]] = []

    @hookimpl
    def pgwarden_records(self, records):
        self.handed.append([r["type"] for r in records])
        self.buffer.extend(r["type"] for r in records)


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_sink_that_takes_records_early_gets_results_after_the_sends_and_writes_them_later(tmp_path, clock):
    r = _Recorded(tmp_path, clock, sink=_TakesEarly)
    reactor, sink = r.reactor, r.sink
    r.statement(1)
    reactor.turn()  # the statement's barrier: handed over and written before the sends
    assert sink.handed == [["statement"]] and sink.writes == [["statement"]]
    r.result(1)
    reactor.turn()  # the reply's turn: after its sends, the result is handed over, not written
    assert sink.handed[1:] == [["result"]] and sink.writes[1:] == []
    r.statement(2)
    reactor.turn()  # the next statement's barrier hands over its own record only, writes both
    assert sink.handed[2:] == [["statement"]] and sink.writes[1:] == [["result", "statement"]]
    r.result(2)
    reactor.turn()
    reactor.advance(r.recorder.lazy_s)  # or the lazy timer writes it, handed over already
    assert sink.handed[3:] == [["result"]] and sink.writes[2:] == [["result"]]


class _WritesUntilReload(_WritesBatches):
    """A sink that wants no records once ``wanted`` is cleared, from the next configuration on."""

    wanted = True

    @hookimpl
    def pgwarden_records_wanted(self):
        return self.wanted


@pytest.mark.parametrize("clock", CLOCKS)
def test_records_kept_at_a_reload_go_to_the_sinks_of_the_running_config(tmp_path, clock):
    r = _Recorded(tmp_path, clock, sink=_WritesUntilReload)
    reactor, sink = r.reactor, r.sink
    r.result(1)
    reactor.turn()  # built after the turn's sends, kept: a result may wait for its write
    assert sink.writes == [] and r.recorder.active
    sink.wanted = False
    assert r.app.reload(r.app.config)
    assert not r.recorder.active  # no sink wants records any more ...
    assert sink.writes == [["result"]]  # ... and the one kept went where it was meant to
    reactor.advance(r.recorder.lazy_s)  # the lazy timer, if still armed, finds nothing to write
    assert not r.timers() and sink.writes == [["result"]]


@pytest.mark.parametrize("where, why", [
    ("missing/records.jsonl", r"cannot create .*missing/records.jsonl: no directory .*missing"),
    ("/dev/null", r"/dev/null is not a regular file: a file sink appends to, rotates and fsyncs a file"),
    (".", r".* is not a regular file"),
])
def test_a_file_sink_that_cannot_be_used_stops_start_up_naming_its_key(make_pgwarden, tmp_path, where, why):
    from pgwarden.config import ConfigError

    path = where if where.startswith("/") else str(tmp_path / where)
    with pytest.raises(ConfigError, match=r"recording\.sinks\[1\]\.file: " + why):
        make_pgwarden(recording={"sinks": [{"file": str(tmp_path / "ok.jsonl")}, {"file": path}]})
    # what opened before the refusal is let go, not left open
    ok = str(tmp_path / "ok.jsonl")
    assert ok not in [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
    running = make_pgwarden(recording={"sinks": [{"file": str(tmp_path / "ok.jsonl")}]})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 'after a refused start'")
    running.call(running.app.stop)
    assert any(r.get("sql") == "select 'after a refused start'" for r in check_records([tmp_path / "ok.jsonl"]))


class _Picky:
    """A plugin that cannot take a config whose only sink writes to ``refused``."""

    def __init__(self, refused: str) -> None:
        self.refused = refused

    @hookimpl
    def pgwarden_config_sections(self):
        return [RECORDING]

    @hookimpl
    def pgwarden_configure(self, sections):
        if [getattr(s, "file", None) for s in sections[RECORDING].sinks] == [self.refused]:
            raise ValueError("picky cannot work with that sink")


def test_a_reload_that_a_plugin_cannot_apply_is_refused_and_every_plugin_keeps_the_running_config(
        make_pgwarden, pg_server, signing_keys, tmp_path):
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    first, second, unusable = (str(tmp_path / n) for n in ("first.jsonl", "second.jsonl", "no-dir/x.jsonl"))
    running = make_pgwarden(recording={"sinks": [{"file": first}]}, plugins=[("picky", _Picky(second))])

    def config(*files: str) -> Config:
        doc = base_config(pg_server, signing_keys, tmp_path, recording={"sinks": [{"file": f} for f in files]})
        return _CONVERTER.structure(doc, Config)

    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("select 'before'")
        # the recording plugin cannot open the new sink: it keeps the sink in use
        assert running.call(running.app.reload, config(first, unusable)) is False
        c.execute("select 'after a sink that cannot be opened'")
        # the recording plugin takes the new sink, another plugin refuses: both go back
        assert running.call(running.app.reload, config(second)) is False
        c.execute("select 'after a plugin refused'")
        assert running.app.stats.reload_failures == 2
        assert [s.file for s in running.app.config.recording.sinks] == [first]
    running.call(running.app.stop)
    records = check_records([first])  # one chain, every statement in it
    sqls = [r["sql"] for r in records if r["type"] == "statement"]
    assert sqls == ["select 'before'", "select 'after a sink that cannot be opened'", "select 'after a plugin refused'"]
    assert not os.path.exists(tmp_path / "no-dir")
    assert not any(r.get("type") == "statement" for r in _lines_of(second))


def _lines_of(path: str) -> list[dict]:
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines()] if os.path.exists(path) else []


def test_a_statement_of_several_kinds_counts_under_each_kind(make_pgwarden):
    running = make_pgwarden(policies=[{"name": "everyone", "default": "allow"}])
    admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("begin; select 1; commit")
    text = _http(admin, "/metrics")[1]
    counted = sorted(line for line in text.splitlines() if line.startswith("pgwarden_statements_total{"))
    assert counted == ['pgwarden_statements_total{kind="select",verdict="allow"} 1.0',
                       'pgwarden_statements_total{kind="transaction",verdict="allow"} 1.0'], counted
    assert 'pgwarden_verdicts_total{verdict="allow"} 1.0' in text


class _Wrapping:
    """A plugin that only wraps the recording plugin's hooks (say, to count what it is handed)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.flushes = 0

    @hookimpl(wrapper=True)
    def pgwarden_records(self, records):
        self.seen.extend(r["type"] for r in records)
        return (yield)

    @hookimpl(wrapper=True)
    def pgwarden_records_flush(self):
        self.flushes += 1
        return (yield)


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_recorder_seals_and_writes_for_the_recording_plugin_itself_only_when_no_hook_is_wrapped(
        make_pgwarden, tmp_path, wrapped):
    # The recording plugin alone taking records: the recorder seals into its chains and writes them
    # itself (`pgwarden.recorder.CHAINS`), no hook call. A wrapper on its hooks: every record
    # through them, as ever. Either way the same records, chained, before each statement leaves.
    wrapper = _Wrapping()
    running = make_pgwarden(recording={"sinks": [{"file": str(tmp_path / "records.jsonl")}]},
                            plugins=[("wrapper", wrapper)] if wrapped else ())
    recorder, plugin = running.call(lambda: (running.app.recorder,
                                             running.app.plugins.pm.get_plugin("recording")))
    assert (recorder._chains is None) is wrapped
    if not wrapped:
        assert recorder._chains is plugin.pgwarden_chains
        assert running.call(lambda: plugin.sinks[0].chain.fd) >= 0  # the file sink lets its chain write
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        for n in range(3):
            c.execute(f"select {n}")
            ours = [r for r in _records(tmp_path) if r["type"] == "statement"]
            assert ours[-1]["sql"] == f"select {n}"  # written before the statement went
    running.call(running.app.stop)
    statements = [r for r in _records(tmp_path) if r["type"] == "statement"]
    assert [r["sql"] for r in statements][-3:] == ["select 0", "select 1", "select 2"]
    if wrapped:
        assert wrapper.seen.count("statement") == len(statements) and wrapper.flushes >= 3
    else:
        assert wrapper.seen == [] and wrapper.flushes == 0
