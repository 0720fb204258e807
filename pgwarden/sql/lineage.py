"""Lineage: which base columns each output of a statement comes from, and where columns are used
in ways that reveal their values without returning them (oracles).

Masking needs to know, for every column of a result, whether it *is* a masked column's value
(the rule's strategy applies), is *derived* from one (it is masked whole), or cannot be traced
(it is masked whole, or refused, whenever a masked column could be involved). Names cannot tell:
an alias, a view, a sub-select, ``row_to_json(u)`` or a set-returning function all hide them. So
the outputs are traced through the parse tree the way the server resolves names: scopes of
FROM items (joins with USING, LATERAL, correlated sub-queries), CTEs (recursive ones to a fixed
point), set operations column by column, views and materialized views through their stored
definitions, SQL functions through their bodies, and everything else by its declared type or as
opaque. A value passed through any expression, cast or function is derived from every column the
expression mentions; a whole-row reference is derived from every column of the row.

What this does not know it says (`Output.opaque`, `Lineage.opaque`, ``reads = None``): an unknown
node, a function whose body cannot be read, a relation whose columns are not in the catalog.
It never raises on odd input; the caller fails closed on what is opaque.

Pure: no Twisted, no I/O. The catalog facts come from the `SqlContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import attrs
from pglast.parser import ParseError

from pgwarden.catalog.model import FIRST_NORMAL_OID, Catalog, FunctionFacts, RelationFacts, TypeFacts
from pgwarden.sql.analysis import NAMING_KINDS as _NAMING_KINDS
from pgwarden.sql.analysis import STATISTICS_RELATIONS
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lexer import deep, parse_tree
from pgwarden.sql.syntax import SYSTEM_COLUMNS as _ALL_SYSTEM_COLUMNS


@attrs.frozen
class Source:
    """A base table's column (views resolved to the tables they read)."""

    schema: str
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@attrs.frozen
class Output:
    """One column of the result, in RowDescription order."""

    name: str  # as the server names it in RowDescription
    sources: frozenset[Source]  # every base column its value depends on
    # Each value IS one source's value, unchanged (an alias, quoting, *, t.*, a sub-select, a CTE,
    # a view, a UNION of such references: then a value is one of the ``sources``' values).
    direct: bool
    # Lineage could not be established: any column of the statement's ``reads`` (all columns of
    # the tables it touches when ``reads`` is None) may be involved. Fail closed.
    opaque: bool = False


#: The source of an oracle over a value whose columns pgwarden cannot trace (a table read by
#: name, as ``table_to_xml('users', ...)`` does; a relation or function of unknown columns): it
#: may hold any column the statement reads, every column when those are not known either.
UNTRACED = Source("?", "?", "?")


@attrs.frozen
class OracleUse:
    """A use of a column that can reveal its values without returning them."""

    source: Source
    # WHERE, JOIN, ORDER BY, GROUP BY, DISTINCT, HAVING, window, aggregate, FILTER, LIMIT, CASE,
    # rows (the arguments of a set-returning function: how many rows it returns), policy (a
    # row-level security policy's condition on a table the statement reads or writes),
    # write (a value copied into a table by INSERT/UPDATE/MERGE/SELECT INTO, readable later),
    # EXECUTE (an SQL EXECUTE's argument computed from a column: the body may test it anywhere).
    # "aggregate" and "CASE" uses reveal only through the value they make, which carries the
    # source (an output derived from it, or another clause listed for it): a plugin may let them be.
    clause: str


@attrs.frozen
class Lineage:
    """What one statement returns and reads."""

    outputs: tuple[Output, ...] | None  # None: the statement returns no rows
    reads: frozenset[Source] | None  # every base column read anywhere; None: unknown (all of the tables)
    oracles: tuple[OracleUse, ...] = ()
    # The outputs could not all be established, nor perhaps their number (``*`` over a relation
    # whose columns are unknown, FETCH of a cursor never declared, CALL, a statement not known to
    # return nothing): treat every column of the result as opaque.
    opaque: bool = False
    # SQL-level names this statement defines: ("prepared" | "cursor", name, the body's lineage).
    defines: tuple[tuple[str, str, Lineage], ...] = ()
    # SQL-level names this statement removes: ("prepared" | "cursor", name, or "*" for all).
    forgets: tuple[tuple[str, str], ...] = ()
    # ("prepared", name) for EXECUTE, ("cursor", name) for FETCH: the rows are that body's;
    # `NamedLineage.resolve` gives this statement's lineage in the session.
    refers: tuple[str, str] | None = None
    # DECLARE ... WITH HOLD inside a transaction: the server runs the cursor's query to its end
    # when the transaction commits, so what it raises is the answer of the COMMIT.
    holds: bool = False
    # It reaches an IMMUTABLE function of the database's own (named, an operator's, a view's): the
    # planner folds a call of one into a constant an EXPLAIN prints. ``folded``: what such
    # functions read (None: unknown).
    own_code: bool = False
    folded: frozenset[Source] | None = frozenset()


def lineage_json(lineage: Lineage) -> dict[str, object]:
    """A lineage as JSON values (for `pgwarden explain --json` and records): sources as
    schema.table.column, each output's kind as direct / derived / opaque."""
    return {
        "outputs": None if lineage.outputs is None else [
            {"name": o.name, "sources": sorted(map(str, o.sources)),
             "lineage": "opaque" if o.opaque else "direct" if o.direct else "derived"}
            for o in lineage.outputs],
        "reads": None if lineage.reads is None else sorted(map(str, lineage.reads)),
        "oracles": [{"source": str(o.source), "clause": o.clause} for o in lineage.oracles],
        "opaque": lineage.opaque,
        "refers": None if lineage.refers is None else f"{lineage.refers[0]} {lineage.refers[1]}",
    }


# Where the server shows values of *other* columns than the ones a statement names: the planner's
# statistics (most common values, histogram bounds: of any column, a masked one included, named
# by the row's schemaname/tablename/attname, not by lineage) and the text of statements (this or
# other sessions': ``UPDATE users SET ssn = '...'`` holds the value). An output traced to one of
# these may hold any column's value: a masking plugin treats it as derived from every masked
# column (`reveals_values`).
_REVEALING_COLUMNS = frozenset(
    [f"pg_catalog.pg_statistic.stavalues{i}" for i in range(1, 6)]
    # ... and the numbers computed from the values: a correlation says how a value sorts against
    # the others, n_distinct whether two are equal (rows the agent wrote, then ANALYZE)
    + [f"pg_catalog.pg_statistic.stanumbers{i}" for i in range(1, 6)] + ["pg_catalog.pg_statistic.stadistinct"]
    + ["pg_catalog.pg_statistic_ext_data.stxdmcv", "pg_catalog.pg_statistic_ext_data.stxdexpr",
       "pg_catalog.pg_statistic_ext_data.stxdndistinct", "pg_catalog.pg_statistic_ext_data.stxddependencies"])
# Built-in functions (an extension's too) whose results hold such values: the result columns that
# do (empty: the whole result). Their outputs are traced to Source("pg_catalog", function, column).
_REVEALING_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "pg_stat_get_activity": ("query",),  # pg_stat_activity.query
    "pg_stat_get_backend_activity": (),
    "pg_prepared_statement": ("statement",),  # pg_prepared_statements.statement
    "pg_cursor": ("statement",),  # pg_cursors.statement
    "pg_stat_statements": ("query",),  # the extension's view pg_stat_statements.query
    # logical decoding: the change stream of every table (test_decoding prints each written row's
    # columns, `ssn[text]:'812-57-3964'`), what the output plugin makes of it (red team eight)
    "pg_logical_slot_get_changes": (),
    "pg_logical_slot_peek_changes": (),
    "pg_logical_slot_get_binary_changes": (),
    "pg_logical_slot_peek_binary_changes": (),
    # the server's files (under a role that may read them): a table's data files
    # (pg_relation_filepath), the WAL, the server's log, which quotes the values of failed
    # statements whose messages pgwarden withheld (red team nine)
    "pg_read_file": (),
    "pg_read_binary_file": (),
    "pg_file_read": (),  # adminpack's
}
# Extensions every function of which may return stored rows by another path than their tables:
# raw pages and their tuples (pageinspect: get_raw_page, heap_page_items, tuple_data_split,
# bt_page_items, ...), WAL records' block images and data (pg_walinspect: pg_get_wal_block_info).
# Known from the catalog (`FunctionFacts.extension`), whatever the functions' names or schema; an
# output of one is traced to Source("pg_catalog", "<extension>:<function>", column).
_REVEALING_EXTENSIONS = frozenset({"pageinspect", "pg_walinspect"})
# A foreign table's columns (relkind 'f'): another server's values, which may be this database's
# own masked ones; traced to Source("pg_catalog", "foreign:<table>", column) besides their own.
FOREIGN = "foreign"


def revealing_function(fn: FunctionFacts) -> tuple[str, tuple[str, ...]] | None:
    """Whether ``fn`` returns values of any column (`reveals_values`): the name its outputs are
    traced to (``Source("pg_catalog", name, column)``) and its result columns that do (empty: the
    whole result); None when it does not."""
    if fn.extension in _REVEALING_EXTENSIONS:
        return f"{fn.extension}:{fn.name}", ()
    if fn.builtin and fn.name in _REVEALING_FUNCTIONS:
        return fn.name, _REVEALING_FUNCTIONS[fn.name]
    return None


def _fields(obj: Any) -> Any:
    """The fields of a wrapped node; anything else as it is."""
    node = _node(obj)
    return node[1] if node else obj


def _search_cycle_columns(cte: dict, columns: Columns) -> Columns:
    """The columns SEARCH and CYCLE add to a recursive CTE, after its own: the sequence column
    (records of the BY columns' values), the cycle mark (whether they repeat) and the path
    (records of the cycle columns' values), each derived from those columns (an outer column of
    the same name had taken ``ord`` in ``SELECT ord::text FROM r``, the SSNs' array)."""
    added: Columns = []
    for clause, listed, made in (("search_clause", "search_col_list", ("search_seq_column",)),
                                 ("cycle_clause", "cycle_col_list", ("cycle_mark_column", "cycle_path_column"))):
        fields = _fields(cte.get(clause)) if cte.get(clause) else None
        if not isinstance(fields, dict):
            continue
        names = set(_names(fields.get(listed)))
        found = [v for n, v in columns if n in names]
        v = _union(found) if found and len(found) >= len(names) else _OPAQUE
        for key in made:
            if fields.get(key):
                added.append((fields[key], _Val(v.sources, False, v.opaque)))
    return added


def _explain_runs(f: dict) -> bool:
    """Whether an EXPLAIN runs its statement (its last ANALYZE option decides, as on the server)."""
    runs = False
    for option in f.get("options") or ():
        o = _fields(option)
        if not isinstance(o, dict) or o.get("defname") != "analyze":
            continue
        arg = _fields(o.get("arg"))
        if arg is None:
            runs = True
        elif isinstance(arg, dict) and "boolval" in arg:
            runs = bool(arg.get("boolval"))
        elif isinstance(arg, dict) and "sval" in arg:
            runs = str(arg["sval"]).lower() not in ("false", "off", "no", "0", "f", "n", "of")
        elif isinstance(arg, dict) and "ival" in arg:
            runs = bool(arg.get("ival"))
        else:
            runs = True
    return runs


def reveals_values(source: str) -> bool:
    """Whether ``source`` (``schema.table.column``, as `Source` prints it) may hold the value of
    any column of the database: statistics' values, statements' text (see `_REVEALING_COLUMNS`)."""
    if source in _REVEALING_COLUMNS:
        return True
    schema, _, rest = source.partition(".")
    table = rest.partition(".")[0]
    # (no relation of pg_catalog is named so: only initdb makes them)
    return schema == "pg_catalog" and (table in _REVEALING_FUNCTIONS or ":" in table and (
        table.partition(":")[0] in _REVEALING_EXTENSIONS or table.partition(":")[0] == FOREIGN))


# The relations and views whose rows hold such values, as a statement's analysis names them
# (`Analysis.tables`: a view and its base relations).
_REVEALING_RELATIONS = STATISTICS_RELATIONS | {
    "pg_catalog.pg_stat_activity", "pg_catalog.pg_prepared_statements", "pg_catalog.pg_cursors"}


class _FunctionsByName(Protocol):
    def functions_named(self, name: str) -> Iterable[object]: ...


def names_revealing(tables: Iterable[str], functions: Iterable[str], catalog: _FunctionsByName | None = None) -> bool:
    """Whether code that uses ``tables`` (schema.table) and calls ``functions`` (names) may read
    values of any column (`reveals_values`): for what lineage cannot trace, a DO block's body.
    With ``catalog``, a function of an extension whose functions all do (pageinspect) counts
    whatever its name."""
    names = [f.rpartition(".")[2] for f in functions]
    return any(t in _REVEALING_RELATIONS or t.endswith(".pg_stat_statements") for t in tables) or any(
        name in _REVEALING_FUNCTIONS for name in names) or catalog is not None and any(
        getattr(fn, "extension", None) in _REVEALING_EXTENSIONS
        for name in names for fn in catalog.functions_named(name))


def _revealing(fname: str, column: str) -> _Val:
    return _Val(frozenset({Source("pg_catalog", fname, column)}), False, False)


NO_ROWS = Lineage(outputs=None, reads=frozenset())
UNKNOWN = Lineage(outputs=None, reads=None, opaque=True)


def lineage_of(statement: str | dict[str, Any], context: SqlContext) -> tuple[Lineage, ...]:
    """One `Lineage` per statement of ``statement`` (SQL text, or a parse tree as
    `lexer.parse_tree` gives it) under ``context``. Text that does not parse: one opaque lineage."""
    try:
        tree = parse_tree(statement, context.lexer) if isinstance(statement, str) else statement
    except ParseError:
        return (UNKNOWN,)
    except Exception:  # noqa: BLE001 - never raise on odd input: fail closed
        return (UNKNOWN,)
    stmts = [raw.get("stmt", {}) for raw in tree.get("stmts", [])] if isinstance(tree, dict) else []

    def run() -> tuple[Lineage, ...]:
        if not stmts:
            return ()
        first = _Walker(context).statement(stmts[0])
        if context.stale or _hidden_revealing_casts(context.catalog):
            first = _untraceable(first)
        if len(stmts) == 1:
            return (first,)
        later = _later_context(tree, context)
        out = [first]
        for stmt in stmts[1:]:
            lineage = _Walker(later).statement(stmt)
            if context.stale or _hidden_revealing_casts(context.catalog) \
                    or any(_changes_catalog(p) for p in stmts[:len(out)]):
                # What the catalog said may have changed before this statement runs (a view
                # replaced, a table renamed): nothing it returns can be traced.
                lineage = _untraceable(lineage)
            out.append(lineage)
        return tuple(out)

    try:
        try:
            return run()
        except RecursionError:
            return deep(run)
    except Exception:  # noqa: BLE001 - a bug here must not let a statement through unmasked
        return tuple(UNKNOWN for _ in stmts) or (UNKNOWN,)


def _hidden_revealing_casts(catalog: Catalog) -> bool:
    """Whether the server may apply, where no text shows it, a cast whose function is a built-in
    that reads what its argument names or returns values of any column (an implicit or
    assignment cast of the database's own: `CREATE CAST (int4 AS text) WITH FUNCTION
    pg_stat_get_backend_activity(int4) AS IMPLICIT` made `ltrim(n)` return other sessions'
    statements, red team thirteen): no output of any statement can be traced then."""
    known = catalog.derived.get("revealing casts")
    if known is None:
        known = catalog.derived["revealing casts"] = any(
            fn is not None and (fn.builtin and fn.name in _READS_BY_NAME or revealing_function(fn) is not None
                                or runs_built_sql(fn))
            for cast in catalog.ambient_casts for fn in (catalog.function(cast.function),))
    return bool(known)


