"""The postgres approval store against a real PostgreSQL: a database of its own per test.

Two `PostgresStore`s on one database stand for two sidecars (or a sidecar and the inbox):
each has its own connections and its own LISTEN, exactly as two processes would. The
store's calls run on the reactor thread of the test session (`blockingCallFromThread`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import httpx2 as httpx
import psycopg
import pytest
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher

from pgwarden.config import ApprovalsPostgres
from pgwarden.testing import wait_until
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres
from pgwarden_plugins.approve import pg_schema
from pgwarden_plugins.approve.postgres_store import PostgresStore
from pgwarden_plugins.approve.store import (
    ApprovalRules,
    Decision,
    DecisionRefused,
    Grant,
    StoredRequest,
    StoreUnavailable,
    params_hash,
)

T = TypeVar("T")

ROLE = "apstore"
ROLE_PASSWORD = "apst0re-Very-Secret-pw"
RULES = ApprovalRules(approver_groups=("dba",))


@attrs.frozen
class StoreDb:
    pg: TempPostgres
    name: str
    password_file: Path

    def settings(self, **kw: object) -> ApprovalsPostgres:
        """As the role the store owns its database with, the password from a file."""
        values: dict[str, object] = {
            "dsn": f"host={self.pg.host} port={self.pg.port} dbname={self.name} user={ROLE}",
            "password_file": str(self.password_file), "retry_s": 0.1, "max_retry_s": 0.5,
            "statement_timeout_s": 5.0, **kw}
        return ApprovalsPostgres(**values)  # type: ignore[arg-type]

    def superuser_dsn(self) -> str:
        return self.pg.dsn(APP_USER, APP_PASSWORD, self.name)

    def sql(self, query: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def store_db(pg_server: TempPostgres, tmp_path: Path) -> Iterator[StoreDb]:
    """A database of its own, owned by the store's role (a role that is no superuser)."""
    name = f"approvals_{uuid.uuid4().hex[:8]}"
    if not pg_server.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
        pg_server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'")
    pg_server.psql(f"ALTER ROLE {ROLE} LOGIN")
    pg_server.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
    password_file = tmp_path / "store-password"
    password_file.write_text(ROLE_PASSWORD + "\n")
    yield StoreDb(pg_server, name, password_file)
    pg_server.psql(f"ALTER ROLE {ROLE} LOGIN")
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def stores(reactor_thread, store_db: StoreDb) -> Iterator[Callable[..., PostgresStore]]:
    """Starts a `PostgresStore` on the test's database (stopped after the test)."""
    started: list[PostgresStore] = []

    def start(**kw: object) -> PostgresStore:
        store = call(reactor_thread, PostgresStore, store_db.settings(**kw), reactor_thread)
        started.append(store)
        call(reactor_thread, store.start)
        return store

    yield start
    for store in started:
        call(reactor_thread, store.stop)


def call(reactor, f: Callable[..., T], *args: object) -> T:
    return blockingCallFromThread(reactor, f, *args)


def watch(reactor, store: PostgresStore, request_id: str) -> Deferred[StoredRequest]:
    """The watch's Deferred itself (`call` would wait for its result)."""
    return call(reactor, lambda: [store.watch(request_id)])[0]


def request(n: int = 1, *, now: float | None = None, **kw: object) -> StoredRequest:
    created = time.time() if now is None else now
    sql = f"UPDATE orders SET paid = true WHERE id = {n}"
    values: dict[str, object] = {
        "id": f"r{uuid.uuid4().hex[:10]}", "subject": "agent-1", "groups": ("agents",), "session": "s1",
        "sql": sql, "fingerprint": "fp-update-orders", "params_hash": params_hash(sql, None),
        "created": created, "expires": created + 300, "kinds": ("update",), "tables": ("public.orders",),
        "policy": "agents", "rule": "writes", "reason": "writes need a human", **kw}
    return StoredRequest(**values)  # type: ignore[arg-type]


def yes(approver: str = "alice", **kw: object) -> Decision:
    return Decision(approved=True, approver=approver, groups=("dba",), at=time.time(), **kw)  # type: ignore[arg-type]


def no(approver: str = "bob", reason: str = "not today") -> Decision:
    return Decision(approved=False, approver=approver, groups=("dba",), reason=reason, at=time.time())


def healthy(reactor, store: PostgresStore, deadline_s: float = 10.0) -> None:
    wait_until(deadline_s, lambda: call(reactor, store.health), "the store to be healthy", until=lambda p: p is None)


