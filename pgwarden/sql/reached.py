"""What a statement reaches of the database's own definitions, as one digest (red team twelve).

pgwarden's analysis of a statement says what it does (its kinds, tables, WHERE or not); it is the
same before and after ``CREATE OR REPLACE VIEW v AS <another query>``, while the statement now
does something else. An approval, given for what a statement did when a person read it, is bound
to this digest too: a retry grant (`pgwarden_plugins.approve.grant_key`) and a held statement
approved after the view it reads was replaced while it waited (`pgwarden.approvals`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pgwarden.catalog.model import FIRST_NORMAL_OID, Catalog, FunctionFacts, RelationFacts
from pgwarden.sql.analysis import Analysis

#: `RelationFacts.effects` kinds whose number is no object's OID (an attnum, or 0)
_NOT_AN_OID = frozenset({"k", "F", "X", "A"})
#: ... and those whose OID is a relation's (the rest are functions')
_RELATION_EFFECTS = frozenset({"c", "r", "n", "u", "i", "o"})


def _named(catalog: Catalog, qualified: str) -> list[RelationFacts | None]:
    """The relations ``schema.name`` may be (a quoted name may hold a dot: every split is tried)."""
    found: list[RelationFacts | None] = []
    for i, c in enumerate(qualified):
        if c == ".":
            found += [r for r in catalog.relations_named(qualified[i + 1:]) if r.schema == qualified[:i]]
    return found


def definitions(analysis: Analysis, catalog: Catalog | None, more: Iterable[Analysis] = ()) -> str | None:
    """A digest of the definitions of the database's own objects the statement reaches, as the
    catalog holds them: every function of each name it calls (its body, language, settings,
    volatility), every relation it names or fires (a view's definition, its rules, its row-level
    security policies, what a write fires: triggers' functions, defaults, cascading tables), and
    what those reach in turn. Objects made by initdb or an extension's script are left out (they
    change only with the server or the extension). None when it reaches none.

    The analysis of a statement is the same before and after `CREATE OR REPLACE VIEW` (its kinds,
    tables and WHERE): only this says the text now does something else (red team twelve)."""
    if catalog is None:
        return None
    functions: dict[int, FunctionFacts] = {}
    relations: dict[int, RelationFacts] = {}
    todo_f: list[FunctionFacts | None] = []
    todo_r: list[RelationFacts | None] = []
    for a in (analysis, *more):
        for name in a.functions:
            todo_f += catalog.functions_named(name)
        for table in (a.tables | a.writes | a.fired_tables | a.foreign
                      | frozenset(t for _kind, t in a.indirect_writes)):
            todo_r += _named(catalog, table)
    while todo_f or todo_r:
        while todo_f:
            fn = todo_f.pop()
            if fn is None or fn.oid in functions:
                continue
            functions[fn.oid] = fn
            todo_f += [catalog.function(oid) for oid in fn.support]
        while todo_r:
            rel = todo_r.pop()
            if rel is None or rel.oid in relations:
                continue
            relations[rel.oid] = rel
            todo_f += [catalog.function(oid) for oid in rel.functions]
            todo_r += [catalog.relation(oid) for oid in rel.relations]
            for kind, oid in rel.effects:
                if kind in _NOT_AN_OID:
                    continue
                if kind in _RELATION_EFFECTS:
                    todo_r.append(catalog.relation(oid))
                else:
                    todo_f.append(catalog.function(oid))
    own = sorted(repr(fn) for fn in functions.values() if not fn.builtin)
    own += sorted(repr(rel) for oid, rel in relations.items() if oid >= FIRST_NORMAL_OID)
    if not own:
        return None
    return hashlib.sha256("\n".join(own).encode("utf-8", "surrogatepass")).hexdigest()


def everything(catalog: Catalog | None) -> str | None:
    """`definitions` of every function and relation the database's users made: for what cannot be
    traced to names (an EXECUTE of a prepared body the core does not keep)."""
    if catalog is None:
        return None
    own = sorted(repr(fn) for fns in catalog._functions_by_name.values() for fn in fns if not fn.builtin)
    own += sorted(repr(rel) for rels in catalog._relations_by_name.values() for rel in rels
                  if rel.oid >= FIRST_NORMAL_OID)
    return hashlib.sha256("\n".join(own).encode("utf-8", "surrogatepass")).hexdigest() if own else None
