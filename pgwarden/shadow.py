"""Shadow verdicts of one session: what its shadow rules and policies would have decided.

Each `ShadowUnit` (`pgwarden.policy.shadow`) is judged by the same ``pgwarden_check`` hooks as
the enforced policies, through a `Session` view that shows the plugins only that unit. What
comes back is only ever written down (the statement record's ``shadow`` field, the metric
``pgwarden_shadow_verdicts_total``): the enforced verdict is computed before and apart from it,
and a plugin that fails here is recorded as a shadow ``error``, never as a refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden import limits as core_limits
from pgwarden.limits import session_limits
from pgwarden.masking import ResultShape, row_transform
from pgwarden.plugins import MaskingFailed
from pgwarden.policy.kinds import MASK
from pgwarden.policy.model import limit_rules, statement_timeout_ms
from pgwarden.verdict import Verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from pgwarden.plugins import PluginHost
    from pgwarden.policy.shadow import ShadowUnit
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement

log = Logger(namespace="pgwarden.shadow")

#: One shadow verdict as records and `tail` show it: policy, rule (None: a whole policy's
#: verdict), action (allow, approve, block, or error: a plugin failed), reason.
Entry = dict[str, object]

# The rules the block plugin answers for a policy as a whole, not for a rule of it: in the
# view of a single shadow rule they say nothing about that rule.
_POLICY_WIDE = frozenset({"unknown: block", "default: block"})


def _error(unit: ShadowUnit, why: str) -> Entry:
    return {"policy": unit.policy, "rule": unit.rule, "action": "error", "reason": why}


def entries(unit: ShadowUnit, verdict: Verdict) -> list[Entry]:
    """What ``verdict`` (the plugins' answer for ``unit``'s view) records about ``unit``."""
    if verdict.action == "block" and verdict.rule is not None and verdict.rule.startswith("plugin:"):
        return [_error(unit, verdict.reason or "a plugin failed")]  # the plugin host's own refusal
    if unit.rule is None:  # a whole policy: its verdict, whatever it is
        return [{"policy": unit.policy, "rule": verdict.rule if verdict.action != "allow" else None,
                 "action": verdict.action, "reason": verdict.reason}]
    if unit.allows:  # an allow rule: the statements it would let through (its view blocks the rest)
        return [{"policy": unit.policy, "rule": unit.rule, "action": "allow", "reason": None}] \
            if verdict.action == "allow" else []
    if verdict.action == "allow" or verdict.rule in _POLICY_WIDE or verdict.rule != unit.rule:
        return []  # the rule does not match (or what answered is not about it)
    return [{"policy": unit.policy, "rule": unit.rule, "action": verdict.action, "reason": verdict.reason}]


class Shadow:
    """The shadow units of one session, each with the session view its plugins are shown."""

    __slots__ = ("limits", "masking", "row_caps", "units")

    def __init__(self, session: Session, units: tuple[ShadowUnit, ...]) -> None:
        # The views share the session's store: plugins keep what they learn of the session
        # (SQL-level prepared statements) in one place, as they would without shadow.
        self.units = tuple((unit, attrs.evolve(session, policies=unit.policies)) for unit in units)
        # `limit` rules are the core's, not a plugin's: their statement refusals (a statement that
        # would lift statement_timeout, ...) and row caps are checked here, as if the session had
        # been opened under them. rows_written and statement_timeout themselves are enforced by
        # the server: a shadow one has nothing to measure them with, and is not reported.
        limited = []
        caps = []
        for unit in units:
            limits = session_limits(unit.policies, startup_timeout_ms=statement_timeout_ms(unit.policies))
            if limits.any:
                limited.append((unit, limits))
            found = [(spec.rows, p.name, r.name) for spec, p, r in limit_rules(unit.policies) if spec.rows]
            if found:
                caps.append((unit, min(found, key=lambda f: f[0])))
        self.limits = tuple(limited)
        #: (unit, (rows, policy, rule)) of the units with a row limit
        self.row_caps = tuple(caps)
        #: the units with mask rules: asked about each result's columns (`masked_rows`)
        self.masking = tuple((unit, view) for unit, view in self.units
                             if any(MASK.of(rule) is not None for p in unit.policies for rule in p.rules))

    @classmethod
    def of(cls, session: Session, units: tuple[ShadowUnit, ...]) -> Shadow | None:
        """None when nothing is in shadow: the decision path then does no shadow work at all."""
        return cls(session, units) if units else None

    def evaluate(self, plugins: PluginHost, statement: Statement) -> list[Entry] | Deferred[list[Entry]]:
        """The shadow entries of ``statement``; a Deferred when a plugin answers later. Never
        fails: a failure is an ``error`` entry of its unit."""
        found: list[Entry] = []
        later: list[Deferred[list[Entry]]] = []
        for unit, limits in self.limits:
            try:
                refused = core_limits.refusal(statement.analysis, limits)
            except Exception as e:  # noqa: BLE001 - never more than a shadow error
                found.append(_error(unit, f"shadow evaluation failed: {e!r}"))
                continue
            if refused is not None:
                found += entries(unit, refused)
        for unit, view in self.units:
            try:
                verdict = plugins.check(statement, view)
            except Exception as e:  # noqa: BLE001 - the host catches plugins' errors; anything else is ours
                log.failure("shadow evaluation of {policy}/{rule} failed", Failure(), policy=unit.policy,
                            rule=unit.rule)
                found.append(_error(unit, f"shadow evaluation failed: {e!r}"))
                continue
            if isinstance(verdict, Verdict):
                found += entries(unit, verdict)
            else:
                later.append(verdict.addCallbacks(
                    lambda v, u=unit: entries(u, v) if isinstance(v, Verdict) else [_error(u, f"answered {v!r}")],
                    lambda f, u=unit: [_error(u, f"shadow evaluation failed: {f.getErrorMessage()}")]))
        if not later:
            return found
        return gatherResults([succeed(found), *later]).addCallback(
            lambda lists: [e for entries_ in lists for e in entries_])

    def masked_rows(self, plugins: PluginHost, shape: ResultShape, statement: Statement | None,
                    transform: Callable[[bytes], bytes] | None) -> Callable[[bytes], bytes] | None:
        """``transform`` (the enforced masks of a result, or None) with what the shadow mask
        rules would mask counted on the way: their masks run on a copy of each run of rows and
        their output is dropped. What they count is the transform's ``shadow`` (`ShadowMasks`)."""
        if not self.masking:
            return transform
        description = shape.description
        found = ShadowMasks()
        runs: list[tuple[int, Callable[[bytes], bytes]]] = []
        for unit, view in self.masking:
            try:
                masks = plugins.result_masks(shape, statement, view)
            except MaskingFailed as e:
                found.errors.append(_error(unit, str(e)))
                continue
            if masks:
                counting = row_transform(description, masks)
                found.plans.append((unit, counting.plan))  # type: ignore[attr-defined]
                runs.append((len(found.plans) - 1, counting))
        if not runs and not found.errors:
            return transform

        def shadowed(run: bytes) -> bytes:
            for i, counting in runs:
                if i in found.failed:
                    continue
                try:
                    counting(run)
                except Exception as e:  # noqa: BLE001 - a shadow masker failed: recorded, nothing else
                    unit = found.plans[i][0]
                    found.failed.add(i)
                    found.errors.append(_error(unit, f"shadow masking failed: {e!r}"))
            return transform(run) if transform is not None else run

        shadowed.shadow = found  # type: ignore[attr-defined]
        if transform is not None:
            for name in ("plan", "columns"):
                if hasattr(transform, name):
                    setattr(shadowed, name, getattr(transform, name))
        return shadowed


