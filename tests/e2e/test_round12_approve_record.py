# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Red team, round twelve: approvals, recording and MCP.

Each test checks the tables over a direct connection afterwards.
"""

from __future__ import annotations

import pytest
from test_approval_inbox import Elements, get, inbox, stored  # noqa: F401
from test_approvals import api
from test_hostile import DB, Agent, errors, hostile_db, server  # noqa: F401

from pgwarden.wire import messages as m

POLICY = [{"name": "p", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry"}, "reason": "deletes need a human"},
]}]


def _approvals_pgwarden(make_pgwarden, server, policies):
    """A pgwarden with ``policies`` and approvals by the group dba, its admin port open; the
    objects of these tests dropped before and after."""
    server.reset()
    _drop(server)
    running = make_pgwarden(policies=policies, upstream={"database": DB},
                            approvals={"approver_groups": ["dba"], "timeout_s": 30})
    running.admin = running.call(running.app.listen_admin).getHost().port
    yield running
    _drop(server)


@pytest.fixture
def approving(make_pgwarden, hostile_db, server):
    yield from _approvals_pgwarden(make_pgwarden, server, POLICY)


def _drop(server):
    server.conn.execute("DROP VIEW IF EXISTS public.r12_ids; DROP FUNCTION IF EXISTS public.r12_pick(); "
                        "DROP TABLE IF EXISTS public.r12_other")


def _count(server, table="public.things"):
    return server.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _approve_pending(running, **grant):
    (request,) = api(running).pending()
    api(running).approve(request["id"], "ok", **grant)
    return request


def _setup_view_and_function(agent):
    """The agent makes them (plain DDL, which the policy lets through)."""
    for sql in ("CREATE OR REPLACE VIEW public.r12_ids AS SELECT 1 AS id",
                "CREATE OR REPLACE FUNCTION public.r12_pick() RETURNS int[] LANGUAGE sql AS 'SELECT ARRAY[1]'"):
        answer = agent.run(sql)
        assert not errors(answer), answer


#: (what the agent replaces, the statement approved before and retried after)
REPLACED = {
    "view": ("CREATE OR REPLACE VIEW public.r12_ids AS SELECT id FROM public.things",
             "DELETE FROM public.things WHERE id IN (SELECT id FROM public.r12_ids)"),
    "function": ("CREATE OR REPLACE FUNCTION public.r12_pick() RETURNS int[] LANGUAGE sql "
                 "AS 'SELECT ARRAY[1, 2, 3, 4, 5]'",
                 "DELETE FROM public.things WHERE id = ANY (public.r12_pick())"),
}


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("what", sorted(REPLACED))
def test_a_grant_does_not_cover_what_a_replaced_view_or_function_does_now(approving, server, protocol, what):
    """Found: a retry grant was bound to the statement's text, parameters, search_path and what
    pgwarden's analysis said it does (kinds, tables, WHERE or not), but not to the definitions of
    the views and functions it runs. `DELETE ... WHERE id IN (SELECT id FROM r12_ids)` approved
    while the view held one id (the preview said one row) deleted every row once the agent had
    replaced the view (plain DDL, which the policy lets through): the same text, the same facts.
    Now the key binds the definitions the statement reaches (`grant_key.definitions`): a
    replaced one makes the retry a request of its own."""
    replace, statement = REPLACED[what]
    agent = Agent(approving, "ai-agents", protocol)
    try:
        _setup_view_and_function(agent)
        first = agent.run(statement)
        assert errors(first), first  # a request
        _approve_pending(approving)
        assert not errors(agent.run(replace))
        answer = agent.run(statement)
    finally:
        agent.close()
    assert errors(answer), answer
    assert _count(server) == 5


@pytest.mark.parametrize("what", sorted(REPLACED))
def test_control_a_grant_covers_the_statement_while_its_definitions_stay(approving, server, what):
    _replace, statement = REPLACED[what]
    agent = Agent(approving, "ai-agents", "simple")
    try:
        _setup_view_and_function(agent)
        first = agent.run(statement)
        assert errors(first), first
        _approve_pending(approving)
        assert not errors(agent.run("CREATE TABLE IF NOT EXISTS public.r12_other (x int)"))  # unrelated DDL
        answer = agent.run(statement)
    finally:
        agent.close()
    assert not errors(answer), answer
    assert _count(server) == 4


FLOAT4, INT4 = 700, 23
ONE_AS_FLOAT4 = b"\x3f\x80\x00\x00"  # 1.0 as a float4; as an int4 it is 1065353216


def _typed_delete(agent, param_type):
    """`DELETE ... WHERE n < $1` with $1 declared ``param_type`` and bound to the same four bytes."""
    agent.rc.send(m.Parse("", "DELETE FROM public.things WHERE n < $1", (param_type,)).encode()
                  + m.Bind("", "", (1,), (ONE_AS_FLOAT4,), ()).encode() + m.Describe("P", "").encode()
                  + m.Execute("").encode() + m.Sync().encode())
    return agent.rc.until_ready()


def test_a_grant_does_not_cover_the_same_bytes_bound_to_another_declared_type(approving, server):
    """Found: the exact key of a retry grant was the text and the Bind's bytes (formats and
    values), not the parameter types the Parse declared. `DELETE FROM things WHERE n < $1` with
    $1 declared float4 and bound to 0x3f800000 (1.0: no row; the inbox shows the value as
    `\\x3f800000`) was approved; the same text Parsed with $1 declared int4 and bound to the same
    four bytes (1065353216: every row) was covered by the grant and deleted every row. Now the
    declared types are part of the exact key (`approvals.exact_key`)."""
    agent = Agent(approving, "ai-agents", "extended")
    try:
        first = _typed_delete(agent, FLOAT4)
        assert errors(first), first
        _approve_pending(approving)
        answer = _typed_delete(agent, INT4)
    finally:
        agent.close()
    assert errors(answer), answer
    assert _count(server) == 5


def test_control_a_grant_covers_the_same_bytes_of_the_same_declared_type(approving, server):
    agent = Agent(approving, "ai-agents", "extended")
    try:
        assert errors(_typed_delete(agent, FLOAT4))
        _approve_pending(approving)
        answer = _typed_delete(agent, FLOAT4)
    finally:
        agent.close()
    assert not errors(answer), answer
    assert any(isinstance(x, m.CommandComplete) and x.tag == "DELETE 0" for x in answer), answer
    assert _count(server) == 5


HOLD_POLICY = [{"name": "p", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "deletes", "approve": {"statements": ["delete"], "mode": "hold"}, "reason": "deletes need a human"},
]}]


@pytest.fixture
def holding(make_pgwarden, hostile_db, server):
    yield from _approvals_pgwarden(make_pgwarden, server, HOLD_POLICY)


def _wait_pending(running):
    from pgwarden.testing.waiting import wait_until

    return wait_until(10, api(running).pending, "a pending request", until=lambda rs: len(rs) == 1)[0]


@pytest.mark.parametrize("what", sorted(REPLACED))
def test_a_held_statement_does_not_run_after_what_it_reaches_was_replaced(holding, server, what):
    """Found: in hold mode the statement waits on the wire while a person reads it and its
    preview; another session of the agent replaced the view (or function) the statement reads
    meanwhile, and once approved the statement deleted every row where the preview had said one.
    Now an approved statement is run only if it still reaches the definitions it reached when it
    was held (its grant key, read again): else it is refused and a new request must be made."""
    replace, statement = REPLACED[what]
    agent, other = Agent(holding, "ai-agents", "simple"), Agent(holding, "ai-agents", "simple")
    try:
        _setup_view_and_function(other)
        agent.rc.send(m.Query(statement).encode())
        request = _wait_pending(holding)
        assert not errors(other.run(replace))
        api(holding).approve(request["id"], "one row, fine")
        answer = agent.rc.until_ready()
    finally:
        agent.close()
        other.close()
    assert errors(answer), answer
    assert _count(server) == 5


def test_control_a_held_statement_runs_once_approved(holding, server):
    agent, other = Agent(holding, "ai-agents", "simple"), Agent(holding, "ai-agents", "simple")
    try:
        _setup_view_and_function(other)
        agent.rc.send(m.Query(REPLACED["view"][1]).encode())
        request = _wait_pending(holding)
        assert not errors(other.run("CREATE TABLE IF NOT EXISTS public.r12_other (x int)"))
        api(holding).approve(request["id"], "one row, fine")
        answer = agent.rc.until_ready()
    finally:
        agent.close()
        other.close()
    assert not errors(answer), answer
    assert _count(server) == 4


def _reload(running, pg_server, signing_keys, tmp_path, policies):
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    doc = base_config(pg_server, signing_keys, tmp_path, policies=policies, upstream={"database": DB},
                      approvals={"approver_groups": ["dba"], "timeout_s": 30})
    assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))


TWO_APPROVERS = [{"name": "p", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry", "approvers": 2},
     "reason": "deletes need two people now"},
]}]


def test_a_grant_of_one_approver_does_not_cover_a_statement_that_now_needs_two(approving, server, pg_server,
                                                                               signing_keys, tmp_path):
    """Found: a retry grant covered the statement for its subject whatever the policies said when
    it came again: approved by one person with a 30-minute window, it kept running after a reload
    made the rule need two approvers (`approvers: 2`), as it did for the same subject under
    another policy (another group in its token) that needs two. Now a grant covers a statement
    only when its request had as many approvers as the rule that holds the statement now needs."""
    agent = Agent(approving, "ai-agents", "simple")
    try:
        assert errors(agent.run("DELETE FROM public.things WHERE id = 1"))
        _approve_pending(approving, window_minutes=30)
        assert not errors(agent.run("DELETE FROM public.things WHERE id = 1"))  # covered, as approved
        _reload(approving, pg_server, signing_keys, tmp_path, TWO_APPROVERS)
        answer = agent.run("DELETE FROM public.things WHERE id = 1")
        (again,) = api(approving).pending()  # a request of its own, for two approvers
    finally:
        agent.close()
    assert errors(answer), answer
    assert again["approvals_needed"] == 2, again


def test_control_a_grant_still_covers_after_a_reload_that_needs_no_more(approving, server, pg_server,
                                                                        signing_keys, tmp_path):
    agent = Agent(approving, "ai-agents", "simple")
    try:
        assert errors(agent.run("DELETE FROM public.things WHERE id = 1"))
        _approve_pending(approving, window_minutes=30)
        _reload(approving, pg_server, signing_keys, tmp_path, POLICY)
        answer = agent.run("DELETE FROM public.things WHERE id = 1")
    finally:
        agent.close()
    assert not errors(answer), answer
    assert _count(server) == 4


# ---------------------------------------------------------------------- what an approver reads

#: Reads "DELETE FROM things t WHERE id IS NULL" (no row); the server reads one identifier,
#: "t<NBSP>where<NBSP>id<NBSP>is<NBSP>null", after the table: an alias, and no WHERE (every row).
#: PostgreSQL's lexer takes every non-ASCII character for a letter of an identifier, the no-break
#: space included.
NBSP_DELETE = "DELETE FROM public.things t\u00a0WHERE\u00a0id\u00a0IS\u00a0NULL"
#: Shown in a terminal, the line comment's escape sequences move to the start of the line, erase
#: it and write another statement in its place; the server reads `DELETE FROM public.things`.
ESCAPED_DELETE = ("DELETE FROM public.things --\x1b[1G\x1b[2K  sql       "
                  "DELETE FROM public.things WHERE id = 1")


#: Reads "DELETE ... WHERE id = 1"; `іd` is a column of its own (a Cyrillic "і"), which the agent
#: added (plain DDL) and set to 1 in every row.
HOMOGLYPH_DELETE = "DELETE FROM public.things WHERE \u0456d = 1"
HOMOGLYPH_SETUP = ("ALTER TABLE public.things ADD COLUMN \u0456d int", "UPDATE public.things SET \u0456d = 1")


def test_the_server_reads_the_look_alike_statements_as_deleting_every_row(server):
    """What the statements below do on the server (nothing kept: rolled back)."""
    server.reset()
    for sql in (NBSP_DELETE, ESCAPED_DELETE, HOMOGLYPH_DELETE):
        with server.conn.transaction(force_rollback=True):
            if sql is HOMOGLYPH_DELETE:
                for setup in HOMOGLYPH_SETUP:
                    server.conn.execute(setup)
            assert server.conn.execute(sql).rowcount == 5, sql
    assert _count(server) == 5


def test_the_inbox_names_characters_outside_ascii(inbox):
    """Found: a character outside ASCII that looks like an ASCII one was shown as itself, and
    nothing said it was there: `DELETE FROM things WHERE іd = 1` (a Cyrillic "і": a column the
    agent had added and set to 1 in every row) read as the DELETE of row 1. Now each such
    character is highlighted and titled with its code point and name, and a note under the
    statement names them (`pgwarden.marks.foreign`); the terminal lists them too."""
    inbox.put(stored("r1", HOMOGLYPH_DELETE, tables=("public.things",)))
    status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    page = Elements(body)
    named = [a.get("title") for t, a in page.elements if t == "span" and a.get("class") == "foreign"]
    assert "U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I" in named, named
    assert any(a.get("class") == "foreign-note" for t, a in page.elements if t == "p")
    from pgwarden.approvals_cli import render

    shown = render({"id": "r1", "state": "pending", "subject": "a", "groups": [], "session": "s", "created": 0.0,
                    "expires": 1.0, "mode": "hold", "approvals_needed": 1, "sql": HOMOGLYPH_DELETE}, 0.0)
    assert "non-ASCII \u0456 U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I" in shown, shown


def test_the_inbox_marks_spaces_that_the_server_reads_as_letters(inbox):
    """Found: the inbox marked control, format and separator characters (Trojan Source), not the
    other space characters (Unicode's Zs: the no-break space, the en and em spaces, the ideographic
    space, ...) nor letters drawn blank (the Hangul fillers): a browser draws each as a space,
    PostgreSQL's lexer takes each for a letter of an identifier. `DELETE FROM things
    t<NBSP>WHERE<NBSP>id<NBSP>IS<NBSP>NULL` read as a DELETE of no row, and deleted every row (the
    "WHERE" is part of the alias). Now each is a mark naming it, as the other hidden characters."""
    inbox.put(stored("r1", NBSP_DELETE + " /* \u3164 */", tables=("public.things",)))
    status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    assert "\u00a0" not in body and "\u3164" not in body
    page = Elements(body)
    titles = {a.get("title") for t, a in page.elements if t == "span" and a.get("class") == "invisible"}
    assert {"NO-BREAK SPACE", "HANGUL FILLER"} <= titles, titles
    assert "t<U+00A0>WHERE<U+00A0>id<U+00A0>IS<U+00A0>NULL" in "".join(page.text)


def test_the_terminal_shows_escape_sequences_as_marks():
    """Found: `pgwarden approvals show` (and `list`) printed the statement as it came, escape
    sequences included: a line comment holding `ESC[1G ESC[2K` and another statement erased the
    line in the approver's terminal and showed `... WHERE id = 1` where the server would run a
    DELETE of every row. Now the CLI shows what the inbox shows: each hidden character (controls,
    format characters, separators, spaces other than U+0020) as a mark naming it."""
    from pgwarden.approvals_cli import render, render_line

    r = {"id": "r1", "state": "pending", "subject": "agent\x1b[2K", "groups": ["ai-agents"], "session": "s1",
         "policy": "p", "rule": "deletes", "reason": "deletes need a human", "created": 0.0, "expires": 60.0,
         "mode": "hold", "approvals_needed": 1, "sql": ESCAPED_DELETE, "parameters": ["a\u202eb", None],
         "decisions": [{"approved": False, "approver": "bob", "reason": "no\x1b[1A"}]}
    for shown in (render(r, 1.0), render_line(r, 1.0), render({**r, "sql": NBSP_DELETE}, 1.0)):
        assert not any(c in shown for c in "\x1b\u202e\u00a0"), repr(shown)
    assert "--<U+001B>[1G<U+001B>[2K" in render(r, 1.0)
    assert "t<U+00A0>WHERE" in render({**r, "sql": NBSP_DELETE}, 1.0)
    assert "a<U+202E>b" in render(r, 1.0)


def test_the_slack_message_shows_the_same_marks():
    """The Slack notification (a courtesy, but people read it) marks them too."""
    import json

    from pgwarden_plugins.approve.notify import slack_payload

    text = json.dumps(slack_payload(stored("r1", NBSP_DELETE + " /* \u202e */"), None), ensure_ascii=False)
    assert "\u00a0" not in text and "\u202e" not in text
    assert "t&lt;U+00A0&gt;WHERE" in text and "&lt;U+202E&gt;" in text


# ---------------------------------------------------------------------- a redefinition not committed yet

REPLACE_VIEW = REPLACED["view"][0]
VIEW_DELETE = REPLACED["view"][1]


def test_a_held_statement_does_not_run_while_another_session_redefines_what_it_reads(holding, server):
    """Found (after the fixes above): the check of what a statement reaches reads the catalog,
    which shows only what was committed. A second session of the agent ran `BEGIN; CREATE OR
    REPLACE VIEW ...` and kept its transaction open; the approved DELETE then waited for the
    view's lock, and once the second session committed it deleted every row through the new
    definition. Now no approved statement runs while another session's open transaction has
    redefined objects: it is refused (55006, nothing ran) and can be sent again later."""
    agent, other = Agent(holding, "ai-agents", "simple"), Agent(holding, "ai-agents", "simple")
    try:
        _setup_view_and_function(other)
        agent.rc.send(m.Query(VIEW_DELETE).encode())
        request = _wait_pending(holding)
        assert not errors(other.run("BEGIN"))
        assert not errors(other.run(REPLACE_VIEW))
        api(holding).approve(request["id"], "one row, fine")
        if _count(server) == 5:  # (before the fix the DELETE waits for the view's lock here)
            other.run("COMMIT")
        answer = agent.rc.until_ready()
        assert not errors(other.run("COMMIT"))
    finally:
        agent.close()
        other.close()
    assert errors(answer), answer
    assert errors(answer)[0].fields[2] == ("C", "55006"), answer
    assert _count(server) == 5


def test_a_grant_is_not_used_while_another_session_redefines_what_it_reads(approving, server):
    agent, other = Agent(approving, "ai-agents", "simple"), Agent(approving, "ai-agents", "simple")
    try:
        _setup_view_and_function(other)
        assert errors(agent.run(VIEW_DELETE))
        _approve_pending(approving, window_minutes=5)
        assert not errors(other.run("BEGIN"))
        assert not errors(other.run(REPLACE_VIEW))
        agent.rc.send(m.Query(VIEW_DELETE).encode())
        other.run("COMMIT")  # (before the fix the DELETE waited for this)
        answer = agent.rc.until_ready()
    finally:
        agent.close()
        other.close()
    assert errors(answer), answer
    assert _count(server) == 5


def test_control_a_grant_is_used_beside_another_sessions_open_transaction_that_redefines_nothing(approving, server):
    agent, other = Agent(approving, "ai-agents", "simple"), Agent(approving, "ai-agents", "simple")
    try:
        _setup_view_and_function(other)
        assert errors(agent.run(VIEW_DELETE))
        _approve_pending(approving)
        assert not errors(other.run("BEGIN"))
        assert not errors(other.run("SELECT count(*) FROM public.things"))
        answer = agent.run(VIEW_DELETE)
        assert not errors(other.run("COMMIT"))
    finally:
        agent.close()
        other.close()
    assert not errors(answer), answer
    assert _count(server) == 4


# ---------------------------------------------------------------------- records

def test_a_result_cut_by_the_executes_row_limit_says_so(make_pgwarden, hostile_db, server, tmp_path):
    """Found: `DELETE FROM things RETURNING id` executed with a row limit of 1 (Execute's
    max_rows), then Sync: the server deleted (and committed) every row at the first Execute, and
    the result record said `"rows": 1` and nothing more, as for a DELETE of one row. Now a result
    that ended with PortalSuspended says `"suspended": true`: its rows are the rows sent, not what
    the statement did."""
    from pgwarden.testing.pytest_plugin import check_records
    from pgwarden.testing.waiting import wait_until

    server.reset()
    running = make_pgwarden(policies=[{"name": "p", "when": {"groups": ["ai-agents"]}, "default": "allow"}],
                            upstream={"database": DB})
    agent = Agent(running, "ai-agents", "extended")
    try:
        agent.rc.send(m.Parse("", "DELETE FROM public.things RETURNING id").encode() + m.Bind("", "").encode()
                      + m.Execute("", 1).encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
    finally:
        agent.close()
    assert any(isinstance(x, m.PortalSuspended) for x in answer), answer
    assert _count(server) == 0
    path = tmp_path / "records.jsonl"
    wait_until(10, path.read_text, "the session's end in the records", until=lambda text: "session_end" in text)
    (result,) = [r for r in check_records([path]) if r["type"] == "result"]
    assert result["rows"] == 1 and result.get("suspended") is True, result


def test_control_a_result_that_completes_is_not_suspended(make_pgwarden, hostile_db, server, tmp_path):
    from pgwarden.testing.pytest_plugin import check_records
    from pgwarden.testing.waiting import wait_until

    server.reset()
    running = make_pgwarden(policies=[{"name": "p", "when": {"groups": ["ai-agents"]}, "default": "allow"}],
                            upstream={"database": DB})
    agent = Agent(running, "ai-agents", "extended")
    try:
        assert not errors(agent.run("DELETE FROM public.things RETURNING id"))
    finally:
        agent.close()
    path = tmp_path / "records.jsonl"
    wait_until(10, path.read_text, "the session's end in the records", until=lambda text: "session_end" in text)
    (result,) = [r for r in check_records([path]) if r["type"] == "result"]
    assert result["rows"] == 5 and "suspended" not in result, result


def test_the_records_read_in_a_terminal_show_escape_sequences_as_marks(make_pgwarden, hostile_db, server, tmp_path):
    """Found: `pgwarden tail` and `pgwarden replay --session` printed what the agent wrote as it
    came: a DELETE of every row whose line comment held `ESC[1G ESC[2K` and another statement
    showed the auditor, in a terminal, `SELECT 1` where the records hold the DELETE. Now both show
    hidden characters as marks (`pgwarden.marks`), as the approvals inbox and CLI do."""
    from pgwarden.records_cli import render_session, summary
    from pgwarden.testing.pytest_plugin import check_records
    from pgwarden.testing.waiting import wait_until

    server.reset()
    running = make_pgwarden(policies=[{"name": "p", "when": {"groups": ["ai-agents"]}, "default": "allow"}],
                            upstream={"database": DB})
    sql = "DELETE FROM public.things --\x1b[1G\x1b[2K" + "SELECT 1"
    agent = Agent(running, "ai-agents", "simple")
    try:
        assert not errors(agent.run(sql))
    finally:
        agent.close()
    assert _count(server) == 0
    path = tmp_path / "records.jsonl"
    wait_until(10, path.read_text, "the session's end in the records", until=lambda text: "session_end" in text)
    records = check_records([path])
    assert any(r.get("sql") == sql for r in records)  # the record holds the statement as it was sent
    shown = render_session(records) + [summary(r)[0] for r in records]
    assert not any("\x1b" in line for line in shown), shown
    assert any("--<U+001B>[1G<U+001B>[2KSELECT 1" in line for line in shown), shown


def test_the_inbox_points_out_a_statement_that_goes_on_far_below(inbox):
    """Found: `DELETE ... WHERE id = 1`, then thousands of blank lines, then `OR true`: the page
    showed the statement as sent, its end far below the first screen, and its formatted form
    (which shows `WHERE id = 1 OR true` on two lines) folded, since the text had line ends. Now
    a run of 200 blank characters or more is pointed out above the statement, and the formatted
    form is open."""
    sql = "DELETE FROM public.things WHERE id = 1" + "\n" * 3000 + "OR true"
    inbox.put(stored("r1", sql, tables=("public.things",)))
    status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    page = Elements(body)
    assert any("3000 blank characters in a row" in t for t in page.text), page.text
    assert any(t == "details" and "open" in a for t, a in page.elements), page.elements
    assert any("OR true" in t and "id = 1" in t for t in page.text)  # the formatted form
    from pgwarden.approvals_cli import render

    shown = render({"id": "r1", "state": "pending", "subject": "a", "groups": [], "session": "s", "created": 0.0,
                    "expires": 1.0, "mode": "hold", "approvals_needed": 1, "sql": sql}, 0.0)
    assert shown.index("3000 blank characters in a row") < shown.index("DELETE FROM"), shown[:400]
