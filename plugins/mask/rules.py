"""The ``mask`` rules that apply to a session, and which of them masks a given base column."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import attrs

from pgwarden.api import MASK, MaskSpec, Policy
from pgwarden.catalog.model import Catalog
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lineage import reveals_values

#: the relation kinds whose columns are what they store (a view's are what its query computes)
_STORING = frozenset({"r", "p"})


def _has_no_column(catalog: Catalog | None, table: str, column_glob: str) -> bool:
    """Whether the catalog shows ``table`` as one table that stores no column ``column_glob``
    names (False when it cannot tell)."""
    if catalog is None or not catalog.complete or "." not in table:
        return False
    schema, name = table.split(".", 1)
    found = [r for r in catalog.relations_named(name) if r.schema == schema]
    if len(found) != 1 or found[0].kind not in _STORING:
        return False
    columns = catalog.columns_of(found[0].oid)
    return columns is not None and not any(fnmatch.fnmatchcase(c.name, column_glob) for c in columns)


@attrs.frozen
class MaskRule:
    """One mask rule with where it comes from (``policy/rule``, for records, metrics and refusals)."""

    name: str
    spec: MaskSpec

    @property
    def strength(self) -> int:
        return self.spec.strength


class SessionRules:
    """The mask rules of a tuple of policies; which rule masks each column, memoised by column."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        columns: list[MaskRule] = []
        detect: list[MaskRule] = []
        for policy in policies:
            for i, rule in enumerate(policy.rules):
                spec = MASK.of(rule)
                if spec is None:
                    continue
                named = MaskRule(f"{policy.name}/{rule.name or f'rules[{i}]'}", spec)
                if spec.columns and not spec.detect:
                    columns.append(named)
                if spec.detect:
                    detect.append(named)
        self.columns = tuple(columns)
        self.detect = tuple(detect)
        self._of: dict[str, MaskRule | None] = {}

    def __bool__(self) -> bool:
        return bool(self.columns or self.detect)

    def rule_for(self, source: str) -> MaskRule | None:
        """The strictest column rule masking ``source`` (``schema.table.column``), or None.

        A source that may hold any column's value (the planner's statistics, statements' text:
        `reveals_values`) is masked by the strictest column rule of all: what it shows of a masked
        column is masked whole, and using it in WHERE is an oracle of every masked column."""
        known = self._of.get(source, self)
        if known is not self:
            return known  # type: ignore[return-value]
        found = [r for r in self.columns if reveals_values(source)
                 or any(fnmatch.fnmatchcase(source, glob) for glob in r.spec.columns)]
        best = max(found, key=lambda r: r.strength) if found else None
        if len(self._of) > 10_000:
            self._of.clear()
        self._of[source] = best
        return best

    def strictest(self, sources: Iterable[str] | None) -> MaskRule | None:
        """The strictest rule masking any of ``sources``; with None (unknown), of every column rule."""
        rules = self.columns if sources is None else [r for r in map(self.rule_for, sources) if r is not None]
        return max(rules, key=lambda r: r.strength) if rules else None

    def masked_tables(self) -> list[str]:
        """``schema.table`` globs of the tables masked columns are in."""
        return [glob.rsplit(".", 1)[0] for r in self.columns for glob in r.spec.columns]

    def may_hold_masked(self, table: str, context: SqlContext | None) -> bool:
        """Whether ``table`` (``schema.table``) may hold a masked column, for its messages: a
        rule's glob names the table, and a column of it unless the catalog shows the table has
        none of that name. ``public.*.secret_note`` names every table of public; one whose
        columns the catalog lists, none of them a ``secret_note``, holds no masked value, and a
        failed write to it may say why (session 30: every error of a write to any table of
        public was withheld). What the catalog cannot show holds one: a view, a table it does not
        know (made since it was read), any table while the session's own change is not read
        (``stale``). Another client's new column is seen within the catalog's check, the same
        bound as the rows' ("When the catalog changes", docs/masking.md)."""
        catalog = context.catalog if context is not None and not context.stale else None
        for rule in self.columns:
            for glob in rule.spec.columns:
                table_glob, column_glob = glob.rsplit(".", 1)
                if fnmatch.fnmatchcase(table, table_glob) and not _has_no_column(catalog, table, column_glob):
                    return True
        return False

    def detectors_for(self, source: str | None) -> tuple[str, ...]:
        """The detectors of the rules that scan ``source`` (every column when a rule names none)."""
        names: list[str] = []
        for r in self.detect:
            if not r.spec.columns or (source is not None and
                                      any(fnmatch.fnmatchcase(source, g) for g in r.spec.columns)):
                names.extend(r.spec.detect)
        return tuple(dict.fromkeys(names))