# ---------------------------------------------------------------------- schema


def test_migrates_an_empty_database_once_whoever_starts_first(reactor_thread, stores, store_db):
    first = stores()
    assert call(reactor_thread, first.health) is None
    second = stores()  # another sidecar: finds the schema at the latest version, applies nothing
    assert call(reactor_thread, second.health) is None
    rows = store_db.sql("SELECT version, summary, applied_by FROM pgwarden_approvals.schema_version")
    assert [r[0] for r in rows] == [s.version for s in pg_schema.STEPS]
    assert "pgwarden on" in str(rows[0][2])
    tables = {r[0] for r in store_db.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'pgwarden_approvals'")}
    assert tables == {"schema_version", "requests", "decisions"}
    owner = store_db.sql("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgwarden_approvals'")
    assert owner == [(ROLE,)]


def test_concurrent_first_starts_migrate_once(store_db):
    """Sidecars of a fleet start together: the advisory lock makes one migrate, the others wait and see it done."""
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with psycopg.connect(store_db.superuser_dsn(), autocommit=True) as conn:
                results.append(pg_schema.migrate(conn, "fleet", "test"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    latest = pg_schema.latest()
    assert sorted(results) == [(0, latest)] + [(latest, latest)] * 3
    assert store_db.sql("SELECT count(*) FROM fleet.schema_version") == [(latest,)]


def test_a_newer_schema_is_refused_and_approvals_fail_closed(reactor_thread, stores, store_db):
    stores()
    store_db.sql("INSERT INTO pgwarden_approvals.schema_version (version, summary, applied_by) "
                 "VALUES (99, 'from the future', 'pgwarden 9')")
    newer = stores()
    problem = call(reactor_thread, newer.health)
    assert problem is not None
    assert "version 99" in problem and f"up to {pg_schema.latest()}" in problem and "upgrade" in problem
    with pytest.raises(StoreUnavailable, match="version 99"):
        call(reactor_thread, newer.submit, request())


def test_steps_apply_in_order_from_where_the_schema_is(store_db):
    extra = pg_schema.Step(pg_schema.latest() + 1, "a column more",
                           ("ALTER TABLE {schema}.requests ADD COLUMN note text",))
    with psycopg.connect(store_db.superuser_dsn(), autocommit=True) as conn:
        assert pg_schema.migrate(conn, "s", "test") == (0, pg_schema.latest())
        assert pg_schema.migrate(conn, "s", "test", (*pg_schema.STEPS, extra)) == (pg_schema.latest(), extra.version)
        assert pg_schema.version_of(conn, "s") == extra.version
    assert store_db.sql("SELECT count(*) FROM information_schema.columns WHERE table_schema = 's' "
                        "AND column_name = 'note'") == [(1,)]


# ---------------------------------------------------------------------- the contract


def test_submit_decide_watch_round_trip(reactor_thread, stores):
    store = stores()
    r = request()
    call(reactor_thread, store.submit, r)
    assert call(reactor_thread, store.get, r.id) == r
    assert [p.id for p in call(reactor_thread, store.pending)] == [r.id]
    with pytest.raises(ValueError, match="exists"):
        call(reactor_thread, store.submit, r)
    waiting = watch(reactor_thread, store, r.id)
    assert not waiting.called
    with pytest.raises(DecisionRefused, match="own request"):
        call(reactor_thread, store.decide, r.id, yes("agent-1"), RULES)
    decided = call(reactor_thread, store.decide, r.id, yes(reason="looks fine"), RULES)
    assert decided.state == "approved" and decided.approvers == ("alice",)
    seen = wait_until(5, lambda: waiting.result if waiting.called else None, "the watcher to fire")
    assert seen == decided
    assert call(reactor_thread, store.pending) == []
    assert [h.id for h in call(reactor_thread, store.history, 10)] == [r.id]
    already = watch(reactor_thread, store, r.id)  # final already: at once
    wait_until(5, lambda: already.called, "a watch on a final request to fire")
    with pytest.raises(DecisionRefused) as refused:
        call(reactor_thread, store.decide, r.id, no(), RULES)
    assert refused.value.status == 409
    with pytest.raises(DecisionRefused) as unknown:
        call(reactor_thread, store.decide, "nope", yes(), RULES)
    assert unknown.value.status == 404


def test_a_decision_through_another_sidecar_wakes_the_waiting_one_within_a_second(reactor_thread, stores):
    holder, inbox = stores(), stores()
    r = request()
    call(reactor_thread, holder.submit, r)
    waiting = watch(reactor_thread, holder, r.id)
    assert [p.id for p in call(reactor_thread, inbox.pending)] == [r.id]
    started = time.monotonic()
    call(reactor_thread, inbox.decide, r.id, no(reason="use the migration"), RULES)
    wait_until(1.0, lambda: waiting.called, "the decision to reach the other sidecar")
    took = time.monotonic() - started
    assert waiting.result.state == "denied" and waiting.result.closed_reason == "use the migration"
    assert took < 1.0


def test_a_decision_written_by_anything_else_wakes_the_watcher(reactor_thread, stores, store_db):
    """The trigger notifies, not the store's code: an UPDATE from psql wakes the sidecar too."""
    store = stores()
    r = request()
    call(reactor_thread, store.submit, r)
    waiting = watch(reactor_thread, store, r.id)
    store_db.sql("UPDATE pgwarden_approvals.requests SET state = 'withdrawn', closed_at = now(), "
                 "request = request || '{\"state\": \"withdrawn\"}' WHERE id = %s", [r.id])
    wait_until(2, lambda: waiting.called, "the watcher to fire")
    assert waiting.result.state == "withdrawn"


def test_cancelling_a_watch_stops_only_the_watch(reactor_thread, stores):
    store = stores()
    r = request()
    call(reactor_thread, store.submit, r)
    waiting = watch(reactor_thread, store, r.id)
    call(reactor_thread, waiting.cancel)
    waiting.addErrback(lambda _f: None)
    assert call(reactor_thread, store.get, r.id).state == "pending"
    assert call(reactor_thread, store.decide, r.id, yes(), RULES).state == "approved"


def test_expire_and_withdraw_end_only_pending_requests(reactor_thread, stores):
    store = stores()
    a, b = request(1), request(2)
    call(reactor_thread, store.submit, a)
    call(reactor_thread, store.submit, b)
    expired = call(reactor_thread, store.expire, a.id)
    assert expired.state == "expired" and expired.closed_at == a.expires
    assert call(reactor_thread, store.withdraw, a.id, "cancelled").state == "expired"  # final stays final
    withdrawn = call(reactor_thread, store.withdraw, b.id, "client disconnected")
    assert withdrawn.state == "withdrawn" and withdrawn.closed_reason == "client disconnected"
    assert call(reactor_thread, store.expire, "nope") is None


def test_two_approvers_needed_count_once_each(reactor_thread, stores):
    one, two = stores(), stores()
    r = request(approvals_needed=2)
    call(reactor_thread, one.submit, r)
    first = call(reactor_thread, one.decide, r.id, yes("alice"), RULES)
    assert first.state == "pending" and first.approvers == ("alice",)
    with pytest.raises(DecisionRefused, match="already decided"):
        call(reactor_thread, two.decide, r.id, yes("alice"), RULES)
    final = call(reactor_thread, two.decide, r.id, yes("carol"), RULES)
    assert final.state == "approved" and set(final.approvers) == {"alice", "carol"}


def _race(reactor, calls: list[Callable[[], Deferred]]) -> list[tuple[bool, object]]:
    """Starts every call in the same reactor turn; their outcomes."""
    def go() -> Deferred:
        return DeferredList([f() for f in calls], consumeErrors=True)

    return [(ok, value.value if not ok else value) for ok, value in call(reactor, go)]


def test_concurrent_deciders_on_two_sidecars_one_wins(reactor_thread, stores, store_db):
    one, two = stores(), stores()
    requests = [request(n) for n in range(20)]
    for r in requests:
        call(reactor_thread, one.submit, r)
    for r in requests:
        outcomes = _race(reactor_thread, [lambda r=r: one.decide(r.id, yes("alice"), RULES),
                                          lambda r=r: two.decide(r.id, no("bob"), RULES),
                                          lambda r=r: two.expire(r.id)])
        stored = call(reactor_thread, one.get, r.id)
        won = [value for ok, value in outcomes[:2] if ok]
        lost = [value for ok, value in outcomes[:2] if not ok]
        assert outcomes[2][0], outcomes[2]
        if stored.state == "expired":  # the expiry came first: both decisions were refused
            assert not won and all(isinstance(e, DecisionRefused) and e.status == 409 for e in lost)
        else:
            assert len(won) == 1 and won[0] == stored, outcomes
            assert isinstance(lost[0], DecisionRefused) and lost[0].status == 409
            assert outcomes[2][1] == stored  # the expiry found it decided and left it
        decided = store_db.sql("SELECT count(*) FROM pgwarden_approvals.decisions WHERE request_id = %s", [r.id])
        assert decided == [(len(stored.decisions),)]


def test_the_same_approver_racing_through_two_sidecars_counts_once(reactor_thread, stores, store_db):
    one, two = stores(), stores()
    for n in range(10):
        r = request(n, approvals_needed=2)
        call(reactor_thread, one.submit, r)
        outcomes = _race(reactor_thread, [lambda r=r: one.decide(r.id, yes("alice"), RULES),
                                          lambda r=r: two.decide(r.id, yes("alice"), RULES)])
        assert sorted(ok for ok, _ in outcomes) == [False, True]
        stored = call(reactor_thread, one.get, r.id)
        assert stored.state == "pending" and stored.approvers == ("alice",)
        assert store_db.sql("SELECT approver FROM pgwarden_approvals.decisions WHERE request_id = %s",
                            [r.id]) == [("alice",)]


def test_two_approvers_at_once_through_two_sidecars_both_count(reactor_thread, stores, store_db):
    """Each decision is judged on the request as the other left it (the row lock), never on a stale copy."""
    one, two = stores(), stores()
    for n in range(10):
        r = request(n, approvals_needed=2)
        call(reactor_thread, one.submit, r)
        outcomes = _race(reactor_thread, [lambda r=r: one.decide(r.id, yes("alice"), RULES),
                                          lambda r=r: two.decide(r.id, yes("carol"), RULES)])
        assert all(ok for ok, _ in outcomes), outcomes
        stored = call(reactor_thread, one.get, r.id)
        assert stored.state == "approved" and set(stored.approvers) == {"alice", "carol"}, stored


def test_a_once_grant_is_taken_by_one_sidecar_only(reactor_thread, stores):
    one, two = stores(), stores()
    r = request(mode="retry")
    call(reactor_thread, one.submit, r)
    call(reactor_thread, one.decide, r.id, yes(), RULES)
    now = time.time()
    outcomes = _race(reactor_thread, [lambda: one.take_grant("agent-1", r.fingerprint, r.params_hash, now),
                                      lambda: two.take_grant("agent-1", r.fingerprint, r.params_hash, now)])
    taken = [value for ok, value in outcomes if ok and value is not None]
    assert all(ok for ok, _ in outcomes) and len(taken) == 1 and taken[0].used
    assert call(reactor_thread, one.take_grant, "agent-1", r.fingerprint, r.params_hash, now) is None


def test_the_run_of_an_approved_statement_is_claimed_by_one_sidecar_only(reactor_thread, stores):
    one, two = stores(), stores()
    r = request(mode="retry")
    call(reactor_thread, one.submit, r)
    assert call(reactor_thread, one.claim_execution, r.id, "agent-1") is None  # not approved yet
    call(reactor_thread, one.decide, r.id, yes(grant=Grant("window", 10)), RULES)
    assert call(reactor_thread, one.claim_execution, r.id, "agent-2") is None  # not theirs
    outcomes = _race(reactor_thread, [lambda: one.claim_execution(r.id, "agent-1"),
                                      lambda: two.claim_execution(r.id, "agent-1")])
    claimed = [value for ok, value in outcomes if ok and value is not None]
    assert all(ok for ok, _ in outcomes) and len(claimed) == 1 and claimed[0].executed, outcomes
    assert call(reactor_thread, two.claim_execution, r.id, "agent-1") is None
    stored = call(reactor_thread, two.get, r.id)
    assert stored.executed and stored.state == "approved" and stored.decisions  # the rest of the row as it was


def test_a_window_grant_covers_the_same_statement_until_it_ends(reactor_thread, stores):
    store = stores()
    r = request(mode="retry")
    call(reactor_thread, store.submit, r)
    call(reactor_thread, store.decide, r.id, yes(grant=Grant("window", 10)), RULES)
    now = time.time()
    for _ in range(2):
        assert call(reactor_thread, store.take_grant, "agent-1", r.fingerprint, r.params_hash, now).id == r.id
    assert call(reactor_thread, store.take_grant, "agent-2", r.fingerprint, r.params_hash, now) is None
    assert call(reactor_thread, store.take_grant, "agent-1", r.fingerprint, "other", now) is None
    assert call(reactor_thread, store.take_grant, "agent-1", r.fingerprint, r.params_hash, now + 601) is None


def test_a_fingerprint_only_grant_matches_the_grant_key_and_an_older_row_matches_nothing(reactor_thread, stores,
                                                                                       store_db):
    """The memory store's twin: tests/unit/test_approval_grant_key.py (`MemoryStore`)."""
    store = stores()
    r = request(mode="retry", grant_key="fp-update-orders:g1:bounded")
    call(reactor_thread, store.submit, r)
    call(reactor_thread, store.decide, r.id, yes(grant=Grant("window", 10, by_fingerprint_only=True)), RULES)
    now = time.time()
    assert call(reactor_thread, store.take_grant, "agent-1", r.grant_key, "other", now).id == r.id
    assert call(reactor_thread, store.take_grant, "agent-1", "fp-update-orders:g1:unbounded", "other", now) is None
    assert call(reactor_thread, store.take_grant, "agent-1", r.fingerprint, "other", now) is None  # the bare fingerprint
    # The row as a pgwarden from before grant keys wrote it: its grant by fingerprint covers nothing.
    store_db.sql("UPDATE pgwarden_approvals.requests SET request = request - 'grant_key' WHERE id = %s", [r.id])
    assert call(reactor_thread, store.get, r.id).grant_key is None
    assert call(reactor_thread, store.take_grant, "agent-1", r.grant_key, "other", now) is None
    assert call(reactor_thread, store.take_grant, "agent-1", r.fingerprint, "other", now) is None

# ---------------------------------------------------------------------- the store down


@pytest.fixture
def op_log() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event) or "")
        if event.get("log_failure") is not None:
            lines.append(event["log_failure"].getTraceback())

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def _cut(store_db: StoreDb) -> None:
    """The store's role may no longer log in, and its sessions are ended."""
    store_db.pg.psql(f"ALTER ROLE {ROLE} NOLOGIN")
    store_db.pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'")


def test_store_down_refuses_new_requests_keeps_held_ones_and_recovers(reactor_thread, stores, store_db, op_log):
    sidecar = stores()
    other = call(reactor_thread, PostgresStore,  # another sidecar, reaching the database as another role
                 attrs.evolve(store_db.settings(), dsn=store_db.superuser_dsn(), password_file=None), reactor_thread)
    call(reactor_thread, other.start)
    try:
        held = request(1)
        call(reactor_thread, sidecar.submit, held)
        waiting = watch(reactor_thread, sidecar, held.id)

        _cut(store_db)
        problem = wait_until(5, lambda: call(reactor_thread, sidecar.health), "the store to say it is down")
        assert "approval store" in problem
        with pytest.raises(StoreUnavailable):
            call(reactor_thread, sidecar.submit, request(2))  # may be the one that finds out: refused either way
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="approval store"):
            call(reactor_thread, sidecar.submit, request(3))
        assert time.monotonic() - started < 0.5  # refused at once, not after a connection timeout

        # Decided elsewhere while this sidecar cannot hear: it must not be lost.
        call(reactor_thread, other.decide, held.id, yes(), RULES)
        time.sleep(0.3)  # the window in which a NOTIFY would have arrived, had it been listening
        assert not waiting.called

        store_db.pg.psql(f"ALTER ROLE {ROLE} LOGIN")
        healthy(reactor_thread, sidecar)
        wait_until(5, lambda: waiting.called, "the decision made during the outage to arrive")
        assert waiting.result.state == "approved"
        call(reactor_thread, sidecar.submit, request(4))
    finally:
        call(reactor_thread, other.stop)
    text = "\n".join(op_log)
    assert "approval store" in text  # the outage was logged ...
    assert ROLE_PASSWORD not in text  # ... without the credential


