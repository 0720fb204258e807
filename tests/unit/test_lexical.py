"""The core's refusal of changes to how the server reads statement text (pgwarden.lexical)."""

from __future__ import annotations

import pytest

from pgwarden import lexical
from pgwarden.sql.encoding import client_encoding
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.statement import Statement

OFF = LexerSettings(standard_conforming_strings=False)


def refusal(sql: str, encoding: str = "UTF8", lexer: LexerSettings = DEFAULT_LEXER):
    analysis = Statement(sql, lexer=lexer).analysis
    return lexical.refusal(analysis.settings, analysis.functions, encoding, lexer)


@pytest.mark.parametrize("sql", [
    "SET standard_conforming_strings = off",
    "SET standard_conforming_strings TO 'of'",
    "SET LOCAL standard_conforming_strings = false",
    "SET SESSION standard_conforming_strings = 0",
    "set Standard_Conforming_Strings = no",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SELECT 1; SELECT set_config('standard_conforming_strings', 'off', true)",
    "SELECT set_config('standard_conforming_strings', current_setting('x.y'), false)",
    "SET standard_conforming_strings = 'maybe'",
    "PREPARE p AS SELECT set_config('standard_conforming_strings', 'off', false)",
    "SELECT query_to_xml('SELECT set_config(''standard_conforming_strings'', ''off'', false)', true, false, '')",
])
def test_a_change_of_standard_conforming_strings_is_refused(sql):
    r = refusal(sql)
    assert r is not None and r.sqlstate == "42501"
    assert r.message == "pgwarden: blocked: standard_conforming_strings cannot be changed during the session"
    assert "(on)" in r.detail and "E'...'" in r.hint


@pytest.mark.parametrize("sql", [
    "SET client_encoding = 'SJIS'",
    "SET client_encoding TO 'latin1'",
    "SET NAMES 'BIG5'",
    "SET LOCAL client_encoding = 'GBK'",
    "SELECT set_config('client_encoding', 'SJIS', false)",
    "SELECT set_config('CLIENT_ENCODING', 'SJIS', false)",
    "SET client_encoding = 'no such encoding'",
    "RESET client_encoding; SELECT set_config('client_encoding', 'x' || 'y', false)",
])
def test_a_change_of_client_encoding_is_refused_with_a_hint_for_the_connection_string(sql):
    r = refusal(sql)
    assert r is not None and r.sqlstate == "42501"
    assert r.message == "pgwarden: blocked: client_encoding cannot be changed during the session"
    assert "(UTF8)" in r.detail and "connection string" in r.hint


@pytest.mark.parametrize("sql", [
    "SELECT set_config(name, 'off', false) FROM (VALUES ('standard_conforming_strings')) v(name)",
    "RESET ALL; SELECT set_config(current_setting('x.y'), 'z', false)",
])
def test_a_setting_named_at_run_time_is_refused(sql):
    r = refusal(sql)
    assert r is not None and r.message.startswith("pgwarden: blocked: set_config with a setting name computed")


@pytest.mark.parametrize("sql, encoding, lexer", [
    ("SET standard_conforming_strings = on", "UTF8", DEFAULT_LEXER),
    ("SET standard_conforming_strings = true", "UTF8", DEFAULT_LEXER),
    ("SET standard_conforming_strings = off", "UTF8", OFF),
    ("SELECT set_config('standard_conforming_strings', 'on', false)", "UTF8", DEFAULT_LEXER),
    ("SET client_encoding = 'utf-8'", "UTF8", DEFAULT_LEXER),
    ("SET NAMES 'Unicode'", "UTF8", DEFAULT_LEXER),
    ("SET client_encoding = 'ShiftJIS'", "SJIS", DEFAULT_LEXER),
    ("RESET client_encoding", "SJIS", DEFAULT_LEXER),
    ("RESET standard_conforming_strings", "UTF8", OFF),
    ("SET client_encoding TO DEFAULT", "UTF8", DEFAULT_LEXER),
    ("SET NAMES DEFAULT", "UTF8", DEFAULT_LEXER),
    ("RESET ALL", "UTF8", DEFAULT_LEXER),
    ("DISCARD ALL", "UTF8", DEFAULT_LEXER),
    ("SET work_mem = '64MB'", "UTF8", DEFAULT_LEXER),
    ("SELECT set_config('work_mem', '64MB', false)", "UTF8", DEFAULT_LEXER),
    ("SELECT 'SET client_encoding = ''SJIS'''", "UTF8", DEFAULT_LEXER),
])
def test_no_change_no_refusal(sql, encoding, lexer):
    assert refusal(sql, encoding, lexer) is None


