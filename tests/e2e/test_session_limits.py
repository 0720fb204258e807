"""Limits the core keeps whatever the agent sends: a read-only session stays read-only, a
statement_timeout stays, and a Bind runs only what pgwarden decided (at Parse, or again
after the policies changed)."""

from __future__ import annotations

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.config import _CONVERTER, Config
from pgwarden.relay.engine import ALLOW
from pgwarden.testing.pytest_plugin import base_config
from pgwarden.wire import messages as m

# Allows reads, settings and transactions, and no write at all.
READS = [{"name": "reads", "default": "block", "rules": [
    {"name": "reading", "allow": {"statements": ["select", "set", "show", "transaction"]}}]}]


@pytest.fixture
def lifted(pg_server):
    """A domain whose CHECK writes: ``SELECT 1::ro_sneaky`` looks like a read and inserts."""
    pg_server.psql(
        "drop table if exists ro_log cascade; drop domain if exists ro_sneaky;"
        "create table ro_log (n int);"
        "create or replace function ro_write(n int) returns boolean language plpgsql as "
        "$$ begin insert into ro_log values (n); return true; end $$;"
        "create domain ro_sneaky as int check (ro_write(value));",
        "appdb",
    )


def count(pg_server, table: str = "ro_log") -> int:
    return int(pg_server.psql(f"select count(*) from {table}", "appdb"))