def test_unreachable_at_start_then_reachable(reactor_thread, stores, store_db):
    store_db.pg.psql(f"ALTER ROLE {ROLE} NOLOGIN")
    store = stores()
    assert call(reactor_thread, store.health) is not None
    with pytest.raises(StoreUnavailable):
        call(reactor_thread, store.submit, request())
    store_db.pg.psql(f"ALTER ROLE {ROLE} LOGIN")
    healthy(reactor_thread, store)
    call(reactor_thread, store.submit, request())


# ---------------------------------------------------------------------- the credential


@pytest.mark.parametrize("where", ["password_file", "dsn", "dsn_file", "bad_dsn", "bad_uri"])
def test_the_credential_appears_in_no_error_log_or_repr(reactor_thread, stores, store_db, tmp_path, op_log, where):
    wrong = "Wr0ng-But-Still-Secret-Pw"
    dsn = f"host={store_db.pg.host} port={store_db.pg.port} dbname={store_db.name} user={ROLE}"
    if where == "password_file":
        (tmp_path / "wrong").write_text(wrong)
        kw: dict[str, object] = {"password_file": str(tmp_path / "wrong")}
    elif where == "dsn":
        kw = {"password_file": None, "dsn": f"{dsn} password={wrong}"}
    elif where == "dsn_file":
        (tmp_path / "dsn").write_text(f"postgresql://{ROLE}:{wrong}@{store_db.pg.host}:{store_db.pg.port}/x")
        kw = {"password_file": None, "dsn": None, "dsn_file": str(tmp_path / "dsn")}
    elif where == "bad_dsn":
        kw = {"password_file": None, "dsn": f"{dsn} password={wrong} nonsense"}
    else:  # libpq's own message quotes the bad token: here, the password
        kw = {"password_file": None, "dsn": f"postgresql://{ROLE}:{wrong}%zz@{store_db.pg.host}/x"}
    store = stores(**kw)
    problem = call(reactor_thread, store.health)
    assert problem is not None
    with pytest.raises(StoreUnavailable) as refused:
        call(reactor_thread, store.submit, request())
    shown = "\n".join([problem, str(refused.value), repr(store), repr(store_db.settings(**kw)), *op_log])
    assert wrong not in shown
    assert ROLE_PASSWORD not in shown
    if not where.startswith("bad_"):
        assert "password authentication failed" in problem
    else:
        assert "not a valid connection string" in problem


