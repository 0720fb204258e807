"""What the server's catalog says about functions, settings, relations, operators, types and casts.

One component shared by the analysis, masking and approval (docs/catalog.md): a
`Catalog` is an immutable set of facts, from the live server (`live`) or from the
snapshot of a PostgreSQL release's built-in catalog shipped with pgwarden
(`snapshot`), so `pgwarden explain` works without a database and decisions go on
(failing closed for what only the live catalog could tell) while it is unreachable.
"""

from pgwarden.catalog.model import (
    CastFacts,
    Catalog,
    ColumnFacts,
    FunctionFacts,
    OperatorFacts,
    RelationFacts,
    TypeFacts,
)

__all__ = ["Catalog", "CastFacts", "ColumnFacts", "FunctionFacts", "OperatorFacts", "RelationFacts", "TypeFacts"]


_builtin: Catalog | None = None


def builtin_catalog() -> Catalog:
    """The shipped snapshot of the built-in catalog (loaded once)."""
    global _builtin
    if _builtin is None:
        try:
            from pgwarden.catalog.snapshot import load_snapshot
        except ImportError:  # pragma: no cover - until a snapshot ships
            _builtin = Catalog(source="empty")
        else:
            _builtin = load_snapshot()
    return _builtin
