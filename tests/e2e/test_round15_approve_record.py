# ruff: noqa: F811  (the fixtures of test_hostile and round thirteen, imported, are the tests' arguments)
"""Red team, round fifteen: approvals, recording, policy rollout, MCP and the wire's edges.

One pgwarden for the module (round thirteen's: two approve rules, retry for the group ai-agents,
hold for the group holders); each case checks the tables over a direct connection afterwards.

Found, and what now happens:

* Results that the server's transaction undid read as what stayed. An Execute that succeeded
  (`UPDATE things ... ` 5 rows) and an error after it before the Sync (the implicit transaction
  rolled back); a Query whose third statement failed (its first two undone); `COMMIT` in an
  aborted transaction (the server answers `ROLLBACK`); a deferred constraint failing at
  `COMMIT`. Each execution's `result` said what the agent was told (`"rows": 5`, `"sqlstate":
  null`) and nothing in the records said that none of it stayed. Now the result of the execution
  at which the transaction ended without committing says `"rolled_back_from": N`: the results of
  the session from seq N to this one ran in that transaction, and the server kept nothing of it.
  Controls: a COMMIT that commits, a ROLLBACK TO SAVEPOINT, a pipeline without an error. The
  same for a write a `rows_written` count refused in a pipeline (a second pgwarden, its own
  module fixture).
* An Execute that failed itself had two `result` records (two executions, to a reader): one now.
* `COPY things FROM STDIN`, held for approval, read as its text alone: the inbox and `pgwarden
  approvals show` now say that its rows come from the agent after the approval, unseen.
* A binary parameter read as hex (a double precision Infinity as `\x7ff0000000000000`): each
  parameter of a request now has a reading, its format and, for a binary value of a known
  declared type, the value as the server reads it.
"""

from __future__ import annotations

import json

import pytest
from test_approval_inbox import inbox  # noqa: F401
from test_approvals import api
from test_hostile import DB, Agent, errors, hostile_db, server  # noqa: F401
from test_round13_approve_record import GROUP, _count, approving  # noqa: F401  (its set-up, not copied)

from pgwarden.testing.waiting import wait_until
from pgwarden.wire import messages as m


def _fresh(running, server):
    """The tables as the hostile set-up makes them, no request pending."""
    server.reset()
    for r in api(running).pending():
        api(running).deny(r["id"], "clean up")


def _fresh_tables(server):
    """The tables as the hostile set-up makes them."""
    server.reset()


def _records(running, marker: str) -> list[dict]:
    """The records of the session that sent ``marker``, once its end is written."""
    path = running.workdir / "records.jsonl"

    def of_session():
        records = [json.loads(line) for line in path.read_text().splitlines()]
        sessions = {r["session"] for r in records if marker in (r.get("sql") or "")}
        return [r for r in records if r["session"] in sessions]

    return wait_until(10, of_session, "the session's records",
                      until=lambda rs: any(r["type"] == "session_end" for r in rs))


def _result_of(records: list[dict], marker: str) -> dict:
    """The first result record of the statement whose text holds ``marker`` (a failed Parse has
    one, and its Execute, skipped, another)."""
    (number,) = [r["statement"] for r in records if r["type"] == "statement" and marker in r["sql"]]
    return [r for r in records if r["type"] == "result" and r["statement"] == number][0]


def _sum(server):
    return server.conn.execute("SELECT sum(n) FROM public.things").fetchone()[0]


def _extended(*sqls: str) -> bytes:
    """Parse, Bind, Execute of each (unnamed), one Sync at the end: one pipeline."""
    out = b""
    for sql in sqls:
        out += m.Parse("", sql).encode() + m.Bind("", "").encode() + m.Execute("").encode()
    return out + m.Sync().encode()


def _send(agent, protocol: str, sqls: list[str]) -> list:
    """Each of ``sqls`` as its own Query (simple) or its own pipeline (extended); every answer."""
    answer: list = []
    for sql in sqls:
        agent.rc.send(m.Query(sql).encode() if protocol == "simple" else _extended(sql))
        answer += agent.rc.until_ready()
    return answer


