"""The two counters bumped for every statement, compiled: its verdict by kinds, pgwarden's time on it.

`pgwarden.metrics.Stats` keeps every other counter as plain attributes; these two are bumped on
the path of every statement (by the decision, and when its execution completes), where an
interpreted method is a Python frame each time. `Stats` hands out their compiled methods as its
own (``stats.statement``, ``stats.overhead``), so that callers keep one name for each.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection


class StatementCounts:
    """Statements by (verdict, kind): counted by (verdict, set of kinds), one dictionary update a
    statement, and spread under each kind when read.

    Not under the kinds joined (``transaction+update``): combinations would make an unbounded
    label set, one series each, and a query for ``kind="update"`` would miss the updates that came
    with something else. ``none``: no kind at all (an empty query string).
    """

    def __init__(self) -> None:
        self.decided: dict[tuple[str, Collection[str]], int] = {}  # not spread yet
        self.statements: dict[tuple[str, str], int] = {}  # spread: (verdict, kind) -> count
        self.verdicts: dict[str, int] = {}  # verdict -> statements, each counted once

    def count(self, action: str, kinds: Collection[str]) -> None:
        """One statement with verdict ``action`` and ``kinds`` (hashable: a frozenset or a tuple)."""
        key = (action, kinds)
        decided = self.decided
        decided[key] = decided.get(key, 0) + 1
        if len(decided) > 1024:  # sets of kinds are few; bounded whatever the statements are
            self.spread()

    def spread(self) -> None:
        statements, verdicts = self.statements, self.verdicts
        for (action, kinds), n in self.decided.items():
            for kind in kinds or ("none",):
                key = (action, kind)
                statements[key] = statements.get(key, 0) + n
            verdicts[action] = verdicts.get(action, 0) + n
        self.decided.clear()


class Histogram:
    """Observations counted into buckets by upper bound (the last bucket: above every bound)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets: list[int] = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value
