"""`pgwarden webhook` end to end: its own process, real HTTPS clients, certificates made by the test.

The process says it is listening on stdout (the readiness line); the tests wait
for that line, never for a time. The certificate directory is laid out as the
kubelet lays out a Secret volume (``tls.crt -> ..data/tls.crt``, ``..data -> v1``),
so a renewal is the same atomic symlink swap cert-manager's update causes.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from webhook_helpers import K8S_VERSIONS, apply, fixture, patch_of, validate

from pgwarden.testing.certs import make_ca_and_server
from pgwarden.testing.processes import ProcessGroup

MAX_BODY = 64 * 1024


def issue(tls_dir: Path, version: str) -> Path:
    """A new CA and server certificate in ``tls_dir/version``; returns the CA file."""
    paths = make_ca_and_server(tls_dir / version, hostname="localhost")
    paths["cert"].rename(tls_dir / version / "tls.crt")
    paths["key"].rename(tls_dir / version / "tls.key")
    return paths["ca"]


def swap(tls_dir: Path, version: str) -> None:
    """The kubelet's update of a Secret volume: ..data points at the new version, atomically."""
    tmp = tls_dir / "..data_tmp"
    tmp.symlink_to(version)
    os.replace(tmp, tls_dir / "..data")


class Webhook:
    def __init__(self, directory: Path, **config) -> None:
        self.tls = directory / "tls"
        self.tls.mkdir()
        self.ca = issue(self.tls, "v1")
        (self.tls / "..data").symlink_to("v1")
        for name in ("tls.crt", "tls.key"):
            (self.tls / name).symlink_to(f"..data/{name}")
        doc = {"listen": {"host": "127.0.0.1", "port": 0},
               "tls": {"cert_file": str(self.tls / "tls.crt"), "key_file": str(self.tls / "tls.key")},
               "max_request_bytes": MAX_BODY, **config}
        self.config = directory / "injector.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.log = directory / "webhook.log"
        self.group = ProcessGroup(
            [sys.executable, "-m", "pgwarden", "webhook", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True,
        )
        self.proc = self.group.proc
        try:
            line = self._readiness_line(30)
            self.port = int(re.fullmatch(r"pgwarden webhook: listening on https://127\.0\.0\.1:(\d+)\n", line)[1])
        except BaseException:
            self.group.stop()  # a fixture whose set-up fails is not torn down
            raise

    def _readiness_line(self, timeout_s: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            pytest.fail(f"pgwarden webhook did not start: {self.log.read_text()}")
        return line

    def stop(self) -> int:
        """SIGTERM; killed with all it started if it has not exited 15 s later."""
        return self.group.stop()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca or self.ca))

    def call(self, path: str, body: bytes | None = None, ca: Path | None = None, headers=None):
        """(status, content type, body) of one request on a new connection."""
        request = urllib.request.Request(self.url(path), data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, context=self.context(ca), timeout=15) as r:
                return r.status, r.headers.get("content-type"), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("content-type"), e.read()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    w = Webhook(tmp_path_factory.mktemp("webhook"))
    yield w
    assert w.stop() == 0  # SIGTERM: a clean stop


def post_review(webhook, name: str):
    status, ctype, body = webhook.call("/mutate", json.dumps(fixture(name)).encode(),
                                       headers={"Content-Type": "application/json"})
    assert status == 200 and ctype == "application/json"
    return json.loads(body)


def test_a_pod_is_injected_over_https(webhook):
    response = post_review(webhook, "annotated")
    assert response["response"]["uid"] == fixture("annotated")["request"]["uid"]
    assert response["response"]["allowed"] is True
    patched = apply(fixture("annotated")["request"]["object"], response)
    assert patched["spec"]["initContainers"][0]["name"] == "pgwarden"
    validate(patched, K8S_VERSIONS[-1])
    assert re.search(r"webhook: agents/agent-7d9f8b6c5d-\*: inject \(sidecar injected\)", webhook.log.read_text())


def test_the_log_is_json_lines_like_pgwarden_runs(webhook):
    post_review(webhook, "annotated")
    events = [json.loads(line) for line in webhook.log.read_text().splitlines()]  # every line one object
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in events)
    (listening,) = [e for e in events if e["msg"].startswith("webhook: listening on https://127.0.0.1:")]
    # Twisted's own reactor, whatever PGWARDEN_REACTOR says: pgwarden's is for relaying sessions.
    assert listening["reactor"].startswith("twisted.internet."), listening["reactor"]
    decision = [e for e in events if e.get("action") == "inject"][-1]
    assert decision["who"] == "agents/agent-7d9f8b6c5d-*" and decision["reason"] == "sidecar injected"
    assert decision["level"] == "info" and decision["logger"] == "pgwarden.webhook"
    # The config names no sidecar.image: the default is the placeholder, and the log says so.
    (warning,) = [e for e in events if e["level"] == "warn"]
    assert "placeholder" in warning["msg"] and warning["image"] == "ghcr.io/pgwarden/pgwarden:0.1.0"


