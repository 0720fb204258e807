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
from pgwarden.testing.matrix import examples
from tests.unit.test_catalog_loader import rows

NAMES = st.sampled_from(["a", "b", "users", "things", "secret.things", '"Odd"'])
NUMBERS = st.integers(min_value=-2, max_value=3)
SETTINGS = st.sampled_from(["role", "work_mem", "search_path", "log_min_messages", "statement_timeout"])
# What may follow a minus sign: libpg_query's normalize folds the sign into any constant after it
# (`-5`, `-'5'`, `-true` and `-NULL` all normalize to `$1`), yet only a number takes it in its
# value; before any other constant the minus is an operator call of its own.
SIGNED = st.sampled_from(["5", "'5'", "true", "NULL", "$$5$$", "B'1'", "X'1F'", "1.5", "(5)", " 5", "\n'5'",
                          " /* c */ '5'", "- 5", "e'5'", "x", "U&'5'"])
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
        f"SELECT * FROM {n} WHERE id = -{draw(SIGNED)}",
        f"DELETE FROM {n} WHERE id + {i} = id + {j}",
        f"DELETE FROM {n} WHERE (id + {i}) IS NULL OR (id + {j}) IS NOT NULL",
        f"UPDATE {n} SET x = 1 WHERE id * {i} IS NOT DISTINCT FROM id * {j}",
        f"SELECT -{draw(SIGNED)}, {i}",
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


@settings(max_examples=examples(400))
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


def _with_hostile_prefix_minus():
    """The default context, its catalog holding a prefix ``-`` on text that calls a function
    which deletes (a database may hold one: an extension's, or one an agent created)."""
    from pgwarden.catalog import builtin_catalog
    from pgwarden.catalog.model import Catalog, FunctionFacts, OperatorFacts

    base = builtin_catalog()
    evil = FunctionFacts(oid=99001, schema="public", name="evil", nargs=1, volatility="v", language="sql",
                         trusted_language=True, kind="f", builtin=False,
                         source="WITH d AS (DELETE FROM public.things RETURNING 1) SELECT 'x'::text")
    minus = OperatorFacts(oid=99002, schema="public", name="-", function=99001, left=0, right=25)
    catalog = Catalog(functions=base.functions + (evil,), relations=base.relations,
                      operators=base.operators + (minus,), types=base.types, casts=base.casts,
                      settings=base.settings, schemas=base.schemas | {"public"},
                      server_version=base.server_version, source="test")
    return attrs.evolve(default_context(), catalog=catalog)


def test_a_minus_before_a_constant_that_is_not_a_number_is_never_shared():
    # normalize makes `$1` of `-5` and of `-'5'` alike; only the second calls the operator `-`.
    ctx = _with_hostile_prefix_minus()
    hostile = "SELECT x FROM t WHERE x = -'5'"
    assert "delete" in analyze_sql(hostile, ctx).kinds
    assert "delete" not in analyze_sql("SELECT x FROM t WHERE x = -5", ctx).kinds
    for first in ("SELECT x FROM t WHERE x = -5", "SELECT x FROM t WHERE x = -true",
                  "SELECT x FROM t WHERE x = - 7"):
        cache = StatementCache()
        assert cache.get(first, ctx).analysis == analyze_sql(first, ctx)
        assert cache.get(hostile, ctx).analysis == analyze_sql(hostile, ctx)
        cache = StatementCache()  # the other way round: the hostile text first
        assert "delete" in cache.get(hostile, ctx).kinds
        assert cache.get(first, ctx).analysis == analyze_sql(first, ctx)


