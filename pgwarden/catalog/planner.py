"""The server's plans of statements, asked over pgwarden's own connection (`ServerPlans`).

Masking checks the columns lineage found against those the server's plan uses (`plans`). The
plan is asked for on a connection of pgwarden's own, with pgwarden's upstream credential (the
role sessions log in as), never on the agent's session: nothing is added to the agent's
traffic, its transaction or its statistics. What the session has and this connection has not
(its search_path, its standard_conforming_strings) is set for each question:

    BEGIN READ ONLY                       -- a function the planner folds cannot write
    SET LOCAL search_path / standard_conforming_strings / plan_cache_mode = force_generic_plan
    SAVEPOINT pgwarden_plan
    Parse (the statement; parameter types when the caller gives them: masking does not have the
           client's declared types, so the server infers them, or answers 42P18)
    EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) EXECUTE ... (NULL for each parameter)
    ROLLBACK TO SAVEPOINT; pg_advisory_unlock_all(); DEALLOCATE ALL; ROLLBACK
                                          -- (a statement without parameters: EXPLAIN of its text)

A generic plan keeps the parameters as ``$n``: no NULL is folded into a condition and no branch
is planned away. An answer is kept per (text, search_path, standard_conforming_strings,
parameter types, catalog generation): an agent's retried statement costs no second question.

What the session has that this connection cannot have (a temporary table, a relation created in
the session's open transaction, a cursor for ``WHERE CURRENT OF``) makes the server refuse the
question: `PlanRefused` with its SQLSTATE; so does a lock the session's open transaction holds (its
DDL), after ``lock_timeout`` (55P03). A connection that fails is `PlanUnavailable`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from pgwarden.catalog.live import connection_parameters
from pgwarden.catalog.plans import PlanUses, plan_uses
from pgwarden.config import Upstream

_NAME = b"pgwarden_plan"
#: Answers not kept: a lock not granted in time (the next question may be planned)
_TRANSIENT = frozenset({"55P03"})
_EXPLAIN = b"EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) "
LOCK_TIMEOUT_MS = 200
APPLICATION_NAME = "pgwarden plans"


@attrs.frozen
class PlanRefused:
    """The server would not plan the statement on pgwarden's connection (SQLSTATE ``sqlstate``)."""

    sqlstate: str
    message: str


@attrs.frozen
class PlanUnavailable:
    """pgwarden could not ask (the connection failed, or took too long)."""

    reason: str


