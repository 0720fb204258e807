"""The deploy/ tree as the tests read it: YAML documents, the Dockerfile (`dockerfile`), the sidecar example.

Everything here parses the files as they are; nothing is copied out of them into
the tests, so a change to a manifest is a change to what the tests check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import yaml
from dockerfile import (  # noqa: F401  (the Dockerfile's readers, with the rest of deploy/'s)
    DOCKERFILE,
    DOCKERIGNORE,
    Instruction,
    Stage,
    copy_build_context,
    exec_form,
    instructions,
    stages,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SIDECAR = DEPLOY / "k8s" / "sidecar"

SIDECAR_NAME = "pgwarden"


# ------------------------------------------------------------------ YAML documents


@attrs.frozen
class Doc:
    """One YAML document of one file under deploy/."""

    path: Path
    index: int
    body: Any

    @property
    def kind(self) -> str | None:
        return self.body.get("kind") if isinstance(self.body, dict) else None

    @property
    def name(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        return (self.body.get("metadata") or {}).get("name")

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(DEPLOY)}#{self.index}:{self.kind}/{self.name}"


def yaml_files(under: Path = DEPLOY) -> list[Path]:
    return sorted({*under.rglob("*.yaml"), *under.rglob("*.yml")})


def documents(path: Path) -> list[Doc]:
    """The non-empty documents of one file (a bare `---` at the end is no document)."""
    docs = yaml.safe_load_all(path.read_text())
    return [Doc(path, i, body) for i, body in enumerate(docs) if body is not None]


def all_documents(under: Path = DEPLOY) -> list[Doc]:
    return [doc for path in yaml_files(under) for doc in documents(path)]


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def objects(directory: Path = SIDECAR) -> dict[tuple[str, str], dict]:
    """The objects a kustomization directory lists, by (kind, name)."""
    found: dict[tuple[str, str], dict] = {}
    for entry in kustomization(directory)["resources"]:
        for doc in documents(directory / entry):
            key = (doc.kind, doc.name)
            assert key not in found, f"{key} defined twice"
            found[key] = doc.body
    return found


# ------------------------------------------------------------------ the sidecar example


@attrs.frozen
class Example:
    """The sidecar example: its objects, the pod template, the containers, pgwarden's config."""

    objects: dict[tuple[str, str], dict]

    @classmethod
    def load(cls) -> Example:
        return cls(objects(SIDECAR))

    def one(self, kind: str) -> dict:
        found = [body for (k, _), body in self.objects.items() if k == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def get(self, kind: str, name: str) -> dict:
        return self.objects[(kind, name)]

    @property
    def deployment(self) -> dict:
        return self.one("Deployment")

    @property
    def pod(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def namespace(self) -> str:
        return self.deployment["metadata"]["namespace"]

    def containers(self) -> list[tuple[str, dict]]:
        """(section, container) for every container of the pod, init and ephemeral included."""
        return [(section, c) for section in ("initContainers", "containers", "ephemeralContainers")
                for c in self.pod.get(section) or ()]

    def container(self, name: str) -> tuple[str, dict]:
        found = [(s, c) for s, c in self.containers() if c["name"] == name]
        assert len(found) == 1, f"expected one container named {name}, found {len(found)}"
        return found[0]

    @property
    def pgwarden(self) -> dict:
        return self.container(SIDECAR_NAME)[1]

    def others(self) -> list[dict]:
        """Every container but pgwarden (the agent, and any other)."""
        return [c for _, c in self.containers() if c["name"] != SIDECAR_NAME]

    def volume(self, name: str) -> dict:
        found = [v for v in self.pod.get("volumes") or () if v["name"] == name]
        assert len(found) == 1, f"expected one volume named {name}, found {len(found)}"
        return found[0]

    def mount_of(self, container: dict, path: str) -> tuple[dict, str] | None:
        """The volume mount of ``container`` that holds the file ``path``, and the path inside it."""
        best = None
        for m in container.get("volumeMounts") or ():
            root = m["mountPath"].rstrip("/")
            if path.startswith(root + "/") and (best is None or len(root) > len(best[0]["mountPath"])):
                best = (m, path[len(root) + 1:])
        return best

    @property
    def policy_configmap(self) -> dict:
        return self.get("ConfigMap", self.volume("pgwarden-policy")["configMap"]["name"])

    @property
    def config_path(self) -> str:
        """The config file pgwarden is started with (its `-c` argument)."""
        args = self.pgwarden["args"]
        return args[args.index("-c") + 1]

    def config(self) -> dict:
        """pgwarden's config document: the ConfigMap key the `-c` path points at."""
        mount, key = self.mount_of(self.pgwarden, self.config_path)
        configmap = self.get("ConfigMap", self.volume(mount["name"])["configMap"]["name"])
        return yaml.safe_load(configmap["data"][key])


def env(container: dict) -> dict[str, str]:
    """A container's plain env values (valueFrom entries map to None)."""
    return {e["name"]: e.get("value") for e in container.get("env") or ()}
