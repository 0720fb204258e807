"""The compiled hot path (pgwarden.compiled): which build runs, and the switch to pure Python.

`make test` runs the suite twice: compiled (``PGWARDEN_EXPECT_COMPILED=1``), then pure Python
(``PGWARDEN_PURE_PYTHON=1``). These tests make sure each pass runs what it says it runs.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgwarden import __version__, compiled

EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)
#: every module with an extension: mypyc's group and Cython's
ALL = compiled.MODULES + compiled.CYTHON_MODULES
#: binutils' nm, which lists a library's exported symbols (None: not installed)
NM = shutil.which("nm")


def _source(name: str) -> Path:
    package, _, module = name.rpartition(".")
    return Path(importlib.import_module(package).__path__[0], module + ".py")


def _built() -> bool:
    """Whether the extensions are there (beside the sources: an editable install, `make compiled`)."""
    return all(any(_source(name).parent.glob(_source(name).stem + ext) for ext in EXTENSIONS)
               for name in ALL)


def _run(code: str, *, pure: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_this_pass_runs_the_build_it_asked_for() -> None:
    build = compiled.build()
    if os.environ.get("PGWARDEN_EXPECT_COMPILED") == "1":
        assert build == compiled.COMPILED, "the hot path did not compile (setup.py printed why at install)"
        # An extension older than its .py runs the code as it was: `make compiled` builds it again.
        stale = [name for name in ALL
                 if Path(importlib.import_module(name).__file__ or "").stat().st_mtime
                 < _source(name).stat().st_mtime]
        assert not stale, f"compiled from an older source: {stale}; run `make compiled`"
    elif compiled.pure_requested():
        assert build == compiled.PURE
    else:
        assert build in (compiled.COMPILED, compiled.PURE)  # never a mix


def test_pure_python_is_asked_for_through_the_environment() -> None:
    """The switch reaches a new process (the pgwardens the tests start) before any module of
    pgwarden is imported; without it, the extensions win when they are there."""
    code = ("from pgwarden import compiled, rawio; from pgwarden.relay import engine; "
            "print(compiled.build()); print(engine.__file__); print(rawio.__file__); print(engine.Relay.__module__)")
    build, path, raw, _ = _run(code, pure=True)
    assert (build, Path(path), Path(raw)) == (compiled.PURE, _source("pgwarden.relay.engine"), _source("pgwarden.rawio"))
    build, path, raw, _ = _run(code, pure=False)
    if _built():
        assert build == compiled.COMPILED and path.endswith(EXTENSIONS) and raw.endswith(EXTENSIONS)
    else:
        assert build == compiled.PURE and path.endswith(".py") and raw.endswith(".py")


def test_version_says_which_build_runs() -> None:
    assert _run("from pgwarden.cli import main; main(['--version'])", pure=True) == [
        f"pgwarden {__version__}, pure Python"]
    expected = compiled.COMPILED if _built() else compiled.PURE
    assert _run("from pgwarden.cli import main; main(['--version'])", pure=False) == [
        f"pgwarden {__version__}, {expected}"]


def test_an_unknown_module_is_left_to_the_other_finders() -> None:
    finder = compiled.SourceOnly(compiled.MODULES)
    assert finder.find_spec("pgwarden.cli", None) is None
    spec = finder.find_spec("pgwarden.relay.rows", [str(_source("pgwarden.relay.rows").parent)])
    assert spec is not None and spec.origin == str(_source("pgwarden.relay.rows"))
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)


@pytest.mark.parametrize("value, pure", [("1", True), ("0", False), ("", False)])
def test_the_switch_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, pure: bool) -> None:
    monkeypatch.setenv(compiled.PURE_ENV, value)
    assert compiled.pure_requested() is pure


@pytest.mark.skipif(not _built(), reason="the extensions are not built in this tree")
@pytest.mark.skipif(NM is None, reason="no nm (binutils) here")
def test_the_group_library_exports_nothing_but_its_init() -> None:
    """setup.py compiles the mypyc group with hidden visibility, so that its functions call each other
    directly, not through the library's linkage table (docs/performance.md, "Session 14"). Exported,
    each of them would be a symbol here, and each call between them an indirect jump."""
    spec = importlib.util.find_spec("pgwarden_hot__mypyc")
    assert spec is not None and spec.origin is not None
    done = subprocess.run([str(NM), "-D", "--defined-only", spec.origin], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = [line.split()[-1] for line in done.stdout.splitlines() if line.strip()]
    assert exported == ["PyInit_pgwarden_hot__mypyc"]
