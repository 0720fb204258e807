"""`Statement`: one SQL string as plugins see it, analysed once (see `analysis`)."""

from __future__ import annotations

from pglast.parser import ParseError, fingerprint

from pgwarden.sql import analysis as _analysis
from pgwarden.sql.analysis import Analysis, analyze_sql
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings, parse_tree

_UNSET = object()


def analyze_lexed(sql: str, lexer: LexerSettings) -> Analysis:
    """The analysis of ``sql`` as the server parses it under the session's ``lexer`` settings.

    Interim, until `analyze_sql` takes the lexer settings itself: the same walk, over
    the tree parsed with the session's settings. (SQL in string literals handed to
    functions, ``query_to_xml('...')``, is still parsed with the defaults in here.)
    """
    if lexer.default:
        return analyze_sql(sql)
    try:
        tree = parse_tree(sql, lexer)
    except ParseError:
        return Analysis(frozenset({"unknown"}))
    stmts = tree.get("stmts", [])
    if not stmts:
        return Analysis(frozenset())
    walker = _analysis._Walker()
    for raw in stmts:
        walker.statement(raw.get("stmt", {}))
    return walker.result()


class Statement:
    """One SQL string, analysed on first use and shared by every plugin.

    The analysis and the fingerprint are computed at most once, into slots:
    ``functools.cached_property`` would take a lock on every first access, and
    with statements that all differ in a constant every access is a first one.
    """

    __slots__ = ("sql", "lexer", "_analyze", "_cache", "_analysis", "_fingerprint", "__dict__")

    def __init__(self, sql: str, analyze=None, cache=None, lexer: LexerSettings = DEFAULT_LEXER) -> None:
        self.sql = sql
        #: the session's lexer settings (standard_conforming_strings): how the server parses ``sql``
        self.lexer = lexer
        self._analyze = analyze or analyze_sql
        # A StatementCache analyses (and keeps the fingerprint) for us. Referring to it, not
        # to a closure over this statement, keeps statements free of reference cycles: an
        # evicted one is freed at once instead of waiting for the cycle collector.
        self._cache = cache
        self._analysis = None
        self._fingerprint = _UNSET

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"

    @property
    def analysis(self) -> Analysis:
        analysis = self._analysis
        if analysis is None:
            if self._cache is not None:
                analysis = self._cache.analysis_for(self.sql, self)
            elif self.lexer.default:
                analysis = self._analyze(self.sql)
            else:
                analysis = analyze_lexed(self.sql, self.lexer)
            self._analysis = analysis
        return analysis

    @property
    def analysed(self) -> Analysis | None:
        """The analysis if something has asked for it already, else None (nothing is parsed)."""
        return self._analysis

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

    @property
    def fingerprint(self) -> str | None:
        """libpg_query's fingerprint: the same for statements that differ only in constants.

        None when it does not parse, and under non-default lexer settings (fingerprints are
        taken with the defaults, which would read another statement)."""
        fp = self._fingerprint
        if fp is _UNSET and not self.lexer.default:
            fp = self._fingerprint = None
        if fp is _UNSET:
            try:
                fp = fingerprint(self.sql)
            except ParseError:
                fp = None
            self._fingerprint = fp
        return fp


def analyze(sql: str) -> Statement:
    return Statement(sql)
