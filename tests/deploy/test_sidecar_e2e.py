"""The sidecar example, run: pgwarden started the way the Deployment starts it, in front of a real PostgreSQL.

The pgwarden container's command, args and volume mounts come from
deploy/k8s/sidecar/deployment.yaml (the command from the Dockerfile's ENTRYPOINT,
as the Deployment sets none); the files come from the ConfigMap and the Secret it
mounts, laid out under a temporary directory that stands for the container's root.
Only what cannot be the same in a test is rewritten, each rewrite said where it is
made. An agent then connects the way the agent container would (its PGHOST and
PGDATABASE), with a token for the Deployment's service account.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import attrs
import psycopg
import pytest
import yaml
from deployfiles import Example, env, exec_form, stages

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, free_port
from pgwarden.testing.pytest_plugin import ISSUER
from pgwarden.tokens import mint


@attrs.frozen
class Container:
    """The pgwarden container's file system, re-rooted under ``root``."""

    root: Path
    mount_paths: tuple[str, ...]

    def path(self, in_container: str) -> Path:
        return self.root / in_container.lstrip("/")

    def reroot(self, value):
        """Every string that names a path under one of the mounts, moved under ``root``."""
        if isinstance(value, dict):
            return {k: self.reroot(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.reroot(v) for v in value]
        if isinstance(value, str) and any(value == m or value.startswith(m + "/") for m in self.mount_paths):
            return str(self.path(value))
        return value


def lay_out_volumes(ex: Example, root: Path) -> Container:
    """The ConfigMap and Secret volumes of the pgwarden container, as files, the way the kubelet lays them out."""
    mounts = ex.pgwarden["volumeMounts"]
    container = Container(root, tuple(m["mountPath"].rstrip("/") for m in mounts))
    for mount in mounts:
        volume = ex.volume(mount["name"])
        target = container.path(mount["mountPath"])
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            source = volume["configMap"]
            files = dict(ex.get("ConfigMap", source["name"])["data"])
        elif "secret" in volume:
            source = volume["secret"]
            secret = ex.get("Secret", source["secretName"])
            files = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            files.update(secret.get("stringData") or {})
        else:
            # The projected service-account tokens and the cluster CA are issued by a
            # cluster; there is none here, and the token mode used below needs none.
            assert "projected" in volume, volume
            continue
        if source.get("items"):
            files = {item["path"]: files[item["key"]] for item in source["items"]}
        for key, text in files.items():
            (target / key).write_text(text)
    return container


def rewrite_for_the_test(doc: dict, container: Container, pg_server, signing_keys) -> dict:
    """pgwarden's config, changed only where a test cannot be a cluster."""
    doc = container.reroot(doc)  # password_file, ca_file, pod_token_file: the files laid out above
    upstream = doc["upstream"]
    # The database: the test's PostgreSQL in place of the placeholder host, and its
    # role in place of the placeholder role (its password goes into the Secret's file).
    upstream.update(host=pg_server.host, port=pg_server.port, user=APP_USER)
    Path(upstream["password_file"]).write_text(APP_PASSWORD)
    # The database's CA: the test server's in place of the ConfigMap's placeholder.
    # The TLS mode (verify-full) stays: the connection is verified as in the cluster.
    Path(upstream["tls"]["ca_file"]).write_bytes(pg_server.certs["ca"].read_bytes())
    # Identity: pod mode stays, reading the token file at the projected volume's
    # (re-rooted) path, where the test writes what the kubelet would. No cluster
    # issuer here: its keys come from the test's JWKS file instead of discovery over
    # the API server (issuer, key source, the API server's CA and token change); the
    # audience and the identity claim stay as configured.
    jwt = doc["auth"]["jwt"]
    doc["auth"]["jwt"] = {"issuer": ISSUER, "jwks_file": str(signing_keys["jwks"]),
                          "audience": jwt["audience"], "identity_claim": jwt["identity_claim"]}
    # Ports: 5432 and 9187 may be taken on a shared machine. The proxy takes any free
    # port (0; --ready-file reports it); admin a free one on loopback only (a test
    # opens nothing beyond this machine).
    doc["listen"]["port"] = 0
    doc["admin"] = {"host": "127.0.0.1", "port": free_port()}
    return doc


def _leaves(value, prefix=()) -> dict[tuple, object]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, prefix + (k,)))
        return out
    return {prefix: value}


