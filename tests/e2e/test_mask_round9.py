"""Red team nine (masking, hunt 9b): code of the database's own over value-revealing functions and
over tables whose row-level policies read masked values, contrib xml2's ``xpath_table``, the server's
files read as bytes, foreign tables, and conditions after the session's own uncommitted DDL. Round
three's database and masks (tests/e2e/test_mask_round3.py), under round five's demo-like policy where
the attack needs no DDL, round three's POLICY (default allow; roles and system blocked) where it
does. Each test failed before its fix.

This module runs its own server, at ``wal_level = logical`` (logical decoding needs it; the other
tests do not depend on it).
"""

from __future__ import annotations

import psycopg
import pytest
from test_mask_round3 import DB, HASH_KEY, POLICY, RULES, SSN, Session, direct, leaked, received_by, rtdb, start  # noqa: F401 (fixtures, asked for by name)
from test_mask_round5 import DEMO_LIKE
from test_mask_round8 import unprivileged_session

from pgwarden.testing.postgres import TempPostgres


@pytest.fixture(scope="module")
def pg_server():
    """This module's server, at wal_level = logical (a CDC slot); otherwise as the shared one."""
    server = TempPostgres(settings={"wal_level": "logical"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def operator(request):
    """A direct connection of the operator's (round three's ``direct``)."""
    return request.getfixturevalue("direct")


def _no_oracle(agent, sql: str, guesses: tuple[str, str] = ("8", "7")) -> None:
    """``sql`` (``{g}`` a guess of the SSN's first characters: the right one, then a wrong one)
    is refused (42501), or answers both alike; nothing secret is received."""
    answers = {}
    for guess in guesses:
        got, r = received_by(agent, sql.format(g=guess))
        assert not leaked(got), (leaked(got), r)
        if r["err"] is not None:
            assert r["err"][0] == "42501", r
            return
        answers[guess] = r["rows"]
    assert len(set(map(repr, answers.values()))) == 1, f"the SSN's first characters are told: {answers}"


@pytest.fixture
def agent(request, make_pgwarden, tmp_path, operator):
    """Agents through pgwarden under a policy (round three's POLICY unless given)."""
    request.getfixturevalue("rtdb")
    made = []

    def make(policy=POLICY):
        s = Session(start(make_pgwarden, tmp_path, policy))
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()
    operator.execute("DROP FUNCTION IF EXISTS h9_wrap(), h9_plain(); DROP VIEW IF EXISTS h9_v; "
                     "DROP TABLE IF EXISTS h9_local")


# ------------------------------------------------------------------ 2. PL/pgSQL over value-revealing functions
@pytest.fixture
def sources(request, operator, pg_server):
    """An application's session whose last statement wrote the SSN (pg_stat_activity.query), a CDC
    slot (logical decoding), pageinspect (the operator's)."""
    request.getfixturevalue("rtdb")
    operator.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    operator.execute("SELECT pg_create_logical_replication_slot('h9_cdc', 'test_decoding') WHERE NOT EXISTS "
                     "(SELECT 1 FROM pg_replication_slots WHERE slot_name = 'h9_cdc')")
    operator.execute("UPDATE users SET name = name WHERE id = 1")
    app = psycopg.connect(pg_server.dsn(database=DB), autocommit=True)
    app.execute(f"UPDATE users SET ssn = '{SSN}' WHERE id = 1")
    yield
    app.close()
    operator.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'h9%'")


_REVEALING_BODIES = {
    "activity": "RETURN (SELECT string_agg(query, ' | ') FROM pg_stat_get_activity(NULL))",
    "backend-activity": "RETURN (SELECT string_agg(pg_stat_get_backend_activity(i), ' | ') "
                        "FROM pg_stat_get_backend_idset() i)",
    "logical-decoding": "RETURN (SELECT string_agg(data, ' ') FROM pg_logical_slot_peek_changes('h9_cdc', NULL, NULL))",
    "pageinspect": "RETURN (SELECT string_agg(encode(t_data, 'escape'), ' ') "
                   "FROM heap_page_items(get_raw_page('users', 0)))",
}


@pytest.mark.parametrize("body", list(_REVEALING_BODIES.values()), ids=list(_REVEALING_BODIES))
@pytest.mark.parametrize("volatility", ["VOLATILE", "STABLE"])
def test_a_plpgsql_function_over_a_value_revealing_function_is_masked(agent, sources, body, volatility):
    # The same functions named in the statement are sources that may hold any column's value
    # (round five, round eight): masked whole or refused. Named inside a PL/pgSQL body they were
    # not: lineage took what the body reads from the *tables* it names only, so the result came
    # back in clear (another application's `UPDATE users SET ssn = '...'`, every column of every
    # decoded row, the raw heap tuples).
    a = agent()
    made = a.run(f"CREATE FUNCTION h9_wrap() RETURNS text LANGUAGE plpgsql {volatility} AS $$ BEGIN {body}; END $$")
    assert made["err"] is None, made
    got, r = received_by(a, "SELECT h9_wrap()")
    assert not leaked(got), (leaked(got), str(r)[:300])


def test_a_condition_over_a_plpgsql_function_over_a_revealing_function_is_an_oracle(agent, sources):
    a = agent()
    assert a.run("CREATE FUNCTION h9_wrap() RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN "
                 f"{_REVEALING_BODIES['activity']}; END $$")["err"] is None
    _no_oracle(a, "SELECT 1 AS one WHERE h9_wrap() LIKE '%ssn = ''{g}%'")


def test_a_plpgsql_function_over_an_ordinary_table_is_answered(agent, sources):
    # The control: a PL/pgSQL function reading a table no rule names (and calling built-ins that
    # reveal nothing) comes back in clear, and a condition over it is answered.
    a = agent()
    for sql in ("CREATE TABLE h9_local (tag text)", "INSERT INTO h9_local VALUES ('a'), ('b')",
                "CREATE FUNCTION h9_plain() RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN "
                "RETURN (SELECT upper(string_agg(tag, ',' ORDER BY tag)) FROM h9_local); END $$"):
        assert a.run(sql)["err"] is None, sql
    r = a.run("SELECT h9_plain() AS tags WHERE h9_plain() LIKE 'A%'")
    assert r["err"] is None and r["rows"] == [("A,B",)], r


# ------------------------------------------------------------------ 4. a table's row-level policy, read in a body
@pytest.fixture
def unprivileged(request, make_pgwarden, tmp_path, operator):
    s = unprivileged_session(request, make_pgwarden, tmp_path, operator, "h9b")
    yield s
    s.close()
    operator.execute("DROP TABLE IF EXISTS h9_guess, h9_docs, h9_tenant CASCADE; DROP VIEW IF EXISTS h9_vs CASCADE; "
                     "DROP FUNCTION IF EXISTS h9_n(text), h9_tenant_rows()")


def _set_up(agent, statements) -> bool:
    """Runs ``statements``; False when pgwarden refused one (a refusal of the set-up: as good)."""
    for sql in statements:
        r = agent.run(sql)
        if r["err"] is not None:
            assert r["err"][0] == "42501", (sql, r)
            return False
    return True


@pytest.mark.parametrize("function", [
    "CREATE FUNCTION h9_n(p text) RETURNS bigint LANGUAGE plpgsql STABLE AS "
    "$$ BEGIN RETURN (SELECT count(*) FROM h9_guess WHERE g = p); END $$",
    "CREATE FUNCTION h9_n(p text) RETURNS bigint LANGUAGE plpgsql STABLE AS "
    "$$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM h9_guess WHERE g = p; RETURN n; END $$",
], ids=["return-subquery", "select-into"])
def test_a_plpgsql_function_reading_a_table_whose_policy_reads_masked_values_is_an_oracle(unprivileged, function):
    # Round eight made a row-level policy's condition the statement's: `SELECT count(*) FROM
    # h9_guess` is refused. Read inside a PL/pgSQL body it was not: lineage took what the body
    # reads from the columns of the tables it names (h9_guess.g), not from what their policies
    # read (users.ssn through h9_vs), and the count came back in clear: 1 for a prefix of the SSN.
    if _set_up(unprivileged, [
            "CREATE TABLE h9_guess (g text)",
            "ALTER TABLE h9_guess ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE h9_guess FORCE ROW LEVEL SECURITY",
            "CREATE POLICY ins ON h9_guess FOR INSERT WITH CHECK (true)",
            "INSERT INTO h9_guess VALUES ('7'), ('8'), ('81'), ('82')",
            "CREATE VIEW h9_vs AS SELECT 1 AS id, 'x'::text AS s",
            "CREATE POLICY sel ON h9_guess FOR SELECT USING (EXISTS (SELECT 1 FROM h9_vs WHERE s LIKE g || '%'))",
            "CREATE OR REPLACE VIEW h9_vs AS SELECT id, ssn AS s FROM users WHERE id = 1",
            function]):
        _no_oracle(unprivileged, "SELECT h9_n('{g}') AS n")


def test_a_plpgsql_function_reading_a_table_whose_policy_reads_no_masked_column_is_answered(request, operator):
    # The control: the operator's tenant policy over a column no rule names; a PL/pgSQL function
    # reading the table it guards answers, and a condition over it too.
    request.getfixturevalue("rtdb")
    operator.execute("CREATE TABLE h9_tenant (owner text, body text); INSERT INTO h9_tenant VALUES ('alice', 'a'), "
                     "('bob', 'b'); ALTER TABLE h9_tenant ENABLE ROW LEVEL SECURITY; CREATE POLICY sel ON h9_tenant "
                     "FOR SELECT USING (owner IN (SELECT name FROM users WHERE id = 1))")
    a = request.getfixturevalue("unprivileged")
    assert a.run("CREATE FUNCTION h9_tenant_rows() RETURNS bigint LANGUAGE plpgsql STABLE AS "
                 "$$ BEGIN RETURN (SELECT count(*) FROM h9_tenant); END $$")["err"] is None
    r = a.run("SELECT h9_tenant_rows() AS n WHERE h9_tenant_rows() > 0")
    assert r["err"] is None and r["rows"] == [(1,)], r


# ------------------------------------------------------------------ 1. contrib xml2's xpath_table
@pytest.fixture
def xml2_agent(request, make_pgwarden, tmp_path, operator):
    """An agent under round five's demo-like policy (no DDL, no side effects, no unknown), or
    round three's POLICY, where the operator installed contrib xml2."""
    request.getfixturevalue("rtdb")
    operator.execute("CREATE EXTENSION IF NOT EXISTS xml2")
    made = []

    def make(policy):
        s = Session(start(make_pgwarden, tmp_path, policy))
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()
    operator.execute("DROP FUNCTION IF EXISTS h9_xp()")


_POLICIES = {"demo": DEMO_LIKE, "default-allow": POLICY}


@pytest.mark.parametrize("policy", list(_POLICIES.values()), ids=list(_POLICIES))
@pytest.mark.parametrize("sql", [
    "SELECT * FROM xpath_table('id', '''<a>'' || ssn || ''</a>''', 'users', '/a/text()', 'true') AS t(id int, x text)",
    "SELECT * FROM xpath_table('id', '''<a>'' || card_number || ''</a>''', 'users', '/a/text()', 'true') "
    "AS t(id int, x text)",
], ids=["ssn", "card"])
def test_xpath_table_does_not_return_masked_values_in_clear(xml2_agent, policy, sql):
    # xpath_table(key, document, relation, xpaths, criteria) runs `SELECT <key>, <document> FROM
    # <relation> WHERE <criteria>` built from its text arguments, like query_to_xml: the document
    # read users.ssn, and its text came back as the XPath's result. An extension's STABLE function
    # no list named: traced to its constant arguments, nothing masked.
    got, r = received_by(xml2_agent(policy), sql)
    assert not leaked(got), (leaked(got), r)


@pytest.mark.parametrize("policy", list(_POLICIES.values()), ids=list(_POLICIES))
def test_xpath_tables_criteria_is_an_oracle(xml2_agent, policy):
    _no_oracle(xml2_agent(policy), "SELECT * FROM xpath_table('id', 'name', 'users', '/a', 'ssn LIKE ''{g}%''') "
                                   "AS t(id int, x text)")


def test_xpath_table_inside_a_plpgsql_body_is_masked(xml2_agent):
    a = xml2_agent(POLICY)
    assert a.run("CREATE FUNCTION h9_xp() RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN (SELECT "
                 "string_agg(x, ' ') FROM xpath_table('id', '''<a>'' || ssn || ''</a>''', 'users', '/a/text()', "
                 "'true') AS t(id int, x text)); END $$")["err"] is None
    got, r = received_by(a, "SELECT h9_xp() AS x")
    assert not leaked(got), (leaked(got), r)


# ------------------------------------------------------------------ 6. the server's files read as bytes
OPEN = {"name": "agents", "default": "allow", "rules": list(RULES)}  # only the mask rules: a DBA agent's


@pytest.mark.parametrize("sql", [
    "SELECT encode(pg_read_binary_file(pg_relation_filepath('users')), 'escape') AS f",
    "SELECT encode(pg_read_binary_file(pg_relation_filepath('users')), 'hex') AS f",
], ids=["escape", "hex"])
def test_the_tables_data_file_read_as_bytes_is_masked(agent, operator, sql):
    # Under a policy that blocks nothing but masks (an operator's DBA agent), pg_read_binary_file
    # of pg_relation_filepath('users') returned the heap as bytes, every column in clear: the
    # stored rows pageinspect's get_raw_page returns (masked since round eight), by another path.
    operator.execute("CHECKPOINT")  # (one comes every few minutes anyway)
    got, r = received_by(agent(OPEN), sql)
    text = str(r["rows"])
    assert not leaked(got) and SSN.encode().hex() not in text and SSN not in text, str(r)[:300]


def test_a_condition_over_the_tables_data_file_is_an_oracle(agent, operator):
    operator.execute("CHECKPOINT")
    _no_oracle(agent(OPEN), "SELECT 1 AS one WHERE position(convert_to('{g}', 'UTF8') in "
                            "pg_read_binary_file(pg_relation_filepath('users'))) > 0", (SSN, "812-57-3965"))


def test_a_server_file_that_holds_no_value_is_still_answered(agent):
    # The control: the functions that list or describe files answer as before.
    r = agent(OPEN).run("SELECT size > 0 AS some FROM pg_stat_file('PG_VERSION')")
    assert r["err"] is None and r["rows"] == [(True,)], r


# ------------------------------------------------------------------ 5. a foreign table back to the same database
@pytest.fixture
def loopback(agent, operator, pg_server):
    """postgres_fdw (the operator's) and a server of the agent's pointing back at this database."""
    operator.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
    a = agent()
    for sql in [f"CREATE SERVER h9_loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{pg_server.socket_dir}', "
                f"port '{pg_server.port}', dbname '{DB}')",
                "CREATE USER MAPPING FOR CURRENT_USER SERVER h9_loop OPTIONS (user 'app')",
                "CREATE FOREIGN TABLE h9_ft (id int, ssn text) SERVER h9_loop OPTIONS (table_name 'users')",
                "CREATE SCHEMA h9s",
                "IMPORT FOREIGN SCHEMA public LIMIT TO (users) FROM SERVER h9_loop INTO h9s"]:
        r = a.run(sql)
        assert r["err"] is None, (sql, r)
    yield a
    operator.execute("DROP SERVER IF EXISTS h9_loop CASCADE; DROP SCHEMA IF EXISTS h9s CASCADE")


@pytest.mark.parametrize("read", [
    "SELECT id, ssn FROM h9_ft ORDER BY id",
    "SELECT id, ssn, card_number FROM h9s.users ORDER BY id",
    "SELECT f.ssn FROM h9_ft f JOIN users u USING (id)",
], ids=["foreign-table", "import-foreign-schema", "joined"])
def test_a_foreign_table_over_the_masked_table_is_masked(loopback, read):
    # A foreign table is a relation of kind 'f' of the agent's own: its columns are nobody's rule,
    # but postgres_fdw reads them from the masked table itself (a loopback server, the upstream
    # role's own mapping). The rows came back in clear.
    got, r = received_by(loopback, read)
    assert not leaked(got), (leaked(got), r)


def test_a_condition_over_a_foreign_table_is_an_oracle(loopback):
    _no_oracle(loopback, "SELECT id FROM h9_ft WHERE ssn LIKE '{g}%'")


def test_a_local_table_beside_a_foreign_one_is_answered(loopback):
    # The control: in the same session, a local table no rule names answers, conditions included.
    for sql in ("CREATE TABLE h9_local (tag text)", "INSERT INTO h9_local VALUES ('a'), ('b')"):
        assert loopback.run(sql)["err"] is None, sql
    r = loopback.run("SELECT tag FROM h9_local WHERE tag LIKE 'a%' ORDER BY tag")
    assert r["err"] is None and r["rows"] == [("a",)], r


# ------------------------------------------------------------------ 3. after the session's own uncommitted DDL
@pytest.fixture
def harmless_view(operator, request):
    request.getfixturevalue("rtdb")
    operator.execute("DROP VIEW IF EXISTS h9_v; CREATE VIEW h9_v AS SELECT id, name AS x FROM users")


@pytest.mark.parametrize("probe", [
    "SELECT 1 AS one FROM h9_v WHERE x LIKE '{g}%'",
    "SELECT id FROM users WHERE id = 1 AND EXISTS (SELECT 1 FROM h9_v WHERE x LIKE '{g}%')",
], ids=["where", "exists"])
def test_conditions_after_the_sessions_own_uncommitted_change_are_oracles(agent, harmless_view, probe):
    # While the session's own DDL is uncommitted the catalog cannot show it: lineage marked what
    # the statement reads unknown and masked its outputs whole, but kept the conditions it traced
    # on the stale catalog (h9_v.x was `name` there), and the plan question cannot answer (the
    # view is locked: 55P03). Which rows came back told the SSN: one row for '8', none for '7'.
    a = agent()
    assert a.run("BEGIN")["err"] is None
    try:
        assert a.run("CREATE OR REPLACE VIEW h9_v AS SELECT id, ssn AS x FROM users")["err"] is None
        _no_oracle(a, probe)
    finally:
        a.run("ROLLBACK")


def test_conditions_after_ddl_in_the_same_query_string_are_oracles(agent, harmless_view):
    # The same in one simple Query: the statements after the DDL are untraceable, their
    # conditions were not.
    a = agent()
    answers = {}
    for guess in ("8", "7"):
        got, r = received_by(a, "CREATE OR REPLACE VIEW h9_v AS SELECT id, ssn AS x FROM users; "
                                f"SELECT 1 AS one FROM h9_v WHERE x LIKE '{guess}%'; "
                                "CREATE OR REPLACE VIEW h9_v AS SELECT id, name AS x FROM users")
        assert not leaked(got)
        if r["err"] is not None:
            assert r["err"][0] == "42501", r
            return
        answers[guess] = got.count(b"D\x00")  # DataRow messages received
    assert answers["8"] == answers["7"], f"the SSN's first digit is told by the rows: {answers}"


def test_a_statement_without_conditions_after_the_change_is_still_answered(agent, harmless_view):
    # The control: in the same transaction, a read without conditions answers (masked whole, as
    # every output in a stale context is), and after ROLLBACK conditions answer again.
    a = agent()
    assert a.run("BEGIN")["err"] is None
    assert a.run("CREATE OR REPLACE VIEW h9_v AS SELECT id, ssn AS x FROM users")["err"] is None
    r = a.run("SELECT count(*) AS n FROM h9_v")
    assert r["err"] is None and len(r["rows"]) == 1, r
    assert a.run("ROLLBACK")["err"] is None
    r = a.run("SELECT x FROM h9_v WHERE id = 1")
    assert r["err"] is None and r["rows"] == [("alice",)], r
