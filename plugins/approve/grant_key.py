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

A request stores its key (``StoredRequest.grant_key``); one stored by an older pgwarden has none,
so its fingerprint-only grant covers nothing any more (fail closed) rather than what it used to.
"""

from __future__ import annotations

import hashlib
import json

from pgwarden.sql.analysis import Analysis

#: Part of the key, so that a change of what `facts` holds makes earlier keys match nothing.
VERSION = "g1"


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


def grant_key(fingerprint: str | None, analysis: Analysis) -> str | None:
    """The key a fingerprint-only grant is given for and matched on; None without a fingerprint
    (the text does not parse as the server's default lexer reads it): then nothing matches."""
    if fingerprint is None:
        return None
    data = json.dumps(facts(analysis), separators=(",", ":"), ensure_ascii=False)
    return f"{fingerprint}:{VERSION}:{hashlib.sha256(data.encode()).hexdigest()[:32]}"
