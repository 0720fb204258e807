"""`Statement`: one SQL string as plugins see it.

Provisional: ``kinds`` here come from the top-level node of each statement in
the parse tree (pglast, the real PostgreSQL parser), so a multi-statement string
has the kinds of all its statements and a string that does not parse is
``unknown``. The full analysis (writes hidden in CTEs, EXPLAIN ANALYZE,
functions, tables, ``has_where``) fills in the remaining attributes.
"""

from __future__ import annotations

from functools import cached_property

# Top-level parse node -> statement kind (DESIGN.md §3). Anything else: "other".
_KINDS = {
    "SelectStmt": "select",
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "TruncateStmt": "truncate",
    "GrantStmt": "grant",
    "GrantRoleStmt": "grant",
    "CreateRoleStmt": "role",
    "AlterRoleStmt": "role",
    "DropRoleStmt": "role",
    "AlterSystemStmt": "system",
    "DoStmt": "do",
    "CallStmt": "call",
    "LockStmt": "lock",
    "VacuumStmt": "maintenance",
    "ReindexStmt": "maintenance",
    "ClusterStmt": "maintenance",
    "PrepareStmt": "prepare",
    "ExecuteStmt": "execute",
    "ExplainStmt": "explain",
    "TransactionStmt": "transaction",
    "VariableSetStmt": "set",
    "VariableShowStmt": "show",
    "ListenStmt": "listen",
    "NotifyStmt": "listen",
    "UnlistenStmt": "listen",
    "DeclareCursorStmt": "cursor",
    "FetchStmt": "cursor",
    "ClosePortalStmt": "cursor",
}


def _kind_of(node_name: str) -> str:
    if node_name in _KINDS:
        return _KINDS[node_name]
    if node_name.startswith(("Create", "Alter", "Drop", "Rename", "Comment")) or node_name in (
        "IndexStmt",
        "ViewStmt",
        "RuleStmt",
    ):
        return "ddl"
    return "other"


class Statement:
    """One SQL string, analysed once and shared by every plugin."""

    __slots__ = ("sql", "__dict__")

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"

    @cached_property
    def kinds(self) -> frozenset[str]:
        """The classes of the statements in this string (select, insert, ddl, ...)."""
        import pglast
        from pglast.parser import ParseError

        try:
            tree = pglast.parse_sql(self.sql)
        except ParseError:
            return frozenset({"unknown"})
        if not tree:
            return frozenset({"empty"})
        return frozenset(_kind_of(type(raw.stmt).__name__) for raw in tree)

    @cached_property
    def fingerprint(self) -> str | None:
        """libpg_query's fingerprint: the same for statements that differ only in constants."""
        from pglast.parser import ParseError, fingerprint

        try:
            return fingerprint(self.sql)
        except ParseError:
            return None

    # Filled in by the full analysis; empty until then.
    tables: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    has_where: bool | None = None


def analyze(sql: str) -> Statement:
    return Statement(sql)