def _untraceable(lineage: Lineage) -> Lineage:
    """``lineage`` when the catalog it was traced through may be out of date: what it reads
    and returns is unknown, and so is what a PREPARE or DECLARE it makes will return."""
    defines = tuple((kind, name, _untraceable(body)) for kind, name, body in lineage.defines)
    if lineage.outputs is None and lineage.reads == frozenset():
        return attrs.evolve(lineage, defines=defines) if defines != lineage.defines else lineage
    # ... and so is what its conditions test: a view replaced in the open transaction (`h9_v.x`
    # was `users.name` on the catalog, `users.ssn` on the server) answered guesses by its rows
    # (red team nine). Which relations the session changed is not known here, so every condition
    # is over a value pgwarden cannot trace (as the outputs are masked whole already)
    oracles = tuple(dict.fromkeys(OracleUse(UNTRACED, use.clause) for use in lineage.oracles))
    return attrs.evolve(lineage, reads=None, opaque=True, defines=defines, oracles=oracles)


def _changes_catalog(stmt: Any) -> bool:
    """DDL, DO, CALL: statements after which the catalog facts may be out of date."""
    n = _node(stmt)
    if n is None:
        return True
    kind = n[0]
    return kind.startswith(_FROM_DDL_PREFIXES) or kind in _CATALOG_CHANGING


def _later_context(tree: dict[str, Any], context: SqlContext) -> SqlContext:
    """The context for the second and later statements of a string: an earlier one may have
    moved the search_path (SET, set_config, a function), so an unqualified name may be in any
    schema that holds a relation of that name (as the analysis matches table rules)."""
    from pgwarden.sql.syntax import _walk_tree

    after = context.after(_walk_tree(tree, context.lexer))
    possible = after.possible | frozenset(after.search_path or ()) | frozenset(context.search_path or ())
    return attrs.evolve(after, search_path=None, possible=possible - {"$user"})


#: The analysis kinds (`pgwarden.sql.syntax`) of the statements whose lineage can define or forget
#: a name `NamedLineage` keeps: PREPARE and DEALLOCATE ("prepare"), DECLARE and CLOSE ("cursor"),
#: DISCARD ("set"; DISCARD ALL is "role"). Any other statement leaves the names as they are.
NAMING_KINDS = _NAMING_KINDS


class NamedLineage:
    """A session's SQL-level prepared statements and cursors, for EXECUTE and FETCH.

    The relay feeds it each statement's lineage in the order the server runs them
    (`after`) and asks it for the lineage of a statement in the session (`resolve`).
    A name it never saw defined (or one defined by text it could not trace) is opaque.
    """

    def __init__(self) -> None:
        self._named: dict[tuple[str, str], Lineage] = {}

    def resolve(self, lineage: Lineage) -> Lineage:
        if lineage.refers is None:
            return lineage
        body = self._named.get(lineage.refers)
        if body is None:
            return Lineage(outputs=None, reads=None, opaque=True, refers=lineage.refers)
        if lineage.refers[0] == "cursor" and lineage.outputs is None:  # MOVE: no rows
            return attrs.evolve(lineage, reads=body.reads, opaque=False)
        return attrs.evolve(body, defines=(), forgets=(), refers=lineage.refers,
                            oracles=body.oracles + lineage.oracles)

    def after(self, lineage: Lineage) -> None:
        for kind, name in lineage.forgets:
            if name == "*":
                self.forget_all(kind)
            else:
                self._named.pop((kind, name), None)
        for kind, name, body in lineage.defines:
            if (kind, name) in self._named:
                # The name is in use: the server refuses to define it again (or the definition was
                # skipped, or failed), and what it names is what pgwarden may no longer tell: opaque
                del self._named[kind, name]
            else:
                self._named[kind, name] = body

    def forget(self, kind: str, name: str) -> None:
        """``name`` was taken over outside SQL (a protocol Parse of a statement of that name, a
        Bind of a portal of that name): what it names is what pgwarden cannot trace: opaque."""
        self._named.pop((kind, name), None)

    def forget_all(self, kind: str) -> None:
        for key in [k for k in self._named if k[0] == kind]:
            del self._named[key]

    def names(self, kind: str) -> list[str]:
        """The names of ``kind`` it knows a body of."""
        return [name for k, name in self._named if k == kind]

    def define(self, kind: str, name: str, body: Lineage) -> None:
        """``name``'s body traced again (a prepared statement after the catalog changed: the
        server plans it again on the new definitions). A name not defined stays undefined."""
        if (kind, name) in self._named:
            self._named[kind, name] = body


# ---------------------------------------------------------------------------- internals


_NO_SOURCES: frozenset = frozenset()


class _Val(NamedTuple):
    """What a value depends on while the tree is walked."""

    sources: frozenset[Source]
    direct: bool
    opaque: bool


_NONE = _Val(frozenset(), False, False)
# A value lineage cannot trace: it may hold any column the statement reads (`UNTRACED` among its
# sources makes a condition over it an oracle of every one). A column of a relation the catalog
# does not know is not this: its sources are the columns it is taken to be.
_OPAQUE = _Val(frozenset({UNTRACED}), False, True)
_MARKS = frozenset({UNTRACED})


def _union(vals: Iterable[_Val]) -> _Val:
    sources: set[Source] = set()
    opaque = False
    for v in vals:
        sources |= v.sources
        opaque = opaque or v.opaque
    return _Val(frozenset(sources), False, opaque)


def _either(vals: list[_Val]) -> _Val:
    """A value that is one of ``vals`` unchanged (UNION arms, USING columns, recursive CTEs)."""
    if not vals:
        return _NONE
    u = _union(vals)
    return _Val(u.sources, all(v.direct for v in vals) and bool(u.sources), u.opaque)


Columns = list[tuple[str, _Val]]


@attrs.define
class _Rel:
    """A FROM item a qualified name can reach: a table, view, sub-select, function, CTE."""

    name: str  # the alias, else the relation's name
    columns: Columns
    schema: str | None = None
    # A relation whose columns are not known: (schemas it may be in, its name); a column named
    # on it is taken to exist.
    unknown: tuple[tuple[str, ...], str] | None = None
    opaque: bool = False  # a FROM item lineage cannot follow (any column, any number of them)
    system: bool = False  # a stored relation: ctid, xmin, tableoid, ... hold no column's value
    # A function's result whose columns follow its arguments' types: a column named on it that
    # is not among `columns` may still be one of its (never an outer query's), holding this.
    fallback: _Val | None = None
    # A function's result: its whole row may be one value (a jsonb), not a row of its columns.
    function_item: bool = False
    # A table (relkind r or p) the catalog lists the columns of: (schema, name). A column it does
    # not list is one added since the catalog was read, or none (the server says so): of this table.
    stored: tuple[str, str] | None = None

    def find(self, name: str) -> _Val | None:
        found = [v for n, v in self.columns if n == name]
        if found:
            return found[0] if len(found) == 1 else _union(found)
        if self.system and name in SYSTEM_COLUMNS:
            return _NONE
        if self.unknown is not None:
            # Taken to exist by its name (what `explain` shows), and opaque: a relation the catalog
            # does not know may be a view over anything (a TEMP VIEW made since the last load).
            schemas, table = self.unknown
            return _Val(frozenset(Source(s, table, name) for s in schemas), False, True)
        if self.opaque:
            return _OPAQUE
        return self.fallback  # (unqualified, it may be an outer query's column too: `lookup`)

    def whole(self) -> _Val:
        u = _union([v for _, v in self.columns] + ([self.fallback] if self.fallback is not None else []))
        if self.unknown is not None or self.opaque:
            return _Val(u.sources, False, True)
        return u


@attrs.define
class _Item:
    """One entry of a FROM list: the relations it makes visible, the columns an unqualified
    name or ``*`` reaches (a join's USING columns once)."""

    rels: list[_Rel]
    columns: Columns
    open_rels: list[_Rel]  # relations inside whose columns are not known
    hidden_rels: list[_Rel] = attrs.Factory(list)  # inside an aliased join: reached only unqualified


@attrs.define
class _Scope:
    items: list[_Item]
    parent: _Scope | None = None
    ctes: dict[str, Columns] = attrs.Factory(dict)
    params: frozenset[str] = frozenset()

    def cte(self, name: str) -> Columns | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None


def _node(obj: Any) -> tuple[str, dict] | None:
    """('SelectStmt', fields) for a wrapped node, else None (the hottest function here)."""
    if type(obj) is dict and len(obj) == 1:
        for name, fields in obj.items():
            if type(fields) is dict and "A" <= name[:1] <= "Z":
                return name, fields
    return None


def _is_star(obj: Any) -> bool:
    n = _node(obj)
    return n is not None and n[0] == "A_Star"


def _unnest_items(f: dict) -> list:
    """A RangeFunction's function items, ``unnest(a, b, ...)`` expanded as the server expands it
    (parse_clause.c, transformRangeFunction): an unqualified ``unnest`` of several arguments in
    FROM, plain (no ORDER BY, FILTER, OVER, ``*``, DISTINCT, VARIADIC) and without a column
    definition list, is ``ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b), ...)``: each
    argument then is a one-argument ``unnest`` as lineage follows one (Django's index introspection
    reads ``unnest(i.indkey, i.indoption)``, whose columns were of unknown origin before)."""
    functions = f.get("functions") or []
    if len(functions) != 1 or f.get("coldeflist"):
        return functions
    n = _node(functions[0])
    items = n[1].get("items", []) if n is not None and n[0] == "List" else []
    call = _node(items[0]) if items else None
    if call is None or call[0] != "FuncCall" or (len(items) > 1 and items[1]):
        return functions
    fc = call[1]
    args = fc.get("args") or []
    if _names(fc.get("funcname")) != ["unnest"] or len(fc.get("funcname") or ()) != 1 or len(args) < 2 \
            or any(fc.get(k) for k in ("agg_order", "agg_filter", "over", "agg_star", "agg_distinct",
                                        "func_variadic", "agg_within_group")):
        return functions
    name = [{"String": {"sval": "pg_catalog"}}, {"String": {"sval": "unnest"}}]
    return [{"List": {"items": [{"FuncCall": {**fc, "funcname": name, "args": [arg]}}, {}]}} for arg in args]


def _str(obj: Any) -> str | None:
    n = _node(obj)
    if n is not None and n[0] == "String":
        return str(n[1].get("sval", ""))
    return None


def _names(items: Any) -> list[str]:
    return [s for s in (_str(i) for i in items or []) if s is not None]


def _int_const(obj: Any) -> int | None:
    n = _node(obj)
    if n is not None and n[0] == "A_Const" and "ival" in n[1]:
        return int(n[1]["ival"].get("ival", 0))
    return None


def _select_fields(obj: Any) -> dict | None:
    """A SelectStmt's fields, wrapped or not (set operations' arms are not wrapped)."""
    n = _node(obj)
    if n is not None:
        return n[1] if n[0] == "SelectStmt" else None
    return obj if isinstance(obj, dict) else None


# A stored relation's system columns. Not ``oid``: since PostgreSQL 12 a table has no hidden oid
# (WITH OIDS is gone), and the catalog's tables hold theirs as a column like any other, which the
# catalog lists; an ``oid`` the relations in scope lack is an outer query's column.
SYSTEM_COLUMNS = _ALL_SYSTEM_COLUMNS - {"oid"}

# Result types of built-ins that may be a row of any type, as their arguments' (pg_type OIDs):
# anyelement, anynonarray, anycompatible, anycompatiblenonarray, record.
_ROW_POLYMORPHIC = frozenset({2283, 2776, 5077, 5079, 2249})
_RECORD = 2249

_CURSOR_OPT_HOLD = 0x0020  # PostgreSQL's parsenodes.h: DECLARE ... WITH HOLD

# Built-ins that read what their arguments name (SQL text, a table, a cursor, another database).
_READS_BY_NAME = frozenset({
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
    "crosstab", "crosstab2", "crosstab3", "crosstab4", "connectby", "table_to_xml", "table_to_xmlschema",
    "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
    "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema",
})
# Extensions' functions that build and run a query from their text arguments, known by the
# extension the catalog says they belong to (`FunctionFacts.extension`), not by a name anyone may
# give a function: contrib xml2's ``xpath_table(key, document, relation, xpaths, criteria)`` runs
# ``SELECT <key>, <document> FROM <relation> WHERE <criteria>`` (red team nine: the document
# ``'<a>' || ssn || '</a>'`` came back in clear, and the criteria answered a guess by the rows).
RUNS_BUILT_SQL = frozenset({("xml2", "xpath_table")})


def runs_built_sql(fn: FunctionFacts) -> bool:
    """Whether ``fn`` is an extension's function that runs a query built from its arguments."""
    return (fn.extension, fn.name) in RUNS_BUILT_SQL


_STATEMENTS_WITHOUT_ROWS = frozenset({
    "TransactionStmt", "VariableSetStmt", "DiscardStmt", "ListenStmt", "UnlistenStmt", "NotifyStmt",
    "LockStmt", "CheckPointStmt", "LoadStmt", "ConstraintsSetStmt", "DeallocateStmt", "ClosePortalStmt",
    "VacuumStmt", "ClusterStmt", "ReindexStmt", "TruncateStmt", "GrantStmt", "GrantRoleStmt",
    "AlterSystemStmt", "CommentStmt", "SecLabelStmt",
})
_FROM_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Import", "Refresh")
_CATALOG_CHANGING = frozenset({"ViewStmt", "RuleStmt", "DoStmt", "CallStmt", "DefineStmt", "CompositeTypeStmt"})
# Set-returning functions that return one row per top-level key of a JSON object: how many follows
# the object's keys only, which the statement fixes when it builds the object from a row or from
# constant keys (`_Walker.shaped`).
_PER_KEY = frozenset({"json_each", "jsonb_each", "json_each_text", "jsonb_each_text", "json_object_keys",
                      "jsonb_object_keys"})
# JSON made from a whole row: its keys are the row's column names, whatever the values.
_ROW_TO_JSON = frozenset({"to_json", "to_jsonb", "row_to_json"})
# The rule event each write fires (RuleStmt.event).
_RULE_EVENTS = {"InsertStmt": "CMD_INSERT", "UpdateStmt": "CMD_UPDATE", "DeleteStmt": "CMD_DELETE"}
_BUILD_OBJECT = frozenset({"json_build_object", "jsonb_build_object"})


