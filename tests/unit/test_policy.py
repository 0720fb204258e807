"""Identity -> policies: groups, subject globs, claims (Kubernetes service-account tokens too)."""

from pgwarden.identity import Identity
from pgwarden.policy.model import Policy, When, policies_for

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
