"""The admission decision (pgwarden.k8s.inject) on AdmissionReview fixtures: each response is applied
to its pod with a JSON-patch library and the result validated against the Kubernetes schemas."""

from __future__ import annotations

import base64
import json

import attrs
import pytest
from webhook_helpers import CONFIG, K8S_VERSIONS, apply, check_pod_rules, fixture, patch_of, validate, with_pod

from pgwarden.k8s.config import Agent, Resources, Sidecar
from pgwarden.k8s.inject import BadReview, pointer, review

INJECTED = ["annotated", "existing-init-volumes-env", "no-volumes"]
UNCHANGED = ["not-annotated", "already-injected", "update"]
REFUSED = ["missing-policy", "name-clash"]


def mounts(container: dict) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_versions_validated():
    """Every release the installed kubernetes-validate ships with native sidecars on (1.29+)."""
    assert K8S_VERSIONS[0] == "1.29.0" and len(K8S_VERSIONS) >= 2


@pytest.mark.parametrize("name", INJECTED + UNCHANGED + REFUSED)
def test_response_echoes_the_uid(name):
    body = fixture(name)
    response = review(body, CONFIG)
    assert response["apiVersion"] == "admission.k8s.io/v1" and response["kind"] == "AdmissionReview"
    assert response["response"]["uid"] == body["request"]["uid"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", INJECTED)
def test_injected_pod_validates(name, version):
    body = fixture(name)
    pod = body["request"]["object"]
    validate(pod, version)  # the fixture itself is a valid pod
    response = review(body, CONFIG)
    assert response["response"]["allowed"] is True
    patched = apply(pod, response)
    validate(patched, version)
    check_pod_rules(patched)


@pytest.mark.parametrize("name", INJECTED)
def test_injected_pod_has_the_sidecar_and_its_volumes(name):
    body = fixture(name)
    pod = body["request"]["object"]
    patched = apply(pod, review(body, CONFIG))
    spec = patched["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "pgwarden" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "ghcr.io/pgwarden/pgwarden:0.1.0"
    assert sidecar["args"] == ["run", "-c", "/etc/pgwarden/pgwarden.yaml"]
    assert sidecar["ports"] == [{"name": "admin", "containerPort": 9187, "protocol": "TCP"}]
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "admin", "scheme": "HTTP"}
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # Init containers the pod had keep their order, after the sidecar.
    before = [c["name"] for c in pod["spec"].get("initContainers", [])]
    assert [c["name"] for c in spec["initContainers"]] == ["pgwarden"] + before

    volumes = {v["name"]: v for v in spec["volumes"]}
    annotations = pod["metadata"]["annotations"]
    assert volumes["pgwarden-policy"] == {"name": "pgwarden-policy",
                                          "configMap": {"name": annotations["pgwarden.dev/policy"]}}
    assert volumes["pgwarden-upstream"] == {"name": "pgwarden-upstream",
                                            "secret": {"secretName": annotations["pgwarden.dev/upstream"]}}
    assert volumes["pgwarden-token"]["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "pgwarden", "expirationSeconds": 3600, "path": "token"}}]
    for v in pod["spec"].get("volumes", []):
        assert volumes[v["name"]] == v  # the pod's own volumes are untouched

    assert mounts(sidecar) == {"pgwarden-policy": "/etc/pgwarden", "pgwarden-upstream": "/var/run/secrets/pgwarden",
                               "pgwarden-token": "/var/run/secrets/pgwarden-token"}
    assert all(m["readOnly"] for m in sidecar["volumeMounts"])
    # The database credential and the token are the sidecar's alone.
    for c in spec["initContainers"][1:] + spec["containers"]:
        assert not {"pgwarden-upstream", "pgwarden-token", "pgwarden-policy"} & set(mounts(c)), c["name"]
    assert patched["metadata"]["annotations"]["pgwarden.dev/status"] == "injected"
    assert {k: v for k, v in patched["metadata"]["annotations"].items() if k != "pgwarden.dev/status"} == annotations


@pytest.mark.parametrize("name", INJECTED)
def test_agent_containers_get_the_env_without_losing_their_own(name):
    body = fixture(name)
    pod = body["request"]["object"]
    patched = apply(pod, review(body, CONFIG))
    database = pod["metadata"]["annotations"].get("pgwarden.dev/database", "appdb")
    for before, after in zip(pod["spec"]["containers"], patched["spec"]["containers"], strict=True):
        mine = env(before)
        assert env(after) == {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": database, **mine}
        assert after["env"][: len(before.get("env", []))] == before.get("env", [])  # order kept, appended after
        names = [e["name"] for e in after["env"]]
        assert len(names) == len(set(names))
        assert {k: v for k, v in after.items() if k != "env"} == {k: v for k, v in before.items() if k != "env"}
    for c in patched["spec"]["initContainers"]:
        assert not {"PGHOST", "PGPORT", "PGDATABASE"} & set(env(c))


def test_a_variable_the_container_sets_itself_is_kept_with_a_warning():
    body = fixture("existing-init-volumes-env")
    response = review(body, CONFIG)
    patched = apply(body["request"]["object"], response)
    assert env(patched["spec"]["containers"][0])["PGDATABASE"] == "reporting"
    assert env(patched["spec"]["containers"][1])["PGDATABASE"] == "analytics"  # the annotation
    (warning,) = response["response"]["warnings"]
    assert "'agent' sets PGDATABASE to 'reporting' itself: kept" in warning


@pytest.mark.parametrize("name", INJECTED)
def test_injection_is_idempotent(name):
    body = fixture(name)
    patched = apply(body["request"]["object"], review(body, CONFIG))
    again = review(with_pod(body, patched), CONFIG)
    assert again["response"]["allowed"] is True
    assert patch_of(again) is None


@pytest.mark.parametrize("name", UNCHANGED)
def test_allowed_unchanged(name):
    response = review(fixture(name), CONFIG)
    assert response["response"]["allowed"] is True
    assert patch_of(response) is None
    assert "status" not in response["response"]


def test_the_sidecar_alone_makes_a_pod_injected():
    """Without the status annotation (removed by hand, say), the sidecar is enough to leave the pod alone."""
    body = fixture("already-injected")
    del body["request"]["object"]["metadata"]["annotations"]["pgwarden.dev/status"]
    assert patch_of(review(body, CONFIG)) is None


def test_missing_policy_is_refused_with_a_message():
    response = review(fixture("missing-policy"), CONFIG)["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400
    assert response["status"]["message"] == (
        "pgwarden: cannot inject the sidecar: annotation pgwarden.dev/policy is missing "
        "(the name of the ConfigMap holding pgwarden.yaml)")


def test_clashing_names_are_refused_each_named():
    response = review(fixture("name-clash"), CONFIG)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    message = response["status"]["message"]
    assert "a container is already named 'pgwarden'" in message
    assert "volume name(s) pgwarden-token already in use" in message


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["metadata"]["annotations"].pop("pgwarden.dev/upstream"),
     "annotation pgwarden.dev/upstream is missing (the name of the Secret holding the database password)"),
    (lambda p: p["metadata"]["annotations"].update({"pgwarden.dev/policy": "Agent_Policy"}),
     "annotation pgwarden.dev/policy must name the ConfigMap holding pgwarden.yaml, a lower-case DNS subdomain; "
     "got 'Agent_Policy'"),
    (lambda p: p["metadata"]["annotations"].update({"pgwarden.dev/database": ""}),
     "annotation pgwarden.dev/database must be a database name, got ''"),
    (lambda p: p["spec"].update({"hostNetwork": True}),
     "the pod uses the host network, where the sidecar's ports would be the node's"),
    (lambda p: p["spec"].update({"os": {"name": "windows"}}),
     "the pod runs on Windows; the pgwarden sidecar is a Linux container"),
    (lambda p: p["spec"]["containers"][0].update({"ports": [{"containerPort": 5432}]}),
     "container 'agent' declares port 5432, which the pgwarden sidecar listens on"),
])
def test_other_refusals(change, expected):
    body = fixture("annotated")
    change(body["request"]["object"])
    response = review(body, CONFIG)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert response["status"]["message"] == "pgwarden: cannot inject the sidecar: " + expected


def test_absent_arrays_are_added_whole_and_annotation_keys_escaped():
    ops = patch_of(review(fixture("annotated"), CONFIG))
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/spec/initContainers"),
        ("add", "/spec/volumes"),
        ("add", "/spec/containers/0/env"),
        ("add", "/metadata/annotations/pgwarden.dev~1status"),
    ]
    assert [type(op["value"]) for op in ops] == [list, list, list, str]


