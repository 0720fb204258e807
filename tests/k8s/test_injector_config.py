"""The injector config: defaults, and every mistake reported with its line, key and expectation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pgwarden.config import ConfigError
from pgwarden.k8s.config import DEFAULT_IMAGE, load_injector_config, parse_injector_config, quantity

MINIMAL = "tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        parse_injector_config(text, "injector.yaml")
    return excinfo.value.problems


def test_defaults():
    c = parse_injector_config(MINIMAL, "injector.yaml")
    assert c.source == "injector.yaml"
    assert (c.listen.host, c.listen.port, c.max_request_bytes) == ("0.0.0.0", 8443, 1024 * 1024)
    assert c.sidecar.image == DEFAULT_IMAGE and c.sidecar.image_pull_policy == "IfNotPresent"
    assert c.sidecar.resources.as_kubernetes() == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                   "limits": {"cpu": "1", "memory": "256Mi"}}
    assert c.agent.database == "appdb"


def test_numbers_from_yaml_become_quantities():
    c = parse_injector_config(MINIMAL + "sidecar: {resources: {requests: {cpu: 0.5}, limits: {cpu: 2}}}\n")
    assert c.sidecar.resources.as_kubernetes() == {"requests": {"cpu": "0.5"}, "limits": {"cpu": "2"}}


def test_no_limits_at_all():
    c = parse_injector_config(MINIMAL + "sidecar: {resources: {limits: {}}}\n")
    assert c.sidecar.resources.as_kubernetes() == {"requests": {"cpu": "100m", "memory": "128Mi"}}


@pytest.mark.parametrize("text, value", [
    ("100m", Decimal("0.1")), ("1", Decimal(1)), ("0.5", Decimal("0.5")), ("128Mi", Decimal(128 * 2**20)),
    ("1G", Decimal(10**9)), ("2e3", Decimal(2000)), (".5Ki", Decimal(512)),
])
def test_quantities(text, value):
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1 Gi", "-1", "1.2.3", "10mi", "Mi"])
def test_not_quantities(text):
    with pytest.raises(ValueError, match="expected a Kubernetes quantity"):
        quantity(text)


@pytest.mark.parametrize("extra, expected", [
    ("listen: {port: 70000}\n", "line 2: listen.port: expected a TCP port (0-65535), got 70000"),
    ("listen: {port: '8443'}\n", "line 2: listen.port: expected an integer, got '8443'"),
    ("max_request_bytes: -1\n", "line 2: max_request_bytes: expected a positive integer, got -1"),
    ("sidecar: {image: ''}\n", "line 2: sidecar.image: expected a container image reference, got ''"),
    ("sidecar: {imagePullPolicy: Always}\n",
     "line 2: sidecar.imagePullPolicy: unknown key; did you mean `image_pull_policy`?"),
    ("sidecar:\n  resources:\n    requests: {gpu: 1}\n",
     "line 4: sidecar.resources.requests.gpu: expected cpu, memory, ephemeral-storage, hugepages-<size> "
     "or domain/name, got 'gpu'"),
    ("sidecar:\n  resources:\n    requests: {memory: 1Gi}\n    limits: {memory: 512Mi}\n",
     "line 3: sidecar.resources: expected requests.memory (1Gi) not above limits.memory (512Mi)"),
    ("agent: {database: ''}\n", "line 2: agent.database: expected a non-empty string"),
    ("agents: {}\n", "line 2: agents: unknown key; did you mean `agent`?"),
])
def test_problems_name_line_key_and_expectation(extra, expected):
    assert problems(MINIMAL + extra) == [expected]


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_injector_config(tmp_path / "missing.yaml")


def test_not_a_mapping():
    assert problems("- tls\n") == ["expected a mapping of sections (tls:, listen:, sidecar:, agent:, ...)"]