def test_where_clauses_whose_constants_decide_if_they_filter_are_not_shared():
    # `id + 0 = id + 0` holds for every row (a DELETE without a real WHERE); `id + 5 = id + 6` for
    # none: the constants decide it, so the second's analysis must not stand for the first.
    for filtering, everything in [
        ("DELETE FROM things WHERE id + 5 = id + 6", "DELETE FROM things WHERE id + 0 = id + 0"),
        ("DELETE FROM things WHERE (id + 1) IS NULL OR (id + 2) IS NOT NULL",
         "DELETE FROM things WHERE (id + 1) IS NULL OR (id + 1) IS NOT NULL"),
        ("UPDATE things SET n = 1 WHERE id * 2 IS NOT DISTINCT FROM id * 3",
         "UPDATE things SET n = 1 WHERE id * 2 IS NOT DISTINCT FROM id * 2"),
        ("DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT 5)",
         "DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT ALL)"),  # normalize: LIMIT $1 both
        ("DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT 5)",
         "DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT NULL)"),
        ("DELETE FROM things WHERE id IN (SELECT id FROM things WHERE id = 5)",
         "DELETE FROM things WHERE id IN (SELECT id FROM things WHERE 5 = 5)"),
    ]:
        cache = StatementCache()
        assert cache.get(filtering).analysis.has_where is True
        assert cache.get(everything).analysis.has_where is False
    # Constants that do not decide it still share one analysis (pgbench's statements)
    cache = StatementCache()
    first = cache.get("UPDATE things SET n = n + 5 WHERE id = 7").analysis
    assert cache.get("UPDATE things SET n = n + 1 WHERE id = 3").analysis is first


def test_parameters_where_another_text_has_constants_are_not_shared():
    # normalize numbers its `$n` after the text's own parameters: `id + $1 = id + $2` (a filter to
    # the walker: the sides differ) and `id + 0 = id + 0` (every row) have one normalized text.
    for with_parameters, with_constants in [
        ("DELETE FROM things WHERE id + $1 = id + $2", "DELETE FROM things WHERE id + 0 = id + 0"),
        ("DELETE FROM things WHERE id + $1 = id + 0", "DELETE FROM things WHERE id + 0 = id + 0"),
        ("DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT $1)",
         "DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT 5)"),
        ("SELECT set_config($1, $2, $3)", "SELECT set_config('application_name', 'x', false)"),
    ]:
        cache = StatementCache()
        assert cache.get(with_parameters).analysis == analyze_sql(with_parameters)
        assert cache.get(with_constants).analysis == analyze_sql(with_constants), with_constants
    # the other way round: a text of constants whose values did not matter lends its analysis
    cache = StatementCache()
    first = cache.get("UPDATE things SET n = 1 WHERE id = 7").analysis
    assert cache.get("UPDATE things SET n = $1 WHERE id = $2").analysis is first


