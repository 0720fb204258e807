"""Identity -> policies: groups, subject globs, claims (Kubernetes service-account tokens too)."""

from pgwarden.identity import Identity
from pgwarden.policy.model import Policy, When, matching_policies, policies_for

K8S_CLAIMS = {
    "sub": "system:serviceaccount:agents:claude",
    "kubernetes.io": {
        "namespace": "agents",
        "serviceaccount": {"name": "claude", "uid": "u1"},
        "pod": {"name": "claude-7f9", "uid": "p1"},
    },
}


def ident(subject="agent-1", groups=(), claims=None):
    return Identity(subject, frozenset(groups), claims or {})


def test_groups_any_of():
    w = When(groups=("ai-agents", "ci"))
    assert w.matches(ident(groups=["ci"]))
    assert not w.matches(ident(groups=["humans"]))


def test_subject_glob():
    w = When(subject="system:serviceaccount:agents:*")
    assert w.matches(ident(K8S_CLAIMS["sub"]))
    assert not w.matches(ident("system:serviceaccount:prod:claude"))


def test_kubernetes_claims_with_dotted_keys():
    i = ident(K8S_CLAIMS["sub"], claims=K8S_CLAIMS)
    assert When(claims={"kubernetes.io.namespace": "agents"}).matches(i)
    assert When(claims={"kubernetes.io.serviceaccount.name": ["claude", "codex"]}).matches(i)
    assert not When(claims={"kubernetes.io.namespace": "prod"}).matches(i)
    assert not When(claims={"kubernetes.io.missing": "x"}).matches(i)


def test_all_conditions_must_hold():
    w = When(groups=("ai-agents",), subject="agent-*")
    assert w.matches(ident("agent-2", ["ai-agents"]))
    assert not w.matches(ident("agent-2", ["other"]))
    assert not w.matches(ident("bot", ["ai-agents"]))


def test_every_matching_policy_applies():
    ps = (Policy("a", When(groups=("g",))), Policy("b", When(subject="agent-*")), Policy("c", When(subject="x")))
    assert [p.name for p in policies_for(ident("agent-1", ["g"]), ps)] == ["a", "b"]
    assert policies_for(ident("nobody"), ps) == ()


def test_identities_that_meet_the_same_policies_share_one_tuple():
    """A session's policies tuple keys the memos of verdicts and of the plugins' per-policies
    facts by identity: sessions alike must share it, not each fill an entry of its own."""
    from pgwarden.policy.shadow import split

    ps = (Policy("a", When(groups=("g",))), Policy("b", When(subject="agent-*")), Policy("c", When(subject="x"),
                                                                                        mode="shadow"))
    first = policies_for(ident("agent-1", ["g"]), ps)
    assert [p.name for p in first] == ["a", "b"]
    assert policies_for(ident("agent-2", ["g"]), ps) is first
    assert [p.name for p in policies_for(ident("agent-3"), ps)] == ["b"]
    assert policies_for(ident("x", ["g"]), ps) is not first  # meets the shadow policy too
    assert split(matching_policies(ident("x", ["g"]), ps))[0] is split(matching_policies(ident("x", ["g"]), ps))[0]
    reloaded = tuple(Policy(p.name, p.when, mode=p.mode) for p in ps)  # equal, but other objects
    again = policies_for(ident("agent-1", ["g"]), reloaded)
    assert again == first and again is not first and again[0] is reloaded[0]
