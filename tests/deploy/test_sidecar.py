"""The sidecar example as a reviewer reads it: who mounts what, how it runs, what the network allows.

The schemas (test_schemas.py) say the objects are well formed; these say they are
the design: the credential and the tokens reach the pgwarden container only, both
containers are locked down, probes hit the admin port, pgwarden's config agrees with
the pod around it.
"""

from __future__ import annotations

import pytest
import yaml
from deployfiles import SIDECAR_NAME, Example, env

from pgwarden.config import parse_config

IMAGE = "ghcr.io/pgwarden/pgwarden:0.1.0"


@pytest.fixture(scope="module")
def ex() -> Example:
    return Example.load()


def _sensitive_volumes(ex: Example) -> set[str]:
    """Volumes that hold a credential: any Secret, any service-account token."""
    out = set()
    for v in ex.pod["volumes"]:
        sources = (v.get("projected") or {}).get("sources") or ()
        if "secret" in v or any("serviceAccountToken" in s or "secret" in s for s in sources):
            out.add(v["name"])
    return out


# ------------------------------------------------------------------ the sidecar


def test_pgwarden_is_a_native_sidecar_of_the_contract(ex):
    section, sidecar = ex.container(SIDECAR_NAME)
    assert section == "initContainers" and sidecar["restartPolicy"] == "Always"
    assert ex.pod["initContainers"][0]["name"] == SIDECAR_NAME  # started before anything else
    assert sidecar["image"] == IMAGE
    assert sidecar["args"] == ["run", "-c", "/etc/pgwarden/pgwarden.yaml"]
    assert ex.namespace == "agents"


def test_the_agent_is_a_regular_container_pointed_at_pgwarden(ex):
    (agent,) = ex.others()
    assert ex.container(agent["name"])[0] == "containers"
    assert env(agent) == {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "appdb"}
    listen = ex.config()["listen"]
    assert (listen["host"], str(listen["port"])) == (env(agent)["PGHOST"], env(agent)["PGPORT"])


# ------------------------------------------------------------------ the trust boundary


def test_credentials_are_mounted_into_pgwarden_only(ex):
    sensitive = _sensitive_volumes(ex)
    assert {"pgwarden-upstream", "pgwarden-token", "pgwarden-kube-api"} <= sensitive
    mounted_by_pgwarden = {m["name"] for m in ex.pgwarden["volumeMounts"]}
    assert sensitive <= mounted_by_pgwarden
    for m in ex.pgwarden["volumeMounts"]:
        assert m.get("readOnly") is True, m
    for container in ex.others():
        mounts = {m["name"] for m in container.get("volumeMounts") or ()}
        assert not mounts & sensitive, f"{container['name']} mounts {mounts & sensitive}"
        assert not container.get("volumeDevices")


def test_the_agent_gets_no_credential_through_its_environment(ex):
    for container in ex.others():
        assert not container.get("envFrom"), container["name"]
        for e in container.get("env") or ():
            assert "valueFrom" not in e, e
            assert not e["name"].startswith(("PGPASS", "PGSERVICE", "PGSSLKEY")), e