# Texts whose constants are swapped for constants of every kind (or for parameters, or for the
# keywords the grammar makes constants of: `LIMIT ALL`, `SET x = public`): any two with one
# normalized text, when the first's analysis may be shared, must get from one cache what each
# gets alone: its Syntax, its fingerprint and its normalized text (the numeric template's path).
_SWAP_SEEDS = [
    "SELECT * FROM t WHERE a = 5 AND b = 'x' LIMIT 3", "INSERT INTO t VALUES (1, 'a', true, NULL)",
    "UPDATE t SET a = 5 WHERE b = 6", "SELECT f(5), g('x'), 5 + 6", "SELECT x FROM t ORDER BY 1",
    "SELECT 5::text, '5'::int", "SELECT interval '1 day', date '2020-01-01'", "SELECT ARRAY[1,2], '{1,2}'::int[]",
    "DELETE FROM t WHERE (id + 1) IS NULL OR (id + 1) IS NOT NULL",
    "UPDATE t SET n = 1 WHERE id + 1 IS NOT DISTINCT FROM id + 1", "DELETE FROM t WHERE 1 = 1",
    "DELETE FROM t WHERE id = 1 OR 2 = 2", "DELETE FROM t WHERE NOT (1 <> 1)", "UPDATE t SET a = 1 WHERE '1'::boolean",
    "DELETE FROM t WHERE id > 5 AND false", "DELETE FROM t WHERE coalesce(id, 1) = coalesce(id, 1)",
    "SELECT set_config('a', 'b', false)", "DELETE FROM t WHERE id LIKE '%'", "DELETE FROM t WHERE id = id + 0",
    "DELETE FROM things WHERE id = 1 OR NULL = NULL", "SELECT query_to_xml('SELECT 1', true, false, '')",
    "SELECT x FROM t WHERE x = -5", "SELECT pg_sleep(1)", "SET work_mem = '64kB'",
    "EXPLAIN (ANALYZE true) DELETE FROM t", "SELECT ('x'::text).pg_read_file",
    "DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT 5)", "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE 1 = 1)",
    "DELETE FROM t WHERE id IN (1, 2, 3)", "DELETE FROM t WHERE CASE WHEN 1 = 1 THEN true ELSE id = 5 END",
    "SELECT * FROM t WHERE id = 5 LIMIT 10 OFFSET 20", "SELECT a, count(*) FROM t GROUP BY 1 ORDER BY 2 LIMIT 3",
    "SELECT dblink_exec('dbname=x', 'DELETE FROM t')", "SELECT pg_read_file('/etc/passwd', 0, 100)",
    "SELECT lo_import('/etc/passwd', 5)", "SELECT lo_export(5, '/tmp/x')", "SET search_path = 'public', 'x'",
    "SET transaction_read_only = false", "SET TRANSACTION READ WRITE; SELECT 5",
    "COPY (SELECT 5) TO STDOUT", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 5'",
    "DO 'BEGIN PERFORM 5; END'", "SELECT EXTRACT(year FROM date '2020-01-01')", "DELETE FROM t WHERE NULL IS NULL",
    "DELETE FROM t WHERE 5 IS NOT NULL", "DELETE FROM t WHERE 'a' < 'b'", "DELETE FROM t WHERE id + 1 >= id + 1",
    "DELETE FROM t WHERE 't'::bool", "PREPARE p AS DELETE FROM t WHERE 1 = 1", "CALL p(5, 'x')",
    "INSERT INTO t VALUES (5) ON CONFLICT (id) DO UPDATE SET n = 5 WHERE t.id = 5",
    "WITH d AS (DELETE FROM t WHERE id = 5 RETURNING *) SELECT * FROM d", "SELECT setval('s', 5, false)",
]
_SWAPS = ["5", "'5'", "true", "false", "NULL", "-5", "-'5'", "B'1'", "X'1F'", "1.5", "$$x$$", "E'x'", "(5)",
          "-true", "5.0e3", "'a''b'", "0", "1", "'%'", "'t'", "'1'", "'SELECT 2'", "'role'", "1e5", "0x1F",
          "1_000", "2147483648", "99999999999999999999", ".5", "- 7", "'off'", "'on'", "''", "U&'x'",
          "date '2020-01-01'", "interval '1 day'", "ARRAY[1]", "$1", "$2", "$9", "$1::int", "ALL", "public", "on"]


def _constants(sql: str) -> list:
    from pglast.parser import scan
    return [t for t in scan(sql) if t.name in ("ICONST", "FCONST", "SCONST", "BCONST", "XCONST", "TRUE_P",
                                               "FALSE_P", "NULL_P")]


@st.composite
def _swapped(draw, seed: str) -> str:
    """``seed`` with one to three of its constants swapped, or every one a parameter (as a driver
    sends it)."""
    tokens = _constants(seed)
    if draw(st.integers(0, 5)) == 0:
        chosen, swaps = tokens, [f"${k + 1}" for k in range(len(tokens))]
    else:
        chosen = draw(st.lists(st.sampled_from(tokens), min_size=1, max_size=3, unique_by=lambda t: t.start))
        swaps = [draw(st.sampled_from(_SWAPS)) for _ in chosen]
    text = seed
    for token, swap in sorted(zip(chosen, swaps), key=lambda p: -p[0].start):
        text = text[:token.start] + swap + text[token.end + 1:]
    return text


