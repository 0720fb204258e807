"""Fingerprints shared by normalized text (`StatementCache.fingerprint_for`) are libpg_query's own.

Property: whatever texts go through one cache, each fingerprint equals ``pglast``'s for that
text alone. The texts mix numbers in every form the lexer knows (signs, floats, exponents,
hex, underscores, out of int range) with the constants ``normalize`` replaces but the
fingerprint does not ignore, or folds differently (``-'5'``, ``PASSWORD '…'``).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast.parser import ParseError, fingerprint

from pgwarden.sql.cache import StatementCache
from pgwarden.testing.matrix import examples

NUMBERS = st.sampled_from(["0", "5", "-5", "- 5", "+5", "6", "1.5", "-1.5", ".5", "1e5", "-1e-5", "0x1F", "1_000",
                           "99999999999", "-99999999999", "2147483648", "'5'", "-'5'", "'x'", "$1", "-$1", "NULL",
                           "-NULL", "-true", "- false", "TRUE", "-(5)", "- -5"])
TEMPLATES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {0}",
    "SELECT {0}, {1} FROM t WHERE a IN ({0}, {1}) LIMIT {1} OFFSET {0}",
    "SELECT x - {0} FROM t WHERE x -{1} > {0}",
    "SELECT {0}::numeric(10, 2), interval '1 day' * {1}",
    "UPDATE t SET a = a + {0} WHERE id = {1}",
    "INSERT INTO t (a, b) VALUES ({0}, {1}), ({1}, {0}) ON CONFLICT DO NOTHING",
    "DELETE FROM t WHERE a BETWEEN {0} AND {1}",
    "SELECT * FROM t ORDER BY {0} FETCH FIRST {1} ROWS ONLY",
    "SET statement_timeout = {0}",
    "CREATE ROLE r PASSWORD {0}",
    "ALTER ROLE r CONNECTION LIMIT {0}",
    "CREATE TABLE t (a int DEFAULT {0}) WITH (fillfactor = 70)",
    "FETCH {0} FROM c",
    "CREATE SEQUENCE s START {0}",
    "SELECT pg_sleep({0}) -- a comment, {1}",
    "SELECT {0} AS \"odd name\"",
    "EXECUTE p({0}, {1})",
]


@st.composite
def texts(draw) -> str:
    return draw(st.sampled_from(TEMPLATES)).format(draw(NUMBERS), draw(NUMBERS))


def _fresh(sql: str) -> str | None:
    try:
        return fingerprint(sql)
    except ParseError:
        return None


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(texts(), min_size=1, max_size=40))
def test_property_shared_fingerprint_equals_a_fresh_one(sequence):
    cache = StatementCache()
    for sql in sequence:
        assert cache.get(sql).fingerprint == _fresh(sql), sql


def test_texts_differing_in_numbers_share_one_fingerprint():
    cache = StatementCache(size=2)
    first = cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 1").fingerprint
    for aid in range(2, 50):
        assert cache.get(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}").fingerprint == first
    assert len(cache._fingerprints) == 1  # one entry, computed once


def test_normalized_alike_but_fingerprinted_apart_are_not_shared():
    cache = StatementCache()
    for a, b in [("SELECT 1 FROM t WHERE x = -5", "SELECT 1 FROM t WHERE x = -'5'"),
                 ("SELECT 1 FROM t WHERE x = -5", "SELECT 1 FROM t WHERE x = -true"),
                 ("SELECT 1 FROM t WHERE x = -5", "SELECT 1 FROM t WHERE x = -NULL"),
                 ("CREATE ROLE r PASSWORD 'a'", "CREATE ROLE r PASSWORD 'b'")]:
        assert _fresh(a) != _fresh(b)
        assert (cache.get(a).fingerprint, cache.get(b).fingerprint) == (_fresh(a), _fresh(b))


def test_a_text_that_does_not_parse_has_none():
    assert StatementCache().get("SELEC 1").fingerprint is None