UP = "UPDATE public.things SET n = n + 1000"
#: case: (protocol, what is sent (each a Query or a pipeline of its own; a tuple: one pipeline),
#: the marker of the result that says the transaction was rolled back, the marker of the first
#: result of that transaction, the SQLSTATEs the agent got)
ROLLED_BACK = {
    "a pipeline: an Execute, then an error before the Sync": (
        "extended", [(f"{UP} /* r15 p1 first */", "SELECT 1/0 /* r15 p1 ends */")], "r15 p1 ends", "r15 p1 first",
        ["22012"]),
    "a pipeline: two Executes, the second's Parse fails": (
        "extended", [(f"{UP} /* r15 p2 first */", f"{UP} /* r15 p2 ends */ WHERE id = 'x'")], "r15 p2 ends",
        "r15 p2 first", ["22P02"]),
    "a Query whose third statement fails": (
        "simple", [f"{UP} /* r15 q1 ends */; {UP}; SELECT 1/0"], "r15 q1 ends", "r15 q1 ends", ["22012"]),
    "COMMIT of an aborted transaction (answered ROLLBACK), by Query": (
        "simple", ["BEGIN /* r15 c1 first */", UP, "SELECT 1/0", "COMMIT /* r15 c1 ends */"], "r15 c1 ends",
        "r15 c1 first", ["22012"]),
    "COMMIT of an aborted transaction (answered ROLLBACK), by Execute": (
        "extended", ["BEGIN /* r15 c2 first */", UP, "SELECT 1/0", "COMMIT /* r15 c2 ends */"], "r15 c2 ends",
        "r15 c2 first", ["22012"]),
    "a deferred constraint failing at COMMIT, by Query": (
        "simple", ["BEGIN /* r15 d1 first */", UP, "INSERT INTO public.r15_kids VALUES (99)",
                   "COMMIT /* r15 d1 ends */"], "r15 d1 ends", "r15 d1 first", ["23503"]),
    "a deferred constraint failing at COMMIT, by Execute": (
        "extended", ["BEGIN /* r15 d2 first */", UP, "INSERT INTO public.r15_kids VALUES (99)",
                     "COMMIT /* r15 d2 ends */"], "r15 d2 ends", "r15 d2 first", ["23503"]),
}
#: Controls: nothing rolled back, every result without `rolled_back_from`, the UPDATEs kept
KEPT = {
    "a pipeline without an error": ("extended", [(f"{UP} /* r15 k1 */", f"{UP} /* r15 k1 b */")], 2),
    "ROLLBACK TO SAVEPOINT, then COMMIT, by Query": (
        "simple", ["BEGIN /* r15 k2 */", UP, "SAVEPOINT s", "SELECT 1/0", "ROLLBACK TO SAVEPOINT s", "COMMIT"], 1),
    "ROLLBACK TO SAVEPOINT, then COMMIT, by Execute": (
        "extended", ["BEGIN /* r15 k3 */", UP, "SAVEPOINT s", "SELECT 1/0", "ROLLBACK TO SAVEPOINT s", "COMMIT"], 1),
    "a Query with its own BEGIN and COMMIT": ("simple", [f"BEGIN /* r15 k4 */; {UP}; COMMIT"], 1),
}


def _run_case(running, server, protocol: str, sent: list, group: str = GROUP["retry"]) -> list:
    agent = Agent(running, group, protocol)
    try:
        answer: list = []
        for item in sent:
            if isinstance(item, tuple):
                agent.rc.send(_extended(*item))
                answer += agent.rc.until_ready()
            else:
                answer += _send(agent, protocol, [item])
    finally:
        agent.close()
    return answer


def test_a_result_whose_transaction_the_server_rolled_back_says_so(approving, server):
    """Found: see the module's docstring. Each case: the server kept none of the UPDATE (a direct
    connection's sum), and the result of the execution that ended the transaction says from
    which result on nothing stayed; no other result of the session says so."""
    from pgwarden.records_cli import summary

    server.conn.execute("DROP TABLE IF EXISTS public.r15_kids")
    server.conn.execute("CREATE TABLE public.r15_kids (id int REFERENCES public.things (id) "
                        "DEFERRABLE INITIALLY DEFERRED)")
    try:
        for case, (protocol, sent, ends, first, sqlstates) in ROLLED_BACK.items():
            _fresh(approving, server)
            before = _sum(server)
            answer = _run_case(approving, server, protocol, sent)
            assert [e.fields[2][1] for e in errors(answer)] == sqlstates, (case, answer)
            assert _sum(server) == before, case
            records = _records(approving, ends)
            ending, opening = _result_of(records, ends), _result_of(records, first)
            assert ending.get("rolled_back_from") == opening["seq"], (case, ending, opening)
            assert f"(rolled back: results from seq {opening['seq']} on)" in summary(ending)[0], case  # pgwarden tail
            others = [r for r in records if r["type"] == "result" and r is not ending and "rolled_back_from" in r]
            assert not others, (case, others)
        for case, (protocol, sent, updates) in KEPT.items():
            _fresh(approving, server)
            before = _sum(server)
            _run_case(approving, server, protocol, sent)
            assert _sum(server) == before + 5000 * updates, case
            marker = sent[0][0] if isinstance(sent[0], tuple) else sent[0]
            records = _records(approving, marker.split("/*")[1].split("*/")[0].strip())
            marked = [r for r in records if r["type"] == "result" and "rolled_back_from" in r]
            assert not marked, (case, marked)
            assert not [r for r in records if r["type"] == "result" and "rolled back" in summary(r)[0]], case
    finally:
        server.conn.execute("DROP TABLE IF EXISTS public.r15_kids")



