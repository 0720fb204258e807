"""setup.py's two ways to fall back to pure Python, in process: no C compiler at all (found before
mypyc reads the modules), and a build that fails part way (none of the extensions installed).
`tests/deploy/test_build_fallback.py` builds a whole wheel without a compiler."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from setuptools import Distribution, Extension

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("pgwarden_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines, does not build
    return module


def test_a_compiler_that_fails_is_found_out_before_mypyc_runs(setup_py, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.delenv("PGWARDEN_NO_COMPILE", raising=False)
    monkeypatch.delenv("PGWARDEN_REQUIRE_COMPILE", raising=False)
    problem = setup_py._compiler_problem()
    assert problem is not None and "CompileError" in problem
    monkeypatch.setattr(setup_py, "_compiled_modules", lambda *a: pytest.fail("mypyc's modules were read"))
    assert setup_py._ext_modules() == []
    err = capsys.readouterr().err
    assert "pgwarden: not compiling the hot path (no C compiler works:" in err and "as pure Python" in err


def test_the_compiler_here_passes_the_probe(setup_py, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    assert setup_py._compiler_problem() is None


def test_without_a_compiler_the_image_builder_stops(setup_py, monkeypatch):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("PGWARDEN_REQUIRE_COMPILE", "1")
    with pytest.raises(SystemExit, match="did not compile .no C compiler works"):
        setup_py._ext_modules()


def test_a_build_that_fails_part_way_installs_no_extension(setup_py, tmp_path, monkeypatch, capsys):
    """One extension compiles, the next does not: neither is left, and the build goes on."""
    monkeypatch.delenv("PGWARDEN_REQUIRE_COMPILE", raising=False)
    monkeypatch.chdir(tmp_path)
    Path("good.c").write_text('#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "good"};\n'
                              "PyMODINIT_FUNC PyInit_good(void) { return PyModule_Create(&m); }\n")
    Path("bad.c").write_text("this is not C\n")
    dist = Distribution({"name": "probe", "ext_modules": [Extension("good", ["good.c"]), Extension("bad", ["bad.c"])]})
    command = setup_py.OptionalBuildExt(dist)
    command.build_lib, command.build_temp = "lib", "temp"
    command.ensure_finalized()
    command.run()
    assert command.extensions == []
    assert Path("temp").exists()  # it did compile
    assert not list(Path(".").rglob("*.so"))
    assert "pgwarden: not compiling the hot path (building the extensions failed" in capsys.readouterr().err
    assert sys.modules.get("good") is None


def test_the_metadata_steps_neither_read_the_modules_nor_try_the_compiler(setup_py, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setattr(setup_py, "_compiled_modules", lambda *a: pytest.fail("mypyc's modules were read"))
    for step in ("egg_info", "dist_info"):
        monkeypatch.setattr(sys, "argv", ["setup.py", step, "--egg-base", "x"])
        assert setup_py._ext_modules() == []
    assert capsys.readouterr().err == ""
