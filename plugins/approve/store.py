"""Where approval requests wait for people: the types every store keeps, and the contract of a store.

A request is written once when a statement needs approval (`ApprovalStore.submit`), decided by
approvers through the API or inbox (`ApprovalStore.decide`), and left by the sidecar that made it
when its statement no longer waits (`ApprovalStore.withdraw`, `ApprovalStore.expire`). The sidecar
waits with `ApprovalStore.watch`; in retry mode it asks `ApprovalStore.take_grant` whether an
earlier approval covers a statement sent again.

Everything here is plain data (frozen attrs, JSON-ready through `to_json` / `from_json`) and
times are Unix seconds from the reactor's clock, so the same contract fits a store in memory (one
sidecar) and one in a PostgreSQL table shared by many sidecars and an inbox (LISTEN/NOTIFY wakes
the watchers). The rules of approval — who may decide, how many must agree, when a reason is
required — are the pure function `apply_decision`: every store calls it on the request as stored
(a database store inside the transaction that locks the row), so no store can judge differently.

Stable for store implementations (contract version 1): add fields with defaults, never rename.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import attrs
import cattrs
from twisted.internet.defer import Deferred

#: Where a request is in its life. Only ``pending`` changes; the others are final.
State = Literal["pending", "approved", "denied", "expired", "withdrawn"]
FINAL_STATES: frozenset[str] = frozenset({"approved", "denied", "expired", "withdrawn"})
#: ``hold``: the statement waits on the wire; ``retry``: refused at once, passes when sent again
#: after approval, within the grant.
Mode = Literal["hold", "retry"]


class DecisionRefused(Exception):
    """A decision the rules of approval do not accept; ``str(e)`` is shown to the approver as is.

    ``status`` is the HTTP status the API answers with (403 not allowed, 404 unknown request,
    409 no longer pending, 422 something missing).
    """

    def __init__(self, why: str, status: int = 403) -> None:
        super().__init__(why)
        self.status = status


class StoreUnavailable(Exception):
    """The store cannot be reached: no new request can be made (fail closed)."""


@attrs.frozen
class Preview:
    """The impact preview: EXPLAIN (never ANALYZE) run by pgwarden on its own connection.

    ``ok`` False: the preview failed (``error`` says why); the request is made all the same.
    """

    ok: bool
    #: estimated rows of the top plan node (for a write: the rows it would touch)
    rows: float | None = None
    #: the planner's total cost of the top plan node
    cost: float | None = None
    #: tables the plan writes (ModifyTable targets), schema.table
    writes: tuple[str, ...] = ()
    #: the plan as EXPLAIN (FORMAT JSON) gave it, as text; None when it failed
    plan: str | None = None
    #: whether the plan is the generic one (a parameterised statement, planned without its values)
    generic: bool = False
    error: str | None = None


@attrs.frozen
class Grant:
    """What an approval lets through. ``once``: this request's statement, one time (hold mode:
    the statement that waits). ``window``: in retry mode, the same statement from the same
    identity for ``minutes`` after the approval, as often as it comes."""

    kind: Literal["once", "window"] = "once"
    minutes: int | None = None
    #: the window covers any statement with this grant key (`StoredRequest.grant_key`: the same
    #: fingerprint and the same analysis; other constants and parameters)
    by_fingerprint_only: bool = False


@attrs.frozen
class Decision:
    """One approver's yes or no. ``groups`` are the approver's groups from their verified token."""

    approved: bool
    approver: str
    groups: tuple[str, ...] = ()
    reason: str | None = None
    at: float = 0.0
    grant: Grant = Grant()


@attrs.frozen
class ApprovalRules:
    """How decisions are judged: from ``approvals:`` of the configuration of whoever decides."""

    #: a decision needs one of these groups in the approver's token; empty: nobody may decide
    approver_groups: tuple[str, ...] = ()
    reason_on_deny: bool = True
    reason_on_approve: bool = False
    #: the longest window a grant may give, in minutes
    max_grant_minutes: int = 60


@attrs.frozen
class StoredRequest:
    """One approval request as every store keeps it.

    ``sql`` and ``parameters`` are as recorded (parameters rendered as text, None for NULL,
    binary values as hex). ``params_hash`` identifies the exact statement for retry grants
    (text and parameters); ``fingerprint`` is libpg_query's, the statement whatever its constants
    (shown, not matched on); ``grant_key`` what a fingerprint-only grant matches on: the
    fingerprint and what pgwarden's analysis says the statement does (`grant_key.grant_key`).
    """

    id: str
    subject: str
    groups: tuple[str, ...]
    session: str
    sql: str
    fingerprint: str | None
    params_hash: str
    created: float
    expires: float
    parameters: tuple[str | None, ...] | None = None
    kinds: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    policy: str | None = None
    rule: str | None = None
    reason: str | None = None
    mode: Mode = "hold"
    #: distinct approvers whose yes is needed
    approvals_needed: int = 1
    preview: Preview | None = None
    state: State = "pending"
    decisions: tuple[Decision, ...] = ()
    #: why it ended when nobody decided it (expired, withdrawn), or the denial's reason
    closed_reason: str | None = None
    closed_at: float | None = None
    #: retry mode: until when the approval lets the statement through (None: once)
    grant_until: float | None = None
    grant_by_fingerprint_only: bool = False
    #: a ``once`` grant that has been used
    used: bool = False
    #: retry mode: a caller that sends the stored statement itself (the MCP endpoint's
    #: ``execute_approved``) has claimed its one run (`ApprovalStore.claim_execution`)
    executed: bool = False
    #: the fingerprint-only grant's key (`grant_key.grant_key`); None (a request stored before
    #: there was one, or a text without a fingerprint): a fingerprint-only grant covers nothing
    grant_key: str | None = None
    #: the size in bytes of each parameter's value (None for NULL): ``parameters`` show at most the
    #: first 2048 of each (the inbox and the CLI say when one is cut, and by how much); None when
    #: unknown (a request stored by an older pgwarden)
    parameter_sizes: tuple[int | None, ...] | None = None
    #: how each parameter is read: its format, a binary value of a known type as the server
    #: reads it (`pgwarden.approvals.parameter_readings`); None from an older pgwarden
    parameter_readings: tuple[str | None, ...] | None = None

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(d.approver for d in self.decisions if d.approved)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def params_hash(sql: str, parameters: Sequence[str | None] | None) -> str:
    """The identity of one exact statement: its text and its parameters."""
    data = json.dumps([sql, list(parameters) if parameters is not None else None], ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def apply_decision(request: StoredRequest, decision: Decision, rules: ApprovalRules) -> StoredRequest:
    """``request`` after ``decision``, or DecisionRefused: the rules of approval, in one place.

    The requester never decides their own request; the approver needs a group of
    ``approver_groups``; one approver counts once; a denial (and, when configured, an
    approval) carries a reason; a grant's window is at most ``max_grant_minutes``. One
    denial denies; ``approvals_needed`` distinct approvals approve.
    """
    if request.state != "pending":
        raise DecisionRefused(f"request {request.id} is already {request.state}", 409)
    if decision.at >= request.expires:
        raise DecisionRefused(f"request {request.id} has expired", 409)
    if decision.approver == request.subject:
        raise DecisionRefused("you cannot decide your own request")
    if not set(decision.groups) & set(rules.approver_groups):
        raise DecisionRefused("you are not an approver: your token has none of the groups in approvals.approver_groups")
    if decision.approver in {d.approver for d in request.decisions}:
        raise DecisionRefused(f"you have already decided request {request.id}", 409)
    reason = (decision.reason or "").strip()
    if not reason and (rules.reason_on_approve if decision.approved else rules.reason_on_deny):
        raise DecisionRefused("a reason is required to " + ("approve" if decision.approved else "deny"), 422)
    grant = decision.grant
    if grant.kind == "window":
        if grant.minutes is None or grant.minutes <= 0:
            raise DecisionRefused("a window grant needs a number of minutes", 422)
        if grant.minutes > rules.max_grant_minutes:
            raise DecisionRefused(f"a grant is at most {rules.max_grant_minutes} minutes", 422)
    decisions = request.decisions + (attrs.evolve(decision, reason=reason or None),)
    if not decision.approved:
        return attrs.evolve(request, decisions=decisions, state="denied", closed_reason=reason or None,
                            closed_at=decision.at)
    if len({d.approver for d in decisions if d.approved}) < request.approvals_needed:
        return attrs.evolve(request, decisions=decisions)
    until = None
    if grant.kind == "window" and grant.minutes is not None:
        until = decision.at + grant.minutes * 60
    return attrs.evolve(request, decisions=decisions, state="approved", closed_at=decision.at,
                        grant_until=until, grant_by_fingerprint_only=grant.by_fingerprint_only)


def claimable(request: StoredRequest, subject: str) -> bool:
    """Whether ``subject`` may claim the one run of ``request``'s stored statement now."""
    return (request.state == "approved" and request.mode == "retry" and request.subject == subject
            and not request.executed)