def test_an_execute_that_fails_has_one_result(approving, server):
    """Found: an Execute that failed itself (`UPDATE things SET n = n / 0`: 22012 at run time, in
    the extended protocol: psycopg, asyncpg, JDBC) had two `result` records, as two executions:
    round fourteen's results for the Executes skipped after an error counted the failed one among
    them. Now one. (A Parse that fails has its result, and the Execute the server skipped after
    it its own, as round fourteen made them.) Each case run once, on a direct connection the
    table unchanged."""
    cases = {
        "an Execute that fails": ("UPDATE public.things SET n = n / 0 /* r15 once */", "22012", 1),
        "an Execute that fails, an Execute skipped after it": (
            "UPDATE public.things SET n = n / 0 /* r15 once b */", "22012", 1),
    }
    for case, (sql, sqlstate, count) in cases.items():
        _fresh(approving, server)
        before = _sum(server)
        agent = Agent(approving, GROUP["retry"], "extended")
        marker = sql.split("/*")[1].split("*/")[0].strip()
        try:
            tail = (m.Parse("", UP + " /* r15 skipped */").encode() + m.Bind("", "").encode()
                    + m.Execute("").encode()) if case.endswith("after it") else b""
            agent.rc.send(m.Parse("", sql).encode() + m.Bind("", "").encode() + m.Execute("").encode()
                          + tail + m.Sync().encode())
            answer = agent.rc.until_ready()
        finally:
            agent.close()
        assert [e.fields[2][1] for e in errors(answer)] == [sqlstate], (case, answer)
        assert _sum(server) == before, case
        records = _records(approving, marker)
        (number,) = [r["statement"] for r in records if r["type"] == "statement" and marker in r["sql"]]
        results = [r for r in records if r["type"] == "result" and r["statement"] == number]
        assert len(results) == count, (case, results)
        assert results[0]["sqlstate"] == sqlstate, (case, results)
        if tail:
            (skipped,) = [r["statement"] for r in records if r["type"] == "statement" and "r15 skipped" in r["sql"]]
            assert [r["sqlstate"] for r in records if r["type"] == "result" and r["statement"] == skipped] == [
                sqlstate], (case, records)


# ---------------------------------------------------------------------- what an approver reads

def test_the_inbox_says_a_copy_from_stdin_writes_rows_nobody_saw(inbox):
    """Found: `COPY things FROM STDIN` held for approval (it is `insert`: an approve rule on
    inserts holds it) was shown as its text alone, like any INSERT: nothing said that the rows it
    writes come from the agent only after the approval, so that the person approved rows they
    never saw, any number of them. Now the inbox and `pgwarden approvals show` say so above the
    statement, and the Slack message under it. Controls: an INSERT of a VALUES list, a COPY FROM
    a server file (its rows are the file's, not the agent's), a COPY TO STDOUT: no such note."""
    import attrs
    from test_approval_inbox import Elements, get, stored

    from pgwarden.approvals_cli import render
    from pgwarden_plugins.approve.notify import slack_payload
    from pgwarden_plugins.approve.store import to_json

    cases = {
        "COPY FROM STDIN": ("COPY public.things FROM STDIN", ("copy_from", "insert"), True),
        "COPY (n) FROM STDIN (FORMAT binary)": ("COPY public.things (n) FROM STDIN (FORMAT binary)",
                                                ("copy_from", "insert"), True),
        "control: INSERT ... VALUES": ("INSERT INTO public.things VALUES (9, 9)", ("insert",), False),
        "control: COPY FROM a server file": ("COPY public.things FROM '/tmp/r15.csv'", ("copy_file", "insert"), False),
        "control: COPY TO STDOUT": ("COPY public.things TO STDOUT", ("copy_to",), False),
    }
    token = "Bearer " + inbox.token("alice", ["db-approvers"])
    for n, (case, (sql, kinds, noted)) in enumerate(cases.items()):
        request = attrs.evolve(stored(f"c{n}", sql, tables=("public.things",)), kinds=kinds)
        inbox.put(request)
        status, _h, body = get(inbox.base, Authorization=token)
        assert status == 200, case
        article = body.split(f'id="request-c{n}"', 1)[1].split("</article>", 1)[0]
        notes = [t for t in Elements(article).text if "reads its rows from the agent" in t]
        assert notes == ([
            "This COPY reads its rows from the agent after the approval: they are not shown here and are not "
            "known yet. Approving it lets the agent write whatever rows it sends into public.things."]
            if noted else []), (case, notes)
        shown = render({**to_json(request), "created": 0.0, "expires": 1.0}, 0.0)
        assert ("reads its rows from the agent" in shown) is noted, (case, shown)
        if noted:
            assert shown.index("reads its rows from the agent") < shown.index("  sql "), case
        slack = json.dumps(slack_payload(request, None))
        assert ("reads its rows from the agent" in slack) is noted, (case, slack)


