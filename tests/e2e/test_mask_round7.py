"""Red team seven (masking): an upsert's arbiter compares a masked column; another session's
notification reaches the agent after one of its statements; a deferred constraint's error at COMMIT
quotes a masked key. Round three's database and round five's demo-like policy (the agent makes no
DDL); the operator's schema adds what each needs. Each test failed before its fix.
"""

from __future__ import annotations

import threading

import pytest
from test_mask_round3 import EMAIL, SSN, Session, direct, leaked, received_by, rtdb, start  # noqa: F401
from test_mask_round5 import DEMO_LIKE


@pytest.fixture
def operator(request):
    """A direct connection of the operator's (round three's ``direct``)."""
    return request.getfixturevalue("direct")

@pytest.fixture
def unique_agent(request, make_pgwarden, tmp_path, operator):
    """The operator's schema has UNIQUE on masked columns (ssn, email): common for both."""
    request.getfixturevalue("rtdb")
    operator.execute("ALTER TABLE users DROP CONSTRAINT IF EXISTS users_ssn_key; ALTER TABLE users ADD CONSTRAINT users_ssn_key UNIQUE (ssn)")
    operator.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (email)")
    s = Session(start(make_pgwarden, tmp_path, DEMO_LIKE))
    yield s
    s.close()
    operator.execute("ALTER TABLE users DROP CONSTRAINT IF EXISTS users_ssn_key; DROP INDEX IF EXISTS users_email_key")


def _in_rollback(agent, sql):
    assert agent.run("BEGIN")["err"] is None
    try:
        return received_by(agent, sql)
    finally:
        agent.run("ROLLBACK")


@pytest.mark.parametrize("sql", [
    # which user holds the guessed SSN: RETURNING gives 1 (user 1's) for the right guess, 99 otherwise
    "INSERT INTO users (id, name, ssn) VALUES (99, 'x', '{g}') ON CONFLICT (ssn) DO UPDATE SET name = users.name "
    "RETURNING id",
    # whether any user holds it: no row (INSERT 0 0) for the right guess, one row otherwise
    "INSERT INTO users (id, name, ssn) VALUES (99, 'x', '{g}') ON CONFLICT (ssn) DO NOTHING RETURNING id",
    # e-mail (`email` shows the domain): a dictionary of local parts
    "INSERT INTO users (id, name, email) VALUES (99, 'x', '{e}') ON CONFLICT (email) DO UPDATE SET name = users.name "
    "RETURNING id",
], ids=["do-update-returning", "do-nothing-returning", "email"])
def test_an_upsert_arbitrated_by_a_masked_unique_column_is_an_equality_oracle(unique_agent, sql):
    # `WHERE ssn = '<guess>'` and `MERGE ... ON u.ssn = v.s` are refused as oracles; the arbiter of
    # ON CONFLICT compares the written value with every stored SSN just the same, and neither
    # lineage nor the plan check (EXPLAIN prints only "Conflict Arbiter Indexes") sees it. With
    # `partial` showing the last digits (or `email` the domain) the guesses left are few.
    answers = {}
    for guess, e in ((SSN, EMAIL), ("812-57-3965", "zorbquux.vantel2@example.com")):
        got, r = _in_rollback(unique_agent, sql.format(g=guess, e=e))
        assert not leaked(got)
        if r["err"] is not None:
            assert r["err"][0] == "42501", r  # refused: what is wanted
            return
        answers[guess] = r["rows"] if r["rows"] is not None else "no rows"
    # answered: the right guess must not be told from a wrong one
    assert answers[SSN] == answers["812-57-3965"], f"the right SSN is told apart: {answers}"



NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('users_changed', row_to_json(NEW)::text); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS users_changed ON users;
CREATE TRIGGER users_changed AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION users_changed();
"""


@pytest.fixture
def listening_agent(request, make_pgwarden, tmp_path, operator):
    """The schema's own trigger tells listeners of changed rows (a cache-invalidation / realtime
    pattern): `pg_notify('users_changed', row_to_json(NEW)::text)`. The application writes on its
    own connection; the agent only LISTENs (the demo's policy)."""
    request.getfixturevalue("rtdb")
    operator.execute(NOTIFY_TRIGGER)
    s = Session(start(make_pgwarden, tmp_path, DEMO_LIKE))
    assert s.run("LISTEN users_changed")["err"] is None
    yield s
    s.close()
    operator.execute("DROP TRIGGER IF EXISTS users_changed ON users; DROP FUNCTION IF EXISTS users_changed()")


def _payloads(agent):
    return [n.payload for n in agent.conn.notifies(timeout=2, stop_after=1)]


def test_a_notification_delivered_at_the_agents_commit_is_masked(listening_agent, operator):
    # Delivered while the agent is idle, the payload is withheld whole ("message withheld": no
    # statement). Delivered with the agent's own transaction's end, it is judged by the COMMIT
    # (reads no masked column): only the detectors run, and what is not of their shapes arrives in
    # clear: salary 7342195.37, dob 1961-04-27, ssn_num 812573964 (the SSN's digits), the note,
    # the blob. Received: {"id":1,...,"ssn":"[ssn]",...,"salary":7342195.37,"note":"Jörg Müller
    # ÄÖÜ ßéè","ssn_num":812573964,"dob":"1961-04-27","blob":"\\xdeadbeef..."}
    agent = listening_agent
    before = len(agent.received)
    assert agent.run("BEGIN")["err"] is None
    operator.execute("UPDATE users SET name = name WHERE id = 1")  # the application's write, committed
    assert agent.run("SELECT 1")["err"] is None
    assert agent.run("COMMIT")["err"] is None
    payloads = _payloads(agent)
    assert payloads, "no notification"
    assert not leaked(agent.received[before:]), (leaked(agent.received[before:]), payloads)


def test_a_notification_delivered_after_the_agents_statement_is_masked(listening_agent, operator):
    # The same in autocommit: the application commits while the agent's statement runs; the
    # server sends the notification after that statement's CommandComplete, judged by it.
    agent = listening_agent
    before = len(agent.received)
    writer = threading.Timer(0.3, lambda: operator.execute("UPDATE users SET name = name WHERE id = 1"))
    writer.start()
    assert agent.run("SELECT pg_sleep(1)")["err"] is None
    writer.join()
    payloads = _payloads(agent)
    assert payloads, "no notification"
    assert not leaked(agent.received[before:]), (leaked(agent.received[before:]), payloads)


DEFERRED_SCHEMA = """
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_note_key;
DROP TABLE IF EXISTS notes_ref;
ALTER TABLE users ADD CONSTRAINT users_note_key UNIQUE (note);
CREATE TABLE notes_ref (id int, note text REFERENCES users (note) DEFERRABLE INITIALLY DEFERRED);
INSERT INTO notes_ref SELECT id, note FROM users WHERE id = 1;
"""
NOTE = "Jörg Müller ÄÖÜ ßéè"  # users.note of user 1: `partial` keep_last 2 shows "**** ****** *** *éè"


@pytest.fixture
def deferred_agent(request, make_pgwarden, tmp_path, operator):
    """The operator's schema: another table references the masked column users.note through a
    DEFERRABLE INITIALLY DEFERRED foreign key (a natural key: an e-mail, an account number...)."""
    request.getfixturevalue("rtdb")
    operator.execute(DEFERRED_SCHEMA)
    s = Session(start(make_pgwarden, tmp_path, DEMO_LIKE))
    yield s
    s.close()
    operator.execute("DROP TABLE IF EXISTS notes_ref; ALTER TABLE users DROP CONSTRAINT IF EXISTS users_note_key")


@pytest.mark.parametrize("write, end", [
    ("DELETE FROM users WHERE id = 1", "COMMIT"),
    ("UPDATE users SET note = 'changed' WHERE id = 1", "COMMIT"),
    ("DELETE FROM users WHERE id = 1", "SET CONSTRAINTS ALL IMMEDIATE"),
], ids=["delete-commit", "update-commit", "delete-set-constraints"])
def test_a_deferred_constraints_error_does_not_quote_a_masked_value(deferred_agent, write, end):
    # The write's own messages are withheld (it writes a table holding masked columns); the check
    # it deferred runs at COMMIT (or SET CONSTRAINTS ... IMMEDIATE), whose messages are the
    # detectors' only: DETAIL: Key (note)=(Jörg Müller ÄÖÜ ßéè) is still referenced from table
    # "notes_ref". The whole value of the row the agent chose, one transaction each.
    agent = deferred_agent
    before = len(agent.received)
    assert agent.run("BEGIN")["err"] is None
    assert agent.run(write)["err"] is None
    r = agent.run(end)
    agent.run("ROLLBACK")
    got = agent.received[before:]
    assert r["err"] is not None and r["err"][0] == "23503", r
    assert NOTE.encode() not in got and not leaked(got), r["err"]


