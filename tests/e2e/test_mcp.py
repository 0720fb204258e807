"""The MCP endpoint, end to end: `pgwarden run` with ``mcp:`` in front of the test PostgreSQL.

One pgwarden for the module. The official MCP Python SDK's client (asyncio, httpx) speaks to it
in both revision families; raw HTTP (httpx) covers what a conforming client never sends (bad
tokens, wrong audiences, headers that disagree with the body, foreign origins). Refusals are
checked on the database too: a refused statement changed nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
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
from pgwarden.tokens import mint

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
                      mcp={"url": url, "port": port, "allowed_origins": ["http://localhost:3000"]})
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump(doc))
    running = launch(config, signing_keys, directory)
    try:
        yield McpServer(running, url, port, pg_server.dsn())
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
