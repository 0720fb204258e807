"""The key a fingerprint-only grant matches on: the fingerprint and what the statement does.

libpg_query's fingerprint ignores every constant, also the ones that change what a statement
does: ``LIMIT 5`` and ``LIMIT ALL`` (a NULL constant), ``WHERE id + 5 = id + 6`` and
``WHERE id + 0 = id + 0``, ``WHERE false`` and ``WHERE true``, ``SET role = 'a'`` and ``'b'``,
``set_config('search_path', ...)`` and ``set_config('role', ...)``, ``query_to_xml('select 1')``
and ``query_to_xml('delete from t')``, ``EXECUTE a`` and ``EXECUTE b``: each pair has one
fingerprint. pgwarden's analysis tells each pair apart, so a grant by fingerprint covers a
statement only when the analysis says it does the same as the approved one: the key is the
fingerprint followed by a digest of those facts (`facts`). Constants the analysis does not read
(a row's id, a value written, a function's argument) stay "other constants".

The key also binds what the text means where it runs (`bound`): the session's search_path (the
tables resolved under it are in the facts already, and a name the catalog does not show yet
resolves on the path alone), and for an EXECUTE every body the session has PREPAREd under the
name (their texts, and what they do), and (since red team twelve) the definitions of the database's
own views, functions, triggers, rules and policies the statement reaches (`definitions`: a view
replaced by plain DDL after the approval made the approved text delete every row). A retry
grant, exact (text and parameters) or by fingerprint, covers a statement only when its key is
the approved one's: ``DELETE FROM things WHERE id = 1`` approved under ``public`` does not
cover the same text after ``SET search_path = archive, public``, nor ``EXECUTE p(1)`` after
``p`` was PREPAREd again as another statement.

A request stores its key (``StoredRequest.grant_key``); one stored by an older pgwarden has none,
so its fingerprint-only grant covers nothing any more (fail closed) rather than what it used to.
A text without a fingerprint (libpg_query's default lexer cannot read it) has a key too, for its
exact grants; `covers` gives it no fingerprint-only grant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from pgwarden.catalog.model import FIRST_NORMAL_OID, Catalog, FunctionFacts, RelationFacts
from pgwarden.sql.analysis import Analysis
from pgwarden.sql.context import SqlContext

#: Part of the key, so that a change of what `facts` holds makes earlier keys match nothing.
VERSION = "g3"

#: `RelationFacts.effects` kinds whose number is no object's OID (an attnum, or 0)
_NOT_AN_OID = frozenset({"k", "F", "X", "A"})
#: ... and those whose OID is a relation's (the rest are functions')
_RELATION_EFFECTS = frozenset({"c", "r", "n", "u", "i", "o"})


def facts(analysis: Analysis) -> list[object]:
    """What the statement does, as far as pgwarden's analysis reads it: the facts policies match
    on, the settings it changes with their values, and the prepared statements it defines, runs
    and drops. Not ``constant_free`` (how the analysis was cached, not what the statement does)."""
    return [
        sorted(analysis.kinds), sorted(analysis.tables), sorted(analysis.writes), sorted(analysis.functions),
        analysis.has_where, [list(s) for s in analysis.settings], list(analysis.executes),
        list(analysis.deallocates), analysis.read_write,
        [[name, facts(body)] for name, body, _syntax in analysis.prepares],
    ]


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


def bound(context: SqlContext | None, executed: object = None, reached: str | None = None) -> list[object]:
    """What the statement's text means in its session beyond the analysis' facts: the search_path
    (None: uncertain, with the schemas it may hold), the role "$user" stands for, and
    ``executed``: for an EXECUTE, each executed name's prepared bodies (`Approving` keeps them);
    ``reached``: the digest of the definitions it reaches (`definitions`)."""
    if context is None:
        return [None, executed, reached]
    path = list(context.search_path) if context.search_path is not None else None
    return [path, sorted(context.possible), context.user, executed, reached]


def grant_key(fingerprint: str | None, analysis: Analysis, meaning: list[object] | None = None) -> str:
    """The key a retry grant is given for and matched on: the fingerprint (``-`` without one: the
    text does not parse as the server's default lexer reads it, and `covers` gives such a
    statement no fingerprint-only grant), then a digest of the facts and of ``meaning`` (`bound`)."""
    data = json.dumps([facts(analysis), meaning], separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{fingerprint or '-'}:{VERSION}:{hashlib.sha256(data.encode()).hexdigest()[:32]}"
