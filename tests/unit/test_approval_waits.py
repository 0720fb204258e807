"""decide → enforce → approve on a fake clock: the core's approval waits with the built-in plugin and memory store.

No database and no sockets: `ApprovalWaits.begin` is what `Decisions` calls for a statement
whose verdict is ``approve``; time is a `twisted.internet.task.Clock`, so expiry and grant
windows are exact (docs/approvals.md).
"""

from __future__ import annotations

import attrs
import pytest
from pglast.parser import fingerprint
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from pgwarden.approvals import ApprovalWaits
from pgwarden.config import _CONVERTER, Approvals
from pgwarden.identity import Identity
from pgwarden.metrics import Stats
from pgwarden.plugins import PluginHost
from pgwarden.policy.model import Policy
from pgwarden.recorder import SessionLog
from pgwarden.relay.engine import ALLOW, PENDING, StatementRequest
from pgwarden.session import Session
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.context import default_context
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m
from pgwarden_plugins.approve import Approving
from pgwarden_plugins.approve.memory import MemoryStore
from pgwarden_plugins.approve.store import (
    ApprovalRules,
    Decision,
    DecisionRefused,
    Grant,
    StoredRequest,
    apply_decision,
)

START = 1_780_000_000.0


class _NoRecords:
    active = False


class _Relay:
    def __init__(self) -> None:
        self.notices: list[tuple] = []

    def notice(self, *fields) -> None:
        self.notices.append(fields)


@attrs.define
class _Conn:
    session: Session
    log: SessionLog = attrs.Factory(lambda: SessionLog("sess-1"))
    relay: _Relay = attrs.Factory(_Relay)
    approval_wait: object = None
    flushed: int = 0
    #: the session's own open transaction has redefined objects (`ConnectionState.catalog_redefined`)
    catalog_redefined: bool = False

    def flush_soon(self) -> None:
        self.flushed += 1


@attrs.define
class World:
    clock: Clock
    plugin: Approving
    waits: ApprovalWaits
    stats: Stats
    policies: tuple[Policy, ...]
    cache: StatementCache = attrs.Factory(StatementCache)
    ran: list = attrs.Factory(list)

    def conn(self, subject: str = "agent-1") -> _Conn:
        return _Conn(Session("s-" + subject, Identity(subject, frozenset({"ai-agents"})), "appdb",
                             policies=self.policies))

    def run(self, conn: _Conn, sql: str, params: tuple[bytes, ...] | None = None) -> object:
        """What the core does with a statement: the plugin's verdict, then the approval wait."""
        statement = self.cache.get(sql, default_context())
        verdict = self.plugin.pgwarden_check(statement, conn.session)
        if verdict is None or verdict.action == "allow":
            return ALLOW
        assert verdict.action == "approve"
        request = StatementRequest("extended" if params is not None else "simple", sql, "", 1)
        if params is not None:
            request.bind = m.Bind("", "", (), params).encode()
        return self.waits.begin(conn, request, statement, verdict, ALLOW,
                                lambda _c, _r, _s, _v, outcome: outcome, lambda: self.ran.append(sql))

    def decide(self, approved: bool, approver: str = "ann", reason: str | None = "ok", grant: Grant | None = None):
        store = self.plugin.store
        (request,) = _result(store.pending())
        return _result(store.decide(request.id, Decision(approved, approver, ("dba",), reason, self.clock.seconds(),
                                                         grant or Grant()), ApprovalRules(("dba",))))


def _keep(out: list):
    def keep(result: object) -> object:
        out.append(result)
        return result
    return keep


def _result(d: Deferred):
    out: list = []
    d.addBoth(_keep(out))
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        d.addErrback(lambda _f: None)  # seen here
        out[0].raiseException()
    return out[0]


def make_world(rule: dict | None = None, **approvals) -> World:
    clock = Clock()
    clock.advance(START)
    plugin = Approving()
    host = PluginHost(None, clock, [("approve", plugin)], only=())
    spec = rule or {"name": "writes", "approve": {"statements": ["insert", "update", "delete"]},
                    "reason": "writes need a human"}
    structured = _CONVERTER.structure({"name": "agents", "default": "allow", "rules": [spec]}, Policy)
    policies = host.read_policies((structured,))
    settings = Approvals(**{"approver_groups": ("dba",), "timeout_s": 60.0, **approvals})
    plugin.store, plugin.reactor, plugin.approvals = MemoryStore(), clock, settings
    stats = Stats()
    waits = ApprovalWaits(host, _NoRecords(), stats, clock, lambda: settings)  # type: ignore[arg-type]
    return World(clock, plugin, waits, stats, policies)


def fired(d: object) -> object:
    assert isinstance(d, Deferred)
    out: list = []
    d.addBoth(_keep(out))
    return out[0] if out else PENDING


def test_reads_need_no_approval():
    world = make_world()
    assert world.run(world.conn(), "select * from t") is ALLOW


