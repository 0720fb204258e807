"""Red team, round eight: settings the agent must not change, changed where the analysis did not look.

* The upstream session's ``application_name`` (8c F2): pgwarden names it after the agent's
  verified identity at login (``pgwarden:{subject}``), for the server's logs and
  pg_stat_activity. ``SET``, ``SET LOCAL``, ``set_config``, a function's ``SET application_name``
  clause renamed it, so the server blamed another agent. Refused now, whatever the policy says
  (the policy here allows everything); RESET, RESET ALL and DISCARD ALL go back to the login name.
* A function's SET clause (pg_proc.proconfig), or a set_config in the body of a function the
  statement runs, switched ``track_counts`` off while the function wrote, hiding its writes from
  ``limit: {rows_written}`` (8a F3), and lifted a ``limit: {statement_timeout}`` the same way.

Every case runs over both protocols; the server's state is read on a direct connection.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.wire import messages as m

PROTOCOLS = ["simple", "extended"]

OWNED = """
DROP TABLE IF EXISTS g8_t CASCADE;
CREATE TABLE g8_t (id int PRIMARY KEY, n int);
INSERT INTO g8_t SELECT g, g FROM generate_series(1, 5) g;
GRANT ALL ON g8_t TO PUBLIC;
DROP FUNCTION IF EXISTS g8_clause(), g8_body(), g8_computed(), g8_quiet(), g8_off_on(), g8_no_timeout(),
    g8_quiet_caller(), g8_agent_quiet(), g8_agent_body(), g8_agent_name(), g8_plain() CASCADE;
CREATE FUNCTION g8_clause() RETURNS text LANGUAGE sql SET application_name = 'pgwarden:agent-2'
    AS $$ SELECT current_setting('application_name') $$;
CREATE FUNCTION g8_body() RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM set_config('application_name', 'pgwarden:agent-2', false); RETURN 'renamed'; END $$;
CREATE FUNCTION g8_computed(name text) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM set_config(name, 'pgwarden:agent-2', false); RETURN 'renamed'; END $$;
CREATE FUNCTION g8_quiet() RETURNS int LANGUAGE sql SET track_counts = off
    AS $$ UPDATE g8_t SET n = n + 100 WHERE id = abs(id); SELECT 1 $$;
CREATE FUNCTION g8_off_on() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
    PERFORM set_config('track_counts', 'off', true);
    UPDATE g8_t SET n = n + 100 WHERE id = abs(id);
    PERFORM set_config('track_counts', 'on', true); RETURN 1; END $$;
CREATE FUNCTION g8_quiet_caller() RETURNS int LANGUAGE sql AS $$ SELECT g8_quiet() $$;
CREATE FUNCTION g8_no_timeout() RETURNS int LANGUAGE sql SET statement_timeout = 0 AS $$ SELECT 1 $$;
CREATE FUNCTION g8_plain() RETURNS int LANGUAGE sql SET search_path = pg_catalog, public SET work_mem = '8MB'
    AS $$ SELECT 1 $$;
