"""The MCP endpoint, end to end: `pgwarden run` with ``mcp:`` in front of the test PostgreSQL.

One pgwarden for the module. The official MCP Python SDK's client (asyncio, httpx) speaks to it
in both revision families; raw HTTP (httpx) covers what a conforming client never sends (bad
tokens, wrong audiences, headers that disagree with the body, foreign origins). Refusals are
checked on the database too: a refused statement changed nothing.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx2 as httpx
import psycopg
import pytest
import yaml

from pgwarden.testing.endpoint import ISSUER
from pgwarden.testing.postgres import free_port
from pgwarden.testing.pytest_plugin import base_config, check_records
from pgwarden.testing.running import PgwardenProcess, launch
from pgwarden.tokens import generate_key, mint

MODERN = "2026-07-28"

POLICIES = [
    {"name": "agents", "when": {"groups": ["ai-agents"]}, "rules": [
        {"name": "no-ddl", "block": {"statements": [
            "ddl", "truncate", "grant", "role", "system", "side_effect", "server_files", "copy_program",
            "copy_file", "unknown"]}, "reason": "schema changes go through migrations"},
        {"name": "no-files", "block": {"functions": ["pg_read_file", "lo_export", "dblink"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "secrets", "block": {"tables": ["mcp_secret.*"]}},
        {"name": "pii", "mask": {"columns": ["public.mcp_customers.ssn"], "with": "redact"}},
        {"name": "budget", "limit": {"rows": 50}},
        {"name": "orders", "approve": {"statements": ["insert"], "tables": ["public.mcp_orders"], "mode": "retry"},
         "reason": "orders need a human"},
        {"name": "held", "approve": {"statements": ["insert"], "tables": ["public.mcp_held"], "mode": "hold"}},
    ]},
    {"name": "readers", "when": {"groups": ["readers"]}, "rules": [
        {"name": "no-writes", "block": {"statements": [
            "insert", "update", "delete", "merge", "truncate", "copy_from", "ddl", "grant", "role", "system",
            "side_effect", "do", "call", "unknown", "lock", "maintenance", "server_files", "copy_program",
            "copy_file"]}},
        {"name": "pii", "mask": {"columns": ["public.mcp_customers.ssn"], "with": "redact"}},
    ]},
]

SETUP = """
DROP TABLE IF EXISTS mcp_customers; DROP SCHEMA IF EXISTS mcp_secret CASCADE;
CREATE TABLE mcp_customers (id int PRIMARY KEY, name text, ssn text, balance numeric, active boolean);
INSERT INTO mcp_customers SELECT g, 'customer ' || g, '123-45-' || lpad(g::text, 4, '0'), g * 10.5, g % 2 = 0
  FROM generate_series(1, 120) g;
