"""Refusals behave exactly like server errors: transactions, pipelines, skip-until-Sync.

The decider here is a test stub that refuses any statement mentioning
``forbidden``; the policy layer that really decides comes later and plugs into
the same place.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import pq
from rawclient import RawClient
from twisted.internet import defer

from pgwarden.relay.engine import ALLOW
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m

REFUSAL = Refusal("42501", "pgwarden: blocked: test rule", "Refused by policy 'p', rule 'r'.", "Try reads.")


def refuse_forbidden(_conn, request):
    return REFUSAL if "forbidden" in request.sql else ALLOW


@pytest.fixture
def guarded(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists guarded_t; create table guarded_t (x int)", "appdb")
    return make_pgwarden(decide=refuse_forbidden)


def count(pg_server) -> int:
    return int(pg_server.psql("select count(*) from guarded_t", "appdb"))


def assert_refused(excinfo):
    diag = excinfo.value.diag
    assert excinfo.value.sqlstate == "42501"
    assert diag.message_primary == "pgwarden: blocked: test rule"
    assert diag.message_detail == "Refused by policy 'p', rule 'r'."
    assert diag.message_hint == "Try reads."
    # The DO block that raised it stays invisible.
    assert diag.context is None
    assert diag.source_function is None


def test_simple_query_refused_session_continues(guarded):
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select 'forbidden'")
        assert_refused(excinfo)
        assert c.execute("select 2").fetchone() == (2,)


def test_refusal_aborts_the_transaction_and_commit_rolls_back(guarded, pg_server):
    with psycopg.connect(guarded.dsn()) as c:
        c.execute("insert into guarded_t values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("insert into guarded_t select 2 where 'forbidden' <> ''")
        assert c.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("select 1")
        c.commit()  # the server turns COMMIT of a failed transaction into ROLLBACK
    assert count(pg_server) == 0


def test_extended_refusal_in_pipeline_rolls_back_the_implicit_transaction(guarded, pg_server):
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            with c.pipeline():
                c.execute("insert into guarded_t values (%s)", (1,))
                c.execute("insert into guarded_t select %s where 'forbidden' <> ''", (2,))
                c.execute("insert into guarded_t values (%s)", (3,))
        assert_refused(excinfo)
        assert c.execute("select 1").fetchone() == (1,)
    assert count(pg_server) == 0


def test_named_statement_refused_is_not_created(guarded):
    with _Raw(guarded) as rc:
        rc.send(
            m.Parse("s1", "select 'forbidden'").encode()
            + m.Describe("S", "s1").encode()
            + m.Bind("", "s1").encode()
            + m.Execute("").encode()
            + m.Sync().encode()
        )
        answer = rc.until_ready()
        assert [type(x) for x in answer] == [m.ErrorResponse, m.ReadyForQuery]
        assert answer[0].sqlstate == "42501" and answer[1].status == "I"
        rc.send(m.Bind("", "s1").encode() + m.Execute("").encode() + m.Sync().encode())
        answer = rc.until_ready()
        assert answer[0].sqlstate == "26000"  # prepared statement "s1" does not exist


def test_function_call_message_is_refused(guarded):
    with _Raw(guarded) as rc:
        # int4pl(1, 2) by OID 177: a call that no statement rule would ever see.
        rc.send(m.FunctionCall(177, (1,), (b"\0\0\0\1", b"\0\0\0\2"), 1).encode())
        answer = rc.until_ready()
        assert [type(x) for x in answer] == [m.ErrorResponse, m.ReadyForQuery]
        assert answer[0].sqlstate == "42501"
        assert "FunctionCall" in answer[0].message
        rc.send(m.Query("select 1").encode())
        assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)


class _Raw:
    """A logged-in RawClient as a context manager."""

    def __init__(self, running) -> None:
        self.rc = RawClient(running.host, running.port)
        ready = self.rc.login(running.token())
        assert isinstance(ready[-1], m.ReadyForQuery)

    def __enter__(self) -> RawClient:
        return self.rc

    def __exit__(self, *exc) -> None:
        self.rc.close()


def test_late_verdicts_keep_pipeline_order(make_pgwarden, pg_server, reactor_thread):
    """Verdicts that arrive later (Deferreds) hold later messages back, in order."""
    pg_server.psql("drop table if exists guarded_t; create table guarded_t (x int)", "appdb")

    def slow(_conn, request):
        d = defer.Deferred()
        verdict = REFUSAL if "forbidden" in request.sql else ALLOW
        reactor_thread.callLater(0.01, d.callback, verdict)
        return d

    running = make_pgwarden(decide=slow)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with c.pipeline():
            cursors = [c.execute("select %s::int", (i,)) for i in range(5)]
        assert [cur.fetchone()[0] for cur in cursors] == list(range(5))
        c.execute("insert into guarded_t values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select 'forbidden'")
        assert c.execute("select count(*) from guarded_t").fetchone() == (1,)


def test_a_failing_decider_blocks(make_pgwarden):
    def broken(_conn, request):
        if "boom" in request.sql:
            return defer.fail(RuntimeError("plugin exploded"))
        return ALLOW

    running = make_pgwarden(decide=broken)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select 'boom'")
        assert "policy check failed" in excinfo.value.diag.message_primary
        assert c.execute("select 1").fetchone() == (1,)


def test_cancel_while_waiting_for_a_verdict(make_pgwarden):
    never = defer.Deferred()

    def hold(_conn, request):
        return never if "hold" in request.sql else ALLOW

    running = make_pgwarden(decide=hold)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        import threading

        def cancel_when_waiting():
            # The proxy has the statement once its relay says so; then cancel.
            for _ in range(1000):
                waiting = running.call(
                    lambda: any(conn.relay is not None and conn.relay.waiting is not None
                                for conn in running.app.connections)
                )
                if waiting:
                    break
                threading.Event().wait(0.01)
            c.cancel_safe()

        t = threading.Thread(target=cancel_when_waiting)
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select 'hold'")
        t.join()
        assert c.execute("select 1").fetchone() == (1,)