PlanAnswer = PlanUses | PlanRefused | PlanUnavailable


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ServerPlans:
    """Plans of statements, as `PlanUses`, from the upstream server (see the module's docstring).

    ``columns(schema, table)`` lists a relation's columns from the catalog in use; ``generation``
    says which catalog that is (answers are kept per generation).
    """

    def __init__(self, upstream: Upstream, reactor: Any, columns: Callable[[str, str], Any],
                 generation: Callable[[], int], *, timeout_s: float = 5.0, keep: int = 2000,
                 run_in_thread: Callable[[Callable[[], Any]], defer.Deferred] | None = None) -> None:
        self._upstream = upstream
        self._params = connection_parameters(upstream, 30.0) | {"application_name": APPLICATION_NAME}
        self._columns = columns
        self._generation = generation
        self._timeout_ms = int(timeout_s * 1000)
        self._keep = keep
        self._answers: OrderedDict[tuple, PlanUses | PlanRefused] = OrderedDict()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._run_in_thread = run_in_thread or (
            lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f))
        self.asked = 0  # questions that went to the server (tests and metrics read it)

    def plan(self, sql: str, search_path: tuple[str, ...], standard_strings: bool = True,
             param_types: tuple[int, ...] = (),
             settings: tuple[tuple[str, str], ...] = (),
             unseen: tuple[str, ...] = ()) -> defer.Deferred[PlanAnswer]:
        """A Deferred of what the server's plan of ``sql`` uses (never fails: answers instead).
        ``settings``: custom settings (``app.tenant``) the session has, as (name, value): set for
        the question too (the planner computes ``current_setting('app.k')::int`` in a LIMIT).
        ``unseen``: tables (``schema.table``) that code the statement runs reads out of the
        plan's sight (a function's body the planner does not inline): their indexes are read too
        (`PlanUses.unseen_orders`)."""
        key = (sql, search_path, standard_strings, param_types, settings, unseen, self._generation())
        known = self._answers.get(key)
        if known is not None:
            self._answers.move_to_end(key)
            return defer.succeed(known)

        self.asked += 1

        def ask() -> object:
            return self._ask(sql, search_path, standard_strings, param_types, settings, unseen)

        def answered(raw: object) -> PlanAnswer:
            if isinstance(raw, PlanRefused | PlanUnavailable):
                answer: PlanAnswer = raw
            else:
                answer = plan_uses(raw, self._columns)
            if not isinstance(answer, PlanUnavailable) and not (
                    isinstance(answer, PlanRefused) and answer.sqlstate in _TRANSIENT):
                # (a lock timed out is not the statement's answer: a session's own uncommitted DDL
                # held it, and its EXECUTE after the COMMIT, asked again, is planned; red team twelve)
                self._answers[key] = answer
                while len(self._answers) > self._keep:
                    self._answers.popitem(last=False)
            return answer

        def failed(failure: Any) -> PlanAnswer:
            return PlanUnavailable(f"{failure.type.__name__}")

        asking: defer.Deferred[Any] = self._run_in_thread(ask)
        asking.addCallback(answered).addErrback(failed)
        return asking

    def close(self) -> defer.Deferred:
        def close() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

        return self._run_in_thread(close)

    # ------------------------------------------------------------------ in a worker thread

    def _ask(self, sql: str, search_path: tuple[str, ...], standard_strings: bool,
             param_types: tuple[int, ...], settings: tuple[tuple[str, str], ...] = (),
             unseen: tuple[str, ...] = ()) -> object:
        import psycopg

        password = None
        with self._lock:
            try:
                password = self._upstream.read_password()
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = psycopg.connect(**self._params, password=password or "",
                                                        autocommit=True, prepare_threshold=None)
                    conn.execute(f"SET statement_timeout = {self._timeout_ms}")
                    # A lock the session's own open transaction holds (its DDL) is never released
                    # while the session waits for this answer: not waited for long.
                    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
                return self._explain(conn, sql, search_path, standard_strings, param_types, settings, unseen)
            except psycopg.OperationalError as e:
                self._drop()
                text = str(e).replace(password, "[password]") if password else str(e)
                return PlanUnavailable(f"{type(e).__name__}: {text.strip()}")
            except psycopg.Error as e:
                self._drop()
                return PlanUnavailable(f"{type(e).__name__}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001, S110 - a broken connection is dropped whatever it says
                pass

    @staticmethod
    def _explain(conn: Any, sql: str, search_path: tuple[str, ...], standard_strings: bool,
                 param_types: tuple[int, ...], settings: tuple[tuple[str, str], ...] = (),
                 unseen: tuple[str, ...] = ()) -> object:
        """The plan as EXPLAIN's JSON, or `PlanRefused`. One network round trip for a statement
        without parameters (a pipeline: the transaction, the settings, EXPLAIN; then its end); five
        for one with them: the settings, the statement prepared, described, explained with NULLs
        under a generic plan, the end. Nothing the statement's code did that ROLLBACK does not undo
        outlives the transaction (`_END`)."""
        import psycopg
        from psycopg import pq

        path = ", ".join(map(_quoted, search_path)) or "''"
        escape = pq.Escaping(conn.pgconn).escape_literal  # (before the session's standard_conforming_strings)
        custom = tuple(f"SELECT set_config({escape(name.encode()).decode()}, {escape(value.encode()).decode()}, true)"
                       for name, value in settings)
        setup = ("BEGIN READ ONLY", *custom, f"SET LOCAL search_path TO {path}",
                 f"SET LOCAL standard_conforming_strings TO {'on' if standard_strings else 'off'}",
                 "SET LOCAL plan_cache_mode TO force_generic_plan")
        setup = (*setup, "SAVEPOINT pgwarden_plan")
        try:
            if not param_types and not _has_parameters(sql, standard_strings):
                with conn.pipeline():  # (the end after it: an error inside is then raised once)
                    for command in setup:
                        conn.execute(command)
                    cur = conn.execute(_EXPLAIN + sql.encode())
                row = cur.fetchone()
                return _with_index_keys(conn, row[0] if row is not None else [], unseen)
            pg = conn.pgconn
            pg.exec_("; ".join(setup).encode())
            done = pg.prepare(_NAME, sql.encode(), list(param_types) or None)
            if done.status != pq.ExecStatus.COMMAND_OK:
                return PlanRefused(_field(done, b"C"), _field(done, b"M"))
            described = pg.describe_prepared(_NAME)
            params = described.nparams if described.status == pq.ExecStatus.COMMAND_OK else 0
            args = f"({', '.join(['NULL'] * params)})" if params else ""
            result = pg.exec_(_EXPLAIN + b"EXECUTE " + _NAME + args.encode())
            if result.status != pq.ExecStatus.TUPLES_OK:
                return PlanRefused(_field(result, b"C"), _field(result, b"M"))
            raw = result.get_value(0, 0)
            return _with_index_keys(conn, json.loads(bytes(raw).decode()) if raw is not None else [], unseen)
        except psycopg.errors.Error as e:
            if isinstance(e, psycopg.OperationalError) and not e.sqlstate:
                raise  # the connection, not the statement
            return PlanRefused(e.sqlstate or "", str(e.diag.message_primary or ""))
        finally:
            if not conn.closed:
                _end(conn)


#: The plan nodes that return rows in their index's order (a bitmap scan returns them in the
#: table's order).
ORDERED_SCANS = frozenset({"Index Scan", "Index Only Scan"})

#: The indexes of each relation a question names (the plan's scans', `unseen` tables'), by
#: (schema, table): each index's name; its key columns (not its INCLUDE columns) in the key's
#: order: a key column's own, every column an expression key depends on (pg_depend; with the
#: predicate's: more, never fewer; first, as if they led the key); every column it holds (key,
#: INCLUDE, expressions', predicate's); and its table's columns that alone tell its rows apart
#: (NOT NULL, a unique index of that column alone, immediate, not partial: an ORDER BY on one
#: fixes the rows' order whatever the scan's). In the question's own transaction: as the
#: server's catalog says when it planned.
_INDEXES = """
SELECT n.nspname::text, t.relname::text, c.relname::text,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
             WHERE a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1])
                    OR 0 = ANY (i.indkey[0:i.indnkeyatts - 1])
                       AND EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.indexrelid
                                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                     AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum))
             ORDER BY COALESCE(pg_catalog.array_position((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts - 1],
                                                         a.attnum), -1),
                      a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
             WHERE a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.attnum = ANY (i.indkey)
                    OR EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                               WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.indexrelid
                                 AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                 AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum))
             ORDER BY a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index AS u
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = u.indrelid AND a.attnum = u.indkey[0]
             WHERE u.indrelid = i.indrelid AND u.indisunique AND u.indimmediate AND u.indnkeyatts = 1
               AND u.indpred IS NULL AND u.indkey[0] > 0 AND a.attnotnull)
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_class AS t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE (n.nspname::text, t.relname::text) IN
      (SELECT * FROM ROWS FROM (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[])))"""


#: Whether a schema but pg_catalog has a function named as an order-blind aggregate
#: (`plans.ORDERLESS_AGGREGATES`): one on the session's search_path would print as the built-in does.
_SHADOWED = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_proc
               WHERE proname::text = ANY (%s::text[]) AND pronamespace <> 'pg_catalog'::pg_catalog.regnamespace)"""


def _scanned(node: dict[str, Any]) -> tuple[str, str] | None:
    """The relation a scan node reads, as (schema, name); None for other nodes."""
    kind = str(node.get("Node Type", ""))
    if "Relation Name" not in node or not kind.endswith("Scan"):
        return None
    return str(node.get("Schema", "")), str(node["Relation Name"])


def _with_index_keys(conn: Any, explained: object, unseen: tuple[str, ...] = ()) -> object:
    """``explained`` with what the catalog says of the indexes of the relations it scans, as the
    server's catalog says in the question's own transaction:

    * each node of `ORDERED_SCANS` gets its index's key columns (`INDEX_KEYS`): such a scan
      returns its rows in the order of those columns (an index on ``(ssn, id)`` returns ``SELECT
      id FROM users`` in SSN order). An index the catalog does not show gets None;
    * every scan of a relation gets the relation's indexes (`RELATION_INDEXES`: each one's key
      columns and every column it holds): the plan the session's statement gets may scan another
      of them than this question's (a parameter's value makes a custom plan; a cursor is planned
      for its first rows; the statistics change after this answer was kept);
    * the first entry gets the indexes of ``unseen`` (`UNSEEN_INDEXES`, by ``schema.table``): the
      tables code the statement runs reads in plans of its own (a function's body)."""
    from pgwarden.catalog.plans import (
        BUILTIN_AGGREGATES,
        INDEX_KEYS,
        ORDERLESS_AGGREGATES,
        RELATION_INDEXES,
        UNIQUE_KEYS,
        UNSEEN_INDEXES,
        plan_nodes,
    )

    scans = [(node, relation) for node in plan_nodes(explained) if (relation := _scanned(node)) is not None]
    hidden = sorted({(schema, name) for schema, _, name in (t.partition(".") for t in unseen) if name})
    if not scans and not hidden:
        return explained
    wanted = sorted({relation for _, relation in scans} | set(hidden))
    import psycopg

    try:
        conn.execute("SET LOCAL search_path TO pg_catalog")  # (not the session's: its operators, its functions)
        rows = conn.execute(_INDEXES, ([w[0] for w in wanted], [w[1] for w in wanted])).fetchall()
        aggregates = [node for node in plan_nodes(explained)
                      if node.get("Node Type") == "Aggregate" and node.get("Strategy") == "Plain"]
        if aggregates and scans:
            row = conn.execute(_SHADOWED, (sorted(ORDERLESS_AGGREGATES),)).fetchone()
            for node in aggregates:
                node[BUILTIN_AGGREGATES] = row is not None and row[0] is False
    except psycopg.errors.Error as e:
        # (pgwarden's own question failing, not the statement: never a refusal left to lineage)
        return PlanUnavailable(f"the index keys could not be read: {type(e).__name__}")
    indexes: dict[tuple[str, str], list[list[list[str]]]] = {}
    keys: dict[tuple[str, str], list[str]] = {}
    unique: dict[tuple[str, str], list[str]] = {}
    for schema, table, index, key, columns, alone in rows:
        indexes.setdefault((schema, table), []).append([list(key), list(columns)])
        keys[(schema, index)] = list(key)
        unique[(schema, table)] = list(alone)
    for node, relation in scans:
        node[RELATION_INDEXES] = indexes.get(relation, [])
        node[UNIQUE_KEYS] = unique.get(relation, [])
        if node.get("Node Type") in ORDERED_SCANS:
            node[INDEX_KEYS] = keys.get((relation[0], str(node.get("Index Name", ""))))
    if hidden and isinstance(explained, list) and explained and isinstance(explained[0], dict):
        explained[0][UNSEEN_INDEXES] = {f"{s}.{t}": indexes.get((s, t), []) for s, t in hidden}
    return explained


# What ends a question, inside its transaction (with PgBouncer between pgwarden and the server, a
# statement after it may reach another server connection). Planning runs the statement's IMMUTABLE
# and STABLE functions (folded, or computed for the estimates), and what their code does that
# ROLLBACK does not undo would outlive the question on this connection, with the upstream's
# credential: a session-level advisory lock (its key, shown by pg_locks to every session, was a
# masked value: red team eight), a prepared statement a VOLATILE function they call made (one
# named pgwarden_plan would make every later question fail). Settings set_config'd, LISTEN, WITH
# HOLD cursors and temporary tables are undone by ROLLBACK, or refused in a read-only transaction.
_END = (b"ROLLBACK TO SAVEPOINT pgwarden_plan; SELECT pg_catalog.pg_advisory_unlock_all(); DEALLOCATE ALL; "
        b"ROLLBACK")


def _end(conn: Any) -> None:
    """Ends a question's transaction, leaving nothing of what it ran (`_END`)."""
    from psycopg import pq

    pg = conn.pgconn
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        pg.exec_(_END)
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        # (the savepoint was not reached: the question's own settings failed, nothing of the
        # statement ran)
        pg.exec_(b"ROLLBACK")


def _has_parameters(sql: str, standard_strings: bool) -> bool:
    """Whether ``sql`` has a ``$n`` parameter, by its parse tree under the session's lexer settings
    (one that does not parse has none the server would accept either)."""
    from pgwarden.sql.lexer import LexerSettings, parse_json

    try:
        return '"ParamRef"' in parse_json(sql, LexerSettings(standard_conforming_strings=standard_strings))
    except Exception:  # noqa: BLE001 - the server's own answer will say what is wrong with it
        return False


def _field(result: Any, code: bytes) -> str:
    value = result.error_field(ord(code)) if isinstance(code, bytes) else None
    return bytes(value).decode("utf-8", "replace") if value else ""
