"""Red team seven (protocol): paths where pgwarden's reading of the server's answers fell one behind
or lost a result's shape, so that a masked column's rows went out unmasked; and client bytes queued
without bound. Each test failed before its fix (docs/architecture.md, "The relay's answers").

The masked table is the operator's; the agent sends raw protocol messages (`rawclient`).
"""

from __future__ import annotations

import struct
import threading
import time

import pytest
from rawclient import RawClient

from pgwarden.approvals_cli import ApiClient
from pgwarden.testing.waiting import wait_until
from pgwarden.wire import messages as m

SSN = b"123-45-6789"
MASKED = {"name": "pii", "mask": {"columns": ["public.r7_people.ssn"], "with": "redact"}}
SETUP = """
drop table if exists r7_people, r7_ap, r7_sink cascade;
create table r7_people(id int, ssn text); insert into r7_people values (1, '123-45-6789');
create table r7_ap(id int); create table r7_sink(x text);
grant all on r7_people, r7_ap, r7_sink to app;
create or replace function r7_swap(n text) returns int language plpgsql stable as $$
  declare c refcursor := n; begin close c; open c for select ssn from r7_people; return 1; end $$;
grant execute on function r7_swap(text) to app;
"""


@pytest.fixture
def masked(make_pgwarden, pg_server):
    pg_server.psql(SETUP, database="appdb")
    return make_pgwarden(policies=[{"name": "agents", "default": "allow", "rules": [MASKED]}])


def _login(running, timeout: float = 10) -> RawClient:
    rc = RawClient(running.host, running.port, timeout=timeout)
    assert isinstance(rc.login(running.token())[-1], m.ReadyForQuery)
    return rc


def _until(rc: RawClient, kind) -> list:
    out = []
    while True:
        msg = rc.recv_message()
        assert msg is not None, f"closed; got {out}"
        out.append(msg)
        if isinstance(msg, kind):
            return out


def _rest(rc: RawClient) -> list:
    """Every message until the session closes (or 10 s pass: a hang fails the assertion after)."""
    out = []
    try:
        while (msg := rc.recv_message()) is not None:
            out.append(msg)
    except (TimeoutError, ConnectionError):
        out.append("timeout")
    return out


def _rows(answer: list) -> list:
    return [r.values[0] for r in answer if isinstance(r, m.DataRow)]


def _fatal(answer: list) -> list[str]:
    return [x.message for x in answer if isinstance(x, m.ErrorResponse) and x.get("V") == "FATAL"]


def _select_is_masked(rc: RawClient) -> None:
    rc.send(m.Query("select ssn from r7_people").encode())
    answer = rc.until_ready()
    assert any(isinstance(x, m.RowDescription) for x in answer), answer
    assert _rows(answer) == [b"***"], answer


def test_a_flush_with_a_body_ends_the_session(masked):
    """The server refuses it (08P01) and skips to the next Sync, answering nothing pgwarden expected:
    the Sync's ReadyForQuery had been read as the next Query's, every answer after one behind, and the
    next SELECT's rows sent without their RowDescription: unmasked."""
    rc = _login(masked)
    try:
        rc.send(b"H\x00\x00\x00\x08\x00\x00\x00\x00" + m.Query("select ssn from r7_people").encode()
                + m.Sync().encode() + m.Query("select ssn from r7_people").encode())
        answer = _rest(rc)
        assert SSN not in _rows(answer) and "timeout" not in answer, answer
        assert any("Flush message with a body" in f for f in _fatal(answer)), answer
    finally:
        rc.close()


@pytest.mark.parametrize("how", ["skipped after an error", "malformed"])
def test_a_statement_whose_describe_went_unanswered_is_still_masked(masked, how):
    """A Describe the server skipped (after an error before its Sync) or refused had marked its
    statement described: a later Execute of it went without pgwarden's own Describe, its rows shapeless."""
    rc = _login(masked)
    try:
        rc.send(m.Parse("s", "select ssn from r7_people").encode() + m.Sync().encode())
        assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)
        if how == "malformed":
            body = b"Ss\x00junk"
            rc.send(b"D" + (len(body) + 4).to_bytes(4, "big") + body + m.Sync().encode())
        else:
            rc.send(m.Parse("", "select 1/0").encode() + m.Bind("", "").encode() + m.Execute("").encode()
                    + m.Describe("S", "s").encode() + m.Sync().encode())
        assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)
        rc.send(m.Bind("", "s").encode() + m.Execute("").encode() + m.Sync().encode())
        assert _rows(rc.until_ready()) == [b"***"]
    finally:
        rc.close()


def test_a_portal_a_function_replaced_is_described_again(masked):
    """PL/pgSQL closed the protocol portal and opened a cursor over the masked column under its name
    (no command tag says so): the portal was read with its old, harmless shape."""
    rc = _login(masked)
    try:
        rc.send(m.Query("begin").encode())
        rc.until_ready()
        rc.send(m.Parse("", "select 'harmless'::text as v").encode() + m.Bind("p", "").encode()
                + m.Describe("P", "p").encode() + m.Sync().encode())
        rc.until_ready()
        rc.send(m.Query("select r7_swap('p')").encode())
        rc.until_ready()
        rc.send(m.Execute("p", 0).encode() + m.Sync().encode())
        assert _rows(rc.until_ready()) == [b"***"]
        # a portal fetched in parts with nothing run between is not described again
        rc.send(m.Parse("", "select ssn from r7_people").encode() + m.Bind("q", "").encode()
                + m.Describe("P", "q").encode() + m.Execute("q", 1).encode() + m.Execute("q", 1).encode()
                + m.Sync().encode())
        answer = rc.until_ready()
        assert _rows(answer) == [b"***"] and sum(isinstance(x, m.RowDescription) for x in answer) == 1, answer
    finally:
        rc.close()


