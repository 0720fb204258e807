"""Policies: who they apply to (`When`) and what they say (`Rule`s), as frozen attrs classes.

Structured from the config file by the config's converter (see
`pgwarden.config`). A rule is of one kind (``block``, ``mask``, or one a plugin
declares, see `pgwarden.policy.kinds`); the plugin host reads each rule's options
with the schema of its kind and refuses a kind that no loaded plugin interprets.
An identity may match several policies: every one applies and the strictest
verdict wins.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from pgwarden.identity import Identity

#: The keys of a rule that are not its kind.
RULE_KEYS = ("name", "reason", "hint", "mode")
#: How a rule or a policy applies: ``enforce``, or ``shadow`` (evaluated and recorded, never
#: enforced: `pgwarden.policy.shadow`).
MODES = ("enforce", "shadow")
Mode = Literal["enforce", "shadow"]
STATEMENT_KINDS = frozenset(
    {
        "select", "insert", "update", "delete", "merge", "copy_from", "copy_to", "copy_program",
        "copy_file", "ddl", "truncate", "grant", "role", "system", "do", "call", "lock",
        "maintenance", "prepare", "execute", "explain", "transaction", "set", "show", "listen",
        "cursor", "side_effect", "server_files", "unknown",
    }
)


def _kinds(_inst, attribute, value) -> None:
    unknown = [k for k in value if k not in STATEMENT_KINDS]
    if unknown:
        meant = {k: difflib.get_close_matches(k, STATEMENT_KINDS, n=1) for k in unknown}
        if all(meant.values()):
            guesses = ", ".join(f"`{meant[k][0]}`" for k in unknown)
            raise ValueError(f"{attribute.name}: unknown statement kind(s) {', '.join(unknown)}; "
                             f"did you mean {guesses}?")
        raise ValueError(
            f"{attribute.name}: unknown statement kind(s) {', '.join(unknown)}; "
            f"expected any of {', '.join(sorted(STATEMENT_KINDS))}"
        )


@attrs.frozen
class When:
    """Conditions an identity must meet; all that are given must hold."""

    groups: tuple[str, ...] = ()  # any one of these groups
    subject: str | None = None  # a glob: agent-*, system:serviceaccount:ns:*
    claims: dict[str, Any] = attrs.Factory(dict)  # claim path (a.b.c) -> value or list of values

    def matches(self, identity: Identity) -> bool:
        if self.groups and not identity.groups.intersection(self.groups):
            return False
        if self.subject is not None and not fnmatch.fnmatchcase(identity.subject, self.subject):
            return False
        for path, wanted in self.claims.items():
            value = _claim(identity.claims, path)
            accepted = wanted if isinstance(wanted, list) else [wanted]
            if isinstance(value, list):
                if not any(v in accepted for v in value):
                    return False
            elif value not in accepted:
                return False
        return True


_MISSING = object()


def _claim(claims: Any, path: str):
    """The value at a dotted path; keys that contain dots themselves (``kubernetes.io``) work too."""
    if path in claims if isinstance(claims, dict) else False:
        return claims[path]
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the longest key first
        key = ".".join(parts[:i])
        if isinstance(claims, dict) and key in claims:
            found = _claim(claims[key], ".".join(parts[i:]))
            if found is not _MISSING:
                return found
    return _MISSING


@attrs.frozen
class StatementMatch:
    """What a block or approve rule matches: kinds, tables, functions, a missing WHERE."""

    statements: tuple[str, ...] = attrs.field(default=(), validator=_kinds)
    tables: tuple[str, ...] = ()  # globs over schema.table
    functions: tuple[str, ...] = ()
    where: Literal["absent"] | None = None


#: The masking strategies, weakest first: a column several rules mask gets the strictest
#: (`MaskSpec.strength`). ``hash`` keeps equality, ``partial`` and ``email`` keep a part,
#: ``fixed`` and ``redact`` keep nothing but NULL-ness, ``null`` keeps nothing.
MASK_STRATEGIES = ("hash", "partial", "email", "fixed", "redact", "null")
#: The detectors pgwarden ships; a plugin's own are named ``<plugin>.<name>`` (`pgwarden_mask_detectors`).
BUILTIN_DETECTORS = ("ssn", "credit_card", "email", "iban", "phone", "jwt", "api_key")


def _at_least_one(_inst, attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class ApproveMatch(StatementMatch):
    """An approve rule: what it matches, and how its approvals go (docs/approvals.md)."""

    #: hold (the statement waits on the wire) or retry (refused at once, passes when sent again
    #: after approval); None: ``approvals.mode``
    mode: Literal["hold", "retry"] | None = None
    #: distinct approvers whose yes is needed
    approvers: int = attrs.field(default=1, validator=_at_least_one)


@attrs.frozen
class Partial:
    """``with: {partial: {keep_first: N, keep_last: N}}`` (design card form of ``with: partial``)."""

    keep_first: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    keep_last: int = attrs.field(default=4, validator=attrs.validators.ge(0))


@attrs.frozen
class PartialMask:
    partial: Partial


def _column_globs(_inst, attribute, value: tuple[str, ...]) -> None:
    for glob in value:
        if glob.count(".") != 2 or not all(glob.split(".")):
            raise ValueError(f"{attribute.name}: expected schema.table.column (globs allowed: public.*.ssn), "
                             f"got {glob!r}")


def _detectors(_inst, attribute, value: tuple[str, ...]) -> None:
    for name in value:
        if name not in BUILTIN_DETECTORS and "." not in name:
            meant = difflib.get_close_matches(name, BUILTIN_DETECTORS, n=1)
            raise ValueError(f"{attribute.name}: expected one of {', '.join(BUILTIN_DETECTORS)} or a plugin's "
                             f"<plugin>.<name>, got {name!r}" + (f"; did you mean `{meant[0]}`?" if meant else ""))


@attrs.frozen
class MaskSpec:
    """A ``mask`` rule: the columns it masks and how, or the detectors it runs over result text.

    ``{columns: [public.users.ssn], with: partial, keep_last: 4}``,
    ``{columns: [public.users.email], with: hash, oracle: allow}``, ``{detect: [ssn, credit_card]}``
    (every text column of every result; ``columns`` narrows it). See docs/masking.md.
    """

    columns: tuple[str, ...] = attrs.field(default=(), validator=_column_globs)  # schema.table.column globs
    detect: tuple[str, ...] = attrs.field(default=(), validator=_detectors)
    with_: Literal["redact", "partial", "hash", "null", "email", "fixed"] = "redact"
    keep_first: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    keep_last: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    value: str | None = None  # with: fixed
    # A masked column in WHERE, JOIN ON, ORDER BY, GROUP BY, ... reveals it bit by bit: refused unless allowed.
    oracle: Literal["refuse", "allow"] = "refuse"
    # An output whose lineage pgwarden cannot establish, of a statement that may read these columns:
    # masked whole, or the statement refused.
    unknown: Literal["mask", "refuse"] = "mask"

    def __attrs_post_init__(self) -> None:
        if not self.columns and not self.detect:
            raise ValueError("columns: a mask rule names columns, detectors (detect), or both")
        if (self.keep_first is not None or self.keep_last is not None) and self.with_ != "partial":
            raise ValueError(f"keep_first: keep_first and keep_last go with `with: partial`, not {self.with_}")
        if self.with_ == "fixed" and self.value is None:
            raise ValueError("value: `with: fixed` needs the value to show (value: ...)")
        if self.value is not None and self.with_ != "fixed":
            raise ValueError(f"value: a value goes with `with: fixed`, not {self.with_}")

    @property
    def strength(self) -> int:
        """How little of the value this rule's strategy lets through: higher is stricter."""
        return MASK_STRATEGIES.index(self.with_)

    @property
    def kept(self) -> tuple[int, int]:
        """(keep_first, keep_last) of ``with: partial``."""
        return (self.keep_first or 0, 4 if self.keep_last is None and not self.keep_first else self.keep_last or 0)


