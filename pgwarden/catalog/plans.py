"""Which base columns the server's own plan of a statement reads, and which it tests.

Lineage (`pgwarden.sql.lineage`) resolves every name of a statement the way the server would;
five red-team rounds found it resolving some differently (a name taken for another scope's, a
column of a FROM item it could not list). The server's plan is the server's own resolution:
``EXPLAIN (VERBOSE)`` prints every column reference qualified by its range table entry's alias
(made unique across the whole plan), and each scan node says which relation that alias is.
`plan_uses` reads a plan that way, so that masking can check lineage against it
(`ServerPlans`, docs/masking.md "The server's plan").

Read from the plan, per base relation column:

* **reads**: referenced by an expression anywhere: an output, a condition, a sort or group key,
  a function's arguments;
* **tests**: referenced by anything but an output list or a FROM item's function call (a filter,
  a join or index condition, a sort or group key): what decides which rows come out, in which
  order, or how many;
* **outputs**: per entry of the plan's top output list (the result's columns, in order), the base
  columns it names directly (the planner pulls most sub-selects and views up into such names) or
  through a sub-plan's result (``(SubPlan 1)``, an InitPlan's ``$0``: that sub-plan's output).

Expressions are split into tokens by the server's own scanner (pglast's ``scan``), never by
patterns. ``alias.column`` is a column; ``alias.*`` (or the alias alone) is its whole row. With a
single range table entry EXPLAIN leaves output lists unqualified: an unqualified name that is one
of a scanned relation's columns is taken for it (a function name is followed by a parenthesis,
a type name follows ``::``). Output lists a scan fills with every column in order because its
parent projects anyway (a "physical" target list, and the Hash or Sort above it copying it) say
nothing about what the statement uses: they are skipped, except where they are a query's result
(the plan's top; a sub-select's, a CTE's, a UNION arm's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
from pglast.parser import scan

from pgwarden.sql.lineage import Source

#: Keys of a plan node whose values name things or describe the node: not expressions.
_NOT_EXPRESSIONS = frozenset({
    "Node Type", "Parent Relationship", "Parallel Aware", "Async Capable", "Relation Name", "Schema",
    "Alias", "CTE Name", "Function Name", "Index Name", "Subplan Name", "Strategy", "Partial Mode",
    "Join Type", "Inner Unique", "Scan Direction", "Operation", "Command", "Conflict Resolution",
    "Conflict Arbiter Indexes", "Single Copy", "Workers Planned", "Workers", "Sort Method", "Setop",
    "Tuplestore Name", "Plans", "Output", "Triggers", "Samples", "Planning Time", "Execution Time",
    "Settings", "Query Identifier", "Custom Plan Provider", "Remote SQL", "Subplans Removed",
    "Heap Fetches", "Hash Buckets", "Original Hash Buckets", "Hash Batches", "Original Hash Batches",
    "Peak Memory Usage", "Exact Heap Blocks", "Lossy Heap Blocks", "Disabled", "Full-sort Groups",
    "Pre-sorted Groups", "Sampling Method", "Target Tables", "Cache Mode", "Table Function Name",
    "Params Evaluated",
})

#: What the planner question adds to a node of an index scan: its index's key columns
#: (`planner.INDEX_KEYS`; a list, or None when the catalog did not show the index).
INDEX_KEYS = "pgwarden Index Keys"
#: ... and the columns of its relation that alone tell rows apart (`planner._INDEXES`)
UNIQUE_KEYS = "pgwarden Unique Columns"
#: What it adds to every scan of a relation: the relation's indexes, each [its key columns, every
#: column it holds] (`planner._with_index_keys`)
RELATION_INDEXES = "pgwarden Relation Indexes"
#: ... and to the first entry of the plans: the indexes of the tables code the statement runs
#: reads in plans of its own (a function's body), by ``schema.table``
UNSEEN_INDEXES = "pgwarden Unseen Indexes"
#: ... and to a plain Aggregate node: True when no schema but pg_catalog has a function of the
#: names `ORDERLESS_AGGREGATES` lists (an aggregate of the agent's own, on the search_path before
#: pg_catalog, would print the same, and its code sees the rows in their order)
BUILTIN_AGGREGATES = "pgwarden Builtin Aggregates"

#: Aggregates whose value does not depend on the order of the rows they see.
ORDERLESS_AGGREGATES = frozenset({"count", "min", "max", "bool_and", "bool_or", "every"})

#: The nodes an order-blind aggregate's input may pass through: scans, and a Gather (whose own
#: order is the workers').
_ORDERLESS_BELOW = frozenset({"Aggregate", "Gather", "Index Scan", "Index Only Scan", "Seq Scan",
                              "Bitmap Heap Scan", "Bitmap Index Scan"})

#: The expressions of such a node evaluated once per scan, not per row: an index's conditions
#: (their operators an operator class's, which only a superuser makes).
_PER_SCAN = frozenset({"Index Cond", "Recheck Cond"})

#: An index as `PlanUses` lists it: its key columns, every column it holds.
Index = tuple[tuple[Source, ...], tuple[Source, ...]]

#: Plan nodes that pass every row of their children on, each once, without choosing by their
#: order: a Sort above them orders what the scans below them return (not a Limit, an Aggregate,
#: a Unique, a WindowAgg, a SetOp: they keep or make values by the order they receive).
_PASSING = frozenset({"Hash", "Hash Join", "Nested Loop", "Merge Join", "Materialize", "Memoize", "Gather",
                      "Result", "Append", "Subquery Scan"})

#: A FROM item's function call: its arguments are read. How many rows it makes of them is
#: lineage's judgement (the keys of a whole row's JSON are its column names, not its values).
_ARGUMENTS = frozenset({"Function Call", "Table Function Call"})

#: A child node whose output is a query's result (a sub-select's, a CTE's, a UNION arm's), not
#: what its parent takes of a scan: never a physical target list to skip.
_RESULTS = frozenset({"InitPlan", "SubPlan", "Subquery", "Member"})

Columns = Callable[[str, str], "Sequence[str] | None"]


@attrs.frozen
class PlanUses:
    """What one statement's plan does with base relations' columns (`plan_uses`)."""

    reads: frozenset[Source]
    tests: frozenset[Source]
    #: relations scanned whose columns the catalog does not know (their whole rows count as read)
    unknown: frozenset[tuple[str, str]] = frozenset()
    #: the base columns each entry of the plan's top output list names (the statement's result
    #: columns in order, then sort keys and the like), itself or through a sub-plan's result:
    #: those it takes through a sub-select's or a CTE's alias are not among them
    outputs: tuple[frozenset[Source], ...] = ()
    #: the base columns whose order an index scan returns rows in (its index's key columns: an
    #: Index Scan or Index Only Scan, `planner.ORDERED_SCANS`); every column of its relation when
    #: the index's keys are not known
    orders: frozenset[Source] = frozenset()
    #: the indexes another plan of the statement could scan in their order instead of this one's
    #: (a custom plan for a parameter's value, a cursor's plan, a plan after the statistics
    #: changed): of each relation scanned with no Sort on a column telling its rows apart above
    #: the scan, those holding a column the plan tests on it
    may_order: frozenset[Index] = frozenset()
    #: ... and those holding every column the plan reads of it (an index only scan could read them
    #: in its order), with those columns
    may_cover: frozenset[tuple[Index, tuple[Source, ...]]] = frozenset()
    #: the indexes of the tables code the statement runs reads in plans of its own (a function's
    #: body the planner does not inline): which of them those plans scan is not seen
    unseen_orders: frozenset[Index] = frozenset()


def _name(text: str) -> str:
    """An identifier token as a name: a quoted one unquoted, an unquoted one as it stands (the
    server prints names it would fold in lower case already)."""
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('""', '"')
    return text


def _tokens(expression: str) -> list[tuple[str, str]]:
    """(token type, text) of an expression as the server prints it."""
    try:
        return [(t.name, expression[t.start:t.end + 1]) for t in scan(expression)]
    except Exception:  # noqa: BLE001 - what the scanner cannot read is read as naming everything
        return [("?", expression)]


class _Reader:
    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.aliases: dict[str, tuple[str, str]] = {}
        #: what a sub-plan's result is made of: "SubPlan 3" -> its output list; "$2" (an InitPlan's
        #: result parameter) -> its entry of the InitPlan's output list
        self.subplans: dict[str, list[str]] = {}
        self._following: set[str] = set()
        self.reads: set[Source] = set()
        self.tests: set[Source] = set()
        self.unknown: set[tuple[str, str]] = set()
        self.orders: set[Source] = set()
        #: per scan of a relation not sorted above by a column telling its rows apart: the
        #: relation and its indexes (`RELATION_INDEXES`)
        self.scanned: list[tuple[tuple[str, str], list[Any]]] = []

    def relation_columns(self, relation: tuple[str, str]) -> Sequence[str] | None:
        cols = self.columns(*relation)
        if cols is None:
            self.unknown.add(relation)
        return cols

    def whole(self, relation: tuple[str, str]) -> set[Source]:
        return {Source(relation[0], relation[1], c) for c in self.relation_columns(relation) or ()}

    def references(self, expression: str) -> set[Source]:
        """The base columns ``expression`` names."""
        tokens = _tokens(expression)
        found: set[Source] = set()
        if tokens and tokens[0][0] == "?":  # unreadable: every column of every relation scanned
            for relation in self.aliases.values():
                found |= self.whole(relation)
            return found
        n = len(tokens)
        for i, (kind, text) in enumerate(tokens):
            if kind == "PARAM" or kind == "IDENT" and text == "SubPlan" and i + 1 < n and tokens[i + 1][0] == "ICONST":
                found |= self.subplan_value(text if kind == "PARAM" else f"SubPlan {tokens[i + 1][1]}")
                continue
            if kind in ("SCONST", "USCONST", "XCONST", "BCONST", "FCONST", "ICONST", "PARAM", "Op",
                        "TYPECAST") or kind.startswith("ASCII_"):
                continue
            after_dot = i > 0 and tokens[i - 1][1] == "."
            after_cast = i > 0 and tokens[i - 1][0] == "TYPECAST"
            if after_dot or after_cast:
                continue
            name = _name(text)
            nxt = tokens[i + 1][1] if i + 1 < n else ""
            if nxt == "(":
                continue  # a function's name
            if nxt == "." and i + 2 < n:
                qualifier = self.aliases.get(name)
                if qualifier is None:
                    continue  # a CTE's, a subquery's, a function's alias: its own nodes say what they read
                column = tokens[i + 2][1]
                if column == "*":
                    found |= self.whole(qualifier)
                else:
                    found.add(Source(qualifier[0], qualifier[1], _name(column)))
                continue
            alone = self.aliases.get(name)
            if alone is not None:  # an alias alone: its whole row
                found |= self.whole(alone)
                continue
            # Unqualified (a plan of one range table entry): a column of a relation scanned.
            for rel in set(self.aliases.values()):
                if name in (self.relation_columns(rel) or ()):
                    found.add(Source(rel[0], rel[1], name))
        return found

    def subplan_value(self, name: str) -> set[Source]:
        """The base columns a sub-plan's result (``(SubPlan 2)``, an InitPlan's ``$1``) names, as
        its own output list does (a parameter of the statement's, ``$1`` too, names none)."""
        output = self.subplans.get(name)
        if output is None or name in self._following:
            return set()
        self._following.add(name)
        try:
            found: set[Source] = set()
            for expression in output:
                found |= self.references(expression)
            return found
        finally:
            self._following.discard(name)

    def physical(self, output: Sequence[str]) -> bool:
        """Whether ``output`` is every column of one relation scanned, in order (a scan's physical
        target list, or a node above it copying it)."""
        for alias, relation in self.aliases.items():
            cols = self.relation_columns(relation)
            if cols is None or len(cols) != len(output):
                continue
            if all(self._is_column(entry, alias, col) for entry, col in zip(output, cols, strict=True)):
                return True
        return False

    def index_physical(self, node: dict[str, Any], output: Sequence[str]) -> bool:
        """Whether ``output`` is every column the index of the index only scan ``node`` holds (its
        physical target list: ``count(*)`` over it prints the index's columns, and takes none)."""
        keys = node.get(INDEX_KEYS)
        if node.get("Node Type") != "Index Only Scan" or not isinstance(keys, list) or not output:
            return False
        alias = str(node.get("Alias", ""))
        named = set()
        for entry in output:
            tokens = [text for _, text in _tokens(entry)]
            if len(tokens) == 1:
                named.add(_name(tokens[0]))
            elif len(tokens) == 3 and _name(tokens[0]) == alias and tokens[1] == ".":
                named.add(_name(tokens[2]))
            else:
                return False
        return any(isinstance(index, list) and len(index) == 2 and index[0] == keys and set(index[1]) == named
                   for index in node.get(RELATION_INDEXES) or ())

    @staticmethod
    def _is_column(entry: str, alias: str, column: str) -> bool:
        tokens = [text for _, text in _tokens(entry)]
        if len(tokens) == 1:
            return _name(tokens[0]) == column
        return len(tokens) == 3 and _name(tokens[0]) == alias and tokens[1] == "." and _name(tokens[2]) == column

    def node(self, node: dict[str, Any], top: bool, sorted_by: tuple[list[str], ...] | None = None,
             orderless: bool = False) -> None:
        """Reads ``node``; ``sorted_by``: the sort keys (as tokens) of a Sort above it that every
        row it returns goes through (`_PASSING` nodes between), else None; ``orderless``: below an
        aggregate the order of its rows cannot change (`_orderless`)."""
        kind = node.get("Node Type")
        below = sorted_by if kind in _PASSING else None
        if kind == "Sort":
            below = tuple([text for _, text in _tokens(str(k))] for k in node.get("Sort Key", ()) or ())
        orderless = orderless or kind == "Aggregate" and _orderless(node)
        for key, value in node.items():
            if orderless and key in (INDEX_KEYS, RELATION_INDEXES):
                continue
            if key == INDEX_KEYS:
                if not _unique_sort(node, sorted_by):
                    relation = (str(node.get("Schema", "")), str(node.get("Relation Name", "")))
                    if isinstance(value, list):
                        self.orders |= {Source(relation[0], relation[1], str(column)) for column in value}
                    else:  # (an index the catalog did not show: any of its columns)
                        self.orders |= self.whole(relation)
            elif key == RELATION_INDEXES:
                if isinstance(value, list) and value and not _unique_sort(node, sorted_by):
                    self.scanned.append(((str(node.get("Schema", "")), str(node.get("Relation Name", ""))), value))
            elif key == UNIQUE_KEYS:
                continue
            elif key == "Plans":
                for child in value:
                    relationship = child.get("Parent Relationship")
                    self.node(child, relationship in _RESULTS,
                              below if relationship not in ("InitPlan", "SubPlan") else None, orderless)
            elif key == "Output":
                if top or not (self.physical(value) or self.index_physical(node, value)):
                    for expression in value:
                        self.reads |= self.references(expression)
            elif key in _ARGUMENTS:
                for expression in _strings(value):
                    self.reads |= self.references(expression)
            elif key not in _NOT_EXPRESSIONS:
                for expression in _strings(value):
                    used = self.references(expression)
                    self.reads |= used
                    self.tests |= used


def _orderless(aggregate: dict[str, Any]) -> bool:
    """Whether the plain Aggregate ``aggregate`` makes one row whose value no order of the rows it
    reads could change: only `ORDERLESS_AGGREGATES` of plain columns (``count(*)``, ``max(id)``),
    of scans and Gathers with no other per-row expression (no filter, no function, no operator:
    code that sees the rows one by one in their order, and could leave that order in a setting or
    a notice). Its scans' order is then no oracle, whichever index another plan takes: a count over
    an index only scan of ``(name, ssn)`` after a VACUUM (red team twelve's false refusal)."""
    if aggregate.get("Strategy") != "Plain" or aggregate.get(BUILTIN_AGGREGATES) is not True:
        return False
    for node in _nodes(aggregate):
        if node.get("Node Type") not in _ORDERLESS_BELOW or \
                node.get("Node Type") == "Aggregate" and node.get("Strategy") != "Plain":
            return False
        for key, value in node.items():
            if key in _NOT_EXPRESSIONS or key in _PER_SCAN or key in (INDEX_KEYS, RELATION_INDEXES, UNIQUE_KEYS,
                                                                      BUILTIN_AGGREGATES):
                continue
            if key != "Output" and any(_strings(value)):
                return False
        if not all(_plain_aggregate(expression) for expression in _strings(node.get("Output", ()))):
            return False
    return True


def _plain_aggregate(expression: str) -> bool:
    """Whether ``expression`` (an output list's entry) is a column, or `ORDERLESS_AGGREGATES` of a
    column or of ``*``: names, dots, parentheses and commas, a ``*`` alone between parentheses, a
    partial aggregate's PARTIAL, and no other token."""
    tokens = _tokens(expression)
    for i, (kind, text) in enumerate(tokens):
        before = tokens[i - 1][1] if i else ""
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "IDENT":
            if after == "(" and (before == "." or _name(text) not in ORDERLESS_AGGREGATES):
                return False
        elif kind == "ASCII_42":
            if (before, after) != ("(", ")"):
                return False
        elif kind in _NOT_KEYWORDS or kind.startswith("ASCII_"):
            if kind not in ("ASCII_40", "ASCII_41", "ASCII_44", "ASCII_46"):
                return False
        elif kind != "PARTIAL" and (before not in ("", "(", ",", ".") or after not in ("", ")", ",", ".")):
            return False  # (a keyword standing alone is a column's name: ``name``)
    return True


#: The scanner's token types that are not keywords.
_NOT_KEYWORDS = frozenset({"IDENT", "UIDENT", "FCONST", "SCONST", "USCONST", "BCONST", "XCONST", "Op", "ICONST",
                           "PARAM", "TYPECAST", "DOT_DOT", "COLON_EQUALS", "EQUALS_GREATER", "LESS_EQUALS",
                           "GREATER_EQUALS", "NOT_EQUALS", "?"})


def _unique_sort(node: dict[str, Any], sorted_by: tuple[list[str], ...] | None) -> bool:
    """Whether a Sort above the index scan ``node`` (``sorted_by``: its keys' tokens) orders its
    rows by a column of its own that alone tells them apart (`UNIQUE_KEYS`): their order is then
    the sort's, not the index's (``... ORDER BY id``)."""
    if not sorted_by:
        return False
    alias = str(node.get("Alias", ""))
    unique = node.get(UNIQUE_KEYS) or ()
    for tokens in sorted_by:
        if len(tokens) >= 3 and _name(tokens[0]) == alias and tokens[1] == "." and _name(tokens[2]) in unique \
                and (len(tokens) == 3 or tokens[3].upper() in ("DESC", "ASC", "NULLS")):
            return True
    return False


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def plan_nodes(explained: object) -> Iterator[dict[str, Any]]:
    """Every node of the plan(s) of ``EXPLAIN (FORMAT JSON)``."""
    if isinstance(explained, list):
        for entry in explained:
            if isinstance(entry, dict) and isinstance(entry.get("Plan"), dict):
                yield from _nodes(entry["Plan"])


def _subplan(reader: _Reader, node: dict[str, Any]) -> None:
    """Notes what a sub-plan's result is: ``SubPlan 3`` its output list; ``InitPlan 1 (returns
    $0,$1)`` each parameter its entry. (A statement's own ``$1`` may print as an InitPlan's does:
    both are taken, which only adds columns.)"""
    name = node.get("Subplan Name")
    output = node.get("Output")
    if not isinstance(name, str) or not isinstance(output, list):
        return
    tokens = _tokens(name)
    if len(tokens) >= 2 and tokens[0][1] == "SubPlan":
        reader.subplans[f"SubPlan {tokens[1][1]}"] = output
    elif tokens and tokens[0][1] == "InitPlan":
        params = [text for kind, text in tokens if kind == "PARAM"]
        for index, param in enumerate(params):
            reader.subplans[param] = output[index:index + 1] if len(params) == len(output) else output


def plan_uses(explained: object, columns: Columns) -> PlanUses:
    """What the plan(s) of ``EXPLAIN (VERBOSE, FORMAT JSON)`` read and test; ``columns(schema,
    table)`` lists a relation's columns in order (None when the catalog does not know it)."""
    reader = _Reader(columns)
    plans = [entry["Plan"] for entry in explained if isinstance(entry, dict) and "Plan" in entry] \
        if isinstance(explained, list) else []
    for plan in plans:
        for node in _nodes(plan):
            _subplan(reader, node)
            # a scan's relation; a write's targets (each partition or inheritance child its own)
            for named in [node, *node.get("Target Tables", ())]:
                if isinstance(named, dict) and "Relation Name" in named and "Alias" in named:
                    reader.aliases[named["Alias"]] = (named.get("Schema", ""), named["Relation Name"])
    for plan in plans:
        reader.node(plan, True)
    outputs = tuple(frozenset(reader.references(e)) for e in plans[0].get("Output", ())) if plans else ()
    unseen: set[Index] = set()
    found = explained[0].get(UNSEEN_INDEXES) if isinstance(explained, list) and explained \
        and isinstance(explained[0], dict) else None
    for table, indexes in (found or {}).items():
        schema, _, name = str(table).partition(".")
        unseen |= {_index((schema, name), entry) for entry in indexes or ()}
    return PlanUses(frozenset(reader.reads), frozenset(reader.tests), frozenset(reader.unknown), outputs,
                    frozenset(reader.orders), *_may_order(reader), frozenset(unseen))


def _index(relation: tuple[str, str], entry: Any) -> Index:
    key, columns = entry
    return (tuple(Source(relation[0], relation[1], str(c)) for c in key),
            tuple(Source(relation[0], relation[1], str(c)) for c in columns))


def _may_order(reader: _Reader) -> tuple[frozenset[Index], frozenset[tuple[Index, tuple[Source, ...]]]]:
    """`PlanUses.may_order` and `may_cover`: of the indexes of each relation scanned
    (`_Reader.scanned`), those the planner could scan for this statement whatever this plan chose:
    one holding a column the plan tests on that relation (a condition, a join); one holding every
    column the plan reads of it (an index only scan), with those columns."""
    found: set[Index] = set()
    covering: set[tuple[Index, tuple[Source, ...]]] = set()
    for relation, indexes in reader.scanned:
        tested = {s.column for s in reader.tests if (s.schema, s.table) == relation}
        read = sorted((s for s in reader.reads if (s.schema, s.table) == relation), key=str)
        for entry in indexes:
            index = _index(relation, entry)
            columns = {s.column for s in index[1]}
            if columns & tested:
                found.add(index)
            if read and {s.column for s in read} <= columns:
                covering.add((index, tuple(read)))
    return frozenset(found), frozenset(covering)