class ShadowMasks:
    """What the shadow mask rules of one result would have masked: per unit, its masking plan
    (columns, sources, values counted; never a value), and the units that failed."""

    __slots__ = ("errors", "failed", "plans")

    def __init__(self) -> None:
        self.plans: list[tuple[ShadowUnit, object]] = []
        self.failed: set[int] = set()
        self.errors: list[Entry] = []


def result_entries(shadow: Shadow, rows: int, masked: tuple[object, ...]) -> list[Entry]:
    """The ``shadow`` field of a result record: the shadow row limits the execution's ``rows``
    exceed ({policy, rule, action: limit, reason}), then what shadow masks would have masked."""
    out: list[Entry] = [
        {"policy": unit.policy, "rule": unit.rule if unit.rule is not None else rule, "action": "limit",
         "reason": f"would be truncated at {cap} rows (of {rows})"}
        for unit, (cap, _policy, rule) in shadow.row_caps if rows > cap]
    if masked:
        out += mask_entries(masked)
    return out


def mask_entries(results: tuple[object, ...]) -> list[Entry]:
    """The ``shadow`` field of a result record: per unit, what its mask rules would have masked in
    the execution's results ({policy, rule, action: mask, columns: [{column, source, rule, strategy,
    values}]}, detector hits as ``detected``), and ``error`` entries."""
    from pgwarden.recorder import masked_fields

    by_unit: dict[int, tuple[ShadowUnit, list[object]]] = {}
    out: list[Entry] = []
    for found in results:
        assert isinstance(found, ShadowMasks)
        for i, (unit, plan) in enumerate(found.plans):
            if i not in found.failed:
                by_unit.setdefault(id(unit), (unit, []))[1].append(plan)
        out += found.errors
    for unit, plans in by_unit.values():
        fields = masked_fields(plans)
        columns = [c for c in fields["masks"] if c["values"]]  # type: ignore[attr-defined]
        if not columns:
            continue  # the rule names these columns, but no value of them came back
        entry: Entry = {"policy": unit.policy, "rule": unit.rule, "action": "mask", "columns": columns}
        if "detected" in fields:
            entry["detected"] = fields["detected"]
        out.append(entry)
    return out