def test_refusal_and_pass_over_https(webhook):
    refused = post_review(webhook, "missing-policy")["response"]
    assert refused["allowed"] is False and refused["status"]["code"] == 400
    assert "pgwarden.dev/policy is missing" in refused["status"]["message"]
    passed = post_review(webhook, "not-annotated")
    assert passed["response"]["allowed"] is True and patch_of(passed) is None


@pytest.mark.parametrize("body, says", [
    (b"{not json", b"request body is not JSON"),
    (b"\xff\xfe", b"request body is not JSON"),
    (b"[" * 30_000 + b"]" * 30_000, b"request body is not JSON"),  # deeper than the parser goes
    (b"", b"request body is not JSON"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
     b"not an AdmissionReview request: expected an AdmissionReview of apiVersion admission.k8s.io/v1"),
])
def test_malformed_bodies_get_400(webhook, body, says):
    status, ctype, answer = webhook.call("/mutate", body)
    assert status == 400 and ctype.startswith("text/plain")
    assert answer.startswith(says)


def test_oversized_body_gets_413(webhook):
    status, _, answer = webhook.call("/mutate", b" " * (MAX_BODY + 1))
    assert status == 413 and answer == f"request body larger than {MAX_BODY} bytes\n".encode()
    # Without a Content-Length (chunked), the limit holds as the body arrives.
    status, _, _ = webhook.call("/mutate", iter([b" " * 4096] * (MAX_BODY // 4096 + 1)))
    assert status == 413
    # A body at the limit is read (and judged as JSON).
    status, _, answer = webhook.call("/mutate", b" " * (MAX_BODY - 2) + b"{}")
    assert status == 400 and b"expected an AdmissionReview" in answer


def test_an_endless_body_is_cut_off(webhook):
    """Past four times the limit the webhook stops reading and drops the connection."""
    raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=15)
    conn = webhook.context().wrap_socket(raw, server_hostname="localhost")
    conn.sendall(f"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
    sent, chunk = 0, b"x" * 65536
    with pytest.raises(OSError):  # reset, broken pipe or TLS EOF: the server has gone
        while sent < 256 * 1024 * 1024:
            conn.sendall(chunk)
            sent += len(chunk)
    assert sent < 8 * 1024 * 1024  # about 4 x 64 KiB read, plus what the socket buffers held
    conn.close()


def test_paths_and_methods(webhook):
    assert webhook.call("/healthz") == (200, "text/plain; charset=utf-8", b"ok\n")
    assert webhook.call("/nope")[0] == 404
    assert webhook.call("/")[0] == 404
    assert webhook.call("/mutate/more", b"{}")[0] == 404
    assert webhook.call("/mutate")[0] == 405  # GET


def test_renewed_certificate_is_served_from_the_next_connection(tmp_path):
    w = Webhook(tmp_path)
    try:
        first_ca = w.ca
        assert w.call("/healthz")[0] == 200
        second_ca = issue(w.tls, "v2")
        swap(w.tls, "v2")
        assert w.call("/healthz", ca=second_ca)[0] == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            w.call("/healthz", ca=first_ca)
        # A pair that does not belong together (a key from elsewhere) is not taken: v2 stays.
        issue(w.tls, "v3")
        (w.tls / "v3" / "tls.key").write_bytes((w.tls / "v1" / "tls.key").read_bytes())
        swap(w.tls, "v3")
        assert w.call("/healthz", ca=second_ca)[0] == 200
        assert "cannot load the new certificate" in w.log.read_text()
        assert "certificate reloaded" in w.log.read_text()
    finally:
        assert w.stop() == 0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgwarden", "webhook", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_bad_config_says_where(tmp_path):
    cfg = tmp_path / "injector.yaml"
    cfg.write_text("tls:\n  cert_file: /x\nsidecar:\n  image_pull_policy: Sometimes\n  resources:\n"
                   "    requests: {cpu: lots}\nlisten: {port: 99999}\n")
    result = run_cli("--config", str(cfg))
    assert result.returncode == 2
    assert sorted(result.stderr.splitlines()) == [
        f"{cfg}: line 1: tls.key_file: required field missing",
        f"{cfg}: line 4: sidecar.image_pull_policy: expected one of Always, IfNotPresent, Never",
        f"{cfg}: line 6: sidecar.resources.requests.cpu: expected a Kubernetes quantity such as 100m, 1 or 128Mi, "
        "got 'lots'",
        f"{cfg}: line 7: listen.port: expected a TCP port (0-65535), got 99999",
    ]


def test_unreadable_certificate_stops_start_up(tmp_path):
    cfg = tmp_path / "injector.yaml"
    cfg.write_text(f"tls: {{cert_file: {tmp_path}/missing.crt, key_file: {tmp_path}/missing.key}}\n"
                   "listen: {host: 127.0.0.1, port: 0}\n")
    result = run_cli("-c", str(cfg))
    assert result.returncode == 2
    assert result.stderr.startswith("pgwarden webhook: cannot start: ") and "missing.crt" in result.stderr