class _Walker:
    def __init__(self, ctx: SqlContext, *, oracles: bool = True, depth: int = 0) -> None:
        self.ctx = ctx
        self.catalog: Catalog = ctx.catalog
        self.reads: set[Source] = set()
        self.unknown_reads = False
        self.sublink_names: dict[int, str | None] = {}
        self.shape_unknown = False
        self.oracles: dict[OracleUse, None] = {}
        self.record_oracles = oracles
        # The JSON objects (ids of their nodes' fields) whose keys the statement's text fixes:
        # to_jsonb(u), json_build_object('k', ssn), a scalar sub-select of one.
        self.shaped: set[int] = set()
        self.missing_relation = False  # a relation the catalog does not know was named
        self.depth = depth  # views and function bodies inside views and bodies
        self._schemas: tuple[str, ...] | None = None
        self.own_code = False  # an IMMUTABLE function of the database's own was reached (`Lineage.own_code`)
        self.folded: set[Source] = set()  # ... what such functions read (`Lineage.folded`)
        self.folded_unknown = False

    # ------------------------------------------------------------------ statements

    def statement(self, stmt: Any) -> Lineage:
        n = _node(stmt)
        if n is None:
            return UNKNOWN
        kind, f = n
        if kind == "SelectStmt":
            columns = self.query(stmt, None)
            if f.get("intoClause") is not None:  # SELECT INTO: a table, no rows
                self._written(columns)
                return self.result(None)
            return self.result(columns)
        if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            return self.result(self.write(kind, f, None))
        if kind == "DeclareCursorStmt":
            body = _Walker(self.ctx).statement(f.get("query"))
            return Lineage(outputs=None, reads=body.reads, oracles=body.oracles,
                           defines=(("cursor", f.get("portalname", ""), body),),
                           holds=bool(int(f.get("options") or 0) & _CURSOR_OPT_HOLD))
        if kind == "FetchStmt":
            # Opaque until `NamedLineage.resolve` gives it the cursor's lineage: fail closed.
            name = f.get("portalname", "")
            outputs: tuple[Output, ...] | None = None if f.get("ismove") else ()
            return Lineage(outputs=outputs, reads=None, opaque=True, refers=("cursor", name))
        if kind == "ClosePortalStmt":
            return Lineage(outputs=None, reads=frozenset(), forgets=(("cursor", f.get("portalname") or "*"),))
        if kind == "PrepareStmt":
            body = _Walker(self.ctx).statement(f.get("query"))
            return Lineage(outputs=None, reads=frozenset(), defines=(("prepared", f.get("name", ""), body),))
        if kind == "ExecuteStmt":
            computed = False
            uses: dict[OracleUse, None] = {}
            for param in f.get("params") or ():
                value = self.expr(param, _Scope([]))
                computed = bool(value.sources) or computed
                for source in sorted(value.sources, key=str):
                    uses[OracleUse(source, "EXECUTE")] = None
            if computed:
                # An argument computed from a column (or a function that reads one) flows into the
                # body's outputs wherever it uses $n, which its lineage does not follow: opaque
                # whatever the body, masked whole. And into its conditions, LIMIT, set-returning
                # calls: ``EXECUTE q(f())`` of ``PREPARE q(int) AS SELECT 1 FROM generate_series(1,
                # $1)``, ``f`` returning ascii(ssn), returned as many rows as the code of the SSN's
                # character (red team fourteen): each such argument is an oracle of what it holds.
                return Lineage(outputs=None, reads=None, opaque=True, oracles=tuple(uses))
            # Opaque until `NamedLineage.resolve` gives it the prepared body's lineage.
            return Lineage(outputs=(), reads=None, opaque=True, refers=("prepared", f.get("name", "")))
        if kind == "DeallocateStmt":
            name = "*" if f.get("isall") or not f.get("name") else f["name"]
            return Lineage(outputs=None, reads=frozenset(), forgets=(("prepared", name),))
        if kind == "DiscardStmt" and f.get("target") in ("DISCARD_ALL", None):
            return Lineage(outputs=None, reads=frozenset(), forgets=(("prepared", "*"), ("cursor", "*")))
        if kind == "CopyStmt":
            return self.copy(f)
        if kind == "RefreshMatViewStmt" and f.get("relation"):
            # A refresh runs the view's query now, on the definitions of now, and stores its rows,
            # which a later read traces through the definitions of then (a function it calls
            # replaced to return the SSN, refreshed, replaced back: the rows held the SSN, read in
            # clear; red team fourteen): what it reads is a value written, as in CREATE
            # MATERIALIZED VIEW AS. (What it reads, not empty, makes it wait for a pending load.)
            star: dict[str, Any] = {"ResTarget": {"val": {"ColumnRef": {"fields": [{"A_Star": {}}]}}}}
            inner = _Walker(self.ctx).statement({"SelectStmt": {
                "targetList": [star], "fromClause": [{"RangeVar": f["relation"]}],
                "limitOption": "LIMIT_OPTION_DEFAULT", "op": "SETOP_NONE"}})
            uses = dict.fromkeys(inner.oracles)
            for output in inner.outputs if inner.outputs is not None else (Output("*", _MARKS, False, True),):
                for source in sorted(output.sources | (_MARKS if output.opaque else frozenset()), key=str):
                    uses[OracleUse(source, "write")] = None
            if inner.reads is None or inner.opaque:
                uses[OracleUse(UNTRACED, "write")] = None
            return Lineage(outputs=None, reads=inner.reads, oracles=tuple(uses))
        if kind == "ExplainStmt":
            inner = _Walker(self.ctx).statement(f.get("query"))
            # The plan shows no values of the rows, but row counts and estimates follow the filters;
            # run (ANALYZE), it also shows the sizes of what it computed (a sort's memory for
            # repeat('x', 100000 * digit)): every output's sources are oracles then.
            oracles = inner.oracles
            if _explain_runs(f) and inner.outputs is not None:
                # ... and which of its nodes ran, how often and on how many rows: every value the
                # statement computes, returned or not (a COALESCE over a masked column whose
                # second arm is a sub-plan shows "never executed" or not), is an oracle then
                read = set(inner.reads) if inner.reads is not None else {UNTRACED}
                read.update(source for o in inner.outputs for source in o.sources)
                oracles = oracles + tuple(OracleUse(source, "EXPLAIN ANALYZE") for source in sorted(read, key=str))
            elif _explain_runs(f):
                return UNKNOWN
            return Lineage(outputs=(Output("QUERY PLAN", frozenset(), False),), reads=inner.reads,
                           oracles=oracles, own_code=inner.own_code, folded=inner.folded)
        if kind == "VariableShowStmt":
            name = f.get("name", "")
            if name == "all":
                return Lineage(outputs=tuple(Output(c, frozenset(), False)
                                             for c in ("name", "setting", "description")), reads=frozenset())
            return Lineage(outputs=(Output(name, frozenset(), False),), reads=frozenset())
        if kind == "CreateTableAsStmt":
            self._written(self.query(f.get("query"), None) if _select_fields(f.get("query")) else [])
            return self.result(None)
        if kind == "ViewStmt":
            return NO_ROWS  # defines a view; reading it is traced when it is read
        if kind in _STATEMENTS_WITHOUT_ROWS or kind.startswith(_FROM_DDL_PREFIXES):
            return NO_ROWS
        # CALL (OUT arguments come back as a row), DO (RAISE may show values), anything else.
        return UNKNOWN

    def result(self, columns: Columns | None) -> Lineage:
        outputs = None if columns is None else tuple(
            Output(name, v.sources - _MARKS if UNTRACED in v.sources else v.sources, v.direct and not v.opaque,
                   v.opaque) for name, v in columns)
        return Lineage(
            outputs=outputs,
            reads=None if self.unknown_reads else frozenset(self.reads),
            oracles=tuple(self.oracles),
            opaque=self.shape_unknown,
            own_code=self.own_code,
            folded=None if self.folded_unknown else frozenset(self.folded),
        )

    def copy(self, f: dict) -> Lineage:
        if f.get("is_from"):
            return NO_ROWS
        if f.get("query") is not None:
            inner = self.statement(f["query"])
            return inner if inner.outputs is not None else attrs.evolve(inner, outputs=(), opaque=True)
        rel = f.get("relation") or {}
        item = self.range_var(rel, _Scope([]))
        wanted = _names(f.get("attlist"))
        if wanted:
            columns = [(name, self.column_of(item.rels[0], name)) for name in wanted]
        else:
            columns = list(item.columns)
            if item.open_rels:
                self.star_unknown(columns)
        for _, v in columns:
            self.read(v)
        return self.result(columns)

    def set_value(self, target: Any, scope: _Scope, value: bool = True) -> _Val:
        """What a SET item (``a = v``, ``a[i] = v``, ``a.f = v``) writes, and where: its subscripts
        choose the element written as much as its value does (``SET arr[ascii(ssn)] = 1``)."""
        tf = (_node(target) or ("", {}))[1]
        parts = [self.expr(tf.get("val"), scope)] if value else []
        parts += [self.expr(i, scope) for i in tf.get("indirection") or ()]
        return self.read(_union(parts)) if parts else _NONE

    def _written(self, columns: Columns) -> None:
        for _, v in columns:
            self.oracle(v, "write")
        if columns and _hidden_revealing_casts(self.catalog):
            # an assignment cast may convert what is written through such a function, out of sight
            # (`INSERT INTO t SELECT n FROM pg_stat_get_backend_idset() n` stored other sessions'
            # statements, read back in clear once the cast was dropped, red team thirteen)
            self.oracle(self.read(_OPAQUE), "write")

    # ------------------------------------------------------------------ reads, oracles

    def read(self, v: _Val) -> _Val:
        self.reads |= v.sources
        if UNTRACED in v.sources:  # (a mark, not a column: what it stands for makes reads unknown)
            self.reads.discard(UNTRACED)
            self.unknown_reads = True
        return v

    def oracle(self, v: _Val, clause: str) -> None:
        if self.record_oracles:
            for s in sorted(v.sources, key=str):  # (UNTRACED among them: a value of unknown columns)
                self.oracles[OracleUse(s, clause)] = None

    def star_unknown(self, columns: Columns) -> None:
        self.shape_unknown = True
        self.unknown_reads = True
        columns.append(("*", _OPAQUE))

    # ------------------------------------------------------------------ queries

    def query(self, stmt: Any, parent: _Scope | None, ctes: dict[str, Columns] | None = None) -> Columns:
        """The output columns of a SELECT (set operations, VALUES, WITH included)."""
        f = _select_fields(stmt)
        if f is None:
            n = _node(stmt)
            if n is not None and n[0] in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                return self.write(n[0], n[1], parent) or []
            self.unknown_reads = self.shape_unknown = True
            return [("?column?", _OPAQUE)]
        scope = _Scope([], parent, dict(ctes or {}))
        self.with_clause(f.get("withClause"), scope)
        op = f.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self.query(f.get("larg"), scope)
            right = self.query(f.get("rarg"), scope)
            columns = [(name, _either([lv, rv])) for (name, lv), (_, rv) in zip(left, right, strict=False)]
            if len(left) != len(right):
                self.shape_unknown = True
            if op != "SETOP_UNION" or not f.get("all"):
                # UNION (not ALL), INTERSECT and EXCEPT compare the rows of both sides: which
                # come out, and how many, tell the values (INTERSECT with a table of guesses
                # returns the right ones)
                for (_, lv), (_, rv) in zip(left, right, strict=False):
                    self.oracle(lv, "set operation")
                    self.oracle(rv, "set operation")
            self.tail(f, scope, columns)
            return columns
        if f.get("valuesLists"):
            rows = [[self.read(self.expr(e, scope)) for e in (_node(row) or ("", {}))[1].get("items", [])]
                    for row in f["valuesLists"]]
            width = max((len(r) for r in rows), default=0)
            columns = [(f"column{i + 1}", _either([r[i] for r in rows if i < len(r)])) for i in range(width)]
            self.tail(f, scope, columns)  # (VALUES ... ORDER BY 1 LIMIT n sorts and cuts as a SELECT does)
            return columns
        for item in f.get("fromClause") or ():
            scope.items.append(self.from_item(item, scope))
        columns = self.targets(f.get("targetList") or (), scope)
        if f.get("whereClause") is not None:
            self.oracle(self.read(self.expr(f["whereClause"], scope)), "WHERE")
        for g in f.get("groupClause") or ():
            self.oracle(self.read(self.sort_expr(g, scope, columns, prefer_input=True)), "GROUP BY")
        if f.get("havingClause") is not None:
            self.oracle(self.read(self.expr(f["havingClause"], scope)), "HAVING")
        for w in f.get("windowClause") or ():
            self.window(w, scope)
        distinct = f.get("distinctClause")
        if distinct is not None:
            exprs = [d for d in distinct if d]
            if exprs:
                for d in exprs:
                    self.oracle(self.read(self.sort_expr(d, scope, columns)), "DISTINCT")
            else:
                for _, v in columns:
                    self.oracle(v, "DISTINCT")
        self.tail(f, scope, columns)
        return columns

    def tail(self, f: dict, scope: _Scope, columns: Columns) -> None:
        for s in f.get("sortClause") or ():
            n = _node(s)
            target = n[1].get("node") if n is not None else None
            self.oracle(self.read(self.sort_expr(target, scope, columns)), "ORDER BY")
        for key in ("limitCount", "limitOffset"):
            if f.get(key) is not None:
                self.oracle(self.read(self.expr(f[key], scope)), "LIMIT")

    def with_clause(self, w: Any, scope: _Scope) -> None:
        n = _node(w)
        fields = n[1] if n is not None else (w if isinstance(w, dict) else None)
        if not fields:
            return
        recursive = bool(fields.get("recursive"))
        ctes = [cn[1] for cn in map(_node, fields.get("ctes") or ()) if cn is not None]
        if recursive and len(ctes) > 1:
            ctes = self.dependency_order(ctes, scope)
        for cf in ctes:
            name = cf.get("ctename", "")
            aliases = _names(cf.get("aliascolnames"))
            query = cf.get("ctequery")
            qf = _select_fields(query)
            if recursive and qf is not None and qf.get("op") == "SETOP_UNION" \
                    and name in _relations_named(query, frozenset()):  # (a recursive item names itself)
                columns = self.recursive_cte(name, aliases, qf, scope)
                if not qf.get("all"):  # UNION drops rows equal to ones already found: it compares
                    for _, v in columns:
                        self.oracle(v, "set operation")
            else:
                columns = self.query(query, scope)
            columns = _rename(columns, aliases)
            # CYCLE compares rows' values to find a cycle (how many rows come out says if it did);
            # SEARCH orders by them
            for clause, key in (("cycle_clause", "cycle_col_list"), ("search_clause", "search_col_list")):
                listed = set(_names((_fields(cf.get(clause)) or {}).get(key))) if cf.get(clause) else set()
                for column, v in columns:
                    if column in listed:
                        self.oracle(v, "set operation" if clause == "cycle_clause" else "ORDER BY")
            scope.ctes[name] = columns + _search_cycle_columns(cf, columns)

    def dependency_order(self, ctes: list[dict], scope: _Scope) -> list[dict]:
        """A WITH RECURSIVE list in the order the server evaluates it: there a query may name any
        item of the list, later ones too (the server sorts them by what each names), so an item
        named before its place is that item, not a table of that name. Each item follows the
        items its query names (a name shadowed inside it counts too: an order that still holds).
        Items that name each other (the server refuses most of these) keep their places, each
        name bound before any is walked, and what reads them is taken as unknown."""
        names = [cf.get("ctename", "") for cf in ctes]
        index = {name: i for i, name in enumerate(names)}
        needs = []
        for i, cf in enumerate(ctes):
            named = _relations_named(cf.get("ctequery"), frozenset())
            needs.append({index[n] for n in named if n in index and index[n] != i})
        order: list[int] = []
        placed: set[int] = set()
        while len(order) < len(ctes):
            ready = [i for i in range(len(ctes)) if i not in placed and needs[i] <= placed]
            if not ready:  # a cycle (the server refuses it): the rest in list order, unknown
                rest = [i for i in range(len(ctes)) if i not in placed]
                for i in rest:
                    scope.ctes[names[i]] = [("*", _OPAQUE)]
                self.unknown_reads = self.shape_unknown = True
                order += rest
                break
            order.append(ready[0])
            placed.add(ready[0])
        return [ctes[i] for i in order]

    def recursive_cte(self, name: str, aliases: list[str], qf: dict, scope: _Scope) -> Columns:
        """A recursive CTE's columns: its non-recursive arm, then the union with the recursive arm
        computed again until nothing new is added (a column may feed another one)."""
        columns = _rename(self.query(qf.get("larg"), scope), aliases)
        for _ in range(8):
            scope.ctes[name] = columns
            right = self.query(qf.get("rarg"), scope)
            grown = [(n, _either([v, rv])) for (n, v), (_, rv) in zip(columns, right, strict=False)]
            if grown == columns:
                return columns
            columns = grown
        return [(n, _Val(v.sources, False, True)) for n, v in columns]

    def targets(self, targets: Iterable[Any], scope: _Scope) -> Columns:
        columns: Columns = []
        for t in targets:
            n = _node(t)
            if n is None or n[0] != "ResTarget":
                columns.append(("?column?", _OPAQUE))
                continue
            val = n[1].get("val")
            name = n[1].get("name")
            stars = self.star(val, scope)
            if stars is not None:
                columns.extend(stars)
                continue
            v = self.read(self.expr(val, scope, output=True))
            columns.append((name or _colname(val, self.sublink_name), v))
        return columns

    def sublink_name(self, subselect: Any) -> str | None:
        """A scalar sub-select's name: its first output's as this walker named them when it
        walked it (``*``, set operations and VALUES included: `sublink`), else as its text says.
        None where the name is not known (``*`` over a relation of unknown columns)."""
        if id(subselect) in self.sublink_names:
            return self.sublink_names[id(subselect)]
        return _first_target_name(subselect)

    def star(self, val: Any, scope: _Scope) -> Columns | None:
        """``*``, ``t.*``, ``(x).*`` expanded as the server does; None when ``val`` is none of them."""
        n = _node(val)
        if n is None:
            return None
        if n[0] == "ColumnRef":
            fields = n[1].get("fields") or []
            if not fields or not _is_star(fields[-1]):
                return None
            out: Columns = []
            if len(fields) == 1:
                for item in scope.items:
                    out.extend(item.columns)
                    if item.open_rels:
                        self.star_unknown(out)
                    self.rows_follow_arguments(item.rels, out)
            else:
                rel = self.find_rel(_names(fields[:-1]), scope)
                if rel is None:
                    self.star_unknown(out)
                else:
                    out.extend(rel.columns)
                    if rel.unknown is not None or rel.opaque:
                        self.star_unknown(out)
                    self.rows_follow_arguments([rel], out)
            for _, v in out:
                self.read(v)
            return out
        if n[0] == "A_Indirection":
            ind = n[1].get("indirection") or []
            if ind and _is_star(ind[-1]):
                fields = self.composite(n[1].get("arg"), scope) if len(ind) == 1 else None
                if fields is not None:
                    for _, fv in fields:
                        self.read(fv)
                    return list(fields)
                v = self.read(self.expr(n[1].get("arg"), scope))
                out = []
                self.star_unknown(out)
                out[-1] = ("*", _Val(v.sources, False, True))
                return out
        return None

    def rows_follow_arguments(self, rels: list[_Rel], out: Columns) -> None:
        """``*`` over a function's result whose columns follow its arguments' types: how many
        columns there are is the server's to say (the shape is unknown), each holding what the
        arguments hold."""
        for rel in rels:
            if rel.fallback is not None:
                self.shape_unknown = True
                out[:] = [(name, _union([v, rel.fallback])) for name, v in out]

    def composite(self, arg: Any, scope: _Scope) -> Columns | None:
        """The fields of a row value whose columns are known: a whole-row reference (``u`` in
        ``(u).*``) or a function's result (``(f()).*``, ``(f()).a``); None otherwise."""
        rel = self.row_rel(arg, scope)
        if rel is not None:
            return None if rel.unknown is not None or rel.opaque else rel.columns
        n = _node(arg)
        if n is None or n[0] != "FuncCall":
            return None
        saved = self.shape_unknown
        columns, _, fallback = self.function_columns(arg, None, scope)
        if fallback is not None or any(name == "*" and v.opaque for name, v in columns):
            self.shape_unknown = saved
            return None
        return columns

    def row_rel(self, arg: Any, scope: _Scope) -> _Rel | None:
        """The relation a whole-row reference (``u`` in ``(u).*``) stands for."""
        n = _node(arg)
        if n is not None and n[0] == "ColumnRef":
            names = _names(n[1].get("fields"))
            if len(names) == len(n[1].get("fields") or []) and self.lookup(names, scope) is None:
                return self.find_rel(names, scope)
        return None

    def sort_expr(self, node: Any, scope: _Scope, columns: Columns, prefer_input: bool = False) -> _Val:
        """ORDER BY / GROUP BY / DISTINCT ON items: an output's ordinal or name, else an expression."""
        k = _int_const(node)
        if k is not None:
            # (past the columns lineage knows: the server's `*` made more of them)
            return columns[k - 1][1] if 0 < k <= len(columns) else _OPAQUE  # (UNTRACED)
        n = _node(node)
        if n is not None and n[0] == "ColumnRef":
            names = _names(n[1].get("fields"))
            if len(names) == 1:
                outputs = [v for name, v in columns if name == names[0]]
                # (an input column of this query's own FROM comes first, not an outer query's)
                local = _Scope(scope.items, None, scope.ctes, scope.params)
                if outputs and not (prefer_input and self.lookup(names, local) is not None):
                    return _either(outputs)
        return self.expr(node, scope)

    def window(self, w: Any, scope: _Scope) -> None:
        n = _node(w)
        if n is None:
            return
        for key in ("partitionClause", "orderClause"):
            for item in n[1].get(key) or ():
                sn = _node(item)
                target = sn[1].get("node") if sn is not None and sn[0] == "SortBy" else item
                self.oracle(self.read(self.expr(target, scope)), "window")
        for key in ("startOffset", "endOffset"):  # ROWS BETWEEN CURRENT ROW AND <n> FOLLOWING: how many
            if n[1].get(key) is not None:
                self.oracle(self.read(self.expr(n[1][key], scope)), "window")

    # ------------------------------------------------------------------ FROM

    def from_item(self, node: Any, scope: _Scope) -> _Item:
        n = _node(node)
        if n is None:
            return self.opaque_item("?")
        kind, f = n
        if kind == "RangeVar":
            return self.range_var(f, scope)
        if kind == "RangeSubselect":
            # A LATERAL sub-select sees the items before it; any sub-select sees the outer scopes.
            if f.get("lateral"):
                inner_parent = scope
            else:
                inner_parent = _Scope([], scope.parent, scope.ctes, scope.params)
            columns = self.query(f.get("subquery"), inner_parent)
            alias = _alias(f)
            columns = _rename(columns, alias[1])
            rel = _Rel(alias[0] or "", columns)
            return _Item([rel] if alias[0] else [], columns, [])
        if kind == "JoinExpr":
            return self.join(f, scope)
        if kind == "RangeFunction":
            return self.range_function(f, scope)
        if kind == "RangeTableSample":
            item = self.from_item(f.get("relation"), scope)
            # the percentage and the seed decide how many rows, and which, come back
            for arg in [*(f.get("args") or ()), f.get("repeatable")]:
                if arg is not None:
                    self.oracle(self.read(self.expr(arg, scope)), "rows")
            return item
        if kind == "RangeTableFunc":  # XMLTABLE
            # the document, its row path and its namespaces' URIs say how many rows there are
            doc = self.read(_union([self.expr(f.get("docexpr"), scope), self.expr(f.get("rowexpr"), scope),
                                    self.expr(f.get("namespaces"), scope)]))
            self.oracle(doc, "rows")
            for c in f.get("columns") or ():  # a column's PATH and DEFAULT expressions make its values
                cf = (_node(c) or ("", {}))[1]
                doc = _union([doc] + [self.read(self.expr(cf[k], scope)) for k in ("colexpr", "coldefexpr")
                                      if cf.get(k) is not None])
            names = [(_node(c) or ("", {}))[1].get("colname", "?column?") for c in f.get("columns") or ()]
            alias = _alias(f)
            columns = _rename([(name, _Val(doc.sources, False, doc.opaque)) for name in names], alias[1])
            return _Item([_Rel(alias[0] or "xmltable", columns)], columns, [])
        return self.opaque_item(_alias(f)[0] or "?")

    def opaque_item(self, name: str) -> _Item:
        self.unknown_reads = True
        rel = _Rel(name, [], opaque=True)
        return _Item([rel], [], [rel])

    def range_var(self, f: dict, scope: _Scope, table: bool = False) -> _Item:
        """A relation named in FROM (a WITH item first), or, ``table``, a write's target: always
        the table, whatever WITH items the statement names."""
        schema, name = f.get("schemaname"), f.get("relname", "")
        alias = _alias(f)
        if schema is None and not table:
            cte = scope.cte(name)
            if cte is not None:
                columns = _rename(cte, alias[1])
                rel = _Rel(alias[0] or name, columns)
                return _Item([rel], columns, [])
        found = self.relations(schema, name)
        if found:
            for r in found:
                self.note_folding(self.view_functions(r))
                if r.policies:
                    self.policy_conditions(r)
            columns_each = [self.relation_columns(r) for r in found]
            if any(c is None for c in columns_each):
                return self.unknown_item(schema, name, alias)
            alike = True
            if len(columns_each) == 1:
                columns = columns_each[0] or []
            else:  # an uncertain search_path: any of them
                columns, alike = _merge_alternatives([c or [] for c in columns_each])
            columns = _rename(columns, alias[1])
            rel = _Rel(alias[0] or name, columns, schema=schema or found[0].schema,
                       system=all(r.kind in ("r", "p", "m", "f", "S", "t") for r in found), opaque=not alike,
                       stored=(found[0].schema, found[0].name) if len(found) == 1 and found[0].kind in ("r", "p")
                       else None)
            return _Item([rel], columns, [] if alike else [rel])
        return self.unknown_item(schema, name, alias)

    def view_functions(self, rel: RelationFacts) -> list[FunctionFacts | None]:
        """The functions a view (and each view it reads, at any depth) calls of the database's own."""
        seen: set[int] = set()
        todo = [rel]
        out: list[FunctionFacts | None] = []
        while todo:
            r = todo.pop()
            if r.oid in seen or r.kind not in ("v", "m"):
                continue
            seen.add(r.oid)
            out += [fn for fn in map(self.catalog.function, r.functions) if fn is None or not fn.builtin]
            todo += [x for x in map(self.catalog.relation, r.relations) if x is not None]
        return out

    def unknown_item(self, schema: str | None, name: str, alias: tuple[str | None, list[str]]) -> _Item:
        self.missing_relation = True
        self.unknown_reads = True
        schemas = (schema,) if schema is not None else self.unqualified_schemas(name)
        rel = _Rel(alias[0] or name, [], schema=schema, unknown=(schemas, name))
        if alias[1]:  # column aliases name the first columns; what they are is not known
            rel.columns = [(a, _Val(frozenset(Source(s, name, f"#{i + 1}") for s in schemas), False, True))
                           for i, a in enumerate(alias[1])]
        return _Item([rel], rel.columns, [rel])

    def join(self, f: dict, scope: _Scope) -> _Item:
        left = self.from_item(f.get("larg"), scope)
        # The right side of a join sees the left side only if it is LATERAL (handled as a scope).
        lateral_scope = _Scope(scope.items + [left], scope.parent, scope.ctes, scope.params)
        right = self.from_item(f.get("rarg"), lateral_scope)
        using = _names(f.get("usingClause"))
        if f.get("isNatural"):
            right_names = {n for n, _ in right.columns}
            using = [n for n, _ in left.columns if n in right_names]
            unlisted = [r.fallback for side in (left, right) for r in side.rels if r.fallback is not None]
            if unlisted or left.open_rels or right.open_rels:
                # a side whose columns lineage does not list: the server may join on any of them
                self.oracle(self.read(_union([_any_column(left), _any_column(right), *unlisted, _OPAQUE])), "JOIN")
        merged: Columns = []
        for name in using:
            # The server finds the name on both sides (else it refuses the join); a side where
            # lineage does not has named an output otherwise than the server: any of its columns
            # may be the one joined on
            lv = _find(left, name) or _any_column(left)
            rv = _find(right, name) or _any_column(right)
            v = _either([lv, rv])
            merged.append((name, v))
            self.oracle(self.read(v), "JOIN")
        rest = [(n, v) for n, v in left.columns if n not in using] + \
               [(n, v) for n, v in right.columns if n not in using]
        columns = merged + rest
        # ON sees the join's two sides and the outer queries, not the FROM items before the join
        item_scope = _Scope([left, right], scope.parent, scope.ctes, scope.params)
        if f.get("quals") is not None:
            self.oracle(self.read(self.expr(f["quals"], item_scope)), "JOIN")
        alias = _alias(f)
        open_rels = left.open_rels + right.open_rels
        if alias[0]:
            columns = _rename(columns, alias[1])
            # (a side's function item whose columns lineage cannot list: so are the join's)
            unlisted = [r.fallback for r in left.rels + right.rels if r.fallback is not None]
            rel = _Rel(alias[0], columns, opaque=bool(open_rels),
                       fallback=_union(unlisted) if unlisted else None)
            return _Item([rel], columns, open_rels, hidden_rels=left.rels + right.rels)
        using_alias = (f.get("join_using_alias") or {}).get("aliasname")
        if using_alias:
            # ``JOIN ... USING (ssn) AS j`` (PostgreSQL 14): ``j`` names the merged columns, and
            # the sides keep their names (``j.ssn`` had resolved to an outer item called ``j``)
            return _Item(left.rels + right.rels + [_Rel(using_alias, merged)], columns, open_rels)
        return _Item(left.rels + right.rels, columns, open_rels)

    def range_function(self, f: dict, scope: _Scope) -> _Item:
        columns: Columns = []
        fn_scope = scope  # a function's arguments see the items before it, LATERAL or not
        single_name: str | None = None  # the item's name: its first function's, as the server names it
        fallback: _Val | None = None  # a result whose columns follow the arguments' types
        for i, entry in enumerate(_unnest_items(f)):
            n = _node(entry)
            items = n[1].get("items", []) if n is not None and n[0] == "List" else []
            call = items[0] if items else None
            coldefs = items[1] if len(items) > 1 else None
            arrays = self.unnest_of_arrays(call, fn_scope)
            name: str | None
            if arrays is not None:
                cols, name, more = arrays, "unnest", None
            else:
                cols, name, more = self.function_columns(call, coldefs, fn_scope)
            if more is not None:
                fallback = more if fallback is None else _union([fallback, more])
            if i == 0:
                single_name = name if name is not None else _colname(call)
            columns.extend(cols)
        if f.get("coldeflist") and len(f.get("functions") or ()) == 1:
            names = [(_node(c) or ("", {}))[1].get("colname", "?column?") for c in f["coldeflist"]]
            base = _union([v for _, v in columns] + ([fallback] if fallback is not None else []))
            if len(columns) != len(names):
                columns = [(nm, _Val(base.sources, False, base.opaque)) for nm in names]
            else:
                columns = [(nm, v) for nm, (_, v) in zip(names, columns, strict=False)]
        alias = _alias(f)
        if len(columns) == 1 and single_name is not None and alias[0] and not alias[1] \
                and columns[0][0] == single_name and len(f.get("functions") or ()) == 1:
            columns = [(alias[0], columns[0][1])]  # a scalar function's column takes the alias
        if f.get("ordinality"):
            columns.append(("ordinality", _NONE))
        columns = _rename(columns, alias[1])
        name = alias[0] or (single_name or "?")
        opaque = any(v.opaque and n == "*" for n, v in columns)
        rel = _Rel(name, columns, opaque=opaque, fallback=fallback, function_item=True)
        return _Item([rel], columns, [rel] if opaque else [])

    def unnest_of_arrays(self, call: Any, scope: _Scope) -> Columns | None:
        """``unnest(a, b, ...)`` whose every argument is visibly an array (``$1::int[]``, ``ARRAY[...]``):
        the ``anyarray`` overload, one column per argument, each element derived from its array
        (Django's bulk insert: ``INSERT ... SELECT * FROM UNNEST($1::int[], $2::text[])``, refused before
        as values of unknown columns written). Its rows follow the arrays' sizes. None otherwise."""
        n = _node(call)
        named = _names(n[1].get("funcname")) if n is not None and n[0] == "FuncCall" else None
        if n is None or named not in (["unnest"], ["pg_catalog", "unnest"]):
            return None  # (an ``unnest`` of another schema than pg_catalog: its own function, not this)
        args = n[1].get("args") or []
        if not args or n[1].get("agg_star") or n[1].get("func_variadic") or n[1].get("agg_order"):
            return None
        for arg in args:
            a = _node(arg)
            if a is None or not (a[0] == "A_ArrayExpr"
                                 or a[0] == "TypeCast" and (a[1].get("typeName") or {}).get("arrayBounds")
                                 # pg_catalog's own (the server's expansion of unnest(a, b) names it so):
                                 # a base column of an array type is the anyarray overload's
                                 or a[0] == "ColumnRef" and len(named) == 2 and self.an_array(a[1], scope)):
                return None
        columns: Columns = []
        steering: list[_Val] = []
        for arg in args:
            v = self.read(self.expr(arg, scope))
            columns.append(("unnest", _Val(v.sources, False, v.opaque)))
            steering.append(self.array_dimensions(arg, v, scope))
        self.oracle(_union(steering), "rows")
        return columns

    def function_columns(self, call: Any, coldefs: Any, scope: _Scope) -> tuple[Columns, str | None, _Val | None]:
        """The columns a function in FROM returns: from its SQL body, its declared result, else
        opaque; and, for a built-in whose result type follows its arguments' (anyelement, record:
        ``jsonb_populate_record(NULL::users, ...)`` returns users' columns), what any other
        column of it holds (derived from every argument), else None."""
        n = _node(call)
        if n is None or n[0] != "FuncCall":
            # an expression (coalesce(...), CAST(... AS users), CURRENT_DATE): a row of its type's
            # columns, which the text does not list
            v = self.read(self.expr(call, scope))
            return [], None, _Val(v.sources, False, v.opaque)
        f = n[1]
        names = _names(f.get("funcname"))
        fname = names[-1] if names else "?"
        args = [self.read(self.expr(a, scope)) for a in f.get("args") or ()]
        argv = _union(args)
        listed = _node(coldefs)  # ROWS FROM (f() AS (a text), ...): a List of column definitions
        coldefs = listed[1].get("items") if listed is not None and listed[0] == "List" else coldefs
        if coldefs and isinstance(coldefs, list):
            defs = [(_node(c) or ("", {}))[1].get("colname", "?column?") for c in coldefs]
        else:
            defs = []
        candidates = self.functions(names, len(args))
        # How many rows it returns follows its arguments: generate_series(1, ascii(ssn)).
        if not candidates or any(fn.returns_set for fn in candidates):
            self.oracle(self.steering(fname, candidates, f.get("args") or (), args, scope), "rows")
        if any(runs_built_sql(fn) for fn in candidates):
            # what it reads, and which rows its criteria keep, are named at run time: a value of
            # unknown columns, whose rows are an oracle of them
            self.oracle(_OPAQUE, "rows")
        if fname in _READS_BY_NAME or fname.startswith("dblink") or not candidates \
                or any(runs_built_sql(fn) for fn in candidates):
            self.unknown_reads = True
            if defs:
                return [(d, _Val(argv.sources | {UNTRACED}, False, True)) for d in defs], fname, None
            out: Columns = []
            self.star_unknown(out)
            return out, fname, None
        results: list[Columns] = []
        for fn in candidates:
            results.append(self.function_result(fn, defs, fname))
        columns, alike = _merge_alternatives(results) if len(results) > 1 else (results[0], True)
        if argv.sources or argv.opaque:
            columns = [(nm, _Val(v.sources | argv.sources, False, v.opaque or argv.opaque)) for nm, v in columns]
        # Overloads of other shapes (unnest(anyarray) and unnest(tsvector): which one the server
        # picks is its to say, and so are the columns' number and positions), or a result whose
        # columns are its arguments' type's: what `*` makes of it is unknown
        polymorphic = not defs and any(
            not fn.result_columns and fn.result_type in _ROW_POLYMORPHIC
            # (an SQL body returning ``record`` lists its columns: the column definition list names them)
            and (fn.builtin or fn.result_type != _RECORD or fn.language != "sql") for fn in candidates)
        if polymorphic or not alike:  # no column it lists is sure to be the server's
            every = _union([v for _, v in columns])
            return [], fname, _Val(argv.sources | every.sources, False, argv.opaque or every.opaque)
        return columns, fname, None

    def function_result(self, fn: FunctionFacts, defs: list[str], fname: str) -> Columns:
        names = list(fn.result_columns)
        if not names and fn.result_relation:
            cols = self.catalog.columns_of(fn.result_relation)
            names = [c.name for c in cols] if cols is not None else []
        if not names and defs:
            names = defs
        found = revealing_function(fn)
        if fn.builtin or found is not None:  # what a built-in returns is computed from its arguments
            out = [(nm, _NONE) for nm in names] if names else [(fname, _NONE)]
            if found is not None:
                traced, revealing = found
                out = [(nm, _revealing(traced, nm) if not revealing or nm in revealing else v) for nm, v in out]
            return out
        body = self.body_outputs(fn)
        if body is not None and (not names or len(body) == len(names)):
            if not names:
                names = [fname] if len(body) == 1 else [n for n, _ in body]
            return [(nm, v) for nm, (_, v) in zip(names, body, strict=False)]
        # By the declared type: the values may come from anywhere the body reads.
        extra = self.body_reads(fn)
        if names:
            guesses = self.catalog.columns_of(fn.result_relation) if fn.result_relation else None
            rel = self.catalog.relation(fn.result_relation) if fn.result_relation else None
            out = []
            for i, nm in enumerate(names):
                sources = set(extra.sources)
                if guesses is not None and rel is not None and i < len(guesses) and rel.kind != "c":
                    sources.add(Source(_schema(rel.schema), rel.name, guesses[i].name))
                out.append((nm, _Val(frozenset(sources), False, True)))
            return out
        self.shape_unknown = True
        return [(fname, _Val(extra.sources, False, True))]

    # ------------------------------------------------------------------ writes

    def write(self, kind: str, f: dict, parent: _Scope | None) -> Columns | None:
        scope = _Scope([], parent)
        self.with_clause(f.get("withClause"), scope)
        target = self.range_var(f.get("relation") or {}, scope, table=True)
        rel = target.rels[0]
        instead = self.rule_actions(kind, f.get("relation") or {}, rel)
        stored = self.stored_expressions(kind, f.get("relation") or {})
        if stored is not None:
            self._written([("", stored)])
        if kind == "InsertStmt":
            select = f.get("selectStmt")
            values = self.query(select, scope) if select is not None else []
            self._written(values)
            for c in f.get("cols") or ():  # (a column list's subscripts: INSERT INTO t (a[i]) ...)
                self._written([("", self.set_value(c, scope, value=False))])
            on_conflict = _node(f.get("onConflictClause")) if f.get("onConflictClause") else None
            conflict = on_conflict[1] if on_conflict else (f.get("onConflictClause") or {})
            if conflict:
                # EXCLUDED is the row proposed for insertion: the values given (the agent's own
                # constants in an ORM's upsert), a default's for the others, never what is stored
                named = [(_node(c) or ("", {}))[1].get("name") for c in f.get("cols") or ()]
                names = named or [n for n, _ in rel.columns]
                given = dict(zip(names, (v for _, v in values), strict=False)) \
                    if select is not None and len(values) == len(names) else None
                default = stored if stored is not None else _NONE
                excluded = _Rel("excluded", rel.columns, unknown=rel.unknown) if given is None else \
                    _Rel("excluded", [(n, given.get(n, default)) for n, _ in rel.columns], unknown=rel.unknown)
                cscope = _Scope([target, _Item([excluded], [], [])], scope.parent, scope.ctes)
                # The arbiter's columns are compared with the row proposed: whether it conflicts
                # (the row RETURNING gives back, the command tag's count) says whether a stored
                # value equals the one given (red team seven: ON CONFLICT (ssn) DO UPDATE ...
                # RETURNING id named whose SSN a guess was). An arbiter the text does not name
                # (ON CONSTRAINT, none) is the channel a unique violation's failure is: documented.
                infer = conflict.get("infer") or {}
                wrapped = _node(infer) if "indexElems" not in infer else None
                if wrapped is not None:
                    infer = wrapped[1]
                tscope = _Scope([target], scope.parent, scope.ctes)
                for element in infer.get("indexElems") or ():
                    elem = (_node(element) or ("", {}))[1]
                    if elem.get("name"):
                        column = {"ColumnRef": {"fields": [{"String": {"sval": elem["name"]}}]}}
                        self.oracle(self.read(self.expr(column, tscope)), "JOIN")
                    elif elem.get("expr") is not None:
                        self.oracle(self.read(self.expr(elem["expr"], tscope)), "JOIN")
                if infer.get("whereClause") is not None:
                    self.oracle(self.read(self.expr(infer["whereClause"], tscope)), "WHERE")
                for t in conflict.get("targetList") or ():
                    self._written([("", self.set_value(t, cscope))])
                if conflict.get("whereClause") is not None:
                    self.oracle(self.read(self.expr(conflict["whereClause"], cscope)), "WHERE")
            scope.items.append(target)
        elif kind == "UpdateStmt":
            scope.items.append(target)
            for item in f.get("fromClause") or ():
                scope.items.append(self.from_item(item, scope))
            for t in f.get("targetList") or ():
                self._written([("", self.set_value(t, scope))])
            if f.get("whereClause") is not None:
                self.oracle(self.read(self.expr(f["whereClause"], scope)), "WHERE")
        elif kind == "DeleteStmt":
            scope.items.append(target)
            for item in f.get("usingClause") or ():
                scope.items.append(self.from_item(item, scope))
            if f.get("whereClause") is not None:
                self.oracle(self.read(self.expr(f["whereClause"], scope)), "WHERE")
        else:  # MERGE
            scope.items.append(target)
            scope.items.append(self.from_item(f.get("sourceRelation"), scope))
            if f.get("joinCondition") is not None:
                self.oracle(self.read(self.expr(f["joinCondition"], scope)), "JOIN")
            for w in f.get("mergeWhenClauses") or ():
                wf = (_node(w) or ("", {}))[1]
                if wf.get("condition") is not None:
                    self.oracle(self.read(self.expr(wf["condition"], scope)), "WHERE")
                for t in wf.get("targetList") or ():
                    self._written([("", self.set_value(t, scope))])
                for v in wf.get("values") or ():
                    self._written([("", self.read(self.expr(v, scope)))])
        returning = f.get("returningClause") or {}
        rn = _node(returning)
        rfields = rn[1] if rn is not None else returning
        exprs = rfields.get("exprs") or f.get("returningList")
        if not exprs:
            return None
        aliases = {"old": "old", "new": "new"}
        for o in rfields.get("options") or ():
            of = (_node(o) or ("", {}))[1]
            aliases["old" if of.get("option") == "RETURNING_OPTION_OLD" else "new"] = of.get("value", "")
        extra = [_Item([_Rel(a, rel.columns, unknown=rel.unknown)], [], []) for a in aliases.values() if a]
        rscope = _Scope(scope.items + extra, scope.parent, scope.ctes)
        returned = self.targets(exprs, rscope)
        if stored is not None:  # a column the row took from its default or generation
            returned = [(n, _Val(v.sources | stored.sources, False, v.opaque or stored.opaque)) for n, v in returned]
        if instead is not None:
            # an INSTEAD rule's action returns the rows, under the names and types of this RETURNING
            # (the server describes them as the target's columns): each may be any of its values
            return [(n, _Val(v.sources | instead.sources, False, v.opaque or instead.opaque)) for n, v in returned]
        return returned

    def stored_expressions(self, kind: str, relation: dict) -> _Val | None:
        """What the expressions a written row goes through read: its columns' defaults (a domain's
        too), generated columns, CHECK constraints (the catalog's 'd' effects: the functions they
        call). A value taken from them is written and returned as any (a default of
        ``lookup_ssn(1)`` had returned, and stored, the SSN in clear). None when they read nothing."""
        if kind not in _RULE_EVENTS or kind == "DeleteStmt":
            return None
        found = self.relations(relation.get("schemaname"), relation.get("relname", ""))
        functions = {target for facts in found for k, target in facts.effects if k == "d"}
        values: list[_Val] = []
        for oid in sorted(functions):
            fn = self.catalog.function(oid)
            if fn is None:
                self.unknown_reads = True
                values.append(_OPAQUE)
            elif fn.name in _READS_BY_NAME or runs_built_sql(fn):
                self.unknown_reads = True
                values.append(_OPAQUE)
            elif not fn.builtin:
                values.append(self.body_reads(fn))
        v = _union(values) if values else _NONE
        return v if v.sources or v.opaque else None

    def rule_actions(self, kind: str, relation: dict, rel: _Rel) -> _Val | None:
        """Walks the rules the server's rewriter adds to a write of ``relation`` (CREATE RULE ... ON
        INSERT/UPDATE/DELETE ... DO [ALSO | INSTEAD] <actions>), ``new`` and ``old`` its columns: what
        they read, their conditions (an oracle comparing a masked column with a value written, and
        its effect seen), what they write. With an INSTEAD rule, what its actions return (that is what
        the statement's RETURNING returns); None without one.
        (Ignored before: ``INSERT INTO audit VALUES (1, '1%')`` ran ``... WHERE ssn LIKE new.ssn``.)"""
        event = _RULE_EVENTS.get(kind)
        found = self.relations(relation.get("schemaname"), relation.get("relname", ""))
        definitions = [d for facts in found for d in facts.rules]
        if event is None or not definitions:
            return None
        if self.depth > 8:  # rules writing tables with rules: the server refuses a loop; so does this
            self.unknown_reads = self.shape_unknown = True
            return _OPAQUE
        rows = _Item([_Rel("new", rel.columns), _Rel("old", rel.columns)], [], [])
        instead: list[_Val] | None = None
        for definition in definitions:
            try:
                tree = parse_tree(definition)
                rule = next(iter(tree["stmts"]))["stmt"]["RuleStmt"]
            except Exception:  # noqa: BLE001 - a rule that cannot be read: what it does is unknown
                self.unknown_reads = self.shape_unknown = True
                return _OPAQUE
            if rule.get("event") != event:
                continue
            self.depth += 1
            try:
                returned = self.rule_body(rule, rows)
            finally:
                self.depth -= 1
            if rule.get("instead"):
                instead = (instead or []) + returned
        return None if instead is None else _union(instead) if instead else _NONE

    def rule_body(self, rule: dict, rows: _Item) -> list[_Val]:
        """Walks one rule's condition and actions; the values its actions return."""
        returned: list[_Val] = []
        scope = _Scope([rows], None)
        if rule.get("whereClause") is not None:
            self.oracle(self.read(self.expr(rule["whereClause"], scope)), "WHERE")
        for action in rule.get("actions") or ():
            node = _node(action)
            if node is None:
                continue
            if node[0] in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
                returned += [v for _, v in self.write(node[0], node[1], scope) or ()]
            elif node[0] == "SelectStmt":
                for _, v in self.query(action, scope):
                    self.read(v)
                self.shape_unknown = True  # its rows go to the client too
            elif node[0] != "NotifyStmt":
                self.unknown_reads = self.shape_unknown = True
        return returned

    # ------------------------------------------------------------------ names

    def schemas(self) -> tuple[str, ...]:
        if self._schemas is None:
            self._schemas = self.ctx.schemas()
        return self._schemas

    def relations(self, schema: str | None, name: str) -> list[RelationFacts]:
        """The relations ``schema.name`` may be: the first on the search_path (every one it may
        be when the path is uncertain)."""
        found = list(self.catalog.relations_named(name))
        if schema is not None:
            return [r for r in found if _schema(r.schema) == _schema(schema)]
        if self.ctx.search_path is None:
            return found
        # A temporary table comes first, but the catalog holds every session's (pg_temp_N), and
        # which one is this session's is not known: it is one more possibility, never the answer.
        temporary = [r for r in found if _schema(r.schema) == "pg_temp"]
        for s in self.schemas():
            if s == "pg_temp":
                continue
            here = [r for r in found if _schema(r.schema) == s]
            if here:
                return temporary + here[:1]
        return temporary

    def unqualified_schemas(self, name: str) -> tuple[str, ...]:
        from pgwarden.sql.resolve import _Resolver

        return tuple(sorted(s.partition(".")[0] for s in _Resolver(self.ctx)._qualified(None, name)))

    def relation_columns(self, rel: RelationFacts) -> Columns | None:
        schema = _schema(rel.schema)
        if rel.kind in ("v", "m"):
            return self.view_columns(rel)
        if rel.kind == "t":
            return self.toast_columns(rel)
        cache: dict = self.catalog.derived.setdefault("lineage tables", {})
        known = cache.get(rel.oid)
        if known is None:
            cols = self.catalog.columns_of(rel.oid)
            if cols is None:
                return None
            below = self._descendants(rel)
            above = self._ancestors(rel)
            # A foreign table's rows are what its server returns: postgres_fdw over a loopback
            # server reads the masked table itself (red team nine), so each of its columns may hold
            # any column's value (`reveals_values`), whatever rule names it
            remote = (lambda c: frozenset({Source("pg_catalog", f"{FOREIGN}:{rel.name}", c)})) \
                if rel.kind == "f" else (lambda c: _NO_SOURCES)
            known = cache[rel.oid] = [
                (c.name, _Val(frozenset({Source(schema, rel.name, c.name)}) | below.get(c.name, _NO_SOURCES)
                              | above.get(c.name, _NO_SOURCES) | remote(c.name), True, False))
                for c in cols]
        return known

    def policy_conditions(self, rel: RelationFacts) -> frozenset[Source]:
        """The conditions of ``rel``'s row-level security policies (USING, WITH CHECK): the server
        adds them to a statement that reads or writes it, so what they read is read and what they
        test is an oracle of the statement's, as its own WHERE's would be (red team eight: a
        policy's subquery over a view later replaced to return the SSN filtered the agent's own
        table by it). A condition pgwarden cannot read: what the statement reads is unknown.
        Returns what decides which rows pass: the columns the conditions read and test."""
        cache: dict = self.catalog.derived.setdefault("lineage policies", {})
        known = cache.get(rel.oid)
        if known == "pending":  # (a policy reading its own table: the server refuses it, recursion)
            return frozenset()
        if known is None:
            cache[rel.oid] = "pending"
            try:
                known = self._policy_lineage(rel)
            finally:
                cache.pop(rel.oid, None)
            cache[rel.oid] = known
        reads, oracles = known
        if reads is None:
            self.unknown_reads = True
        else:
            self.reads |= reads
        if self.record_oracles:
            for use in oracles:
                self.oracles[use] = None
        return (reads or frozenset()) | frozenset(use.source for use in oracles)

    def _policy_lineage(self, rel: RelationFacts) -> tuple[frozenset[Source] | None, tuple[OracleUse, ...]]:
        columns = self.relation_columns(rel)
        if columns is None or self.depth > 32:
            return None, (OracleUse(UNTRACED, "policy"),)
        walker = _Walker(self.ctx, depth=self.depth + 1)
        table = _Rel(rel.name, columns, schema=rel.schema, system=True)
        scope = _Scope([_Item([table], columns, [])])
        try:
            for expression in rel.policies:
                stmt = parse_tree(f"SELECT WHERE ({expression})")["stmts"][0]["stmt"]["SelectStmt"]
                walker.oracle(walker.read(walker.expr(stmt["whereClause"], scope)), "policy")
        except Exception:  # noqa: BLE001 - a condition pgwarden cannot read: unknown, and an oracle
            return None, (OracleUse(UNTRACED, "policy"),)
        # (whatever clause of the condition tests a column: which rows come back says it)
        oracles = tuple(dict.fromkeys(OracleUse(use.source, "policy") for use in walker.oracles))
        if walker.missing_relation:  # (a name the catalog no longer knows: the text is stale)
            return None, (*oracles, OracleUse(UNTRACED, "policy"))
        return (None if walker.unknown_reads else frozenset(walker.reads)), oracles

    def toast_columns(self, rel: RelationFacts) -> Columns | None:
        """A TOAST relation's columns (chunk_id, chunk_seq, chunk_data): its chunks are the values
        of its owner's columns stored out of line (`RelationFacts.effects` 'o'), so each is derived
        from every column of the owner (red team eight: `WHERE position('<guess>' in chunk_data)
        > 0` over pg_toast.pg_toast_N had been no oracle). An owner the catalog does not give: a
        value of unknown columns."""
        cols = self.catalog.columns_of(rel.oid)
        if cols is None:
            return None
        sources: set[Source] = set()
        opaque = False
        owners = [target for kind, target in rel.effects if kind == "o"]
        for oid in owners:
            owner = self.catalog.relation(oid)
            columns = self.relation_columns(owner) if owner is not None and owner.kind != "t" else None
            if columns is None:
                opaque = True
                continue
            for _, v in columns:
                sources |= v.sources
                opaque = opaque or v.opaque
        if opaque or not owners:
            sources.add(UNTRACED)
        value = _Val(frozenset(sources), False, opaque or not owners)
        return [(c.name, value) for c in cols]

    def _ancestors(self, rel: RelationFacts) -> dict[str, frozenset[Source]]:
        """The same-named columns of the tables ``rel`` is a partition or an inheritance child of, at
        any depth: its rows are theirs (read through the parent they are), so a rule masking the
        parent's column masks the child's read by its own name (it did not: ``SELECT ssn FROM
        ledger_2024`` returned what ``ledger.ssn``'s rule masks)."""
        parents = inheritance_parents(self.catalog)
        return self._family(rel, lambda r: parents.get(r.oid, ()))

    def _descendants(self, rel: RelationFacts) -> dict[str, frozenset[Source]]:
        """The same-named columns of ``rel``'s partitions and inheritance children, at any depth:
        reading the table reads their rows, so a rule masking a child's column masks the parent's
        column (its own rows too: over-masked, never under; ``ONLY`` is not told apart)."""
        return self._family(rel, lambda r: [target for kind, target in r.effects if kind == "i"])

    def _family(self, rel: RelationFacts,
                step: Callable[[RelationFacts], Iterable[int]]) -> dict[str, frozenset[Source]]:
        """The columns of the relations ``step`` reaches from ``rel``, at any depth, by name."""
        found: dict[str, set[Source]] = {}
        seen = {rel.oid}
        todo = list(step(rel))
        while todo:
            oid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            other = self.catalog.relation(oid)
            cols = self.catalog.columns_of(oid) if other is not None else None
            if other is None or cols is None:
                continue  # (not in the same load: cannot be, the effects came with it)
            for c in cols:
                found.setdefault(c.name, set()).add(Source(_schema(other.schema), other.name, c.name))
            todo += step(other)
        return {name: frozenset(sources) for name, sources in found.items()}

    def view_columns(self, view: RelationFacts) -> Columns | None:
        """A view's columns as its definition computes them (views inside it followed)."""
        cache: dict = self.catalog.derived.setdefault("lineage views", {})
        known = cache.get(view.oid)
        if known is None:
            known = cache[view.oid] = self._view_lineage(view, cache)
        if known == "pending":  # a view inside its own definition: cannot be
            self.unknown_reads = True
            return None
        columns, reads, oracles = known
        if self.record_oracles:
            # What its definition filters, orders or groups by, every read of it does: a view
            # is a query the reader runs (`CREATE VIEW v AS ... WHERE substr(ssn, i, 1) = d`).
            for use in oracles:
                self.oracles[use] = None
        if columns is None:
            return None
        if reads is None:
            self.unknown_reads = True
        else:
            self.reads |= reads
        return columns  # type: ignore[no-any-return]  # what _view_lineage stored

    def _view_lineage(self, view: RelationFacts, cache: dict) -> Any:
        cols = self.catalog.columns_of(view.oid)
        if view.definition is None or cols is None or self.depth > 32:
            return (None, None, ())
        cache[view.oid] = "pending"
        try:
            tree = parse_tree(view.definition)
            stmts = tree.get("stmts", [])
            walker = _Walker(self.ctx, depth=self.depth + 1)
            columns = walker.query(stmts[0].get("stmt"), None) if len(stmts) == 1 else None
        except Exception:  # noqa: BLE001 - a definition pgwarden cannot read: unknown
            columns = None
        finally:
            cache.pop(view.oid, None)
        # A relation the catalog does not know in a view's definition: the text is stale (the
        # definition is kept while the view's rule is unchanged, but a table it reads may have
        # been renamed since, and pg_get_viewdef printed the old name): nothing can be told.
        if columns is None or walker.shape_unknown or walker.missing_relation or len(columns) != len(cols):
            return (None, None, ())
        named = [(c.name, v) for c, (_, v) in zip(cols, columns, strict=False)]
        return (named, None if walker.unknown_reads else frozenset(walker.reads), tuple(walker.oracles))

    def lookup(self, names: list[str], scope: _Scope) -> _Val | None:
        """A column reference as the server resolves it, innermost scope first; None when it
        names no column (it may name a whole row)."""
        # A function's result whose columns lineage cannot list (`_Rel.fallback`) may have a
        # column of that name, or not (the server then looks further out): both count.
        maybe: list[_Val] = []

        def found(v: _Val | None) -> _Val | None:
            return _union(maybe + [v] if v is not None else maybe) if maybe else v

        s: _Scope | None = scope
        while s is not None:
            if len(names) == 1:
                name = names[0]
                hits = [v for item in s.items for v in [_find(item, name)] if v is not None]
                if hits:
                    return found(hits[0] if len(hits) == 1 else _union(hits))
                # (a SQL function's parameter is not looked up here: the server takes one only when
                # no query level has a column or a FROM item of that name, `column_ref`; ``u`` in
                # ``SELECT u::text FROM users u`` of a function taking ``u text`` is the whole row)
                # (a stored relation of the FROM list itself: inside a join, the server does not
                # find system columns unqualified, and looks further out)
                if name in SYSTEM_COLUMNS and any(len(item.rels) == 1 and item.rels[0].system for item in s.items):
                    return found(_NONE)
                opens = [r for item in s.items for r in item.open_rels]
                if opens:
                    in_open = [v for r in opens for v in [r.find(name)] if v is not None]
                    if in_open:
                        return found(in_open[0] if len(in_open) == 1 else _union(in_open))
                maybe += [r.fallback for item in s.items for r in item.rels if r.fallback is not None]
            else:
                rel = self._rel_at(names[:-1], s)
                if rel is not None:
                    return rel.find(names[-1])
            s = s.parent
        return found(None)

    def _rel_at(self, qualifier: list[str], s: _Scope) -> _Rel | None:
        for item in s.items:
            for rel in item.rels:
                # schema.table names a stored relation by its own name, never a sub-select, a
                # WITH item or an alias (the server looks further out for it)
                if rel.name == qualifier[-1] and (len(qualifier) == 1 or (
                        rel.schema is not None and _schema(rel.schema) == qualifier[-2])):
                    return rel
        return None

    def find_rel(self, qualifier: list[str], scope: _Scope) -> _Rel | None:
        s: _Scope | None = scope
        while s is not None:
            rel = self._rel_at(qualifier, s)
            if rel is not None:
                return rel
            s = s.parent
        return None

    def column_of(self, rel: _Rel, name: str) -> _Val:
        v = rel.find(name)
        if v is None:
            self.unknown_reads = True
            return _OPAQUE
        return v

    def functions(self, names: list[str], nargs: int) -> list[FunctionFacts]:
        if not names:
            return []
        schema = names[-2] if len(names) > 1 else None
        out = []
        schemas = self.schemas()
        for fn in self.catalog.functions_named(names[-1]):
            if schema is not None and _schema(fn.schema) != schema:
                continue
            if schema is None and self.ctx.search_path is not None and _schema(fn.schema) not in schemas:
                continue
            if fn.accepts(nargs):
                out.append(fn)
        self.note_folding(out)
        return out

    def note_folding(self, functions: Iterable[FunctionFacts | None]) -> None:
        """Notes what an IMMUTABLE function of the database's own reads (the planner folds a call of
        one with constant arguments into a constant an EXPLAIN prints): `Lineage.own_code`."""
        for fn in functions:
            if fn is None:
                self.own_code = True
                self.folded_unknown = True
            elif not fn.builtin and fn.volatility == "i":
                self.own_code = True
                if fn.source is None or fn.language not in ("sql", "plpgsql"):
                    self.folded_unknown = True  # (C code of an extension: what it reads is not known)
                    continue
                # (what the statement reads is not changed by noting what the function reads)
                unknown, reads_before = self.unknown_reads, set(self.reads)
                self.unknown_reads = False
                if fn.language == "sql":  # its body traced with its parameters
                    body = self.body_outputs(fn)
                    read = set(self.reads) - reads_before
                    if body is None:
                        self.unknown_reads = True
                    else:
                        read |= {source for _, v in body for source in v.sources}
                else:
                    value = self.body_reads(fn)
                    read = set(value.sources)
                    self.unknown_reads = self.unknown_reads or value.opaque
                if self.unknown_reads:
                    self.folded_unknown = True
                self.folded |= read - {UNTRACED}
                self.unknown_reads, self.reads = unknown, reads_before

    # ------------------------------------------------------------------ expressions

    def expr(self, node: Any, scope: _Scope, output: bool = False) -> _Val:
        n = _node(node)
        if n is None:
            if isinstance(node, list):
                return _union(self.expr(x, scope) for x in node)
            return _NONE
        kind, f = n
        if kind == "ColumnRef":
            return self.column_ref(f, scope)
        if kind in ("A_Const", "ParamRef", "SQLValueFunction", "SetToDefault", "A_Star", "String",
                    "Integer", "Float", "Boolean", "BitString", "TypeName"):
            return _NONE
        if kind == "CollateClause":
            return self.expr(f.get("arg"), scope, output)
        if kind == "TypeCast":
            v = self.expr(f.get("arg"), scope)
            hidden = self.hidden_functions(self.cast_functions(_names(_type_name(f.get("typeName")).get("names"))))
            return _Val(v.sources | hidden.sources, False, v.opaque or hidden.opaque)
        if kind == "A_Expr":
            v = _union(self.expr(child, scope) for child in _children(f))
            oids = self.operator_functions(_names(f.get("name")))
            sets = [fn for fn in map(self.ctx.catalog.function, oids) if fn is None or fn.returns_set]
            if sets:
                # an operator whose function returns a set multiplies rows as its call would (red
                # team thirteen: `CREATE OPERATOR #~# (FUNCTION = generate_series, ...)`, then
                # `count(*)` of `1 #~# ascii(substr(ssn, 1, 1))` counted the SSN's characters' codes)
                known = [fn for fn in sets if fn is not None]
                self.oracle(self.steering("", known, (), [v], scope) if len(known) == len(sets) else _union(
                    [v, _OPAQUE]), "rows")
            hidden = self.hidden_functions(oids)
            if hidden is _NONE:
                return v
            return _Val(v.sources | hidden.sources, False, v.opaque or hidden.opaque)
        if kind == "A_Indirection":
            return self.indirection(f, scope)
        if kind == "SubLink":
            return self.sublink(f, scope)
        if kind == "FuncCall":
            return self.call(f, scope, output)
        if kind == "CaseExpr":
            conds: list[_Val] = []
            results: list[_Val] = []
            for w in f.get("args") or ():
                wf = (_node(w) or ("", {}))[1]
                conds.append(self.expr(wf.get("expr"), scope))
                results.append(self.expr(wf.get("result"), scope))
            arg = self.expr(f.get("arg"), scope)
            results.append(self.expr(f.get("defresult"), scope))
            for c in conds + [arg]:
                self.oracle(c, "CASE")
            return _union(conds + results + [arg])
        if kind in ("SelectStmt",):  # e.g. JSON_ARRAY(SELECT ...)
            return _union(v for _, v in self.query(node, scope))
        if kind in ("RangeVar", "JoinExpr", "RangeSubselect", "RangeFunction"):
            self.unknown_reads = True
            return _OPAQUE
        # Any other expression: derived from everything inside it.
        return _union(self.expr(child, scope) for child in _children(f))

    def column_ref(self, f: dict, scope: _Scope) -> _Val:
        fields = f.get("fields") or []
        names = _names(fields)
        if len(names) != len(fields):  # t.* inside an expression: the whole row
            rel = self.find_rel(names, scope) if names else None
            if rel is None and not names:
                return _union(it.columns[i][1] for it in scope.items for i in range(len(it.columns))) \
                    if not any(it.open_rels for it in scope.items) else self._opaque_read()
            return rel.whole() if rel is not None else self._opaque_read()
        v = self.lookup(names, scope)
        rel = self.find_rel(names, scope)
        if v is not None:
            if rel is not None and (rel.unknown is not None or rel.opaque):
                # ``u`` where u's columns are not known: a column u, or the whole row of u
                self.unknown_reads = True
                return _Val(v.sources | rel.whole().sources, False, True)
            return v
        if rel is not None:  # a whole-row reference: u, s.u
            w = rel.whole()
            if w.opaque:
                self.unknown_reads = True
            return w
        if len(names) >= 2:
            # t.f on a row: a column of t named f, or the function f applied to the row
            rel = self.find_rel(names[:-1], scope)
            if rel is not None:
                w = rel.whole()
                fns = [fn for fn in self.catalog.functions_named(names[-1]) if fn.nargs == 1]
                opaque = w.opaque or any(not fn.builtin for fn in fns)
                if opaque:
                    self.unknown_reads = True
                return _Val(w.sources, False, opaque)
        if len(names) == 1 and names[0] in scope_params(scope):
            return _NONE
        if len(names) == 1:
            added = self.added_column(names[0], scope)
            if added is not None:
                return added
        return self._opaque_read()

    @staticmethod
    def added_column(name: str, scope: _Scope) -> _Val | None:
        """An unqualified name no column in scope has, where every FROM item at every level is a
        table whose columns the catalog lists: a column one of them has had added since the catalog
        was read, or none at all (a typo: ``WHERE amout > 3``, which the server refuses, naming
        it). Its sources are that column of each of those tables, which mask rules match by name
        (``public.*.notes``) as any column's; it was a value of any column before, an oracle of
        every masked one, refused in a WHERE of a table without any. None when an item may hold
        columns lineage does not list (a sub-select, a function, a view, a join's alias): as before."""
        sources: set[Source] = set()
        s: _Scope | None = scope
        while s is not None:
            for item in s.items:
                if item.open_rels:
                    return None
                for rel in item.rels:
                    if rel.stored is None or rel.opaque or rel.unknown is not None or rel.fallback is not None:
                        return None
                    sources.add(Source(_schema(rel.stored[0]), rel.stored[1], name))
            s = s.parent
        if not sources:
            return None
        return _Val(frozenset(sources), len(sources) == 1, False)

    def _opaque_read(self) -> _Val:
        self.unknown_reads = True
        return _OPAQUE

    def indirection(self, f: dict, scope: _Scope) -> _Val:
        ind = f.get("indirection") or []
        field = _str(ind[0]) if len(ind) == 1 else None
        if field is not None:
            fields = self.composite(f.get("arg"), scope)
            found = [v for name, v in fields or () if name == field]
            if found:
                return found[0] if len(found) == 1 else _union(found)
        v = self.expr(f.get("arg"), scope)
        rest = _union(self.expr(i, scope) for i in ind)
        return _Val(v.sources | rest.sources, False, v.opaque or rest.opaque)

    def sublink(self, f: dict, scope: _Scope) -> _Val:
        kind = f.get("subLinkType", "")
        columns = self.query(f.get("subselect"), scope)
        # (its output's name, for an output named after it: kept by the node, alive with the tree)
        first = columns[0] if columns else None
        self.sublink_names[id(f.get("subselect"))] = None if first is None or (
            first[0] == "*" and first[1].opaque) else first[0]  # ("*" opaque: columns not known)
        test = self.expr(f.get("testexpr"), scope) if f.get("testexpr") is not None else _NONE
        if kind == "EXPR_SUBLINK" and len(columns) == 1:
            sub = (_node(f.get("subselect")) or ("", {}))[1]
            targets = sub.get("targetList") or ()
            if len(targets) == 1 and sub.get("op", "SETOP_NONE") == "SETOP_NONE":
                val = _node((_node(targets[0]) or ("", {}))[1].get("val"))  # type: ignore[misc]
                if val is not None and id(val[1]) in self.shaped:
                    self.shaped.add(id(f))  # (SELECT to_jsonb(u) FROM users u WHERE id = 1)
            return columns[0][1]
        if kind == "EXISTS_SUBLINK":
            return _NONE  # its value follows the sub-query's filters (listed as oracles there)
        inner = _union(v for _, v in columns)
        if kind in ("ANY_SUBLINK", "ALL_SUBLINK", "ROWCOMPARE_SUBLINK"):
            return _union([test, inner])
        return _Val(inner.sources | test.sources, False, inner.opaque or test.opaque)

    def operator_functions(self, names: list[str]) -> list[int]:
        """The functions (pg_proc OIDs) an operator of that name may call, any operand types."""
        if not names:
            return []
        catalog = self.ctx.catalog
        schema = names[-2] if len(names) > 1 else None
        found = [op.function for op in catalog.operators_named(names[-1]) if schema is None or op.schema == schema]
        self.note_folding(map(catalog.function, found))
        return found

    def cast_functions(self, names: list[str]) -> list[int]:
        """The functions a conversion to the type named may run (its casts from any type, a
        domain's CHECK, its input function): `Catalog.conversion`."""
        if not names:
            return []
        catalog = self.ctx.catalog
        return [oid for t in catalog.types_named(names[-1]) for oid in catalog.conversion(t.oid, True)]

    def hidden_functions(self, oids: list[int]) -> _Val:
        """What functions the text does not call by name (an operator's, a cast's) read, when they
        are the database's own: their whole bodies' reads (a value they return may be any of it)."""
        sources: set[Source] = set()
        opaque = False
        for oid in oids:
            fn = self.ctx.catalog.function(oid)
            if fn is None:
                opaque = opaque or oid >= FIRST_NORMAL_OID
                continue
            if fn.builtin:
                # A built-in that reads what its text argument names (ts_rewrite's query, ts_stat's)
                # or returns values of any column (another session's statement text), reached by an
                # operator or a cast of the agent's own (red team thirteen: `CREATE OPERATOR ###
                # (FUNCTION = ts_rewrite, ...)`, then `'a'::tsquery ### 'SELECT ..., ssn::tsquery
                # FROM users'` returned the SSN in clear): as its call by name is
                if fn.name in _READS_BY_NAME or fn.name.startswith("dblink"):
                    self.unknown_reads = True
                    sources.add(UNTRACED)
                    opaque = True
                found = revealing_function(fn)
                if found is not None:
                    sources.add(Source("pg_catalog", found[0], fn.name))
                continue
            extra = self.body_reads(fn)
            sources |= extra.sources
            opaque = True
        return _Val(frozenset(sources), False, opaque) if sources or opaque else _NONE

    def call(self, f: dict, scope: _Scope, output: bool) -> _Val:
        names = _names(f.get("funcname"))
        fname = names[-1] if names else "?"
        args = [self.expr(a, scope) for a in f.get("args") or ()]
        argv = _union(args)
        order = _union(self.expr((_node(s) or ("", {}))[1].get("node"), scope) for s in f.get("agg_order") or ())
        if f.get("agg_filter") is not None:
            self.oracle(self.read(self.expr(f["agg_filter"], scope)), "FILTER")
        # An ordered-set aggregate's WITHIN GROUP (ORDER BY ...) items are arguments too.
        nargs = len(args) + (len(f.get("agg_order") or ()) if f.get("agg_within_group") else 0)
        candidates = self.functions(names, nargs)
        if any(fn.returns_set for fn in candidates):
            # a set-returning function in an expression multiplies rows
            self.oracle(self.steering(fname, candidates, f.get("args") or (), args, scope), "rows")
        if candidates and all(fn.builtin for fn in candidates) and self.fixes_keys(fname, f, scope):
            self.shaped.add(id(f))
        aggregate = bool(f.get("agg_star") or f.get("agg_distinct") or f.get("agg_order")
                         or f.get("agg_within_group")) or any(fn.kind == "a" for fn in candidates)
        over = f.get("over")
        if over is not None:
            self.window({"WindowDef": over}, scope)
        elif aggregate:
            self.oracle(argv, "aggregate")
            self.oracle(order, "aggregate")
        value = _union([argv, order])
        sources, opaque = set(value.sources), value.opaque
        if fname in _READS_BY_NAME or fname.startswith("dblink") or any(runs_built_sql(fn) for fn in candidates):
            self.unknown_reads = True
            opaque = True
            sources.add(UNTRACED)  # (what it reads is named at run time: table_to_xml('users', ...))
            if any(runs_built_sql(fn) for fn in candidates):
                self.oracle(_OPAQUE, "rows")
        elif not candidates:
            # A function the catalog does not know (with the snapshot: any of the database's own).
            self.unknown_reads = True
            opaque = True
            sources.add(UNTRACED)
        for fn in candidates:
            found = revealing_function(fn)
            if found is not None:  # (a record or text holding a statement's text, a raw page)
                sources.add(Source("pg_catalog", found[0], fname))
            if fn.builtin:
                continue
            if fn.ndefaults and nargs < fn.nargs:
                # an argument left to its DEFAULT: an expression of the function's (proargdefaults)
                # that runs in the caller, which the catalog's facts do not hold: what it reads is
                # unknown, and so is the output
                self.unknown_reads = True
                opaque = True
            body = self.body_outputs(fn)
            if body is not None and len(body) >= 1:
                b = _union(v for _, v in body)
                sources |= b.sources
                opaque = opaque or b.opaque
            else:
                extra = self.body_reads(fn)
                sources |= extra.sources
                opaque = True
        return _Val(frozenset(sources), False, opaque)

    # ------------------------------------------------------------------ set-returning functions

    def steering(self, fname: str, candidates: list[FunctionFacts], nodes: Any, args: list[_Val],
                 scope: _Scope) -> _Val:
        """What decides how many rows a set-returning function returns: its arguments, except
        where the statement fixes their structure. unnest(ARRAY[email, ssn]) returns one row per
        element (NULLs too), jsonb_each(to_jsonb(u)) one per column of u: the values steer
        nothing. Anything else (unnest(string_to_array(ssn, '-')), jsonb_each(ssn::jsonb),
        generate_series(1, length(ssn))) counts what the masked value holds."""
        argv = _union(args)
        if candidates and not all(fn.builtin for fn in candidates):
            # code of the database's own whose conditions lineage does not follow (PL/pgSQL, an SQL
            # body it cannot trace): how many rows it returns may be anything it reads compared
            # with its arguments (``RETURN QUERY SELECT id FROM users WHERE ssn LIKE p`` answered a
            # guess by its rows), or with what the agent controls otherwise: a table it writes, a
            # setting it sets (``WHERE email LIKE current_setting('app.email')``), arguments or not
            hidden = [self.hidden_steering(fn) for fn in candidates
                      if not fn.builtin and (fn.language != "sql" or self.body_outputs(fn) is None)]
            return _union([argv, *hidden])
        if not candidates or len(args) != len(nodes):
            return argv
        if fname in _PER_KEY and len(nodes) == 1:
            n = _node(nodes[0])
            return _NONE if n is not None and id(n[1]) in self.shaped else argv
        if fname == "unnest":
            return _union(self.array_dimensions(node, v, scope) for node, v in zip(nodes, args, strict=True))
        return argv

    def array_dimensions(self, node: Any, v: _Val, scope: _Scope) -> _Val:
        """What decides the size of an array: nothing for ARRAY[...] of values that are not
        arrays themselves (an element that is an array adds a dimension as long as it is)."""
        n = _node(node)
        if n is None or n[0] != "A_ArrayExpr":
            return v
        out: list[_Val] = []
        for element in n[1].get("elements") or ():
            e = _node(element)
            if e is None or e[0] == "A_Const":
                continue
            if e[0] == "A_ArrayExpr":
                out.append(self.array_dimensions(element, _OPAQUE, scope))
            elif e[0] == "ColumnRef" and self.not_an_array(e[1], scope):
                continue
            elif e[0] == "TypeCast" and self.names_no_array(_type_name(e[1].get("typeName"))):
                continue
            else:  # its type is not known here: it may be an array
                out.append(self.read(self.expr(element, scope)))
        return _union(out)

    def _base_column_type(self, f: dict, scope: _Scope) -> tuple[bool, TypeFacts | None]:
        """(True, its type or None) for a column reference that is one base column of a table
        the catalog knows with one column of that name, else (False, None)."""
        fields = f.get("fields") or []
        names = _names(fields)
        if len(names) != len(fields) or not names:
            return False, None
        v = self.lookup(names, scope)
        if v is None or not v.direct or v.opaque or len(v.sources) != 1:
            return False, None
        (source,) = v.sources
        for rel in self.catalog.relations_named(source.table):
            if _schema(rel.schema) != source.schema:
                continue
            cols = [c for c in self.catalog.columns_of(rel.oid) or () if c.name == source.column]
            if len(cols) != 1:
                return False, None
            return True, self.catalog.type(cols[0].type)
        return False, None

    def not_an_array(self, f: dict, scope: _Scope) -> bool:
        """Whether a column reference is a base column of a type that is not an array."""
        known, t = self._base_column_type(f, scope)
        return known and _not_an_array(t)

    def an_array(self, f: dict, scope: _Scope) -> bool:
        """Whether a column reference is a base column of an array type (not a domain over one):
        the catalog's own of an element type (``typarray``), and the two vector types."""
        known, t = self._base_column_type(f, scope)
        # (int2vector and oidvector, pg_index's and pg_proc's: arrays no other type's typarray)
        return known and t is not None and t.kind == "b" and (
            bool(t.parts) or t.schema == "pg_catalog" and t.name in ("int2vector", "oidvector"))

    def names_no_array(self, type_name: dict) -> bool:
        """Whether a cast's type is not an array (nor a domain, which may be over one)."""
        names = _names(type_name.get("names"))
        if not names or type_name.get("arrayBounds") or type_name.get("setof"):
            return False
        types = [t for t in self.catalog.types_named(names[-1])
                 if len(names) == 1 or _schema(t.schema) == names[-2]]
        return bool(types) and all(_not_an_array(t) for t in types)

    def fixes_keys(self, fname: str, f: dict, scope: _Scope) -> bool:
        """Whether a call builds a JSON object whose keys its text fixes: from a whole row (the
        keys are the column names) or from constant keys."""
        args = f.get("args") or ()
        if fname in _ROW_TO_JSON and args:
            n = _node(args[0])
            if n is None or fname != "row_to_json" and len(args) != 1:
                return False
            if n[0] == "RowExpr":
                return True
            if n[0] != "ColumnRef":
                return False
            fields = n[1].get("fields") or []
            names = _names(fields)
            if not names:
                return False
            if len(names) == len(fields) and self.lookup(names, scope) is not None:
                return False  # a column (a json column's keys are its value's)
            rel = self.find_rel(names, scope)
            return rel is not None and rel.unknown is None and not rel.opaque and not rel.function_item
        if fname in _BUILD_OBJECT and f.get("agg_star") is None and not f.get("func_variadic"):
            return len(args) % 2 == 0 and all((_node(k) or ("", {}))[0] == "A_Const" for k in args[::2])
        return False

    # ------------------------------------------------------------------ function bodies

    def body_outputs(self, fn: FunctionFacts) -> Columns | None:
        """The columns the last statement of an SQL function's body returns (its arguments'
        values aside); None when the body cannot be traced."""
        if fn.language != "sql" or fn.source is None or self.depth > 32:
            return None
        cache: dict = self.catalog.derived.setdefault("lineage bodies", {})
        key = (fn.oid, self.ctx.search_path, self.ctx.possible, self.ctx.user)
        known = cache.get(key)
        if known == "pending":
            self.unknown_reads = True
            return None
        if known is None:
            cache[key] = "pending"
            try:
                known = self._body_lineage(fn)
            except Exception:  # noqa: BLE001 - unreadable: unknown
                known = (None, None, ())
            finally:
                cache.pop(key, None)
            cache[key] = known
        columns, reads, oracles = known
        if columns is None or reads is None:
            self.unknown_reads = True
        else:
            self.reads |= reads
        if self.record_oracles:
            # the caller's arguments steer the body's filters; without any, the body's constants
            # do, and an agent may have written them (CREATE FUNCTION f() ... WHERE substr(ssn,
            # i, 1) = d::text): a body is a query its caller runs, as a view is
            for o in oracles:
                self.oracles[o] = None
        return columns

    def _body_lineage(self, fn: FunctionFacts) -> tuple[Columns | None, frozenset[Source] | None, tuple]:
        if fn.sql_body:
            tree = parse_tree(f"CREATE FUNCTION pg_temp.pgwarden_f() RETURNS void LANGUAGE sql {fn.source}")
            create = (_node(tree["stmts"][0]["stmt"]) or ("", {}))[1]
            body = create.get("sql_body")
            bn = _node(body)
            if bn is not None and bn[0] == "ReturnStmt":
                stmt: Any = {"SelectStmt": {"targetList": [{"ResTarget": {"val": bn[1].get("returnval")}}]}}
            else:
                items = (bn[1].get("items") if bn is not None and bn[0] == "List" else None) or []
                inner = _node(items[0]) if items else None
                stmts = inner[1].get("items", []) if inner is not None and inner[0] == "List" else items
                stmt = stmts[-1] if len(stmts) == 1 else None
        else:
            stmts = parse_tree(fn.source or "").get("stmts", [])
            stmt = stmts[-1].get("stmt") if len(stmts) == 1 else None
        if stmt is None:
            # (none, or several: the statements before the last run too, and may keep what they
            # read where it is read back unmasked: not traced, its reads are the body's whole)
            return (None, None, ())
        walker = _Walker(_body_context(fn, self.ctx), depth=self.depth + 1)
        scope_params = frozenset(fn.argument_names)
        n = _node(stmt)
        if n is None:
            return (None, None, ())
        if n[0] in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            columns = walker.write(n[0], n[1], _Scope([], None, params=scope_params))
        elif n[0] == "SelectStmt":
            columns = walker.query(stmt, _Scope([], None, params=scope_params))
        else:
            return (None, None, ())
        if columns is None or walker.shape_unknown:
            return (None, None, ())
        return (columns, None if walker.unknown_reads else frozenset(walker.reads), tuple(walker.oracles))

    def hidden_steering(self, fn: FunctionFacts) -> _Val:
        """What may decide how many rows a function lineage does not trace returns: a PL/pgSQL body
        that is only ``RETURN QUERY <query>`` with no variables of its own, its queries' conditions
        (``WHERE dept = p`` steers by dept, not by the masked columns it returns); any other body,
        everything it reads (a variable may hold a masked value an IF compares)."""
        queries = _plpgsql_return_queries(fn) if fn.language == "plpgsql" and fn.source else None
        if queries is None:
            return self.body_reads(fn)
        steering: list[_Val] = []
        for text in queries:
            try:
                stmts = parse_tree(text).get("stmts", [])
            except Exception:  # noqa: BLE001 - unreadable: everything it reads
                return self.body_reads(fn)
            stmt = stmts[0].get("stmt") if len(stmts) == 1 else None
            if stmt is None or (_node(stmt) or ("", {}))[0] != "SelectStmt":
                return self.body_reads(fn)
            walker = _Walker(_body_context(fn, self.ctx), depth=self.depth + 1)
            walker.query(stmt, _Scope([], None, params=frozenset(fn.argument_names)))
            if walker.unknown_reads or walker.shape_unknown:
                return self.body_reads(fn)
            self.reads |= walker.reads
            steering.append(_Val(frozenset(use.source for use in walker.oracles), False, False))
        return _union(steering) if steering else _NONE

    def body_reads(self, fn: FunctionFacts) -> _Val:
        """Every column of every table a function's body reads (PL/pgSQL, or SQL that cannot be
        traced); unknown reads when the body cannot be read or reads what cannot be named."""
        if fn.source is None or fn.language not in ("sql", "plpgsql"):
            self.unknown_reads = True
            return _OPAQUE
        from pgwarden.sql.resolve import resolve
        from pgwarden.sql.syntax import plpgsql_body, syntax_of

        try:
            syntax = plpgsql_body(fn.source) if fn.language == "plpgsql" else syntax_of(fn.source)
            analysis = resolve(syntax, self.ctx)
        except Exception:  # noqa: BLE001
            self.unknown_reads = True
            return _OPAQUE
        if "unknown" in analysis.kinds:
            self.unknown_reads = True
        sources: set[Source] = self.revealing_calls(analysis.functions)
        if any(runs_built_sql(fn) for name in analysis.functions
               for fn in self.catalog.functions_named(name.rpartition(".")[2])):
            self.unknown_reads = True  # (xpath_table in the body: it reads what its text names)
            sources.add(UNTRACED)
        for qualified in analysis.tables:
            schema, _, name = qualified.partition(".")
            rels = [r for r in self.catalog.relations_named(name) if _schema(r.schema) == schema]
            if not rels:
                self.unknown_reads = True
            for r in rels:
                if r.policies:
                    # which of its rows the body sees is its row-level policies' to decide (red
                    # team nine: `RETURN (SELECT count(*) FROM guesses WHERE g = p)` over a table
                    # whose policy compares g with the SSN counted the right guess)
                    sources |= self.policy_conditions(r)
                cols = self.relation_columns(r)
                if cols is None:
                    self.unknown_reads = True
                    continue
                for _, v in cols:
                    sources |= v.sources
        self.reads |= sources
        return _Val(frozenset(sources), False, True)

    def revealing_calls(self, functions: Iterable[str]) -> set[Source]:
        """The sources that may hold any column's value (`reveals_values`) among the functions a
        body calls, at any depth (`Analysis.functions`): pg_stat_get_activity, logical decoding,
        pageinspect's ... wrapped in PL/pgSQL (red team nine: `RETURN (SELECT string_agg(query,
        ' | ') FROM pg_stat_get_activity(NULL))` returned other sessions' statements in clear),
        which makes the body's result, and any condition over it, derived from every column."""
        found: set[Source] = set()
        for qualified in functions:
            name = qualified.rpartition(".")[2]
            known = self.catalog.functions_named(name)
            for fn in known:
                revealing = revealing_function(fn)
                if revealing is not None:
                    found.add(Source("pg_catalog", revealing[0], name))
            if not known and name in _REVEALING_FUNCTIONS:  # (no facts of it: by its name)
                found.add(Source("pg_catalog", name, name))
        return found


