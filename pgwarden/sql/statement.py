"""`Statement`: one SQL string as plugins see it, analysed once (see `analysis`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from pglast.parser import ParseError, fingerprint

from pgwarden.sql.analysis import Analysis

if TYPE_CHECKING:
    from pgwarden.sql.cache import StatementCache
    from pgwarden.sql.context import SqlContext
    from pgwarden.sql.lexer import LexerSettings
    from pgwarden.sql.lineage import Lineage

#: a fingerprint not computed yet (Final: compiled, a C static, not a lookup in the module's globals)
_UNSET: Final = object()


class Statement:
    """One SQL string in one session context, analysed on first use and shared by every plugin.

    The analysis and the fingerprint are computed at most once, into slots:
    ``functools.cached_property`` would take a lock on every first access, and
    with statements that all differ in a constant every access is a first one.
    """

    __slots__ = ("sql", "context", "_analyze", "_cache", "analysed", "_fingerprint", "_lineage")

    def __init__(self, sql: str, analyze: Callable[[str], Analysis] | None = None,
                 cache: StatementCache | None = None, context: SqlContext | None = None,
                 lexer: LexerSettings | None = None) -> None:
        self.sql = sql
        if lexer is not None:
            from pgwarden.sql.context import default_context

            context = (context or default_context()).with_lexer(lexer)
        self.context = context
        self._analyze = analyze
        # A StatementCache analyses for us. Referring to it, not to a closure over this
        # statement, keeps statements free of reference cycles: an evicted one is freed
        # at once instead of waiting for the cycle collector.
        self._cache = cache
        #: the analysis if something has asked for it already, else None (nothing is parsed); an
        #: attribute, not a property: the decision and masking read it several times a statement
        self.analysed: Analysis | None = None
        self._fingerprint: object = _UNSET
        self._lineage: tuple[Lineage, ...] | None = None

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"

    @property
    def analysis(self) -> Analysis:
        analysis = self.analysed
        return analysis if analysis is not None else self.analyse()

    def analyse(self) -> Analysis:
        """The analysis, computed now, for a caller that has seen `analysed` is None. (A method,
        not the property's body: `kinds` and the decision, on every statement, call it from
        Python directly, cheaper than through the property.)"""
        if self._cache is not None:
            analysis = self._cache.analysis_for(self.sql, self.context)  # type: ignore[arg-type]  # has one
        elif self._analyze is not None:
            analysis = self._analyze(self.sql)
        else:
            from pgwarden.sql.analysis import analyze_sql

            analysis = analyze_sql(self.sql, self.context)
        self.analysed = analysis
        return analysis

    @property
    def lineage(self) -> tuple[Lineage, ...]:
        """Where each output column of each statement of the string comes from, what it reads,
        and its oracles (`pgwarden.sql.lineage`); computed when first asked (masking rules
        exist), shared by every session in the same context."""
        lineage = self._lineage
        if lineage is None:
            if self._cache is not None:
                lineage = self._cache.lineage_for(self.sql, self.context)  # type: ignore[arg-type]
            else:
                from pgwarden.sql.context import default_context
                from pgwarden.sql.lineage import lineage_of

                lineage = lineage_of(self.sql, self.context or default_context())
            self._lineage = lineage
        return lineage

    @property
    def kinds(self) -> frozenset[str]:
        """The classes of everything this string does (select, insert, ddl, role, side_effect, ...);
        ``unknown`` when it does not parse or runs something pgwarden cannot identify."""
        analysis = self.analysed  # (asked of every statement: no second property call)
        return (analysis if analysis is not None else self.analyse()).kinds

    @property
    def tables(self) -> frozenset[str]:
        """Every table it reads or writes, as schema.table; an unqualified name is given in each
        schema of the session's search_path it may resolve to (and views' base tables)."""
        return self.analysis.tables

    @property
    def writes(self) -> frozenset[str]:
        """The tables it writes, however deep the write is nested."""
        return self.analysis.writes

    @property
    def indirect_writes(self) -> frozenset[tuple[str, str]]:
        """(kind, schema.table) of the writes it does besides its own kinds on the tables it names:
        a foreign key's action updating the referencing rows, rows moved between partitions."""
        return self.analysis.indirect_writes

    @property
    def functions(self) -> frozenset[str]:
        """The functions it runs (lower-case names), however they are called."""
        return self.analysis.functions

    @property
    def has_where(self) -> bool | None:
        """For UPDATE/DELETE: whether every one has a WHERE that filters rows; None otherwise."""
        return self.analysis.has_where

    @property
    def fingerprint(self) -> str | None:
        """libpg_query's fingerprint: the same for statements that differ only in constants."""
        fp = self._fingerprint
        if fp is not _UNSET:
            return fp  # type: ignore[return-value]  # set: a str or None
        if self.context is not None and not self.context.lexer.default:
            fp = None  # a fingerprint reads the text under the default settings
        elif self._cache is not None:
            fp = self._cache.fingerprint_for(self.sql)
        else:
            try:
                fp = fingerprint(self.sql)
            except ParseError:
                fp = None
        self._fingerprint = fp
        return fp


def analyze(sql: str) -> Statement:
    return Statement(sql)