_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """'30s', '2min', '500ms', '1h' (PostgreSQL's units) -> milliseconds."""
    t = text.strip()
    for unit in sorted(_UNITS_MS, key=len, reverse=True):
        if t.endswith(unit) and t[: -len(unit)].strip().isdigit():
            return int(t[: -len(unit)]) * _UNITS_MS[unit]
    if t.isdigit():
        return int(t)
    raise ValueError(f"expected a duration like 30s, 2min, 500ms or 1h, got {text!r}")


def _duration(_inst, _attribute, value) -> None:
    if value is not None:
        duration_ms(value)


def _positive_rows(_inst, attribute, value) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class LimitSpec:
    rows: int | None = attrs.field(default=None, validator=_positive_rows)  # per result sent
    statement_timeout: str | None = attrs.field(default=None, validator=_duration)  # 30s, 2min
    # Rows one statement may insert, update or delete (counted by the server, at any depth).
    rows_written: int | None = attrs.field(default=None, validator=_positive_rows)


@attrs.frozen
class Unread:
    """A rule's options as the file gives them, before the plugin host reads them with the
    schema of the rule's kind (which only the loaded plugins know)."""

    data: Any


@attrs.frozen
class Rule:
    """One rule: its kind and that kind's options, with a name, a reason and a hint.

    ``spec`` is an instance of the options class the kind declares (`RuleKind.options`);
    read it through the kind, ``BLOCK.of(rule)``, which is typed. Until the plugin host
    has read the policies it is `Unread`.
    """

    kind: str = attrs.field(metadata={"internal": True})
    spec: object = attrs.field(default=None, metadata={"internal": True})
    name: str | None = None
    reason: str | None = None
    hint: str | None = None
    #: ``shadow``: evaluated on every statement, recorded and counted, never enforced
    mode: Mode = "enforce"


