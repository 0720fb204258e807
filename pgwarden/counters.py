"""The two counters bumped for every statement, compiled: its verdict by kinds, pgwarden's time on it.

`pgwarden.metrics.Stats` keeps every other counter as plain attributes; these two are bumped on
the path of every statement (by the decision, and when its execution completes), where an
interpreted method is a Python frame each time. `Stats` hands out their compiled methods as its
own (``stats.statement``, ``stats.overhead``), so that callers keep one name for each.
"""

from __future__ import annotations

from collections.abc import Collection


class StatementCounts:
    """Statements by (verdict, kind): counted by (verdict, set of kinds), one dictionary update a
    statement, and spread under each kind when read.

    Not under the kinds joined (``transaction+update``): combinations would make an unbounded
    label set, one series each, and a query for ``kind="update"`` would miss the updates that came
    with something else. ``none``: no kind at all (an empty query string).
    """

    def __init__(self) -> None:
        #: not spread yet: verdict -> set of kinds -> count (two lookups by keys whose hash their
        #: objects keep, rather than a tuple made and hashed for every statement); the run of the
        #: last verdict and kinds is not in it yet (`flush`)
        self.decided: dict[str, dict[Collection[str], int]] = {}
        self.unspread = 0  # sets of kinds in `decided`
        self.statements: dict[tuple[str, str], int] = {}  # spread: (verdict, kind) -> count
        self.verdicts: dict[str, int] = {}  # verdict -> statements, each counted once
        # The last statement's verdict and kinds, and how many in a row had them (by identity: an
        # analysis is shared by the statements that differ only in constants, and so its kinds)
        self._action: str | None = None
        self._kinds: Collection[str] | None = None
        self._run = 0

    def count(self, action: str, kinds: Collection[str]) -> None:
        """One statement with verdict ``action`` and ``kinds`` (hashable: a frozenset or a tuple)."""
        if kinds is self._kinds and action is self._action:
            self._run += 1  # (no dictionary touched: the same as the statement before)
            return
        self.flush()
        self._action = action
        self._kinds = kinds
        self._run = 1

    def flush(self) -> None:
        """The run of statements with the last verdict and kinds, counted into `decided`."""
        run = self._run
        action = self._action
        kinds = self._kinds
        if run == 0 or action is None or kinds is None:
            return
        self._run = 0
        by_kinds = self.decided.get(action)
        if by_kinds is None:
            by_kinds = self.decided[action] = {}
        n = by_kinds.get(kinds)
        if n is not None:
            by_kinds[kinds] = n + run
            return
        by_kinds[kinds] = run
        self.unspread += 1
        if self.unspread > 1024:  # sets of kinds are few; bounded whatever the statements are
            self.spread()

    def spread(self) -> None:
        self.flush()
        statements, verdicts = self.statements, self.verdicts
        for action, by_kinds in self.decided.items():
            for kinds, n in by_kinds.items():
                for kind in kinds or ("none",):
                    key = (action, kind)
                    statements[key] = statements.get(key, 0) + n
                verdicts[action] = verdicts.get(action, 0) + n
        self.decided.clear()
        self.unspread = 0


class Histogram:
    """Observations counted into buckets by upper bound (the last bucket: above every bound)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds: list[float] = list(bounds)
        self.buckets: list[int] = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        # The first bound at or above the value (`bisect_left`'s answer): a typed loop compiled,
        # cheaper for a dozen bounds than bisect's comparisons of float objects.
        bounds = self.bounds
        i = 0
        n = len(bounds)
        while i < n and bounds[i] < value:
            i += 1
        buckets = self.buckets
        buckets[i] = buckets[i] + 1  # (compiled: an int's add; ``+=`` on an item is the generic one)
        self.sum += value
