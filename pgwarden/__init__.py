"""pgwarden: a PostgreSQL wire-protocol proxy that governs what AI agents may do to a database.

The names a plugin author imports (stable; see docs/plugins.md):
`hookimpl`, `Verdict`, `Statement`, `Identity`, `Session`, `StoreKey`.
"""

from pgwarden.hookspecs import hookimpl
from pgwarden.identity import Identity
from pgwarden.session import Session, StoreKey
from pgwarden.sql import Statement
from pgwarden.verdict import Verdict

__version__ = "0.1.0"

__all__ = ["Identity", "Session", "Statement", "StoreKey", "Verdict", "__version__", "hookimpl"]