def test_present_arrays_are_extended():
    ops = patch_of(review(fixture("existing-init-volumes-env"), CONFIG))
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/spec/initContainers/0"),
        ("add", "/spec/volumes/-"), ("add", "/spec/volumes/-"), ("add", "/spec/volumes/-"),
        ("add", "/spec/containers/0/env/-"), ("add", "/spec/containers/0/env/-"),  # PGDATABASE is its own
        ("add", "/spec/containers/1/env"),
        ("add", "/metadata/annotations/pgwarden.dev~1status"),
    ]


def test_json_pointer_escaping():
    assert pointer("metadata", "annotations", "pgwarden.dev/status") == "/metadata/annotations/pgwarden.dev~1status"
    assert pointer("a~b/c", 0, "-") == "/a~0b~1c/0/-"
    assert pointer("~1") == "/~01"  # '~' first, so an escape is never produced twice


def test_patch_is_base64_of_json():
    response = review(fixture("annotated"), CONFIG)["response"]
    assert json.loads(base64.b64decode(response["patch"])) == patch_of({"response": response})


def test_the_injector_config_shapes_the_sidecar_and_env():
    config = attrs.evolve(CONFIG, sidecar=Sidecar(
        image="registry.example/pgwarden@sha256:" + "a" * 64, image_pull_policy="Always",
        resources=Resources(requests={"cpu": "250m", "memory": "200Mi"}, limits={"memory": "1Gi"})),
        agent=Agent(database="warehouse"))
    body = fixture("annotated")
    patched = apply(body["request"]["object"], review(body, config))
    sidecar = patched["spec"]["initContainers"][0]
    assert sidecar["image"] == "registry.example/pgwarden@sha256:" + "a" * 64
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["resources"] == {"requests": {"cpu": "250m", "memory": "200Mi"}, "limits": {"memory": "1Gi"}}
    assert env(patched["spec"]["containers"][0])["PGDATABASE"] == "warehouse"
    validate(patched, K8S_VERSIONS[-1])