def _approve_when_pending(running) -> threading.Thread:
    client = ApiClient(f"http://127.0.0.1:{running.admin}/approvals/api", running.token("ann", ["dba"]))

    def work():
        pending = wait_until(10, client.pending, "a pending request", until=lambda rs: len(rs) == 1)
        client.approve(pending[0]["id"], "ok")

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("protocol", ["simple", "extended", "libpq"])
def test_an_approved_copy_from_stdin_leaves_the_answers_in_step(make_pgwarden, pg_server, protocol):
    """A COPY FROM STDIN approved by a human: the relay did not know it read copy data, took a Sync
    during the copy to owe a ReadyForQuery, and read the next SELECT one behind (unmasked)."""
    pg_server.psql(SETUP, database="appdb")
    running = make_pgwarden(
        policies=[{"name": "agents", "default": "allow", "rules": [
            {"name": "writes", "approve": {"statements": ["insert"]}, "reason": "writes need a human"}, MASKED]}],
        approvals={"approver_groups": ["dba"], "timeout_s": 30})
    running.admin = running.call(running.app.listen_admin).getHost().port
    rc = _login(running, 15)
    try:
        t = _approve_when_pending(running)
        if protocol == "simple":
            rc.send(m.Query("copy r7_ap from stdin").encode())
        else:  # libpq's extended COPY: Execute and Sync at once
            rc.send(m.Parse("", "copy r7_ap from stdin").encode() + m.Bind("", "").encode()
                    + m.Execute("").encode() + m.Sync().encode())
        got = _until(rc, m.CopyInResponse)
        t.join(10)
        tail = m.Sync().encode() if protocol != "simple" else b""
        extra = b"" if protocol == "libpq" else m.Sync().encode()
        rc.send(m.CopyData(b"1\n").encode() + extra + m.CopyDone().encode() + tail)
        got += rc.until_ready()
        assert not any(isinstance(x, m.ErrorResponse) for x in got), got
        _select_is_masked(rc)
    finally:
        rc.close()


def test_a_copy_that_fails_with_a_sync_in_flight_ends_the_session(masked):
    """The server answers the Syncs it reads after the failure and ignored those before: pgwarden
    cannot tell which, so the session ends with that said (it had kept a stale skip after the
    ReadyForQuery: the next Query went unanswered, and an Execute of an SQL cursor, not refused
    while pgwarden took the server to skip, sent its rows unmasked)."""
    rc = _login(masked)
    try:
        rc.send(m.Query("create temp table ints(n int)").encode())
        rc.until_ready()
        rc.send(m.Parse("", "copy ints from stdin").encode() + m.Bind("", "").encode()
                + m.Execute("").encode() + m.Sync().encode())
        _until(rc, m.CopyInResponse)
        rc.send(m.CopyData(b"not a number\n").encode() + m.Sync().encode())
        answer = _rest(rc)
        assert SSN not in _rows(answer) and "timeout" not in answer, answer
        assert any("Sync messages sent during the copy" in f for f in _fatal(answer)), answer
    finally:
        rc.close()


def test_a_copy_that_fails_without_a_sync_in_flight_goes_on(masked):
    rc = _login(masked)
    try:
        rc.send(m.Query("create temp table ints(n int)").encode())
        rc.until_ready()
        rc.send(m.Parse("", "copy ints from stdin").encode() + m.Bind("", "").encode() + m.Execute("").encode()
                + m.Flush().encode())
        _until(rc, m.CopyInResponse)
        rc.send(m.CopyData(b"not a number\n").encode() + m.CopyDone().encode() + m.Sync().encode())
        got = rc.until_ready()
        assert any(isinstance(x, m.ErrorResponse) and x.sqlstate == "22P02" for x in got), got
        _select_is_masked(rc)
    finally:
        rc.close()


CHUNK = 1024 * 1024


def _flood(rc: RawClient, window_s: float) -> int:
    """Copy data sent for ``window_s`` seconds without reading: how many bytes pgwarden took."""
    body = b"x" * (CHUNK - 1) + b"\n"
    view = memoryview(b"d" + struct.pack("!i", len(body) + 4) + body)
    rc.sock.setblocking(False)
    sent = pos = 0
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        try:
            k = rc.sock.send(view[pos:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += k
        pos = (pos + k) % len(view)
    rc.sock.setblocking(True)
    rc.sock.settimeout(20)
    return sent


@pytest.mark.parametrize("held_by", ["copy", "count"])
def test_bytes_queued_behind_a_copy_or_a_counted_write_are_bounded(make_pgwarden, pg_server, held_by):
    """What follows a COPY FROM STDIN waits for the server's answer to it, and what follows a counted
    write for its count: the client's reads were paused only while a verdict was awaited (512 MiB
    taken in 10 s, pgwarden's memory with it)."""
    pg_server.psql(SETUP, database="appdb")
    rules = [{"name": "small-writes", "limit": {"rows_written": 5}}] if held_by == "count" else []
    running = make_pgwarden(policies=[{"name": "agents", "default": "allow", "rules": rules}])
    rc = _login(running, 20)
    try:
        first = "select pg_sleep(4); copy r7_sink from stdin" if held_by == "copy" else "select pg_sleep(4)"
        rc.send(m.Query(first).encode()
                + (m.Query("insert into r7_sink values ('a')").encode() if held_by == "count" else b""))
        sent = _flood(rc, 2.5)
        assert sent < 64 * CHUNK, f"pgwarden took {sent / CHUNK:.0f} MiB the server was not reading"
    finally:
        rc.close()
