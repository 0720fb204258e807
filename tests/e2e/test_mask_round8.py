"""Red team eight (masking, hunt 8b): a table's TOAST relation read by name, code of a refused
statement run on pgwarden's plans connection, a row-level security policy reading masked values,
logical decoding and raw pages. Round three's database and masks (tests/e2e/test_mask_round3.py),
under round five's demo-like policy where the attack needs no DDL, round three's POLICY (default
allow; roles and system blocked) where it does. Each test failed before its fix.

This module runs its own server, at ``wal_level = logical`` (logical decoding needs it; the other
tests do not depend on it).
"""

from __future__ import annotations

import pytest
from test_mask_round3 import DB, HASH_KEY, POLICY, SSN, SSN_NUM, Session, direct, leaked, received_by, rtdb, start  # noqa: F401 (fixtures, asked for by name)
from test_mask_round5 import DEMO_LIKE

from pgwarden.testing.postgres import APP_PASSWORD, TempPostgres
from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

WRONG = "812-57-3965"


@pytest.fixture
def operator(request):
    """A direct connection of the operator's (round three's ``direct``)."""
    return request.getfixturevalue("direct")


def _no_oracle(agent, sql: str) -> None:
    """``sql`` (with ``{g}`` for the guess) tells the stored SSN from a wrong guess neither by its
    rows nor by its bytes: refused (42501), or the same answer for both."""
    answers = {}
    for guess in (SSN, WRONG):
        got, r = received_by(agent, sql.format(g=guess))
        assert not leaked(got), (leaked(got), r)
        if r["err"] is not None:
            assert r["err"][0] == "42501", r
            return
        answers[guess] = r["rows"]
    assert answers[SSN] == answers[WRONG], f"the stored SSN is told from a wrong guess: {answers}"


@pytest.fixture(scope="module")
def pg_server():
    """This module's server, at wal_level = logical (a CDC slot: Debezium, Fivetran, a managed
    service's logical replication); otherwise as the shared one."""
    server = TempPostgres(settings={"wal_level": "logical"})
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ 1. a TOAST relation read by name
@pytest.fixture
def toasted(request, operator):
    """A masked text column holding a long value (a note, a document: more than ~2 kB is stored
    out of line, in the table's TOAST relation), with the SSN inside user 2's note."""
    request.getfixturevalue("rtdb")
    operator.execute(
        "UPDATE users SET note = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i) "
        f"|| ' {SSN} ' || (SELECT string_agg(md5((i * 7)::text), '') FROM generate_series(1, 400) i) WHERE id = 2")
    (toast,) = operator.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'users'").fetchone()
    yield toast
    operator.execute("UPDATE users SET note = 'x' WHERE id = 2")


@pytest.mark.parametrize("spelling", ["{toast}", '"pg_toast"."{name}"', "{name}"], ids=["qualified", "quoted",
                                                                                       "search-path"])
def test_a_toast_relation_read_by_name_is_no_oracle_of_the_masked_values_it_holds(
        request, make_pgwarden, tmp_path, toasted, spelling):
    # The agent finds the TOAST relation (pg_class.reltoastrelid: a plain catalog read) and filters
    # its chunks by their bytes: which rows (or what count) come back tells whether the guessed
    # bytes are in a masked value; get_byte(chunk_data, k) < v reads any byte. pgwarden's catalog
    # had no relations of kind 't': lineage took pg_toast.pg_toast_N for one of unknown columns,
    # whose outputs came back masked whole but whose conditions were not refused.
    agent = Session(start(make_pgwarden, tmp_path, DEMO_LIKE))
    try:
        name = toasted.partition(".")[2]
        if spelling == "{name}":
            assert agent.run("SET search_path TO public, pg_toast")["err"] is None
        relation = spelling.format(toast=toasted, name=name)
        _no_oracle(agent, f"SELECT count(*) FROM {relation} "
                          "WHERE position(convert_to('{g}', 'UTF8') in chunk_data) > 0")
        _no_oracle(agent, f"SELECT chunk_id FROM {relation} WHERE get_byte(chunk_data, 0) < ascii('{{g}}')")
        # its chunks read back are masked whole, and the plain read is answered
        got, r = received_by(agent, f"SELECT chunk_id, chunk_seq, chunk_data FROM {relation}")
        assert r["err"] is None and r["rows"], r
        assert not leaked(got) and not any(SSN.encode() in bytes(row[2] or b"") for row in r["rows"]), r["rows"][:1]
    finally:
        agent.close()


