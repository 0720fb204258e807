# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Round seven: a retry grant covers what the approved statement meant, not its text wherever it runs.

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
    server.conn.execute("DROP SCHEMA IF EXISTS r7_arch CASCADE; CREATE SCHEMA r7_arch; "
                        "CREATE TABLE r7_arch.things AS SELECT * FROM public.things")
    running = make_pgwarden(policies=POLICY, upstream={"database": DB},
                            approvals={"approver_groups": ["dba"], "timeout_s": 30})
    running.admin = running.call(running.app.listen_admin).getHost().port
    yield running
    server.conn.execute("DROP SCHEMA IF EXISTS r7_arch CASCADE")


def _count(server, table):
    return server.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _approve_pending(running):
    (request,) = api(running).pending()
    api(running).approve(request["id"], "ok")
    return request


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_an_exact_grant_does_not_follow_a_search_path_change(approving, server, protocol):
    agent = Agent(approving, "ai-agents", protocol)
    try:
        assert errors(agent.run("DELETE FROM things WHERE id = 1"))  # a request
        _approve_pending(approving)
        assert not errors(agent.run("SET search_path = r7_arch, public"))
        moved = agent.run("DELETE FROM things WHERE id = 1")  # the same text: r7_arch.things now
        assert errors(moved), moved
        (again,) = api(approving).pending()  # a request of its own, for what it does now
        assert "r7_arch.things" in again["tables"], again
    finally:
        agent.close()
    assert _count(server, "r7_arch.things") == 5
    assert _count(server, "public.things") == 5


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_an_exact_grant_covers_the_text_where_it_was_approved(approving, server, protocol):
    agent = Agent(approving, "ai-agents", protocol)
    try:
        assert not errors(agent.run("SET search_path = r7_arch, public"))
        assert errors(agent.run("DELETE FROM things WHERE id = 1"))
        _approve_pending(approving)
        answer = agent.run("DELETE FROM things WHERE id = 1")
    finally:
        agent.close()
    assert not errors(answer), answer
    assert _count(server, "r7_arch.things") == 4
    assert _count(server, "public.things") == 5


def test_an_exact_grant_of_execute_does_not_cover_another_body(approving, server):
    agent = Agent(approving, "ai-agents", "simple")
    try:
        prepare = "PREPARE p(int) AS DELETE FROM things WHERE id = $1"
        assert errors(agent.run(prepare))  # held itself
        _approve_pending(approving)
        assert not errors(agent.run(prepare))
        assert errors(agent.run("EXECUTE p(1)"))  # judged by p's body: a request
        request = _approve_pending(approving)
        assert "EXECUTE p(1)" in request["sql"]
        assert not errors(agent.run("DEALLOCATE p"))
        again = "PREPARE p(int) AS DELETE FROM things WHERE id >= $1"
        assert errors(agent.run(again))
        _approve_pending(approving)
        assert not errors(agent.run(again))
        answer = agent.run("EXECUTE p(1)")  # the text approved for one row, p another statement now
    finally:
        agent.close()
    assert errors(answer), answer
    assert _count(server, "public.things") == 5


def test_an_exact_grant_of_execute_covers_the_same_body(approving, server):
    agent = Agent(approving, "ai-agents", "simple")
    try:
        prepare = "PREPARE p(int) AS DELETE FROM things WHERE id = $1"
        assert errors(agent.run(prepare))
        _approve_pending(approving)
        assert not errors(agent.run(prepare))
        assert errors(agent.run("EXECUTE p(1)"))
        _approve_pending(approving)
        answer = agent.run("EXECUTE p(1)")
    finally:
        agent.close()
    assert not errors(answer), answer
    assert _count(server, "public.things") == 4


def test_the_preview_reads_names_on_the_sessions_search_path(approving, server):
    agent = Agent(approving, "ai-agents", "simple")
    try:
        assert not errors(agent.run("SET search_path = r7_arch, public"))
        assert errors(agent.run("DELETE FROM things WHERE id = 1"))
        (request,) = api(approving).pending()
    finally:
        agent.close()
    assert request["preview"]["writes"] == ["r7_arch.things"], request["preview"]
