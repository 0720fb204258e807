"""`pgwarden approvals list|show|approve|deny|serve`: the approvals API from a terminal.

The commands are clients of the JSON API (`pgwarden_plugins.approve.api`), so they decide
under the same rules as the inbox, with the approver's own token: ``--token-file`` or
``PGWARDEN_TOKEN`` (never an argument: it would show in ``ps``). Where: ``--url``, or
``PGWARDEN_APPROVALS_URL``, or the admin port of ``-c FILE``. ``serve`` runs the API (and
the inbox) on its own, for a store shared by many sidecars.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs

from pgwarden.marks import copy_in_note, cut_note, foreign, longest_blank, longest_unbroken, marked

API_PATH = "/approvals/api"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class ApiClient:
    """A synchronous client of the approvals API (the CLI's; tests use it too)."""

    base: str  # http://host:port/approvals/api
    token: str = attrs.field(repr=False)
    timeout_s: float = 30.0

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310 - http(s) only
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = str(e.reason)
            raise ApiError(e.code, message) from None

    def pending(self) -> list[dict[str, Any]]:
        return self._call("GET", "/requests")["requests"]

    def ended(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", f"/requests?state=ended&limit={limit}")["requests"]

    def show(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"/requests/{request_id}")

    def approve(self, request_id: str, reason: str | None = None, window_minutes: int | None = None,
                by_fingerprint_only: bool = False) -> dict[str, Any]:
        grant: dict[str, Any] = {"kind": "once"}
        if window_minutes is not None:
            grant = {"kind": "window", "minutes": window_minutes}
        if by_fingerprint_only:
            grant["by_fingerprint_only"] = True
        return self._call("POST", f"/requests/{request_id}/approve", {"reason": reason, "grant": grant})

    def deny(self, request_id: str, reason: str | None) -> dict[str, Any]:
        return self._call("POST", f"/requests/{request_id}/deny", {"reason": reason})


# ---------------------------------------------------------------------------- rendering


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}min"
    return f"{seconds // 3600}h"


def render_line(r: dict[str, Any], now: float) -> str:
    """One request on one line; what an agent or a person wrote with its hidden characters
    (`pgwarden.marks`: escape sequences, bidirectional overrides, look-alike spaces) as marks."""
    sql = " ".join(marked(str(r["sql"])).split())
    sql = sql if len(sql) <= 60 else sql[:59] + "…"
    when = f"expires in {_age(r['expires'] - now)}" if r["state"] == "pending" else r["state"]
    return marked(f"{r['id']}  {r['subject']:<16} {_age(now - r['created']):>6} ago  {when:<18}") + f" {sql}"


def render(r: dict[str, Any], now: float) -> str:
    """One request for a terminal, hidden characters as marks (as in the inbox: red team twelve
    hid a DELETE of every row behind escape sequences that rewrote the line)."""
    out = [f"request {r['id']}: {r['state']}",
           f"  from      {r['subject']} (groups: {', '.join(r['groups']) or '-'}), session {r['session']}",
           f"  rule      {r.get('policy')}/{r.get('rule')}: {r.get('reason')}",
           f"  created   {_age(now - r['created'])} ago; expires {_age(r['expires'] - now)} from now",
           f"  mode      {r['mode']}; approvals needed: {r['approvals_needed']}",
           "  sql       " + str(r["sql"]).replace("\n", "\n            ")]
    blank = longest_blank(str(r["sql"]))
    if blank:  # the statement goes on far below: say so before it scrolls by
        out.insert(5, f"  note      the statement holds {blank} blank characters in a row: read it to its end")
    unbroken = longest_unbroken(str(r["sql"]))
    if unbroken:  # a terminal wraps it, but it may scroll by: say so before it does
        out.insert(5, f"  note      the statement holds {unbroken} characters without a blank in a row: read it to "
                      "its end")
    copying = copy_in_note(r.get("kinds") or (), r.get("tables") or ())
    if copying:  # the rows it writes come after the approval (red team fifteen)
        out.insert(5, "  note      " + copying)
    named = foreign(str(r["sql"]))
    if named:  # names that look alike may be others: a Cyrillic "і" is not "i"
        out.append("  non-ASCII " + "; ".join(named))
    if r.get("parameters") is not None:
        out.append(f"  params    {json.dumps(r['parameters'], ensure_ascii=False)}")
        sizes = r.get("parameter_sizes") or []
        readings = r.get("parameter_readings") or []
        for i, value in enumerate(r["parameters"]):
            if i < len(readings) and readings[i]:  # binary values: their type and value (red team fifteen)
                out.append(f"  ${i + 1} {readings[i]}")
            note = cut_note(value, sizes[i] if i < len(sizes) else None)
            if note:
                out.append(f"  ${i + 1} {note}")
    preview = r.get("preview")
    if preview:
        if preview["ok"]:
            plan = "generic plan" if preview.get("generic") else "plan"
            out.append(f"  preview   ~{preview.get('rows')} rows, cost {preview.get('cost')}, writes "
                       f"{', '.join(preview.get('writes') or []) or 'nothing'} ({plan})")
        else:
            out.append(f"  preview   failed: {preview.get('error')}")
    for d in r.get("decisions") or []:
        verb = "approved" if d["approved"] else "denied"
        out.append(f"  decision  {verb} by {d['approver']}: {d.get('reason') or '-'}")
    if r.get("closed_reason") and r["state"] in ("expired", "withdrawn"):
        out.append(f"  ended     {r['closed_reason']}")
    return marked("\n".join(out))


# ---------------------------------------------------------------------------- commands


def _client(args: Any) -> ApiClient | None:
    base = args.url or os.environ.get("PGWARDEN_APPROVALS_URL")
    if not base and args.config:
        from pgwarden.config import load_config

        admin = load_config(args.config).admin
        base = f"http://{admin.host}:{admin.port}"
    if not base:
        print("pgwarden approvals: say where the API is: --url, PGWARDEN_APPROVALS_URL or -c FILE", file=sys.stderr)
        return None
    if not base.rstrip("/").endswith(API_PATH):
        base = base.rstrip("/") + API_PATH
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    else:
        token = os.environ.get("PGWARDEN_TOKEN", "").strip()
    if not token:
        print("pgwarden approvals: an approver's token is needed: --token-file FILE or PGWARDEN_TOKEN", file=sys.stderr)
        return None
    return ApiClient(base, token)


def _run(args: Any) -> int:
    client = _client(args)
    if client is None:
        return 2
    now = time.time()
    try:
        if args.approvals_command == "list":
            found = client.ended(args.limit) if args.ended else client.pending()
            if args.json:
                print(json.dumps(found, indent=1))
            elif not found:
                print("no ended requests" if args.ended else "no pending requests")
            for r in [] if args.json else found:
                print(render_line(r, now))
            return 0
        if args.approvals_command == "show":
            r = client.show(args.id)
        elif args.approvals_command == "approve":
            r = client.approve(args.id, args.reason, args.window, args.fingerprint_only)
        else:
            r = client.deny(args.id, args.reason)
    except ApiError as e:
        print(f"pgwarden approvals: {e} (HTTP {e.status})", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"pgwarden approvals: cannot reach {client.base}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1
    print(json.dumps(r, indent=1) if getattr(args, "json", False) else render(r, now))
    return 0


def _serve(args: Any) -> int:
    from twisted.internet import reactor
    from twisted.web import server

    from pgwarden.config import ConfigError, load_config
    from pgwarden.plugins import PluginError, PluginHost
    from pgwarden_plugins.approve import Approving

    try:
        config = load_config(args.config)
        if config.approvals.store == "memory":
            print("pgwarden approvals serve: approvals.store is memory: its requests live in the sidecar, whose "
                  "admin port serves them (/approvals); serve is for a store shared by sidecars", file=sys.stderr)
            return 2
        host = PluginHost(config, reactor, only=("approve", "jwt"))
        plugin = host.pm.get_plugin("approve")
        if not isinstance(plugin, Approving):
            print("pgwarden approvals serve: the approve plugin is not loaded", file=sys.stderr)
            return 2
        host.configure(host.config or config)
    except (ConfigError, PluginError) as e:
        print(e, file=sys.stderr)
        return 2
    root = plugin.pgwarden_admin_resources()["approvals"]
    from twisted.web.resource import Resource

    top = Resource()
    top.putChild(b"approvals", root)
    site = server.Site(top)
    site.displayTracebacks = False
    port = reactor.listenTCP(args.port, site, interface=args.host)  # type: ignore[arg-type]
    print(f"pgwarden approvals: serving http://{args.host}:{port.getHost().port}/approvals",  # type: ignore[attr-defined]
          flush=True)
    reactor.run()
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("approvals", help="list, show, approve and deny approval requests (the approvals API)")
    inner = p.add_subparsers(dest="approvals_command", required=True)

    def common(q: Any) -> None:
        q.add_argument("--url", help="the API's base URL (default: PGWARDEN_APPROVALS_URL, or the admin port of -c)")
        q.add_argument("-c", "--config", help="a pgwarden config file: its admin host and port")
        q.add_argument("--token-file", help="a file holding your approver token (default: PGWARDEN_TOKEN)")
        q.set_defaults(func=_run)

    q = inner.add_parser("list", help="pending requests (or --ended)")
    common(q)
    q.add_argument("--ended", action="store_true", help="requests that ended, newest first")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q = inner.add_parser("show", help="one request, with its impact preview")
    common(q)
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q = inner.add_parser("approve", help="approve a request")
    common(q)
    q.add_argument("id")
    q.add_argument("--reason")
    q.add_argument("--window", type=int, metavar="MINUTES",
                   help="retry mode: let the same statement through for this many minutes (default: once)")
    q.add_argument("--fingerprint-only", action="store_true",
                   help="with --window: any constants and parameters, the same statement otherwise")
    q = inner.add_parser("deny", help="deny a request (a reason is required)")
    common(q)
    q.add_argument("id")
    q.add_argument("--reason", required=True)
    q = inner.add_parser("serve", help="serve the approvals API and inbox alone (a shared store)")
    q.add_argument("-c", "--config", required=True)
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=9188)
    q.set_defaults(func=_serve)