@pytest.fixture
def sidecar(tmp_path, pg_server, signing_keys, pgwarden_process):
    """pgwarden as the example Deployment runs it; yields (port, example); stopped after."""
    ex = Example.load()
    root = tmp_path / "pgwarden-container"
    container = lay_out_volumes(ex, root)
    config_file = container.path(ex.config_path)
    original = yaml.safe_load(config_file.read_text())
    rewritten = rewrite_for_the_test(original, container, pg_server, signing_keys)
    # Nothing else changed: the policies, listen host, TLS mode, recording... are the example's.
    before, after = _leaves(original), _leaves(rewritten)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed <= {
        ("upstream", "host"), ("upstream", "port"), ("upstream", "user"), ("upstream", "password_file"),
        ("upstream", "tls", "ca_file"), ("auth", "pod_token_file"), ("auth", "jwt", "issuer"),
        ("auth", "jwt", "discovery"), ("auth", "jwt", "ca_file"), ("auth", "jwt", "bearer_token_file"),
        ("auth", "jwt", "jwks_file"), ("listen", "port"), ("admin", "host"), ("admin", "port"),
    }, changed
    assert rewritten["auth"]["mode"] == "pod"
    # The kubelet's projected token, for the Deployment's own service account.
    token_file = Path(rewritten["auth"]["pod_token_file"])
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(_token(ex, signing_keys))
    config_file.write_text(yaml.safe_dump(rewritten))

    # The container's command: the Deployment's, else the image's ENTRYPOINT; the
    # executable is this environment's console script (on the image's PATH there).
    # Its args, paths re-rooted, are `run -c CONFIG`; the port files are added.
    command = ex.pgwarden.get("command") or exec_form(stages()[-1].last("ENTRYPOINT"))
    executable = Path(sys.executable).with_name(command[0])
    assert container.reroot(ex.pgwarden["args"]) == ["run", "-c", str(config_file)]
    running = pgwarden_process(config=config_file, command=[str(executable), *command[1:]], cwd=root)
    return running.port, ex, token_file


def _token(ex: Example, signing_keys, namespace: str | None = None, account: str | None = None) -> str:
    """What a projected service-account token of the pod says, signed by the test's key."""
    namespace = namespace or ex.namespace
    account = account or ex.pod["serviceAccountName"]
    return mint(signing_keys["private"], subject=f"system:serviceaccount:{namespace}:{account}",
                issuer=ISSUER, audience=ex.config()["auth"]["jwt"]["audience"],
                extra={"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account}}})


def _connect(port: int, ex: Example) -> psycopg.Connection:
    """As the agent container connects: its PGHOST and PGDATABASE, no password (pod identity)."""
    (agent,) = ex.others()
    agent_env = env(agent)  # PGHOST, PGPORT, PGDATABASE of the agent container
    assert "PGPASSWORD" not in agent_env
    return psycopg.connect(host=agent_env["PGHOST"], port=port, dbname=agent_env["PGDATABASE"],
                           user="agent", sslmode="disable", autocommit=True, connect_timeout=30)


def test_the_agent_reaches_the_database_through_the_example_sidecar(sidecar, signing_keys):
    port, ex, _ = sidecar
    with _connect(port, ex) as conn:
        row = conn.execute("select current_user, current_database(), application_name from pg_stat_activity"
                           " where pid = pg_backend_pid()").fetchone()
        assert row == (APP_USER, "appdb", f"pgwarden:system:serviceaccount:agents:{ex.pod['serviceAccountName']}")
        # Upstream over TLS, verified with the CA file at the path the ConfigMap mount gives.
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
        # The example's policy is the one in force: DDL is refused by its rule no-ddl.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute("create table agent_made (id int)")
        assert refused.value.diag.message_primary.startswith("pgwarden: blocked: schema changes go through migrations")
        assert "no-ddl" in refused.value.diag.message_detail
        assert conn.execute("select 41 + 1").fetchone() == (42,)


def test_a_service_account_the_policies_do_not_name_is_refused(sidecar, signing_keys):
    port, ex, token_file = sidecar
    # the kubelet rotates the token; here into one for a service account no policy names
    token_file.write_text(_token(ex, signing_keys, namespace="other-team", account="coding-agent"))
    with pytest.raises(psycopg.OperationalError, match="pgwarden: no policy"):
        _connect(port, ex)
