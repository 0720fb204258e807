"""deploy/k8s/injector/ holds together: the built-in kinds validate (strict, Kubernetes 1.29+), and the
names, ports, paths and certificates that one manifest takes from another agree."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from webhook_helpers import K8S_VERSIONS

from pgwarden.k8s.config import parse_injector_config

INJECTOR = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "injector"
NAMESPACE = "pgwarden-system"


def _load():
    kustomization = yaml.safe_load((INJECTOR / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((INJECTOR / name).read_text()) if d]
    return kustomization, docs


KUSTOMIZATION, DOCS = _load()


def one(kind: str, name: str | None = None) -> dict:
    (doc,) = [d for d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def test_kustomization_lists_every_file():
    assert KUSTOMIZATION["namespace"] == NAMESPACE
    files = {p.name for p in INJECTOR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(KUSTOMIZATION["resources"]) == sorted(files)
    for d in DOCS:
        if d["kind"] not in ("Namespace", "MutatingWebhookConfiguration"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]


BUILT_IN = [d for d in DOCS if not d["apiVersion"].startswith("cert-manager.io/")]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", BUILT_IN, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_built_in_kinds_validate(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_no_rbac():
    """The webhook reads nothing from the API: no Role, no binding, no token in its pods."""
    assert not [d for d in DOCS if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert one("ServiceAccount")["automountServiceAccountToken"] is False
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False


def test_deployment_is_hardened_and_probed():
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_pieces_agree():
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}

    # The config the container is told to read is the ConfigMap's, and it is a valid injector config.
    configmap = one("ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert c["args"] == ["webhook", "--config", f"{mounts['config']}/injector.yaml"]
    config = parse_injector_config(configmap["data"]["injector.yaml"], "configmap.yaml")

    # Its certificate files are the renewed Secret's.
    certificate = one("Certificate", "pgwarden-webhook")
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert config.tls.cert_file == f"{mounts['tls']}/tls.crt"
    assert config.tls.key_file == f"{mounts['tls']}/tls.key"

    # Port 443 of the Service reaches the port the webhook listens on.
    service = one("Service")
    (port,) = service["spec"]["ports"]
    (container_port,) = c["ports"]
    assert port["port"] == 443 and port["targetPort"] == container_port["containerPort"] == config.listen.port
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()

    # The API server calls that Service, and trusts the CA behind its certificate.
    configuration = one("MutatingWebhookConfiguration")
    (hook,) = configuration["webhooks"]
    assert hook["clientConfig"]["service"] == {"name": service["metadata"]["name"], "namespace": NAMESPACE,
                                               "path": "/mutate", "port": 443}
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        f"{NAMESPACE}/{certificate['metadata']['name']}"
    ca_issuer = one("Issuer", certificate["spec"]["issuerRef"]["name"])
    ca_certificate = one("Certificate", "pgwarden-ca")
    assert ca_certificate["spec"]["isCA"] is True
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_certificate["spec"]["secretName"]
    assert one("Issuer", ca_certificate["spec"]["issuerRef"]["name"])["spec"] == {"selfSigned": {}}

    # The sidecar it injects is of the webhook's own release.
    assert config.sidecar.image == c["image"]


def test_webhook_registration():
    (hook,) = one("MutatingWebhookConfiguration")["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"  # see the comment in the manifest and docs/kubernetes.md
    assert hook["reinvocationPolicy"] == "Never"
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["namespaceSelector"] == {"matchLabels": {"pgwarden.dev/injection": "enabled"}}
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    (condition,) = hook["matchConditions"]
    assert "'pgwarden.dev/inject' in object.metadata.annotations" in condition["expression"]
    # The webhook's own namespace is not opted in: its pods never wait for it.
    assert "pgwarden.dev/injection" not in one("Namespace")["metadata"].get("labels", {})
