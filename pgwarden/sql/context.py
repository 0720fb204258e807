"""What a statement's meaning depends on besides its text: the catalog and the session.

PostgreSQL resolves an unqualified name through the session's search_path, and
a function's name to whatever the catalog holds. `SqlContext` carries both (and
the lexer settings the text is parsed under) so that one SQL text can be
analysed once per distinct context and shared by every session in it.

The search_path is tracked from what the session's statements do to it
(`after`): a literal SET or set_config moves it; anything pgwarden cannot follow
(a setting name computed at run time, a function that may change state, a role
change) makes it uncertain, and then an unqualified name may be any schema that
holds a relation of that name. ``possible`` keeps every schema that has been on
the path (a SET that failed on the server leaves the old one in force), so a
table rule is matched against each of them: more than the server will use,
never less.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import attrs

from pgwarden.catalog.model import Catalog
from pgwarden.sql.analysis import UNCERTAIN_AFTER
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.syntax import COMPUTED, Syntax

if TYPE_CHECKING:
    from pgwarden.sql.analysis import Analysis

DEFAULT_SEARCH_PATH = ('"$user"', "public")
#: the same, as schema names (what `parse_path` reads of it)
DEFAULT_PATH: tuple[str, ...] = ("$user", "public")


def parse_path(value: str) -> tuple[str, ...] | None:
    """A search_path value ('"$user", public, "My Schema"') as schema names, read as the server
    reads it (SplitIdentifierString: quotes removed, unquoted names' ASCII letters folded to lower
    case, only ASCII blanks between names); None when the server refuses it (`a b`, `a,,b`) or
    might read it otherwise (a name longer than it keeps, a vertical tab): an uncertain path.
    (A database in a single-byte encoding folds other letters of unquoted names too.)"""
    if "\v" in value:
        return None
    items: list[str] = []
    i, n = 0, len(value)
    i = _blanks(value, i)
    if i == n:
        return ()
    while True:
        if value[i] == '"':
            name: list[str] = []
            j = i + 1
            while True:
                if j >= n:
                    return None  # unterminated
                if value[j] == '"':
                    if j + 1 < n and value[j + 1] == '"':
                        name.append('"')
                        j += 2
                        continue
                    break
                name.append(value[j])
                j += 1
            text = "".join(name)
            i = j + 1
        else:
            j = i
            while j < n and value[j] not in _PG_BLANKS and value[j] != ",":
                j += 1
            # folded as a database in a multibyte encoding (UTF8) folds: ASCII letters only
            text = "".join(c.lower() if "A" <= c <= "Z" else c for c in value[i:j])
            i = j
        if not text or len(text.encode()) > 63:
            return None
        items.append(text)
        i = _blanks(value, i)
        if i == n:
            return tuple(items)
        if value[i] != ",":
            return None
        i = _blanks(value, i + 1)
        if i == n:
            return None  # a separator and no name after it


#: what the server's scanner takes for blanks between a list's names (scanner_isspace; \v is
#: one from PostgreSQL 16 only: read as uncertain)
_PG_BLANKS = " \t\n\r\f"


def _blanks(value: str, i: int) -> int:
    while i < len(value) and value[i] in _PG_BLANKS:
        i += 1
    return i


@attrs.frozen(cache_hash=True)
class SqlContext:
    """Everything besides the text that a statement's analysis depends on."""

    catalog: Catalog
    user: str = ""  # what "$user" stands for: the upstream role
    search_path: tuple[str, ...] | None = ("$user", "public")  # None: uncertain
    default_path: tuple[str, ...] = ("$user", "public")  # what RESET returns to
    possible: frozenset[str] = frozenset()  # schemas that may be on the path (besides search_path)
    lexer: LexerSettings = DEFAULT_LEXER
    # The session changed the catalog and ``catalog`` may not show it yet (the change's
    # transaction is open, or the catalog was not read since): what a statement reads cannot
    # be traced through it (`lineage.lineage_of` makes it opaque).
    stale: bool = False
    # The session started while a catalog read was due: its search_path (and what RESET returns
    # to) is the role's or database's default as the next read says (`settled`), not the last.
    provisional: bool = False
    # This context read under other lexer settings, or stale (`with_lexer`, `with_stale`): one
    # object each, asked for at every statement of a session whose lexer settings are not the
    # default (or whose DDL is not read yet), so that the statement cache finds its entries by
    # this object's identity. Only variants with the same catalog: nothing older is kept alive.
    _variants: dict[LexerSettings | bool, SqlContext] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False)

    @property
    def key(self) -> tuple:
        """What the analyses in this context depend on (the catalog by its generation)."""
        return (self.catalog.generation, self.user, self.search_path, self.possible, self.lexer, self.stale)

    def schemas(self) -> tuple[str, ...]:
        """The schemas an unqualified name may resolve to, in the server's order, and then
        every other schema that may be on the path."""
        path = self.search_path if self.search_path is not None else self.default_path
        out = ["pg_temp", "pg_catalog"]
        for entry in path:
            name = self.user if entry == "$user" else entry
            if name.startswith("pg_temp"):
                name = "pg_temp"
            if name and name not in out:
                out.append(name)
        for name in sorted(self.possible):
            if name not in out:
                out.append(name)
        return tuple(out)

    def after(self, analysis: Analysis | Syntax) -> SqlContext:
        """The context for the session's next statement once ``analysis``'s statement ran
        (this one when ``analysis`` does not `Analysis.changes_context`)."""
        path, possible = self.search_path, self.possible
        changed = False
        for name, value in analysis.settings:
            if name == "search_path":
                old = path if path is not None else self.default_path
                possible = possible | frozenset(old)
                if value == COMPUTED:  # a value the text does not give: any schema
                    path = None
                else:
                    path = self.default_path if value is None else parse_path(value)
                changed = True
            elif name == "*":
                if "role" in analysis.kinds:  # set_config with a computed name
                    path = None
                else:  # RESET ALL / DISCARD ALL
                    possible = possible | frozenset(path or self.default_path)
                    path = self.default_path
                changed = True
        if analysis.kinds & UNCERTAIN_AFTER or analysis.executes:  # (a prepared body may set it)
            if path is not None:
                possible = possible | frozenset(path)
            path = None
            changed = True
        if not changed:
            return self
        after = attrs.evolve(self, search_path=path, possible=possible - frozenset({"$user"}))
        return self if after == self else after

    def settled(self, catalog: Catalog) -> SqlContext:
        """This context of a session that started while a catalog read was due, with the path it
        started with as ``catalog`` (that read) says. A path the session set since stays."""
        given = catalog.session_defaults.get("search_path")
        start = parse_path(given) if given else DEFAULT_PATH
        path = start if self.search_path == self.default_path else self.search_path
        return attrs.evolve(self, catalog=catalog, search_path=path, default_path=start or DEFAULT_PATH,
                            provisional=False)

    def uncertain(self) -> SqlContext:
        """The context of a session whose statements ran unread (nothing checked them): its
        search_path may be anything, so an unqualified name may be any schema's."""
        if self.search_path is None:
            return self
        return attrs.evolve(self, search_path=None,
                            possible=(self.possible | frozenset(self.search_path)) - frozenset({"$user"}))

    def with_catalog(self, catalog: Catalog) -> SqlContext:
        return self if catalog is self.catalog else attrs.evolve(self, catalog=catalog)

    def with_stale(self, stale: bool) -> SqlContext:
        if stale == self.stale:
            return self
        variant = self._variants.get(stale)
        if variant is None:
            variant = self._variants[stale] = attrs.evolve(self, stale=stale)
        return variant

    def with_lexer(self, lexer: LexerSettings | None) -> SqlContext:
        if lexer is None or lexer is self.lexer or lexer == self.lexer:
            return self
        variant = self._variants.get(lexer)
        if variant is None:
            variant = self._variants[lexer] = attrs.evolve(self, lexer=lexer)
        return variant


_shared: weakref.WeakValueDictionary[SqlContext, SqlContext] = weakref.WeakValueDictionary()


def shared(context: SqlContext) -> SqlContext:
    """One object for equal contexts, as long as one is in use: sessions that start alike (most
    do) then look their statements up in the caches under the very key objects stored there,
    which a dictionary finds by identity, where equal but distinct contexts are compared field by
    field in Python on every lookup (attrs's ``__eq__``, the lexer's)."""
    return _shared.setdefault(context, context)


_default: SqlContext | None = None


def default_context() -> SqlContext:
    """The context of a session pgwarden knows nothing about yet: the shipped snapshot of
    the built-in catalog, the default search_path."""
    global _default
    if _default is None:
        from pgwarden.catalog import builtin_catalog

        _default = SqlContext(builtin_catalog())
    return _default
