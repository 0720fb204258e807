"""Which of pgwarden's modules run compiled (mypyc, Cython), and the switch that runs them as Python.

The modules in `MODULES` are on the per-message and per-statement path. ``pip install``
compiles them with mypyc when it can (setup.py, which reads `MODULES` from this file), and
those of `CYTHON_MODULES` with Cython (their pure-Python mode: what they do with C's own calls),
and puts each extension beside its ``.py``, where the import system prefers the extension. The
``.py`` stays the source of truth: the extension is built from it and must behave the same,
which is why the whole suite runs against both (`make test`).

``PGWARDEN_PURE_PYTHON=1`` makes pgwarden import the ``.py`` of each of them instead: a finder
placed first on `sys.meta_path` when the ``pgwarden`` package is imported (before any of its
modules can be), which every process inherits with the environment: the pgwardens the tests
start, a benchmark's A/B pair. Nothing of the compiled set is then loaded, so the two can
never mix within a process.

This module is plain Python and never compiled: setup.py reads it, and the package's
``__init__`` imports it before anything else.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: compiled together by mypyc, one group: calls between them stay native. The recorder and the
#: chain build and seal every record (docs/performance.md, "recording's CPU per statement").
#: Not `pgwarden.wire.messages`: its attrs classes hold class constants (``TYPE``) that mypyc
#: would hand to attrs as fields (docs/performance.md, "The compiled path").
MODULES: tuple[str, ...] = (
    "pgwarden.wire.framing",
    "pgwarden.wire.reader",
    "pgwarden.relay.counting",
    "pgwarden.relay.engine",
    "pgwarden.relay.execution",
    "pgwarden.relay.refusal",
    "pgwarden.relay.rows",
    "pgwarden.mask_rows",
    "pgwarden.proxy.loop",
    "pgwarden.proxy.state",
    "pgwarden.proxy.pump",
    "pgwarden.turns",
    "pgwarden.recorder",
    "pgwarden.chain",
    "pgwarden.sql.template",
    "pgwarden.sql.statement",
    "pgwarden.decisions",
    "pgwarden.sql.cache",
    "pgwarden.plugin_call",
    "pgwarden.counters",
    "pgwarden.completion",
    "pgwarden.traffic",
)

#: compiled by Cython, each on its own: what mypyc cannot do, calls into C without a Python object
#: between (`pgwarden.rawio`: read(2) and write(2) without the GIL's release). Built with the
#: mypyc group or not at all (setup.py): a build is compiled or pure Python, never a mix.
CYTHON_MODULES: tuple[str, ...] = (
    "pgwarden.rawio",
    "pgwarden.wire.scanning",
    "pgwarden.sealing",
    "pgwarden.stamp",
)

PURE_ENV = "PGWARDEN_PURE_PYTHON"
COMPILED = "compiled (mypyc, Cython)"
PURE = "pure Python"


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


class SourceOnly(importlib.abc.MetaPathFinder):
    """Finds the modules of `MODULES` as their ``.py`` files, never as the extension beside them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names or not path:
            return None
        for entry in path:
            finder = importlib.machinery.FileFinder(
                entry, (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES))
            spec = finder.find_spec(fullname, target)
            if spec is not None:
                return spec
        return None  # no .py (a wheel without sources?): the import fails rather than run compiled


def install() -> None:
    """Runs the `MODULES` as Python when ``PGWARDEN_PURE_PYTHON`` asks; once per process."""
    if pure_requested() and not any(isinstance(f, SourceOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnly(MODULES + CYTHON_MODULES))


def is_compiled(module: ModuleType) -> bool:
    return (getattr(module, "__file__", None) or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def modules() -> dict[str, bool]:
    """Each module of the compiled set, and whether it runs compiled in this process."""
    return {name: is_compiled(importlib.import_module(name)) for name in MODULES + CYTHON_MODULES}


def build() -> str:
    """What runs: `COMPILED`, "pure Python", or which part is compiled (a broken build)."""
    found = modules()
    if all(found.values()):
        return COMPILED
    if not any(found.values()):
        return PURE
    return "partly compiled: " + ", ".join(name for name, compiled in found.items() if compiled)
