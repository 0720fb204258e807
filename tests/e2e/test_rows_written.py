"""`limit: {rows_written: N}`: the server counts what a statement wrote; more than N is rolled back.

Every test checks the table on a direct connection afterwards: a refused write must
leave nothing behind, and its RETURNING rows must never reach the client.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import pq
from rawclient import RawClient

from pgwarden.wire import messages as m

CAP = 5
POLICY = [{"name": "agents", "rules": [{"name": "small-writes", "limit": {"rows_written": CAP}}]}]


@pytest.fixture
def capped(make_pgwarden, pg_server):
    pg_server.psql(
        "drop table if exists rw_t, rw_log cascade;"
        "create table rw_t (id int primary key, v int);"
        "insert into rw_t select g, 0 from generate_series(1, 20) g;"
        "create table rw_log (id int);"
        "create or replace function rw_fill(n int) returns int language plpgsql as "
        "$$ begin insert into rw_log select generate_series(1, n); return n; end $$;"
        "create or replace function rw_trigger() returns trigger language plpgsql as "
        "$$ begin insert into rw_log select generate_series(1, 10); return new; end $$;"
        "create or replace function rw_uncounted() returns int language plpgsql as "
        "$$ begin perform set_config('track_counts', 'off', true); "
        "insert into rw_log select generate_series(1, 20); return 20; end $$;",
        "appdb",
    )
    return make_pgwarden(policies=POLICY)


def rows(pg_server, table: str = "rw_t", where: str = "true") -> int:
    return int(pg_server.psql(f"select count(*) from {table} where {where}", "appdb"))


def assert_refused_for_rows(excinfo) -> None:
    diag = excinfo.value.diag
    assert excinfo.value.sqlstate == "42501"
    assert diag.message_primary.startswith("pgwarden: blocked: the statement wrote ")
    assert f"more than the {CAP} allowed" in diag.message_primary
    assert f"at most {CAP} rows" in diag.message_hint
    assert "policy 'agents', rule 'small-writes'" in diag.message_detail
    assert diag.context is None  # pgwarden's DO block stays invisible


@pytest.mark.parametrize("prepare", [False, True])
def test_a_small_write_passes_in_both_protocols(capped, pg_server, prepare):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        if prepare:
            cur = c.execute("update rw_t set v = %s where id <= %s returning id", (1, 3))
        else:
            cur = c.execute("update rw_t set v = 1 where id <= 3 returning id")
        assert sorted(r[0] for r in cur.fetchall()) == [1, 2, 3]
        assert cur.statusmessage == "UPDATE 3"
        assert c.execute("select 1").fetchone() == (1,)
    assert rows(pg_server, where="v = 1") == 3


@pytest.mark.parametrize("prepare", [False, True])
def test_a_large_write_is_rolled_back_outside_a_transaction(capped, pg_server, prepare):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            if prepare:
                c.execute("update rw_t set v = %s where id = id returning id", (2,))
            else:
                c.execute("update rw_t set v = 2 where id = id returning id")
        assert_refused_for_rows(excinfo)
        assert "wrote 20 rows" in excinfo.value.diag.message_primary
        assert c.execute("select count(*) from rw_t where v = 2").fetchone() == (0,)
    assert rows(pg_server, where="v = 2") == 0


@pytest.mark.parametrize("prepare", [False, True])
def test_inside_a_transaction_the_refusal_aborts_it(capped, pg_server, prepare):
    with psycopg.connect(capped.dsn()) as c:
        c.execute("insert into rw_log values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            if prepare:
                c.execute("delete from rw_t where id > %s", (0,))
            else:
                c.execute("delete from rw_t where id > 0")
        assert_refused_for_rows(excinfo)
        assert c.info.transaction_status == pq.TransactionStatus.INERROR
        c.rollback()
        # Writes that fit pass, and count per statement (not per transaction).
        c.execute("delete from rw_t where id <= 4")
        c.execute("delete from rw_t where id >= 5 and id <= 8")
        c.commit()
    assert rows(pg_server) == 12 and rows(pg_server, "rw_log") == 0


def test_pipeline_refusal_rolls_back_the_implicit_transaction(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            with c.pipeline():
                c.execute("insert into rw_log values (%s)", (1,))
                c.execute("update rw_t set v = %s", (3,))
                c.execute("insert into rw_log values (%s)", (2,))
        assert_refused_for_rows(excinfo)
        with c.pipeline():
            a = c.execute("update rw_t set v = %s where id = %s returning id", (4, 1))
            b = c.execute("update rw_t set v = %s where id = %s returning id", (4, 2))
        assert a.fetchall() == [(1,)] and b.fetchall() == [(2,)]
    assert rows(pg_server, "rw_log") == 0
    assert rows(pg_server, where="v = 3") == 0 and rows(pg_server, where="v = 4") == 2


@pytest.mark.parametrize("sql", [
    "with d as (delete from rw_t returning id) select count(*) from d",
    "explain analyze update rw_t set v = 5",
    "select rw_fill(6)",
    "insert into rw_log select generate_series(1, 6)",
    "merge into rw_t using (select g from generate_series(1, 6) g) s on rw_t.id = s.g "
    "when matched then update set v = 5",
    "do $$ begin update rw_t set v = 5; end $$",
])
def test_writes_at_any_depth_are_counted(capped, pg_server, sql):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute(sql)
        assert_refused_for_rows(excinfo)
    assert rows(pg_server) == 20 and rows(pg_server, where="v = 5") == 0
    assert rows(pg_server, "rw_log") == 0


def test_rows_a_trigger_writes_are_counted(capped, pg_server):
    pg_server.psql("create trigger rw_t_trigger before update on rw_t for each row execute function rw_trigger()",
                   "appdb")
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("update rw_t set v = 6 where id = 1")  # 1 row, and 10 by its trigger
        assert "wrote 11 rows" in excinfo.value.diag.message_primary
    assert rows(pg_server, where="v = 6") == 0 and rows(pg_server, "rw_log") == 0


def test_a_multi_statement_query_with_a_write_is_refused(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select 1; delete from rw_t where id = 1")
        assert "must be sent on its own" in excinfo.value.diag.message_primary
        assert excinfo.value.diag.message_primary.startswith("pgwarden: blocked:")
        # Reads may still come several to a string.
        c.execute("select 1; select 2")
    assert rows(pg_server) == 20


def test_copy_from_is_refused_under_the_limit(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            with c.cursor().copy("copy rw_log from stdin") as copy:
                copy.write_row((1,))
        assert "COPY FROM" in excinfo.value.diag.message_primary
    assert rows(pg_server, "rw_log") == 0


def test_the_statements_own_error_reaches_the_client(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("insert into rw_t values (1, 0)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("insert into rw_t values (%s, 0)", (1,))
        with c.transaction():
            with pytest.raises(psycopg.errors.UndefinedTable):
                with c.transaction():  # a savepoint: the transaction goes on
                    c.execute("insert into rw_missing values (1)")
            c.execute("insert into rw_log values (7)")
        # An aborted transaction block: the server's own 25P02, as without pgwarden.
        c.autocommit = False
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("select 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("insert into rw_log values (8)")
        c.rollback()
    assert rows(pg_server, "rw_log") == 1


def test_returning_rows_are_held_until_the_count_is_known(capped, pg_server):
    rc = RawClient(capped.host, capped.port)
    rc.login(capped.token())
    rc.send(m.Query("update rw_t set v = 9 returning id").encode())
    answer = rc.until_ready()
    # Nothing of the refused write: no RowDescription, no rows, no tag; only the error.
    assert [type(x) for x in answer] == [m.ErrorResponse, m.ReadyForQuery]
    assert answer[0].sqlstate == "42501" and answer[1].status == "I"
    # A write within the cap: the simple protocol's answer, exactly.
    rc.send(m.Query("update rw_t set v = 9 where id in (1, 2) returning id").encode())
    answer = rc.until_ready()
    assert [type(x) for x in answer] == [m.RowDescription, m.DataRow, m.DataRow, m.CommandComplete,
                                         m.ReadyForQuery]
    assert answer[3].tag == "UPDATE 2"
    rc.close()
    assert rows(pg_server, where="v = 9") == 2


def test_a_portal_fetched_in_parts_is_counted_as_one_statement(capped, pg_server):
    rc = RawClient(capped.host, capped.port)
    rc.login(capped.token())
    rc.send(m.Query("begin").encode())
    rc.until_ready()
    # Each Execute fetches 3 rows, and writes 3: together 9, more than the cap.
    rc.send(m.Parse("", "select rw_fill(1) from generate_series(1, 9)").encode() + m.Bind("p", "").encode()
            + m.Execute("p", 3).encode() + m.Execute("p", 3).encode() + m.Execute("p", 3).encode()
            + m.Sync().encode())
    answer = rc.until_ready()
    kinds = [type(x) for x in answer]
    assert kinds[-2:] == [m.ErrorResponse, m.ReadyForQuery] and answer[-1].status == "E"
    assert kinds.count(m.PortalSuspended) == 1  # the first part (3 rows) was within the cap
    assert "wrote 6 rows" in answer[-2].message
    rc.send(m.Query("rollback").encode())
    rc.until_ready()
    rc.close()
    assert rows(pg_server, "rw_log") == 0


def test_sql_level_prepare_then_execute_is_counted(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        c.execute("prepare wipe as delete from rw_t")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("execute wipe")
    assert rows(pg_server) == 20


def test_records_show_what_ran_and_what_the_count_refused(capped, pg_server, tmp_path):
    from pgwarden.testing.pytest_plugin import check_records

    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        c.execute("update rw_t set v = 1 where id = 1")
        c.execute("update rw_t set v = %s where id = %s", (1, 2))
        for sql, params in (("update rw_t set v = 2", None), ("update rw_t set v = %s", (2,))):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql, params)
    capped.call(capped.app.stop)  # every record written
    records = check_records([tmp_path / "records.jsonl"])
    statements = {r["statement"]: r for r in records if r["type"] == "statement"}
    results = [r for r in records if r["type"] == "result"]
    assert [(statements[r["statement"]]["protocol"], r["rows"], r["sqlstate"]) for r in results] == [
        ("simple", 1, None), ("extended", 1, None), ("simple", 0, "42501"), ("extended", 0, "42501")]
    assert all("wrote 20 rows" in r["error"] for r in results[2:])
    assert not any("pgwarden_" in r.get("sql", "") for r in records)  # pgwarden's own are not the agent's


def test_switching_the_count_off_is_refused(capped, pg_server):
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("set track_counts = off")
        assert "track_counts" in excinfo.value.diag.message_primary
        # Switched off by a function the statement runs: seen in its body (round eight).
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select rw_uncounted()")
        assert excinfo.value.diag.message_primary == "pgwarden: blocked: changing track_counts is not allowed"
    assert rows(pg_server, "rw_log") == 0
    # Off where pgwarden does not look (the database's default, an operator's): the check will not guess.
    pg_server.psql("alter database appdb set track_counts = off")
    try:
        with psycopg.connect(capped.dsn(), autocommit=True) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                c.execute("insert into rw_log values (1)")
            assert excinfo.value.diag.message_primary == (
                "pgwarden: blocked: the rows this statement writes cannot be counted")
    finally:
        pg_server.psql("alter database appdb reset track_counts")
    assert rows(pg_server, "rw_log") == 0


def test_operators_on_the_agents_search_path_do_not_change_the_count(capped, pg_server):
    """pgwarden's statements run under the agent's search_path: they name pg_catalog's operators."""
    pg_server.psql(
        "drop schema if exists rw_evil cascade; create schema rw_evil;"
        "create function rw_evil.zero(bigint, bigint) returns bigint language sql as 'select 0::bigint';"
        "create function rw_evil.none(bigint, integer) returns bigint language sql as 'select 0::bigint';"
        "create function rw_evil.never(bigint, integer) returns boolean language sql as 'select false';"
        "create operator rw_evil.+ (leftarg = bigint, rightarg = bigint, function = rw_evil.zero);"
        "create operator rw_evil.- (leftarg = bigint, rightarg = integer, function = rw_evil.none);"
        "create operator rw_evil.> (leftarg = bigint, rightarg = integer, function = rw_evil.never);"
        "create table rw_evil.rw_t (id int, v int); insert into rw_evil.rw_t select g, 0 from generate_series(1, 20) g",
        "appdb",
    )
    with psycopg.connect(capped.dsn(), autocommit=True) as c:
        c.execute("set search_path = rw_evil, pg_catalog")
        assert c.execute("select 7::bigint > 1").fetchone() == (False,)  # the agent's operator wins here
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("update rw_t set v = 1")
        assert "wrote 20 rows" in excinfo.value.diag.message_primary
    assert rows(pg_server, "rw_evil.rw_t", "v = 1") == 0


def test_asyncpg_statements_executemany_and_a_cursor(capped, pg_server):
    import asyncio

    import asyncpg

    async def main():
        conn = await asyncpg.connect(capped.url(), ssl=False)
        try:
            rows_back = await conn.fetch("update rw_t set v = $1 where id <= $2 returning id", 11, 2)
            assert sorted(r["id"] for r in rows_back) == [1, 2]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("update rw_t set v = $1 returning id", 12)
            # One statement per row, each counted on its own, in one implicit transaction.
            await conn.executemany("insert into rw_log values ($1)", [(i,) for i in range(8)])
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.executemany("insert into rw_log select generate_series(1, $1)", [(1,), (6,)])
            async with conn.transaction():  # a cursor fetched in parts: one statement
                cursor = await conn.cursor("select rw_fill(1) from generate_series(1, 9)")
                assert len(await cursor.fetch(4)) == 4
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await cursor.fetch(4)
        finally:
            await conn.close()

    asyncio.run(main())
    assert rows(pg_server, where="v = 11") == 2 and rows(pg_server, where="v = 12") == 0
    assert rows(pg_server, "rw_log") == 8
