"""Code a statement hides from lineage by attaching it to a table, or running it in a block.

Lineage follows what a statement names. A trigger, a rule, a column's DEFAULT or generated
expression, an index expression, a domain's DEFAULT or a row-level policy run later, under
a statement that names none of it (``INSERT INTO notes DEFAULT VALUES`` filling a column
from a function that reads ``users.ssn``), and a DO block or a procedure runs its statements
out of lineage's sight (``DO $$ BEGIN INSERT INTO notes SELECT ssn FROM users; END $$``):
either can copy a masked value where a later read returns it unmasked. In a session with
mask rules, such code is refused when it may read a masked column (docs/masking.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pgwarden.sql.lineage import RUNS_BUILT_SQL, names_revealing
from pgwarden.sql.resolve import SQL_TEXT_FUNCTIONS

# Statements whose expressions are stored on a table, a column or a type and evaluated later.
STORING_CODE = frozenset({"CreateStmt", "AlterTableStmt", "CreateDomainStmt", "AlterDomainStmt", "IndexStmt",
                          "CreatePolicyStmt", "AlterPolicyStmt", "CreateStatsStmt"})
# Statements that attach code that runs as other statements run, whatever the code is.
ATTACHING_CODE = frozenset({"CreateTrigStmt", "RuleStmt", "CreateEventTrigStmt"})
# Nodes of an expression that call a function: by name, an operator's, a conversion's.
_CALLING = frozenset({"FuncCall", "A_Expr", "TypeCast"})
# Statement kinds that run code lineage cannot trace (a DO block, CALL).
RUNNING_CODE = frozenset({"do", "call"})


class _Functions(Protocol):
    def functions_named(self, name: str) -> tuple[object, ...]: ...

    def function(self, oid: int) -> object | None: ...

    def operators_named(self, name: str) -> tuple[object, ...]: ...

    def types_named(self, name: str) -> tuple[object, ...]: ...

    def conversion(self, oid: int, explicit: bool = True) -> tuple[int, ...]: ...


def stored_code(tree: dict[str, object], catalog: _Functions | None) -> str | None:
    """What in ``tree`` (a parse tree) attaches code to a table that may read any table: a
    trigger or a rule, or an expression stored with it that calls a function that is not
    built in (or one that runs SQL text); None when there is none."""
    stmts = tree.get("stmts")
    for raw in stmts if isinstance(stmts, list) else []:
        stmt = raw.get("stmt") if isinstance(raw, dict) else None
        if not isinstance(stmt, dict):
            continue
        kind = next(iter(stmt), "")
        if kind in ATTACHING_CODE:
            return {"CreateTrigStmt": "a trigger", "RuleStmt": "a rule"}.get(kind, "an event trigger")
        if kind == "CreateFunctionStmt" and _replaces_trigger_code(stmt[kind]):
            # a trigger's or an event trigger's function given a new body: the triggers armed over
            # it (the schema's own, on tables without masked columns too) run the new body from
            # now on, under statements that name none of it, as a trigger just made would
            return "a new body for a trigger's function"
        if kind not in STORING_CODE:
            continue
        for node_kind, node in _calls(stmt[kind]):
            parts = node.get("funcname" if node_kind == "FuncCall" else "name")
            if node_kind == "TypeCast":
                type_name = node.get("typeName")
                parts = type_name.get("names") if isinstance(type_name, dict) else None
            names = [str(n.get("String", {}).get("sval", "")) for n in (parts if isinstance(parts, list) else [])
                     if isinstance(n, dict)]
            name = names[-1] if names else ""
            if node_kind == "FuncCall":
                found = catalog.functions_named(name) if catalog is not None else ()
                # a built-in that reveals other sessions' statements (pg_stat_get_backend_activity)
                # stores what they quote where it is read back
                if not found or name in SQL_TEXT_FUNCTIONS or names_revealing((), (name,), catalog) \
                        or any((getattr(f, "extension", None), name) in RUNS_BUILT_SQL for f in found) \
                        or not all(getattr(f, "builtin", False) for f in found):
                    return f"an expression calling {'.'.join(names) or 'a function'}"
            elif catalog is not None:  # an operator's or a cast's function, of the database's own
                if node_kind == "A_Expr":
                    oids = [getattr(op, "function", 0) for op in catalog.operators_named(name)]
                else:
                    oids = [oid for t in catalog.types_named(name) for oid in catalog.conversion(getattr(t, "oid", 0))]
                if any(not getattr(catalog.function(oid), "builtin", False) for oid in oids):
                    what = "operator" if node_kind == "A_Expr" else "conversion to"
                    return f"an expression with the {what} {'.'.join(names)}, a function of the database's own"
    return None


def _replaces_trigger_code(node: dict[str, object]) -> bool:
    """Whether a CREATE FUNCTION is OR REPLACE of a function returning ``trigger`` or
    ``event_trigger`` (only triggers run such functions)."""
    if not node.get("replace"):
        return False
    returns = node.get("returnType")
    parts = returns.get("names") if isinstance(returns, dict) else None
    names = [str(n.get("String", {}).get("sval", "")) for n in (parts if isinstance(parts, list) else [])
             if isinstance(n, dict)]
    return bool(names) and names[-1].lower() in ("trigger", "event_trigger")


def _calls(node: object) -> Iterator[tuple[str, dict[str, object]]]:
    """Every FuncCall, operator (A_Expr) and cast (TypeCast) under ``node``."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _CALLING and isinstance(value, dict):
                    yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