# ---------------------------------------------------------------------- two pgwarden processes, one store


WRITES = {"name": "agents", "default": "allow", "rules": [
    {"name": "writes", "approve": {"statements": ["insert", "update", "delete"]}, "reason": "writes need a human"},
]}


def _http(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def fleet(pgwarden_process, store_db, pg_server):
    """Two `pgwarden run` processes sharing one postgres store: (holder, inbox)."""
    import json

    pg_server.psql("drop table if exists fleet_orders; create table fleet_orders (id int primary key); "
                   "grant all on fleet_orders to public", "appdb")
    approvals = {"store": "postgres", "approver_groups": ["dba"], "timeout_s": 20,
                 "postgres": {"dsn": f"host={pg_server.host} port={pg_server.port} dbname={store_db.name} "
                                     f"user={ROLE}", "password_file": str(store_db.password_file),
                              "retry_s": 0.1, "max_retry_s": 0.5}}
    sidecars = [pgwarden_process(approvals=approvals, policies=[WRITES]) for _ in range(2)]

    def pending(sidecar) -> list[dict]:
        status, text = _http(f"http://127.0.0.1:{sidecar.admin_port}/approvals/api/requests",
                             sidecar.token("ann", ["dba"]))
        assert status == 200, text
        return json.loads(text)["requests"]

    for s in sidecars:
        s.pending = lambda s=s: pending(s)
        s.readyz = lambda s=s: _http(f"http://127.0.0.1:{s.admin_port}/readyz")
        wait_until(10, s.readyz, "the sidecar to be ready", until=lambda r: r[0] == 200)
    return sidecars


def test_a_statement_held_on_one_sidecar_runs_once_approved_through_the_other(fleet, pg_server):
    from concurrent.futures import ThreadPoolExecutor

    holder, inbox = fleet

    def agent(sql: str) -> object:
        with psycopg.connect(holder.dsn(), autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(agent, "insert into fleet_orders values (1) returning id")
        held = wait_until(10, inbox.pending, "the request to show in the other sidecar's inbox",
                          until=lambda rs: len(rs) == 1)[0]
        assert held["sql"] == "insert into fleet_orders values (1) returning id" and held["subject"] == "agent-1"
        assert pg_server.psql("select count(*) from fleet_orders", "appdb") == "0"
        started = time.monotonic()
        status, text = _http(f"http://127.0.0.1:{inbox.admin_port}/approvals/api/requests/{held['id']}/approve",
                             inbox.token("ann", ["dba"]), {"reason": "ok"})
        assert status == 200, text
        assert done.result(10) == [(1,)]
        assert time.monotonic() - started < 1.0
    assert pg_server.psql("select count(*) from fleet_orders", "appdb") == "1"


def test_store_down_refuses_new_requests_says_so_on_readyz_and_recovers(fleet, store_db, pg_server):
    from concurrent.futures import ThreadPoolExecutor

    holder, inbox = fleet
    _cut(store_db)
    status, text = wait_until(10, holder.readyz, "/readyz to say the store is down", until=lambda r: r[0] == 503)
    assert "approval store (postgres)" in text and "new approval requests are refused" in text
    with psycopg.connect(holder.dsn(), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="approval store"):
            conn.execute("insert into fleet_orders values (2)")
        assert time.monotonic() - started < 2.0  # refused, not held
        assert conn.execute("select count(*) from fleet_orders").fetchone() == (0,)  # the rest goes on
    store_db.pg.psql(f"ALTER ROLE {ROLE} LOGIN")
    wait_until(10, holder.readyz, "/readyz to be ready again", until=lambda r: r[0] == 200)

    def agent() -> str:
        with psycopg.connect(holder.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                conn.execute("insert into fleet_orders values (3)")
            return refused.value.diag.message_primary or ""

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(agent)
        held = wait_until(10, inbox.pending, "a pending request", until=lambda rs: len(rs) == 1)[0]
        status, text = _http(f"http://127.0.0.1:{inbox.admin_port}/approvals/api/requests/{held['id']}/deny",
                             inbox.token("ann", ["dba"]), {"reason": "not now"})
        assert status == 200, text
        assert done.result(10) == "pgwarden: approval denied: not now"
    for sidecar in fleet:  # the credential is in no record, log line or metric
        _, metrics = _http(f"http://127.0.0.1:{sidecar.admin_port}/metrics")
        for text in (sidecar.output(), sidecar.log(), metrics,
                     (sidecar.directory / "records.jsonl").read_text()):
            assert ROLE_PASSWORD not in text
    assert "approval store" in holder.log()


def test_listing_the_queue_expires_what_no_sidecar_waits_on_any_more(reactor_thread, stores):
    """A sidecar died with a request pending: the next one to list the queue ends it at its expiry."""
    store = stores()
    gone = request(1, now=time.time() - 400)  # expired 100 s ago
    live = request(2)
    call(reactor_thread, store.submit, gone)
    call(reactor_thread, store.submit, live)
    assert [r.id for r in call(reactor_thread, store.pending)] == [live.id]
    ended = call(reactor_thread, store.get, gone.id)
    assert ended.state == "expired" and ended.closed_at == gone.expires
    assert [r.id for r in call(reactor_thread, store.history, 10)] == [gone.id]


def test_the_fleet_inbox_serve_decides_for_a_sidecar(pgwarden_process, store_db, pg_server, spawn, tmp_path):
    """`pgwarden approvals serve` on the same store is the fleet's one inbox: what it decides runs on the sidecar."""
    import json
    import re
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    pg_server.psql("drop table if exists inbox_orders; create table inbox_orders (id int primary key); "
                   "grant all on inbox_orders to public", "appdb")
    approvals = {"store": "postgres", "approver_groups": ["dba"], "timeout_s": 20,
                 "postgres": {"dsn": f"host={pg_server.host} port={pg_server.port} dbname={store_db.name} "
                                     f"user={ROLE}", "password_file": str(store_db.password_file)}}
    sidecar = pgwarden_process(approvals=approvals, policies=[WRITES])
    out = tmp_path / "serve.out"
    with open(out, "wb") as sink:
        spawn([sys.executable, "-m", "pgwarden", "approvals", "serve", "-c", str(sidecar.config), "--port", "0"],
              stdout=sink, stderr=subprocess.STDOUT)
    port = int(wait_until(30, lambda: re.search(r"serving http://127\.0\.0\.1:(\d+)/", out.read_text()),
                          "serve to listen", detail=out.read_text).group(1))
    base = f"http://127.0.0.1:{port}/approvals/api/requests"
    approver = sidecar.token("ann", ["dba"])

    def agent() -> object:
        with psycopg.connect(sidecar.dsn(), autocommit=True) as conn:
            return conn.execute("insert into inbox_orders values (7) returning id").fetchall()

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(agent)
        held = wait_until(10, lambda: json.loads(_http(base, approver)[1])["requests"], "the request in the inbox",
                          until=lambda rs: len(rs) == 1)[0]
        status, text = _http(f"{base}/{held['id']}/approve", approver, {"reason": "fine"})
        assert status == 200, text
        assert done.result(10) == [(7,)]


# ---------------------------------------------------------------------- MCP approval ids on a fleet


def _mcp_call(sidecar, url: str, tool: str, arguments: dict, subject: str = "agent-1") -> dict:
    """tools/call (stateless revision) on ``sidecar``'s MCP endpoint: the structured result."""
    import json

    from pgwarden.testing.endpoint import ISSUER
    from pgwarden.tokens import mint

    token = mint(sidecar.keys["private"], subject=subject, issuer=ISSUER, audience=url, groups=["ai-agents"])
    version = "2026-07-28"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments, "_meta": {"io.modelcontextprotocol/protocolVersion": version,
                                                        "io.modelcontextprotocol/clientCapabilities": {}}}}
    r = httpx.post(url, content=json.dumps(body), timeout=30, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "MCP-Protocol-Version": version,
        "Mcp-Method": "tools/call", "Mcp-Name": tool})
    doc = r.json()
    if "error" in doc:
        return {"error": doc["error"]["message"]}
    return doc["result"]["structuredContent"]


