"""What one SQL string does, read from the parse tree PostgreSQL itself would build.

pglast's ``parse_sql_json`` (libpg_query) gives the tree as JSON in a few
microseconds, where building pglast's Python AST objects costs about twenty
times more; the tree is walked as plain dicts and lists. Nothing here looks at
the SQL text itself: comments, quoting, case, dollar quoting and Unicode escapes
are the parser's business.

The walk sees every statement of a multi-statement string and every nested
statement: writes inside CTEs and sub-selects, EXPLAIN ANALYZE (which executes),
PREPARE bodies, COPY (query), SELECT INTO / CREATE TABLE AS, and SQL handed as a
string literal to functions that execute it (parsed in turn).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import attrs
from pglast.parser import ParseError, parse_sql_json

_TOP_KINDS = {
    "SelectStmt": "select",
    "InsertStmt": "insert",
    "UpdateStmt": "update",
    "DeleteStmt": "delete",
    "MergeStmt": "merge",
    "TruncateStmt": "truncate",
    "GrantStmt": "grant",
    "GrantRoleStmt": "grant",
    "AlterDefaultPrivilegesStmt": "grant",
    "CreateRoleStmt": "role",
    "AlterRoleStmt": "role",
    "AlterRoleSetStmt": "role",
    "DropRoleStmt": "role",
    "ReassignOwnedStmt": "role",
    "AlterSystemStmt": "system",
    "LoadStmt": "system",
    "CheckPointStmt": "system",
    "DoStmt": "do",
    "CallStmt": "call",
    "LockStmt": "lock",
    "VacuumStmt": "maintenance",
    "ReindexStmt": "maintenance",
    "ClusterStmt": "maintenance",
    "PrepareStmt": "prepare",
    "ExecuteStmt": "execute",
    "DeallocateStmt": "prepare",
    "ExplainStmt": "explain",
    "TransactionStmt": "transaction",
    "VariableSetStmt": "set",
    "VariableShowStmt": "show",
    "ListenStmt": "listen",
    "UnlistenStmt": "listen",
    "NotifyStmt": "listen",
    "DeclareCursorStmt": "cursor",
    "FetchStmt": "cursor",
    "ClosePortalStmt": "cursor",
    "DiscardStmt": "set",
}
_WRITES = {"InsertStmt": "insert", "UpdateStmt": "update", "DeleteStmt": "delete", "MergeStmt": "merge"}
# Settings only a superuser or a replication tool should touch.
SYSTEM_SETTINGS = frozenset(
    {
        "session_replication_role", "allow_system_table_mods", "ignore_system_indexes",
        "zero_damaged_pages", "ignore_checksum_failure", "log_statement", "log_min_duration_statement",
        "pgaudit.log", "default_transaction_read_only", "transaction_read_only",
    }
)
ROLE_SETTINGS = frozenset({"role", "session_authorization"})
SYSTEM_FUNCTIONS = frozenset(
    {
        "pg_reload_conf", "pg_terminate_backend", "pg_cancel_backend", "pg_rotate_logfile",
        "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_drop_replication_slot",
        "pg_create_logical_replication_slot", "pg_create_physical_replication_slot",
    }
)
# Functions that run the SQL they are given as text: the literal is analysed too.
SQL_STRING_FUNCTIONS = {
    "query_to_xml": 0,
    "query_to_xml_and_xmlschema": 0,
    "query_to_xmlschema": 0,
    "cursor_to_xml": None,
    "dblink": -1,  # dblink(conn, sql) or dblink(sql): the last argument
    "dblink_exec": -1,
    "dblink_send_query": -1,
    "dblink_open": -1,
}
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Comment", "Security", "Import", "Refresh")


@attrs.frozen
class Analysis:
    kinds: frozenset[str]
    tables: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    has_where: bool | None = None  # for UPDATE/DELETE: a WHERE that can be false; None otherwise
    prepares: tuple[tuple[str, Analysis], ...] = ()  # SQL-level PREPAREs: (name, what the body does)
    executes: tuple[str, ...] = ()  # names of prepared statements EXECUTEd
    # True when no constant's value mattered: then every statement with the same
    # fingerprint (libpg_query's, which ignores constants) has this same analysis.
    # set_config('role', ...) and set_config('work_mem', ...) share a fingerprint.
    constant_free: bool = True
    # Run-time settings the string changes: (name in lower case, the literal value as the
    # server receives it, or None for RESET / DEFAULT / a value computed at run time).
    # The name is "*" when it is not known before the statement runs (set_config with a
    # computed name, RESET ALL, DISCARD ALL).
    settings: tuple[tuple[str, str | None], ...] = ()
    # True when the string asks for a read-write transaction (BEGIN / START TRANSACTION /
    # SET TRANSACTION / SET SESSION CHARACTERISTICS ... READ WRITE).
    read_write: bool = False


def analyze_sql(sql: str) -> Analysis:
    try:
        tree = json.loads(parse_sql_json(sql))
    except ParseError:
        return Analysis(frozenset({"unknown"}))
    walker = _Walker()
    for raw in tree.get("stmts", []):
        walker.statement(raw.get("stmt", {}))
    if not tree.get("stmts"):
        return Analysis(frozenset())
    return walker.result()


def _node(obj: Any) -> tuple[str, dict] | None:
    """('SelectStmt', fields) for a wrapped node, else None."""
    if isinstance(obj, dict) and len(obj) == 1:
        (name, fields), = obj.items()
        if name[:1].isupper() and isinstance(fields, dict):
            return name, fields
    return None


def _string(obj: Any) -> str | None:
    """The text of a String node or of a string A_Const."""
    n = _node(obj)
    if n is None:
        return None
    name, fields = n
    if name == "String":
        return fields.get("sval", "")
    if name == "A_Const" and "sval" in fields:
        return fields["sval"].get("sval", "")
    return None


# Settings whose list elements the server keeps quoted as identifiers (GUC_LIST_QUOTE).
_LIST_QUOTE_SETTINGS = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries",
                                  "shared_preload_libraries", "local_preload_libraries"})


def _const_text(obj: Any) -> str | None:
    """The text of a constant as the server's SET receives it; None for anything else."""
    n = _node(obj)
    if n is None:
        return None
    name, f = n
    if name == "TypeCast":  # SET x = interval '1 day' and the like
        return _const_text(f.get("arg"))
    if name != "A_Const" or f.get("isnull"):
        return None
    for key in ("sval", "ival", "fval", "boolval", "bsval"):
        if key in f:
            inner = f[key]
            value = inner.get(key, 0 if key == "ival" else False if key == "boolval" else "")
            if key == "boolval":
                return "on" if value else "off"
            return str(value)
    return None