def test_a_view_over_a_toast_relation_is_no_oracle_either(request, make_pgwarden, tmp_path, toasted, operator):
    # With DDL allowed the agent names the TOAST relation once, in a view, and filters the view.
    agent = Session(start(make_pgwarden, tmp_path, POLICY))
    try:
        made = agent.run(f"CREATE VIEW h8b_chunks AS SELECT chunk_id, chunk_data FROM {toasted}")
        if made["err"] is None:
            _no_oracle(agent, "SELECT count(*) FROM h8b_chunks WHERE position(convert_to('{g}', 'UTF8') in chunk_data) > 0")
        else:
            assert made["err"][0] == "42501", made
    finally:
        agent.close()
        operator.execute("DROP VIEW IF EXISTS h8b_chunks")


# ------------------------------------------------------------------ 2. the plan question runs the agent's code
LOCKING = ("CREATE FUNCTION h8b_lock() RETURNS int LANGUAGE plpgsql {volatility} AS $$ BEGIN "
           "EXECUTE 'SELECT pg_advisory_lock(replace(ss' || 'n, ''-'', '''')::bigint) FROM us' || "
           "'ers WHERE id = 1'; RETURN 1; END $$")


def _advisory_keys(conn) -> list[str]:
    return [k for (k,) in conn.execute("SELECT classid::text || ':' || objid::text FROM pg_locks "
                                         "WHERE locktype = 'advisory'").fetchall()]


@pytest.fixture
def locking_agent(request, make_pgwarden, tmp_path, operator):
    request.getfixturevalue("rtdb")

    def make(policy):
        s = Session(start(make_pgwarden, tmp_path, policy))
        made.append(s)
        return s

    made: list[Session] = []
    yield make
    for s in made:
        s.close()
    operator.execute("DROP FUNCTION IF EXISTS h8b_lock()")


def test_a_refused_statement_leaves_nothing_on_pgwardens_plan_connection(locking_agent, operator):
    # An IMMUTABLE PL/pgSQL function whose body builds its SQL takes a session-level advisory lock
    # keyed by the SSN's digits. `SELECT h8b_lock()` is refused (block: "statements pgwarden cannot
    # analyse"), but the mask plugin asks its plan on the "pgwarden plans" connection, and EXPLAIN
    # folds an IMMUTABLE call with constant arguments: the planner RAN the function there, and
    # ROLLBACK does not release a session-level advisory lock. pg_locks, read by any session,
    # showed the SSN as the lock's key. (That the plan is asked for a statement another plugin
    # refused is the core's; what the question leaves on its connection, pgwarden's planner's.)
    agent = locking_agent(POLICY)
    assert agent.run(LOCKING.format(volatility="IMMUTABLE"))["err"] is None
    agent.run("SELECT h8b_lock()")
    got, r = received_by(agent, "SELECT classid::text || ':' || objid::text AS k, pid FROM pg_locks "
                                "WHERE locktype = 'advisory'")
    assert f"0:{SSN_NUM}" not in [row[0] for row in r["rows"] or ()], f"the SSN is a lock's key: {r}"
    assert f"0:{SSN_NUM}" not in _advisory_keys(operator)
    assert not leaked(got), leaked(got)


# ------------------------------------------------------------------ 6. dynamic SQL whatever the volatility
STATIC = ("CREATE FUNCTION h8b_lock() RETURNS int LANGUAGE plpgsql {volatility} AS $$ BEGIN "
          "PERFORM pg_advisory_lock(replace(ssn, '-', '')::bigint) FROM users WHERE id = 1; RETURN 1; END $$")