@settings(max_examples=settings().max_examples * 4, deadline=None)
@given(st.sampled_from(_SWAP_SEEDS).flatmap(lambda seed: st.tuples(_swapped(seed), _swapped(seed))))
def test_property_texts_sharing_a_normalized_text_share_only_equal_syntax(pair):
    from pglast.parser import ParseError, fingerprint, normalize

    from pgwarden.sql.syntax import syntax_of

    a, b = pair
    try:
        normalized = normalize(b)
        same = normalize(a) == normalized
    except ParseError:
        return
    if a == b or not same:
        return
    cache = StatementCache()
    cache.syntax_for(a, DEFAULT_LEXER)
    alone = syntax_of(b, DEFAULT_LEXER)
    got = cache.syntax_for(b, DEFAULT_LEXER)  # (a's when shared: its constant_free may differ)
    assert attrs.evolve(got, constant_free=alone.constant_free) == alone, (a, b)
    cache.fingerprint_for(a)
    assert cache.fingerprint_for(b) == fingerprint(b), (a, b)
    templates = StatementCache()
    templates._normalize(a)
    assert templates._normalize(b) == normalized, (a, b)


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


def test_texts_read_in_two_contexts_in_turn_each_take_their_own_contexts_lexer():
    """`analysis_for` keeps the lexer settings of the context it was last asked with: texts of a
    session reading escapes and of one that does not, in turn, are each read as their own."""
    base = shared(default_context())
    read_off = base.with_lexer(LexerSettings(standard_conforming_strings=False))
    cache = StatementCache()
    for n, (context, deletes) in enumerate([(base, True), (base, True), (read_off, False), (base, True),
                                            (read_off, False), (read_off, False), (base, True)]):
        sql = rf"SELECT 'a\'; DELETE FROM t WHERE id = {n}; --'"  # (a new text each time: analysed anew)
        assert ("delete" in cache.get(sql, context).kinds) is deletes


@settings(max_examples=examples(200))
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


def test_the_last_analysis_is_answered_again_only_for_the_same_syntax_and_context():
    """`analysis_for` answers a repeated (Syntax, context) from the last one asked for, by
    identity: another context, or another statement, in between, is never answered from it."""
    cache = StatementCache()
    public = shared(default_context())
    secret = shared(attrs.evolve(public, search_path=("secret",)))
    first = cache.analysis_for("SELECT * FROM things WHERE id = 1", public)
    assert cache.analysis_for("SELECT * FROM things WHERE id = 2", public) is first  # one Syntax, shared
    other = cache.analysis_for("SELECT * FROM things WHERE id = 3", secret)
    assert "secret.things" in other.tables and "secret.things" not in first.tables
    assert cache.analysis_for("SELECT * FROM things WHERE id = 4", public) is first
    deletes = cache.analysis_for("DELETE FROM things WHERE id = 5", public)
    assert deletes.kinds == {"delete"}
    assert cache.analysis_for("SELECT * FROM things WHERE id = 6", secret) is other


def test_the_statements_held_stay_within_the_size_and_one_asked_for_again_stays_the_same_object():
    cache = StatementCache(size=8)
    context = shared(default_context())
    hot = cache.get("SELECT * FROM things WHERE id = 0", context)
    for i in range(1, 200):
        assert cache.get(f"SELECT * FROM things WHERE id = {i}", context).sql.endswith(f"= {i}")
        assert len(cache) <= 8
        if i % 3 == 0:  # asked for often enough: never dropped
            assert cache.get("SELECT * FROM things WHERE id = 0", context) is hot
    other = shared(attrs.evolve(context, search_path=("secret",)))
    elsewhere = cache.get("SELECT * FROM things WHERE id = 0", other)
    assert elsewhere is not hot and elsewhere.context is other and "secret.things" in elsewhere.tables
    assert cache.get("SELECT * FROM things WHERE id = 0", context) is hot