DROP TABLE IF EXISTS mcp_orders; DROP TABLE IF EXISTS mcp_held;
CREATE TABLE mcp_orders (id int PRIMARY KEY, item text); CREATE TABLE mcp_held (id int PRIMARY KEY, item text);
CREATE SCHEMA mcp_secret; CREATE TABLE mcp_secret.keys (k text); INSERT INTO mcp_secret.keys VALUES ('hunter2');
"""


@attrs.define
class McpServer:
    process: PgwardenProcess
    url: str
    port: int
    dsn: str  # direct to the database

    def token(self, subject: str = "agent-1", groups: list[str] | None = None, audience: str | None = None,
              **kw: Any) -> str:
        return mint(self.process.keys["private"], subject=subject, issuer=ISSUER,
                    audience=audience if audience is not None else self.url,
                    groups=groups if groups is not None else ["ai-agents"], **kw)

    def records(self) -> list[dict]:
        return check_records([self.process.directory / "records.jsonl"])


@pytest.fixture(scope="module")
def mcp(pg_server, signing_keys, tmp_path_factory) -> Iterator[McpServer]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(SETUP)
    directory = tmp_path_factory.mktemp("mcp")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    doc = base_config(pg_server, signing_keys, directory, policies=POLICIES,
                      mcp={"url": url, "port": port, "allowed_origins": ["http://localhost:3000"]},
                      approvals={"approver_groups": ["db-approvers"], "timeout_s": 60, "preview": False,
                                 "inbox_url": "https://approvals.example/inbox/"})
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump(doc))
    running = launch(config, signing_keys, directory)
    try:
        server = McpServer(running, url, port, pg_server.dsn())
        # The first statement waits for the live catalog's first read: done here, not in a test's time.
        assert call(server, "query", {"sql": "SELECT 1 AS one"})["structuredContent"]["rows"] == [{"one": 1}]
        yield server
    finally:
        running.stop()
        check_records([directory / "records.jsonl"])


# ---------------------------------------------------------------------- raw HTTP


def post(mcp: McpServer, body: object, token: str | None = "default", headers: dict | None = None,
         session: str | None = None) -> httpx.Response:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token == "default":
        token = mcp.token()
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if session is not None:
        h["Mcp-Session-Id"] = session
    h.update(headers or {})
    return httpx.post(mcp.url, content=json.dumps(body), headers=h, timeout=30)


def initialize(mcp: McpServer, token: str | None = "default", version: str = "2025-11-25",
               capabilities: dict | None = None) -> str:
    r = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": capabilities or {},
        "clientInfo": {"name": "test", "version": "0"}}}, token)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == version
    return r.headers["mcp-session-id"]


def call(mcp: McpServer, tool: str, arguments: dict, token: str | None = "default") -> dict:
    """tools/call in the stateless revision: its structured result."""
    r = post(mcp, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}},
        token, headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["resultType"] == "complete"
    return result


def test_raw_handshake_and_query(mcp):
    sid = initialize(mcp)
    r = post(mcp, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid,
             headers={"MCP-Protocol-Version": "2025-11-25"})
    assert r.status_code == 202
    r = post(mcp, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session=sid,
             headers={"MCP-Protocol-Version": "2025-11-25"})
    names = [t["name"] for t in r.json()["result"]["tools"]]
    assert names[:4] == ["whoami", "search_schema", "query", "explain"]
    r = post(mcp, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "query", "arguments": {"sql": "SELECT id, ssn, active FROM mcp_customers WHERE id = $1",
                                       "params": [7]}}}, session=sid)
    result = r.json()["result"]
    assert result["isError"] is False, result
    s = result["structuredContent"]
    assert s["rows"] == [{"id": 7, "ssn": s["rows"][0]["ssn"], "active": False}]
    assert "123-45" not in json.dumps(result)
    assert s["untrusted_data"] is True and s["truncated"] is False


# ---------------------------------------------------------------------- the official client


async def _sdk_session(mcp: McpServer, mode: str, token: str) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with Client(streamable_http_client(mcp.url, http_client=http), mode=mode) as client:
            seen["version"] = client.protocol_version
            seen["server"] = client.server_info.name if client.server_info else None
            seen["tools"] = [t.name for t in (await client.list_tools()).tools]
            who = await client.call_tool("whoami", {})
            seen["whoami"] = who.structured_content
            q = await client.call_tool("query", {"sql": "SELECT name, ssn FROM mcp_customers WHERE id = $1",
                                                 "params": [3]})
            seen["query"] = q.structured_content
            seen["query_error"] = q.is_error
            bad = await client.call_tool("query", {"sql": "DROP TABLE mcp_customers"})
            seen["blocked"] = bad.structured_content
            seen["blocked_error"] = bad.is_error
    return seen


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), ("auto", MODERN), (MODERN, MODERN)])
def test_official_client(mcp, mode, version):
    """The SDK's client, handshake (legacy), probing (auto) and stateless: the same answers."""
    seen = asyncio.run(_sdk_session(mcp, mode, mcp.token()))
    assert seen["version"] == version
    assert seen["tools"][:4] == ["whoami", "search_schema", "query", "explain"]
    assert seen["whoami"]["subject"] == "agent-1" and seen["whoami"]["policies"] == ["agents"]
    assert seen["whoami"]["protocol_version"] == version
    assert seen["query_error"] is False
    assert seen["query"]["rows"] == [{"name": "customer 3", "ssn": seen["query"]["rows"][0]["ssn"]}]
    assert "0003" not in seen["query"]["rows"][0]["ssn"]  # masked by source column
    assert seen["blocked_error"] is True
    assert seen["blocked"]["error"]["sqlstate"] == "42501"
    assert seen["blocked"]["error"]["message"].startswith("pgwarden: blocked:")


# ---------------------------------------------------------------------- identity


def test_no_token_is_challenged_with_the_metadata(mcp):
    r = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token=None)
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    metadata = f"http://127.0.0.1:{mcp.port}/.well-known/oauth-protected-resource/mcp"
    assert challenge == f'Bearer resource_metadata="{metadata}"'
    doc = httpx.get(metadata).json()
    assert doc["resource"] == mcp.url
    assert doc["authorization_servers"] == [ISSUER]
    assert httpx.get(f"http://127.0.0.1:{mcp.port}/.well-known/oauth-protected-resource").json() == doc