#: (the type the Parse declared, the Bind's binary value, how the approver is now told it reads)
BINARY = {
    "double precision Infinity (n < $1: every row)": (701, b"\x7f\xf0\x00\x00\x00\x00\x00\x00",
                                                      "binary double precision: Infinity"),
    "bigint 1,000,000": (20, (1000000).to_bytes(8, "big"), "binary bigint: 1000000"),
    "numeric 1e8 (n < $1: every row)": (1700, b"\x00\x01\x00\x02\x00\x00\x00\x00\x00\x01", "binary numeric: 100000000"),
    "a type left to the server": (0, (1000000).to_bytes(4, "big"),
                                  "binary format, its type left to the server (the Parse declared none): not read "
                                  "here; the hex shown is its bytes"),
}


def test_the_inbox_reads_a_binary_parameter_as_its_type(approving, server):
    """Found (round twelve left it open): a binary parameter was shown as hex, as in the records:
    `DELETE FROM things WHERE n < $1` with `$1` a double precision `\\x7ff0000000000000` read to
    the approver as sixteen hex digits, not as Infinity (every row); a bigint 1,000,000 as
    `\\x00000000000f4240`, a numeric 100,000,000 as `\\x00010002...` (its base-10,000 digits); and
    nothing told a binary value from a text one holding the same characters. Now each parameter
    of a request has a reading (`parameter_readings` in the API): its format, and for a binary
    value of a type the Parse declared and pgwarden knows, the value as the server reads it (else
    that it is not read); the inbox shows it under the value, `pgwarden approvals show` after it.
    Control: a text value says it is text. Nothing ran (each request denied)."""
    from test_approval_inbox import Elements, get

    from pgwarden.approvals_cli import render

    _fresh(approving, server)
    agent = Agent(approving, GROUP["retry"], "extended")
    try:
        for case, (oid, value, _reading) in BINARY.items():
            agent.rc.send(m.Parse("", f"DELETE FROM public.things WHERE n < $1 /* r15 {case} */", (oid,)).encode()
                          + m.Bind("", "", (1,), (value,), ()).encode() + m.Execute("").encode() + m.Sync().encode())
            assert errors(agent.rc.until_ready()), case  # a request, nothing ran
        agent.rc.send(m.Parse("", "DELETE FROM public.things WHERE n < $1::float8 /* r15 text */").encode()
                      + m.Bind("", "", (), (b"\\x7ff0000000000000",), ()).encode() + m.Execute("").encode()
                      + m.Sync().encode())
        answer = agent.rc.until_ready()
        assert errors(answer), answer
    finally:
        agent.close()
    requests = wait_until(10, api(approving).pending, "the requests", until=lambda rs: len(rs) == len(BINARY) + 1)
    status, _h, body = get(f"http://127.0.0.1:{approving.admin}/approvals/inbox/",
                           Authorization="Bearer " + approving.token("ann", ["dba"]))
    assert status == 200
    page = Elements(body).text
    expected = {**{case: reading for case, (_o, _v, reading) in BINARY.items()},
                "text": "text format: the characters shown, as the statement reads them"}
    for case, reading in expected.items():
        (request,) = [r for r in requests if f"/* r15 {case} */" in r["sql"]]
        assert request["parameter_readings"] == [reading], (case, request)
        assert reading in page, (case, [t for t in page if "binary" in t or "text format" in t])
        assert f"$1 {reading}" in render(request, 0.0), case
    for r in requests:
        api(approving).deny(r["id"], "no")
    assert _count(server) == 5