def covers(request: StoredRequest, subject: str, fingerprint: str | None, exact: str, now: float) -> bool:
    """Whether ``request``'s approval lets this statement through now (retry mode).

    ``fingerprint`` is the statement's grant key (`grant_key.grant_key`), not libpg_query's bare
    fingerprint: the name stays that of contract version 1."""
    if request.state != "approved" or request.subject != subject or request.mode != "retry":
        return False
    if request.grant_until is None:
        if request.used:
            return False
    elif now >= request.grant_until:
        return False
    if request.grant_by_fingerprint_only:
        return request.fingerprint is not None and fingerprint is not None and request.grant_key == fingerprint
    # The exact text and parameters, meaning the same where they run now (`grant_key.bound`): the
    # same search_path, the same bodies of what it EXECUTEs. (A request an older pgwarden stored
    # has no key: its exact grant covers as it did.)
    return request.params_hash == exact and (request.grant_key is None or request.grant_key == fingerprint)


@runtime_checkable
class ApprovalStore(Protocol):
    """A queue of approval requests shared by whoever reads and decides them.

    Every method answers with a Deferred (a database store waits for the network);
    a store that cannot be reached fails it with `StoreUnavailable`. Decisions go
    through `apply_decision`; a refused one fails with `DecisionRefused`.
    """

    def health(self) -> str | None:
        """None when the store works; else why not, for /readyz."""

    def submit(self, request: StoredRequest) -> Deferred[None]:
        """Keeps a new pending request (its id is new)."""

    def get(self, request_id: str) -> Deferred[StoredRequest | None]:
        """The request, in whatever state, or None."""

    def pending(self) -> Deferred[list[StoredRequest]]:
        """Requests waiting for a decision, oldest first."""

    def history(self, limit: int) -> Deferred[list[StoredRequest]]:
        """The ``limit`` most recently ended requests, newest first."""

    def decide(self, request_id: str, decision: Decision, rules: ApprovalRules) -> Deferred[StoredRequest]:
        """Adds ``decision`` (judged by `apply_decision`); the request as it is after it.
        Fails with DecisionRefused(status 404) for an unknown id."""

    def withdraw(self, request_id: str, why: str) -> Deferred[StoredRequest | None]:
        """The statement no longer waits (cancelled, session ended): a pending request ends
        as ``withdrawn``; one already final is left as it is. The request as it is after."""

    def expire(self, request_id: str) -> Deferred[StoredRequest | None]:
        """A pending request past its expiry ends as ``expired``; the request as it is after."""

    def watch(self, request_id: str) -> Deferred[StoredRequest]:
        """Fires with the request once it is final (decided, expired or withdrawn); at once
        when it already is. Cancelling the Deferred stops watching, nothing else."""

    def take_grant(self, subject: str, fingerprint: str | None, exact: str,
                   now: float) -> Deferred[StoredRequest | None]:
        """An approved retry-mode request of ``subject`` that `covers` this statement now, or None;
        a ``once`` grant is marked used by the same call (atomically: two sidecars cannot both use it).
        ``fingerprint`` is the statement's grant key (`StoredRequest.grant_key`), ``exact`` its
        ``params_hash``."""

    def claim_execution(self, request_id: str, subject: str) -> Deferred[StoredRequest | None]:
        """Marks the approved retry-mode request ``request_id`` of ``subject`` ``executed``; the
        request as claimed, or None when it is not `claimable` (unknown, claimed already, ...).
        Atomically: of any number of callers on any number of sidecars, one gets it."""


_converter = cattrs.Converter()


def to_json(request: StoredRequest) -> dict[str, object]:
    """``request`` as a JSON-ready mapping (the API's and the postgres store's form)."""
    out: dict[str, object] = _converter.unstructure(request)
    return out


def from_json(data: dict[str, object]) -> StoredRequest:
    return _converter.structure(data, StoredRequest)
