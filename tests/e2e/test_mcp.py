"""The MCP endpoint, end to end: `pgwarden run` with ``mcp:`` in front of the test PostgreSQL.

One pgwarden for the module. The official MCP Python SDK's client (asyncio, httpx) speaks to it
in both revision families; raw HTTP (httpx) covers what a conforming client never sends (bad
tokens, wrong audiences, headers that disagree with the body, foreign origins). Refusals are
checked on the database too: a refused statement changed nothing.
"""

from __future__ import annotations

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
