"""`pip install` on a machine without a C compiler: the hot path is not compiled, the install still
succeeds, silently but for one line, and the package runs as pure Python (issue 20: "falls back
silently when not").

The wheel is built from what the image's builder copies (the same sources), in pip's isolated build
environment as any user's install is, with the compiler replaced by one that always fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deployfiles import copy_build_context, stages

from pgwarden import compiled

NOTE = "pgwarden: not compiling the hot path (no C compiler works"


def _without_switches() -> dict[str, str]:
    """This environment without pgwarden's build and run switches (a user's has none of them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}


@pytest.fixture(scope="module")
def pure_wheel(tmp_path_factory) -> tuple[Path, str]:
    if compiled.pure_requested():
        pytest.skip("built once, by make test-builds")
    builder = stages()[0]
    root = tmp_path_factory.mktemp("no-compiler")
    src, wheels = root / "src", root / "wheels"
    src.mkdir()
    copy_build_context(builder, src)
    env = {**_without_switches(), "CC": "/bin/false", "CXX": "/bin/false"}  # what distutils compiles and links
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir", str(wheels), "."],
                          cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = wheels.glob("pgwarden-*.whl")
    return wheel, done.stdout + done.stderr


def test_without_a_compiler_the_wheel_builds_and_says_so_once(pure_wheel) -> None:
    _, output = pure_wheel
    notes = [line for line in output.splitlines() if NOTE in line]
    assert len(notes) == 1, notes
    assert "installing it as pure Python" in notes[0]


def test_the_wheel_holds_every_hot_module_as_python_and_no_extension(pure_wheel) -> None:
    wheel, _ = pure_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    hot = [*compiled.MODULES, *compiled.CYTHON_MODULES]
    missing = [m for m in hot if m.replace(".", "/") + ".py" not in names]
    assert not missing, missing


def test_the_wheel_runs_as_pure_python(pure_wheel, tmp_path) -> None:
    """Unpacked first on the path, with no switch in the environment: it says it is pure Python and
    relays from its own .py files (the other tests of both builds run the same sources)."""
    wheel, _ = pure_wheel
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from pgwarden import compiled\nfrom pgwarden.relay import engine\nfrom pgwarden import rawio\n"
            "print(compiled.build()); print(engine.__file__); print(rawio.__file__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=_without_switches(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    build, engine, rawio = done.stdout.splitlines()
    assert build == compiled.PURE
    assert Path(engine) == tmp_path / "pgwarden" / "relay" / "engine.py"
    assert Path(rawio) == tmp_path / "pgwarden" / "rawio.py"