"""


@pytest.fixture(scope="module")
def owned(pg_server):
    pg_server.psql(OWNED, "appdb")
    yield
    pg_server.psql("DROP TABLE IF EXISTS g8_t CASCADE", "appdb")


def _session(running, protocol: str):
    rc = RawClient(running.host, running.port)
    answer = rc.login(running.token("agent-1"))
    assert isinstance(answer[-1], m.ReadyForQuery), answer

    def run(sql: str) -> list:
        if protocol == "simple":
            rc.send(m.Query(sql).encode())
        else:
            rc.send(m.Parse("", sql).encode() + m.Bind("", "").encode() + m.Describe("P", "").encode()
                    + m.Execute("").encode() + m.Sync().encode())
        return rc.until_ready()

    return rc, run


def _errors(answer: list) -> list:
    return [x for x in answer if isinstance(x, m.ErrorResponse)]


def _value(answer: list) -> str:
    (row,) = [x for x in answer if isinstance(x, m.DataRow)]
    return row.values[0].decode()


# ---------------------------------------------------------------------- application_name


@pytest.fixture
def anything_goes(make_pgwarden, owned):
    """The pass-through policy (default allow, no rule): the guard is the core's, not a rule's."""
    return make_pgwarden()


RENAMES = {
    "set": ["SET application_name = 'pgwarden:agent-2'"],
    "set session": ["SET SESSION application_name TO 'pgwarden:agent-2'"],
    "set local": ["BEGIN", "SET LOCAL application_name = 'pgwarden:agent-2'"],
    "set_config": ["SELECT set_config('application_name', 'pgwarden:agent-2', false)"],
    "set_config local": ["BEGIN", "SELECT set_config('application_name', 'pgwarden:agent-2', true)"],
    "set_config computed name": ["SELECT set_config('application_' || 'name', 'pgwarden:agent-2', false)"],
    "a function's SET clause": ["SELECT g8_clause()"],
    "set_config in a function's body": ["SELECT g8_body()"],
    "set_config of a computed name in a function's body": ["SELECT g8_computed('application_name')"],
    "create with a SET clause": [
        "CREATE FUNCTION g8_agent_name() RETURNS int LANGUAGE sql SET application_name = 'x' AS $$ SELECT 1 $$"],
    "alter with a SET clause": ["ALTER FUNCTION g8_plain() SET application_name = 'pgwarden:agent-2'"],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", list(RENAMES))
def test_an_agent_cannot_rename_its_upstream_session(anything_goes, pg_server, how, protocol):
    rc, run = _session(anything_goes, protocol)
    try:
        *before, sql = RENAMES[how]
        for step in before:
            assert not _errors(run(step))
        (error,) = _errors(run(sql))
        assert error.sqlstate == "42501", error
        assert error.message.startswith("pgwarden: blocked: "), error
        assert "application_name" in error.message or "computed at run time" in error.message, error
        assert "application_name" in (error.get("D") or ""), error  # (why it is refused)
        if before:
            run("ROLLBACK")
        assert _value(run("SELECT current_setting('application_name')")) == "pgwarden:agent-1"
    finally:
        rc.close()
    with psycopg.connect(pg_server.dsn(database="appdb"), autocommit=True) as direct:
        assert direct.execute("SELECT count(*) FROM pg_proc WHERE proname = 'g8_agent_name'").fetchone() == (0,)
        assert direct.execute("SELECT proconfig FROM pg_proc WHERE proname = 'g8_plain'").fetchone() == (
            ["search_path=pg_catalog, public", "work_mem=8MB"],)


@pytest.mark.parametrize("sql", ["RESET application_name", "SET application_name TO DEFAULT", "RESET ALL",
                                 "DISCARD ALL", "SELECT g8_plain()"])
def test_going_back_to_the_login_name_and_other_settings_pass(anything_goes, pg_server, sql):
    # On the server: RESET, RESET ALL and DISCARD ALL go back to the name the login gave.
    with psycopg.connect(pg_server.dsn(database="appdb"), autocommit=True, application_name="login-name") as direct:
        for back in ("RESET application_name", "RESET ALL", "DISCARD ALL", "SET application_name TO DEFAULT"):
            direct.execute("SET application_name = 'other'")
            direct.execute(back)
            assert direct.execute("SELECT current_setting('application_name')").fetchone() == ("login-name",)
    for protocol in PROTOCOLS:
        rc, run = _session(anything_goes, protocol)
        try:
            assert not _errors(run(sql)), sql
            assert _value(run("SELECT current_setting('application_name')")) == "pgwarden:agent-1"
        finally:
            rc.close()


def test_alter_role_set_application_name_does_not_rename_the_next_login(anything_goes, pg_server):
    """A role's (or database's) default is below the login's own value: pgwarden's name stays."""
    with psycopg.connect(anything_goes.dsn(), autocommit=True) as agent:
        agent.execute("ALTER ROLE CURRENT_USER SET application_name = 'pgwarden:agent-2'")
    try:
        with psycopg.connect(anything_goes.dsn(), autocommit=True) as agent:
            assert agent.execute("SELECT current_setting('application_name')").fetchone() == ("pgwarden:agent-1",)
    finally:
        with psycopg.connect(anything_goes.dsn(), autocommit=True) as agent:
            agent.execute("ALTER ROLE CURRENT_USER RESET application_name")


def test_clients_that_name_themselves_at_startup_still_connect(anything_goes):
    """psycopg, asyncpg (server_settings) and a JDBC-style startup packet send application_name at
    startup: pgwarden adds it after the identity, and nothing is refused."""
    with psycopg.connect(anything_goes.dsn(application_name="billing"), autocommit=True) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == (
            "pgwarden:agent-1 (billing)",)

    async def with_asyncpg() -> str:
        import asyncpg

        conn = await asyncpg.connect(anything_goes.url(), ssl=False, server_settings={"application_name": "etl"})
        try:
            return await conn.fetchval("SELECT current_setting('application_name')")
        finally:
            await conn.close()

    assert asyncio.run(with_asyncpg()) == "pgwarden:agent-1 (etl)"
    rc = RawClient(anything_goes.host, anything_goes.port)
    try:
        answer = rc.login(anything_goes.token("agent-1"), client_encoding="UTF8", DateStyle="ISO",
                          TimeZone="UTC", extra_float_digits="2", application_name="PostgreSQL JDBC Driver")
        assert isinstance(answer[-1], m.ReadyForQuery), answer
        rc.send(m.Query("SET extra_float_digits = 3; SELECT current_setting('application_name')").encode())
        answer = rc.until_ready()
        assert not _errors(answer) and _value(answer) == "pgwarden:agent-1 (PostgreSQL JDBC Driver)"
    finally:
        rc.close()


# ---------------------------------------------------------------------- rows_written, statement_timeout

CAPPED = [{"name": "capped", "rules": [{"name": "small-writes", "limit": {"rows_written": 2}}]}]


@pytest.fixture
def capped(make_pgwarden, owned, pg_server):
    pg_server.psql("UPDATE g8_t SET n = id", "appdb")
    return make_pgwarden(policies=CAPPED)


def _untouched(pg_server) -> None:
    assert pg_server.psql("SELECT sum(n) FROM g8_t", "appdb").strip() == "15"


QUIET = {
    "a SET clause": ["SELECT g8_quiet()"],
    "off then on in the body": ["SELECT g8_off_on()"],
    "a SET clause of a function a function calls": ["SELECT g8_quiet_caller()"],
    "created with a SET clause": [
        "CREATE FUNCTION g8_agent_quiet() RETURNS int LANGUAGE sql SET track_counts = off AS "
        "$$ UPDATE g8_t SET n = n + 100 WHERE id = abs(id); SELECT 1 $$",
        "SELECT g8_agent_quiet()"],
    "created with set_config in the body": [
        "CREATE FUNCTION g8_agent_body() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM set_config('track_counts', 'off', true); UPDATE g8_t SET n = n + 100 WHERE id = abs(id); "
        "RETURN 1; END $$",
        "SELECT g8_agent_body()"],
    "altered to have a SET clause": ["ALTER FUNCTION g8_plain() SET track_counts = off"],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", list(QUIET))
def test_a_function_cannot_hide_its_writes_from_the_count(capped, pg_server, how, protocol):
    rc, run = _session(capped, protocol)
    try:
        first = QUIET[how][0]
        (error,) = _errors(run(first))
        assert error.message == "pgwarden: blocked: changing track_counts is not allowed", error
        for later in QUIET[how][1:]:  # (the CREATE refused: nothing of that name to call)
            assert _errors(run(later))
    finally:
        rc.close()
    _untouched(pg_server)
    with psycopg.connect(pg_server.dsn(database="appdb"), autocommit=True) as direct:
        assert direct.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'g8_agent_%'").fetchone() == (0,)
        assert direct.execute("SELECT proconfig FROM pg_proc WHERE proname = 'g8_plain'").fetchone() == (
            ["search_path=pg_catalog, public", "work_mem=8MB"],)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_function_of_other_settings_is_counted_as_before(capped, pg_server, protocol):
    rc, run = _session(capped, protocol)
    try:
        assert _value(run("SELECT g8_plain()")) == "1"
        (error,) = _errors(run("UPDATE g8_t SET n = n + 1 WHERE id > 0"))
        assert "wrote 5 rows" in error.message
    finally:
        rc.close()
    _untouched(pg_server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_function_cannot_lift_the_statement_timeout(make_pgwarden, owned, protocol):
    running = make_pgwarden(policies=[{"name": "timed", "rules": [
        {"name": "budget", "limit": {"statement_timeout": "30s"}}]}])
    rc, run = _session(running, protocol)
    try:
        (error,) = _errors(run("SELECT g8_no_timeout()"))
        assert error.message == "pgwarden: blocked: statement_timeout = '0' is not allowed", error
        assert _value(run("SELECT g8_plain()")) == "1"
    finally:
        rc.close()
