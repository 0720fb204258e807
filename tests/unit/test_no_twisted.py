"""The codec and the relay are sans-IO: importing them must not import Twisted.

Each check runs in a fresh interpreter, since this one may already have
Twisted loaded by other tests or by the pytest plugin.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

SANS_IO_PACKAGES = ("pgwarden.wire", "pgwarden.relay")

# Imports the given modules (walking packages recursively) and reports which
# modules were imported and which Twisted modules ended up in sys.modules.
PROBE = r"""
import importlib, json, pkgutil, sys

imported = []
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    imported.append(name)
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, name + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
twisted = sorted(m for m in sys.modules if m.startswith("twisted"))
print(json.dumps({"imported": imported, "twisted": twisted}))
"""


def probe(*names: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *names],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _modules(package: str) -> list[str]:
    module = __import__(package, fromlist=["__path__"])
    return [package] + [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]


SANS_IO_MODULES = [name for package in SANS_IO_PACKAGES for name in _modules(package)]


def test_the_sans_io_packages_are_found():
    for expected in (
        "pgwarden.wire.errors",
        "pgwarden.wire.framing",
        "pgwarden.wire.messages",
        "pgwarden.relay.engine",
        "pgwarden.relay.handshake",
        "pgwarden.relay.refusal",
    ):
        assert expected in SANS_IO_MODULES


def test_wire_and_relay_do_not_import_twisted():
    report = probe(*SANS_IO_PACKAGES)
    assert set(SANS_IO_MODULES) <= set(report["imported"])
    assert report["twisted"] == []


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_module_does_not_import_twisted(module):
    """One module at a time, so a failure names the module that pulled Twisted in."""
    assert probe(module)["twisted"] == []


def test_the_probe_sees_twisted():
    """The check itself works: a module that does import Twisted is caught."""
    assert "twisted.internet.defer" in probe("twisted.internet.defer")["twisted"]


@pytest.mark.parametrize("module", ["pgwarden.k8s.inject", "pgwarden.k8s.config"])
def test_the_webhook_decision_does_not_import_twisted(module):
    """The admission decision is a pure function; only pgwarden.k8s.server is the Twisted edge."""
    assert probe(module)["twisted"] == []
