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

from pgwarden.sql.analysis import Analysis
from pgwarden.sql.context import SqlContext
from pgwarden.sql.reached import definitions

__all__ = ["VERSION", "bound", "definitions", "facts", "grant_key"]

#: Part of the key, so that a change of what `facts` holds makes earlier keys match nothing.
VERSION = "g3"


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
