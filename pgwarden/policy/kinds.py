"""Rule kinds: what a rule of the policy file may say, each declared with the schema of its options.

A plugin that interprets rules returns its kinds from ``pgwarden_rule_kinds``:
its own (``RuleKind("hours", HoursRule)``) or built-in ones it takes on
(`MASK`, `APPROVE`). The plugin host reads each rule's options into the kind's
attrs class with the config's own converter, so a rule of a third party's kind
is validated like the rest of the file: unknown keys, wrong types, its
validators, each problem with its path and line. A rule whose kind no loaded
plugin interprets is an error, so disabling a plugin never silently disables
its rules.

The built-in kinds are declared here, the same way. ``limit`` is interpreted by
the core itself (the relay's row cap, the upstream session's
statement_timeout); ``block`` and ``allow`` by the built-in plugin ``block``;
``approve`` by the built-in plugin ``approve``; ``mask`` by none yet: it is
refused unless a plugin takes it on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, cast

import attrs

from pgwarden.policy.model import RULE_KEYS, ApproveMatch, LimitSpec, MaskSpec, StatementMatch, Unread

if TYPE_CHECKING:
    from pgwarden.policy.model import Rule

T_co = TypeVar("T_co", covariant=True)


def _name(_inst, _attribute, value: str) -> None:
    if not isinstance(value, str) or not value.replace("_", "a").replace("-", "a").isalnum():
        raise ValueError(f"a rule kind's name is a word (letters, digits, - and _), got {value!r}")
    if value in RULE_KEYS:
        raise ValueError(f"{value!r} is a key of every rule, it cannot be a rule kind")


def _attrs_class(_inst, _attribute, value: type) -> None:
    if not (isinstance(value, type) and attrs.has(value)):
        raise ValueError(f"a rule kind's options are an attrs class, got {value!r}")


@attrs.frozen(eq=False)
class RuleKind(Generic[T_co]):
    """A kind of rule and the attrs class of its options: the key a rule is written with.

    Compared by identity: two plugins interpret the same kind only by returning the
    same object (a built-in one, or one imported from the plugin that declares it).

    .. versionadded:: 1.0
    """

    #: the key of a rule of this kind in the policy file (``hours: {...}``)
    name: str = attrs.field(validator=_name)
    #: the attrs class its options are structured into (unknown keys are errors)
    options: type[T_co] = attrs.field(validator=_attrs_class)
    #: one line for people (`pgwarden plugins`)
    doc: str = ""

    def of(self, rule: Rule) -> T_co | None:
        """``rule``'s options when it is of this kind, else None: the typed way to read a rule."""
        if rule.kind != self.name:
            return None
        spec = rule.spec
        if isinstance(spec, Unread):
            raise RuntimeError(f"rule {rule.name or rule.kind!r} has not been read by the plugin host yet")
        return cast(T_co, spec)


BLOCK = RuleKind("block", StatementMatch, "refuses the statements it matches")
ALLOW = RuleKind("allow", StatementMatch, "what a policy with `default: block` permits")
APPROVE = RuleKind("approve", ApproveMatch, "holds the statements it matches for a human")
MASK = RuleKind("mask", MaskSpec, "rewrites the values of columns in results")
LIMIT = RuleKind("limit", LimitSpec, "caps result rows and statement time")

#: The kinds pgwarden declares itself.
BUILTIN_RULE_KINDS = (BLOCK, ALLOW, APPROVE, MASK, LIMIT)
#: The kinds the core interprets itself, with no plugin.
CORE_RULE_KINDS = (LIMIT,)
