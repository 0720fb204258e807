"""How many ways a hostile corpus runs each case: all of them, or a thin matrix.

`make test` runs the whole suite twice, side by side: on the compiled hot path and on pure Python
with Twisted's default reactor. The analysis, lineage and the plugins are the same Python in
both, so running each hostile case under every protocol in both passes checks that code twice;
the second pass is there for the hot path's pure-Python build and the other reactor. With
``PGWARDEN_TEST_MATRIX=thin`` (the second pass's), each case runs under its first protocol and
one other, rotating through the rest across cases: every protocol path still runs in that pass,
and every case, at about two fifths of the cost (docs/testing.md, "How long it takes"). The
masking leak corpus (five protocols a case) is thin in both passes; ``make fuzz-leaks`` runs it
whole (``PGWARDEN_TEST_MATRIX=full``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

ENV = "PGWARDEN_TEST_MATRIX"


def thin(default: bool = False) -> bool:
    """Whether the matrix is thin: ``PGWARDEN_TEST_MATRIX`` says ``thin`` or ``full``; else ``default``."""
    said = os.environ.get(ENV, "")
    return said == "thin" or (default and said != "full")


def protocols_of(index: int, protocols: Sequence[str], default_thin: bool = False) -> Sequence[str]:
    """The protocols case number ``index`` runs under: all of ``protocols``, or, in a thin matrix,
    the first and one other (chosen by ``index``, so that the cases share out the others)."""
    if not thin(default_thin):
        return protocols
    if len(protocols) <= 2:
        return (protocols[index % len(protocols)],)
    return (protocols[0], protocols[1 + index % (len(protocols) - 1)])
