# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Red team, round thirteen: approvals, recording, MCP and the wire's edges.

One pgwarden for the module (two approve rules: retry for the group ai-agents, hold for the
group holders); each case checks the tables over a direct connection afterwards.
"""

from __future__ import annotations

import select

import psycopg
import pytest
from test_approvals import api
from test_hostile import DB, Agent, errors, hostile_db, server  # noqa: F401

from pgwarden.testing.waiting import wait_until
from pgwarden.wire import messages as m

POLICIES = [
    {"name": "agents", "when": {"groups": ["ai-agents"]}, "rules": [
        {"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry"}, "reason": "deletes need a human"},
    ]},
    {"name": "holders", "when": {"groups": ["holders"]}, "rules": [
        {"name": "deletes", "approve": {"statements": ["delete"], "mode": "hold"}, "reason": "deletes need a human"},
    ]},
]
APPROVALS = {"approver_groups": ["dba"], "timeout_s": 30, "preview": False}
#: The change check far apart: another client's committed DDL stays unseen by it during a test
#: (by default it is seen within about two seconds: the same gap, narrower)
CATALOG = {"check_s": 600}
GROUP = {"retry": "ai-agents", "hold": "holders"}


@pytest.fixture(scope="module")
def approving(hostile_db, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """One pgwarden for the module with the two approve rules, its admin port open."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    workdir = tmp_path_factory.mktemp("round13")
    doc = base_config(pg_server, signing_keys, workdir, policies=POLICIES, upstream={"database": DB},
                      approvals=APPROVALS, catalog=CATALOG)
    with module_pgwarden(doc, signing_keys, reactor_thread, admin=True) as rp:
        rp.workdir, rp.doc = workdir, doc
        yield rp


def _count(server, table="public.things"):
    return server.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _fresh(running, server):
    """The tables as the hostile set-up makes them, the objects of these tests (re)made, no
    request pending, the catalog read again."""
    server.reset()
    for r in api(running).pending():
        api(running).deny(r["id"], "clean up")
    shown = server.conn.execute("SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE c.oid = "
                                "to_regclass('public.r13_ids')").fetchone()
    if shown is None or shown[0].split() != ["SELECT", "1", "AS", "id;"]:  # (replaced by the case before)
        server.conn.execute("CREATE OR REPLACE VIEW public.r13_ids AS SELECT 1 AS id")
        running.call(running.app.catalog.invalidate, "round 13 set-up")
        running.call(running.app.catalog.fresh)


VIEW_DELETE = "DELETE FROM public.things WHERE id IN (SELECT id FROM public.r13_ids)"
REPLACE_VIEW = "CREATE OR REPLACE VIEW public.r13_ids AS SELECT id FROM public.things"
#: A table whose rows' insertion replaces the view (its trigger's function does)
TRIGGER_SETUP = (
    "CREATE TABLE IF NOT EXISTS public.r13_log (x int)",
    "CREATE OR REPLACE FUNCTION public.r13_widen() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN CREATE OR REPLACE VIEW public.r13_ids AS SELECT id FROM public.things; RETURN NEW; END $$",
    "CREATE OR REPLACE TRIGGER r13_widen AFTER INSERT ON public.r13_log FOR EACH ROW EXECUTE FUNCTION public.r13_widen()",
)
#: What the agent's own transaction runs before the approved DELETE, by case
OWN_REDEFINITIONS = {"the view replaced": REPLACE_VIEW,
                     "a row inserted whose trigger replaces the view": "INSERT INTO public.r13_log VALUES (1)"}


def _pending(running):
    return wait_until(10, api(running).pending, "a pending request", until=lambda rs: len(rs) == 1)[0]


