"""The image's builder stage run without Docker: deploy/Dockerfile's `pip wheel` command, with
the stage's ENV, on a copy of what the stage COPYs. `tests/deploy/test_image_stages.py` installs
and runs what it builds.

Run as a script (`python3 tests/deploy/image_wheels.py DIR`: the wheels in DIR/wheels), it is
`make test`'s first job beside the venv's setup, which keeps one core busy compiling and leaves
the other idle: the image's compile (~100 s of one core) is done there, before the suite's passes
start, instead of among them. The test then takes DIR from PGWARDEN_IMAGE_WHEELS; without it
(`make test-builds`, pytest alone) the test builds the wheels itself, with this module.
Standard library only: it runs with the plain interpreter, before the venv exists.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dockerfile import Stage, copy_build_context, stages


def pip_command(run: str, keyword: str) -> list[str]:
    """The `python -m pip <keyword> ...` command of a RUN instruction (before any `&&`)."""
    for part in run.split("&&"):
        words = shlex.split(part)
        if "pip" in words and keyword in words:
            return words[words.index("python"):]
    raise AssertionError(f"no pip {keyword} in: {run}")


def stage_env(stage: Stage) -> dict[str, str]:
    """The stage's ENV instructions (``ENV KEY=value ...``), in order."""
    found: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.value):
            key, sep, value = word.partition("=")
            assert sep, f"line {ins.line}: only the ENV KEY=value form is read here"
            found[key] = value
    return found


def build_wheels(root: Path, python: str) -> Path:
    """The builder stage's wheels (pgwarden's, compiled, and one of every dependency) in root/wheels."""
    builder = stages()[0]
    src, wheels = root / "src", root / "wheels"
    src.mkdir(parents=True)
    copy_build_context(builder, src)
    wheel = pip_command(builder.last("RUN").value, "wheel")
    wheel = [python] + wheel[1:]
    wheel[wheel.index("--wheel-dir") + 1] = str(wheels)
    done = subprocess.run(wheel, cwd=src, env={**os.environ, **stage_env(builder)}, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the builder stage's {' '.join(wheel[1:4])} ... failed:\n"
                           f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return wheels


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    shutil.rmtree(root, ignore_errors=True)
    try:
        wheels = build_wheels(root, sys.executable)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    shutil.rmtree(root / "src", ignore_errors=True)
    print(f"the image's wheels: {len(list(wheels.glob('*.whl')))} in {wheels}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
