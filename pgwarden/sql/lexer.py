"""Parse SQL into PostgreSQL's own parse tree, with the lexer settings the server uses.

The server lexes a statement under the session's ``standard_conforming_strings``
and ``backslash_quote``: with ``standard_conforming_strings = off``, ``'x\\''`` is
one literal and what follows it is code, where the default reading makes it the
end of a literal. pglast's ``parse_sql_json`` always parses with the defaults;
libpg_query itself (which pglast's extension module links and exports) takes the
settings as parser options (``pg_query_parse_opts``), so that entry point is
called directly with ctypes when a session does not use the defaults.

Depth: a statement the server accepts may nest deeper than Python's recursion
limit lets ``json.loads`` read (150 nested sub-queries, a 1,000-term ``+`` chain).
Such trees are read, and walked, in a thread with a large stack and a raised
recursion limit (`deep`), never refused for their depth alone.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs
from pglast import parser as _pglast
from pglast.parser import ParseError, parse_sql_json

T = TypeVar("T")

# libpg_query's parser options (pg_query.h).
_DISABLE_BACKSLASH_QUOTE = 16
_DISABLE_STANDARD_CONFORMING_STRINGS = 32


@attrs.frozen(cache_hash=True)
class LexerSettings:
    """The session settings that change how the server splits text into tokens."""

    standard_conforming_strings: bool = True
    backslash_quote: bool = True  # 'on' or 'safe_encoding': \' is accepted where escapes apply
    #: both as the server's defaults; an attribute set once, not a property: the statement cache
    #: asks at every statement
    default: bool = attrs.field(init=False, eq=False, hash=False, repr=False)

    @default.default
    def _both_default(self) -> bool:
        return self.standard_conforming_strings and self.backslash_quote


DEFAULT_LEXER = LexerSettings()


class _Error(ctypes.Structure):
    _fields_ = [
        ("message", ctypes.c_char_p),
        ("funcname", ctypes.c_char_p),
        ("filename", ctypes.c_char_p),
        ("lineno", ctypes.c_int),
        ("cursorpos", ctypes.c_int),
        ("context", ctypes.c_char_p),
    ]


class _Result(ctypes.Structure):
    _fields_ = [
        ("parse_tree", ctypes.c_void_p),
        ("stderr_buffer", ctypes.c_void_p),
        ("error", ctypes.POINTER(_Error)),
    ]


_lib = None


def _libpg_query() -> Any:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(_pglast.__file__)
        lib.pg_query_parse_opts.restype = _Result
        lib.pg_query_parse_opts.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.pg_query_free_parse_result.argtypes = [_Result]
        lib.pg_query_free_parse_result.restype = None
        _lib = lib
    return _lib


#: libpg_query's parse modes (``PgQueryParseMode``, the server's ``RawParseMode``): what the
#: server parses a PL/pgSQL function's pieces as. ``parseMode`` in a PL/pgSQL tree names one.
PARSE_DEFAULT = 0
PARSE_TYPE_NAME = 1
PARSE_PLPGSQL_EXPR = 2
PARSE_PLPGSQL_ASSIGN1 = 3
PARSE_PLPGSQL_ASSIGN2 = 4
PARSE_PLPGSQL_ASSIGN3 = 5
_PARSE_MODES = frozenset(range(6))


def parse_json(sql: str, lexer: LexerSettings = DEFAULT_LEXER, mode: int = PARSE_DEFAULT) -> str:
    """The parse tree as libpg_query's JSON text; ParseError when the server would refuse it too.

    ``mode``: what the text is (a statement, or a PL/pgSQL expression or assignment), as the
    server's grammar is entered for it: a PL/pgSQL ``x := expr`` is parsed as the server parses
    it, never cut at a ``:=`` that may sit inside a literal.
    """
    if mode not in _PARSE_MODES:
        raise ParseError(f"unknown parse mode {mode}", 0)
    if lexer.default and mode == PARSE_DEFAULT:
        return parse_sql_json(sql)
    options = mode
    if not lexer.standard_conforming_strings:
        options |= _DISABLE_STANDARD_CONFORMING_STRINGS
    if not lexer.backslash_quote:
        options |= _DISABLE_BACKSLASH_QUOTE
    lib = _libpg_query()
    result = lib.pg_query_parse_opts(sql.encode("utf-8"), options)
    try:
        if result.error:
            error = result.error.contents
            raise ParseError((error.message or b"syntax error").decode("utf-8", "replace"), error.cursorpos)
        return ctypes.string_at(result.parse_tree).decode("utf-8")
    finally:
        lib.pg_query_free_parse_result(result)


# Deep trees: read and walked with room to recurse.
_DEEP_STACK = 512 * 1024 * 1024
_DEEP_RECURSION = 2_000_000
_deep_lock = threading.Lock()


def deep(work: Callable[[], T]) -> T:
    """Runs ``work`` where recursion as deep as any accepted statement's tree is safe.

    CPython's limit is process-wide: it is raised only while ``work`` runs, in a
    thread whose stack is large enough for ``json``'s C recursion; the caller
    waits (the analysis is synchronous either way).
    """
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as e:  # handed back to the caller
            outcome.append((False, e))

    with _deep_lock:
        old_limit = sys.getrecursionlimit()
        old_stack = threading.stack_size()
        try:
            threading.stack_size(_DEEP_STACK)
            sys.setrecursionlimit(_DEEP_RECURSION)
            worker = threading.Thread(target=run, name="pgwarden-deep-parse")
            worker.start()
            worker.join()
        finally:
            threading.stack_size(old_stack)
            sys.setrecursionlimit(old_limit)
    ok, value = outcome[0]
    if not ok:
        raise value
    return cast(T, value)


def parse_tree(sql: str, lexer: LexerSettings = DEFAULT_LEXER, mode: int = PARSE_DEFAULT) -> dict[str, Any]:
    """The parse tree as dicts and lists (see `parse_json`); deep trees are read by `deep`."""
    text = parse_json(sql, lexer, mode)
    try:
        tree: dict[str, Any] = json.loads(text)
        return tree
    except RecursionError:
        return deep(lambda: json.loads(text))
