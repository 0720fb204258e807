"""deploy/Dockerfile as the tests read it: stages, instructions, the builder's context.

Standard library only: `tests/deploy/image_wheels.py` runs it with the plain interpreter while
`make test` sets up the venv (see that script).
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined
    line: int


@dataclass(frozen=True)
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


def _context_excludes() -> list[str]:
    """.dockerignore's patterns for files under any directory (``**/__pycache__``, ``**/*.so``):
    what the build context leaves out of the directories it lets in."""
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln[3:] for ln in lines if ln.startswith("**/")]


def copy_build_context(builder: Stage, dest: Path) -> None:
    """What the builder stage COPYs (``COPY <sources...> <dest>``), copied from this tree into
    ``dest``: the sources a wheel is built from, exactly as the image builds it (the tree's own
    builds, caches and extensions left out, as .dockerignore leaves them out of the context)."""
    ignore = shutil.ignore_patterns(*_context_excludes())
    for copy in builder.all("COPY"):
        *sources, _dest = shlex.split(copy.value)
        for source in sources:
            path = ROOT / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, dest / path.name, ignore=ignore)
            else:
                shutil.copy(path, dest / path.name)
