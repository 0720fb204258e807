"""How many ways a hostile corpus runs each case: all of them, or a thin matrix.

CI runs the whole suite twice (`.ci/run`: `make test`, then `make test-second-pass`): on the
compiled hot path and on pure Python with Twisted's default reactor. The analysis, lineage and the
plugins are the same Python in both, so running each hostile case under every protocol in both
passes checks that code twice; the second pass is there for the hot path's pure-Python build and the
other reactor. With ``PGWARDEN_TEST_MATRIX=thin`` (the second pass's), each case runs under its
first protocol and one other, rotating through the rest across cases: every protocol path still runs
in that pass, and every case, at about two fifths of the cost (docs/testing.md, "How long it
takes"). The masking leak corpus (five protocols a case) is thin in both passes; ``make fuzz-leaks``
runs it whole (``PGWARDEN_TEST_MATRIX=full``), and in the thin pass runs each case under one
protocol. The thin pass's property tests generate half their examples (`examples`, the ``ci-thin``
hypothesis profile).
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
    the first and one other (chosen by ``index``, so that the cases share out the others). A
    corpus thin by default (``default_thin``: the leak corpus, in both passes) runs each case under
    one protocol in the thin pass, rotating through all of them across the cases."""
    if not thin(default_thin):
        return protocols
    if len(protocols) <= 2 or (default_thin and thin()):
        return (protocols[index % len(protocols)],)
    return (protocols[0], protocols[1 + index % (len(protocols) - 1)])


#: The thin pass's hypothesis profile (tests/conftest.py) generates this share of the examples.
THIN_EXAMPLES = 0.5


def examples(count: int) -> int:
    """How many examples a property that asks for ``count`` under the ``ci`` profile generates
    in this pass: ``count``, or in the thin pass (whose profile is ``ci-thin``) half of it, at
    least ten. The second pass runs the same properties over the pure-Python hot path and the
    default reactor; what they generate for code that is the same in both passes the first pass
    checks at full size (and ``make fuzz`` deep)."""
    return max(10, int(count * THIN_EXAMPLES)) if thin() else count
