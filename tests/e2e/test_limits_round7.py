# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Round seven: what a red team made `limit: {rows_written: N}` and read-only sessions let through.

Each test checks the server's state over a direct connection afterwards (policies of
test_hostile: `capped` has rows_written 2, `read-only` allows only reads).
"""

from __future__ import annotations

import psycopg
import pytest
from test_hostile import DB, GROUPS, Agent, errors, hostile, hostile_db, server  # noqa: F401

from pgwarden.testing.matrix import thin
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER
from pgwarden.wire import messages as m

PROTOCOLS = ["simple"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)


def _one(server, sql):
    return server.conn.execute(sql).fetchone()[0]


def _steps(hostile, group, protocol, steps):
    agent = Agent(hostile, GROUPS[group], protocol)
    answers = []
    try:
        for step in steps:
            answers.append(agent.run(step))
    finally:
        agent.close()
    return answers


def _refused_by_pgwarden(answer) -> bool:
    errs = errors(answer)
    return bool(errs) and errs[0].sqlstate == "42501" and errs[0].message.startswith("pgwarden: blocked: ")


# ----------------------------------------------------------------- A: transaction control inside DO / CALL


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("body", [
    "UPDATE things SET n = n + 100 WHERE id = abs(id); COMMIT;",
    "UPDATE things SET n = n + 100 WHERE id = abs(id); ROLLBACK AND CHAIN; "
    "UPDATE things SET n = n + 100 WHERE id = abs(id); COMMIT;",
    "UPDATE things SET n = n + 100 WHERE id = abs(id); CALL public.r7_commit();",
])
def test_a_do_block_that_may_commit_is_refused_under_a_cap(hostile, server, protocol, body):
    server.reset()
    server.conn.execute("CREATE OR REPLACE PROCEDURE public.r7_commit() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$")
    hostile.call(hostile.app.catalog.invalidate, "test setup")
    hostile.call(hostile.app.catalog.fresh)
    try:
        (answer,) = _steps(hostile, "capped", protocol, [f"DO $$ BEGIN {body} END $$"])
    finally:
        server.conn.execute("DROP PROCEDURE IF EXISTS public.r7_commit()")
    assert _refused_by_pgwarden(answer), answer
    assert _one(server, "SELECT sum(n) FROM public.things") == 15


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_call_is_refused_under_a_cap(hostile, server, protocol):
    server.reset()
    server.conn.execute("CREATE OR REPLACE PROCEDURE public.r7_delete() LANGUAGE plpgsql AS "
                        "$$ BEGIN DELETE FROM public.things WHERE id = abs(id); COMMIT; END $$")
    hostile.call(hostile.app.catalog.invalidate, "test setup")
    hostile.call(hostile.app.catalog.fresh)
    try:
        (answer,) = _steps(hostile, "capped", protocol, ["CALL public.r7_delete()"])
    finally:
        server.conn.execute("DROP PROCEDURE IF EXISTS public.r7_delete()")
    assert _refused_by_pgwarden(answer), answer
    assert _one(server, "SELECT count(*) FROM public.things") == 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_do_block_without_transaction_control_is_still_counted(hostile, server, protocol):
    server.reset()
    small, large = _steps(hostile, "capped", protocol, [
        "DO $$ BEGIN UPDATE things SET n = n + 100 WHERE id = 1; END $$",
        "DO $$ BEGIN UPDATE things SET n = n + 100 WHERE id = abs(id); END $$",
    ])
    assert not errors(small), small
    assert "wrote 5 rows" in errors(large)[0].message, large
    assert _one(server, "SELECT sum(n) FROM public.things") == 115


# ----------------------------------------------------------------- B: what the statistics do not count


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "TRUNCATE public.things",
    "DO $$ BEGIN TRUNCATE public.things; END $$",
    "ALTER TABLE public.things ALTER COLUMN n TYPE bigint USING 0",
    "ALTER TABLE public.things DROP COLUMN n",
])
def test_what_the_count_cannot_see_is_refused_under_a_cap(hostile, server, protocol, sql):
    server.reset()
    try:
        (answer,) = _steps(hostile, "capped", protocol, [sql])
    finally:  # (what got through is undone for the tests after)
        server.conn.execute("ALTER TABLE public.things ADD COLUMN IF NOT EXISTS n int; "
                            "ALTER TABLE public.things ALTER COLUMN n TYPE int")
        hostile.call(hostile.app.catalog.invalidate, "test teardown")
    assert _refused_by_pgwarden(answer), answer
    assert _one(server, "SELECT count(*) FROM public.things WHERE n = id") == 5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_large_objects_are_not_written_under_a_cap(hostile, server, protocol):
    server.reset()
    for _ in range(3):
        server.conn.execute("SELECT lo_from_bytea(0, 'x')")
    (answer,) = _steps(hostile, "capped", protocol, ["SELECT lo_unlink(oid) FROM pg_largeobject_metadata"])
    assert _refused_by_pgwarden(answer), answer
    assert _one(server, "SELECT count(*) FROM pg_largeobject_metadata") == 3


# ----------------------------------------------------------------- C: a count made to shrink


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("forget", ["DROP TABLE r7_scratch", "DISCARD TEMP"])
def test_forgetting_a_scratch_tables_counts_does_not_offset_a_write(hostile, server, protocol, forget):
    server.reset()
    answers = _steps(hostile, "capped", protocol, [
        "BEGIN",
        "CREATE TEMP TABLE r7_scratch (a int)",
        "INSERT INTO r7_scratch VALUES (1), (2)",
        "INSERT INTO r7_scratch VALUES (3), (4)",
        "INSERT INTO r7_scratch VALUES (5), (6)",
        f"DO $$ BEGIN UPDATE public.things SET n = n + 100 WHERE id = abs(id); {forget}; END $$",
        "COMMIT",
    ])
    assert all(not errors(a) for a in answers[:5]), answers[:5]
    assert _refused_by_pgwarden(answers[5]), answers[5]
    assert _one(server, "SELECT sum(n) FROM public.things") == 15


# ----------------------------------------------------------------- D: foreign tables


@pytest.fixture
def loopback(hostile, server, pg_server):
    info = psycopg.conninfo.conninfo_to_dict(pg_server.dsn(database=DB))
    server.reset()
    server.conn.execute(
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw; DROP SERVER IF EXISTS r7_loop CASCADE; "
        f"CREATE SERVER r7_loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{info['host']}', "
        f"port '{info['port']}', dbname '{DB}'); CREATE USER MAPPING FOR {APP_USER} SERVER r7_loop "
        f"OPTIONS (user '{APP_USER}', password '{APP_PASSWORD}'); "
        "CREATE FOREIGN TABLE public.r7_remote (id int, n int) SERVER r7_loop "
        "OPTIONS (schema_name 'public', table_name 'things'); "
        "CREATE VIEW public.r7_remote_v AS SELECT * FROM public.r7_remote")
    hostile.call(hostile.app.catalog.invalidate, "test setup")
    hostile.call(hostile.app.catalog.fresh)
    yield
    server.conn.execute("DROP SERVER IF EXISTS r7_loop CASCADE; DROP EXTENSION IF EXISTS postgres_fdw CASCADE")
    hostile.call(hostile.app.catalog.invalidate, "test teardown")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "UPDATE public.r7_remote SET n = n + 100 WHERE id = abs(id)",
    "UPDATE public.r7_remote_v SET n = n + 100 WHERE id = abs(id)",
    "DO $$ BEGIN UPDATE public.r7_remote SET n = n + 100 WHERE id = abs(id); END $$",
])
def test_a_write_to_a_foreign_table_is_refused_under_a_cap(hostile, server, loopback, protocol, sql):
    (answer,) = _steps(hostile, "capped", protocol, [sql])
    assert _refused_by_pgwarden(answer), answer
    assert _one(server, "SELECT sum(n) FROM public.things") == 15


# ----------------------------------------------------------------- E: read-only sessions


def _shown(answer):
    return [r.values[0].decode() for r in answer if isinstance(r, m.DataRow)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("lift", [
    "RESET transaction_read_only",
    "SET transaction_read_only TO DEFAULT",
    "SET LOCAL transaction_read_only TO DEFAULT",
    "SET transaction_read_only = off",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT set_config('transaction_read_only', NULL, true)",
    "SET default_transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
])
def test_a_read_only_session_cannot_be_made_writable(hostile, server, protocol, lift):
    server.reset()
    answers = _steps(hostile, "readonly", protocol, [
        "BEGIN", lift, "SHOW transaction_read_only", "ROLLBACK",
        "BEGIN", "SHOW transaction_read_only", "ROLLBACK"])
    assert _refused_by_pgwarden(answers[1]) or errors(answers[1]), answers[1]
    assert _shown(answers[2]) in ([], ["on"]), answers[2]
    assert _shown(answers[5]) == ["on"], answers[5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("begin", ["BEGIN READ WRITE", "START TRANSACTION READ WRITE",
                                   "BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE"])
def test_a_read_only_session_opens_no_read_write_transaction(hostile, server, protocol, begin):
    server.reset()
    answers = _steps(hostile, "readonly", protocol, [begin, "SHOW transaction_read_only", "ROLLBACK"])
    assert _refused_by_pgwarden(answers[0]), answers[0]
    assert _shown(answers[1]) == ["on"], answers[1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("reset", ["RESET default_transaction_read_only", "SET default_transaction_read_only TO DEFAULT",
                                   "SET transaction_read_only = on", "RESET ALL"])
def test_a_read_only_session_may_still_reset_to_read_only(hostile, server, protocol, reset):
    server.reset()
    answers = _steps(hostile, "readonly", protocol, [reset, "BEGIN", "SHOW transaction_read_only", "ROLLBACK"])
    assert not errors(answers[0]), answers[0]
    assert _shown(answers[2]) == ["on"], answers[2]
