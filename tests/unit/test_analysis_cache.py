"""The statement cache shares an analysis only when everything it depends on is equal.

Property: whatever sequence of statements goes through one cache (statements
that differ in names, in constants that matter and in constants that do not, in
several contexts), each analysis equals the one computed with no cache at all.
"""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.catalog.loader import build_catalog
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.context import default_context, shared
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from tests.unit.test_catalog_loader import rows

NAMES = st.sampled_from(["a", "b", "users", "things", "secret.things", '"Odd"'])
NUMBERS = st.integers(min_value=-2, max_value=3)
SETTINGS = st.sampled_from(["role", "work_mem", "search_path", "log_min_messages", "statement_timeout"])
TEXTS = st.sampled_from(["x", "secret", "DELETE FROM t", "SELECT 1", "DROP TABLE users", "off", "0"])


@st.composite
def statements(draw) -> str:
    n = draw(NAMES)
    i, j = draw(NUMBERS), draw(NUMBERS)
    text = draw(TEXTS)
    templates = [
        f"PREPARE {n.replace('.', '_').strip(chr(34))} AS INSERT INTO t VALUES ({i})",
        f"PREPARE {n.replace('.', '_').strip(chr(34))} AS SELECT {i}",
        f"EXECUTE {n.replace('.', '_').strip(chr(34))}",
        f"SELECT * FROM {n} WHERE id = {i}",
        f"DELETE FROM {n} WHERE {i} = {j}",
        f"DELETE FROM {n} WHERE id = {i} OR {i} = {j}",
        f"UPDATE {n} SET x = {i} WHERE {i}::boolean",
        f"SELECT set_config('{draw(SETTINGS)}', '{text}', false)",
        f"SET {draw(SETTINGS)} = '{text}'",
        f"SELECT query_to_xml('{text}', true, false, '')",
        f"DO $$BEGIN EXECUTE '{text}'; END$$",
        f"EXPLAIN (ANALYZE {'true' if i > 0 else 'false'}) DELETE FROM {n}",
        f"SELECT ('{text}'::text).pg_read_file",
        f"DECLARE {n.replace('.', '_').strip(chr(34))} CURSOR FOR SELECT {i}",
        f"WITH {n.split('.')[-1].strip(chr(34))} AS (SELECT {i}) SELECT * FROM {n}",
    ]
    return draw(st.sampled_from(templates))


@settings(max_examples=200)
@given(st.lists(st.tuples(statements(), st.sampled_from([None, ("secret", "public"), ("a",)])), min_size=1,
                max_size=12))
def test_property_cached_analysis_equals_a_fresh_one(sequence):
    cache = StatementCache()
    base = default_context()
    for sql, path in sequence:
        ctx = base if path is None else attrs.evolve(base, search_path=path)
        assert cache.get(sql, ctx).analysis == analyze_sql(sql, ctx), sql


def test_execute_names_are_not_shared():
    cache = StatementCache()
    first = cache.get("EXECUTE a").analysis
    second = cache.get("EXECUTE b").analysis
    assert first.executes == ("a",) and second.executes == ("b",)


def test_a_constant_that_matters_is_not_shared():
    cache = StatementCache()
    assert "role" not in cache.get("SELECT set_config('work_mem', '1MB', false)").kinds
    assert "role" in cache.get("SELECT set_config('role', 'postgres', false)").kinds


def test_constants_that_do_not_matter_share_one_analysis():
    cache = StatementCache()
    first = cache.get("SELECT * FROM users WHERE id = 1").analysis
    second = cache.get("SELECT * FROM users WHERE id = 2").analysis
    assert first is second and cache.fingerprint_hits == 1


def test_the_context_is_part_of_the_key():
    cache = StatementCache()
    base = default_context()
    public = cache.get("SELECT * FROM things", base).tables
    secret = cache.get("SELECT * FROM things", attrs.evolve(base, search_path=("secret",))).tables
    assert "secret.things" in secret and "secret.things" not in public


# The caches find a session's entries by the context object's identity (`StatementCache.get`,
# `analysis_for`): a context that differs in anything must never get another context's entry.

