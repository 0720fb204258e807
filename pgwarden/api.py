"""The plugin contract, version 1: every name a plugin codes against, from one place.

Every object a hook receives or returns is one of these classes, frozen (but
`Session.store`, a plugin's own place for state, and `Statement`, analysed on
first use and shared read-only), and documented in docs/plugins.md with the
hooks themselves (`pgwarden.hookspecs`). A plugin never gets the whole
configuration: its own options, the sections it declares
(`pgwarden_config_sections`), and the rules of the kinds it declares
(`pgwarden_rule_kinds`).

``from pgwarden import hookimpl, Verdict, Statement, Identity, Session, StoreKey``
keeps working; the rest is here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from pgwarden.config import Approvals, JwtAuth, Recording, Upstream
from pgwarden.hookspecs import PgwardenDeprecationWarning, hookimpl
from pgwarden.identity import AuthenticationFailed, Identity
from pgwarden.masking import ColumnMask, Detector, Masker, MessageMask, ResultColumn, ResultShape
from pgwarden.policy.kinds import ALLOW, APPROVE, BLOCK, LIMIT, MASK, RuleKind
from pgwarden.policy.model import (
    BUILTIN_DETECTORS,
    MASK_STRATEGIES,
    STATEMENT_KINDS,
    ApproveMatch,
    LimitSpec,
    MaskSpec,
    Partial,
    PartialMask,
    Policy,
    Rule,
    StatementMatch,
    When,
)
from pgwarden.sections import ConfigProblem, ConfigSection, Sections
from pgwarden.session import Session, SessionSummary, Store, StoreKey
from pgwarden.sql.statement import Statement
from pgwarden.verdict import ApprovalAnswer, ApprovalRequest, StoredApproval, Verdict
from pgwarden.wire.messages import Column, RowDescription, StartupMessage

T = TypeVar("T")

#: What a hook that may wait returns instead of its answer: a Deferred of it, or the
#: coroutine of an ``async def`` implementation (run with ``Deferred.fromCoroutine``).
Later = Deferred[T] | Coroutine[object, object, T]

#: One record (docs/records.md): a JSON-ready mapping, shared by every sink, read-only.
Record = Mapping[str, object]

class Reactor(Protocol):
    """The reactor pgwarden runs on, as every plugin may use it (time). It is the
    whole reactor (TCP, threads): a plugin that needs more says so with Twisted's
    interfaces, and never imports the global one."""

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,  # noqa: N802
                  **kwargs: object) -> IDelayedCall: ...

    def seconds(self) -> float: ...


#: The sections of pgwarden's configuration the built-in plugins need; declare your
#: own with `ConfigSection` (any key path of the file that holds one of these classes).
UPSTREAM = ConfigSection("upstream", Upstream)
AUTH_JWT = ConfigSection("auth.jwt", JwtAuth)
RECORDING = ConfigSection("recording", Recording)
APPROVALS = ConfigSection("approvals", Approvals)

__all__ = [
    "ALLOW",
    "APPROVALS",
    "APPROVE",
    "AUTH_JWT",
    "BLOCK",
    "BUILTIN_DETECTORS",
    "LIMIT",
    "MASK",
    "MASK_STRATEGIES",
    "RECORDING",
    "STATEMENT_KINDS",
    "UPSTREAM",
    "ApprovalAnswer",
    "ApprovalRequest",
    "Approvals",
    "ApproveMatch",
    "AuthenticationFailed",
    "Column",
    "ColumnMask",
    "ConfigProblem",
    "ConfigSection",
    "Detector",
    "Identity",
    "JwtAuth",
    "Later",
    "LimitSpec",
    "MaskSpec",
    "Masker",
    "MessageMask",
    "Partial",
    "PartialMask",
    "PgwardenDeprecationWarning",
    "Policy",
    "Reactor",
    "Record",
    "Recording",
    "ResultColumn",
    "ResultShape",
    "RowDescription",
    "Rule",
    "RuleKind",
    "Sections",
    "Session",
    "SessionSummary",
    "StartupMessage",
    "Statement",
    "StatementMatch",
    "Store",
    "StoreKey",
    "StoredApproval",
    "Upstream",
    "Verdict",
    "When",
    "hookimpl",
]