@pytest.mark.parametrize("text, value", [
    ("on", True), ("ON", True), ("of", False), ("off", False), ("o", None), ("t", True), ("tru", True),
    ("true", True), ("truex", None), ("y", True), ("yes", True), ("f", False), ("n", False), ("no", False),
    ("1", True), ("0", False), ("01", None), ("", None), (" on", None),
])
def test_booleans_read_as_postgres_reads_them(text, value):
    assert lexical.parse_bool(text) == value


def test_lexer_settings_follow_what_the_server_reported():
    utf8, sjis = client_encoding("UTF8"), client_encoding("SJIS")
    assert lexical.lexer_of({}, utf8) is DEFAULT_LEXER
    assert lexical.lexer_of({"standard_conforming_strings": "on"}, utf8) is DEFAULT_LEXER
    assert lexical.lexer_of({"standard_conforming_strings": "off"}, utf8) == OFF
    # backslash_quote = safe_encoding (its default) refuses \' in a client-only encoding.
    assert lexical.lexer_of({"standard_conforming_strings": "on"}, sjis) == LexerSettings(True, False)


@pytest.mark.parametrize("name, value, changed", [
    ("client_encoding", "UTF8", False), ("client_encoding", "SJIS", True),
    ("standard_conforming_strings", "on", False), ("standard_conforming_strings", "off", True),
    ("TimeZone", "UTC", False),
])
def test_which_reports_contradict_the_login(name, value, changed):
    assert lexical.changed_from_login(name, value, "UTF8", DEFAULT_LEXER) is changed


def test_the_statement_cache_keeps_readings_under_other_lexer_settings_apart():
    from pgwarden.sql.cache import StatementCache

    cache = StatementCache()
    sneaky = "SELECT 'x\\''; DELETE FROM t; --'"
    default, off = cache.get(sneaky), cache.get(sneaky, OFF)
    assert default is not off and cache.get(sneaky) is default and cache.get(sneaky, OFF) is off
    assert default.analysis.kinds == {"select"}
    assert off.analysis.kinds == {"select", "delete"} and off.fingerprint is None
    # Same fingerprint under the defaults, another statement under OFF: nothing shared.
    twin = "SELECT 'y\\''; DELETE FROM t; --'"
    _ = cache.get(twin).analysis
    assert cache.get(twin, OFF).analysis.kinds == {"select", "delete"}


@pytest.mark.parametrize("sql, may", [
    ("SELECT 1", False), ("select * from t where x = 'a'", False), ("DISCARD ALL", True),
    ("ReSeT all", True), ("select SET_CONFIG('a', 'b', false)", True), ('select U&"\\0073et_config"(1)', True),
    ("SELECT u&'x'", True), ("select 'settings'", True),
])
def test_text_that_cannot_name_a_setting_change_is_not_parsed_for_it(sql, may):
    assert lexical.may_change(sql) is may


# pg_dump (15.8 on) sets restrict_nonsystem_relation_kind only where the server has it:
PG_DUMP_SETTING = ("SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings "
                   "WHERE name = 'restrict_nonsystem_relation_kind'")


