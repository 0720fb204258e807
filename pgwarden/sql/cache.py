"""Bounded caches of analysed statements: by text, then by fingerprint.

Agents repeat themselves: the same SQL text, analysed once, serves every later
occurrence in every session. Statements that differ only in constants
(``WHERE id = 1`` / ``WHERE id = 2``) share libpg_query's fingerprint, which
costs a fraction of an analysis; an analysis is shared that way only when no
constant's value mattered to it (see `Analysis.constant_free`), since
``set_config('role', ...)`` and ``set_config('work_mem', ...)`` share a fingerprint.
"""

from __future__ import annotations

from collections import OrderedDict

from pglast.parser import ParseError, fingerprint

from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.statement import Statement, analyze_lexed


class StatementCache:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[object, Statement] = OrderedDict()  # by sql, or (sql, lexer)
        self._by_fingerprint: OrderedDict[str, object] = OrderedDict()
        self.hits = 0
        self.fingerprint_hits = 0
        self.misses = 0

    def get(self, sql: str, lexer: LexerSettings = DEFAULT_LEXER) -> Statement:
        """The Statement for ``sql`` parsed under ``lexer``; analysed only when a plugin first asks
        (see `analysis_for`)."""
        items = self._items
        key = sql if lexer is DEFAULT_LEXER or lexer.default else (sql, lexer)
        statement = items.get(key)
        if statement is not None:
            items.move_to_end(key)
            self.hits += 1
            return statement
        statement = items[key] = Statement(sql, cache=self, lexer=lexer)
        if len(items) > self._size:
            items.popitem(last=False)
        return statement

    def analysis_for(self, sql: str, statement: Statement | None = None):
        """The analysis of ``sql``: shared by fingerprint when that is safe, else computed.

        The fingerprint computed on the way is kept on ``statement`` (records name it).
        Under non-default lexer settings nothing is shared: fingerprints read the defaults.
        """
        if statement is not None and not statement.lexer.default:
            self.misses += 1
            return analyze_lexed(sql, statement.lexer)
        try:
            fp = fingerprint(sql)
        except ParseError:
            fp = None
        if statement is not None:
            statement._fingerprint = fp
        if fp is None:
            self.misses += 1
            return analyze_sql(sql)  # kind unknown
        known = self._by_fingerprint.get(fp)
        if known is not None:
            self.fingerprint_hits += 1
            return known
        self.misses += 1
        analysis = analyze_sql(sql)
        if analysis.constant_free:
            self._by_fingerprint[fp] = analysis
            if len(self._by_fingerprint) > self._size:
                self._by_fingerprint.popitem(last=False)
        return analysis

    def __len__(self) -> int:
        return len(self._items)
