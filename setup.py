"""Builds pgwarden's hot path with mypyc and Cython when it can, and installs it as pure Python when not.

Everything else about the package is in setup.cfg. The modules compiled are listed in
pgwarden/compiled.py (read here without importing pgwarden, whose dependencies may not be
installed yet). No C compiler (found out before mypyc reads the modules), mypyc or Cython
missing, or ``PGWARDEN_NO_COMPILE=1``: the build goes on without extensions, silently but for one
line on the build's output, and pgwarden runs the same ``.py`` modules (`pgwarden --version` says
which). A build that fails part way
installs none of the extensions: the mypyc ones are one group and import each other, and a
build is compiled or pure Python, never a mix (Cython's modules go with the group).
``PGWARDEN_REQUIRE_COMPILE=1`` makes any of these fail the build instead (the image's builder).
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


# mypy's view of the code while compiling (what `make lint` checks is pyproject.toml's [tool.mypy]):
# the same whatever else is installed, a venv or pip's isolated build environment. pgwarden's own
# modules are read; installed Python packages (Twisted, pglast, ...) are not, mypyc treats what
# comes from them as plain Python objects; stubs (the standard library's, attrs') are read, so
# mypyc knows the attrs classes' shapes.
MYPYC_CONFIG = """\
[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = skip
[mypy-pgwarden.*]
follow_imports = silent
"""


# The group's C functions call each other directly, not through the library's procedure linkage
# table: a function another library could replace (an exported symbol's default) is called through
# it and is never inlined. Nothing outside the library links to them: its modules find each other's
# init functions through capsules, and Python finds each ``PyInit_`` (always exported:
# PyMODINIT_FUNC says so). docs/performance.md, "The compiled group's calls".
HIDDEN = ["-fvisibility=hidden"]


def _compiled_modules(name: str = "MODULES") -> list[str]:
    tree = ast.parse((HERE / "pgwarden" / "compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"pgwarden/compiled.py: no {name}")


def _path(name: str) -> str:
    return str(Path(*name.split(".")).with_suffix(".py"))


def _skip(why: str) -> list:
    if os.environ.get("PGWARDEN_REQUIRE_COMPILE", "") not in ("", "0"):  # the image's builder
        raise SystemExit(f"pgwarden: the hot path did not compile ({why}) and PGWARDEN_REQUIRE_COMPILE is set")
    print(f"pgwarden: not compiling the hot path ({why}); installing it as pure Python", file=sys.stderr)
    return []


def _compiler_problem() -> str | None:
    """Why the compiler the build would use cannot compile an extension, or None.

    Asked before mypyc reads the modules (most of a build's time before the compiler runs): on a
    machine without a C compiler, the install goes on as pure Python at once."""
    import sysconfig
    from distutils.ccompiler import new_compiler  # setuptools' own, once setuptools is imported
    from distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)  # CC, CFLAGS, ... as the build's own
    with tempfile.TemporaryDirectory() as work:
        probe = Path(work, "pgwarden_probe.c")
        probe.write_text("#include <Python.h>\nint pgwarden_probe(void) { return Py_IsInitialized(); }\n")
        try:
            compiler.compile([str(probe)], output_dir=work, include_dirs=[sysconfig.get_paths()["include"]])
        except Exception as e:  # noqa: BLE001 - CompileError, a compiler that is not there
            return f"{type(e).__name__}: {e}"
    return None


# What pip's build backend also runs this file for, before the build: the build's requirements
# (egg_info) and the package's metadata (dist_info). Neither builds an extension: they neither
# ask mypyc (which reads every compiled module: tens of seconds each time) nor try the compiler
# (whose note would be printed once a step).
METADATA_ONLY = frozenset({"egg_info", "dist_info"})


def _ext_modules() -> list:
    if METADATA_ONLY.intersection(sys.argv[1:]):
        return []
    if os.environ.get("PGWARDEN_NO_COMPILE", "") not in ("", "0"):
        return _skip("PGWARDEN_NO_COMPILE is set")
    problem = _compiler_problem()
    if problem is not None:
        return _skip(f"no C compiler works: {problem}")
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        return _skip(f"mypyc cannot be imported: {e}")
    try:
        from Cython.Build import cythonize
    except ImportError as e:
        return _skip(f"Cython cannot be imported: {e}")
    paths = [_path(name) for name in _compiled_modules()]
    try:
        with tempfile.TemporaryDirectory() as work:
            config = Path(work, "mypy.ini")
            config.write_text(MYPYC_CONFIG)
            extensions = mypycify(["--config-file", str(config), *paths], opt_level="3", group_name="pgwarden_hot")
    except BaseException as e:  # noqa: BLE001 - mypyc reports a type error by SystemExit
        return _skip(f"mypyc failed: {e!r}")
    if os.name == "posix":  # gcc and clang
        for extension in extensions:
            extension.extra_compile_args = [*extension.extra_compile_args, *HIDDEN]
    try:  # each its own extension, named as its module (Cython's pure-Python mode: the .py itself)
        extensions += cythonize([Extension(name, [_path(name)]) for name in _compiled_modules("CYTHON_MODULES")],
                                compiler_directives={"language_level": "3"}, build_dir="build/cython", quiet=True)
    except BaseException as e:  # noqa: BLE001 - Cython reports a compile error by SystemExit too
        return _skip(f"Cython failed: {e!r}")
    return extensions


class OptionalBuildExt(build_ext):
    """Builds the extensions, or none of them when one fails (no compiler, a compiler error)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure to build falls back to pure Python
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _skip(f"building the extensions failed: {e}")
            self.extensions = []


if __name__ == "__main__":  # pip's build backend runs this file as __main__ too; tests import it
    setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