def _qualified(fields: dict) -> str:
    schema = fields.get("schemaname") or "public"
    return f"{schema}.{fields.get('relname', '')}"


def _constant_true(obj: Any, looked: list | None = None) -> bool:
    """A WHERE that is true for every row: true, 1 = 1, 'a' = 'a', x OR true, true AND true.

    ``looked`` gets an entry whenever the answer depended on a constant's value.
    """
    n = _node(obj)
    if n is None:
        return False
    name, f = n
    if name == "A_Const":
        if looked is not None:
            looked.append(name)
        if "boolval" in f:
            return bool(f["boolval"].get("boolval", False))
        return False
    if name == "TypeCast":
        return _constant_true(f.get("arg"), looked)
    if name == "BoolExpr":
        args = f.get("args", [])
        op = f.get("boolop")
        if op == "OR_EXPR":
            return any([_constant_true(a, looked) for a in args])
        if op == "AND_EXPR":
            return all([_constant_true(a, looked) for a in args])
        return False
    if name == "A_Expr" and f.get("kind") == "AEXPR_OP":
        ops = [_string(o) for o in f.get("name", [])]
        left, right = _node(f.get("lexpr")), _node(f.get("rexpr"))
        if ops == ["="] and left and right and left[0] == right[0] == "A_Const":
            if looked is not None:
                looked.append(name)
            return left[1].keys() - {"location"} == right[1].keys() - {"location"} and all(
                left[1][k] == right[1][k] for k in left[1] if k != "location"
            )
    return False