def test_no_token_for_every_container_and_no_shared_process_namespace(ex):
    pod = ex.pod
    assert pod["automountServiceAccountToken"] is False
    assert ex.get("ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
    assert pod.get("shareProcessNamespace") is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(key) in (None, False), key


def test_the_agent_service_account_is_bound_to_no_role(ex):
    sa = ex.pod["serviceAccountName"]
    for (kind, name), body in ex.objects.items():
        assert kind not in ("Role", "ClusterRole"), f"{kind}/{name}: the example grants no API access"
        for subject in body.get("subjects") or ():
            assert subject.get("name") != sa, f"{kind}/{name} binds {sa}"


def test_the_secret_is_a_marked_placeholder(ex):
    volume = ex.volume("pgwarden-upstream")["secret"]
    secret = ex.get("Secret", volume["secretName"])
    assert secret["metadata"]["name"] == "pgwarden-upstream"
    assert set(secret["stringData"]) == {"password"} and "data" not in secret
    assert secret["stringData"]["password"].startswith("REPLACE-ME")  # never a real password here
    assert volume["defaultMode"] == 0o440


def test_the_tokens_are_the_contract(ex):
    (token,) = ex.volume("pgwarden-token")["projected"]["sources"]
    assert token["serviceAccountToken"] == {"audience": "pgwarden", "expirationSeconds": 3600, "path": "token"}
    mounts = {m["name"]: m["mountPath"] for m in ex.pgwarden["volumeMounts"]}
    assert mounts == {
        "pgwarden-policy": "/etc/pgwarden",
        "pgwarden-upstream": "/var/run/secrets/pgwarden",
        "pgwarden-token": "/var/run/secrets/pgwarden-token",
        "pgwarden-kube-api": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    api = ex.volume("pgwarden-kube-api")["projected"]["sources"]
    (api_token,) = [s["serviceAccountToken"] for s in api if "serviceAccountToken" in s]
    assert "audience" not in api_token  # the API server's own audience
    (ca,) = [s["configMap"] for s in api if "configMap" in s]
    assert ca == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


# ------------------------------------------------------------------ how the containers run


@pytest.mark.parametrize("name", ["pgwarden", "agent"])
def test_container_security_context(ex, name):
    container = ex.container(name)[1]
    sc = container["securityContext"]
    pod_sc = ex.pod["securityContext"]
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
    assert sc["runAsUser"] > 0 and sc["runAsGroup"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged") in (None, False)
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("seccompProfile", pod_sc.get("seccompProfile")) == {"type": "RuntimeDefault"}
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"} and pod_sc["runAsNonRoot"] is True


def test_the_containers_run_as_different_users(ex):
    users = {c["securityContext"]["runAsUser"] for _, c in ex.containers()}
    assert len(users) == len(ex.containers())


@pytest.mark.parametrize("name", ["pgwarden", "agent"])
def test_container_resources(ex, name):
    resources = ex.container(name)[1]["resources"]
    for part in ("requests", "limits"):
        assert set(resources[part]) == {"cpu", "memory"}, part


def test_probes_use_the_admin_port_of_the_config(ex):
    sidecar = ex.pgwarden
    (port,) = sidecar["ports"]
    assert port == {"name": "admin", "containerPort": 9187, "protocol": "TCP"}
    admin = ex.config()["admin"]
    assert admin == {"host": "0.0.0.0", "port": port["containerPort"]}  # kubelet reaches it over the pod IP
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        assert sidecar[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
    start = sidecar["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 30  # time for OIDC discovery


def test_shutdown_fits_in_the_grace_period(ex):
    config = ex.config()
    assert config["shutdown"] == {"grace_s": 20}
    assert ex.pod["terminationGracePeriodSeconds"] == 30 > config["shutdown"]["grace_s"]


# ------------------------------------------------------------------ pgwarden's config and the pod


def test_every_file_the_config_names_is_mounted_into_pgwarden(ex):
    config = ex.config()
    files = {
        "-c": ex.config_path,
        "upstream.password_file": config["upstream"]["password_file"],
        "upstream.tls.ca_file": config["upstream"]["tls"]["ca_file"],
        "auth.pod_token_file": config["auth"]["pod_token_file"],
        "auth.jwt.ca_file": config["auth"]["jwt"]["ca_file"],
    }
    assert files["upstream.password_file"] == "/var/run/secrets/pgwarden/password"
    assert files["auth.pod_token_file"] == "/var/run/secrets/pgwarden-token/token"
    assert files["auth.jwt.ca_file"] == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    for key, path in files.items():
        found = ex.mount_of(ex.pgwarden, path)
        assert found, f"{key}: {path} is on no volume of the pgwarden container"
        mount, inside = found
        volume = ex.volume(mount["name"])
        if "configMap" in volume:
            assert inside in ex.get("ConfigMap", volume["configMap"]["name"])["data"], key
        elif "secret" in volume:
            assert inside in ex.get("Secret", volume["secret"]["secretName"])["stringData"], key
        else:
            paths = set()
            for source in volume["projected"]["sources"]:
                for kind in ("serviceAccountToken",):
                    if kind in source:
                        paths.add(source[kind]["path"])
                for kind in ("configMap", "downwardAPI", "secret"):
                    paths.update(item["path"] for item in (source.get(kind) or {}).get("items", ()))
            assert inside in paths, key


def test_pod_identity_config_matches_the_projected_token(ex):
    auth = ex.config()["auth"]
    assert auth["mode"] == "pod"
    (token,) = ex.volume("pgwarden-token")["projected"]["sources"]
    assert auth["jwt"] == {
        "issuer": "https://kubernetes.default.svc.cluster.local",
        "audience": token["serviceAccountToken"]["audience"],
        "discovery": True,
        "ca_file": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "bearer_token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "identity_claim": "sub",
    }
    # the API token and CA come from the volume mounted into pgwarden only
    mounts = {m["mountPath"]: m["name"] for m in ex.pgwarden["volumeMounts"]}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"] == "pgwarden-kube-api"
    # The coding agent's policy matches its service account's subject.
    subject = f"system:serviceaccount:{ex.namespace}:{ex.pod['serviceAccountName']}"
    assert any(p["when"].get("subject") == subject for p in ex.config()["policies"])


def test_records_go_to_stdout(ex):
    assert ex.config()["recording"]["sinks"] == ["stdout"]


def test_the_example_policy_is_valid_for_pgwarden(ex, tmp_path):
    doc = ex.config()
    config = parse_config(yaml.safe_dump(doc), "configmap pgwarden-policy")
    from pgwarden.plugins import PluginHost

    PluginHost(config, reactor=None)  # every rule kind interpreted by a loaded plugin, as `pgwarden check` does
    assert config.upstream.tls.mode == "verify-full"


# ------------------------------------------------------------------ the network


def test_network_policy_selects_the_pod_and_isolates_both_ways(ex):
    netpol = ex.one("NetworkPolicy")["spec"]
    labels = ex.deployment["spec"]["template"]["metadata"]["labels"]
    selector = netpol["podSelector"]["matchLabels"]
    assert selector and selector.items() <= labels.items()  # else it would apply to nothing
    assert ex.deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sorted(netpol["policyTypes"]) == ["Egress", "Ingress"]


def test_network_policy_egress_is_the_database_dns_and_api_server_only(ex):
    egress = ex.one("NetworkPolicy")["spec"]["egress"]
    for rule in egress:
        assert rule.get("to") and rule.get("ports"), f"an egress rule without to/ports allows everything: {rule}"
    by_ports = {tuple(sorted((p["protocol"], p["port"]) for p in rule["ports"])): rule["to"] for rule in egress}
    assert set(by_ports) == {
        (("TCP", 5432),),
        (("TCP", 53), ("UDP", 53)),
        (("TCP", 443), ("TCP", 6443)),
    }
    (dns,) = by_ports[(("TCP", 53), ("UDP", 53))]
    assert dns["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    (db,) = by_ports[(("TCP", 5432),)]
    assert db["podSelector"]["matchLabels"] and db["namespaceSelector"]["matchLabels"]
    (api,) = by_ports[(("TCP", 443), ("TCP", 6443))]
    assert api["ipBlock"]["cidr"].endswith("/32")


def test_network_policy_ingress_is_the_admin_port_only(ex):
    (rule,) = ex.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": ex.config()["admin"]["port"]}]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