def _answer_or_commit(agent, other, server):
    """The approved statement's answer; if it waits for a lock (the other transaction's) instead,
    ``other`` commits first (what happened before the fix: the statement then ran)."""
    wait_until(10, lambda: bool(select.select([agent.rc.sock], [], [], 0)[0]) or server.conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()[0] > 0, "an answer or a statement waiting for a lock")
    if not select.select([agent.rc.sock], [], [], 0)[0]:
        other.commit()
    return agent.rc.until_ready()


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_statement_does_not_run_after_its_own_transaction_redefined_what_it_reads(
        approving, server, mode):
    """Found: the checks of round twelve compare what a statement reaches as the catalog shows it,
    which is what was committed, and look for open redefinitions in the other sessions only. An
    agent's `BEGIN; CREATE OR REPLACE VIEW ids AS SELECT id FROM things` then, in the same
    transaction, `DELETE ... WHERE id IN (SELECT id FROM ids)` (the view committed holds one id):
    in hold mode the person read the DELETE and approved it (its preview had timed out on the
    view's lock), in retry mode a grant approved before covered it; either way the DELETE ran on
    the session's own new view and deleted every row (`DELETE 5`), then COMMIT. The same with the
    view replaced by the trigger of a row the transaction inserted. Now an approved statement does
    not run while its own session's transaction has redefined objects (55006): nothing ran."""
    for sql in TRIGGER_SETUP:
        server.conn.execute(sql)
    try:
        for case, redefinition in OWN_REDEFINITIONS.items():
            _fresh(approving, server)
            agent = Agent(approving, GROUP[mode], "simple")
            try:
                if mode == "retry":
                    assert errors(agent.run(VIEW_DELETE)), case
                    api(approving).approve(_pending(approving)["id"], "one row, fine")
                assert not errors(agent.run("BEGIN"))
                assert not errors(agent.run(redefinition)), case
                agent.rc.send(m.Query(VIEW_DELETE).encode())
                if mode == "hold":
                    api(approving).approve(_pending(approving)["id"], "one row, fine")
                answer = agent.rc.until_ready()
                agent.run("COMMIT")
            finally:
                agent.close()
            assert errors(answer), (case, answer)
            assert errors(answer)[0].fields[2] == ("C", "55006"), (case, answer)
            assert _count(server) == 5, case
    finally:
        server.conn.execute("DROP TABLE IF EXISTS public.r13_log; DROP FUNCTION IF EXISTS public.r13_widen()")


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_control_an_approved_statement_runs_after_its_own_transaction_wrote_rows(approving, server, mode):
    _fresh(approving, server)
    agent = Agent(approving, GROUP[mode], "simple")
    try:
        if mode == "retry":
            assert errors(agent.run(VIEW_DELETE))
            api(approving).approve(_pending(approving)["id"], "one row, fine")
        assert not errors(agent.run("BEGIN"))
        assert not errors(agent.run("UPDATE public.things SET n = n + 1 WHERE id = 2"))
        agent.rc.send(m.Query(VIEW_DELETE).encode())
        if mode == "hold":
            api(approving).approve(_pending(approving)["id"], "one row, fine")
        answer = agent.rc.until_ready()
        assert not errors(agent.run("COMMIT"))
    finally:
        agent.close()
    assert not errors(answer), (mode, answer)
    assert _count(server) == 4, mode


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_statement_does_not_run_after_another_clients_redefinition_pgwarden_has_not_read(
        approving, server, mode):
    """Found: what a statement reaches was compared on the catalog as pgwarden had last read it.
    Another client's DDL (the agent's session through a second pgwarden replica, or straight to
    the database) is read by the change check within `catalog.check_s` (two seconds by default)
    plus a load: the agent replaced the view through the other replica and at once sent the
    approved DELETE (retry: covered by the grant, whose key was computed on the catalog read
    before; hold: the approval's check read the same stale catalog): every row deleted. Now the
    database is asked, at the approved statement's turn, whether its catalog changed since the
    last load (read again first if so), and the definitions are compared on what it says."""
    _fresh(approving, server)
    agent = Agent(approving, GROUP[mode], "simple")
    try:
        if mode == "retry":
            assert errors(agent.run(VIEW_DELETE))
            api(approving).approve(_pending(approving)["id"], "one row, fine")
            server.conn.execute(REPLACE_VIEW)  # (through the other replica, or straight)
            answer = agent.run(VIEW_DELETE)
        else:
            agent.rc.send(m.Query(VIEW_DELETE).encode())
            request = _pending(approving)
            server.conn.execute(REPLACE_VIEW)
            api(approving).approve(request["id"], "one row, fine")
            answer = agent.rc.until_ready()
    finally:
        agent.close()
    assert errors(answer), (mode, answer)
    assert _count(server) == 5, mode


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_an_approved_statement_does_not_run_while_another_clients_open_transaction_redefines(
        approving, server, pg_server, mode):
    """Found (round twelve's open lead): the check for open redefinitions looked at the sessions
    of this pgwarden only. Another replica's session (here: a client straight to the database)
    ran `BEGIN; CREATE OR REPLACE VIEW ...` and kept it open; the approved DELETE waited for the
    view's lock and ran on the new definition once that transaction committed: every row. Now
    the database is asked (`queries.OPEN_REDEFINITIONS`: another backend's open transaction that
    has rewritten a catalog row of a view, function, trigger, rule, policy, default, ... or holds
    a relation in SHARE ROW EXCLUSIVE / ACCESS EXCLUSIVE mode): 55006, nothing ran."""
    _fresh(approving, server)
    other = psycopg.connect(pg_server.dsn(database=DB))
    agent = Agent(approving, GROUP[mode], "simple")
    try:
        if mode == "retry":
            assert errors(agent.run(VIEW_DELETE))
            api(approving).approve(_pending(approving)["id"], "one row, fine")
            other.execute(REPLACE_VIEW)
            agent.rc.send(m.Query(VIEW_DELETE).encode())
        else:
            agent.rc.send(m.Query(VIEW_DELETE).encode())
            request = _pending(approving)
            other.execute(REPLACE_VIEW)
            api(approving).approve(request["id"], "one row, fine")
        answer = _answer_or_commit(agent, other, server)
        other.commit()
    finally:
        agent.close()
        other.close()
    assert errors(answer), (mode, answer)
    assert errors(answer)[0].fields[2] == ("C", "55006"), (mode, answer)
    assert _count(server) == 5, mode


