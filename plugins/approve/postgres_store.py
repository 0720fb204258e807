"""The ``postgres`` approval store: one table shared by every sidecar of a fleet and the inbox.

Same contract as the memory store (`store.ApprovalStore`); what changes is that several
processes act on one request at once, so every change is one transaction that the database
serialises:

- a decision locks the request's row (``SELECT ... FOR UPDATE``), judges it with the one
  `store.apply_decision` on the request as stored, records the approver in ``decisions``
  (primary key: one approver counts once) and writes the request back ``WHERE state =
  'pending'``; two approvers deciding through two sidecars are taken one after the other,
  and the second is judged on what the first left;
- expiry and withdrawal are one ``UPDATE ... WHERE state = 'pending' RETURNING``: against a
  decision made at the same moment, exactly one of them ends the request, and the other
  gets the request as it ended;
- a ``once`` grant is marked used in the transaction that takes it (row locked), so two
  sidecars cannot both let the same approved statement through.
- the one run of an approved retry-mode statement that a caller sends itself (the MCP
  endpoint's ``execute_approved``) is claimed with one ``UPDATE ... WHERE NOT executed
  RETURNING``: of two sidecars claiming at once, the second waits for the first's row lock,
  reads the row again and no longer qualifies.

A request's change is announced by the table's trigger (NOTIFY on the schema's channel,
payload the id): the sidecar whose statement waits reads the request again and wakes its
watcher. When the listen connection was lost, whatever was decided meanwhile is read back as
soon as it listens again (`_catch_up`), so no decision is missed.

When the store cannot be reached, `submit` (and every other call) fails with
`StoreUnavailable` at once — the approval plugin refuses the statement, fail closed — and
`health` says why, for /readyz; statements already waiting keep waiting (their expiry is the
plugin's timer) and get their decision once the store is back.
"""

from __future__ import annotations

import attrs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.config import ApprovalsPostgres
from pgwarden_plugins.approve.pg_link import Link, ThreadedReactor
from pgwarden_plugins.approve.store import (
    ApprovalRules,
    Decision,
    DecisionRefused,
    StoredRequest,
    apply_decision,
    covers,
    from_json,
    to_json,
)

log = Logger(namespace="pgwarden.approvals")

#: The columns written beside ``request`` (the rest of the row).
_COLUMNS = ("state", "mode", "subject", "fingerprint", "params_hash", "created_at", "expires_at", "closed_at",
            "grant_until", "used")


def _ts(value: float | None) -> sql.Composable:
    return sql.SQL("pg_catalog.to_timestamp({})").format(sql.Literal(value)) if value is not None \
        else sql.SQL("NULL")


def _row(request: StoredRequest) -> list[sql.Composable]:
    """The values of `_COLUMNS` and ``request`` for ``request``."""
    return [sql.Literal(request.state), sql.Literal(request.mode), sql.Literal(request.subject),
            sql.Literal(request.fingerprint), sql.Literal(request.params_hash), _ts(request.created),
            _ts(request.expires), _ts(request.closed_at), _ts(request.grant_until), sql.Literal(request.used),
            sql.Literal(Jsonb(to_json(request)))]


