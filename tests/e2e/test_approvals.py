"""Approvals through real clients: a statement held on the wire until a person decides through the API.

Each test starts pgwarden with the built-in ``approve`` plugin (memory store), an approve rule on
writes, and the approvals API on its admin port; the agent runs in a thread of the test while the
test decides as an approver (docs/approvals.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import psycopg
import pytest

from pgwarden import hookimpl
from pgwarden.approvals_cli import ApiClient, ApiError
from pgwarden.testing.pytest_plugin import check_records
from pgwarden.testing.waiting import wait_until

WRITES = {"name": "agents", "default": "allow", "rules": [
    {"name": "writes", "approve": {"statements": ["insert", "update", "delete"]}, "reason": "writes need a human"},
]}


@pytest.fixture
def pool():
    with ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture
def orders(pg_server):
    pg_server.psql("drop table if exists ap_orders; create table ap_orders (id int primary key, note text); "
                   "grant all on ap_orders to public", "appdb")
    return lambda: pg_server.psql("select coalesce(string_agg(id::text || ':' || note, ',' order by id), '') "
                                  "from ap_orders", "appdb")


def start(make_pgwarden, rules=None, plugins=(), **approvals):
    policy = dict(WRITES, rules=rules) if rules is not None else WRITES
    running = make_pgwarden(policies=[policy], plugins=list(plugins),
                            approvals={"approver_groups": ["dba"], "timeout_s": 30, **approvals})
    admin = running.call(running.app.listen_admin).getHost().port
    running.admin = admin
    return running


def api(running, subject="ann", groups=("dba",)) -> ApiClient:
    return ApiClient(f"http://127.0.0.1:{running.admin}/approvals/api", running.token(subject, list(groups)))


def pending_one(client: ApiClient) -> dict:
    return wait_until(10, client.pending, "a pending approval request", until=lambda rs: len(rs) == 1)[0]


def records(tmp_path) -> list[dict]:
    return check_records([tmp_path / "records.jsonl"])


def test_hold_then_approve_runs_the_statement_and_its_result_reaches_the_client(make_pgwarden, orders, pool, tmp_path):
    running = start(make_pgwarden)
    notices = []

    def agent():
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            c.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_hint)))
            return c.execute("insert into ap_orders values (%s, %s) returning id, note", (1, "first")).fetchall()

    done = pool.submit(agent)
    request = pending_one(api(running))
    assert request["sql"] == "insert into ap_orders values ($1, $2) returning id, note"
    assert request["parameters"] == ["\\x0001", "first"] and request["subject"] == "agent-1"  # as recorded: binary int2
    assert request["policy"] == "agents" and request["rule"] == "writes" and request["reason"] == "writes need a human"
    assert request["preview"]["ok"] and request["preview"]["writes"] == ["public.ap_orders"]
    assert request["preview"]["generic"] is True
    assert orders() == ""  # nothing ran yet
    assert notices and notices[0][0] == f"pgwarden: waiting for approval: request {request['id']}"
    assert f"pgwarden approvals approve {request['id']}" in notices[0][1]
    after = api(running).approve(request["id"], "looks fine")
    assert after["state"] == "approved"
    assert done.result(10) == [(1, "first")]
    assert orders() == "1:first"
    states = [(r["state"], r["approver"]) for r in records(tmp_path) if r["type"] == "approval"]
    assert states == [("requested", None), ("approved", "ann")]
    with urllib.request.urlopen(f"http://127.0.0.1:{running.admin}/metrics") as m:
        metrics = m.read().decode()
    assert 'pgwarden_approvals_total{state="approved"} 1.0' in metrics
    assert "pgwarden_approvals_pending 0.0" in metrics


def test_hold_then_deny_refuses_with_the_reason_and_a_reason_is_required(make_pgwarden, orders, pool, tmp_path):
    running = start(make_pgwarden)

    def agent():
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                c.execute("insert into ap_orders values (2, 'second')")
            assert c.execute("select 1").fetchone() == (1,)  # the session goes on
            return excinfo.value.diag

    done = pool.submit(agent)
    request = pending_one(api(running))
    assert request["parameters"] is None  # a simple Query: its values are in its text
    with pytest.raises(ApiError) as no_reason:
        api(running).deny(request["id"], "  ")
    assert no_reason.value.status == 422 and "reason is required" in str(no_reason.value)
    api(running).deny(request["id"], "not on a Friday")
    diag = done.result(10)
    assert diag.message_primary == "pgwarden: approval denied: not on a Friday"
    assert diag.message_detail == f"Request {request['id']} was denied by ann."
    assert orders() == ""
    assert [r["state"] for r in records(tmp_path) if r["type"] == "approval"] == ["requested", "denied"]


def test_a_request_nobody_decides_expires(make_pgwarden, orders, tmp_path):
    running = start(make_pgwarden, timeout_s=0.3)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into ap_orders values (3, 'late')")
        assert excinfo.value.diag.message_primary == "pgwarden: approval expired"
    assert orders() == ""
    ended = api(running).ended()
    assert [r["state"] for r in ended] == ["expired"]
    with pytest.raises(ApiError) as late:
        api(running).approve(ended[0]["id"])
    assert late.value.status == 409
    assert [r["state"] for r in records(tmp_path) if r["type"] == "approval"] == ["requested", "expired"]


def test_a_cancel_while_held_withdraws_the_request(make_pgwarden, orders, pool, tmp_path):
    running = start(make_pgwarden)
    conn = psycopg.connect(running.dsn(), autocommit=True)

    def agent():
        with pytest.raises(psycopg.errors.QueryCanceled) as excinfo:
            conn.execute("insert into ap_orders values (4, 'cancelled')")
        return excinfo.value.diag.message_primary

    done = pool.submit(agent)
    request = pending_one(api(running))
    conn.cancel_safe(timeout=10)  # cancel() holds the GIL in libpq, and this pgwarden runs in this process
    assert done.result(10) == "canceling statement due to user request"
    assert conn.execute("select 2").fetchone() == (2,)
    conn.close()
    assert api(running).show(request["id"])["state"] == "withdrawn"
    with pytest.raises(ApiError) as late:
        api(running).approve(request["id"])
    assert late.value.status == 409
    assert orders() == ""
    assert [r["state"] for r in records(tmp_path) if r["type"] == "approval"] == ["requested", "withdrawn"]


def test_a_disconnect_while_held_withdraws_the_request(make_pgwarden, orders, tmp_path):
    running = start(make_pgwarden)
    psql = subprocess.Popen(["psql", "-X", "-v", "ON_ERROR_STOP=1", running.url(), "-c",
                             "insert into ap_orders values (5, 'gone')"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        request = pending_one(api(running))
    finally:
        psql.kill()
        psql.wait()
    wait_until(10, lambda: api(running).show(request["id"])["state"], "the request withdrawn",
               until=lambda s: s == "withdrawn")
    assert orders() == ""
    approvals = [r for r in records(tmp_path) if r["type"] == "approval"]
    assert [r["state"] for r in approvals] == ["requested", "withdrawn"]
    assert approvals[1]["reason"] == "the session ended"


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_hold_inside_a_transaction_behaves_as_a_server_error_when_denied(make_pgwarden, orders, pool, decision):
    running = start(make_pgwarden)

    def agent():
        with psycopg.connect(running.dsn()) as c:  # a transaction opened by psycopg
            c.execute("select 1")
            try:
                c.execute("insert into ap_orders values (6, 'in a transaction')")
            except psycopg.errors.InsufficientPrivilege:
                with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                    c.execute("select 1")
                c.rollback()
                return "refused"
            c.commit()
            return "committed"

    done = pool.submit(agent)
    request = pending_one(api(running))
    if decision == "approve":
        api(running).approve(request["id"])
        assert done.result(10) == "committed" and orders() == "6:in a transaction"
    else:
        api(running).deny(request["id"], "no")
        assert done.result(10) == "refused" and orders() == ""


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_hold_inside_a_psycopg_pipeline(make_pgwarden, orders, pool, decision):
    running = start(make_pgwarden)

    def agent():
        with psycopg.connect(running.dsn(), autocommit=True) as c:
            try:
                with c.pipeline():
                    first = c.execute("select 'before'")
                    held = c.execute("insert into ap_orders values (%s, %s) returning note", (7, "pipelined"))
                    after = c.execute("select 'after'")
                return first.fetchone(), held.fetchone(), after.fetchone()
            except psycopg.errors.InsufficientPrivilege as e:
                return e.diag.message_primary, c.execute("select 'later'").fetchone()

    done = pool.submit(agent)
    request = pending_one(api(running))
    if decision == "approve":
        api(running).approve(request["id"])
        assert done.result(10) == (("before",), ("pipelined",), ("after",))
        assert orders() == "7:pipelined"
    else:
        api(running).deny(request["id"], "not in a pipeline")
        assert done.result(10) == ("pgwarden: approval denied: not in a pipeline", ("later",))
        assert orders() == ""


def test_each_execution_of_a_prepared_statement_is_approved_with_its_own_parameters(make_pgwarden, orders, pool):
    running = start(make_pgwarden)

    async def agent():
        conn = await asyncpg.connect(running.url())
        try:
            insert = await conn.prepare("insert into ap_orders values ($1, $2)")
            await insert.fetch(8, "one")
            try:
                await insert.fetch(9, "two")
            except asyncpg.exceptions.InsufficientPrivilegeError as e:
                return e.args[0]
            return "ran"
        finally:
            await conn.close()

    import asyncio

    done = pool.submit(asyncio.run, agent())
    client = api(running)
    first = pending_one(client)
    assert first["parameters"] == ["\\x00000008", "\\x6f6e65"]  # as recorded: asyncpg binds in binary
    client.approve(first["id"])
    second = wait_until(10, client.pending, "the second execution's request",
                        until=lambda rs: len(rs) == 1 and rs[0]["id"] != first["id"])[0]
    assert second["parameters"] == ["\\x00000009", "\\x74776f"]
    client.deny(second["id"], "one is enough")
    assert done.result(10) == "pgwarden: approval denied: one is enough"
    assert orders() == "8:one"


def test_retry_mode_with_a_grant_window(make_pgwarden, orders):
    running = start(make_pgwarden, mode="retry")
    insert = "insert into ap_orders values (%s, 'retried') on conflict (id) do update set note = 'again'"
    with psycopg.connect(running.dsn(), autocommit=True) as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
        c.execute(insert, (10,))
    diag = excinfo.value.diag
    request = api(running).pending()[0]
    assert diag.message_primary == f"pgwarden: approval required: request {request['id']}"
    assert "send the same statement again" in diag.message_hint
    assert orders() == ""
    api(running).approve(request["id"], window_minutes=5)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute(insert, (10,))
        c.execute(insert, (10,))  # within the window, as often as it comes
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # other parameters: another statement
            c.execute(insert, (11,))
    with psycopg.connect(running.dsn(running.token("agent-2")), autocommit=True) as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):  # another identity
        c.execute(insert, (10,))
    assert orders() == "10:again"


def test_a_fingerprint_only_grant_does_not_carry_to_a_statement_that_does_something_else(make_pgwarden, orders,
                                                                                         pg_server):
    """In each group one libpg_query fingerprint: the grant covers the statements that do what the
    approved one does, not the one a constant makes delete every row (docs/approvals.md)."""
    running = start(make_pgwarden, mode="retry")
    pg_server.psql("insert into ap_orders select n, 'n' || n from generate_series(1, 6) n", "appdb")
    limited = "delete from ap_orders where id in (select id from ap_orders order by id limit {})"
    folded = "delete from ap_orders where id = {} or id + {} = id + {}"
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        for approved, same, unbounded in ((limited.format(1), limited.format(2), limited.format("all")),
                                          (folded.format(4, 1, 2), folded.format(5, 1, 2), folded.format(6, 0, 0))):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(approved)
            (request,) = api(running).pending()
            api(running).approve(request["id"], window_minutes=5, by_fingerprint_only=True)
            assert c.execute(approved).rowcount == 1
            assert c.execute(same).rowcount > 0  # other constants, the same thing done
            kept = orders()
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                c.execute(unbounded)
            (new,) = api(running).pending()  # a request of its own, not the grant
            assert new["sql"] == unbounded and refused.value.diag.message_primary.endswith(new["id"])
            assert orders() == kept
            api(running).deny(new["id"], "not every row")
    assert orders() == "6:n6"


def test_retry_mode_once_grant_passes_once(make_pgwarden, orders):
    running = start(make_pgwarden, rules=[{"name": "w", "approve": {"statements": ["insert"], "mode": "retry"}}])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("insert into ap_orders values (12, 'once')")
        api(running).approve(api(running).pending()[0]["id"])
        c.execute("insert into ap_orders values (12, 'once')")
        c.execute("delete from ap_orders")  # not matched by the rule
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("insert into ap_orders values (12, 'once')")
    assert orders() == ""


def test_a_policy_approval_mode_applies_to_its_rules_that_do_not_say(make_pgwarden, orders):
    # approvals.mode is hold; the policy says retry; its rule says nothing: refused at once.
    running = make_pgwarden(policies=[dict(WRITES, approval_mode="retry")],
                            approvals={"approver_groups": ["dba"], "timeout_s": 30, "mode": "hold"})
    running.admin = running.call(running.app.listen_admin).getHost().port
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            c.execute("insert into ap_orders values (14, 'policy retry')")
        assert "approval required: request" in str(refused.value)
    assert orders() == ""


def test_who_may_decide(make_pgwarden, orders, pool):
    running = start(make_pgwarden, rules=[
        {"name": "two", "approve": {"statements": ["insert"], "approvers": 2}}])
    done = pool.submit(lambda: psycopg.connect(running.dsn(), autocommit=True).execute(
        "insert into ap_orders values (13, 'two people')").rowcount)
    request = pending_one(api(running))
    rid = request["id"]
    with pytest.raises(ApiError) as own:  # the requester, even in an approver group
        api(running, "agent-1").approve(rid)
    assert own.value.status == 403 and "your own request" in str(own.value)
    with pytest.raises(ApiError) as outsider:
        api(running, "bob", ("ai-agents",)).approve(rid)
    assert outsider.value.status == 403
    with pytest.raises(ApiError) as anonymous:
        ApiClient(f"http://127.0.0.1:{running.admin}/approvals/api", "not-a-token").pending()
    assert anonymous.value.status == 401
    assert api(running, "ann").approve(rid)["state"] == "pending"  # one of two
    with pytest.raises(ApiError) as twice:
        api(running, "ann").approve(rid)
    assert twice.value.status == 409
    assert orders() == ""
    assert api(running, "cid").approve(rid)["state"] == "approved"
    assert done.result(10) == 1 and orders() == "13:two people"


def test_a_failing_notifier_neither_blocks_nor_allows(make_pgwarden, orders, pool):
    class Broken:
        @hookimpl
        def pgwarden_approval_requested(self, request):
            raise RuntimeError("the webhook is down")

    class BrokenLater:
        @hookimpl
        async def pgwarden_approval_requested(self, request):
            raise RuntimeError("the chat is down")

    running = start(make_pgwarden, plugins=[("broken", Broken()), ("broken-later", BrokenLater())])
    done = pool.submit(lambda: psycopg.connect(running.dsn(), autocommit=True).execute(
        "insert into ap_orders values (14, 'notified')").rowcount)
    api(running).approve(pending_one(api(running))["id"])
    assert done.result(10) == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{running.admin}/metrics") as m:
        assert "pgwarden_notifier_failures_total 2.0" in m.read().decode()


def test_the_api_speaks_json_errors(make_pgwarden):
    running = start(make_pgwarden)
    client = api(running)
    assert client.pending() == []
    with pytest.raises(ApiError) as missing:
        client.show("nope")
    assert missing.value.status == 404
    request = urllib.request.Request(f"http://127.0.0.1:{running.admin}/approvals/api/requests/x/approve",
                                     data=b"{not json", method="POST",
                                     headers={"Authorization": f"Bearer {running.token('ann', ['dba'])}"})
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request)
    assert bad.value.code == 400 and "expected a JSON object" in json.loads(bad.value.read())["error"]


def test_a_store_that_is_down_refuses_new_requests_and_readyz_says_so(make_pgwarden, orders):
    running = start(make_pgwarden)

    class Down:
        def health(self):
            return "connection refused"

        def take_grant(self, *args):
            from twisted.internet.defer import fail

            return fail(ConnectionRefusedError("connection refused"))

        def submit(self, request):
            from twisted.internet.defer import fail

            return fail(ConnectionRefusedError("connection refused"))

    plugin = running.app.plugins.pm.get_plugin("approve")
    running.call(setattr, plugin, "store", Down())
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into ap_orders values (15, 'store down')")
        assert excinfo.value.diag.message_primary == "pgwarden: approval failed: the approval store did not answer"
        assert c.execute("select 1").fetchone() == (1,)  # reads go on
    with pytest.raises(urllib.error.HTTPError) as ready:
        urllib.request.urlopen(f"http://127.0.0.1:{running.admin}/readyz")
    assert ready.value.code == 503
    assert "approval store (memory): connection refused; new approval requests are refused" in ready.value.read().decode()
    assert orders() == ""


def test_the_cli_shows_and_denies(make_pgwarden, orders, pool, tmp_path):
    running = start(make_pgwarden)
    done = pool.submit(lambda: psycopg.connect(running.dsn(), autocommit=True).execute(
        "insert into ap_orders values (16, 'cli')"))
    rid = pending_one(api(running))["id"]
    token = tmp_path / "approver-token"
    token.write_text(running.token("ann", ["dba"]))
    url = f"http://127.0.0.1:{running.admin}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pgwarden", "approvals", *args, "--url", url,
                               "--token-file", str(token)], capture_output=True, text=True, timeout=60)

    shown = cli("show", rid)
    assert shown.returncode == 0 and f"request {rid}: pending" in shown.stdout
    assert "writes public.ap_orders" in shown.stdout and "insert into ap_orders values (16, 'cli')" in shown.stdout
    no_reason = subprocess.run([sys.executable, "-m", "pgwarden", "approvals", "deny", rid, "--url", url],
                               capture_output=True, text=True, timeout=60)
    assert no_reason.returncode == 2  # argparse: --reason is required
    denied = cli("deny", rid, "--reason", "use the batch job")
    assert denied.returncode == 0 and "denied by ann: use the batch job" in denied.stdout
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        done.result(10)
    again = cli("approve", rid)
    assert again.returncode == 1 and "already denied (HTTP 409)" in again.stderr
