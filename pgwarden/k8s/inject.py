"""The admission decision, as a pure function: AdmissionReview request in, AdmissionReview response out.

No Twisted and no I/O (`pgwarden.k8s.server` is the HTTP edge). A pod annotated
``pgwarden.dev/inject: "true"`` gets, as one RFC 6902 JSON patch:

* the pgwarden native sidecar, first of its initContainers (so init containers
  after it can reach the database through it too);
* three volumes: the policy ConfigMap (``pgwarden.dev/policy``), the upstream
  Secret (``pgwarden.dev/upstream``, mounted only into pgwarden) and a projected
  service-account token for audience ``pgwarden`` (also only into pgwarden);
* PGHOST, PGPORT and PGDATABASE in every regular container, except those a
  container already sets itself (its own ``env`` entry of that name wins);
* the annotation ``pgwarden.dev/status: injected``.

A pod that already has the sidecar or that annotation is allowed unchanged, so
the webhook is idempotent. A pod that asks for injection but cannot get it
(annotations missing, names or ports taken, host network, Windows) is refused with a
message that says what to change: letting it start without its guard would
hide the problem.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Literal

import attrs

from pgwarden.k8s.config import InjectorConfig

API_VERSION = "admission.k8s.io/v1"

INJECT = "pgwarden.dev/inject"
POLICY = "pgwarden.dev/policy"
UPSTREAM = "pgwarden.dev/upstream"
DATABASE = "pgwarden.dev/database"
STATUS = "pgwarden.dev/status"
INJECTED = "injected"

SIDECAR = "pgwarden"
POLICY_VOLUME = "pgwarden-policy"
UPSTREAM_VOLUME = "pgwarden-upstream"
TOKEN_VOLUME = "pgwarden-token"
POLICY_DIR = "/etc/pgwarden"
POLICY_KEY = "pgwarden.yaml"
UPSTREAM_DIR = "/var/run/secrets/pgwarden"
TOKEN_DIR = "/var/run/secrets/pgwarden-token"
TOKEN_AUDIENCE = "pgwarden"
TOKEN_SECONDS = 3600
PROXY_HOST = "127.0.0.1"
PROXY_PORT = 5432
ADMIN_PORT = 9187
RUN_AS = 10001

# A ConfigMap or Secret name: an RFC 1123 subdomain.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request that can be answered (HTTP 400)."""


@attrs.frozen
class Outcome:
    """What the webhook decided for one request, and why (for the response and the log)."""

    action: Literal["skip", "inject", "refuse"]
    reason: str
    patch: tuple[dict, ...] = ()
    warnings: tuple[str, ...] = ()

    def response(self, uid: str) -> dict:
        out: dict[str, Any] = {"uid": uid, "allowed": self.action != "refuse"}
        if self.action == "refuse":
            out["status"] = {"code": 400, "reason": "BadRequest", "message": self.reason}
        if self.patch:
            out["patchType"] = "JSONPatch"
            out["patch"] = base64.b64encode(json.dumps(list(self.patch)).encode()).decode("ascii")
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def review(body: Any, config: InjectorConfig) -> dict:
    """The AdmissionReview response to an AdmissionReview request (a decoded JSON body).

    Raises BadReview when ``body`` is not an ``admission.k8s.io/v1`` AdmissionReview request.
    """
    return respond(body, config)[0]


def respond(body: Any, config: InjectorConfig) -> tuple[dict, Outcome]:
    """`review`, with the outcome too (the edge logs it)."""
    request = _request(body)
    outcome = decide(request, config)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": outcome.response(request["uid"])}, outcome


