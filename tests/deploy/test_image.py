"""The image is the user's to build and push: make targets for it, and the placeholder name marked everywhere.

Nothing publishes ghcr.io/pgwarden/pgwarden; every place that names it says so, next to
the name, and `make image` / `make push` build and push the image under the user's name.
The recipes run here with CONTAINER=echo (no container engine runs on the test machines).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from deployfiles import DEPLOY, ROOT

PLACEHOLDER = "ghcr.io/pgwarden/pgwarden"
VERSION = next(line.split("=", 1)[1].strip() for line in (ROOT / "setup.cfg").read_text().splitlines()
               if line.startswith("version ="))


def make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_make_push_builds_and_pushes_the_image_under_the_given_name():
    done = make("push", "IMAGE=registry.example/team/pgwarden:1.2.3", "CONTAINER=echo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["build -f deploy/Dockerfile -t registry.example/team/pgwarden:1.2.3 .",
                                        "push registry.example/team/pgwarden:1.2.3"]


def test_make_image_defaults_to_a_local_name_of_the_version():
    done = make("image", "CONTAINER=echo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"build -f deploy/Dockerfile -t pgwarden:{VERSION} ."]


def test_make_push_without_a_registry_stops_before_building():
    done = make("push", "CONTAINER=echo")
    assert done.returncode != 0
    assert "names no registry" in done.stderr and "make push IMAGE=registry.example/pgwarden:" in done.stderr
    assert "build" not in done.stdout


def _references() -> list[tuple[str, int, list[str]]]:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "pgwarden" / "k8s" / "config.py"]
    out = []
    for path in files:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if PLACEHOLDER in line:
                out.append((str(path.relative_to(ROOT)), number + 1, lines[max(0, number - 3):number + 1]))
    return out


def test_every_reference_to_the_placeholder_image_is_marked():
    references = _references()
    assert {path for path, _, _ in references} >= {
        "deploy/k8s/sidecar/deployment.yaml", "deploy/k8s/injector/deployment.yaml",
        "deploy/k8s/injector/configmap.yaml", "pgwarden/k8s/config.py"}
    for path, number, context in references:
        assert any("PLACEHOLDER" in line for line in context), f"{path}:{number}: the placeholder image, unmarked"