@pytest.mark.parametrize("value", ["yes", "True", "1"])
def test_an_inject_value_other_than_true_warns(value):
    body = fixture("annotated")
    body["request"]["object"]["metadata"]["annotations"]["pgwarden.dev/inject"] = value
    response = review(body, CONFIG)["response"]
    assert response["allowed"] is True and "patch" not in response
    assert response["warnings"] == [f"pgwarden.dev/inject is {value!r}: only \"true\" injects the pgwarden sidecar"]


def test_other_kinds_and_subresources_pass():
    body = fixture("annotated")
    body["request"]["subResource"] = "ephemeralcontainers"
    assert patch_of(review(body, CONFIG)) is None
    body = fixture("annotated")
    body["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert patch_of(review(body, CONFIG)) is None


def _malformed():
    good = fixture("annotated")

    def edit(f):
        body = json.loads(json.dumps(good))
        f(body)
        return body

    return [
        ([], "expected a JSON object"),
        ("review", "expected a JSON object"),
        (edit(lambda b: b.update(apiVersion="admission.k8s.io/v1beta1")), "apiVersion admission.k8s.io/v1"),
        (edit(lambda b: b.update(kind="Pod")), "AdmissionReview"),
        (edit(lambda b: b.pop("request")), "no request object"),
        (edit(lambda b: b["request"].pop("uid")), "request.uid"),
        (edit(lambda b: b["request"].update(uid=7)), "request.uid"),
        (edit(lambda b: b["request"].update(kind="Pod")), "request.kind"),
        (edit(lambda b: b["request"].pop("operation")), "request.operation"),
        (edit(lambda b: b["request"].update(object=None)), "request.object"),
        (edit(lambda b: b["request"]["object"].update(metadata=[])), "object.metadata"),
        (edit(lambda b: b["request"]["object"]["metadata"].update(annotations="x")), "object.metadata.annotations"),
        (edit(lambda b: b["request"]["object"]["spec"].update(containers={})), "object.spec.containers"),
        (edit(lambda b: b["request"]["object"]["spec"]["containers"][0].update(env=[1])),
         "object.spec.containers[0].env"),
        (edit(lambda b: b["request"]["object"]["spec"].update(volumes=[[]])), "object.spec.volumes"),
    ]


@pytest.mark.parametrize("body, says", _malformed())
def test_malformed_reviews_are_bad_requests(body, says):
    with pytest.raises(BadReview, match=None) as excinfo:
        review(body, CONFIG)
    assert says in str(excinfo.value)