def _plpgsql_return_queries(fn: FunctionFacts) -> list[str] | None:
    """The queries of a PL/pgSQL body that is one block of ``RETURN QUERY <static query>`` (and a
    bare RETURN), with no variables but its arguments and FOUND; None for any other body."""
    import json

    from pgwarden.sql.syntax import _dollar_quote, parse_plpgsql_json

    try:
        body = _dollar_quote(fn.source or "")
        tree = json.loads(parse_plpgsql_json(
            f"CREATE FUNCTION pg_temp.pgwarden_f() RETURNS SETOF record LANGUAGE plpgsql AS {body}"))
        function = (_node(tree[0]) or ("", {}))[1]
    except Exception:  # noqa: BLE001 - unreadable: not such a body
        return None
    datums = [(_node(d) or ("", {}))[1].get("refname") for d in function.get("datums") or ()]
    if any(name != "found" for name in datums):
        return None
    block = (_node(function.get("action")) or ("", {}))
    if block[0] != "PLpgSQL_stmt_block" or block[1].get("exceptions"):
        return None
    queries = []
    for statement in block[1].get("body") or ():
        kind, fields = _node(statement) or ("", {})
        if kind == "PLpgSQL_stmt_return" and not fields:
            continue
        if kind != "PLpgSQL_stmt_return_query" or fields.get("dynquery") is not None:
            return None
        expr = (_node(fields.get("query")) or ("", {}))[1]
        if expr.get("parseMode", 0) != 0 or not isinstance(expr.get("query"), str):
            return None
        queries.append(expr["query"])
    return queries