def test_hold_then_approve_runs_it_once_decided():
    world = make_world()
    conn = world.conn()
    waiting = world.run(conn, "insert into t values ($1)", (b"42",))
    assert fired(waiting) is PENDING and conn.approval_wait is not None
    (notice,) = conn.relay.notices
    (stored,) = _result(world.plugin.store.pending())
    assert notice[0] == f"pgwarden: waiting for approval: request {stored.id}"
    assert stored.parameters == ("42",) and stored.subject == "agent-1" and stored.rule == "writes"
    assert stored.expires == START + 60 and world.stats.approvals_pending == 1
    world.clock.advance(5)
    assert world.decide(True).state == "approved"
    assert fired(waiting) is ALLOW and world.ran == ["insert into t values ($1)"]
    assert conn.approval_wait is None and world.stats.approvals_pending == 0
    assert world.stats.approvals == {"requested": 1, "approved": 1} and world.stats.decision_sum == 5


def test_hold_then_deny_refuses_with_the_reason():
    world = make_world()
    waiting = world.run(world.conn(), "delete from t where id = 1")
    world.decide(False, "bob", "not today")
    refusal = fired(waiting)
    assert isinstance(refusal, Refusal) and refusal.sqlstate == "42501"
    assert refusal.message == "pgwarden: approval denied: not today" and "denied by bob" in refusal.detail
    assert world.ran == []


def test_no_decision_within_the_timeout_expires_the_request_and_refuses():
    world = make_world(timeout_s=30)
    waiting = world.run(world.conn(), "delete from t where id = 1")
    world.clock.advance(29.9)
    assert fired(waiting) is PENDING
    world.clock.advance(0.1)
    refusal = fired(waiting)
    assert isinstance(refusal, Refusal) and refusal.message == "pgwarden: approval expired"
    (ended,) = _result(world.plugin.store.history(10))
    assert ended.state == "expired"
    assert world.stats.approvals == {"requested": 1, "expired": 1} and world.stats.approvals_pending == 0
    with pytest.raises(DecisionRefused):  # too late to approve
        _result(world.plugin.store.decide(ended.id, Decision(True, "ann", ("dba",), at=world.clock.seconds()),
                                          ApprovalRules(("dba",))))


@pytest.mark.parametrize("why", ["the client cancelled the statement", "the session ended"])
def test_a_withdrawn_wait_never_runs_and_ends_the_request(why):
    world = make_world()
    conn = world.conn()
    waiting = world.run(conn, "delete from t where id = 1")
    conn.approval_wait.withdraw(why)
    refusal = fired(waiting)
    assert isinstance(refusal, Refusal) and refusal.sqlstate == "57014"
    (ended,) = _result(world.plugin.store.history(10))
    assert ended.state == "withdrawn"
    with pytest.raises(DecisionRefused) as late:  # an approval now would approve nothing
        _result(world.plugin.store.decide(ended.id, Decision(True, "ann", ("dba",), at=world.clock.seconds()),
                                          ApprovalRules(("dba",))))
    assert late.value.status == 409
    assert world.ran == [] and world.stats.approvals == {"requested": 1, "withdrawn": 1}


def test_retry_mode_grant_window_passes_within_refused_after_and_for_others():
    world = make_world(mode="retry")
    sql = "update t set x = 1 where id = $1"
    first = world.run(world.conn(), sql, (b"7",))
    refusal = fired(first)
    (stored,) = _result(world.plugin.store.pending())
    assert isinstance(refusal, Refusal) and refusal.message == f"pgwarden: approval required: request {stored.id}"
    assert "send the same statement again" in refusal.hint
    world.decide(True, grant=Grant("window", 10))
    world.clock.advance(60)
    assert fired(world.run(world.conn(), sql, (b"7",))) is ALLOW  # within the window
    assert fired(world.run(world.conn(), sql, (b"7",))) is ALLOW  # again
    assert isinstance(fired(world.run(world.conn(), sql, (b"8",))), Refusal)  # other parameters
    assert isinstance(fired(world.run(world.conn("agent-2"), sql, (b"7",))), Refusal)  # another identity
    world.clock.advance(9 * 60)  # the window is over
    assert isinstance(fired(world.run(world.conn(), sql, (b"7",))), Refusal)


def test_retry_mode_fingerprint_grant_covers_other_constants():
    world = make_world(mode="retry")
    fired(world.run(world.conn(), "delete from t where id = 1"))
    world.decide(True, grant=Grant("window", 5, by_fingerprint_only=True))
    assert fired(world.run(world.conn(), "delete from t where id = 2")) is ALLOW
    assert isinstance(fired(world.run(world.conn(), "delete from u where id = 2")), Refusal)


