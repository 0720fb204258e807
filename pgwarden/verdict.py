"""What a policy decides about one statement, and the error a refusal becomes.

The relay only knows two outcomes, allow and refuse; `Verdict` is the richer
answer policies give (block, approve) and `Refusal` is what reaches the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement

# Strictness order used to reduce several answers: the strictest wins.
_RANK = {"allow": 0, "approve": 1, "block": 2}


@attrs.frozen
class Verdict:
    """One answer about one statement: ``allow``, ``approve`` (hold for a human) or ``block``."""

    action: str = attrs.field(validator=attrs.validators.in_(tuple(_RANK)))
    reason: str | None = None
    hint: str | None = None
    policy: str | None = None
    rule: str | None = None
    #: who decided, in the answer of an approval store (``pgwarden_await_approval``)
    approver: str | None = None

    @classmethod
    def allow(cls, approver: str | None = None) -> Verdict:
        return _ALLOW if approver is None else cls("allow", approver=approver)

    @classmethod
    def block(cls, reason: str, hint: str | None = None, **where: str | None) -> Verdict:
        return cls("block", reason, hint, **where)

    @classmethod
    def approve(cls, reason: str, **where: str | None) -> Verdict:
        return cls("approve", reason, None, **where)

    @property
    def rank(self) -> int:
        return _RANK[self.action]

    @staticmethod
    def strictest(verdicts) -> Verdict:
        """The strictest of several verdicts (block > approve > allow); allow when none."""
        best = _ALLOW
        for v in verdicts:
            if v is not None and v.rank > best.rank:
                best = v
        return best


_ALLOW = Verdict("allow")


@attrs.frozen
class ApprovalRequest:
    """A statement that needs a human's yes: what it is, why, from whom, and until when.

    Built by the core (its ``id`` too) and handed to ``pgwarden_await_approval`` and
    ``pgwarden_approval_requested``. ``parameters`` are the statement's bind parameters
    as records show them (text; None for NULL; binary values as ``\\x`` hex), None for a
    statement without any (a simple Query). Times are the reactor's seconds.

    .. versionchanged:: 1.1
       ``id``, ``parameters``, ``created``, ``expires``, ``mode``, ``exact``, ``approvers``
       and ``session_id``.
    """

    statement: Statement
    verdict: Verdict
    session: Session
    id: str = ""
    parameters: tuple[str | None, ...] | None = None
    created: float = 0.0
    expires: float = 0.0
    #: ``hold`` (the statement waits) or ``retry`` (answer at once: a grant covers it, or
    #: `ApprovalAnswer.required`), from the approve rule or ``approvals.mode``
    mode: str = "hold"
    #: identifies this exact statement (text and parameter values; a SHA-256 in hex): an
    #: earlier approval's grant covers a statement sent again with the same ``exact``
    exact: str = ""
    #: distinct approvers whose yes is needed (the approve rule's ``approvers``)
    approvers: int = 1
    #: the id of the session in records (``session`` of each record)
    session_id: str = ""
    #: the size in bytes of each parameter's value (None for NULL), of which ``parameters`` show
    #: at most the first 2048 (`pgwarden.approvals.SHOWN_PARAMETER_BYTES`); None without parameters
    #: (added with red team thirteen; no contract change)
    parameter_sizes: tuple[int | None, ...] | None = None
    #: how each parameter is read (`pgwarden.approvals.parameter_readings`: its format, a binary
    #: value of a known declared type as the server reads it), None for NULL; None without
    #: parameters (added with red team fifteen; no contract change)
    parameter_readings: tuple[str | None, ...] | None = None


#: What an approval store says about a request (`ApprovalAnswer.state`).
ANSWER_STATES = ("approved", "denied", "expired", "required")


@attrs.frozen
class ApprovalAnswer:
    """An approval store's answer about one request (``pgwarden_await_approval``).

    ``approved`` runs the statement; ``denied`` and ``expired`` refuse it; ``required``
    (retry mode) refuses it at once, saying the request waits for a human and that the
    same statement may be sent again once it is approved. ``request`` names an earlier
    request whose approval covers this statement (a retry-mode grant), when it is not
    this request's own.

    .. versionadded:: 1.1
    """

    state: str = attrs.field(validator=attrs.validators.in_(ANSWER_STATES))
    approver: str | None = None
    reason: str | None = None
    request: str | None = None

    @classmethod
    def approved(cls, approver: str | None = None, reason: str | None = None,
                 request: str | None = None) -> ApprovalAnswer:
        return cls("approved", approver, reason, request)

    @classmethod
    def denied(cls, reason: str | None = None, approver: str | None = None) -> ApprovalAnswer:
        return cls("denied", approver, reason)

    @classmethod
    def expired(cls, reason: str | None = None) -> ApprovalAnswer:
        return cls("expired", None, reason)

    @classmethod
    def required(cls) -> ApprovalAnswer:
        return cls("required")


@attrs.frozen
class StoredApproval:
    """One approval request as its store keeps it, for a caller that takes it up elsewhere than
    in the session that made it: the MCP endpoint of another pgwarden sharing the store, or of
    this one after a restart (``pgwarden_approval_request``, ``pgwarden_approval_claim``).

    ``sql`` and ``parameters`` are the statement as stored (parameters as records show them);
    ``exact`` is `ApprovalRequest.exact`, which a statement sent again must match for a
    retry-mode grant to cover it. ``executed``: a caller that runs the stored statement itself
    has claimed its one run (``pgwarden_approval_claim``).

    .. versionadded:: 1.3
    """

    id: str
    subject: str
    mode: str
    sql: str
    parameters: tuple[str | None, ...] | None
    exact: str
    #: where it stands: ``required`` while pending, else as `pgwarden_approval_status` says
    answer: ApprovalAnswer
    executed: bool = False


@attrs.frozen
class Refusal:
    """An error pgwarden raises in place of a statement, as the client will see it."""

    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> Refusal:
        where = []
        if verdict.policy:
            where.append(f"policy {verdict.policy!r}")
        if verdict.rule:
            where.append(f"rule {verdict.rule!r}")
        detail = ("Refused by " + ", ".join(where) + ".") if where else None
        return cls("42501", f"pgwarden: blocked: {verdict.reason or 'not allowed'}", detail, verdict.hint)
