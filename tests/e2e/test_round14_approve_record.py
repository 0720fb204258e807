# ruff: noqa: F811  (the fixtures of test_hostile and round thirteen, imported, are the tests' arguments)
"""Red team, round fourteen: approvals, recording, policy rollout, MCP and the wire's edges.

One pgwarden for the module (two approve rules: retry for the group ai-agents, hold for the
group holders); each case checks the tables over a direct connection afterwards.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from test_approval_inbox import inbox  # noqa: F401
from test_approvals import api
from test_hostile import DB, Agent, errors, hostile_db, server  # noqa: F401
from test_round13_approve_record import GROUP, _count, _pending, approving  # noqa: F401  (its set-up, not copied)

from pgwarden.testing.waiting import wait_until
from pgwarden.wire import messages as m


def _fresh(running, server):
    """The tables as the hostile set-up makes them, the objects of these tests (re)made, no
    request pending, the catalog read again."""
    server.reset()
    for r in api(running).pending():
        api(running).deny(r["id"], "clean up")
    server.conn.execute("DROP FUNCTION IF EXISTS public.r14_floor(integer)")
    server.conn.execute("CREATE OR REPLACE FUNCTION public.r14_floor(bigint) RETURNS bigint LANGUAGE sql "
                        "AS 'SELECT $1'")
    running.call(running.app.catalog.invalidate, "round 14 set-up")
    running.call(running.app.catalog.fresh)


def _decided_since(running, mark: int) -> bool:
    """Whether an approved statement's check has ended (its `approval` record, approved or
    withdrawn, written before it goes upstream) after line ``mark`` of the records."""
    import json

    lines = (running.workdir / "records.jsonl").read_text().splitlines()[mark:]
    return any(r["type"] == "approval" and r["state"] in ("approved", "withdrawn") for r in map(json.loads, lines))


def _mark(running) -> int:
    return len((running.workdir / "records.jsonl").read_text().splitlines())


def _answer_or_commit(agent, other, server, running, mark: int):
    """The approved statement's answer; if it waits for a lock (the other transaction's) instead,
    ``other`` commits first, once pgwarden's check of the statement has ended (the attacker's
    timing: what happened before the fix, the statement then ran). (Round thirteen's helper looks
    at the socket, which the hold notice makes readable.)"""
    answer: list = []
    reader = threading.Thread(target=lambda: answer.extend(agent.rc.until_ready()), daemon=True)
    reader.start()
    wait_until(10, lambda: not reader.is_alive() or (_decided_since(running, mark) and server.conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()[0] > 0), "an answer or a statement waiting for a lock")
    if reader.is_alive():
        other.commit()
    reader.join(10)
    assert not reader.is_alive(), "no answer"
    return answer


# ---------------------------------------------------------------------- inserted catalog rows

#: 4 as an int4 calls `r14_floor(bigint)` (4: the DELETE of row 5) until an overload taking an
#: int4 exists, which the parser then prefers (here: 0, the DELETE of every row)
FLOOR_DELETE = "DELETE FROM public.things WHERE id > public.r14_floor(4)"
OVERLOAD = "CREATE FUNCTION public.r14_floor(integer) RETURNS bigint LANGUAGE sql AS 'SELECT 0'"
#: What the other transaction holds besides the overload it made (a lock the DELETE must wait for)
HOLDS = {
    "LOCK TABLE ... IN SHARE MODE": "LOCK TABLE public.things IN SHARE MODE",
    "CREATE INDEX (a SHARE lock)": "CREATE INDEX r14_n ON public.things (n)",
}


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_statement_does_not_wait_for_another_transaction_that_only_inserted_catalog_rows(
        approving, server, pg_server, mode):
    """Found (round thirteen's open lead): the question to the database finds another backend's
    open transaction by the catalog rows it rewrote (their xmax) or a relation it holds in SHARE
    ROW EXCLUSIVE or ACCESS EXCLUSIVE mode. A transaction that only *inserts* catalog rows (a new
    overload of a function, a cast, an operator, a relation in an earlier schema of the path)
    leaves no such trace: nobody else can see those rows, and the lock on the catalog is let go
    at once. It held `public.things` in SHARE mode (`LOCK TABLE`, or the `CREATE INDEX` of a
    migration; EXCLUSIVE mode alike), which a DELETE's ROW EXCLUSIVE lock must wait for, and
    made `r14_floor(integer)` beside the `r14_floor(bigint)` the approved `DELETE FROM things
    WHERE id > r14_floor(4)` called (row 5, the preview would say). The DELETE was approved, sent,
    waited for the lock while being parsed, and, the other transaction committed, resolved its
    call on the catalog as it was then: the new overload, every row deleted. Now a relation held
    by another backend's open transaction in any mode that conflicts with a write's lock (SHARE,
    SHARE ROW EXCLUSIVE, EXCLUSIVE, ACCESS EXCLUSIVE) counts as an open redefinition: 55006,
    nothing ran."""
    for case, hold in HOLDS.items():
        _fresh(approving, server)
        other = psycopg.connect(pg_server.dsn(database=DB))
        agent = Agent(approving, GROUP[mode], "simple")
        try:
            if mode == "retry":
                assert errors(agent.run(FLOOR_DELETE)), case
                api(approving).approve(_pending(approving)["id"], "row 5, fine")
                other.execute(OVERLOAD)
                other.execute(hold)
                mark = _mark(approving)
                agent.rc.send(m.Query(FLOOR_DELETE).encode())
            else:
                agent.rc.send(m.Query(FLOOR_DELETE).encode())
                request = _pending(approving)
                other.execute(OVERLOAD)
                other.execute(hold)
                mark = _mark(approving)
                api(approving).approve(request["id"], "row 5, fine")
            answer = _answer_or_commit(agent, other, server, approving, mark)
            other.rollback()
        finally:
            agent.close()
            other.close()
        assert errors(answer), (case, mode, answer)
        assert errors(answer)[0].fields[2] == ("C", "55006"), (case, mode, answer)
        assert _count(server) == 5, (case, mode)




ROW_LOCK = "UPDATE public.things SET n = n + 1 WHERE id = 1"
#: How the DELETE comes to be parsed after a statement that waits for the other transaction's row
#: lock: (the messages the agent sends, which of them is approved)
BEHIND = {
    "the same text": (ROW_LOCK + "; " + FLOOR_DELETE, ROW_LOCK + "; " + FLOOR_DELETE),
    "a Query sent before it, not answered yet": (ROW_LOCK, FLOOR_DELETE),
}


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_statement_behind_a_waiting_one_does_not_see_what_another_transaction_made(
        approving, server, pg_server, mode):
    """Found: the same overload, made by another client's open transaction that also holds a row
    of `things` (`UPDATE things ... WHERE id = 1`: a row lock, which pg_locks shows to nobody
    until someone waits for it). The agent sent `UPDATE things SET n = n + 1 WHERE id = 1; DELETE
    FROM things WHERE id > r14_floor(4)` (approved as a whole), or the UPDATE as a Query of its
    own and the approved DELETE right behind it: the UPDATE waited for the row, the other
    transaction committed, and the DELETE, parsed only then, called the new overload: every row
    deleted. Now an approved statement that goes to the server behind another (of its text, other
    than BEGIN / COMMIT and the like, or of its session, unanswered) does not run while another
    backend of the database has an open transaction that wrote anything: 55006, nothing ran
    (the UPDATE ahead of it, not approved, runs)."""
    for case, (sent, approved) in BEHIND.items():
        _fresh(approving, server)
        other = psycopg.connect(pg_server.dsn(database=DB))
        agent = Agent(approving, GROUP[mode], "simple")
        try:
            if mode == "retry":
                assert errors(agent.run(approved)), case
                api(approving).approve(_pending(approving)["id"], "row 5, fine")
            other.execute(OVERLOAD)
            other.execute("UPDATE public.things SET n = n WHERE id = 1")
            mark = _mark(approving)
            agent.rc.send(m.Query(sent).encode() + (m.Query(approved).encode() if sent != approved else b""))
            if mode == "hold":
                api(approving).approve(_pending(approving)["id"], "row 5, fine")
            answer = _answer_or_commit(agent, other, server, approving, mark)
            if sent != approved:
                answer += agent.rc.until_ready()
            other.rollback()
        finally:
            agent.close()
            other.close()
        assert errors(answer), (case, mode, answer)
        assert errors(answer)[-1].fields[2] == ("C", "55006"), (case, mode, answer)
        assert _count(server) == 5, (case, mode)


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_control_an_approved_statement_runs_beside_another_clients_open_writes_and_share_update_lock(
        approving, server, pg_server, mode):
    """Not refused: another client's open transaction holds a row it wrote and `things` in SHARE
    UPDATE EXCLUSIVE mode (what VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY take: a write does not
    wait for it), and the approved DELETE is the only statement of its text, nothing of its
    session running: by a Query, or by Parse, Bind, Execute and Sync sent together (the
    ParseComplete still owed when the Bind is decided runs nothing)."""
    for protocol in ("simple", "extended"):
        _fresh(approving, server)
        other = psycopg.connect(pg_server.dsn(database=DB))
        agent = Agent(approving, GROUP[mode], protocol)
        try:
            if mode == "retry":
                assert errors(agent.run(FLOOR_DELETE)), protocol
                api(approving).approve(_pending(approving)["id"], "row 5, fine")
            other.execute("UPDATE public.things SET n = n WHERE id = 1")
            other.execute("LOCK TABLE public.things IN SHARE UPDATE EXCLUSIVE MODE")
            mark = _mark(approving)
            agent.rc.send(m.Query(FLOOR_DELETE).encode() if protocol == "simple" else
                          m.Parse("", FLOOR_DELETE).encode() + m.Bind("", "").encode() + m.Execute("").encode()
                          + m.Sync().encode())
            if mode == "hold":
                api(approving).approve(_pending(approving)["id"], "row 5, fine")
            answer = _answer_or_commit(agent, other, server, approving, mark)
            other.rollback()
        finally:
            agent.close()
            other.close()
        assert not errors(answer), (protocol, mode, answer)
        assert _count(server) == 4, (protocol, mode)


# ---------------------------------------------------------------------- records

def _records(running, session_of: str) -> list[dict]:
    """The records of the session that sent ``session_of``, once its end is written."""
    import json

    path = running.workdir / "records.jsonl"

    def of_session():
        records = [json.loads(line) for line in path.read_text().splitlines()]
        sessions = {r["session"] for r in records if session_of in (r.get("sql") or "")}
        return [r for r in records if r["session"] in sessions]

    return wait_until(10, of_session, "the session's records",
                      until=lambda rs: any(r["type"] == "session_end" for r in rs))


def test_an_execute_whose_bind_failed_or_that_the_server_skipped_has_a_result(approving, server):
    """Found: an Execute whose Bind the server refused (`UPDATE things ... WHERE id = $1` with `$1`
    = `abc`: 22P02, the agent told so), and the Execute of a second statement the server then
    skipped (before the Sync), had their `statement` records and no `result` record: the error
    the agent got was nowhere in the records, and a statement without a result reads as one whose
    outcome is unknown (round thirteen). Now each such Execute has a `result`: `rows` 0 and the
    error that ended it or made the server skip it (22P02). A control: an Execute that fails
    itself (22012) had its result before."""
    _fresh(approving, server)
    before = _sum(server)
    agent = Agent(approving, "ai-agents", "extended")
    try:
        agent.rc.send(m.Parse("", "UPDATE public.things SET n = n + 1000 /* r14 bind */ WHERE id = $1").encode()
                      + m.Bind("", "", (), (b"abc",), ()).encode() + m.Execute("").encode()
                      + m.Parse("", "UPDATE public.things SET n = n + 1000 /* r14 skipped */").encode()
                      + m.Bind("", "").encode() + m.Execute("").encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
        assert [e.fields[2] for e in errors(answer)] == [("C", "22P02")], answer
        fails = agent.run("UPDATE public.things SET n = n / 0 /* r14 fails */")
        assert [e.fields[2] for e in errors(fails)] == [("C", "22012")], fails
    finally:
        agent.close()
    assert _sum(server) == before
    records = _records(approving, "r14 bind")
    numbers = {r["sql"]: r["statement"] for r in records if r["type"] == "statement"}
    results = {r["statement"]: r for r in records if r["type"] == "result"}
    for marker, sqlstate in (("r14 bind", "22P02"), ("r14 skipped", "22P02"), ("r14 fails", "22012")):
        (number,) = [n for sql, n in numbers.items() if marker in sql]
        assert number in results, (marker, records)
        assert (results[number]["sqlstate"], results[number]["rows"]) == (sqlstate, 0), (marker, results[number])


def _sum(server):
    return server.conn.execute("SELECT sum(n) FROM public.things").fetchone()[0]



# ---------------------------------------------------------------------- portals

PL_DELETE = "DELETE FROM public.things WHERE id > public.r14_pl(4)"
PL_FLOOR = "CREATE OR REPLACE FUNCTION public.r14_pl(bigint) RETURNS bigint LANGUAGE plpgsql AS 'BEGIN RETURN {}; END'"
#: What comes between the approved Bind and its Execute, by case: (messages, expected answers)
BETWEEN = {
    "a Sync, the function replaced by a Query in the open transaction":
        lambda: m.Sync().encode() + m.Query(PL_FLOOR.format(0)).encode(),
    "the function replaced by Parse/Bind/Execute in the same pipeline, the portal described again":
        lambda: (m.Parse("", PL_FLOOR.format(0)).encode() + m.Bind("", "").encode() + m.Execute("").encode()
                 + m.Describe("P", "p1").encode()),
    "a Sync only (another client may replace the function meanwhile)": lambda: m.Sync().encode(),
}


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_portal_runs_only_in_its_binds_pipeline(approving, server, mode):
    """Found: the checks of an approval (what the statement reaches defined as when it was
    approved, no transaction redefining objects) are made at the Bind, and the portal the Bind
    made was executed whenever the agent chose. In an open transaction, `DELETE FROM things WHERE
    id > r14_pl(4)` bound (approved: row 5; or covered by a grant), a Sync, then `CREATE OR
    REPLACE FUNCTION r14_pl ... RETURN 0` (allowed: this policy lets DDL through), then Execute
    of the portal: the plan fixed at the Bind calls the function by its id and runs its body as it
    is at the Execute: every row deleted, COMMIT. The same in one pipeline without a Sync (the
    function replaced by the extended protocol, the portal described again). Now a portal bound
    from an approved statement runs only with nothing between its Bind and its Execute: no Sync,
    Query or other Execute (a suspended one's later Executes too); else 55006, the portal
    forgotten, nothing ran. A control: Bind, Execute and Sync together run."""
    server.conn.execute(PL_FLOOR.format("$1"))
    try:
        for case, between in [*BETWEEN.items(), ("control: nothing between", None)]:
            _fresh(approving, server)
            server.conn.execute(PL_FLOOR.format("$1"))
            approving.call(approving.app.catalog.invalidate, "round 14: the function as it was")
            approving.call(approving.app.catalog.fresh)
            agent = Agent(approving, GROUP[mode], "extended")
            try:
                if mode == "retry":
                    assert errors(agent.run(PL_DELETE)), case
                    api(approving).approve(_pending(approving)["id"], "row 5, fine")
                assert not errors(agent.run("BEGIN")), case
                bound = m.Parse("", PL_DELETE).encode() + m.Bind("p1", "").encode()
                tail = m.Execute("p1").encode() + m.Sync().encode()
                agent.rc.send(bound + (between() if between is not None else b"") + tail)
                if mode == "hold":
                    api(approving).approve(_pending(approving)["id"], "row 5, fine")
                answer = agent.rc.until_ready()
                while not isinstance(answer[-1], m.ReadyForQuery) or len(
                        [x for x in answer if isinstance(x, m.ReadyForQuery)]) < answer_count(between):
                    answer += agent.rc.until_ready()
                assert not errors(agent.run("COMMIT")), case
            finally:
                agent.close()
            if between is None:
                assert not errors(answer), (case, mode, answer)
                assert _count(server) == 4, (case, mode)
            else:
                assert errors(answer) and errors(answer)[-1].fields[2] == ("C", "55006"), (case, mode, answer)
                assert _count(server) == 5, (case, mode)
    finally:
        server.conn.execute("DROP FUNCTION IF EXISTS public.r14_pl(bigint)")


def answer_count(between) -> int:
    """How many ReadyForQuery the messages sent bring: one for the final Sync, one for each Sync
    and Query between."""
    if between is None:
        return 1
    sent = between()
    return 1 + sum(1 for frame in _frames(sent) if frame[:1] in (b"S", b"Q"))


def _frames(data: bytes):
    import struct

    i = 0
    while i < len(data):
        (length,) = struct.unpack_from("!i", data, i + 1)
        yield data[i:i + 1 + length]
        i += 1 + length


# ---------------------------------------------------------------------- what an approver reads

def test_the_inbox_points_out_a_line_no_browser_breaks(inbox):
    """Found: `DELETE FROM things`, a line end, then `WHERE id = 1 /*`, 3,000 dashes, `*/OR/**/true`:
    a browser wraps a line at blanks only, so the page showed `WHERE id = 1 /*-----` running off
    to the right (a scroll bar its only sign), `OR true` out of sight, and the formatted form,
    which shows `WHERE id = 1 OR true`, folded since the text had a line end. Now a run of 200
    characters or more without a blank is pointed out above the statement (inbox and `pgwarden
    approvals show`), the formatted form is open, and the page breaks such a run anywhere
    (`overflow-wrap: anywhere`). A control: a statement without such a run gets no note, its
    formatted form folded."""
    from test_approval_inbox import Elements, get, stored

    from pgwarden.approvals_cli import render

    hidden = "DELETE FROM public.things\nWHERE id = 1 /*" + "-" * 3000 + "*/OR/**/true"
    plain = "DELETE FROM public.things\nWHERE id = 1"
    run = len("/*" + "-" * 3000 + "*/OR/**/true")
    for n, (case, sql, noted) in enumerate((("control", plain, False), ("the run", hidden, True))):
        inbox.put(stored(f"r{n}", sql, tables=("public.things",)))  # (the control first: both shown after)
        status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
        assert status == 200, case
        page = Elements(body)
        notes = [t for t in page.text if "characters without a blank in a row" in t]
        assert notes == ([f"This statement holds {run} characters without a blank in a row: read it to "
                          "its end (the formatted form below shows it without comments)."] if noted else []), (case, notes)
        assert any(t == "details" and "open" in a for t, a in page.elements) is noted, (case, page.elements)
        if noted:
            assert any("OR TRUE" in t and "id = 1" in t for t in page.text), case  # the formatted form
        shown = render({"id": f"r{n}", "state": "pending", "subject": "a", "groups": [], "session": "s", "created": 0.0,
                        "expires": 1.0, "mode": "hold", "approvals_needed": 1, "sql": sql}, 0.0)
        assert ("characters without a blank in a row" in shown) is noted, case
        if noted:
            assert shown.index("characters without a blank in a row") < shown.index("DELETE FROM"), case
    css = get(inbox.base + "inbox.css")[2]
    assert "overflow-wrap: anywhere" in css.split("pre.sql {", 1)[1].split("}", 1)[0]
