"""The deploy/ tree as the tests read it: YAML documents, the Dockerfile, the sidecar example.

Everything here parses the files as they are; nothing is copied out of them into
the tests, so a change to a manifest is a change to what the tests check.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import attrs
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SIDECAR = DEPLOY / "k8s" / "sidecar"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

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


# ------------------------------------------------------------------ Dockerfile


@attrs.frozen
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined
    line: int


@attrs.frozen
class Stage:
    base: str  # ARG defaults substituted
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's instructions: comments dropped, backslash continuations joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside a continuation, as Docker does
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(pending)
        keyword, _, value = joined.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends in a continuation"
    return out


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    args: dict[str, str] = {}
    result: list[Stage] = []
    current: list[Instruction] | None = None
    base = name = None
    for ins in instructions(path.read_text()):
        if ins.keyword == "ARG" and current is None:  # global ARGs may parametrise FROM
            key, _, default = ins.value.partition("=")
            args[key.strip()] = default.strip()
            continue
        if ins.keyword == "FROM":
            if current is not None:
                result.append(Stage(base, name, tuple(current)))
            words = [w for w in ins.value.split() if not w.startswith("--")]
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value).replace("$" + key, value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
            continue
        assert current is not None, f"line {ins.line}: {ins.keyword} before FROM"
        current.append(ins)
    if current is not None:
        result.append(Stage(base, name, tuple(current)))
    return result


def exec_form(ins: Instruction) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD; the shell form is an error here."""
    value = json.loads(ins.value)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), ins
    return value


def copy_build_context(builder: Stage, dest: Path) -> None:
    """What the builder stage COPYs (``COPY <sources...> <dest>``), copied from this tree into
    ``dest``: the sources a wheel is built from, exactly as the image builds it."""
    for copy in builder.all("COPY"):
        *sources, _dest = shlex.split(copy.value)
        for source in sources:
            path = ROOT / source.rstrip("/")
            (shutil.copytree if path.is_dir() else shutil.copy)(path, dest / path.name)