def _body_context(fn: FunctionFacts, ctx: SqlContext) -> SqlContext:
    """The context a function's body runs in: the caller's, or the search_path it sets itself
    (``SET search_path = ...``, proconfig)."""
    from pgwarden.sql.context import parse_path

    for item in fn.config:
        name, _, value = item.partition("=")
        if name.strip().lower() == "search_path":
            return attrs.evolve(ctx, search_path=parse_path(value))
    return ctx


def inheritance_parents(catalog: Catalog) -> dict[int, list[int]]:
    """Each partition's and inheritance child's parents (pg_class OIDs), kept with the catalog."""
    return catalog.parents()


def scope_params(scope: _Scope) -> frozenset[str]:
    s: _Scope | None = scope
    out: frozenset[str] = frozenset()
    while s is not None:
        out |= s.params
        s = s.parent
    return out


def _find(item: _Item, name: str) -> _Val | None:
    found = [v for n, v in item.columns if n == name]
    if found:
        return found[0] if len(found) == 1 else _union(found)
    return None


def _relations_named(node: Any, shadowed: frozenset[str]) -> set[str]:
    """The unqualified relation names a query names, as the server resolves them: a name an inner
    WITH defines is that item inside its query, not the outer one."""
    found: set[str] = set()
    stack: list[tuple[Any, frozenset[str]]] = [(node, shadowed)]
    while stack:
        item, hidden = stack.pop()
        if isinstance(item, list):
            stack.extend((x, hidden) for x in item)
            continue
        n = _node(item)
        if n is None:
            if isinstance(item, dict):
                stack.extend((v, hidden) for v in item.values() if isinstance(v, (dict, list)))
            continue
        kind, f = n
        if kind == "RangeVar":
            name = f.get("relname") or ""
            if not f.get("schemaname") and not f.get("catalogname") and name not in hidden:
                found.add(name)
            continue
        if kind == "SelectStmt" and f.get("withClause") is not None:
            w = _fields(f.get("withClause")) or {}
            items = [_fields(c) or {} for c in w.get("ctes") or ()]
            inner = hidden | {c.get("ctename", "") for c in items}
            # (a WITH item's own query sees the list's names only under RECURSIVE; without, a
            # name there may be the outer one: counted, an order that still holds)
            stack.extend((c.get("ctequery"), inner if w.get("recursive") else hidden) for c in items)
            stack.extend((v, inner) for k, v in f.items() if k != "withClause" and isinstance(v, (dict, list)))
            continue
        stack.extend((v, hidden) for v in f.values() if isinstance(v, (dict, list)))
    return found


