"""asyncpg through pgwarden: prepared statements, binary codecs, executemany, COPY, cursors."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid

import asyncpg
import pytest


def run(coro):
    return asyncio.run(coro)


async def _connect(pgwarden):
    return await asyncpg.connect(pgwarden.url(), ssl=False)


def test_prepared_and_binary_codecs(pgwarden):
    async def main():
        conn = await _connect(pgwarden)
        try:
            stmt = await conn.prepare(
                "select $1::int8 * 2, $2::numeric, $3::uuid, $4::timestamptz, $5::jsonb, $6::int[]"
            )
            u = uuid.uuid4()
            ts = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
            row = await stmt.fetchrow(21, decimal.Decimal("1.5"), u, ts, '{"a": 1}', [1, 2])
            assert tuple(row) == (42, decimal.Decimal("1.5"), u, ts, '{"a": 1}', [1, 2])
            # The same prepared statement, executed again, without a new Parse.
            assert await stmt.fetchval(5, 0, u, ts, "{}", []) == 10
        finally:
            await conn.close()

    run(main())


def test_executemany_and_copy_records(pgwarden):
    async def main():
        conn = await _connect(pgwarden)
        try:
            await conn.execute("create temp table am (id int, name text)")
            await conn.executemany("insert into am values ($1, $2)", [(i, f"n{i}") for i in range(200)])
            assert await conn.fetchval("select count(*) from am") == 200
            await conn.copy_records_to_table("am", records=[(1000 + i, "c") for i in range(500)])
            assert await conn.fetchval("select count(*) from am") == 700
            out = []

            async def sink(chunk):
                out.append(bytes(chunk))

            await conn.copy_from_query("select id from am where id < 3 order by id", output=sink)
            assert b"".join(out) == b"0\n1\n2\n"
        finally:
            await conn.close()

    run(main())


def test_cursor_in_transaction(pgwarden):
    async def main():
        conn = await _connect(pgwarden)
        try:
            async with conn.transaction():
                total = 0
                async for r in conn.cursor("select g from generate_series(1, 2500) g", prefetch=100):
                    total += r[0]
                assert total == 2500 * 2501 // 2
                cur = await conn.cursor("select g from generate_series(1, 10) g")
                assert [r[0] for r in await cur.fetch(3)] == [1, 2, 3]
                assert [r[0] for r in await cur.fetch(2)] == [4, 5]
        finally:
            await conn.close()

    run(main())


def test_errors_keep_the_connection_usable(pgwarden):
    async def main():
        conn = await _connect(pgwarden)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("select * from missing_table")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await conn.fetchval("select 1 / $1::int", 0)
            assert await conn.fetchval("select 7") == 7
        finally:
            await conn.close()

    run(main())


def test_pool_of_connections(pgwarden):
    async def main():
        pool = await asyncpg.create_pool(pgwarden.url(), ssl=False, min_size=4, max_size=4)
        try:
            results = await asyncio.gather(*(pool.fetchval("select $1::int + 1", i) for i in range(40)))
            assert results == [i + 1 for i in range(40)]
        finally:
            await pool.close()

    run(main())
