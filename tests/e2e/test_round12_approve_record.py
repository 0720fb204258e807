# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Red team, round twelve: approvals, recording and MCP.

Each test checks the tables over a direct connection afterwards.
"""

from __future__ import annotations

import pytest
from test_approvals import api
from test_hostile import DB, Agent, errors, hostile_db, server  # noqa: F401

POLICY = [{"name": "p", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry"}, "reason": "deletes need a human"},
]}]


@pytest.fixture
def approving(make_pgwarden, hostile_db, server):
    server.reset()
    _drop(server)
    running = make_pgwarden(policies=POLICY, upstream={"database": DB},
                            approvals={"approver_groups": ["dba"], "timeout_s": 30})
    running.admin = running.call(running.app.listen_admin).getHost().port
    yield running
    _drop(server)


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