def _any_column(item: _Item) -> _Val:
    """What a column of ``item`` that lineage cannot name may hold: any of its columns', or what
    lineage cannot trace."""
    return _Val(_union(v for _, v in item.columns).sources | {UNTRACED}, False, True)


def _rename(columns: Columns, aliases: list[str]) -> Columns:
    if not aliases:
        return list(columns)
    return [(aliases[i] if i < len(aliases) else n, v) for i, (n, v) in enumerate(columns)]


def _merge_alternatives(alternatives: list[Columns]) -> tuple[Columns, bool]:
    """Columns of a name that may be any of several relations (an uncertain search_path), by
    name; and whether they all have the same columns (else ``*`` cannot be expanded)."""
    names = [n for n, _ in alternatives[0]]
    alike = all([n for n, _ in alt] == names for alt in alternatives)
    order = list(dict.fromkeys(n for alt in alternatives for n, _ in alt))
    out: Columns = []
    for name in order:
        vals = [v for alt in alternatives for n, v in alt if n == name]
        out.append((name, _either(vals)))
    return out, alike


def _alias(f: dict) -> tuple[str | None, list[str]]:
    a = f.get("alias")
    n = _node(a)
    fields = n[1] if n is not None else (a if isinstance(a, dict) else {})
    return fields.get("aliasname"), _names(fields.get("colnames"))