@pytest.mark.parametrize("case", ["wire-audience", "other-resource", "expired", "garbage", "other-key", "basic"])
def test_bad_tokens_are_refused(mcp, case, tmp_path):
    from pgwarden.testing.endpoint import AUDIENCE
    from pgwarden.tokens import generate_key

    if case == "wire-audience":  # a token for the Postgres port is not one for this endpoint (RFC 8707)
        token = mcp.token(audience=AUDIENCE)
    elif case == "other-resource":
        token = mcp.token(audience=f"http://127.0.0.1:{mcp.port}/other")
    elif case == "expired":
        token = mcp.token(ttl_s=-120)
    elif case == "garbage":
        token = "not-a-jwt"
    elif case == "other-key":
        private, _ = generate_key(tmp_path / "k")
        token = mint(private, subject="agent-1", issuer=ISSUER, audience=mcp.url, groups=["ai-agents"])
    else:
        token = None
    headers = {"Authorization": "Basic YWdlbnQ6eA=="} if case == "basic" else None
    r = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        token=token, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith('Bearer resource_metadata="')
    assert "mcp-session-id" not in r.headers
    assert r.json()["error"]["message"] == "pgwarden: authentication failed"


def test_no_policy_for_the_identity(mcp):
    r = post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token=mcp.token(groups=["nobody"]))
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "pgwarden: no policy for this identity"


