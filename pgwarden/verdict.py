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
    """A statement held for a human: what it is, why, and from whom."""

    statement: Statement
    verdict: Verdict
    session: Session


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
