"""pgwarden: a PostgreSQL wire-protocol proxy that governs what AI agents may do to a database.

The names a plugin author imports (stable; see docs/plugins.md):
`hookimpl`, `Verdict`, `Statement`, `Identity`, `Session`, `StoreKey`; the whole
typed contract is in `pgwarden.api`.

They are imported on first use (PEP 562): importing one part of pgwarden, the
protocol codec say, must not load pluggy, PyJWT, yaml, cattrs and pglast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgwarden import compiled as _compiled

__version__ = "0.1.0"

# Before any other module of pgwarden is imported: PGWARDEN_PURE_PYTHON=1 runs the compiled
# modules from their .py (pgwarden.compiled).
_compiled.install()

# name -> the module it lives in
_LAZY = {
    "hookimpl": "pgwarden.hookspecs",
    "Identity": "pgwarden.identity",
    "Session": "pgwarden.session",
    "StoreKey": "pgwarden.session",
    "Statement": "pgwarden.sql.statement",
    "Verdict": "pgwarden.verdict",
}

__all__ = ["Identity", "Session", "Statement", "StoreKey", "Verdict", "__version__", "hookimpl"]

if TYPE_CHECKING:
    from pgwarden.hookspecs import hookimpl
    from pgwarden.identity import Identity
    from pgwarden.session import Session, StoreKey
    from pgwarden.sql.statement import Statement
    from pgwarden.verdict import Verdict


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        # An AttributeError, not an ImportError: `from pgwarden import lexical` then
        # imports the submodule, as it would without this hook.
        raise AttributeError(f"module 'pgwarden' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
