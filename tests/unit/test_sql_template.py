"""The numeric template that lets the statement cache skip ``normalize`` (pgwarden.sql.template).

The property that matters: two texts with the same template normalize alike whenever
``normalize`` of the first showed the template sound. It is checked against libpg_query itself,
on hostile shapes (numbers the grammar consumes, signs, numbers next to identifiers) and on
random token soups.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast.parser import ParseError, normalize

from pgwarden.sql.cache import StatementCache
from pgwarden.sql.lexer import DEFAULT_LEXER
from pgwarden.sql.template import (
    MAX_DIGITS,
    PLACEHOLDER,
    fits_template,
    normalized_shape,
    numeric_template,
    template_parts,
)
from pgwarden.testing.matrix import examples


def _normalize(sql: str) -> str | None:
    try:
        return normalize(sql)
    except ParseError:
        return None


# Statements with `#` where a number goes: the server's grammar treats some of these numbers
# as constants and consumes others (precisions, FETCH counts, ORDER BY positions).
SHAPES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = #;",
    "UPDATE pgbench_accounts SET abalance = abalance + -# WHERE aid = #;",
    "SELECT #-#, - #, -#, +#, # - -#",
    "SELECT a FROM t LIMIT # OFFSET #",
    "SELECT a FROM t ORDER BY #",
    "SELECT a, b FROM t GROUP BY #, #",
    "FETCH # FROM c",
    "MOVE FORWARD # IN c",
    "SELECT x::float(#), y::varchar(#), z::numeric(#, #) FROM t",
    "SELECT CAST(x AS bit(#)) FROM t",
    "SELECT interval(#) x",
    "CREATE SEQUENCE s START # INCREMENT #",
    "ALTER SEQUENCE s RESTART WITH #",
    "SET statement_timeout = #",
    "SELECT set_config(x, y, false) FROM t WHERE n = #",
    "SELECT a[#:#], a[#] FROM t",
    "SELECT * FROM t TABLESAMPLE bernoulli (#) REPEATABLE (#)",
    "SELECT * FROM generate_series(#, #) WITH ORDINALITY",
    "SELECT pg_sleep(#)",
    "SELECT x FROM t WHERE y IN (#, #, #) AND z BETWEEN # AND #",
    "SELECT x FROM t FETCH FIRST # ROWS ONLY",
    "SELECT x FROM t FETCH FIRST # ROWS WITH TIES",
    "CREATE TABLE t (a varchar(#), b numeric(#,#) DEFAULT #)",
    "VACUUM (PARALLEL #) t",
    "SELECT x FROM t WINDOW w AS (ORDER BY y ROWS BETWEEN # PRECEDING AND # FOLLOWING)",
    "SELECT #.#, #e#, #.",
    "SELECT #x, x#",
    "DECLARE c CURSOR FOR SELECT # ",
    "PREPARE p AS SELECT #",
    "EXECUTE p(#)",
    "SELECT lo_import(#)",
    "LOCK t IN ACCESS SHARE MODE NOWAIT; SELECT #",
    "SELECT #\n\tFROM t -- no template: a comment",
    "SELECT # /* no template */",
    "SELECT '#'",
    "SELECT $# FROM t",
]


def _fill(shape: str, numbers: list[str]) -> str:
    parts = shape.split("#")
    out = [parts[0]]
    for k, part in enumerate(parts[1:]):
        out.append(numbers[k % len(numbers)])
        out.append(part)
    return "".join(out)


digits = st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS + 2)


def _check_pair(first: str, second: str) -> None:
    """The cache's answer for ``second`` after it has seen ``first`` is libpg_query's."""
    cache = StatementCache()
    assert cache._normalize(first) == _normalize(first)
    assert cache._normalize(second) == _normalize(second)
    template = numeric_template(first)
    if template is not None and template == numeric_template(second):
        known = _normalize(first)
        if known is not None and normalized_shape(template, known):
            assert _normalize(second) == known
            assert cache.template_hits == (first != second)


@settings(max_examples=examples(400), deadline=None)
@given(shape=st.sampled_from(SHAPES), one=st.lists(digits, min_size=1, max_size=4),
       two=st.lists(digits, min_size=1, max_size=4))
def test_texts_of_one_template_normalize_alike(shape: str, one: list[str], two: list[str]) -> None:
    _check_pair(_fill(shape, one), _fill(shape, two))


TOKENS = ["SELECT", "FROM", "WHERE", "t", "x", "y1", "(", ")", ",", "=", "<", "-", "+", "*", "/", "::", "int",
          "float", "varchar", "LIMIT", "OFFSET", "ORDER BY", "GROUP BY", "AS", "AND", "[", "]", ":", ".", "#",
          "#", "#", "e", "_", "FETCH", "IN", "c", ";", " ", "\n"]


@settings(max_examples=examples(600), deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14),
       one=st.lists(digits, min_size=1, max_size=3), two=st.lists(digits, min_size=1, max_size=3),
       spaced=st.booleans())
def test_token_soups_of_one_template_normalize_alike(tokens: list[str], one: list[str], two: list[str],
                                                     spaced: bool) -> None:
    shape = ("SELECT " if tokens[0] != "SELECT" else "") + (" " if spaced else "").join(tokens)
    _check_pair(_fill(shape, one), _fill(shape, two))


@pytest.mark.parametrize("sql", [
    "SELECT 'x'", 'SELECT "x"', "SELECT $1", "SELECT $$x$$", "SELECT E'\\x'", "SELECT 1 -- c",
    "SELECT 1 /* c */", "SELECT 'é'", "SELECT é", "SELECT 1\x0b", "SELECT `x`", "SELECT 1\x00",
])
def test_gives_up_where_bytes_depend_on_what_is_around_them(sql: str) -> None:
    assert numeric_template(sql) is None


@pytest.mark.parametrize(("sql", "template"), [
    ("SELECT 1", "SELECT #"),
    ("SELECT x1, 1x, 1.5, .5, 5., 1e5, 0x1F, 1_000, 1234567890, 123456789",
     "SELECT x1, 1x, 1.5, .5, 5., 1e5, 0x1F, 1_000, 1234567890, #"),
    ("SELECT -1-2, a[3:4]\n\t;", "SELECT -#-#, a[#:#]\n\t;"),
    ("SELECT t.x FROM t", "SELECT t.x FROM t"),
])
def test_replaces_only_standalone_short_runs_of_digits(sql: str, template: str) -> None:
    assert numeric_template(sql) == template.replace("#", PLACEHOLDER)


def test_a_template_normalize_did_not_confirm_is_never_used() -> None:
    cache = StatementCache()
    assert cache._normalize("FETCH 5 FROM c") == "FETCH 5 FROM c"  # a count: not a constant
    assert cache._normalize("FETCH 7 FROM c") == "FETCH 7 FROM c"
    assert cache._normalize("SELECT a FROM t ORDER BY 1") == "SELECT a FROM t ORDER BY 1"
    assert cache._normalize("SELECT a FROM t ORDER BY 2") == "SELECT a FROM t ORDER BY 2"
    assert cache.template_hits == 0


def test_a_confirmed_template_saves_the_parse_and_shares_the_analysis() -> None:
    cache = StatementCache()
    first = cache.syntax_for("SELECT abalance FROM pgbench_accounts WHERE aid = 1;", DEFAULT_LEXER)
    second = cache.syntax_for("SELECT abalance FROM pgbench_accounts WHERE aid = 99;", DEFAULT_LEXER)
    assert cache.template_hits == 1
    assert second is first
    # A minus sign that normalize folds into the constant still makes a sound template
    cache.syntax_for("UPDATE pgbench_accounts SET abalance = abalance + -12 WHERE aid = 3;", DEFAULT_LEXER)
    cache.syntax_for("UPDATE pgbench_accounts SET abalance = abalance + -4 WHERE aid = 5;", DEFAULT_LEXER)
    assert cache.template_hits == 2
    # Another statement keeps its own
    other = cache.syntax_for("SELECT abalance FROM pgbench_branches WHERE bid = 99;", DEFAULT_LEXER)
    assert other is not first


_CONTINUING = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_TEXT = st.text(alphabet="0123456789aZ_. ,;()=+-*/:[]\t\n\r" + "'\"`$\\\x00\x0b\x7fé", max_size=40)


@settings(max_examples=examples(2000), deadline=None)
@given(sql=_TEXT)
def test_the_template_is_the_text_with_exactly_its_standalone_short_runs_replaced(sql: str) -> None:
    """What a template is, read off the text: None exactly when the text holds a byte or pair the
    scan gives up on; else each maximal run of digits is replaced by one placeholder when it has at
    most nine digits and no byte continuing a name or a number on either side, and kept otherwise."""
    template = numeric_template(sql)
    gives_up = (not sql.isascii() or "--" in sql or "/*" in sql
                or any(c in "'\"`$\\" or c < " " and c not in "\t\n\r" or c == "\x7f" for c in sql))
    assert (template is None) == gives_up
    if template is None:
        return

    def kept_or_replaced(k: int, end: int) -> str:
        standalone = (k == 0 or sql[k - 1] not in _CONTINUING) and (end == len(sql) or sql[end] not in _CONTINUING)
        return PLACEHOLDER if standalone and end - k <= MAX_DIGITS else sql[k:end]

    assert template == _each_run(sql, kept_or_replaced)


def _each_run(sql: str, replace) -> str:
    """``sql`` with each maximal run of digits ``sql[k:end]`` replaced by ``replace(k, end)``."""
    out, k = [], 0
    while k < len(sql):
        if not sql[k].isdigit():
            out.append(sql[k])
            k += 1
            continue
        end = k
        while end < len(sql) and sql[end].isdigit():
            end += 1
        out.append(replace(k, end))
        k = end
    return "".join(out)


def _runs_replaced(sql: str, runs: list[str]) -> str:
    """``sql`` with each maximal run of digits replaced by the next of ``runs`` (cycling)."""
    taken = iter(runs * (len(sql) + 1))
    return _each_run(sql, lambda k, end: next(taken))


@settings(max_examples=examples(3000), deadline=None)
@given(first=_TEXT, second=_TEXT, runs=st.lists(digits, min_size=1, max_size=4), related=st.booleans())
def test_a_text_fits_a_template_exactly_when_that_is_its_template(first, second, runs, related) -> None:
    # `fits_template` answers without making the template what comparing the templates answers,
    # both ways: on unrelated texts, and on texts made from the first with other digit runs
    # (some longer than a template takes, some next to a name).
    template = numeric_template(first)
    if template is None:
        return
    if related:
        second = _runs_replaced(first, runs)
    assert fits_template(second, template_parts(template)) == (numeric_template(second) == template)


@pytest.mark.parametrize(("template", "sql", "fits"), [
    ("SELECT a FROM t WHERE id = #;", "SELECT a FROM t WHERE id = 42;", True),
    ("SELECT a FROM t WHERE id = #;", "SELECT a FROM t WHERE id = 1234567890;", False),  # ten digits: kept
    ("SELECT a FROM t WHERE id = #;", "SELECT a FROM t WHERE id = ;", False),
    ("SELECT a FROM t WHERE id = #;", "SELECT a FROM t WHERE id = 4;x", False),
    ("SELECT a FROM t WHERE id = #;", "SELECT a FROM t WHERE id = 4", False),
    ("SELECT #", "SELECT 7", True),
    ("#", "7", True),
    ("#", "", False),
    ("SELECT # + #", "SELECT 1 + 22", True),
    ("SELECT # + #", "SELECT 1 + x", False),
])
def test_fits_a_template(template: str, sql: str, fits: bool) -> None:
    assert fits_template(sql, template_parts(template.replace("#", PLACEHOLDER))) is fits


@settings(max_examples=examples(400), deadline=None)
@given(shape=st.sampled_from(SHAPES), one=st.lists(digits, min_size=1, max_size=4),
       two=st.lists(digits, min_size=1, max_size=4), three=st.lists(digits, min_size=1, max_size=4))
def test_texts_after_a_sound_template_normalize_as_libpg_query_does(shape, one, two, three) -> None:
    # The third text of a template takes the path that fits it to the last sound template.
    cache = StatementCache()
    texts = [_fill(shape, one), _fill(shape, two), _fill(shape, three)]
    for text in texts:
        assert cache._normalize(text) == _normalize(text)