def test_refused_tokens_are_recorded_and_counted_never_the_token(mcp, tmp_path):
    """Each refusal is an auth_failure record of the MCP door with its reason (as a refused login
    on the wire is), and counted in pgwarden_auth_failures_total; the token itself goes nowhere."""
    from pgwarden.testing.endpoint import AUDIENCE
    from pgwarden.tokens import generate_key

    other_key, _ = generate_key(tmp_path / "k")  # same kid, other key: the signature does not verify
    tokens = {
        "expired": mcp.token(subject="rec-expired", ttl_s=-120),
        "wrong_audience": mcp.token(subject="rec-audience", audience=AUDIENCE),
        "bad_signature": mint(other_key, subject="rec-signature", issuer=ISSUER, audience=mcp.url),
        "malformed_token": "not-a-jwt-" + "x" * 40,
    }
    no_policy = mcp.token(subject="rec-nobody", groups=["nobody"])
    before = {r["session"] for r in mcp.records() if r["type"] == "auth_failure"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for token in tokens.values():
        assert post(mcp, listing, token=token).status_code == 401
    assert post(mcp, listing, token=None).status_code == 401
    assert post(mcp, listing, token=no_policy).status_code == 403

    text = (mcp.process.directory / "records.jsonl").read_text()
    new = [r for r in mcp.records() if r["type"] == "auth_failure" and r["session"] not in before]
    assert all(r["door"] == "mcp" and r["client"].startswith("127.0.0.1:") for r in new)
    assert all(r["user"] is None and r["database"] is None for r in new)
    reasons = [(r["reason"], r["sqlstate"]) for r in new]
    assert any(reason.startswith("ExpiredSignatureError") for reason, _ in reasons)
    assert any(reason.startswith("InvalidAudienceError") for reason, _ in reasons)
    assert any(reason.startswith("InvalidSignatureError") for reason, _ in reasons)
    assert any(reason.startswith("malformed token") for reason, _ in reasons)
    assert ("no bearer token", "28P01") in reasons
    assert ("no policy for this identity", "28000") in reasons
    assert len(new) == 6
    nobody = next(r for r in new if r["sqlstate"] == "28000")
    assert nobody["identity"] == {"subject": "rec-nobody", "groups": ["nobody"]}

    metrics = httpx.get(f"http://127.0.0.1:{mcp.process.admin_port}/metrics").text
    for label in ("expired", "wrong_audience", "bad_signature", "malformed_token", "no_token", "no_policy"):
        assert f'pgwarden_auth_failures_total{{reason="{label}"}}' in metrics, label
    log = mcp.process.log()
    assert "MCP authentication failed from 127.0.0.1:" in log
    for token in [*tokens.values(), no_policy]:
        for where in (text, log, metrics):
            assert token not in where
            assert token.rpartition(".")[2] not in where  # not even its signature


def test_sessions_are_bound_to_their_subject(mcp):
    sid = initialize(mcp)
    r = post(mcp, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session=sid,
             token=mcp.token(subject="agent-2"))
    assert r.status_code == 404


# ---------------------------------------------------------------------- transport and revisions


def test_origin_is_checked(mcp):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = post(mcp, body, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = post(mcp, body, headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200
    assert r.json()["result"]["protocolVersion"] == "2025-06-18"


def test_get_is_405_and_delete_ends_the_session(mcp):
    r = httpx.get(mcp.url, headers={"Authorization": f"Bearer {mcp.token()}", "Accept": "text/event-stream"})
    assert r.status_code == 405
    sid = initialize(mcp)
    r = httpx.delete(mcp.url, headers={"Authorization": f"Bearer {mcp.token()}", "Mcp-Session-Id": sid})
    assert r.status_code == 204
    r = post(mcp, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session=sid)
    assert r.status_code == 404


def test_handshake_rules(mcp):
    r = post(mcp, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert r.status_code == 400  # no session
    r = _initialize_unknown_version(mcp)  # an unknown version: the server's latest is offered
    assert r.json()["result"]["protocolVersion"] == "2025-11-25"
    sid = r.headers["mcp-session-id"]
    r = post(mcp, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, session=sid,
             headers={"MCP-Protocol-Version": "2025-06-18"})
    assert r.status_code == 400  # not the negotiated one
    r = post(mcp, {"jsonrpc": "2.0", "id": 4, "method": "ping"}, session=sid)
    assert r.json() == {"jsonrpc": "2.0", "id": 4, "result": {}}
    r = post(mcp, [{"jsonrpc": "2.0", "id": 5, "method": "ping"}], session=sid)
    assert r.status_code == 400  # batches were removed in 2025-06-18


def _initialize_unknown_version(mcp):
    return post(mcp, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-01-01", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})


def modern(mcp, method, params=None, headers=None, version=MODERN, meta=True):
    params = dict(params or {})
    if meta:
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": version,
                           "io.modelcontextprotocol/clientCapabilities": {}}
    h = {"MCP-Protocol-Version": version, "Mcp-Method": method}
    if method == "tools/call":
        h["Mcp-Name"] = params.get("name", "")
    h.update(headers or {})
    return post(mcp, {"jsonrpc": "2.0", "id": "x", "method": method, "params": params}, headers=h)


def test_stateless_revision(mcp):
    r = modern(mcp, "server/discover")
    assert r.status_code == 200
    result = r.json()["result"]
    assert result["supportedVersions"] == [MODERN] and result["resultType"] == "complete"
    assert result["serverInfo"]["name"] == "pgwarden" and "tools" in result["capabilities"]
    assert "mcp-session-id" not in r.headers
    r = modern(mcp, "tools/list")
    assert r.json()["result"]["cacheScope"] == "private"  # it depends on who asks
    # headers that disagree with the body
    for headers in ({"Mcp-Method": "tools/list"}, {"MCP-Protocol-Version": "2025-11-25"},
                    {"Mcp-Name": "explain"}):
        r = modern(mcp, "tools/call", {"name": "whoami", "arguments": {}}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32020, (headers, r.text)
    r = modern(mcp, "tools/list", version="2099-01-01")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32022
    assert r.json()["error"]["data"] == {"supported": [MODERN], "requested": "2099-01-01"}
    r = modern(mcp, "tools/list", meta=False)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602
    r = modern(mcp, "ping")
    assert r.status_code == 404 and r.json()["error"]["code"] == -32601  # removed in 2026-07-28


# ---------------------------------------------------------------------- the same governance


def _count(mcp: McpServer) -> tuple[int, bool]:
    with psycopg.connect(mcp.dsn, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM mcp_customers").fetchone()[0]
        secret = conn.execute("SELECT to_regclass('mcp_secret.keys') IS NOT NULL").fetchone()[0]
    return n, secret


def _wire_refusal(mcp: McpServer, sql: str) -> tuple[str | None, str | None]:
    """What the same identity gets for ``sql`` over the PostgreSQL protocol (extended, as MCP runs it)."""
    from pgwarden.testing.endpoint import AUDIENCE

    token = mint(mcp.process.keys["private"], subject="agent-1", issuer=ISSUER, audience=AUDIENCE,
                 groups=["ai-agents"])
    with psycopg.connect(mcp.process.dsn(token), autocommit=True) as conn:
        try:
            conn.execute(sql, prepare=True).fetchall()
        except psycopg.Error as e:
            return e.sqlstate, e.diag.message_primary
    return None, None


# A few of tests/e2e/test_hostile.py's, and the documented ways around other MCP servers' guards.
HOSTILE = [
    "DROP TABLE mcp_customers",
    "COMMIT; DROP TABLE mcp_customers",  # the reference server's read-only transaction ends here
    "SELECT * FROM pg_read_file('/etc/passwd')",  # a function in FROM
    "SELECT pg_read_file('/etc/passwd')",
    "WITH gone AS (DELETE FROM mcp_customers RETURNING *) SELECT count(*) FROM gone",
    "EXPLAIN ANALYZE DELETE FROM mcp_customers",
    "DELETE FROM mcp_customers",
    "SELECT * FROM mcp_secret.keys",
    "SELECT 1; DELETE FROM mcp_customers WHERE id = 1",
    "SET ROLE postgres",
    "COPY (SELECT 1) TO PROGRAM 'true'",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_statements_refused_as_on_the_wire(mcp, sql):
    before = _count(mcp)
    result = call(mcp, "query", {"sql": sql})
    assert result["isError"] is True, result
    error = result["structuredContent"]["error"]
    assert _count(mcp) == before == (120, True)
    assert (error["sqlstate"], error["message"]) == _wire_refusal(mcp, sql)
    assert error["sqlstate"] in ("42501", "42601")


def test_multi_statement_text_is_refused(mcp):
    result = call(mcp, "query", {"sql": "SELECT 1; SELECT 2"})
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["sqlstate"] == "42601"  # one statement per call


def test_refusal_says_why_and_is_recorded(mcp):
    result = call(mcp, "query", {"sql": "DELETE FROM mcp_customers"})
    s = result["structuredContent"]
    assert s["error"]["message"].startswith("pgwarden: blocked:")
    assert "unfiltered-writes" in s["error"].get("detail", "")
    session, statement = s["audit_id"].split(":")
    records = [r for r in mcp.records() if r["session"] == session and r.get("statement") == int(statement)]
    verdicts = [r for r in records if r["type"] == "statement"]
    assert verdicts and verdicts[0]["sql"] == "DELETE FROM mcp_customers"
    assert verdicts[0]["verdict"]["action"] == "block" and verdicts[0]["verdict"]["rule"] == "unfiltered-writes"


def test_audit_id_names_the_records_of_the_call(mcp):
    result = call(mcp, "query", {"sql": "SELECT id FROM mcp_customers WHERE id <= $1 ORDER BY id", "params": [3]})
    s = result["structuredContent"]
    assert [r["id"] for r in s["rows"]] == [1, 2, 3]
    session, statement = s["audit_id"].split(":")
    import time

    deadline = time.monotonic() + 10
    while True:  # result records are written lazily (recording.results_delay_ms)
        records = [r for r in mcp.records() if r["session"] == session and r.get("statement") == int(statement)]
        if {r["type"] for r in records} >= {"statement", "result"} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    by_type = {r["type"]: r for r in records}
    assert by_type["statement"]["sql"] == "SELECT id FROM mcp_customers WHERE id <= $1 ORDER BY id"
    assert by_type["statement"]["protocol"] == "extended"
    assert by_type["result"]["rows"] == 3
    starts = [r for r in mcp.records() if r["session"] == session and r["type"] == "session_start"]
    assert starts[0]["identity"]["subject"] == "agent-1"


def test_json_values_beyond_64_bits_come_back_exact(mcp):
    """Answers are encoded with orjson, which cannot say such an integer: json says it instead."""
    big = 123456789012345678901234567890
    result = call(mcp, "query", {"sql": f"SELECT '{{\"n\": {big}}}'::jsonb AS j, 'é\u2028' AS t"})
    assert result["isError"] is False
    assert result["structuredContent"]["rows"] == [{"j": {"n": big}, "t": "é\u2028"}]
    text = result["content"][0]["text"].split("\n", 1)[1]  # after the preface: rows are data
    assert json.loads(text)["rows"] == [{"j": {"n": big}, "t": "é\u2028"}]


def test_masking_and_caps(mcp):
    s = call(mcp, "query", {"sql": "SELECT id, ssn, balance FROM mcp_customers ORDER BY id", "max_rows": 5})[
        "structuredContent"]
    assert s["row_count"] == 5 and s["truncated"] is True
    assert all("123-45" not in (row["ssn"] or "") for row in s["rows"])
    assert s["rows"][0]["balance"] == "10.5"  # numeric stays text: no precision lost
    # the policy's own cap (limit rows: 50) cuts below max_rows
    s = call(mcp, "query", {"sql": "SELECT id FROM mcp_customers", "max_rows": 500})["structuredContent"]
    assert s["row_count"] == 50 and s["truncated"] is True
    # masked through an expression: the lineage says where it comes from
    s = call(mcp, "query", {"sql": "SELECT upper(ssn) AS x FROM mcp_customers WHERE id = 1"})["structuredContent"]
    assert "123-45" not in json.dumps(s)


def test_timeout_cancels_the_statement(mcp):
    import time

    started = time.monotonic()
    result = call(mcp, "query", {"sql": "SELECT count(*) FROM generate_series(1, 10000000000)", "timeout_ms": 300})
    assert time.monotonic() - started < 10
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["sqlstate"] == "57014"
    # the session's next call works
    assert call(mcp, "query", {"sql": "SELECT 1 AS one"})["structuredContent"]["rows"] == [{"one": 1}]


def test_explain_plans_without_running_and_gives_the_verdict(mcp):
    s = call(mcp, "explain", {"sql": "DELETE FROM mcp_customers WHERE id > $1", "params": [0]})["structuredContent"]
    assert s["verdict"]["action"] == "allow"
    assert s["plan"][0]["Plan"]["Node Type"] == "ModifyTable"
    assert _count(mcp)[0] == 120  # EXPLAIN without ANALYZE: nothing ran
    s = call(mcp, "explain", {"sql": "DELETE FROM mcp_customers"})["structuredContent"]
    assert s["verdict"]["action"] == "block" and s["verdict"]["rule"] == "unfiltered-writes"
    s = call(mcp, "explain", {"sql": "SELECT ssn FROM mcp_customers"})["structuredContent"]
    assert s["verdict"]["action"] == "allow"
    assert s["verdict"]["masks"][0]["outputs"][0]["rule"] == "agents/pii"
    assert "audit_id" in s


def test_search_schema_shows_only_what_the_identity_may_read(mcp):
    s = call(mcp, "search_schema", {"pattern": "%mcp%"})["structuredContent"]
    tables = {t["table"]: t for t in s["tables"]}
    assert "public.mcp_customers" in tables and "mcp_secret.keys" not in tables
    columns = {c["name"]: c for c in tables["public.mcp_customers"]["columns"]}
    assert columns["ssn"]["masked"] is True and columns["name"]["masked"] is False


def test_whoami(mcp):
    s = call(mcp, "whoami", {}, token=mcp.token(groups=["readers"]))["structuredContent"]
    assert s["policies"] == ["readers"] and s["read_only"] is True
    assert s["masked"][0]["columns"] == ["public.mcp_customers.ssn"]
    s = call(mcp, "whoami", {})["structuredContent"]
    assert s["read_only"] is False and s["limits"]["rows"] == 50


def test_a_transaction_does_not_span_calls(mcp):
    token = mcp.token(subject="agent-tx")
    first = call(mcp, "query", {"sql": "SELECT 1 AS one"}, token=token)["structuredContent"]["audit_id"]
    again = call(mcp, "query", {"sql": "SELECT 1 AS one"}, token=token)["structuredContent"]["audit_id"]
    assert first.split(":")[0] == again.split(":")[0]  # an idle session is reused
    begun = call(mcp, "query", {"sql": "BEGIN"}, token=token)["structuredContent"]
    assert begun["command"] == "BEGIN"
    after = call(mcp, "query", {"sql": "SELECT 1 AS one"}, token=token)["structuredContent"]["audit_id"]
    assert after.split(":")[0] != begun["audit_id"].split(":")[0]  # that session was closed (rolled back)


# ---------------------------------------------------------------------- writes through approval


def decide(mcp: McpServer, request_id: str, verdict: str, approver: str = "alice", reason: str = "ok") -> int:
    from pgwarden.testing.endpoint import AUDIENCE

    token = mint(mcp.process.keys["private"], subject=approver, issuer=ISSUER, audience=AUDIENCE,
                 groups=["db-approvers"])
    r = httpx.post(f"http://127.0.0.1:{mcp.process.admin_port}/approvals/api/requests/{request_id}/{verdict}",
                   json={"reason": reason}, headers={"Authorization": f"Bearer {token}"})
    return r.status_code


def _rows(mcp: McpServer, table: str) -> list[tuple]:
    with psycopg.connect(mcp.dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT id, item FROM {table} ORDER BY id").fetchall()


def test_write_tools_only_for_identities_allowed_to_write(mcp):
    def names(groups):
        r = modern(mcp, "tools/list", headers={"Authorization": f"Bearer {mcp.token(groups=groups)}"})
        return [t["name"] for t in r.json()["result"]["tools"]]

    assert names(["ai-agents"])[4:] == ["request_write", "approval_status", "execute_approved"]
    assert names(["readers"]) == ["whoami", "search_schema", "query", "explain"]
    result = call(mcp, "request_write", {"sql": "INSERT INTO mcp_orders VALUES (99, 'x')"},
                  token=mcp.token(groups=["readers"]))
    assert result["structuredContent"]["status"] == "denied"
    assert _rows(mcp, "mcp_orders") == []


def test_write_through_approval_end_to_end(mcp):
    sql = "INSERT INTO mcp_orders VALUES ($1, $2)"
    s = call(mcp, "request_write", {"sql": sql, "params": [1, "book"], "reason": "customer asked */ DROP"})[
        "structuredContent"]
    assert s["status"] == "pending_approval" and s["mode"] == "retry", s
    request_id = s["id"]
    assert _rows(mcp, "mcp_orders") == []
    assert call(mcp, "approval_status", {"id": request_id})["structuredContent"]["status"] == "pending_approval"
    early = call(mcp, "execute_approved", {"id": request_id})  # not approved yet: nothing is sent
    assert early["isError"] is True and early["structuredContent"]["status"] == "pending_approval"
    # nobody approves their own request; another caller cannot see it
    assert decide(mcp, request_id, "approve", approver="agent-1") == 403
    other = modern(mcp, "tools/call", {"name": "approval_status", "arguments": {"id": request_id}},
                   headers={"Authorization": f"Bearer {mcp.token(subject='agent-2')}"})
    assert other.status_code == 400 and "no approval request" in other.json()["error"]["message"]
    assert decide(mcp, request_id, "approve") == 200
    s = call(mcp, "approval_status", {"id": request_id, "wait_seconds": 5})["structuredContent"]
    assert s["status"] == "approved" and s["decided_by"] == "alice"
    s = call(mcp, "execute_approved", {"id": request_id})["structuredContent"]
    assert s["status"] == "executed" and s["command"] == "INSERT 0 1", s
    assert _rows(mcp, "mcp_orders") == [(1, "book")]
    again = call(mcp, "execute_approved", {"id": request_id})
    assert again["isError"] is True and _rows(mcp, "mcp_orders") == [(1, "book")]  # once
    assert "has run already" in again["structuredContent"]["error"]["message"]
    statements = [r for r in mcp.records() if r["type"] == "statement" and "mcp_orders" in r.get("sql", "")]
    assert statements[0]["sql"].startswith("/* reason: customer asked * / DROP */ INSERT")


def test_an_id_of_another_process_is_unknown_with_the_memory_store(mcp):
    r = modern(mcp, "tools/call", {"name": "execute_approved", "arguments": {"id": "0123456789"}})
    assert r.status_code == 400
    assert "unknown to this pgwarden process" in r.json()["error"]["message"]
    assert "approvals.store: memory" in r.json()["error"]["message"]


def test_held_write_runs_when_approved(mcp):
    s = call(mcp, "request_write", {"sql": "INSERT INTO mcp_held VALUES (1, 'lamp')"})["structuredContent"]
    assert s["status"] == "pending_approval" and s["mode"] == "hold", s
    assert call(mcp, "approval_status", {"id": s["id"], "wait_seconds": 0.2})["structuredContent"][
        "status"] == "pending_approval"
    assert _rows(mcp, "mcp_held") == []
    assert decide(mcp, s["id"], "approve") == 200
    done = call(mcp, "approval_status", {"id": s["id"], "wait_seconds": 10})["structuredContent"]
    assert done["status"] == "executed" and done["command"] == "INSERT 0 1", done
    assert _rows(mcp, "mcp_held") == [(1, "lamp")]


@pytest.mark.parametrize("table", ["mcp_orders", "mcp_held"])
def test_approval_denied(mcp, table):
    s = call(mcp, "request_write", {"sql": f"INSERT INTO {table} VALUES (50, 'no')"})["structuredContent"]
    assert s["status"] == "pending_approval"
    assert decide(mcp, s["id"], "deny", reason="not today") == 200
    result = call(mcp, "approval_status", {"id": s["id"], "wait_seconds": 10})
    assert result["isError"] is True
    assert result["structuredContent"]["status"] == "denied", result
    assert "not today" in json.dumps(result)
    assert call(mcp, "execute_approved", {"id": s["id"]})["isError"] is True
    assert (50, "no") not in _rows(mcp, table)


def test_request_write_answers_executed_or_denied_at_once(mcp):
    s = call(mcp, "request_write", {"sql": "UPDATE mcp_customers SET name = name WHERE id = $1", "params": [1]})[
        "structuredContent"]
    assert s["status"] == "executed" and s["command"] == "UPDATE 1"
    s = call(mcp, "request_write", {"sql": "DELETE FROM mcp_customers"})["structuredContent"]
    assert s["status"] == "denied" and s["error"]["sqlstate"] == "42501"
    assert _count(mcp)[0] == 120


def test_url_elicitation_offers_the_inbox(mcp):
    """A 2025-11-25 client that declared URL-mode elicitation is sent to the inbox (-32042); once
    approved, the same call runs the statement once."""
    sid = initialize(mcp, capabilities={"elicitation": {"url": {}}})
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "request_write", "arguments": {"sql": "INSERT INTO mcp_orders VALUES (7, 'pen')"}}}
    r = post(mcp, body, session=sid)
    error = r.json()["error"]
    assert error["code"] == -32042, r.text
    (elicitation,) = error["data"]["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["url"] == "https://approvals.example/inbox/"
    assert decide(mcp, elicitation["elicitationId"], "approve") == 200
    result = post(mcp, body, session=sid).json()["result"]
    assert result["structuredContent"]["status"] == "executed", result
    assert (7, "pen") in _rows(mcp, "mcp_orders")
    # without the capability: pending_approval, the inbox named
    sid = initialize(mcp)
    body["params"]["arguments"]["sql"] = "INSERT INTO mcp_orders VALUES (8, 'ink')"
    s = post(mcp, body, session=sid).json()["result"]["structuredContent"]
    assert s["status"] == "pending_approval" and s["inbox"] == "https://approvals.example/inbox/"


def test_a_held_query_waits_no_longer_than_its_timeout(mcp):
    result = call(mcp, "query", {"sql": "INSERT INTO mcp_held VALUES (77, 'late')", "timeout_ms": 500})
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["sqlstate"] == "57014", result
    assert (77, "late") not in _rows(mcp, "mcp_held")
    from pgwarden.testing.waiting import wait_until

    audit = result["structuredContent"]["audit_id"].split(":")[0]
    states = wait_until(10, lambda: [r["state"] for r in mcp.records() if r["type"] == "approval"
                                     and r["session"] == audit], "the request's records",
                        until=lambda found: "withdrawn" in found)
    assert states == ["requested", "withdrawn"]


def test_copy_from_stdin_ends_at_once(mcp):
    result = call(mcp, "query", {"sql": "COPY mcp_customers FROM STDIN", "timeout_ms": 20000})
    assert result["isError"] is True
    assert "COPY FROM STDIN has no data over MCP" in result["structuredContent"]["error"]["message"]
    assert _count(mcp)[0] == 120


def test_reload_applies_settings_and_keeps_the_address(make_pgwarden):
    """What a reload can change applies at once (allowed origins); its address needs a restart."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    rp = make_pgwarden(mcp={"url": url, "port": port})
    rp.call(rp.app.listen_mcp)
    metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    headers = {"Origin": "https://app.example"}
    assert httpx.get(metadata).json()["resource"] == url
    assert httpx.post(url, headers=headers).status_code == 403
    config = rp.app.config
    assert rp.call(rp.app.reload, attrs.evolve(config, mcp=attrs.evolve(
        config.mcp, allowed_origins=("https://app.example",))))
    assert httpx.post(url, headers=headers).status_code == 401  # past the origin check, to the token's
    assert rp.call(rp.app.reload, attrs.evolve(config, mcp=None))
    assert rp.app.config.mcp is not None and httpx.get(metadata).json()["resource"] == url


def _public_pem(private_key: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("source", ["jwks_file", "public_key_file"])
def test_a_key_rotated_out_is_refused_on_both_doors_after_a_reload(pg_server, tmp_path, source):
    """Red team eight (8c F1): the endpoint kept the keys it first read, so after a rotation
    (old key out of the file, new key in, SIGHUP) it took the revoked key's tokens and refused
    the new key's, while the wire port followed the file. Both doors now verify with the one
    set of keys the reload read (the jwt plugin's)."""
    old_key, old_jwks = generate_key(tmp_path / "old", kid="old-key")
    new_key, new_jwks = generate_key(tmp_path / "new", kid="new-key")
    key_file = tmp_path / "keys"
    key_file.write_bytes(old_jwks.read_bytes() if source == "jwks_file" else _public_pem(old_key))
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    keys = {"private": old_key, "jwks": old_jwks}
    doc = base_config(pg_server, keys, tmp_path, mcp={"url": url, "port": port})
    doc["auth"]["jwt"] = {"issuer": ISSUER, "audience": "pgwarden", source: str(key_file)}
    config = tmp_path / "pgwarden.yaml"
    config.write_text(yaml.safe_dump(doc))
    running = launch(config, keys, tmp_path)
    server = McpServer(running, url, port, pg_server.dsn())

    def wire(key: Path, kid: str) -> bool:
        token = mint(key, subject="agent-1", issuer=ISSUER, audience="pgwarden", groups=["ai-agents"], kid=kid)
        try:
            with psycopg.connect(f"host=127.0.0.1 port={running.port} dbname=appdb user=agent password={token}",
                                 autocommit=True, connect_timeout=10) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    def endpoint(key: Path, kid: str) -> int:
        token = mint(key, subject="agent-1", issuer=ISSUER, audience=url, groups=["ai-agents"], kid=kid)
        return post(server, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "whoami", "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}},
            token, headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                            "Mcp-Name": "whoami"}).status_code

    try:
        # One old-key token is used before the rotation and again after it: no cache keeps it.
        old_token = mint(old_key, subject="agent-1", issuer=ISSUER, audience=url, groups=["ai-agents"],
                         kid="old-key")
        assert (wire(old_key, "old-key"), endpoint(old_key, "old-key")) == (True, 200)
        assert post(server, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, old_token).status_code != 401
        assert (wire(new_key, "new-key"), endpoint(new_key, "new-key")) == (False, 401)
        key_file.write_bytes(new_jwks.read_bytes() if source == "jwks_file" else _public_pem(new_key))
        running.proc.send_signal(signal.SIGHUP)
        running.wait_for_log("reloaded")
        assert (wire(old_key, "old-key"), endpoint(old_key, "old-key")) == (False, 401)
        assert post(server, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, old_token).status_code == 401
        assert (wire(new_key, "new-key"), endpoint(new_key, "new-key")) == (True, 200)
    finally:
        running.stop()