def test_an_mcp_approval_id_resolves_on_another_sidecar_and_runs_once(pgwarden_process, store_db, pg_server):
    """request_write on one pgwarden; the id is known to the other through the shared store (as
    after a restart); both race execute_approved under a window grant: the statement runs once."""
    from concurrent.futures import ThreadPoolExecutor

    from pgwarden.testing.postgres import free_port

    pg_server.psql("drop table if exists mcp_fleet; create table mcp_fleet (id int primary key, n int); "
                   "insert into mcp_fleet values (1, 0); grant all on mcp_fleet to public", "appdb")
    approvals = {"store": "postgres", "approver_groups": ["dba"], "timeout_s": 60, "mode": "retry",
                 "postgres": {"dsn": f"host={pg_server.host} port={pg_server.port} dbname={store_db.name} "
                                     f"user={ROLE}", "password_file": str(store_db.password_file),
                              "retry_s": 0.1, "max_retry_s": 0.5}}
    sidecars, urls = [], []
    for _ in range(2):
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}/mcp")
        sidecars.append(pgwarden_process(approvals=approvals, policies=[WRITES], mcp={"url": urls[-1], "port": port}))
    one, two = sidecars
    sql = "UPDATE mcp_fleet SET n = n + 1 WHERE id = $1"
    asked = _mcp_call(one, urls[0], "request_write", {"sql": sql, "params": [1]})
    assert asked["status"] == "pending_approval" and asked["mode"] == "retry", asked
    request_id = asked["id"]

    # the other pgwarden knows it from the store: for its subject only
    assert _mcp_call(two, urls[1], "approval_status", {"id": request_id})["status"] == "pending_approval"
    assert "no approval request" in _mcp_call(two, urls[1], "approval_status", {"id": request_id}, "agent-2")["error"]
    early = _mcp_call(two, urls[1], "execute_approved", {"id": request_id})
    assert early["status"] == "pending_approval" and pg_server.psql("select n from mcp_fleet", "appdb") == "0"
    decide = f"http://127.0.0.1:{two.admin_port}/approvals/api/requests/{request_id}/approve"
    assert _http(decide, two.token("agent-1", ["dba"]), {"reason": "mine"})[0] == 403  # no self-approval
    # a window grant would let the same statement through as often as it comes: the claim makes it once
    status, text = _http(decide, two.token("ann", ["dba"]), {"reason": "ok", "grant": {"kind": "window", "minutes": 5}})
    assert status == 200, text
    assert _mcp_call(two, urls[1], "approval_status", {"id": request_id})["status"] == "approved"

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda i: _mcp_call(sidecars[i], urls[i], "execute_approved", {"id": request_id}),
                             [0, 1]))
    assert sorted(r["status"] for r in runs) == ["denied", "executed"], runs
    assert "has run already" in next(r for r in runs if r["status"] == "denied")["error"]["message"]
    assert pg_server.psql("select n from mcp_fleet", "appdb") == "1"
    again = _mcp_call(two, urls[1], "execute_approved", {"id": request_id})
    assert "has run already" in again["error"]["message"]
    assert pg_server.psql("select n from mcp_fleet", "appdb") == "1"