def _request(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadReview("expected a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != "AdmissionReview":
        raise BadReview(f"expected an AdmissionReview of apiVersion {API_VERSION}, got "
                        f"apiVersion={body.get('apiVersion')!r} kind={body.get('kind')!r}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise BadReview("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: expected a non-empty string")
    return request


def decide(request: dict, config: InjectorConfig) -> Outcome:
    """The outcome for one AdmissionReview request (already checked to have a uid)."""
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise BadReview("request.kind: expected an object like {group, version, kind}")
    if not isinstance(request.get("operation"), str):
        raise BadReview("request.operation: expected CREATE, UPDATE, DELETE or CONNECT")
    if (kind.get("group", ""), kind["kind"]) != ("", "Pod") or request.get("subResource") or \
            request["operation"] != "CREATE":
        return Outcome("skip", "not the creation of a pod")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise BadReview("request.object: expected the pod being created")
    return inject(pod, config)


def inject(pod: dict, config: InjectorConfig) -> Outcome:
    """The outcome for a pod being created."""
    metadata = _mapping(pod, "metadata", "object")
    annotations = _mapping(metadata, "annotations", "object.metadata")
    wanted = annotations.get(INJECT)
    if wanted != "true":
        why: tuple[str, ...] = ()
        if wanted is not None and wanted != "false":
            why = (f'{INJECT} is {wanted!r}: only "true" injects the pgwarden sidecar',)
        return Outcome("skip", "not annotated for injection", warnings=why)

    spec = _mapping(pod, "spec", "object")
    init_containers = _objects(spec, "initContainers", "object.spec")
    containers = _objects(spec, "containers", "object.spec")
    volumes = _objects(spec, "volumes", "object.spec")
    if annotations.get(STATUS) == INJECTED or any(c.get("name") == SIDECAR for c in init_containers):
        return Outcome("skip", "already injected")

    problems = []
    policy = annotations.get(POLICY)
    upstream = annotations.get(UPSTREAM)
    database = annotations.get(DATABASE, config.agent.database)
    for key, value, what in ((POLICY, policy, f"the ConfigMap holding {POLICY_KEY}"),
                             (UPSTREAM, upstream, "the Secret holding the database password")):
        if value is None:
            problems.append(f"annotation {key} is missing (the name of {what})")
        elif not isinstance(value, str) or not _DNS_SUBDOMAIN.match(value) or len(value) > 253:
            problems.append(f"annotation {key} must name {what}, a lower-case DNS subdomain; got {value!r}")
    if not isinstance(database, str) or not database:
        problems.append(f"annotation {DATABASE} must be a database name, got {database!r}")
    if any(c.get("name") == SIDECAR for c in containers):
        problems.append(f"a container is already named {SIDECAR!r}")
    taken = sorted({v["name"] for v in volumes if v.get("name") in (POLICY_VOLUME, UPSTREAM_VOLUME, TOKEN_VOLUME)})
    if taken:
        problems.append(f"volume name(s) {', '.join(taken)} already in use (pgwarden- names are reserved)")
    for c in init_containers + containers:
        for port in _objects(c, "ports", f"container {c.get('name')!r}"):
            if port.get("containerPort") in (PROXY_PORT, ADMIN_PORT):
                problems.append(f"container {c.get('name')!r} declares port {port.get('containerPort')}, "
                                f"which the pgwarden sidecar listens on")
    if spec.get("hostNetwork") is True:
        problems.append("the pod uses the host network, where the sidecar's ports would be the node's")
    if _mapping(spec, "os", "object.spec").get("name") == "windows":
        problems.append("the pod runs on Windows; the pgwarden sidecar is a Linux container")
    if problems or not isinstance(policy, str) or not isinstance(upstream, str):
        return Outcome("refuse", "pgwarden: cannot inject the sidecar: " + "; ".join(problems))

    patch: list[dict] = []
    warnings: list[str] = []
    if init_containers:
        patch.append(_add("spec", "initContainers", 0, value=sidecar(config)))
    else:
        patch.append(_add("spec", "initContainers", value=[sidecar(config)]))
    new_volumes = pod_volumes(policy, upstream)
    if volumes:
        patch += [_add("spec", "volumes", "-", value=v) for v in new_volumes]
    else:
        patch.append(_add("spec", "volumes", value=new_volumes))
    for i, c in enumerate(containers):
        env = _objects(c, "env", f"object.spec.containers[{i}]")
        own = {e["name"]: e for e in env if isinstance(e.get("name"), str)}
        add = []
        for var in agent_env(database):
            mine = own.get(var["name"])
            if mine is None:
                add.append(var)
            elif mine.get("value") != var["value"]:
                set_to = f"to {mine.get('value')!r}" if "value" in mine else "from another source"
                warnings.append(f"container {c.get('name')!r} sets {var['name']} {set_to} itself: "
                                f"kept (pgwarden sets {var['value']})")
        if not env:
            if add:
                patch.append(_add("spec", "containers", i, "env", value=add))
        else:
            patch += [_add("spec", "containers", i, "env", "-", value=var) for var in add]
    patch.append(_add("metadata", "annotations", STATUS, value=INJECTED))
    return Outcome("inject", "sidecar injected", tuple(patch), tuple(warnings))


def sidecar(config: InjectorConfig) -> dict:
    """The pgwarden container: a native sidecar (an init container that keeps running)."""
    s = config.sidecar
    return {
        "name": SIDECAR,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "restartPolicy": "Always",
        "args": ["run", "-c", f"{POLICY_DIR}/{POLICY_KEY}"],
        "ports": [{"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        # The sidecar must be ready before the next containers start: the startup probe holds them.
        "startupProbe": _probe("/readyz", periodSeconds=1, failureThreshold=120),
        "readinessProbe": _probe("/readyz", periodSeconds=5, failureThreshold=3),
        "livenessProbe": _probe("/healthz", periodSeconds=10, failureThreshold=3),
        "resources": s.resources.as_kubernetes(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True},
            {"name": UPSTREAM_VOLUME, "mountPath": UPSTREAM_DIR, "readOnly": True},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_volumes(policy: str, upstream: str) -> list[dict]:
    """The volumes the sidecar mounts. Whole ConfigMap and Secret: files next to
    pgwarden.yaml (a CA, a JWKS) and beside the password (a client key) are there too."""
    return [
        {"name": POLICY_VOLUME, "configMap": {"name": policy}},
        {"name": UPSTREAM_VOLUME, "secret": {"secretName": upstream}},
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_SECONDS, "path": "token"}}]}},
    ]


def agent_env(database: str) -> list[dict]:
    """What libpq (psql, psycopg, asyncpg...) in an agent container needs to reach the sidecar."""
    return [
        {"name": "PGHOST", "value": PROXY_HOST},
        {"name": "PGPORT", "value": str(PROXY_PORT)},
        {"name": "PGDATABASE", "value": database},
    ]


def _probe(path: str, **timing) -> dict:
    return {"httpGet": {"path": path, "port": "admin", "scheme": "HTTP"}, "timeoutSeconds": 2, **timing}


def pointer(*tokens: str | int) -> str:
    """An RFC 6901 JSON pointer: ``~`` and ``/`` inside a token are escaped (``pgwarden.dev~1status``)."""
    return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def _add(*tokens: str | int, value: Any) -> dict:
    return {"op": "add", "path": pointer(*tokens), "value": value}


def _mapping(parent: dict, key: str, where: str) -> dict:
    """``parent[key]``, a JSON object; absent or null is an empty one."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadReview(f"{where}.{key}: expected an object")
    return value


def _objects(parent: dict, key: str, where: str) -> list[dict]:
    """``parent[key]``, a list of JSON objects; absent or null is an empty one."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadReview(f"{where}.{key}: expected a list of objects")
    return value