@pytest.mark.parametrize("mode", ["hold", "retry"])
def test_control_an_approved_statement_runs_beside_another_clients_writes_and_unrelated_ddl(
        approving, server, pg_server, mode):
    _fresh(approving, server)
    server.conn.execute("DROP TABLE IF EXISTS public.r13_other")
    other = psycopg.connect(pg_server.dsn(database=DB))
    agent = Agent(approving, GROUP[mode], "simple")
    try:
        def between():
            server.conn.execute("CREATE TABLE public.r13_other (x int)")  # committed, unseen, unrelated
            other.execute("CREATE TEMPORARY TABLE r13_scratch (x int)")  # open: a table only it sees
            other.execute("UPDATE public.things SET n = n + 1 WHERE id = 5")  # open: rows only

        if mode == "retry":
            assert errors(agent.run(VIEW_DELETE))
            api(approving).approve(_pending(approving)["id"], "one row, fine")
            between()
            answer = agent.run(VIEW_DELETE)
        else:
            agent.rc.send(m.Query(VIEW_DELETE).encode())
            request = _pending(approving)
            between()
            api(approving).approve(request["id"], "one row, fine")
            answer = agent.rc.until_ready()
        other.commit()
    finally:
        agent.close()
        other.close()
        server.conn.execute("DROP TABLE IF EXISTS public.r13_other")
    assert not errors(answer), (mode, answer)
    assert _count(server) == 4, mode


# ---------------------------------------------------------------------- grants after a reload

def _reload(running, **approvals):
    """The module's config again, ``approvals`` changed (none: as it started)."""
    from pgwarden.config import _CONVERTER, Config

    doc = {**running.doc, "approvals": {**running.doc["approvals"], **approvals}}
    assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))


def _backdate(running, request_id, seconds):
    """The approval of ``request_id`` as if given ``seconds`` earlier (its window as long)."""
    import attrs

    store = running.app.plugins.pm.get_plugin("approve").store

    def move():
        r = store._requests[request_id]
        store._requests[request_id] = attrs.evolve(r, closed_at=r.closed_at - seconds,
                                                   grant_until=r.grant_until - seconds)

    running.call(move)


#: (what the reload changes, whether the window grant still covers the DELETE after it)
RELOADS = {
    "nothing": ({}, True),
    "the approver's group is no approver group any more": ({"approver_groups": ["other-dba"]}, False),
    "grants are at most 5 minutes now (approved 10 minutes ago, for 60)": ({"max_grant_minutes": 5}, False),
    "grants are at most 15 minutes now (approved 10 minutes ago, for 60)": ({"max_grant_minutes": 15}, True),
}


def test_a_window_grant_follows_a_reload_of_the_approvals_section(approving, server):
    """Found (round twelve's open lead): a retry grant's window went on as it was given whatever
    the `approvals:` section said after a reload: a 60-minute window approved 10 minutes before a
    reload to `max_grant_minutes: 5` still let the DELETE through, as did a grant given by a
    person whose group a reload took out of `approver_groups` (an approver whose right was
    withdrawn). Now a grant covers only while enough of its approvers are approvers under the
    running section, and only for `max_grant_minutes` after the approval as the section says now.
    Each case: the window approved, backdated ten minutes in the store, the section reloaded."""
    try:
        for k, (case, (change, covered)) in enumerate(RELOADS.items(), 1):
            _fresh(approving, server)
            delete = f"DELETE FROM public.things WHERE id = {k}"  # (each case a statement of its own)
            agent = Agent(approving, "ai-agents", "simple")
            try:
                assert errors(agent.run(delete)), case
                request = _pending(approving)
                api(approving).approve(request["id"], "ok", window_minutes=60)
                _backdate(approving, request["id"], 600)
                _reload(approving, **change)
                answer = agent.run(delete)
            finally:
                agent.close()
                _reload(approving)
            assert bool(errors(answer)) is not covered, (case, answer)
            assert _count(server) == (4 if covered else 5), case
    finally:
        _reload(approving)