def _type_name(obj: Any) -> dict:
    n = _node(obj)
    return n[1] if n is not None else obj if isinstance(obj, dict) else {}


def _not_an_array(t: TypeFacts | None) -> bool:
    return t is not None and t.kind in ("b", "e", "r", "m", "c") and not (t.kind == "b" and t.parts)


def _schema(name: str) -> str:
    return "pg_temp" if name.startswith("pg_temp") else name


def _children(fields: dict) -> Iterator[Any]:
    for key, value in fields.items():
        if key == "location":
            continue
        if isinstance(value, dict):
            yield value
        elif isinstance(value, list):
            yield from value


_SQL_VALUE_NAMES = {
    "SVFOP_CURRENT_DATE": "current_date", "SVFOP_CURRENT_TIME": "current_time",
    "SVFOP_CURRENT_TIME_N": "current_time", "SVFOP_CURRENT_TIMESTAMP": "current_timestamp",
    "SVFOP_CURRENT_TIMESTAMP_N": "current_timestamp", "SVFOP_LOCALTIME": "localtime",
    "SVFOP_LOCALTIME_N": "localtime", "SVFOP_LOCALTIMESTAMP": "localtimestamp",
    "SVFOP_LOCALTIMESTAMP_N": "localtimestamp", "SVFOP_CURRENT_ROLE": "current_role",
    "SVFOP_CURRENT_USER": "current_user", "SVFOP_USER": "user", "SVFOP_SESSION_USER": "session_user",
    "SVFOP_CURRENT_CATALOG": "current_catalog", "SVFOP_CURRENT_SCHEMA": "current_schema",
}
_XML_NAMES = {
    "IS_XMLCONCAT": "xmlconcat", "IS_XMLELEMENT": "xmlelement", "IS_XMLFOREST": "xmlforest",
    "IS_XMLPARSE": "xmlparse", "IS_XMLPI": "xmlpi", "IS_XMLROOT": "xmlroot", "IS_XMLSERIALIZE": "xmlserialize",

}


