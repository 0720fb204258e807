"""psycopg 3 through pgwarden: parameters, prepared statements, binary, pipelines, COPY, NOTIFY, cancel."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import pq


@pytest.fixture
def conn(pgwarden):
    with psycopg.connect(pgwarden.dsn(), autocommit=True) as c:
        yield c


def test_parameters_and_types(conn):
    row = conn.execute(
        "select %s::int + 1, %s::text || '!', %s::numeric * 2, %s::bool, %s::bytea",
        (41, "hi", 1.25, True, b"\x00\xff"),
    ).fetchone()
    assert row == (42, "hi!", 2.5, True, b"\x00\xff")


def test_null_and_empty(conn):
    assert conn.execute("select null::text, ''::text").fetchone() == (None, "")
    cur = conn.execute("")
    assert cur.pgresult.status == pq.ExecStatus.EMPTY_QUERY


def test_prepared_statements_reused(conn):
    for i in range(8):
        assert conn.execute("select %s::int * 2", (i,), prepare=True).fetchone() == (i * 2,)
    names = conn.execute("select count(*) from pg_prepared_statements").fetchone()[0]
    assert names >= 1


def test_binary_results(conn):
    cur = conn.cursor(binary=True)
    row = cur.execute("select 1::int4, 2::int8, 'x'::text, '2024-01-02'::date, array[1,2]").fetchone()
    assert row[:3] == (1, 2, "x")
    assert str(row[3]) == "2024-01-02"
    assert row[4] == [1, 2]


def test_pipeline_mode(conn):
    with conn.pipeline():
        c1 = conn.execute("select 1")
        c2 = conn.execute("select %s::int", (2,))
        c3 = conn.execute("select generate_series(1, 3)")
    assert c1.fetchone() == (1,)
    assert c2.fetchone() == (2,)
    assert c3.fetchall() == [(1,), (2,), (3,)]


def test_pipeline_error_rolls_back_the_implicit_transaction(conn):
    conn.execute("create temp table pipe_t (x int)")
    with pytest.raises(psycopg.errors.DivisionByZero):
        with conn.pipeline():
            conn.execute("insert into pipe_t values (1)")
            conn.execute("select 1/0")
            conn.execute("insert into pipe_t values (2)")
    assert conn.execute("select count(*) from pipe_t").fetchone() == (0,)


def test_transaction_status_follows_the_server(pgwarden):
    with psycopg.connect(pgwarden.dsn()) as c:
        assert c.info.transaction_status == pq.TransactionStatus.IDLE
        c.execute("select 1")
        assert c.info.transaction_status == pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("select * from no_such_table")
        assert c.info.transaction_status == pq.TransactionStatus.INERROR
        c.rollback()
        assert c.info.transaction_status == pq.TransactionStatus.IDLE


def test_copy_both_ways(conn):
    conn.execute("create temp table copy_t (id int, name text)")
    with conn.cursor().copy("copy copy_t from stdin") as copy:
        for i in range(1000):
            copy.write_row((i, f"name {i}"))
    assert conn.execute("select count(*), sum(id) from copy_t").fetchone() == (1000, 499500)
    rows = []
    with conn.cursor().copy("copy (select * from copy_t order by id) to stdout") as copy:
        for row in copy.rows():
            rows.append(row)
    assert len(rows) == 1000 and rows[0] == ("0", "name 0")


def test_copy_binary(conn):
    conn.execute("create temp table copy_b (id int, v bytea)")
    with conn.cursor().copy("copy copy_b from stdin (format binary)") as copy:
        copy.set_types(["int4", "bytea"])
        copy.write_row((1, b"\x00\x01"))
    assert conn.execute("select v from copy_b").fetchone() == (b"\x00\x01",)


def test_listen_notify_relays_the_real_backend_pid(pgwarden):
    with psycopg.connect(pgwarden.dsn(), autocommit=True) as listener, \
            psycopg.connect(pgwarden.dsn(), autocommit=True) as sender:
        listener.execute("listen pgw_channel")
        sender.execute("notify pgw_channel, 'hello'")
        sender_pid = sender.execute("select pg_backend_pid()").fetchone()[0]
        assert sender.info.backend_pid == sender_pid
        gen = listener.notifies(timeout=10, stop_after=1)
        notes = list(gen)
        assert [(n.channel, n.payload, n.pid) for n in notes] == [("pgw_channel", "hello", sender_pid)]


def test_cancel_a_running_statement(pgwarden):
    with psycopg.connect(pgwarden.dsn(), autocommit=True) as c:
        started = threading.Event()

        def cancel_soon():
            started.wait(10)
            # Wait until the server runs the sleep, seen from another session.
            with psycopg.connect(pgwarden.dsn(), autocommit=True) as watcher:
                for _ in range(200):
                    n = watcher.execute(
                        "select count(*) from pg_stat_activity where query like 'select pg_sleep(30)%%'"
                        " and state = 'active'"
                    ).fetchone()[0]
                    if n:
                        break
                    watcher.execute("select pg_sleep(0.05)")
            # cancel_safe: the blocking PQcancel would hold the GIL that the in-process proxy needs.
            c.cancel_safe()

        t = threading.Thread(target=cancel_soon)
        t.start()
        started.set()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select pg_sleep(30)")
        t.join()
        assert c.execute("select 1").fetchone() == (1,)


def test_parameter_status_and_client_encoding(pgwarden):
    with psycopg.connect(pgwarden.dsn(client_encoding="LATIN1"), autocommit=True) as c:
        assert c.info.encoding == "iso8859-1"
        assert c.execute("show client_encoding").fetchone() == ("LATIN1",)
        c.execute("set timezone to 'Asia/Tokyo'")
        assert c.info.parameter_status("TimeZone") == "Asia/Tokyo"


def test_application_name_names_the_identity(pgwarden):
    with psycopg.connect(pgwarden.dsn(pgwarden.token("agent-7"), application_name="cli"), autocommit=True) as c:
        name = c.execute("select application_name from pg_stat_activity where pid = pg_backend_pid()").fetchone()
        assert name == ("pgwarden:agent-7 (cli)",)


def test_server_side_cursor_in_transaction(pgwarden):
    with psycopg.connect(pgwarden.dsn()) as c:
        with c.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("select g from generate_series(1, 1000) g")
            assert sum(r[0] for r in cur) == 500500
