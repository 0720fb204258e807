"""The catalog facts the analysis needs, as frozen values with indexes by name.

Everything is keyed the way the parser names things: lower-case unquoted names as
the server folds them, quoted names as written. A `Catalog` never changes once
built; a refresh builds a new one with a new `generation`, which is part of every
cache key that depends on catalog facts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

# The first OID PostgreSQL gives objects created after initdb (FirstNormalObjectId).
FIRST_NORMAL_OID = 16384

_generations = itertools.count(1)


@attrs.frozen
class FunctionFacts:
    """One row of pg_proc, as far as deciding about a call goes."""

    oid: int
    schema: str
    name: str
    nargs: int  # pronargs
    ndefaults: int = 0  # pronargdefaults: trailing arguments that may be left out
    variadic: bool = False  # the last argument is VARIADIC: any number of trailing arguments
    volatility: str = "v"  # provolatile: i(mmutable) s(table) v(olatile)
    language: str = "internal"  # lanname
    trusted_language: bool = False  # lanpltrusted (internal and c are not)
    kind: str = "f"  # prokind: f(unction) p(rocedure) a(ggregate) w(indow)
    builtin: bool = True  # created by initdb or by an extension's script, not by a user
    # Whether EXECUTE is granted to PUBLIC by the function's initial privileges
    # (pg_init_privs for built-ins and extension members; proacl otherwise).
    public_execute: bool = True
    security_definer: bool = False
    returns_set: bool = False
    # The body of SQL and PL/pgSQL functions (so it can be analysed): prosrc, or the
    # SQL-standard body (see ``sql_body``); None for other languages and in snapshots.
    source: str | None = None
    extension: str | None = None
    # proconfig: settings the function sets while it runs, "name=value".
    config: tuple[str, ...] = ()
    # True when ``source`` is an SQL-standard body (``RETURN expr`` or ``BEGIN ATOMIC ... END``,
    # as pg_get_function_sqlbody prints it): such functions have an empty prosrc.
    sql_body: bool = False
    # What it returns, for lineage: prorettype; the relation (pg_class OID) whose row type that is
    # (a table's, a view's or a composite type's: RETURNS [SETOF] users), else 0; the names of its
    # OUT, INOUT and TABLE arguments in order (the columns it returns, RETURNS TABLE(a, b)); the
    # names of the arguments it takes (IN, INOUT, VARIADIC: what its body may name them by).
    result_type: int = 0
    result_relation: int = 0
    result_columns: tuple[str, ...] = ()
    argument_names: tuple[str, ...] = ()
    # An aggregate made after initdb: the functions it runs (pg_aggregate: transition, final, ...);
    # a function of the database's own: those its arguments' DEFAULT expressions call.
    support: tuple[int, ...] = ()

    def accepts(self, given: int) -> bool:
        """Whether a call with ``given`` positional arguments could resolve to this function."""
        if self.variadic:
            return given >= self.nargs - 1 - self.ndefaults
        return self.nargs - self.ndefaults <= given <= self.nargs


@attrs.frozen
class RelationFacts:
    """One relation of pg_class that a statement can name (tables, views, sequences, ...)."""

    oid: int
    schema: str
    name: str
    kind: str  # relkind: r table, p partitioned, v view, m materialized view, f foreign, S sequence, t TOAST
    # For views and materialized views: what their definition calls and reads (from pg_depend).
    functions: tuple[int, ...] = ()  # pg_proc OIDs
    relations: tuple[int, ...] = ()  # pg_class OIDs
    # The types of its columns that initdb did not pin (a domain, a type of the database's own or
    # of an extension): a write converts values to them (pg_type OIDs).
    column_types: tuple[int, ...] = ()
    # A view's or materialized view's query as pg_get_viewdef prints it (read with search_path
    # pg_catalog, pg_temp, so every name outside pg_catalog is schema-qualified); None otherwise.
    definition: str | None = None
    # What a statement runs on it without naming it (`queries.EFFECTS`): (kind, OID) with kind 't'
    # a trigger's function, 'd' a function of a column's default or generated expression, 'p' a
    # function of a row-level security policy, 'c' a table a foreign key's cascading action writes
    # ('r' one whose foreign key has no such action: TRUNCATE ... CASCADE empties it too; 'n' one
    # whose rows a DELETE updates, ON DELETE SET NULL / SET DEFAULT, and 'u' one whose rows an
    # UPDATE updates, ON UPDATE CASCADE / SET NULL / SET DEFAULT: each beside its 'c' row),
    # 'i' a partition or inheritance child (reading or writing the table reaches its rows), 'x' a
    # function its indexes' expressions or predicates call (on every row stored, and by ANALYZE,
    # REINDEX, VACUUM FULL, CLUSTER); 'd' also a CHECK constraint's or partition key's function;
    # 'F' (OID 0) a foreign table that reads a server file, 'X' (OID 0) one that runs a program;
    # 'k' (an attnum, not an OID: 0 for an expression) a column of a partitioned table's key;
    # 'o' (of a TOAST relation, kind 't') the table whose values stored out of line it holds;
    # 'A' (OID 0) a built-in relation whose initial privileges grant no SELECT to PUBLIC (pg_authid,
    # pg_shadow, pg_largeobject, pg_user_mapping, ...): reading it is an administrator's act;
    # 'a' (an attnum) a column of such a relation whose initial privileges grant PUBLIC its SELECT
    # (pg_subscription's but subconninfo): a statement reading only those is no such act.
    effects: tuple[tuple[str, int], ...] = ()
    # Its rules on writes (DO ALSO / DO INSTEAD), as CREATE RULE text.
    rules: tuple[str, ...] = ()
    # With row-level security on: its policies' expressions (USING, WITH CHECK), as pg_get_expr
    # prints them; the server adds them to the statements that read or write it.
    policies: tuple[str, ...] = ()


#: The kinds of `RelationFacts.effects`.
#: 'L': (of a foreign table) the relation of this database named as its remote table (postgres_fdw's
#: schema_name and table_name options, else its own name): a server looping back reaches it.
#: 'T': a DEFERRABLE constraint trigger's function (also a 't' row): it may run at the commit.
#: 'B' / 'J': a row trigger's function on INSERT or UPDATE (also a 't' row) whose returned row is
#: stored (BEFORE) or returned by RETURNING (INSTEAD OF): what its body reads may be in that row.
#: 'I' / 'U' / 'D' / 'Y': a trigger's function (also a 't' row) fires on INSERT / UPDATE / DELETE /
#: TRUNCATE (pg_trigger.tgtype): one row per event.
EFFECT_KINDS = ("t", "T", "B", "J", "I", "U", "D", "Y", "d", "p", "c", "r", "n", "u", "i", "k", "x", "F", "X", "o",
                "A", "a", "L")


@attrs.frozen
class ColumnFacts:
    """One column (pg_attribute, attnum > 0) of a relation or composite type: what lineage names
    outputs by. Dropped columns are kept (``dropped``, no name) so that an attnum maps correctly."""

    relation: int  # attrelid: pg_class OID
    attnum: int
    name: str  # attname ("" for a dropped column: the server shows "........pg.dropped.N........")
    type: int = 0  # atttypid (0 for a dropped column)
    dropped: bool = False


@attrs.frozen
class OperatorFacts:
    """One row of pg_operator: an operator is a call of its function (oprcode)."""

    oid: int
    schema: str
    name: str  # the operator's symbol, e.g. "+", "@@", "|>>"
    function: int  # oprcode's pg_proc OID
    left: int = 0  # oprleft type OID (0: prefix operator)
    right: int = 0


@attrs.frozen
class TypeFacts:
    """One row of pg_type that a value can be converted to (tables' row types are left out).

    Converting a value to a type runs functions the statement's text does not name:
    ``functions`` are the type's own, ``parts`` the types whose conversion it runs too.
    """

    oid: int
    schema: str
    name: str
    kind: str  # typtype: b base (arrays too), c composite, d domain, e enum, p pseudo, r range, m multirange
    # Its input function (typinput) and type-modifier input function (typmodin), a domain's CHECK
    # constraints' functions (an operator as its function), a range's canonical function.
    functions: tuple[int, ...] = ()
    # A domain's base type, an array's element type, a range's subtype, a multirange's range
    # type, a composite type's field types (pg_type OIDs).
    parts: tuple[int, ...] = ()


@attrs.frozen
class CastFacts:
    """One row of pg_cast made after initdb (by a user or an extension's script)."""

    oid: int
    source: int  # castsource: pg_type OID
    target: int  # casttarget
    function: int = 0  # castfunc: pg_proc OID; 0 for a binary-coercible cast or one through text
    # castcontext: e only written as a cast, a also on assignment (INSERT, UPDATE), i also implicitly
    context: str = "e"
    method: str = "f"  # castmethod: f function, i through the types' text input and output, b binary


def _index(items: Iterable, key) -> dict[Any, tuple]:
    out: dict[Any, list] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return {k: tuple(v) for k, v in out.items()}


def _named_and_numbered(items: Iterable[Any]) -> tuple:
    """Facts with a name and an OID: themselves, by name, by OID."""
    facts = tuple(items)
    return facts, _index(facts, lambda f: f.name), {f.oid: f for f in facts}


def _by_name(items: Iterable[Any]) -> tuple:
    facts = tuple(items)
    return facts, _index(facts, lambda f: f.name)


def _casts(items: Iterable[CastFacts]) -> tuple:
    facts = tuple(items)
    # casts with a function that the server may apply where the text shows no cast: on assignment
    # to a column or parameter (context a) or to fit any expression (context i)
    ambient = tuple(c for c in facts if c.context in ("a", "i") and c.function)
    return facts, _index(facts, lambda c: c.target), ambient


def _attributes(items: Iterable[tuple[int, Sequence[str], Sequence[int]]]) -> tuple:
    # relation OID -> its columns' names and types by attnum ("" and 0: dropped); made into
    # `ColumnFacts` when first asked for (most relations never are), in the dict beside it
    return {relation: (names, types) for relation, names, types in items}, {}


#: Each part of a `Catalog` built from rows of its own (`loader.PART_KINDS`): its attributes (the
#: facts, then what is made of them alone) and how they are made. A catalog built again from
#: partly the same rows takes the parts whose rows are the same from the previous one, attributes
#: and all (the columns made so far too: the same attributes make the same columns).
_PARTS: dict[str, tuple[tuple[str, ...], Any]] = {
    "functions": (("functions", "_functions_by_name", "_functions_by_oid"), _named_and_numbered),
    "relations": (("relations", "_relations_by_name", "_relations_by_oid"), _named_and_numbered),
    "operators": (("operators", "_operators_by_name"), _by_name),
    "types": (("types", "_types_by_name", "_types_by_oid"), _named_and_numbered),
    "casts": (("casts", "_casts_by_target", "ambient_casts"), _casts),
    "attributes": (("_attributes", "_columns"), _attributes),
}
PARTS = frozenset(_PARTS)


#: The settings PostgreSQL 15 marks GUC_SUPERUSER_ONLY (those a live catalog found hidden from
#: pg_database_owner on it): the stand-in for `Catalog.hidden_settings` when the server cannot
#: tell (a newer release's others are missed then; an older release's are refused by the server).
SUPERUSER_ONLY_SETTINGS = frozenset({
    "config_file", "data_directory", "dynamic_library_path", "external_pid_file", "hba_file", "ident_file",
    "jit_provider", "krb_server_keyfile", "log_directory", "log_filename", "primary_conninfo",
    "session_preload_libraries", "shared_preload_libraries", "ssl_ciphers", "ssl_dh_params_file",
    "ssl_ecdh_curve", "ssl_max_protocol_version", "ssl_min_protocol_version", "ssl_passphrase_command",
    "unix_socket_directories", "extension_destdir",
})


class Catalog:
    """An immutable set of catalog facts with the lookups the analysis makes.

    ``source`` says where the facts come from ("live" or "snapshot postgresql-15");
    ``complete`` is True when every object of the database is known (a live
    catalog): a name missing from an incomplete catalog may still exist.
    """

    # The parts' attributes (`_PARTS`), set in __init__.
    functions: tuple[FunctionFacts, ...]
    _functions_by_name: dict[str, tuple[FunctionFacts, ...]]
    _functions_by_oid: dict[int, FunctionFacts]
    relations: tuple[RelationFacts, ...]
    _relations_by_name: dict[str, tuple[RelationFacts, ...]]
    _relations_by_oid: dict[int, RelationFacts]
    operators: tuple[OperatorFacts, ...]
    _operators_by_name: dict[str, tuple[OperatorFacts, ...]]
    types: tuple[TypeFacts, ...]
    _types_by_name: dict[str, tuple[TypeFacts, ...]]
    _types_by_oid: dict[int, TypeFacts]
    casts: tuple[CastFacts, ...]
    _casts_by_target: dict[int, tuple[CastFacts, ...]]
    #: casts with a function that the server may apply where the text shows no cast
    ambient_casts: tuple[CastFacts, ...]
    _attributes: dict[int, tuple[Sequence[str], Sequence[int]]]
    _columns: dict[int, tuple[ColumnFacts, ...]]

    def __init__(
        self,
        *,
        functions: Iterable[FunctionFacts] = (),
        relations: Iterable[RelationFacts] = (),
        operators: Iterable[OperatorFacts] = (),
        types: Iterable[TypeFacts] = (),
        casts: Iterable[CastFacts] = (),
        attributes: Iterable[tuple[int, Sequence[str], Sequence[int]]] = (),
        settings: dict[str, str] | None = None,
        tuning: Iterable[str] = (),
        schemas: Iterable[str] = (),
        keywords: Iterable[str] = (),
        session_defaults: dict[str, str] | None = None,
        event_triggers: Iterable[int] = (),
        operator_classes: Iterable[tuple[str, str, int]] = (),
        plain_settings: Iterable[str] = (),
        upstream_reads_hidden: bool = True,
        indexes: Iterable[tuple[str, str, int]] = (),
        trusted_extensions: Iterable[str] = (),
        server_version: int = 0,
        source: str = "empty",
        complete: bool = False,
        stand_in: bool = False,
        previous: Catalog | None = None,
        unchanged: frozenset[str] = frozenset(),
    ) -> None:
        """``unchanged`` names parts (`PARTS`) whose facts are ``previous``'s, taken with their
        lookups instead of the arguments: a reload after one new table builds only the parts that
        differ (building the ~3,000 functions and their lookups was most of a load's CPU)."""
        if unchanged and previous is None:
            raise ValueError("unchanged parts need the previous catalog")
        if not unchanged <= PARTS:
            raise ValueError(f"unknown parts: {sorted(unchanged - PARTS)}")
        #: setting name (lower-case) -> pg_settings.context
        self.settings: dict[str, str] = dict(settings or {})
        #: the planner's settings (pg_settings.category "Query Tuning / ..."), lower-case: empty
        #: when not known (a snapshot)
        self.tuning: frozenset[str] = frozenset(tuning)
        self.schemas: frozenset[str] = frozenset(schemas)
        #: the server's SQL keywords (empty: not known, as in a catalog made by hand)
        self.keywords: frozenset[str] = frozenset(keywords)
        #: what a new session of the upstream role starts with (search_path), as the server says
        #: (empty: not known, as in the snapshot: the default assumed)
        self.session_defaults: dict[str, str] = dict(session_defaults or {})
        #: the functions of the enabled event triggers (pg_proc OIDs), which DDL runs
        self.event_triggers: tuple[int, ...] = tuple(event_triggers)
        #: operator class name -> (schema, a function of the database's own its family runs)
        self.operator_classes: dict[str, tuple[tuple[str, int], ...]] = {}
        for schema, name, function in operator_classes:
            self.operator_classes[name] = self.operator_classes.get(name, ()) + ((schema, function),)
        plain = frozenset(plain_settings)
        #: the settings (lower-case) pg_settings, SHOW and current_setting() show only to a role
        #: with pg_read_all_settings (GUC_SUPERUSER_ONLY), as the upstream role may be: those the
        #: server lists for the upstream role and not for pg_database_owner (`queries.PLAIN_SETTINGS`);
        #: when the server did not say (a snapshot, a release before 14, a role that may not take
        #: pg_database_owner), `SUPERUSER_ONLY_SETTINGS` (red team twelve)
        self.hidden_settings: frozenset[str] = (
            frozenset(self.settings) - plain if plain else SUPERUSER_ONLY_SETTINGS)
        #: whether the upstream role reads the hidden settings, or may become a role that does (a
        #: superuser, a member of pg_read_all_settings): when not, the server leaves them out of
        #: pg_settings and SHOW ALL for every role the session may be, and a read of every setting
        #: is of what a plain role sees (psql's \dconfig). True when not known (a snapshot).
        self.upstream_reads_hidden = upstream_reads_hidden
        #: "schema.index" -> the OID of its table (the database's own indexes: initdb's are of the
        #: system catalogs, which DDL of an agent does not reach)
        self.index_tables: dict[str, int] = {f"{schema}.{name}": table for schema, name, table in indexes}
        #: the extensions a role with CREATE on the database may install (every version trusted);
        #: empty when not known (a snapshot): installing any is then a superuser's
        self.trusted_extensions: frozenset[str] = frozenset(trusted_extensions)
        self.server_version = server_version
        self.source = source
        self.complete = complete
        #: the shipped snapshot standing in for a live catalog not (or no longer) loaded: the
        #: database's own objects exist but are unknown, so a statement naming one is `unknown`
        #: (a deployment that chose the snapshot, ``catalog: {live: false}``, has False here)
        self.stand_in = stand_in
        self.generation = next(_generations)
        given = {"functions": functions, "relations": relations, "operators": operators, "types": types,
                 "casts": casts, "attributes": attributes}
        for part, (names, make) in _PARTS.items():
            values = [getattr(previous, name) for name in names] if part in unchanged else make(given[part])
            for name, value in zip(names, values, strict=True):
                setattr(self, name, value)
        self._conversions: dict[tuple[int, bool], tuple[int, ...]] = {}
        #: what the analysis derives from these facts alone, kept for as long as they are current
        self.derived: dict = {}

    def __repr__(self) -> str:
        return f"<Catalog {self.source} generation {self.generation}: {len(self.functions)} functions>"

    def functions_named(self, name: str) -> tuple[FunctionFacts, ...]:
        return self._functions_by_name.get(name, ())

    def function(self, oid: int) -> FunctionFacts | None:
        return self._functions_by_oid.get(oid)

    def relations_named(self, name: str) -> tuple[RelationFacts, ...]:
        return self._relations_by_name.get(name, ())

    def relation(self, oid: int) -> RelationFacts | None:
        return self._relations_by_oid.get(oid)

    def parents(self) -> dict[int, list[int]]:
        """Each partition's and inheritance child's parents (pg_class OIDs), from the parents'
        'i' effects (`RelationFacts.effects`): built once, kept with the facts."""
        parents: dict[int, list[int]] | None = self.derived.get("parents")
        if parents is None:
            parents = {}
            for facts in self.relations:
                for kind, target in facts.effects:
                    if kind == "i":
                        parents.setdefault(target, []).append(facts.oid)
            self.derived["parents"] = parents
        return parents

    def ancestors(self, oid: int) -> tuple[int, ...]:
        """The relations ``oid`` is a partition or an inheritance child of, at any depth: its rows
        are theirs (a read or a write of it reads or writes rows of each)."""
        return self._walk("ancestors", oid, lambda o: self.parents().get(o, ()))

    def descendants(self, oid: int) -> tuple[int, ...]:
        """The partitions and inheritance children of ``oid``, at any depth."""
        def children(o: int) -> Iterable[int]:
            facts = self._relations_by_oid.get(o)
            return [t for kind, t in facts.effects if kind == "i"] if facts is not None else ()
        return self._walk("descendants", oid, children)

    def _walk(self, key: str, oid: int, step) -> tuple[int, ...]:
        known: dict[int, tuple[int, ...]] = self.derived.setdefault(key, {})
        found = known.get(oid)
        if found is None:
            seen: dict[int, None] = {}
            todo = list(step(oid))
            while todo:
                other = todo.pop()
                if other in seen or other == oid:
                    continue
                seen[other] = None
                todo += step(other)
            found = known[oid] = tuple(seen)
        return found

    def _all_columns(self, oid: int) -> tuple[ColumnFacts, ...] | None:
        known = self._columns.get(oid)
        if known is None:
            raw = self._attributes.get(oid)
            if raw is None:
                return None
            names, types = raw
            known = self._columns[oid] = tuple(
                ColumnFacts(oid, attnum, name, type_oid, dropped=not name)
                for attnum, (name, type_oid) in enumerate(zip(names, types, strict=True), 1))
        return known

    def columns_of(self, oid: int) -> tuple[ColumnFacts, ...] | None:
        """The columns of relation ``oid`` in order (what ``*`` expands to); None when unknown."""
        columns = self._all_columns(oid)
        return None if columns is None else tuple(c for c in columns if not c.dropped)

    def column(self, relation: int, attnum: int) -> ColumnFacts | None:
        """Column ``attnum`` of relation ``relation`` (as a RowDescription names it), None when
        unknown or dropped."""
        columns = self._all_columns(relation)
        if columns is None or not 0 < attnum <= len(columns):
            return None
        found = columns[attnum - 1]
        return None if found.dropped else found

    def operators_named(self, name: str) -> tuple[OperatorFacts, ...]:
        return self._operators_by_name.get(name, ())

    def types_named(self, name: str) -> tuple[TypeFacts, ...]:
        return self._types_by_name.get(name, ())

    def type(self, oid: int) -> TypeFacts | None:
        return self._types_by_oid.get(oid)

    def casts_to(self, oid: int) -> tuple[CastFacts, ...]:
        return self._casts_by_target.get(oid, ())

    def conversion(self, oid: int, explicit: bool = True) -> tuple[int, ...]:
        """The functions (pg_proc OIDs) that converting a value to type ``oid`` may run.

        A conversion runs a cast's function from whatever type the value has (every cast
        to the type counts: the value's type is not known), or, for text, the type's input
        function; a domain's CHECK constraints, after the conversion to its base type; for
        an array, the conversion of each element. Reading a composite or range value from
        text reads its fields or bounds with their types' input functions (no casts there).
        ``explicit``: a cast written in the text, which may use any cast; else the server's
        own conversion of a value assigned to a column or parameter, which uses only
        assignment and implicit casts. Only casts made after initdb are known: initdb's
        run built-in functions that do nothing a policy cares about.
        """
        known = self._conversions.get((oid, explicit))
        if known is not None:
            return known
        contexts = ("e", "a", "i") if explicit else ("a", "i")
        found: dict[int, None] = {}
        seen: set[tuple[int, bool]] = set()
        stack = [(oid, True)]  # (type, whether it is reached by a cast rather than by text input)
        while stack:
            item = stack.pop()
            if item in seen:
                continue
            seen.add(item)
            type_oid, cast = item
            if cast:
                found.update((c.function, None) for c in self.casts_to(type_oid)
                             if c.function and c.context in contexts)
            facts = self._types_by_oid.get(type_oid)
            if facts is None:
                continue
            found.update((f, None) for f in facts.functions)
            # a domain's base and an array's element are cast to as the value is; a composite's
            # fields, a range's bounds and a multirange's ranges are read from text
            by_cast = cast and (facts.kind == "d" or facts.kind == "b")
            stack.extend((part, by_cast) for part in facts.parts)
        result = tuple(found)
        self._conversions[oid, explicit] = result
        return result

    def setting_context(self, name: str) -> str | None:
        """pg_settings.context of ``name`` (lower-case), None when the server has no such setting."""
        return self.settings.get(name)