def _colname(node: Any, sublink: Callable[[Any], str | None] | None = None) -> str:
    """The name the server gives an output without an alias (parse_target.c's FigureColname);
    ``sublink`` names a scalar sub-select by its first output, as the server does."""
    name, strength = _figure(node, sublink)
    return name if strength and name is not None else "?column?"


def _figure(node: Any, sublink: Callable[[Any], str | None] | None = None) -> tuple[str | None, int]:
    """FigureColnameInternal: a name and its strength (2: a name of its own, 1: a type's or
    ``case``, which a stronger name beneath a cast or an ELSE replaces, 0: none). Any difference
    from the server lets a name an outer query selects by be another column's: port, do not guess."""
    n = _node(node)
    if n is None:
        return None, 0
    kind, f = n
    if kind == "ColumnRef":  # the last field name, "*" left out: `t.*` is named t
        names = _names(f.get("fields"))
        return (names[-1], 2) if names else (None, 0)
    if kind == "A_Indirection":  # the last field name anywhere, subscripts and "*" left out
        names = _names(f.get("indirection"))
        return (names[-1], 2) if names else _figure(f.get("arg"), sublink)
    if kind == "FuncCall":
        names = _names(f.get("funcname"))
        return (names[-1], 2) if names else (None, 0)
    if kind == "A_Expr" and f.get("kind") == "AEXPR_NULLIF":
        return "nullif", 2
    if kind == "TypeCast":
        name, strength = _figure(f.get("arg"), sublink)
        if strength <= 1:
            type_name = f.get("typeName")
            tn = _fields(type_name) if _node(type_name) is not None else type_name
            names = _names((tn or {}).get("names")) if isinstance(tn, dict) else []
            if names:
                return names[-1], 1
        return name, strength
    if kind == "CollateClause":
        return _figure(f.get("arg"), sublink)
    if kind == "GroupingFunc":
        return "grouping", 2
    if kind == "SubLink":
        t = f.get("subLinkType")
        if t == "EXISTS_SUBLINK":
            return "exists", 2
        if t == "ARRAY_SUBLINK":
            return "array", 2
        if t == "EXPR_SUBLINK":
            name = sublink(f.get("subselect")) if sublink is not None else _first_target_name(f.get("subselect"))
            return (name, 2) if name is not None else (None, 0)
        return None, 0
    if kind == "CaseExpr":
        name, strength = _figure(f.get("defresult"), sublink)
        return ("case", 1) if strength <= 1 else (name, strength)
    if kind == "A_ArrayExpr":
        return "array", 2
    if kind == "RowExpr":
        return "row", 2
    if kind == "CoalesceExpr":
        return "coalesce", 2
    if kind == "MinMaxExpr":
        return ("greatest" if f.get("op") == "IS_GREATEST" else "least"), 2
    if kind == "SQLValueFunction":
        name = _SQL_VALUE_NAMES.get(f.get("op", ""))
        return (name, 2) if name is not None else (None, 0)
    if kind == "XmlExpr":
        name = _XML_NAMES.get(f.get("op", ""))
        return (name, 2) if name is not None else (None, 0)
    if kind == "XmlSerialize":
        return "xmlserialize", 2
    if kind == "MergeSupportFunc":
        return "merge_action", 2
    if kind in ("JsonObjectConstructor", "JsonObjectAgg"):
        return ("json_object" if kind == "JsonObjectConstructor" else "json_objectagg"), 2
    if kind in ("JsonArrayConstructor", "JsonArrayQueryConstructor"):
        return "json_array", 2
    if kind == "JsonArrayAgg":
        return "json_arrayagg", 2
    return None, 0


def _first_target_name(subselect: Any) -> str | None:
    """A sub-select's first output's name, read from its text alone (no catalog: an output of
    ``*`` or of a set operation is not known; the walker names those, `_Walker.sublink_name`)."""
    sf = _select_fields(subselect) or {}
    targets = sf.get("targetList") or []
    if not targets or sf.get("op", "SETOP_NONE") != "SETOP_NONE":
        return None
    rt = (_node(targets[0]) or ("", {}))[1]
    val = _node(rt.get("val"))
    if val is not None and val[0] == "ColumnRef" and _is_star((val[1].get("fields") or [None])[-1]):
        return None
    return rt.get("name") or _colname(rt.get("val"))