@attrs.frozen
class Policy:
    name: str
    when: When = When()
    default: Literal["allow", "block"] = "allow"
    rules: tuple[Rule, ...] = ()
    #: how this policy's approve rules wait (hold or retry) when a rule does not say;
    #: None: ``approvals.mode`` (docs/approvals.md)
    approval_mode: Literal["hold", "retry"] | None = None
    #: ``shadow``: the whole policy (its rules and its default) is evaluated and recorded, never enforced
    mode: Mode = "enforce"


def matching_policies(identity: Identity, policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """Every policy whose `when` the identity meets, shadow ones and shadow rules included (what
    `pgwarden.policy.shadow.split` takes apart).

    The same tuple object for every identity that meets the same policies of the same
    ``policies`` (`_SHARED`): a session's policies tuple is the key of the memos of the
    verdicts and of the plugins' per-policies facts, by identity, so that sessions alike
    share their entries rather than each filling its own."""
    global _SHARED
    matched = tuple(i for i, p in enumerate(policies) if p.when.matches(identity))
    shared = _SHARED
    if shared[0] is not policies:  # another config (a reload): what was shared for the last one is let go
        shared = _SHARED = (policies, {})
    found = shared[1].get(matched)
    if found is None:
        found = shared[1][matched] = tuple(policies[i] for i in matched)
    return found


#: the config's policies tuple of the last `matching_policies` call, and the tuple it answered
#: for each set of them (by their places in it); at most 2^len(policies) entries, in practice a few
_SHARED: tuple[object, dict[tuple[int, ...], tuple[Policy, ...]]] = (None, {})


def policies_for(identity: Identity, policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """The policies enforced for the identity: every policy whose `when` it meets (all of them
    apply), without shadow policies and shadow rules, which are never enforced."""
    from pgwarden.policy.shadow import split

    return split(matching_policies(identity, policies))[0]


def limit_rules(policies: tuple[Policy, ...]):
    """(options, policy, rule) of each `limit` rule of ``policies``, in order."""
    from pgwarden.policy.kinds import LIMIT

    for policy in policies:
        for rule in policy.rules:
            spec = LIMIT.of(rule)
            if spec is not None:
                yield spec, policy, rule


def _limits(policies: tuple[Policy, ...]):
    return (spec for spec, _, _ in limit_rules(policies))


def row_cap(policies: tuple[Policy, ...]) -> int | None:
    """The smallest row limit of the `limit` rules that apply; None when there is none."""
    caps = [spec.rows for spec in _limits(policies) if spec.rows]
    return min(caps) if caps else None


def rows_written_cap(policies: tuple[Policy, ...]) -> tuple[int, Policy, Rule] | None:
    """The smallest rows_written limit of the `limit` rules that apply, with its policy and rule."""
    found = [(spec.rows_written, i, p, r) for i, (spec, p, r) in enumerate(limit_rules(policies))
             if spec.rows_written]
    if not found:
        return None
    cap, _, policy, rule = min(found, key=lambda f: (f[0], f[1]))
    return cap, policy, rule


def statement_timeout_ms(policies: tuple[Policy, ...]) -> int | None:
    """The smallest statement_timeout of the `limit` rules that apply, in milliseconds."""
    found = [duration_ms(spec.statement_timeout) for spec in _limits(policies) if spec.statement_timeout]
    return min(found) if found else None