# ---------------------------------------------------------------------- a write the count refused

@pytest.fixture(scope="module")
def capped(hostile_db, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """One pgwarden for the module whose policy caps what a statement writes at 2 rows."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    workdir = tmp_path_factory.mktemp("round15")
    doc = base_config(pg_server, signing_keys, workdir, upstream={"database": DB},
                      policies=[{"name": "agents", "rules": [{"name": "small", "limit": {"rows_written": 2}}]}])
    with module_pgwarden(doc, signing_keys, reactor_thread) as rp:
        rp.workdir = workdir
        yield rp


def test_a_pipeline_the_write_count_refused_says_what_it_rolled_back(capped, server):
    """Found with the above: under `limit: {rows_written: 2}`, a pipeline of an UPDATE of one row
    (counted, kept so far) and an UPDATE of five (refused by the count: 42501, the implicit
    transaction rolled back at the Sync): the first UPDATE's result said `"rows": 1` and nothing
    said the server undid it (the count's refusal is pgwarden's own check, and its error was not
    taken as the end of the transaction). Now the refused Execute's result says
    `rolled_back_from`, the first UPDATE's seq. The same by Execute and by Query in an explicit
    transaction ended by COMMIT (answered ROLLBACK)."""
    cases = {
        "a pipeline": ("extended", [("UPDATE public.things SET n = n + 1000 WHERE id = 1 /* r15 w1 first */",
                                     "UPDATE public.things SET n = n + 1 /* r15 w1 ends */")],
                       "r15 w1 ends", "r15 w1 first"),
        "an explicit transaction, by Query": (
            "simple", ["BEGIN /* r15 w2 first */", "UPDATE public.things SET n = n + 1000 WHERE id = 1",
                       "UPDATE public.things SET n = n + 1", "COMMIT /* r15 w2 ends */"], "r15 w2 ends", "r15 w2 first"),
    }
    for case, (protocol, sent, ends, first) in cases.items():
        _fresh_tables(server)
        before = _sum(server)
        answer = _run_case(capped, server, protocol, sent, group="ai-agents")
        assert [e.fields[2][1] for e in errors(answer)] == ["42501"], (case, answer)
        assert _sum(server) == before, case
        records = _records(capped, ends)
        ending, opening = _result_of(records, ends), _result_of(records, first)
        assert ending.get("rolled_back_from") == opening["seq"], (case, ending, opening)


# ---------------------------------------------------------------------- controls: a held statement's session goes

def test_control_a_held_statement_whose_session_went_cannot_be_approved_into_running(approving, server):
    """Not a way through: a DELETE held for approval (hold mode), then the client leaves, by
    Terminate (the extended protocol's last message, behind the held Bind) or by closing its
    socket. The request ends `withdrawn` (the session ended) before anyone decides it; an
    approval given afterwards is refused (409), nothing ran (a direct connection counts the rows),
    and the records say `withdrawn`, not `approved`."""
    from pgwarden.approvals_cli import ApiError

    for case in ("Terminate", "the socket closed"):
        _fresh(approving, server)
        delete = f"DELETE FROM public.things WHERE id > 1 /* r15 gone {case} */"
        agent = Agent(approving, GROUP["hold"], "extended")
        agent.rc.send(m.Parse("", delete).encode() + m.Bind("", "").encode() + m.Execute("").encode()
                      + m.Sync().encode())
        request_id = wait_until(10, api(approving).pending, "a pending request", until=lambda rs: len(rs) == 1)[0]["id"]
        if case == "Terminate":
            agent.rc.send(m.Terminate().encode())
        agent.close()
        ended = wait_until(10, lambda rid=request_id: api(approving).show(rid), "the request withdrawn",
                           until=lambda r: r["state"] != "pending")
        assert ended["state"] == "withdrawn", (case, ended)
        try:
            api(approving).approve(request_id, "too late")
            refused = None
        except ApiError as e:
            refused = e
        assert refused is not None and refused.status == 409, (case, refused)
        assert _count(server) == 5, case
        states = [r["state"] for r in _records(approving, f"r15 gone {case}") if r["type"] == "approval"]
        assert states == ["requested", "withdrawn"], (case, states)
