"""Bounded caches of analysed statements: sound sharing, cheap on the hot path.

Three layers, each keyed by everything its value depends on:

* text → `Statement`, per `SqlContext` (the Statement plugins see);
* text → `Syntax`, per lexer settings; and, for texts that differ only in
  constants, normalized text → `Syntax` when no constant's value mattered
  (`Syntax.constant_free`). libpg_query's ``normalize`` replaces constants and
  keeps every name — unlike its fingerprint, which also ignores the names of
  prepared statements, cursors and aliases, so ``EXECUTE a`` and ``EXECUTE b``
  shared an analysis;
* (`Syntax`, context) → `Analysis`: the catalog's and the search_path's part.

Agents repeat themselves: the same statement with another constant costs one
``normalize`` (about 2 µs) and a few dictionary lookups; with another small integer only,
not even the ``normalize``: its numeric template (`pgwarden.sql.template`, a scan of the
text) stands for it once ``normalize`` has shown the template sound on its first text. A
text of the last sound template is seen to be one by comparing it with the template's parts
(`pgwarden.sql.template.fits_template`), without making its template.

Sharing by normalized text needs one more guard: ``normalize`` folds a minus sign into the
constant after it, whatever that constant is (``-5``, ``-'5'``, ``-true`` and ``-NULL`` all
become ``$1``), while only a number takes the sign into its value: before any other constant
the minus is an operator call of its own (a prefix ``-`` a database may define to run a
function). A text with a ``-`` followed by anything but a number is shared neither way
(`pgwarden.sql.template.signs_precede_numbers`). And ``normalize`` numbers its ``$n`` after the
text's own parameters: ``id + $1 = id + $2`` and ``id + 0 = id + 0`` normalize alike, so a
parameter counts as a value that mattered (`Syntax.constant_free` is False for a text with one).

Fingerprints (for records and approvals) are shared by normalized text too, but only
between texts with no quote and no ``$`` and signs before numbers only (`fingerprint_for`):
libpg_query's fingerprint ignores every ``A_Const``, yet ``normalize`` also replaces constants
that are not one (a ``PASSWORD '…'``, a subscription's connection string). Without quotes or
``$`` (dollar quotes, parameters) the constants left are numbers, booleans and NULL, which are
``A_Const`` wherever ``normalize`` replaces them, and with signs before numbers only no operator
hides in a replaced constant: the fingerprint of one such text is every such text's with the
same normalized text. A fingerprint costs about twice a ``normalize``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, TypeVar

from pglast.parser import ParseError, fingerprint, normalize

from pgwarden.sql.analysis import Analysis
from pgwarden.sql.context import SqlContext, default_context
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.lineage import Lineage, lineage_of
from pgwarden.sql.resolve import resolve
from pgwarden.sql.statement import Statement
from pgwarden.sql.syntax import Syntax, syntax_of
from pgwarden.sql.template import (
    PLACEHOLDER,
    fits_template,
    normalized_shape,
    numeric_template,
    signs_precede_numbers,
    template_parts,
)

K = TypeVar("K")
V = TypeVar("V")

# Final: compiled, a C variable; any other global is a dictionary lookup at each use.
_SQL_CONTEXT: Final = SqlContext
#: the usual sessions' lexer settings (frozen: its ``default`` is True), known by identity
_DEFAULT_LEXER: Final = DEFAULT_LEXER

# A template's entry when its first text showed it unsound (no normalized text holds a NUL).
_UNSOUND = PLACEHOLDER


def _put(cache: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


def _fingerprint(sql: str) -> str | None:
    try:
        return fingerprint(sql)
    except ParseError:
        return None


class StatementCache:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        # text and context -> Statement, in two generations of plain dictionaries (an approximate
        # LRU: an entry found in the old one moves to the young one; when the young one is full it
        # becomes the old one, and the old one's entries not asked for since are dropped). Every
        # text of a session that changes constants is new: a plain dictionary's insertion is a
        # fraction of an OrderedDict's, which links a node per entry.
        self._half = max(1, size // 2)
        self._young: dict[tuple[str, int], Statement] = {}
        self._old: dict[tuple[str, int], Statement] = {}
        self._syntax: OrderedDict[str | tuple[str, LexerSettings], Syntax] = OrderedDict()
        self._by_normalized: OrderedDict[str, Syntax] = OrderedDict()
        self._resolved: OrderedDict[tuple[int, int], tuple[Syntax, SqlContext, Analysis]] = OrderedDict()
        #: the last of `_resolved` asked for: (Syntax, context, Analysis), by identity (a session
        #: repeating one statement with other constants asks for it each time: no key made)
        self._last_resolved: tuple[Syntax, SqlContext, Analysis] | None = None
        # The context `analysis_for` was last asked with and its lexer settings (a frozen
        # SqlContext's: a session's statements are nearly all read in its one context, whose
        # ``lexer`` is then not read again; the context is kept alive, so its id is not reused)
        self._last_context: SqlContext | None = None
        self._last_lexer: LexerSettings = DEFAULT_LEXER
        self._lineage: OrderedDict[tuple, tuple[Lineage, ...]] = OrderedDict()
        self._fingerprints: OrderedDict[str, str] = OrderedDict()  # normalized text -> fingerprint
        self._normalized: tuple[str, str | None] = ("", None)  # the last text normalized, and the result
        # numeric template -> the normalized text of each of its texts (_UNSOUND: not sound for it)
        self._templates: OrderedDict[str, str] = OrderedDict()
        # the last template found sound in `_templates`, cut at its placeholders (`template_parts`;
        # None before there is one), and its normalized text: a text that fits it (`fits_template`)
        # has it for template, which is then not made (nor compared, nor looked up)
        self._last_parts: list[bytes] | None = None
        self._last_template_normalized = ""
        # The Syntax that `syntax_for` last shared by a normalized text it had from the last sound
        # template (`_last_parts`): those parts, that normalized text, the first part as a str (a
        # text of another statement rarely starts with it: `get` tells it off without the
        # comparison of parts), and the Syntax. A text that fits the parts in the context the
        # last analysis was resolved in (`_last_resolved`) has that analysis: `get` sets it on the
        # Statement it makes, which is then neither cached nor analysed again.
        self._template_parts: list[bytes] | None = None
        self._template_normalized = ""
        self._template_prefix = ""
        self._template_syntax: Syntax | None = None
        self.template_hits = 0  # normalize calls saved by a template
        self.fingerprint_hits = 0  # analyses shared by normalized text

    def get(self, sql: str, context: SqlContext | LexerSettings | None = None) -> Statement:
        """The Statement for ``sql`` in ``context`` (or the default context read under the given
        lexer settings); analysed only when a plugin first asks.

        Keyed by the context's identity, not its equality: a session asks with one context object
        at every statement (`sql.context.shared`, `SqlContext.with_lexer`), and hashing an attrs
        class is a Python call. The entry's Statement holds the context, so its id cannot be
        reused while the entry lives; an equal context that is another object only misses."""
        if type(context) is _SQL_CONTEXT:  # (what a session asks with: no isinstance, no global looked up)
            ctx = context
        elif context is None:
            ctx = default_context()
        elif isinstance(context, LexerSettings):
            ctx = default_context().with_lexer(context)
        else:
            ctx = context
        parts = self._template_parts
        if parts is not None and sql.startswith(self._template_prefix):
            last = self._last_resolved
            if last is not None and last[0] is self._template_syntax and last[1] is ctx and fits_template(sql, parts):
                # A text of the statement just analysed, in the same context: what `analysis_for`
                # would find (`syntax_for`: the same normalized text, so the same shared Syntax;
                # then the same resolution), without asking. (Not kept: agents' texts of one
                # statement differ in their constants, and a Statement is a wrapper of its text.)
                given = Statement(sql, None, self, ctx)  # (positional: no keyword dict)
                given.analysed = last[2]
                self.template_hits += 1
                self._normalized = (sql, self._template_normalized)  # (its fingerprint's)
                return given
        key = (sql, id(ctx))
        young = self._young
        statement = young.get(key)
        if statement is not None and statement.context is ctx:
            return statement
        old = self._old
        statement = old.get(key) if old else None
        if statement is None or statement.context is not ctx:
            statement = Statement(sql, None, self, ctx)
        young[key] = statement
        if len(young) >= self._half:
            self._old = young
            self._young = {}
        return statement

    def syntax_for(self, sql: str, lexer: LexerSettings) -> Syntax:
        default = lexer is _DEFAULT_LEXER or lexer.default  # (the usual one known without a read)
        key = sql if default else (sql, lexer)
        known = self._syntax.get(key)
        if known is not None:
            return known
        normalized = None
        # normalize parses with the default lexer settings only; a sign before a constant that
        # is not a number is not shared (`signs_precede_numbers`)
        if default and signs_precede_numbers(sql):
            normalized = self._normalize(sql)
            if normalized is not None:
                shared = self._by_normalized.get(normalized)
                if shared is not None:
                    self.fingerprint_hits += 1
                    parts = self._last_parts
                    if parts is not None and normalized is self._last_template_normalized:
                        # (the last sound template's normalized text: ``sql`` is one of its texts)
                        if parts is not self._template_parts:
                            self._template_parts = parts
                            self._template_prefix = parts[0].decode("ascii")
                        self._template_normalized = normalized
                        self._template_syntax = shared
                    return shared
        syntax = syntax_of(sql, lexer)
        _put(self._syntax, key, syntax, self._size)
        if normalized is not None and syntax.constant_free:
            _put(self._by_normalized, normalized, syntax, self._size)
        return syntax

    def _normalize(self, sql: str) -> str | None:
        """``normalize(sql)``, None if it does not parse; the last one is kept: a statement's
        fingerprint is asked for right after its analysis (its record). A text whose numeric
        template (`pgwarden.sql.template`) was seen before takes the normalized text found then,
        without a parse, when that one showed the template sound."""
        last, normalized = self._normalized
        if last is sql or last == sql:
            return normalized
        parts = self._last_parts
        if parts is not None and fits_template(sql, parts):  # the last sound template's, seen without making it
            self.template_hits += 1
            self._normalized = (sql, self._last_template_normalized)
            return self._last_template_normalized
        template = numeric_template(sql)
        if template is not None:
            # (not the last sound template: a text of that one fits its parts, above)
            known = self._templates.get(template)
            if known is not None:
                if known != _UNSOUND:
                    self.template_hits += 1
                    self._last_template_normalized = known
                    self._last_parts = template_parts(template)
                    self._normalized = (sql, known)
                    return known
                template = None  # seen, and not sound: normalized as any text
        try:
            normalized = normalize(sql)
        except ParseError:
            normalized = None
        if template is not None:
            entry = normalized if normalized is not None and normalized_shape(template, normalized) else _UNSOUND
            _put(self._templates, template, entry, self._size)
        self._normalized = (sql, normalized)
        return normalized

    def fingerprint_for(self, sql: str) -> str | None:
        """libpg_query's fingerprint of ``sql`` (read with the default lexer settings), None if it
        does not parse; shared by normalized text where that is sound (see the module's doc)."""
        if "'" in sql or "$" in sql or not signs_precede_numbers(sql):
            return _fingerprint(sql)
        normalized = self._normalize(sql)
        if normalized is None:
            return None  # normalize parses as fingerprint does: it does not parse
        known = self._fingerprints.get(normalized)
        if known is None:
            known = _fingerprint(sql)
            if known is None:
                return None
            _put(self._fingerprints, normalized, known, self._size)
        return known

    def analysis_for(self, sql: str, context: SqlContext) -> Analysis:
        if context is self._last_context:
            lexer = self._last_lexer
        else:
            lexer = context.lexer
            self._last_context = context
            self._last_lexer = lexer
        syntax = self.syntax_for(sql, lexer)
        last = self._last_resolved
        if last is not None and last[0] is syntax and last[1] is context:
            return last[2]
        key = (id(syntax), id(context))  # (by identity, as `get`'s)
        known = self._resolved.get(key)
        if known is None or known[0] is not syntax or known[1] is not context:
            # The entry keeps the Syntax and the context alive, so their ids cannot be reused meanwhile.
            known = (syntax, context, resolve(syntax, context))
            _put(self._resolved, key, known, self._size)
        self._last_resolved = known
        return known[2]

    def lineage_for(self, sql: str, context: SqlContext) -> tuple[Lineage, ...]:
        """Lineage per text and context: a constant may matter (``ORDER BY 1``), so texts that
        differ only in constants do not share it."""
        key = (sql, context)
        known = self._lineage.get(key)
        if known is not None:
            self._lineage.move_to_end(key)
            return known
        lineage = lineage_of(sql, context)
        _put(self._lineage, key, lineage, self._size)
        return lineage

    def __len__(self) -> int:
        """The Statements held (at most the cache's size; one moved to the young generation may be
        counted in both)."""
        return len(self._young) + len(self._old)
