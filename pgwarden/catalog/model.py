"""The catalog facts the analysis needs, as frozen values with indexes by name.

Everything is keyed the way the parser names things: lower-case unquoted names as
the server folds them, quoted names as written. A `Catalog` never changes once
built; a refresh builds a new one with a new `generation`, which is part of every
cache key that depends on catalog facts.
"""

from __future__ import annotations

import itertools
from typing import Iterable

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
    kind: str  # relkind: r table, p partitioned, v view, m materialized view, f foreign, S sequence, ...
    # For views and materialized views: what their definition calls and reads (from pg_depend).
    functions: tuple[int, ...] = ()  # pg_proc OIDs
    relations: tuple[int, ...] = ()  # pg_class OIDs


@attrs.frozen
class OperatorFacts:
    """One row of pg_operator: an operator is a call of its function (oprcode)."""

    oid: int
    schema: str
    name: str  # the operator's symbol, e.g. "+", "@@", "|>>"
    function: int  # oprcode's pg_proc OID
    left: int = 0  # oprleft type OID (0: prefix operator)
    right: int = 0


def _index(items: Iterable, key) -> dict[str, tuple]:
    out: dict[str, list] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return {k: tuple(v) for k, v in out.items()}


class Catalog:
    """An immutable set of catalog facts with the lookups the analysis makes.

    ``source`` says where the facts come from ("live" or "snapshot postgresql-15");
    ``complete`` is True when every object of the database is known (a live
    catalog): a name missing from an incomplete catalog may still exist.
    """

    def __init__(
        self,
        *,
        functions: Iterable[FunctionFacts] = (),
        relations: Iterable[RelationFacts] = (),
        operators: Iterable[OperatorFacts] = (),
        settings: dict[str, str] | None = None,
        schemas: Iterable[str] = (),
        server_version: int = 0,
        source: str = "empty",
        complete: bool = False,
    ) -> None:
        self.functions: tuple[FunctionFacts, ...] = tuple(functions)
        self.relations: tuple[RelationFacts, ...] = tuple(relations)
        self.operators: tuple[OperatorFacts, ...] = tuple(operators)
        #: setting name (lower-case) -> pg_settings.context
        self.settings: dict[str, str] = dict(settings or {})
        self.schemas: frozenset[str] = frozenset(schemas)
        self.server_version = server_version
        self.source = source
        self.complete = complete
        self.generation = next(_generations)
        self._functions_by_name = _index(self.functions, lambda f: f.name)
        self._functions_by_oid = {f.oid: f for f in self.functions}
        self._relations_by_name = _index(self.relations, lambda r: r.name)
        self._relations_by_oid = {r.oid: r for r in self.relations}
        self._operators_by_name = _index(self.operators, lambda o: o.name)

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

    def operators_named(self, name: str) -> tuple[OperatorFacts, ...]:
        return self._operators_by_name.get(name, ())

    def setting_context(self, name: str) -> str | None:
        """pg_settings.context of ``name`` (lower-case), None when the server has no such setting."""
        return self.settings.get(name)
