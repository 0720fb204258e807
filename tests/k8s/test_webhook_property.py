"""Property tests of the admission decision: random pods, and random damage to a review.

For any pod annotated for injection the webhook either refuses it with a reason
(exactly when a name or a port of its own is taken) or answers a patch that
applies cleanly, gives a pod valid for the Kubernetes schemas, keeps what the
pod had, and is not applied twice. Nothing a body contains makes it raise
anything but BadReview (HTTP 400).
"""

from __future__ import annotations

import copy
import json

from hypothesis import event, given
from hypothesis import strategies as st
from webhook_helpers import CONFIG, K8S_VERSIONS, apply, check_pod_rules, fixture, patch_of, validate, with_pod

from pgwarden.k8s.inject import BadReview, review

RESERVED_VOLUMES = {"pgwarden-policy", "pgwarden-upstream", "pgwarden-token"}
AGENT_ENV = ("PGHOST", "PGPORT", "PGDATABASE")

dns_labels = st.from_regex(r"[a-z]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True) | st.sampled_from(
    ["agent", "pgwarden", "pgwarden-token", "pgwarden-policy", "pgwarden-upstream", "sidecar"])
env_names = st.sampled_from([*AGENT_ENV, "PGUSER", "HOME"]) | st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)
env_values = st.one_of(
    st.builds(lambda v: {"value": v}, st.sampled_from(["127.0.0.1", "5432", "appdb", "db.internal", ""])),
    st.just({"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
    st.just({}),
)


@st.composite
def env_lists(draw):
    names = draw(st.lists(env_names, max_size=5, unique=True))
    return [{"name": n, **draw(env_values)} for n in names]


@st.composite
def pods(draw):
    names = draw(st.lists(dns_labels, min_size=1, max_size=6, unique=True))
    n_init = draw(st.integers(0, len(names) - 1))
    volume_names = draw(st.lists(dns_labels, max_size=4, unique=True))

    def container(name):
        c = {"name": name, "image": "registry.example/agent:1"}
        mode = draw(st.sampled_from(["absent", "empty", "some"]))
        if mode != "absent":
            c["env"] = [] if mode == "empty" else draw(env_lists())
        mounted = draw(st.lists(st.sampled_from(volume_names), unique=True)) if volume_names else []
        if mounted:
            c["volumeMounts"] = [{"name": v, "mountPath": f"/mnt/{v}"} for v in mounted]
        if draw(st.booleans()):
            c["ports"] = [{"containerPort": draw(st.sampled_from([8080, 5432, 9187, 3000])), "protocol": "TCP"}]
        return c

    spec = {"containers": [container(n) for n in names[n_init:]]}
    init = [container(n) for n in names[:n_init]]
    if init or draw(st.booleans()):
        spec["initContainers"] = init  # an empty list now and then, as a client may send it
    if volume_names or draw(st.booleans()):
        spec["volumes"] = [{"name": v, "emptyDir": {}} for v in volume_names]
    annotations = {"pgwarden.dev/inject": "true", "pgwarden.dev/policy": "agent-policy",
                   "pgwarden.dev/upstream": "db-credentials"}
    if draw(st.booleans()):
        annotations["pgwarden.dev/database"] = draw(st.sampled_from(["appdb", "analytics", "reports_2024"]))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "agent-", "namespace": "agents", "annotations": annotations},
            "spec": spec}


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


@given(pod=pods(), version=st.sampled_from(K8S_VERSIONS))
def test_random_pods(pod, version):
    validate(pod, version)
    body = with_pod(fixture("annotated"), pod)
    original = copy.deepcopy(pod)
    response = review(body, CONFIG)
    assert pod == original  # the request is not mutated
    inner = response["response"]
    spec = pod["spec"]
    already = any(c["name"] == "pgwarden" for c in spec.get("initContainers", []))
    clash = (any(c["name"] == "pgwarden" for c in spec["containers"])
             or RESERVED_VOLUMES & {v["name"] for v in spec.get("volumes", [])}
             or any(p["containerPort"] in (5432, 9187)
                    for c in spec.get("initContainers", []) + spec["containers"] for p in c.get("ports", [])))
    event("already injected" if already else "refused" if clash else "injected")
    if already:
        assert inner["allowed"] is True and patch_of(response) is None
        return
    if clash:
        assert inner["allowed"] is False and inner["status"]["code"] == 400 and "patch" not in inner
        assert inner["status"]["message"].startswith("pgwarden: cannot inject the sidecar: ")
        return

    assert inner["allowed"] is True
    patched = apply(pod, response)
    validate(patched, version)
    check_pod_rules(patched)
    # What the pod had is still there, in its order; only env grew.
    assert patched["spec"]["initContainers"][1:] == spec.get("initContainers", [])
    assert patched["spec"]["volumes"][: len(spec.get("volumes", []))] == spec.get("volumes", [])
    database = pod["metadata"]["annotations"].get("pgwarden.dev/database", "appdb")
    for before, after in zip(spec["containers"], patched["spec"]["containers"], strict=True):
        own = _env(before)
        assert after.get("env", [])[: len(before.get("env", []))] == before.get("env", [])
        for name, value in zip(AGENT_ENV, ("127.0.0.1", "5432", database)):
            assert _env(after)[name] == own.get(name, {"name": name, "value": value})
    # Idempotent: the stored pod, reviewed again (a re-invocation), gets nothing more.
    again = review(with_pod(body, patched), CONFIG)
    assert again["response"]["allowed"] is True and patch_of(again) is None


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


GOOD = fixture("existing-init-volumes-env")
PATHS = list(_paths(GOOD))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(path=st.sampled_from(PATHS), value=json_values)
def test_damaged_reviews_never_crash(path, value):
    body = copy.deepcopy(GOOD)
    if not path:
        body = value
    else:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    try:
        response = review(body, CONFIG)
    except BadReview:
        event("400")
        return
    event("answered " + ("with a patch" if "patch" in response["response"] else "without a patch"))
    json.dumps(response)  # whatever is answered can be sent
    assert response["response"]["uid"] == body["request"]["uid"]
