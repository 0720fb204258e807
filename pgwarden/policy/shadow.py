"""Shadow rules and policies (``mode: shadow``): taken out of what is enforced, and each made a
view of its own that the plugins judge like any policy.

Why views rather than telling plugins about modes: a plugin reads ``session.policies`` and
answers a verdict; it need not know that shadow exists. The core asks the same hooks again
with a session whose policies are one shadow unit — one shadow rule inside a copy of its
policy, or one whole shadow policy — so every rule kind, built-in or a third party's, gets
shadow evaluation for free, its verdict attributed to the unit, and nothing a shadow rule
says can reach the enforced verdict: the enforced policies never contain it. Each view is a
tuple made once per session, so memos keyed by the policies tuple (``block.judged``) keep
shadow and enforced verdicts apart.
"""

from __future__ import annotations

import attrs

from pgwarden.policy.kinds import ALLOW
from pgwarden.policy.model import Policy


@attrs.frozen(eq=False)
class ShadowUnit:
    """One thing evaluated in shadow: a rule (``rule`` set) or a whole policy (``rule`` None)."""

    policy: str
    #: the rule's name (``rules[i]`` when it has none, as verdicts name it); None: the whole policy
    rule: str | None
    #: what the plugins are shown: the rule alone in a copy of its policy, or the whole policy
    policies: tuple[Policy, ...]
    #: an ``allow`` rule: it reports the statements it would allow (its view blocks the others)
    allows: bool = False


def split(policies: tuple[Policy, ...]) -> tuple[tuple[Policy, ...], tuple[ShadowUnit, ...]]:
    """(what is enforced, what is evaluated in shadow) of the policies that apply to a session.

    A shadow policy leaves the enforced policies whole (an identity that only a shadow policy
    matches has no policy: shadow never changes what is enforced). A shadow rule leaves its
    policy, which keeps its other rules and its default. The tuple enforced is ``policies``
    itself when nothing is in shadow (no cost, same memo keys as before).
    """
    if not any(p.mode == "shadow" or any(r.mode == "shadow" for r in p.rules) for p in policies):
        return policies, ()
    known = _SPLIT.get(id(policies))
    if known is not None and known[0] is policies:
        return known[1]
    if len(_SPLIT) > 1000:
        _SPLIT.clear()
    split_ = _SPLIT[id(policies)] = (policies, _split(policies))  # the entry keeps the tuple, and so its id
    return split_[1]


#: `split`'s answers by their policies tuple (shared by sessions alike: `matching_policies`), so that
#: such sessions share the tuple enforced too, and with it the memos keyed by it
_SPLIT: dict[int, tuple[tuple[Policy, ...], tuple[tuple[Policy, ...], tuple[ShadowUnit, ...]]]] = {}


def _split(policies: tuple[Policy, ...]) -> tuple[tuple[Policy, ...], tuple[ShadowUnit, ...]]:
    enforced: list[Policy] = []
    units: list[ShadowUnit] = []
    for policy in policies:
        if policy.mode == "shadow":
            whole = attrs.evolve(policy, mode="enforce", rules=tuple(
                attrs.evolve(r, mode="enforce", name=r.name or f"rules[{i}]") for i, r in enumerate(policy.rules)))
            units.append(ShadowUnit(policy.name, None, (whole,)))
            continue
        kept = tuple(r for r in policy.rules if r.mode != "shadow")
        enforced.append(policy if len(kept) == len(policy.rules) else attrs.evolve(policy, rules=kept))
        for i, rule in enumerate(policy.rules):
            if rule.mode != "shadow":
                continue
            name = rule.name or f"rules[{i}]"
            allows = ALLOW.of(rule) is not None
            # Alone in a copy of its policy: default allow, so that the verdict is the rule's; an
            # allow rule's view blocks by default, so that it says what the rule would let through.
            view = attrs.evolve(policy, default="block" if allows else "allow",
                                rules=(attrs.evolve(rule, mode="enforce", name=name),))
            units.append(ShadowUnit(policy.name, name, (view,), allows))
    return tuple(enforced), tuple(units)