def test_a_session_whose_policies_allow_no_write_is_read_only_upstream(make_pgwarden, pg_server, lifted):
    # The analysis sees the write a domain's CHECK hides (a cast runs it)...
    analysed = make_pgwarden(policies=READS, recording={"sinks": []})  # (one record file per test)
    with psycopg.connect(analysed.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select 1::ro_sneaky")
    # ... and where an analysis misses one (here: a decider that lets everything pass), the
    # server refuses it: the session is read-only upstream.
    running = make_pgwarden(policies=READS, decide=lambda conn, request: ALLOW)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("show default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("select 1::ro_sneaky")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("select %s::ro_sneaky", (2,))
        with c.transaction():
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                c.execute("select 3::ro_sneaky")
    assert count(pg_server) == 0


def test_a_session_that_may_write_is_not_read_only(make_pgwarden, pg_server, lifted):
    running = make_pgwarden(policies=[{"name": "p", "rules": [{"block": {"statements": ["ddl"]}}]}])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("show default_transaction_read_only").fetchone() == ("off",)
        c.execute("select 1::ro_sneaky")
    assert count(pg_server) == 1


@pytest.mark.parametrize("sql", [
    "set default_transaction_read_only = off",
    "set session characteristics as transaction read write",
    "begin read write",
    "start transaction isolation level serializable, read write",
    "select set_config('default_transaction_read_only', 'off', false)",
    "select set_config('transaction_read_only', 'off', true)",
    "select set_config(current_user || '', 'off', false)",
])
def test_every_way_of_lifting_read_only_is_refused(make_pgwarden, pg_server, sql):
    running = make_pgwarden(policies=READS)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute(sql)
        assert excinfo.value.diag.message_primary.startswith("pgwarden: blocked:")
        if "current_user" not in sql:  # (a computed setting name is refused before this rule too)
            assert excinfo.value.diag.message_detail == "Refused by policy 'reads', rule 'read-only session'."
        assert c.execute("show default_transaction_read_only").fetchone() == ("on",)
        # Keeping it read-only, or going back to the session's value, is fine.
        c.execute("set default_transaction_read_only = on")
        c.execute("reset default_transaction_read_only")
        c.execute("reset all")
        assert c.execute("show default_transaction_read_only").fetchone() == ("on",)  # the startup value
        c.execute("begin read only")
        c.execute("rollback")


def test_a_read_only_session_that_became_writable_anyway_ends(make_pgwarden, pg_server):
    """A decider that misses everything: the server's report of the change ends the session."""
    running = make_pgwarden(policies=READS, decide=lambda conn, request: ALLOW)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as excinfo:
            c.execute("select set_config('default_transaction_read_only', 'off', false)")
        assert excinfo.value.diag.severity_nonlocalized == "FATAL"
        assert "read-only mode was changed" in excinfo.value.diag.message_primary
        assert c.closed


# ---------------------------------------------------------------------- statement_timeout

TIMEOUT = [{"name": "budget", "rules": [{"name": "slow", "limit": {"statement_timeout": "1500ms"}}]}]


@pytest.mark.parametrize("sql", [
    "set statement_timeout = 0",
    "set statement_timeout = '2s'",
    "set statement_timeout = '100us'",  # the server rounds it to 0
    "set statement_timeout = '0.4'",
    "set local statement_timeout = 0",
    "select set_config('statement_timeout', '0', false)",
    "select set_config('statement_timeout', current_setting('work_mem'), false)",
    "select set_config(lower('STATEMENT_TIMEOUT'), '0', false)",
])
def test_statement_timeout_cannot_be_lifted(make_pgwarden, sql):
    running = make_pgwarden(policies=TIMEOUT)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute(sql)
        assert excinfo.value.diag.message_primary.startswith("pgwarden: blocked:")
        if "lower(" not in sql:  # (a computed setting name is refused before this rule too)
            assert excinfo.value.diag.message_detail == "Refused by policy 'budget', rule 'slow'."
        assert c.execute("show statement_timeout").fetchone() == ("1500ms",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select pg_sleep(3)")


def test_statement_timeout_may_be_lowered_and_reset(make_pgwarden):
    running = make_pgwarden(policies=TIMEOUT)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("set statement_timeout = '1s'")
        assert c.execute("show statement_timeout").fetchone() == ("1s",)
        c.execute("select set_config('statement_timeout', '500', false)")
        assert c.execute("show statement_timeout").fetchone() == ("500ms",)
        for back in ("reset statement_timeout", "set statement_timeout to default", "reset all",
                     "discard all"):
            c.execute("set statement_timeout = 200")
            c.execute(back)  # back to the value the upstream session started with: the limit
            assert c.execute("show statement_timeout").fetchone() == ("1500ms",), back


# ---------------------------------------------------------------------- Bind


def test_bind_of_an_sql_prepared_statement_is_refused(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists bind_t; create table bind_t (n int)", "appdb")
    running = make_pgwarden()
    rc = RawClient(running.host, running.port)
    rc.login(running.token())
    rc.send(m.Query("prepare b as insert into bind_t values (1)").encode())
    assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)
    rc.send(m.Bind("", "b").encode() + m.Execute("").encode() + m.Sync().encode())
    answer = rc.until_ready()
    assert [type(x) for x in answer] == [m.ErrorResponse, m.ReadyForQuery]
    assert answer[0].sqlstate == "42501"
    assert answer[0].message == ('pgwarden: blocked: prepared statement "b" was not prepared through '
                                 "the protocol in this session")
    # The session goes on, and the client's own unnamed statement survived the refusal.
    rc.send(m.Parse("", "select 1").encode() + m.Sync().encode())
    rc.until_ready()
    rc.send(m.Bind("", "b").encode() + m.Execute("").encode() + m.Sync().encode()
            + m.Bind("", "").encode() + m.Execute("").encode() + m.Sync().encode())
    assert rc.until_ready()[0].sqlstate == "42501"
    assert [type(x) for x in rc.until_ready()] == [m.BindComplete, m.DataRow, m.CommandComplete,
                                                   m.ReadyForQuery]
    # Through SQL it is EXECUTE, decided like any statement.
    rc.send(m.Query("execute b").encode())
    assert rc.until_ready()[0].tag == "INSERT 0 1"
    rc.close()
    assert count(pg_server, "bind_t") == 1


def test_deallocate_then_prepare_in_sql_cannot_borrow_a_protocol_name(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists bind_t; create table bind_t (n int)", "appdb")
    running = make_pgwarden()
    rc = RawClient(running.host, running.port)
    rc.login(running.token())
    rc.send(m.Parse("s", "select 1").encode() + m.Sync().encode())
    rc.until_ready()
    rc.send(m.Query("deallocate s; prepare s as insert into bind_t values (1)").encode())
    rc.until_ready()
    rc.send(m.Bind("", "s").encode() + m.Execute("").encode() + m.Sync().encode())
    assert rc.until_ready()[0].sqlstate == "42501"
    rc.close()
    assert count(pg_server, "bind_t") == 0


def test_a_statement_parsed_before_a_reload_is_decided_again_at_bind(make_pgwarden, pg_server, signing_keys,
                                                                      tmp_path):
    pg_server.psql("drop table if exists bind_t; create table bind_t (n int)", "appdb")
    lenient = [{"name": "p", "rules": [{"name": "no-ddl", "block": {"statements": ["ddl"]}}]}]
    strict = [{"name": "p", "rules": [{"name": "no-insert", "block": {"statements": ["insert"]},
                                       "reason": "no inserts now"}]}]
    running = make_pgwarden(policies=lenient)
    rc = RawClient(running.host, running.port)
    rc.login(running.token())
    rc.send(m.Parse("ins", "insert into bind_t values ($1)", (23,)).encode() + m.Sync().encode())
    rc.until_ready()
    rc.send(m.Bind("", "ins", (0,), (b"1",)).encode() + m.Execute("").encode() + m.Sync().encode())
    assert rc.until_ready()[1].tag == "INSERT 0 1"
    doc = base_config(pg_server, signing_keys, tmp_path, policies=strict)
    assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
    rc.send(m.Bind("", "ins", (0,), (b"2",)).encode() + m.Execute("").encode() + m.Sync().encode())
    answer = rc.until_ready()
    assert [type(x) for x in answer] == [m.ErrorResponse, m.ReadyForQuery]
    assert answer[0].message == "pgwarden: blocked: no inserts now"
    rc.close()
    assert count(pg_server, "bind_t") == 1


def test_a_reload_that_adds_rows_written_counts_statements_parsed_before(make_pgwarden, pg_server,
                                                                          signing_keys, tmp_path):
    pg_server.psql("drop table if exists bind_t; create table bind_t (n int);"
                   "insert into bind_t select generate_series(1, 10)", "appdb")
    running = make_pgwarden()
    with psycopg.connect(running.dsn(), autocommit=True, prepare_threshold=0) as c:
        c.execute("update bind_t set n = n where n < %s", (3,))  # prepared: Parse once, Bind again
        doc = base_config(pg_server, signing_keys, tmp_path,
                          policies=[{"name": "p", "rules": [{"name": "cap", "limit": {"rows_written": 5}}]}])
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
        c.execute("update bind_t set n = n where n < %s", (3,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("update bind_t set n = -n where n < %s", (11,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("update bind_t set n = n where n < %s", (11,))
    assert pg_server.psql("select count(*) from bind_t where n < 0", "appdb") == "0"


def test_a_reload_that_changes_the_limits_applies_from_the_next_simple_statement(make_pgwarden, pg_server,
                                                                                  signing_keys, tmp_path):
    # The decision reads the limits' copies in the session's native state (`ConnectionState`):
    # each reload's new limits must be what the very next statement is decided with.
    pg_server.psql("drop table if exists bind_t; create table bind_t (n int);"
                   "insert into bind_t select generate_series(1, 10)", "appdb")
    running = make_pgwarden()
    capped = base_config(pg_server, signing_keys, tmp_path,
                         policies=[{"name": "p", "rules": [{"name": "cap", "limit": {"rows_written": 5}}]}])
    rc = RawClient(running.host, running.port)
    rc.login(running.token())
    rc.send(m.Query("update bind_t set n = n").encode())
    assert rc.until_ready()[0].tag == "UPDATE 10"  # no limit yet
    assert running.call(running.app.reload, _CONVERTER.structure(capped, Config))
    rc.send(m.Query("update bind_t set n = -n").encode())
    refused = rc.until_ready()[0]
    assert isinstance(refused, m.ErrorResponse) and refused.sqlstate == "42501"
    assert running.call(running.app.reload, _CONVERTER.structure(base_config(pg_server, signing_keys, tmp_path),
                                                                 Config))
    rc.send(m.Query("update bind_t set n = n").encode())
    assert rc.until_ready()[0].tag == "UPDATE 10"  # the limit is gone with the reload
    rc.close()
    assert pg_server.psql("select count(*) from bind_t where n < 0", "appdb") == "0"