def test_the_last_sound_template_answers_only_its_own_texts():
    """`_normalize` compares a text's template with the last sound one before looking it up: a
    text of another template, or of none, is never given the last one's normalized text."""
    from pglast.parser import ParseError, normalize

    def normalized(sql):
        try:
            return normalize(sql)
        except ParseError:
            return None

    cache = StatementCache()
    texts = ["SELECT * FROM things WHERE id = 1", "SELECT * FROM things WHERE id = 2", "SELECT 5",
             "SELECT * FROM things WHERE id = 3", "", "SELECT * FROM others WHERE id = 4", "5", "SELECT 6",
             "SELECT * FROM others WHERE id = 5", "SELECT 1 FROM t ORDER BY 1", "SELECT 1 FROM t ORDER BY 2",
             "SELECT * FROM things WHERE id = 6"]
    for sql in texts:
        assert cache._normalize(sql) == normalized(sql), sql
    assert cache.template_hits >= 4


def test_a_new_text_of_the_statement_just_analysed_comes_with_its_analysis():
    """`get` hands a new text that fits the last sound template its analysis at once (the same
    object `analysis_for` would find), only in the context it was resolved in; its fingerprint
    is libpg_query's. A text of another statement, or the same text in another context, is
    analysed as ever."""
    from pglast.parser import fingerprint

    cache = StatementCache()
    context = shared(default_context())
    first = cache.get("SELECT * FROM things WHERE id = 1", context).analysis
    second = cache.get("SELECT * FROM things WHERE id = 2", context).analysis  # the template confirmed here
    assert second is first
    hits = cache.template_hits
    third = cache.get("SELECT * FROM things WHERE id = 345", context)
    assert third.analysed is first and cache.template_hits == hits + 1  # not analysed: given
    assert third.fingerprint == fingerprint("SELECT * FROM things WHERE id = 345")
    assert cache.get("SELECT * FROM things WHERE id = 345", context) is not third  # (not kept: a wrapper)
    # Another context: not given, analysed in its own
    other = shared(attrs.evolve(context, search_path=("secret",)))
    elsewhere = cache.get("SELECT * FROM things WHERE id = 6", other)
    assert elsewhere.analysed is None and "secret.things" in elsewhere.analysis.tables
    # Another statement, a text with more digits than a template takes, a sign before a name:
    # none fits the template, none is given an analysis
    for sql in ("SELECT * FROM thingsx WHERE id = 7", "SELECT * FROM things WHERE id = 1234567890",
                "SELECT * FROM things WHERE id = -x", "SELECT * FROM things WHERE id = 7 OR true"):
        statement = cache.get(sql, context)
        assert statement.analysed is None, sql
        assert statement.analysis == analyze_sql(sql, context), sql


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["SELECT * FROM things WHERE id = {}", "DELETE FROM users WHERE id = {}",
                                           "SELECT {} FROM t ORDER BY {}", "SELECT * FROM things WHERE id = -{}",
                                           "UPDATE a SET x = {} WHERE {} = id", "SELECT set_config('role', 'x', {})"]),
                          st.integers(0, 10**10), st.sampled_from([0, 1])), min_size=1, max_size=15))
def test_property_texts_given_their_analysis_have_a_fresh_ones(sequence):
    """Whatever texts of templates (sound ones, unsound ones, a constant that matters) come
    through one cache in two contexts, in any order, each analysis equals a fresh one."""
    cache = StatementCache()
    contexts = [shared(default_context()), shared(attrs.evolve(default_context(), search_path=("secret",)))]
    for shape, number, which in sequence:
        sql = shape.format(number, number % 7)
        statement = cache.get(sql, contexts[which])
        assert statement.analysis == analyze_sql(sql, contexts[which]), sql
