"""The impact preview of an approval request: EXPLAIN of the statement, run by pgwarden itself.

What an approver most wants to know — how many rows, which tables — comes from the planner
without running anything: ``EXPLAIN (VERBOSE, FORMAT JSON)``, never ANALYZE. It runs on
pgwarden's own connection (the catalog's way: psycopg in a worker thread, pgwarden's
credential read at each connection, never in an error text) and inside a READ ONLY transaction
that is rolled back, with a statement_timeout. Parameterised statements get the generic plan
(their values unknown to the planner): ``EXPLAIN (GENERIC_PLAN)`` from PostgreSQL 16, before
that a PREPAREd statement under ``plan_cache_mode = force_generic_plan`` explained with NULLs.

Only one statement is ever explained, sent with the extended protocol (PQexecParams), so text
that smuggles a second statement (``...; COMMIT; DROP ...``) is an error, never run. A preview
that fails says why and never blocks the request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pglast.parser import ParseError, split
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from pgwarden.catalog.live import connection_parameters
from pgwarden.config import Upstream
from pgwarden_plugins.approve.store import Preview

APPLICATION_NAME = "pgwarden approval preview"
_PREPARED = "pgwarden_approval_preview"


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, "[password]") if password else text


def summarise(plan_json: str, generic: bool) -> Preview:
    """Rows, cost and tables written, from EXPLAIN (FORMAT JSON)'s output."""
    top = json.loads(plan_json)[0]["Plan"]
    rows = top.get("Plan Rows")
    if top.get("Node Type") == "ModifyTable" and top.get("Plans"):
        rows = top["Plans"][0].get("Plan Rows")  # the rows it would write, not those it returns
    writes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Node Type") == "ModifyTable" and node.get("Relation Name"):
            name = f"{node.get('Schema', 'public')}.{node['Relation Name']}"
            if name not in writes:
                writes.append(name)
        for child in node.get("Plans", ()):
            walk(child)

    walk(top)
    return Preview(True, rows=rows, cost=top.get("Total Cost"), writes=tuple(writes), plan=plan_json,
                   generic=generic)


class Previewer:
    """Explains statements on one connection of pgwarden's own, one at a time."""

    def __init__(self, upstream: Upstream, reactor: Any, timeout_s: float,
                 run_in_thread: Callable[[Callable[[], Preview]], Deferred[Preview]] | None = None) -> None:
        self._upstream = upstream
        self._reactor = reactor
        self.timeout_s = timeout_s
        self._params = connection_parameters(upstream, max(timeout_s, 2.0))
        self._params["application_name"] = APPLICATION_NAME
        self._run = run_in_thread or (lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f))
        self._lock = threading.Lock()
        self._conn: Any = None

    def preview(self, sql: str, parameters: Sequence[str | None] | None,
                search_path: str | None = None) -> Deferred[Preview]:
        """The preview of ``sql`` (never fails: a failure is a Preview that says why), its names
        read under ``search_path`` (a value as ``SET search_path`` takes it: the session's that
        sent it), or pgwarden's own connection's when None."""
        try:
            if len(split(sql)) != 1:
                return succeed(Preview(False, error="only a single statement can be previewed"))
        except ParseError as e:
            return succeed(Preview(False, error=f"does not parse: {e}"))
        d = self._run(lambda: self._explain(sql, len(parameters or ()), search_path))
        d.addTimeout(self.timeout_s + 1, self._reactor)

        def failed(f: Failure) -> Preview:
            return Preview(False, error=f"no preview: {f.getErrorMessage() or getattr(f.type, '__name__', 'error')}")

        return d.addErrback(failed)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ in the worker thread

    def _explain(self, sql: str, nparams: int, search_path: str | None = None) -> Preview:
        password = None
        with self._lock:
            try:
                password = self._upstream.read_password()
                return self._explain_on(self._connection(password), sql, nparams, search_path)
            except Exception as e:  # noqa: BLE001 - a preview never fails the request; its text is all we keep
                if self._conn is not None and self._conn.closed:
                    self._conn = None
                return Preview(False, error=_scrub(f"{type(e).__name__}: {e}".strip(), password))

    def _connection(self, password: str | None) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(**self._params, password=password or "", autocommit=True,
                                         prepare_threshold=None)
        return self._conn

    def _explain_on(self, conn: Any, sql: str, nparams: int, search_path: str | None = None) -> Preview:
        from psycopg import pq

        pg = conn.pgconn

        def run(command: str) -> Any:
            # PQexecParams: the extended protocol, which takes exactly one statement.
            res = pg.exec_params(command.encode(), [])
            if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                raise RuntimeError(res.error_message.decode(errors="replace").strip())
            return res

        run("BEGIN READ ONLY")
        try:
            run(f"SET LOCAL statement_timeout = {int(self.timeout_s * 1000)}")
            if search_path is not None:  # the names read as the session that sent it reads them
                res = pg.exec_params(b"SELECT pg_catalog.set_config('search_path', $1, true)",
                                     [search_path.encode()])
                if res.status != pq.ExecStatus.TUPLES_OK:
                    raise RuntimeError(res.error_message.decode(errors="replace").strip())
            if nparams == 0:
                res = run("EXPLAIN (VERBOSE, FORMAT JSON) " + sql)
            elif pg.server_version >= 160000:
                res = run("EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) " + sql)
            else:
                run("SET LOCAL plan_cache_mode = force_generic_plan")
                run(f"PREPARE {_PREPARED} AS " + sql)
                res = run(f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {_PREPARED}({', '.join(['NULL'] * nparams)})")
            return summarise(res.get_value(0, 0).decode(), nparams > 0)
        finally:
            pg.exec_params(b"ROLLBACK", [])
            if nparams:  # a prepared statement outlives its transaction: gone, whatever happened
                pg.exec_params(f"DEALLOCATE {_PREPARED}".encode(), [])