@pytest.mark.parametrize("body", [LOCKING, STATIC], ids=["dynamic", "static"])
@pytest.mark.parametrize("volatility", ["IMMUTABLE", "STABLE", "VOLATILE"])
def test_code_keeps_values_elsewhere_whatever_its_declared_volatility(locking_agent, operator, volatility, body):
    # Under a policy that lets `unknown` statements through, the mask plugin refused the VOLATILE
    # function as "keeping values elsewhere" (EXECUTE of built text may do anything), but not the
    # same body declared IMMUTABLE or STABLE: a declared volatility is the agent's word. The lock
    # was taken in the agent's own session (pg_locks shows it to every session).
    agent = locking_agent({**POLICY, "rules": [{"name": "code", "allow": {"statements": ["unknown"]}},
                                                *POLICY["rules"]]})
    assert agent.run(body.format(volatility=volatility))["err"] is None
    r = agent.run("SELECT h8b_lock()")
    assert r["err"] is not None and r["err"][0] == "42501", r
    assert "keep values elsewhere" in r["err"][1], r
    assert f"0:{SSN_NUM}" not in _advisory_keys(operator)


# ------------------------------------------------------------------ 3. a row-level security policy
def unprivileged_session(request, make_pgwarden, tmp_path, operator, role: str) -> Session:
    """A session through a pgwarden whose upstream role ``role`` is not a superuser (as in
    production: row-level security binds it)."""
    request.getfixturevalue("rtdb")
    operator.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
                     f"CREATE ROLE {role} LOGIN PASSWORD '{APP_PASSWORD}'; END IF; END $$")
    operator.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    key = tmp_path / "mask-key"
    key.write_text(HASH_KEY)
    pw = make_pgwarden(policies=[POLICY], only=BUILTIN_PLUGINS, upstream={"database": DB, "user": role},
                       plugins_section={"mask": {"key_file": str(key)}})
    return Session(pw)


@pytest.fixture
def unprivileged(request, make_pgwarden, tmp_path, operator):
    s = unprivileged_session(request, make_pgwarden, tmp_path, operator, "h8b")
    yield s
    s.close()
    operator.execute("DROP TABLE IF EXISTS h8b_guess, h8b_docs; DROP VIEW IF EXISTS h8b_vs CASCADE; "
                     "DROP FUNCTION IF EXISTS h8b_prefix(text)")


def _guesses_through_a_policy(agent, setup: list[str], read: str = "SELECT g FROM h8b_guess ORDER BY g") -> None:
    for sql in setup:
        r = agent.run(sql)
        if r["err"] is not None:
            assert r["err"][0] == "42501", (sql, r)  # a refusal of the set-up: as good
            return
    got, r = received_by(agent, read)
    assert not leaked(got), leaked(got)
    if r["err"] is not None:
        assert r["err"][0] == "42501", r
        return
    seen = [row[0] for row in r["rows"]]
    assert seen in ([], ["7", "8", "81", "812-57-395", "812-57-396", "82"]), \
        f"the policy filtered the guesses by the SSN: {seen}"


_GUESS_TABLE = ["CREATE {temp} TABLE h8b_guess (g text)",
                "ALTER TABLE h8b_guess ENABLE ROW LEVEL SECURITY",
                "ALTER TABLE h8b_guess FORCE ROW LEVEL SECURITY",
                "CREATE POLICY ins ON h8b_guess FOR INSERT WITH CHECK (true)"]
_GUESSES = "INSERT INTO h8b_guess VALUES ('7'), ('8'), ('81'), ('82'), ('812-57-396'), ('812-57-395')"


