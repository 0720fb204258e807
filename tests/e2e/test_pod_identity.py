"""auth.mode pod: a plain `psql -h 127.0.0.1` from inside the pod takes the pod's own identity."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import psycopg
import pytest
from twisted.web import resource, server

from pgwarden.testing.certs import make_ca_and_server
from pgwarden.testing.pytest_plugin import AUDIENCE, ISSUER
from pgwarden.tokens import mint

AGENT = "system:serviceaccount:agents:coding-agent"
POLICIES = [
    {"name": "coding-agent", "when": {"subject": AGENT}, "default": "allow"},
    {"name": "reporting", "when": {"claims": {"kubernetes.io.namespace": "reports"}}, "default": "allow"},
]


def sa_token(keys, subject=AGENT, namespace="agents", **kw) -> str:
    """A projected service-account token as the kubelet writes it (audience pgwarden)."""
    account = subject.rsplit(":", 1)[-1]
    return mint(keys["private"], subject=subject, issuer=ISSUER, audience=AUDIENCE, groups=None,
                extra={"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account}}}, **kw)


def project(directory, token: str) -> None:
    """Writes the token the way the kubelet does: a new timestamped dir, then the ..data symlink swapped."""
    directory.mkdir(exist_ok=True)
    version = directory / f"..{os.urandom(4).hex()}"
    version.mkdir()
    (version / "token").write_text(token)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, directory / "..data")
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")


def no_password_dsn(running, host="127.0.0.1") -> str:
    return f"host={host} port={running.port} user=agent dbname=appdb sslmode=disable"


def server_identity(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("select current_setting('application_name')").fetchone()[0]


@pytest.fixture
def pod(make_pgwarden, signing_keys, tmp_path):
    tokens = tmp_path / "pgwarden-token"
    project(tokens, sa_token(signing_keys))
    return make_pgwarden(auth={"mode": "pod", "pod_token_file": str(tokens / "token")}, policies=POLICIES)


def test_a_client_without_any_secret_is_the_pod(pod):
    assert server_identity(no_password_dsn(pod)) == f"pgwarden:{AGENT}"


def test_a_rotated_token_is_read_on_the_next_connection(pod, signing_keys, tmp_path):
    assert server_identity(no_password_dsn(pod)) == f"pgwarden:{AGENT}"
    other = "system:serviceaccount:reports:nightly"
    project(tmp_path / "pgwarden-token", sa_token(signing_keys, subject=other, namespace="reports"))
    assert server_identity(no_password_dsn(pod)) == f"pgwarden:{other}"


@pytest.mark.parametrize("damage", ["missing", "expired", "other-audience", "garbage"])
def test_a_missing_or_invalid_pod_token_refuses(pod, signing_keys, damage, tmp_path):
    target = tmp_path / "pgwarden-token" / "..data" / "token"
    if damage == "missing":
        target.unlink()
    elif damage == "expired":
        target.write_text(sa_token(signing_keys, ttl_s=-120))
    elif damage == "other-audience":
        target.write_text(mint(signing_keys["private"], subject=AGENT, issuer=ISSUER, audience="kubernetes"))
    else:
        target.write_text("not a token")
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect(no_password_dsn(pod))
    assert "pgwarden: authentication failed" in str(excinfo.value)
    pod.call(pod.app.stop)
    failures = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()
                if '"auth_failure"' in line]
    assert failures and failures[-1]["reason"].startswith("pod identity" if damage == "missing" else "")


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_connections_from_outside_the_pod_are_refused(make_pgwarden, signing_keys, tmp_path):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    tokens = tmp_path / "pgwarden-token"
    project(tokens, sa_token(signing_keys))
    running = make_pgwarden(listen={"host": "0.0.0.0"}, policies=POLICIES,
                            auth={"mode": "pod", "pod_token_file": str(tokens / "token")})
    assert server_identity(no_password_dsn(running)) == f"pgwarden:{AGENT}"
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect(no_password_dsn(running, host=address))
    assert "only connections from inside the pod (loopback)" in str(excinfo.value)


class ClusterIssuer(resource.Resource):
    """The API server's OIDC endpoints: served over TLS to bearers of a service-account token only."""

    isLeaf = True

    def __init__(self, jwks: dict, api_token: str) -> None:
        super().__init__()
        self.jwks, self.api_token, self.base = jwks, api_token, ""
        self.refused = 0

    def render_GET(self, request):
        if request.getHeader("authorization") != f"Bearer {self.api_token}":
            self.refused += 1
            request.setResponseCode(401)
            return b"{}"
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/.well-known/openid-configuration":
            return json.dumps({"issuer": self.base, "jwks_uri": self.base + "/openid/v1/jwks"}).encode()
        return json.dumps(self.jwks).encode()


def test_keys_from_the_cluster_issuer_over_tls_with_the_pods_api_token(make_pgwarden, signing_keys,
                                                                        reactor_thread, tmp_path):
    from twisted.internet import ssl
    from twisted.internet.threads import blockingCallFromThread

    tls = make_ca_and_server(tmp_path / "apiserver")
    (tmp_path / "api-token").write_text("the-pods-api-token\n")
    site = ClusterIssuer(json.loads(signing_keys["jwks"].read_text()), "the-pods-api-token")
    context = ssl.PrivateCertificate.loadPEM(tls["cert"].read_text() + tls["key"].read_text())
    port = blockingCallFromThread(reactor_thread, reactor_thread.listenSSL, 0, server.Site(site),
                                  context.options(), interface="127.0.0.1")
    site.base = f"https://localhost:{port.getHost().port}"
    try:
        tokens = tmp_path / "pgwarden-token"
        project(tokens, mint(signing_keys["private"], subject=AGENT, issuer=site.base, audience=AUDIENCE))
        running = make_pgwarden(policies=POLICIES, auth={
            "mode": "pod", "pod_token_file": str(tokens / "token"),
            "jwt": {"issuer": site.base, "audience": AUDIENCE, "discovery": True, "ca_file": str(tls["ca"]),
                    "bearer_token_file": str(tmp_path / "api-token")}})
        assert server_identity(no_password_dsn(running)) == f"pgwarden:{AGENT}"
        assert site.refused == 0
    finally:
        blockingCallFromThread(reactor_thread, port.stopListening)


def test_psql_with_no_password_at_all(pod):
    """The agent's own command line: `psql -h 127.0.0.1 appdb`, no PGPASSWORD, nothing to type."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(pod.port), "-U", "agent", "-w", "-At", "-c",
         "select current_setting('application_name')", "appdb"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pgwarden:{AGENT} (psql)"