class _Walker:
    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.tables: set[str] = set()
        self.writes: set[str] = set()
        self.functions: set[str] = set()
        self.ctes: set[str] = set()
        self.where: list[bool] = []
        self.prepares: list[tuple[str, Analysis]] = []
        self.executes: list[str] = []
        self.constants_looked: list = []
        self.settings: list[tuple[str, str | None]] = []
        self.read_write = False

    def result(self) -> Analysis:
        return Analysis(
            frozenset(self.kinds),
            frozenset(t for t in self.tables if t.split(".", 1)[1] not in self.ctes or not t.startswith("public.")),
            frozenset(self.writes),
            frozenset(self.functions),
            all(self.where) if self.where else None,
            tuple(self.prepares),
            tuple(self.executes),
            not self.constants_looked,
            tuple(self.settings),
            self.read_write,
        )

    def statement(self, stmt: Any) -> None:
        """A top-level (or executed nested) statement."""
        n = _node(stmt)
        if n is None:
            return
        name, f = n
        self.kinds.add(self._kind(name, f))
        if name == "ExplainStmt":
            analyze = any(
                (_node(o) or ("", {}))[1].get("defname") == "analyze" for o in f.get("options", [])
            )
            if analyze:  # EXPLAIN ANALYZE executes its statement
                self.statement(f.get("query"))
            else:
                self._collect(f.get("query"), reads_only=True)
            return
        if name == "PrepareStmt":
            inner = _Walker()
            inner.statement(f.get("query"))
            self.prepares.append((f.get("name", ""), inner.result()))
            self._merge(inner)
            return
        if name == "ExecuteStmt":
            self.executes.append(f.get("name", ""))
        if name in ("VariableSetStmt", "TransactionStmt", "DiscardStmt"):
            self._settings(name, f)
        self._collect(stmt)

    def _settings(self, name: str, f: dict) -> None:
        """What a SET, RESET, DISCARD or transaction statement does to run-time settings."""
        for option in f.get("options", []) + (f.get("args", []) if f.get("kind") == "VAR_SET_MULTI" else []):
            o = _node(option)
            if o and o[0] == "DefElem" and o[1].get("defname") == "transaction_read_only":
                value = (_node(o[1].get("arg")) or ("", {}))[1]
                if "ival" in value and not value["ival"].get("ival"):
                    self.read_write = True
        if name == "DiscardStmt":
            if f.get("target") == "DISCARD_ALL":
                self.settings.append(("*", None))
            return
        if name != "VariableSetStmt":
            return
        kind = f.get("kind")
        if kind == "VAR_RESET_ALL":
            self.settings.append(("*", None))
        elif kind in ("VAR_SET_VALUE", "VAR_SET_DEFAULT", "VAR_RESET", "VAR_SET_CURRENT"):
            value = None
            if kind == "VAR_SET_VALUE":
                self.constants_looked.append(name)
                setting = (f.get("name") or "").lower()
                parts = [_const_text(arg) for arg in f.get("args", [])]
                if setting in _LIST_QUOTE_SETTINGS:  # as the server flattens them: identifiers quoted
                    parts = [p if p is None or p.isidentifier() and p == p.lower() else '"' + p.replace('"', '""') + '"'
                             for p in parts]
                value = None if None in parts else ", ".join(parts)
            self.settings.append(((f.get("name") or "").lower(), value))

    def _merge(self, other: _Walker) -> None:
        self.kinds |= other.kinds
        self.tables |= other.tables
        self.writes |= other.writes
        self.functions |= other.functions
        self.ctes |= other.ctes
        self.where += other.where
        self.constants_looked += other.constants_looked
        self.settings += other.settings
        self.read_write = self.read_write or other.read_write

    def _kind(self, name: str, f: dict) -> str:
        if name == "CopyStmt":
            if f.get("is_program"):
                return "copy_program"
            if f.get("filename"):
                return "copy_file"
            return "copy_from" if f.get("is_from") else "copy_to"
        if name == "VariableSetStmt":
            setting = (f.get("name") or "").lower()
            if setting in ROLE_SETTINGS:
                return "role"
            if setting in SYSTEM_SETTINGS:
                return "system"
            return "set"
        if name == "SelectStmt" and f.get("intoClause"):
            return "ddl"  # SELECT INTO creates a table
        if name in _TOP_KINDS:
            return _TOP_KINDS[name]
        if name.startswith(_DDL_PREFIXES) or name in ("IndexStmt", "ViewStmt", "RuleStmt", "CreateTableAsStmt",
                                                      "CreateTrigStmt", "CreateFunctionStmt", "DefineStmt"):
            return "ddl"
        return "unknown"

    def _collect(self, obj: Any, reads_only: bool = False) -> None:
        """Everything below ``obj``: tables, functions, nested writes."""
        for name, f in _nodes(obj):
            if name in _WRITES and not reads_only:
                self.kinds.add(_WRITES[name])
                rel = f.get("relation")
                if isinstance(rel, dict):
                    self.writes.add(_qualified(rel))
                if name in ("UpdateStmt", "DeleteStmt"):
                    w = f.get("whereClause")
                    self.where.append(w is not None and not _constant_true(w, self.constants_looked))
            elif name == "CommonTableExpr":
                self.ctes.add(f.get("ctename", ""))
            elif name == "RangeVar" or ("relname" in f and name in ("relation", "rel")):
                self.tables.add(_qualified(f))
            elif name == "TruncateStmt":
                for rel in f.get("relations", []):
                    rn = _node(rel)
                    if rn:
                        self.writes.add(_qualified(rn[1]))
            elif name == "CopyStmt" and f.get("is_from") and isinstance(f.get("relation"), dict):
                self.writes.add(_qualified(f["relation"]))
            elif name == "IntoClause":
                rel = f.get("rel")
                if isinstance(rel, dict):
                    self.writes.add(_qualified(rel))
            elif name == "FuncCall":
                self._function(f)
            elif name == "VariableSetStmt":
                self.kinds.add(self._kind(name, f))

    def _function(self, f: dict) -> None:
        parts = [_string(p) or "" for p in f.get("funcname", [])]
        fname = parts[-1].lower() if parts else ""
        self.functions.add(fname)
        args = f.get("args", [])
        if fname in SYSTEM_FUNCTIONS:
            self.kinds.add("system")
        if fname == "set_config" and args:
            self.constants_looked.append(fname)
            setting = (_string(args[0]) or "").lower()
            value = _string(args[1]) if len(args) > 1 else None
            self.settings.append((setting or "*", value))
            if setting in ROLE_SETTINGS:
                self.kinds.add("role")
            elif setting in SYSTEM_SETTINGS:
                self.kinds.add("system")
            elif _string(args[0]) is None:
                self.kinds.add("role")  # a setting chosen at run time: assume the worst
        if fname in SQL_STRING_FUNCTIONS and args:
            self.constants_looked.append(fname)
            index = SQL_STRING_FUNCTIONS[fname]
            literal = _string(args[index]) if index is not None else None
            if literal is not None:
                inner = analyze_sql(literal)
                self.kinds |= inner.kinds
                self.tables |= inner.tables
                self.writes |= inner.writes
                self.functions |= inner.functions
                if inner.has_where is not None:
                    self.where.append(inner.has_where)
            elif index is not None:
                self.kinds.add("unknown")  # SQL built at run time cannot be checked


def _nodes(obj: Any) -> Iterator[tuple[str, dict]]:
    """Every node below ``obj``, wrapped ({'RangeVar': {...}}) or in a typed field (relation: {...})."""
    stack = [("", obj)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            n = _node(item)
            if n is not None:
                yield n
                stack.append(("", n[1]))
                continue
            if key in ("relation", "rel") and "relname" in item:
                yield key, item
            elif key in ("intoClause", "into") and "rel" in item:
                yield "IntoClause", item
            for k, v in item.items():
                if isinstance(v, (dict, list)):
                    stack.append((k, v))
        elif isinstance(item, list):
            for v in item:
                stack.append(("", v))