@pytest.mark.parametrize("temp, view", [
    ("", "SELECT id, ssn AS s FROM users WHERE id = 1"),
    # a view the planner keeps apart as a scan of its own: its plan names `h8b_vs.s`, not users.ssn
    ("", "SELECT id, ssn AS s FROM users WHERE id = 1 LIMIT 1"),
    # a table only the session has: the server will not plan it on pgwarden's connection
    ("TEMP", "SELECT id, ssn AS s FROM users WHERE id = 1"),
], ids=["view", "view-kept-apart", "temp-table"])
def test_a_row_level_policy_reading_masked_values_is_an_oracle(unprivileged, temp, view):
    # The agent's own table gets a SELECT policy whose subquery reads a view; the view is made
    # harmless, then replaced to return the SSN (views are DDL that goes on). CREATE POLICY naming
    # users directly is refused ("DDL on public.users"), but no one followed the policy's quals
    # when the table was read: lineage of `SELECT g FROM h8b_guess` saw one plain table, and the
    # plan check was not asked. The rows that came back were the guesses that are prefixes of
    # user 1's SSN: digit by digit.
    _guesses_through_a_policy(unprivileged, [
        *(s.format(temp=temp) for s in _GUESS_TABLE),
        _GUESSES,
        "CREATE VIEW h8b_vs AS SELECT 1 AS id, 'x'::text AS s",
        "CREATE POLICY sel ON h8b_guess FOR SELECT USING (EXISTS (SELECT 1 FROM h8b_vs WHERE s LIKE g || '%'))",
        f"CREATE OR REPLACE VIEW h8b_vs AS {view}"])


def test_a_row_level_policy_calling_a_function_replaced_later_is_an_oracle(unprivileged):
    # The same through a function: a harmless SQL function when the policy is made, replaced to
    # compare with the SSN afterwards.
    _guesses_through_a_policy(unprivileged, [
        *(s.format(temp="") for s in _GUESS_TABLE),
        _GUESSES,
        "CREATE FUNCTION h8b_prefix(p text) RETURNS bool LANGUAGE sql STABLE AS $$ SELECT p <> '' $$",
        "CREATE POLICY sel ON h8b_guess FOR SELECT USING (h8b_prefix(g))",
        "CREATE OR REPLACE FUNCTION h8b_prefix(p text) RETURNS bool LANGUAGE sql STABLE AS "
        "$$ SELECT EXISTS (SELECT 1 FROM users WHERE id = 1 AND ssn LIKE p || '%') $$"])


@pytest.fixture
def tenant_agent(request, operator):
    """The operator's schema (made before pgwarden starts): a tenant policy on h8b_docs."""
    request.getfixturevalue("rtdb")
    operator.execute("CREATE TABLE h8b_docs (owner text, body text); INSERT INTO h8b_docs VALUES ('alice', 'a'), "
                     "('bob', 'b'); ALTER TABLE h8b_docs ENABLE ROW LEVEL SECURITY; CREATE POLICY sel ON h8b_docs "
                   "FOR SELECT USING (owner IN (SELECT name FROM users WHERE id = 1))")
    return request.getfixturevalue("unprivileged")


def test_a_row_level_policy_on_columns_that_are_not_masked_is_answered(tenant_agent):
    # The operator's tenant policy reads a table with masked columns through columns that are not
    # masked (the usual shape): reading the table it guards is no oracle, and is answered.
    r = tenant_agent.run("SELECT owner, body FROM h8b_docs ORDER BY owner")
    assert r["err"] is None and r["rows"] == [("alice", "a")], r


# ------------------------------------------------------------------ 4. logical decoding
@pytest.fixture
def cdc_agent(request, make_pgwarden, tmp_path, operator):
    request.getfixturevalue("rtdb")
    operator.execute("SELECT pg_create_logical_replication_slot('h8b_cdc', 'test_decoding') WHERE NOT EXISTS "
                     "(SELECT 1 FROM pg_replication_slots WHERE slot_name = 'h8b_cdc')")
    operator.execute("UPDATE users SET name = name WHERE id = 1")  # the application's own traffic
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    yield s
    s.close()
    operator.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'h8b%'")


