"""The injector's example workload (deploy/k8s/injector/example), run through the injector as the API
server would: the pod it becomes validates, and its policy ConfigMap fits the injected sidecar.

The policy is in the `jwks_file` form docs/kubernetes.md recommends for injected pods (the
sidecar gets no Kubernetes API token nor cluster CA): every file pgwarden's config names must
be on a volume the injector mounts into the sidecar and present in the ConfigMap or Secret the
pod's annotations name.
"""

from __future__ import annotations

import copy

import attrs
import jsonpatch
import kubernetes_validate
import pytest
import yaml
from deployfiles import DEPLOY, Example, documents, env, objects
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from pgwarden.config import parse_config
from pgwarden.identity import KeyFileError, TokenVerifier
from pgwarden.k8s import inject as k8s
from pgwarden.k8s.config import parse_injector_config

INJECTOR = DEPLOY / "k8s" / "injector"
EXAMPLE = INJECTOR / "example"
VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version("1.29")}, key=Version)


def _injector_config():
    (configmap,) = [d.body for d in documents(INJECTOR / "configmap.yaml")]
    return parse_injector_config(configmap["data"]["injector.yaml"], "deploy/k8s/injector/configmap.yaml")


@pytest.fixture(scope="module")
def found() -> dict:
    return objects(EXAMPLE)


@pytest.fixture(scope="module")
def outcome(found):
    (deployment,) = [body for (kind, _), body in found.items() if kind == "Deployment"]
    return k8s.inject(_pod(deployment), _injector_config())


def _pod(deployment: dict) -> dict:
    """The pod the ReplicaSet controller asks the API server to create (what the webhook reviews)."""
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = {**template["metadata"], "namespace": deployment["metadata"]["namespace"],
                "generateName": deployment["metadata"]["name"] + "-"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


@pytest.fixture(scope="module")
def injected(found, outcome) -> dict:
    (deployment,) = [body for (kind, _), body in found.items() if kind == "Deployment"]
    return jsonpatch.JsonPatch(list(outcome.patch)).apply(_pod(deployment))


@pytest.fixture(scope="module")
def ex(found, injected) -> Example:
    """The example as the cluster runs it: the Deployment's pod template as injected."""
    out = dict(found)
    for (kind, name), body in found.items():
        if kind == "Deployment":
            body = copy.deepcopy(body)
            body["spec"]["template"]["metadata"] = {k: v for k, v in injected["metadata"].items()
                                                    if k not in ("namespace", "generateName")}
            body["spec"]["template"]["spec"] = injected["spec"]
            out[(kind, name)] = body
    return Example(out)


def test_the_pod_asks_for_the_sidecar_in_a_namespace_the_injector_serves(found, outcome, injected):
    assert outcome.action == "inject" and not outcome.warnings, outcome
    (webhook,) = [d.body for d in documents(INJECTOR / "mutatingwebhookconfiguration.yaml")]
    (namespace,) = [body for (kind, _), body in found.items() if kind == "Namespace"]
    (registration,) = webhook["webhooks"]
    selector = registration["namespaceSelector"]["matchLabels"]
    assert selector.items() <= namespace["metadata"]["labels"].items()
    assert injected["metadata"]["namespace"] == namespace["metadata"]["name"]
    annotations = injected["metadata"]["annotations"]
    assert found[("ConfigMap", annotations[k8s.POLICY])]["data"][k8s.POLICY_KEY]
    assert found[("Secret", annotations[k8s.UPSTREAM])]["stringData"]["password"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_injected_pod_validates(injected, version):
    kubernetes_validate.validate(injected, version, strict=True)


def test_the_agent_reaches_pgwarden_and_holds_no_credential(ex):
    (agent,) = ex.others()
    assert env(agent) == {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "appdb"}
    assert {m["name"] for m in agent.get("volumeMounts", ())} == {"agent-tmp"}
    assert ex.pod["automountServiceAccountToken"] is False
    assert ex.get("ServiceAccount", ex.pod["serviceAccountName"])["automountServiceAccountToken"] is False


def test_the_sidecar_can_read_its_secret_and_token(ex):
    """Mounted files belong to the pod's fsGroup; the sidecar runs as 10001, not root."""
    assert ex.pod["securityContext"]["fsGroup"] == ex.pgwarden["securityContext"]["runAsGroup"] == k8s.RUN_AS


def test_every_file_the_config_names_is_on_a_mount_of_the_sidecar(ex):
    config = ex.config()
    files = {
        "-c": ex.config_path,
        "upstream.password_file": config["upstream"]["password_file"],
        "upstream.tls.ca_file": config["upstream"]["tls"]["ca_file"],
        "auth.pod_token_file": parse_config(yaml.safe_dump(config)).auth.pod_token_file,  # the default
        "auth.jwt.jwks_file": config["auth"]["jwt"]["jwks_file"],
    }
    for key, path in files.items():
        located = ex.mount_of(ex.pgwarden, path)
        assert located, f"{key}: {path} is on no volume of the injected sidecar"
        mount, inside = located
        volume = ex.volume(mount["name"])
        if "configMap" in volume:
            assert inside in ex.get("ConfigMap", volume["configMap"]["name"])["data"], key
        elif "secret" in volume:
            assert inside in ex.get("Secret", volume["secret"]["secretName"])["stringData"], key
        else:
            tokens = [s["serviceAccountToken"] for s in volume["projected"]["sources"]]
            assert inside in [t["path"] for t in tokens], key


def test_the_policy_is_in_the_jwks_file_form_and_fits_the_pod(ex):
    config = ex.config()
    jwt = config["auth"]["jwt"]
    assert config["auth"]["mode"] == "pod"
    assert jwt["jwks_file"].startswith(k8s.POLICY_DIR + "/")
    assert not {"discovery", "jwks_url", "public_key_file", "ca_file", "bearer_token_file"} & set(jwt)
    (token,) = ex.volume(k8s.TOKEN_VOLUME)["projected"]["sources"]
    assert jwt["audience"] == token["serviceAccountToken"]["audience"]
    assert config["listen"] == {"host": k8s.PROXY_HOST, "port": k8s.PROXY_PORT}
    assert config["admin"] == {"host": "0.0.0.0", "port": ex.pgwarden["ports"][0]["containerPort"]}
    assert config["shutdown"]["grace_s"] < ex.pod["terminationGracePeriodSeconds"]
    subject = f"system:serviceaccount:{ex.namespace}:{ex.pod['serviceAccountName']}"
    assert [p["name"] for p in config["policies"] if p["when"].get("subject") == subject]


def test_the_example_policy_is_valid_for_pgwarden(ex):
    config = parse_config(yaml.safe_dump(ex.config()), "configmap research-agent-policy")
    from pgwarden.plugins import PluginHost

    PluginHost(config, reactor=None)  # every rule kind interpreted by a loaded plugin, as `pgwarden check` does


def test_until_the_placeholder_keys_are_replaced_pgwarden_does_not_start(ex, tmp_path):
    """The keys shipped are an empty set: a sidecar that cannot verify anyone stops at start (fail closed)."""
    config = parse_config(yaml.safe_dump(ex.config()))
    keys = tmp_path / "jwks.json"
    keys.write_text(ex.policy_configmap["data"]["jwks.json"])
    with pytest.raises(KeyFileError, match="did not contain any keys"):
        TokenVerifier(attrs.evolve(config.auth.jwt, jwks_file=str(keys)))
