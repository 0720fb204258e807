"""What the webhook tests share: applying a response to a pod, and judging the pod as Kubernetes would."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import jsonpatch
import kubernetes_validate
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from pgwarden.k8s.config import TLS, InjectorConfig

FIXTURES = Path(__file__).parent / "fixtures"

# Native sidecars (an init container with restartPolicy: Always) are on by default from 1.29.
K8S_VERSIONS = sorted({v for v in all_versions() if Version(v) >= Version("1.29")}, key=Version)

CONFIG = InjectorConfig(tls=TLS("unused.crt", "unused.key"))

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def patch_of(response: dict) -> list[dict] | None:
    """The JSON patch of an AdmissionReview response, decoded, or None."""
    inner = response["response"]
    if "patch" not in inner:
        assert "patchType" not in inner
        return None
    assert inner["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(inner["patch"], validate=True))
    assert isinstance(ops, list)
    return ops


def apply(pod: dict, response: dict) -> dict:
    """The pod as the API server stores it after this response (a copy; the input is untouched)."""
    ops = patch_of(response)
    if ops is None:
        return copy.deepcopy(pod)
    return jsonpatch.JsonPatch(ops).apply(pod, in_place=False)


def with_pod(body: dict, pod: dict) -> dict:
    """The same AdmissionReview about another pod (a fresh uid, as the API server would send)."""
    out = copy.deepcopy(body)
    out["request"]["object"] = pod
    out["request"]["uid"] = body["request"]["uid"][:-2] + "ff"
    return out


def validate(pod: dict, version: str) -> None:
    """Raises kubernetes_validate's ValidationError if the pod breaks the schema of ``version`` (strict:
    unknown fields are errors too)."""
    kubernetes_validate.validate(pod, version, strict=True)


def check_pod_rules(pod: dict) -> None:
    """What the API server checks beyond the schema, for what injection touches."""
    spec = pod["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    names = [c["name"] for c in containers]
    assert len(names) == len(set(names)), f"container names repeat: {names}"
    assert all(_DNS_LABEL.match(n) and len(n) <= 63 for n in names), names
    volumes = [v["name"] for v in spec.get("volumes", [])]
    assert len(volumes) == len(set(volumes)), f"volume names repeat: {volumes}"
    for c in containers:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']} mounts unknown volume {m['name']}"
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), f"{c['name']} mounts twice at one path: {paths}"
        ports = [p["name"] for p in c.get("ports", []) if "name" in p]
        assert len(ports) == len(set(ports)) and all(_PORT_NAME.match(p) and len(p) <= 15 for p in ports)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c and "httpGet" in c[probe] and isinstance(c[probe]["httpGet"]["port"], str):
                assert c[probe]["httpGet"]["port"] in ports, f"{c['name']}.{probe} names an unknown port"
    for c in spec.get("initContainers", []):
        if "restartPolicy" not in c:  # only sidecars may have probes
            assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(c), c["name"]