def test_a_search_path_change_is_never_answered_from_the_old_context():
    cache = StatementCache()
    before = shared(default_context())
    assert cache.get("SELECT * FROM things", before).tables == {"public.things"}
    after = shared(before.after(cache.get("SET search_path = secret", before).analysis))
    assert after is not before
    again = cache.get("SELECT * FROM things", after)
    assert again.context is after and again.tables == analyze_sql("SELECT * FROM things", after).tables
    assert "secret.things" in again.tables  # (and public.things: a SET that failed leaves it in force)
    assert cache.get("SELECT * FROM things", before).tables == {"public.things"}  # the old entry stays right


def test_a_catalog_reload_is_never_answered_from_the_old_catalog():
    cache = StatementCache()
    old = default_context()
    sql = "SELECT * FROM app.files"
    assert "unknown" not in cache.get(sql, old).kinds and "app.files" in cache.get(sql, old).tables
    reloaded = old.with_catalog(build_catalog(rows(), source="live", complete=True))  # app.files: a view
    statement = cache.get(sql, reloaded)
    assert statement.context is reloaded and statement.analysis == analyze_sql(sql, reloaded)
    assert "app.t" in statement.tables and "pg_read_file" in statement.functions  # what the view reads and runs
    assert "pg_read_file" not in cache.get(sql, old).functions


def test_stale_and_lexer_variants_are_one_object_each_and_keep_their_own_entries():
    base = shared(default_context())
    stale = base.with_stale(True)
    assert stale is base.with_stale(True) and stale.stale and stale.with_stale(False) == base
    off = LexerSettings(standard_conforming_strings=False)
    read_off = base.with_lexer(off)
    assert read_off is base.with_lexer(LexerSettings(standard_conforming_strings=False)) and read_off.lexer == off
    assert base.with_lexer(DEFAULT_LEXER) is base and base.with_stale(False) is base
    cache = StatementCache()
    sql = r"SELECT 'a\'; DELETE FROM t; --'"  # a string and a DELETE, or (escapes read) one string
    assert "delete" in cache.get(sql, base).kinds
    assert "delete" not in cache.get(sql, read_off).kinds and "delete" not in cache.get(sql, off).kinds
    assert "delete" in cache.get(sql, base).kinds


@settings(max_examples=200)
@given(st.lists(statements(), min_size=1, max_size=6), st.sampled_from([None, ("secret", "public"), ("a",)]))
def test_property_an_analysis_that_does_not_change_the_context_leaves_it_as_it_is(sqls, path):
    """`Analysis.changes_context` false: the decision skips `SqlContext.after`, which must then
    have given back the same context."""
    ctx = default_context() if path is None else attrs.evolve(default_context(), search_path=path)
    for sql in sqls + ["; ".join(sqls)]:
        analysis = analyze_sql(sql, ctx)
        if not analysis.changes_context:
            assert ctx.after(analysis) is ctx, sql


def test_the_flags_the_decision_reads_are_those_of_the_kinds_and_settings():
    """`Analysis`'s flags are set once from its fields (also in a copy made with other kinds)."""
    from pgwarden.sql.analysis import CATALOG_CHANGES, MAY_CHANGE_SETTINGS, REDEFINES, Analysis

    for sql in ("SELECT 1", "CREATE VIEW v AS SELECT 1", "SET work_mem = '1MB'", "SELECT nextval('s')",
                "GRANT SELECT ON t TO r", "DO $$BEGIN END$$", "EXECUTE p", "SET ROLE r", "garbage", "VACUUM"):
        analysis = analyze_sql(sql)
        for one in (analysis, attrs.evolve(analysis, kinds=frozenset({"ddl"})), Analysis(frozenset({"select"}))):
            assert one.changes_catalog == bool(one.kinds & CATALOG_CHANGES), sql
            assert one.redefines == bool(one.kinds & REDEFINES), sql
            assert one.may_change_settings == bool(one.settings or one.kinds & MAY_CHANGE_SETTINGS), sql