# ---------------------------------------------------------------------- what an approver reads

def test_the_inbox_says_a_parameter_is_cut_and_how_much_runs(approving, server):
    """Found (round twelve's open lead): a parameter longer than 2,048 bytes was shown cut, with a
    "…" at its end and nothing else: the same as a short value that ends with "…" itself. `DELETE
    FROM things WHERE id = ANY ($1::int[])` with `$1` = `{1`, 3,000 spaces, `,2,3,4,5}` showed
    `{1` and blanks (the generic plan's preview knows no values): a DELETE of row 1, to the eye;
    every row, as it runs. Now each request keeps the size of each value (`parameter_sizes`), and
    the inbox and `pgwarden approvals show` say under a cut one how much of it is shown. A value
    that holds "…" itself and is shown whole gets no such note."""
    from test_approval_inbox import Elements, get

    from pgwarden.approvals_cli import render

    _fresh(approving, server)
    long = "{1" + " " * 3000 + ",2,3,4,5}"
    agent = Agent(approving, "ai-agents", "extended")
    try:
        for value in (long, "{1} …"):
            agent.rc.send(m.Parse("", "DELETE FROM public.things WHERE id = ANY ($1::int[])").encode()
                          + m.Bind("", "", (), (value.encode(),), ()).encode() + m.Execute("").encode()
                          + m.Sync().encode())
            assert errors(agent.rc.until_ready())  # a request, nothing ran
    finally:
        agent.close()
    requests = wait_until(10, api(approving).pending, "two requests", until=lambda rs: len(rs) == 2)
    cut, whole = sorted(requests, key=lambda r: -len(r["parameters"][0]))
    assert cut["parameter_sizes"] == [len(long)] and whole["parameter_sizes"] == [len("{1} …".encode())], requests
    status, _h, body = get(f"http://127.0.0.1:{approving.admin}/approvals/inbox/",
                           Authorization="Bearer " + approving.token("ann", ["dba"]))
    assert status == 200
    notes = [t for t in Elements(body).text if t.startswith("cut: ")]
    assert notes == [f"cut: the first 2,048 of {len(long):,} bytes are shown; the statement runs with the whole "
                     "value"], notes
    assert f"$1 cut: the first 2,048 of {len(long):,} bytes" in render(cut, 0.0)
    assert "cut:" not in render(whole, 0.0)
    for r in requests:
        api(approving).deny(r["id"], "no")
    assert _count(server) == 5


# ---------------------------------------------------------------------- records

def test_a_session_that_ends_with_a_statement_in_flight_says_so(approving, server):
    """Found: a client sent `SELECT pg_sleep(0.3); UPDATE things SET n = n + 100` and closed its
    socket at once. The server ran the statement to its end (a backend notices a closed socket
    only when it writes) and the UPDATE committed; the records held its `statement` record, no
    `result`, and a `session_end` with `"reason": "client disconnected"` and `"rows": 0`: nothing
    told an auditor that the statement had been forwarded and may have written. Now the session's
    end says that statements were in flight and may have run without a result record. (A
    control: a session that closes after its answers came back says "client disconnected".)"""
    import json

    from pgwarden.proxy.client import IN_FLIGHT

    _fresh(approving, server)
    path = approving.workdir / "records.jsonl"

    def session_end_of(sql):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        (session,) = {r["session"] for r in records if r.get("sql") == sql}
        ends = [r for r in records if r["session"] == session and r["type"] == "session_end"]
        return ends[0] if ends else None

    update = "SELECT pg_sleep(0.3); UPDATE public.things SET n = n + 100 /* r13 in flight */"
    agent = Agent(approving, "ai-agents", "simple")
    agent.rc.send(m.Query(update).encode())
    wait_until(10, lambda: "r13 in flight" in path.read_text(), "the statement's record")
    agent.close()  # before its answer
    wait_until(10, lambda: _sum(server) == 515, "the UPDATE committed on the server")
    end = wait_until(10, lambda: session_end_of(update), "the session's end", until=lambda e: e is not None)
    assert end["reason"] == "client disconnected" + IN_FLIGHT, end

    answered = "UPDATE public.things SET n = n + 1 /* r13 answered */"
    agent = Agent(approving, "ai-agents", "simple")
    assert not errors(agent.run(answered))
    agent.close()
    end = wait_until(10, lambda: session_end_of(answered), "the session's end", until=lambda e: e is not None)
    assert end["reason"] == "client disconnected", end


def _sum(server):
    return server.conn.execute("SELECT sum(n) FROM public.things").fetchone()[0]