class PostgresStore:
    """An `ApprovalStore` in a PostgreSQL database (see the module's docstring).

    ``start()`` connects, migrates the schema and starts listening; ``stop()`` closes.
    """

    def __init__(self, settings: ApprovalsPostgres, reactor: ThreadedReactor) -> None:
        self._reactor = reactor
        self._schema = settings.schema
        self._link = Link(settings, reactor, on_notify=self._notified, on_listening=self._catch_up)
        self._watchers: dict[str, list[Deferred[StoredRequest]]] = {}

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self._schema} {self.health() or 'ok'}>"

    @classmethod
    def opened(cls, settings: ApprovalsPostgres, reactor: ThreadedReactor) -> PostgresStore:
        """A store already connecting (the approve plugin's factory): until its first connection
        is made, requests wait for it; if that fails, they are refused and `health` says why."""
        store = cls(settings, reactor)
        store.start()
        return store

    def close(self) -> None:
        """Stops (the approve plugin's `pgwarden_stop`): the threads end within a moment."""
        self.stop()

    def start(self) -> Deferred[None]:
        """Fires after the first connection attempt, whether it worked or not (`health` says)."""
        return self._link.start()

    def stop(self) -> Deferred[None]:
        return self._link.stop()

    def health(self) -> str | None:
        return self._link.problem

    def _t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self._schema, name)

    # ------------------------------------------------------------------ the contract

    def submit(self, request: StoredRequest) -> Deferred[None]:
        query = sql.SQL("INSERT INTO {} (id, {}, request) VALUES ({}, {})").format(
            self._t("requests"), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.Literal(request.id),
            sql.SQL(", ").join(_row(request)))

        def work(conn: psycopg.Connection) -> None:
            try:
                conn.execute(query)
            except psycopg.errors.UniqueViolation:
                raise ValueError(f"request {request.id} exists") from None

        return self._link.run(work)

    def get(self, request_id: str) -> Deferred[StoredRequest | None]:
        query = sql.SQL("SELECT request FROM {} WHERE id = %s").format(self._t("requests"))
        return self._link.run(lambda conn: _one(conn.execute(query, [request_id]).fetchone()), idempotent=True)

    def pending(self) -> Deferred[list[StoredRequest]]:
        """Requests waiting for a decision; those past their expiry are ended as ``expired`` first.

        The sidecar that made a request expires it when its statement stops waiting, but a
        sidecar can die first (a pod deleted, a crash): whoever lists the queue ends what no one
        waits on any more, so the inbox never offers a request nobody can decide.
        """
        now = self._reactor.seconds()
        stale = sql.SQL("SELECT id FROM {} WHERE state = 'pending' AND expires_at <= pg_catalog.to_timestamp(%s)"
                        ).format(self._t("requests"))
        query = sql.SQL("SELECT request FROM {} WHERE state = 'pending' ORDER BY created_at, id").format(
            self._t("requests"))

        def work(conn: psycopg.Connection) -> list[StoredRequest]:
            for (request_id,) in conn.execute(stale, [now]).fetchall():
                self._end(conn, request_id, "expired", "no decision before the request expired", None)
            return [from_json(r[0]) for r in conn.execute(query).fetchall()]

        return self._link.run(work, idempotent=True)

    def history(self, limit: int) -> Deferred[list[StoredRequest]]:
        query = sql.SQL("SELECT request FROM {} WHERE state <> 'pending' ORDER BY closed_at DESC, id LIMIT %s").format(
            self._t("requests"))
        return self._link.run(lambda conn: [from_json(r[0]) for r in conn.execute(query, [limit]).fetchall()],
                              idempotent=True)

    def decide(self, request_id: str, decision: Decision, rules: ApprovalRules) -> Deferred[StoredRequest]:
        def work(conn: psycopg.Connection) -> StoredRequest:
            with conn.transaction():
                row = conn.execute(sql.SQL("SELECT request FROM {} WHERE id = %s FOR UPDATE").format(
                    self._t("requests")), [request_id]).fetchone()
                if row is None:
                    raise DecisionRefused(f"no request {request_id}", 404)
                after = apply_decision(from_json(row[0]), decision, rules)  # DecisionRefused rolls back
                try:
                    conn.execute(sql.SQL("INSERT INTO {} (request_id, approver, approved, decided_at, reason) "
                                         "VALUES (%s, %s, %s, pg_catalog.to_timestamp(%s), %s)").format(
                        self._t("decisions")), [request_id, decision.approver, decision.approved, decision.at,
                                                after.decisions[-1].reason])
                except psycopg.errors.UniqueViolation:
                    raise DecisionRefused(f"you have already decided request {request_id}", 409) from None
                written = self._update(conn, after)
                if written is None:  # unreachable under the row lock; never write over a final state
                    raise DecisionRefused(f"request {request_id} is no longer pending", 409)
                return written

        return self._link.run(work)

    def withdraw(self, request_id: str, why: str) -> Deferred[StoredRequest | None]:
        now = self._reactor.seconds()
        return self._link.run(lambda conn: self._end(conn, request_id, "withdrawn", why, now))

    def expire(self, request_id: str) -> Deferred[StoredRequest | None]:
        return self._link.run(lambda conn: self._end(conn, request_id, "expired",
                                                     "no decision before the request expired", None))

    def watch(self, request_id: str) -> Deferred[StoredRequest]:
        watchers = self._watchers.setdefault(request_id, [])

        def stop(d: Deferred[StoredRequest]) -> None:
            if d in watchers:
                watchers.remove(d)
            if not watchers and self._watchers.get(request_id) is watchers:
                del self._watchers[request_id]

        d: Deferred[StoredRequest] = Deferred(stop)
        watchers.append(d)

        def unknown(request: StoredRequest | None) -> None:
            if request is None and d in watchers:
                stop(d)
                d.errback(Failure(KeyError(request_id)))

        # Registered first, then read: a decision committed in between is either in what is read
        # or announced after, never neither.
        self._refresh(request_id, on_read=unknown)
        return d

    def take_grant(self, subject: str, fingerprint: str | None, exact: str,
                   now: float) -> Deferred[StoredRequest | None]:
        query = sql.SQL(
            "SELECT request FROM {} WHERE state = 'approved' AND mode = 'retry' AND subject = %s "
            "AND (params_hash = %s OR request->>'grant_key' = %s) AND NOT used "
            "AND (grant_until IS NULL OR grant_until > pg_catalog.to_timestamp(%s)) "
            "ORDER BY closed_at DESC, id FOR UPDATE").format(self._t("requests"))

        def work(conn: psycopg.Connection) -> StoredRequest | None:
            with conn.transaction():
                for (data,) in conn.execute(query, [subject, exact, fingerprint, now]).fetchall():
                    request = from_json(data)
                    if not covers(request, subject, fingerprint, exact, now):
                        continue
                    if request.grant_until is None:
                        request = self._update(conn, attrs.evolve(request, used=True), pending=False) or request
                    return request
            return None

        return self._link.run(work)

    def claim_execution(self, request_id: str, subject: str) -> Deferred[StoredRequest | None]:
        # One statement: under READ COMMITTED a concurrent claim waits for this row's lock, then
        # checks the WHERE again on the row as committed (executed: true) and updates nothing.
        query = sql.SQL(
            "UPDATE {} SET request = pg_catalog.jsonb_set(request, '{{executed}}', 'true') "
            "WHERE id = %s AND state = 'approved' AND mode = 'retry' AND subject = %s "
            "AND NOT coalesce((request->>'executed')::boolean, false) RETURNING request").format(self._t("requests"))
        return self._link.run(lambda conn: _one(conn.execute(query, [request_id, subject]).fetchone()))

    # ------------------------------------------------------------------ internals

    def _update(self, conn: psycopg.Connection, request: StoredRequest, pending: bool = True) -> StoredRequest | None:
        """Writes ``request`` over its row — only while it is pending (``pending``), or, for a grant's
        use, while it is not yet used; the request written, or None when no row qualified."""
        guard = sql.SQL("state = 'pending'") if pending else sql.SQL("NOT used")
        query = sql.SQL("UPDATE {} SET ({}, request) = ({}) WHERE id = {} AND {} RETURNING request").format(
            self._t("requests"), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join(_row(request)), sql.Literal(request.id), guard)
        return _one(conn.execute(query).fetchone())

    def _end(self, conn: psycopg.Connection, request_id: str, state: str, why: str,
             at: float | None) -> StoredRequest | None:
        """Ends a pending request as ``state``; the request as it is after (ended by us or before)."""
        with conn.transaction():
            row = conn.execute(sql.SQL("SELECT request FROM {} WHERE id = %s FOR UPDATE").format(
                self._t("requests")), [request_id]).fetchone()
            if row is None:
                return None
            request = from_json(row[0])
            if request.final:
                return request
            ended = attrs.evolve(request, state=state, closed_reason=why,
                                 closed_at=request.expires if at is None else at)
            written = self._update(conn, ended)
            if written is None:  # unreachable under the row lock: whatever ended it, read it as it is
                return _one(conn.execute(sql.SQL("SELECT request FROM {} WHERE id = %s").format(
                    self._t("requests")), [request_id]).fetchone())
            return written

    def _notified(self, request_id: str) -> None:
        """A request changed (the trigger's NOTIFY): read it again if someone here waits on it."""
        if request_id in self._watchers:
            self._refresh(request_id)

    def _refresh(self, request_id: str, on_read: object = None) -> None:
        def read(request: StoredRequest | None) -> None:
            if request is not None and request.final:
                self._deliver(request)
            if callable(on_read):
                on_read(request)

        def failed(failure: Failure) -> None:
            # The store is down: the watcher keeps waiting; `_catch_up` reads it once it is back.
            log.debug("approval store: cannot read request {id} now: {why}", id=request_id,
                      why=failure.getErrorMessage())
            self._link.on_working_once(self._catch_up)

        self.get(request_id).addCallbacks(read, failed)

    def _catch_up(self) -> None:
        """Listening (again): whatever ended while nobody listened is read back now."""
        waiting = list(self._watchers)
        if not waiting:
            return
        query = sql.SQL("SELECT request FROM {} WHERE id = ANY(%s) AND state <> 'pending'").format(
            self._t("requests"))

        def delivered(requests: list[StoredRequest]) -> None:
            for request in requests:
                self._deliver(request)

        def failed(failure: Failure) -> None:
            log.debug("approval store: catching up failed: {why}", why=failure.getErrorMessage())
            self._link.on_working_once(self._catch_up)

        self._link.run(lambda conn: [from_json(r[0]) for r in conn.execute(query, [waiting]).fetchall()],
                       idempotent=True).addCallbacks(delivered, failed)

    def _deliver(self, request: StoredRequest) -> None:
        for d in self._watchers.pop(request.id, []):
            d.callback(request)


def _one(row: tuple[object, ...] | None) -> StoredRequest | None:
    return from_json(row[0]) if row is not None else None