def test_a_setting_named_by_pg_settings_where_its_where_fixes_the_name_is_that_setting():
    """The name set_config reads from pg_settings is the literal its WHERE fixes: pg_dump's
    statement is a change of restrict_nonsystem_relation_kind (refused before as a name computed
    at run time), and the same form naming a guarded setting is judged as that setting."""
    assert refusal(PG_DUMP_SETTING) is None
    assert Statement(PG_DUMP_SETTING).analysis.settings == (("restrict_nonsystem_relation_kind",
                                                             "view, foreign-table"),)
    assert "role" not in Statement(PG_DUMP_SETTING).analysis.kinds
    assert refusal("SELECT set_config(s.name, 'work_mem', false) FROM pg_catalog.pg_settings AS s "
                   "WHERE s.name = 'work_mem' AND s.context = 'user'") is None
    r = refusal("SELECT set_config(name, 'SQL_ASCII', false) FROM pg_settings WHERE name = 'client_encoding'")
    assert r is not None and r.message == "pgwarden: blocked: client_encoding cannot be changed during the session"
    assert "system" in Statement("SELECT set_config(name, 'off', false) FROM pg_settings "
                                 "WHERE name = 'transaction_read_only'").analysis.kinds


@pytest.mark.parametrize("sql", [
    # the WHERE does not fix the name: another conjunct, an OR, a pattern
    "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'work_mem' OR true",
    "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'work%'",
    "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name <> 'work_mem'",
    # set_config in the WHERE (computed for any row, in any order) or in another select
    "SELECT 1 FROM pg_settings WHERE name = 'work_mem' AND set_config(name, 'SQL_ASCII', false) = 'x'",
    "SELECT (SELECT set_config(name, 'x', false) FROM (VALUES ('role')) v(name)) FROM pg_settings "
    "WHERE name = 'work_mem'",
    # pg_settings not the server's: a WITH item, another FROM item beside it, another column
    "WITH pg_settings AS (SELECT 'role' AS name) SELECT set_config(name, 'x', false) FROM pg_settings "
    "WHERE name = 'work_mem'",
    "SELECT set_config(name, 'x', false) FROM pg_settings, (VALUES ('role')) v(n) WHERE name = 'work_mem'",
    "SELECT set_config(setting, 'x', false) FROM pg_settings WHERE name = 'work_mem'",
    "SELECT set_config(name, 'x', false) FROM public.pg_settings WHERE name = 'work_mem'",
])
def test_a_setting_named_by_pg_settings_otherwise_is_computed(sql):
    r = refusal(sql)
    assert r is not None and r.message.startswith("pgwarden: blocked: set_config with a setting name computed"), sql


def test_a_pg_settings_of_the_database_s_own_on_the_path_makes_the_name_unknown():
    """A relation named pg_settings in a schema on the path (it may come first: `SET search_path =
    public, pg_catalog`), or an `=` operator of the database's own: the WHERE fixes nothing, and
    the statement is `unknown` (refused by the block plugin)."""
    from pgwarden.catalog import builtin_catalog
    from pgwarden.catalog.model import Catalog, OperatorFacts, RelationFacts
    from pgwarden.sql.context import SqlContext

    base = builtin_catalog()
    attributes = [(r.oid, [c.name for c in cols], [c.type for c in cols])
                  for r in base.relations for cols in [base.columns_of(r.oid)] if cols is not None]

    def context(relations=(), operators=()) -> SqlContext:
        catalog = Catalog(functions=base.functions, relations=[*base.relations, *relations],
                          operators=[*base.operators, *operators], types=base.types,
                          attributes=attributes + [(r.oid, ["name"], [25]) for r in relations],
                          settings=base.settings, schemas=base.schemas | {"public"}, source="test", complete=True)
        return SqlContext(catalog, search_path=("public", "pg_catalog"))

    assert "unknown" not in Statement(PG_DUMP_SETTING, context=context()).analysis.kinds
    shadow = context(relations=[RelationFacts(30001, "public", "pg_settings", "r")])
    assert "unknown" in Statement(PG_DUMP_SETTING, context=shadow).analysis.kinds
    equals = base.operators_named("=")[0]
    own = context(operators=[OperatorFacts(30002, "public", "=", equals.function, 25, 25)])
    assert "unknown" in Statement(PG_DUMP_SETTING, context=own).analysis.kinds
