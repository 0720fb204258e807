"""`Statement`: one SQL string as plugins see it, analysed once (see `analysis`)."""

from __future__ import annotations

from functools import cached_property

from pgwarden.sql.analysis import Analysis, analyze_sql


class Statement:
    """One SQL string, analysed on first use and shared by every plugin."""

    __slots__ = ("sql", "_analyze", "_cache", "__dict__")

    def __init__(self, sql: str, analyze=None, cache=None) -> None:
        self.sql = sql
        self._analyze = analyze or analyze_sql
        # A StatementCache analyses (and keeps the fingerprint) for us. Referring to it, not
        # to a closure over this statement, keeps statements free of reference cycles: an
        # evicted one is freed at once instead of waiting for the cycle collector.
        self._cache = cache

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"

    @cached_property
    def analysis(self) -> Analysis:
        if self._cache is not None:
            return self._cache.analysis_for(self.sql, self)
        return self._analyze(self.sql)

    @property
    def kinds(self) -> frozenset[str]:
        """The classes of everything this string does (select, insert, ddl, role, ...); ``unknown``
        when it does not parse."""
        return self.analysis.kinds

    @property
    def tables(self) -> frozenset[str]:
        """Every table it names, as schema.table (unqualified names as public.name)."""
        return self.analysis.tables

    @property
    def writes(self) -> frozenset[str]:
        """The tables it writes, however deep the write is nested."""
        return self.analysis.writes

    @property
    def functions(self) -> frozenset[str]:
        return self.analysis.functions

    @property
    def has_where(self) -> bool | None:
        """For UPDATE/DELETE: whether every one has a WHERE that can be false; None otherwise."""
        return self.analysis.has_where

    @cached_property
    def fingerprint(self) -> str | None:
        """libpg_query's fingerprint: the same for statements that differ only in constants."""
        from pglast.parser import ParseError, fingerprint

        try:
            return fingerprint(self.sql)
        except ParseError:
            return None


def analyze(sql: str) -> Statement:
    return Statement(sql)