@pytest.mark.parametrize("sql", [
    "SELECT data FROM pg_logical_slot_peek_changes('h8b_cdc', NULL, NULL)",
    "SELECT encode(data, 'escape') AS data FROM pg_logical_slot_peek_binary_changes('h8b_cdc', NULL, NULL)",
    "SELECT c.data FROM pg_catalog.pg_logical_slot_peek_changes('h8b_cdc', NULL, NULL) AS c",
    "SELECT (pg_logical_slot_peek_changes('h8b_cdc', NULL, NULL)).data",
], ids=["peek", "peek-binary", "qualified", "in-select-list"])
def test_logical_decoding_does_not_return_masked_values_in_clear(cdc_agent, sql):
    # A role with REPLICATION (or a superuser) reads a slot's changes: test_decoding prints every
    # column of every written row (`ssn[text]:'812-57-3964' card_number[text]:'4539...'`). These
    # functions were not among those that reveal values: only a policy blocking side effects
    # refused them.
    got, r = received_by(cdc_agent, sql)
    assert not leaked(got), (leaked(got), str(r)[:400])
    # refused (reading a slot's changes is a function that may change state, and they may hold
    # masked values), or answered masked whole
    assert r["err"] is not None and r["err"][0] == "42501" or r["rows"], r


def test_a_condition_over_logical_decoding_is_an_oracle(cdc_agent):
    _no_oracle(cdc_agent, "SELECT count(*) FROM pg_logical_slot_peek_changes('h8b_cdc', NULL, NULL) "
                          "WHERE data LIKE '%{g}%'")


# ------------------------------------------------------------------ 5. raw pages (pageinspect)
@pytest.fixture
def pages_agent(request, make_pgwarden, tmp_path, operator):
    request.getfixturevalue("rtdb")
    operator.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")  # the operator's (a DBA's tool)
    s = Session(start(make_pgwarden, tmp_path, POLICY))
    yield s
    s.close()


@pytest.mark.parametrize("sql", [
    "SELECT encode(get_raw_page('users', 0), 'escape') AS page",
    "SELECT t_data FROM heap_page_items(get_raw_page('users', 0))",
    "SELECT * FROM heap_page_items(get_raw_page('users', 0))",
    "SELECT tuple_data_split('users'::regclass, t_data, t_infomask, t_infomask2, t_bits) FROM "
    "heap_page_items(get_raw_page('users', 0))",
], ids=["raw-page", "heap-items", "star", "tuple-data-split"])
def test_raw_pages_do_not_return_masked_values_in_clear(pages_agent, sql):
    # get_raw_page reads a table's block as bytes (superuser by default): the heap tuples hold every
    # column as stored. Every function of pageinspect (and of pg_walinspect) is now a source that
    # may hold any column's value, known by its extension from the catalog.
    got, r = received_by(pages_agent, sql)
    assert not leaked(got) and SSN not in str(r), (leaked(got), str(r)[:300])
    # refused (a page given to a set-returning function: how many rows it returns; a VOLATILE
    # function), or answered masked whole
    assert r["err"] is not None and r["err"][0] == "42501" or r["rows"], r


def test_a_condition_over_raw_pages_is_an_oracle(pages_agent):
    _no_oracle(pages_agent, "SELECT lp FROM heap_page_items(get_raw_page('users', 0)) "
                            "WHERE position(convert_to('{g}', 'UTF8') in t_data) > 0")


def test_ordinary_reads_near_these_sources_are_answered(cdc_agent):
    # What the fixes must not refuse: the slots' list, a plain read of users (masked), pg_class.
    for sql in ("SELECT slot_name, plugin FROM pg_replication_slots",
                "SELECT id, name, ssn FROM users ORDER BY id",
                "SELECT relname, reltoastrelid <> 0 AS toasted FROM pg_class WHERE relname = 'users'"):
        got, r = received_by(cdc_agent, sql)
        assert r["err"] is None, (sql, r)
        assert not leaked(got), (sql, leaked(got))