@pytest.mark.parametrize(("approved", "same", "other"), [
    # LIMIT ALL and LIMIT NULL: a NULL constant
    ("delete from t where id in (select id from t limit 1)", "delete from t where id in (select id from t limit 2)",
     "delete from t where id in (select id from t limit all)"),
    ("delete from t where id in (select id from t limit 1)", "delete from t where id in (select id from t limit 2)",
     "delete from t where id in (select id from t limit null)"),
    # a constant folded into a WHERE that then filters nothing
    ("delete from t where id = 1 or id + 1 = id + 2", "delete from t where id = 2 or id + 1 = id + 2",
     "delete from t where id = 2 or id + 0 = id + 0"),
    ("delete from t where id = 1 or false", "delete from t where id = 2 or false", "delete from t where id = 2 or true"),
])
def test_retry_mode_fingerprint_grant_does_not_cover_a_statement_that_does_something_else(approved, same, other):
    assert fingerprint(approved) == fingerprint(same) == fingerprint(other)
    world = make_world(mode="retry")
    fired(world.run(world.conn(), approved))
    world.decide(True, grant=Grant("window", 5, by_fingerprint_only=True))
    assert fired(world.run(world.conn(), same)) is ALLOW
    refusal = fired(world.run(world.conn(), other))  # a new request
    assert isinstance(refusal, Refusal) and refusal.message.startswith("pgwarden: approval required")
    assert [r.sql for r in _result(world.plugin.store.pending())] == [other]


def test_a_rule_chooses_its_mode_and_the_number_of_approvers():
    world = make_world({"name": "two", "approve": {"statements": ["insert"], "mode": "hold", "approvers": 2}},
                       mode="retry")
    waiting = world.run(world.conn(), "insert into t values (1)")
    assert fired(waiting) is PENDING  # the rule's hold, not approvals.mode
    assert world.decide(True, "ann").state == "pending"
    assert fired(waiting) is PENDING
    assert world.decide(True, "cid").state == "approved"
    assert fired(waiting) is ALLOW


def _request(**kw) -> StoredRequest:
    return StoredRequest(**{"id": "r1", "subject": "agent-1", "groups": ("ai-agents",), "session": "s",
                            "sql": "delete from t", "fingerprint": "f", "params_hash": "h", "created": 0.0,
                            "expires": 100.0, **kw})


@pytest.mark.parametrize(("decision", "status", "why"), [
    (Decision(True, "agent-1", ("dba",), at=1), 403, "your own request"),
    (Decision(True, "bob", ("ai-agents",), at=1), 403, "not an approver"),
    (Decision(False, "ann", ("dba",), reason=" ", at=1), 422, "reason is required"),
    (Decision(True, "ann", ("dba",), at=100), 409, "expired"),
    (Decision(True, "ann", ("dba",), at=1, grant=Grant("window", 61)), 422, "at most 60 minutes"),
    (Decision(True, "ann", ("dba",), at=1, grant=Grant("window", None)), 422, "minutes"),
])
def test_the_rules_of_approval(decision, status, why):
    with pytest.raises(DecisionRefused) as refused:
        apply_decision(_request(), decision, ApprovalRules(("dba",), max_grant_minutes=60))
    assert refused.value.status == status and why in str(refused.value)


def test_a_reason_to_approve_when_the_rules_say_so():
    rules = ApprovalRules(("dba",), reason_on_approve=True)
    with pytest.raises(DecisionRefused):
        apply_decision(_request(), Decision(True, "ann", ("dba",), at=1), rules)
    assert apply_decision(_request(), Decision(True, "ann", ("dba",), "fine", at=1), rules).state == "approved"


def test_a_failing_store_refuses_and_a_failing_notifier_does_not_matter():
    world = make_world()

    class Broken:
        def submit(self, request):
            from twisted.internet.defer import fail

            return fail(ConnectionRefusedError("the store is down"))

    world.plugin.store = Broken()  # type: ignore[assignment]
    refusal = fired(world.run(world.conn(), "delete from t where id = 1"))
    assert isinstance(refusal, Refusal) and refusal.message.startswith("pgwarden: approval failed")
    assert world.stats.approvals == {"requested": 1, "withdrawn": 1} and world.stats.approvals_pending == 0


def test_sessions_without_approve_rules_never_call_the_plugins_check():
    calls = []

    class Counting(Approving):
        def pgwarden_check(self, statement, session):
            calls.append(statement.sql)
            return super().pgwarden_check(statement, session)

    from pgwarden.api import hookimpl

    Counting.pgwarden_check = hookimpl(Counting.pgwarden_check)
    host = PluginHost(None, None, [("approve", Counting())], only=())
    statement = StatementCache().get("insert into t values (1)", default_context())
    for rules, expected in (([{"limit": {"rows": 10}}], []),
                            ([{"name": "w", "approve": {"statements": ["insert"]}}], ["insert into t values (1)"])):
        calls.clear()
        structured = _CONVERTER.structure({"name": "p", "default": "allow", "rules": rules}, Policy)
        session = Session("s", Identity("a"), "db", policies=host.read_policies((structured,)))
        verdict = host.check(statement, session)
        assert calls == expected
        assert (verdict.action if verdict is not None else None) == ("approve" if expected else "allow")
