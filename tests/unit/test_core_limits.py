"""The core's limits: which sessions are read-only, which setting changes lift a limit, what is counted."""

from __future__ import annotations

import pytest

from pgwarden.api import APPROVE, hookimpl
from pgwarden.config import _CONVERTER
from pgwarden.limits import (
    COMPUTED,
    counting,
    read_only_policy,
    refusal,
    session_limits,
    setting_changes,
    timeout_setting_ms,
)
from pgwarden.plugins import PluginHost
from pgwarden.policy.model import STATEMENT_KINDS, Policy
from pgwarden.relay.counting import CountRows
from pgwarden.sql.analysis import Analysis, analyze_sql
from pgwarden.verdict import Verdict


class _Approvals:
    @hookimpl
    def pgwarden_rule_kinds(self):
        return [APPROVE]


# The built-in plugins, and one that takes `approve` rules: what reads the rules of a policy.
_PLUGINS = PluginHost(None, None, [("approvals", _Approvals())])


def policy(rules=(), default="allow", name="p") -> Policy:
    structured = _CONVERTER.structure({"name": name, "default": default, "rules": list(rules)}, Policy)
    return _PLUGINS.read_policies((structured,))[0]


ALL_WRITES = ["insert", "update", "delete", "merge", "copy_from", "copy_file", "copy_program", "ddl", "truncate",
              "grant", "role", "system", "do", "call", "unknown", "side_effect"]
# What a block rule can name today: until policies can name side_effect, a default-allow policy
# lets statements of that kind (which may write) through, and no block list makes it read-only.
WRITES = [k for k in ALL_WRITES if k in STATEMENT_KINDS]
NAMES_EVERY_WRITE = len(WRITES) == len(ALL_WRITES)


@pytest.mark.parametrize("policies, read_only", [
    ([policy(default="block")], True),
    ([policy([{"allow": {"statements": ["select", "set", "show"]}}], default="block")], True),
    ([policy([{"allow": {"statements": ["select", "insert"]}}], default="block")], False),
    ([policy([{"approve": {"statements": ["update"]}}], default="block")], False),
    ([policy([{"allow": {"tables": ["public.*"]}}], default="block")], False),  # any kind, on those tables
    ([policy([{"allow": {"statements": ["select", "do"]}}], default="block")], False),  # a DO may write
    ([policy()], False),
    ([policy([{"block": {"statements": WRITES}}])], NAMES_EVERY_WRITE),
    ([policy([{"block": {"statements": WRITES[:8]}}, {"block": {"statements": WRITES[8:]}}])], NAMES_EVERY_WRITE),
    ([policy([{"block": {"statements": WRITES[:-1]}}])], False),  # one write kind still passes
    ([policy([{"block": {"statements": WRITES, "tables": ["public.*"]}}])], False),  # conditional
    ([policy([{"block": {"statements": WRITES, "where": "absent"}}])], False),
    # Every policy that applies must allow a statement: one read-only policy is enough.
    ([policy(name="open"), policy(default="block", name="closed")], True),
])
def test_a_session_is_read_only_when_no_write_can_pass(policies, read_only):
    assert (read_only_policy(tuple(policies)) is not None) == read_only


def test_block_rules_that_cover_every_write_make_a_default_allow_policy_read_only(monkeypatch):
    import pgwarden.limits

    monkeypatch.setattr(pgwarden.limits, "WRITE_KINDS", frozenset(WRITES))
    assert read_only_policy((policy([{"block": {"statements": WRITES[:5]}},
                                     {"block": {"statements": WRITES[5:]}}]),)) == "p"
    assert read_only_policy((policy([{"block": {"statements": WRITES[1:]}}]),)) is None
    # Blocks with a condition let the rest of those kinds through.
    for condition in ({"tables": ["public.*"]}, {"where": "absent"}, {"functions": ["f"]}):
        assert read_only_policy((policy([{"block": {"statements": WRITES, **condition}}]),)) is None


@pytest.mark.parametrize("text, ms", [
    # As PostgreSQL 15 reads statement_timeout (checked with SET and SHOW on the server).
    ("1.5s", 1500), ("5 s", 5000), ("1min", 60000), ("100us", 0), ("2500", 2500), ("1e3", 1000),
    ("0.5", 0), ("1.5", 2), ("1h", 3600000), ("3d", 259200000), (".5s", 500), ("  7s ", 7000),
    ("0x10", 16), ("010", 8), ("0", 0), ("-1", None), ("abc", None), ("5 sec", None), ("1e", None),
    ("5S", None), ("3000000000", None), ("inf", None), ("", None),
])
def test_timeout_values_are_read_as_the_server_reads_them(text, ms):
    assert timeout_setting_ms(text) == ms


def test_setting_changes_tell_reset_from_computed():
    def changes(sql):
        return list(setting_changes(analyze_sql(sql), ("statement_timeout",)))

    assert changes("set statement_timeout = '2s'") == [("statement_timeout", "2s")]
    assert changes("reset statement_timeout") == [("statement_timeout", None)]
    assert changes("reset all") == []  # every setting back to the session's value
    assert changes("select set_config('statement_timeout', current_setting('x'), false)") == [
        ("statement_timeout", COMPUTED)]
    assert changes("select set_config(lower('X'), '0', false)") == [("statement_timeout", "0")]
    assert changes("set work_mem = '1MB'") == []


LIMITED = session_limits((policy([{"name": "r", "limit": {"statement_timeout": "2s", "rows_written": 3}}]),),
                         startup_timeout_ms=2000)


@pytest.mark.parametrize("sql, refused", [
    ("set statement_timeout = '1s'", False),
    ("set statement_timeout = '2s'", False),
    ("set statement_timeout = '2001ms'", True),
    ("set statement_timeout = 0", True),
    ("reset statement_timeout", False),
    ("set track_counts = off", True),
    ("select 1", False),
])
def test_refusals_of_the_core(sql, refused):
    found = refusal(analyze_sql(sql), LIMITED)
    assert (found is not None) == refused
    if found is not None:
        assert found.action == "block" and (found.policy, found.rule) == ("p", "r")


def test_reset_is_refused_when_the_session_did_not_start_with_the_limit():
    """After a reload added the limit, RESET would return to the server's default (no limit)."""
    later = session_limits((policy([{"limit": {"statement_timeout": "2s"}}]),))
    assert refusal(analyze_sql("reset statement_timeout"), later) is not None


@pytest.mark.parametrize("kinds, writes, statements, expected", [
    ({"select"}, set(), 1, None),
    ({"update"}, {"public.t"}, 1, "count"),
    ({"select", "side_effect"}, set(), 1, "count"),
    ({"cursor"}, set(), 1, None),  # (DECLARE or CLOSE: `Analysis.runs_cursors` unset; FETCH below)
    ({"select", "update"}, {"public.t"}, 2, "refuse"),
    ({"copy_from"}, {"public.t"}, 1, "refuse"),
    ({"select"}, set(), 2, None),
    # what no analysis sees may leave work for after the count (red team nine)
    ({"select", "unknown"}, set(), 1, "refuse"),
])
def test_what_is_counted(kinds, writes, statements, expected):
    analysis = Analysis(frozenset(kinds), writes=frozenset(writes))
    got = counting(analysis, statements, LIMITED, "simple")
    if expected is None:
        assert got is None
    elif expected == "count":
        assert got == CountRows(3, "p", "r")
    else:
        assert isinstance(got, Verdict) and got.action == "block"


READ_ONLY = session_limits((policy([{"allow": {"statements": ["select", "set", "transaction"]}}],
                                   default="block", name="ro"),), read_only=True)


@pytest.mark.parametrize("sql, refused", [
    # transaction_read_only's RESET / DEFAULT is its boot value (off), not the session's (on)
    ("reset transaction_read_only", True),
    ("set transaction_read_only to default", True),
    ("set local transaction_read_only to default", True),
    ("set transaction_read_only = off", True),
    ("select set_config('transaction_read_only', null, true)", True),
    ("set default_transaction_read_only = off", True),
    ("set session characteristics as transaction read write", True),
    ("begin read write", True),
    # default_transaction_read_only's RESET is the startup value (on)
    ("reset default_transaction_read_only", False),
    ("set default_transaction_read_only to default", False),
    ("set transaction_read_only = on", False),
    ("reset all", False),
])
def test_a_read_only_session_is_not_made_writable(sql, refused):
    found = refusal(analyze_sql(sql), READ_ONLY)
    assert (found is not None) == refused, found


@pytest.mark.parametrize("sql, expected", [
    # a COMMIT / ROLLBACK inside a DO block or a procedure commits what was written before it
    ("do $$ begin update t set a = 1; commit; end $$", "refuse"),
    ("do $$ begin update t set a = 1; rollback and chain; end $$", "refuse"),
    ("do $$ begin update t set a = 1; call p(); end $$", "refuse"),
    ("do $$ begin execute 'commit'; end $$", "refuse"),
    ("do $$ begin execute x; end $$", "refuse"),  # SQL built at run time
    ("do language plperl $$ spi_commit(); $$", "refuse"),
    ("call p()", "refuse"),
    ("do $$ begin update t set a = 1; end $$", "count"),
    # rows the statistics do not count
    ("truncate t", "refuse"),
    ("do $$ begin truncate t; end $$", "refuse"),
    ("alter table t alter column a type bigint using 0", "refuse"),
    ("alter table t drop column a", "refuse"),
    ("drop table t", "refuse"),
    ("drop schema s cascade", "refuse"),
    ("drop type x cascade", "refuse"),
    ("drop owned by current_user", "refuse"),
    ("alter table t add column b int", None),
    ("create table t2 (a int)", None),
    ("drop index i", None),
    ("commit", None),
    # large objects live in a system catalog, which the count does not read
    ("select lo_unlink(oid) from pg_largeobject_metadata", "refuse"),
    ("select lo_put(1, 0, 'x')", "refuse"),
    ("select lo_get(1)", "count"),  # (volatile: counted, and passes)
    # a cursor's query runs at FETCH and MOVE (and in cursor_to_xml), not at DECLARE or CLOSE
    ("fetch all from c", "count"),
    ("move all in c", "count"),
    ("select cursor_to_xml('c', 10, false, false, '')", "count"),
    ("do $$ begin fetch c into x; end $$", "refuse"),  # (a PL/pgSQL FETCH: unknown)
    ("declare c cursor for select 1", None),
    ("close all", None),
    ("close c", None),
])
def test_what_is_counted_by_its_text(sql, expected):
    got = counting(analyze_sql(sql), 1, LIMITED, "simple")
    if expected is None:
        assert got is None
    elif expected == "count":
        assert got == CountRows(3, "p", "r")
    else:
        assert isinstance(got, Verdict) and got.action == "block", got


def test_a_write_that_may_reach_a_foreign_table_is_refused():
    foreign = Analysis(frozenset({"update"}), tables=frozenset({"public.f"}), writes=frozenset({"public.f"}),
                       foreign=frozenset({"public.f"}))
    got = counting(foreign, 1, LIMITED, "simple")
    assert isinstance(got, Verdict) and got.action == "block" and "public.f" in (got.hint or "")
    # a read of one is not counted, and not refused
    assert counting(Analysis(frozenset({"select"}), tables=frozenset({"public.f"}), foreign=frozenset({"public.f"})),
                    1, LIMITED, "simple") is None


def test_inside_a_transaction_block_a_do_block_or_a_call_is_counted():
    """There they run atomic: a COMMIT in them is an error, nothing commits before the check."""
    # (a procedure the catalog knows: `p` here is in none, and so `unknown`, refused below)
    assert counting(Analysis(frozenset({"call"})), 1, LIMITED, "simple", in_block=True) == CountRows(3, "p", "r")
    sql = "do $$ begin update t set a = 1; commit; end $$"
    assert counting(analyze_sql(sql), 1, LIMITED, "simple", in_block=True) == CountRows(3, "p", "r")
    # what the count cannot see stays refused; SQL built at run time may declare a holdable
    # cursor, whose query the client's COMMIT runs after the count (red team nine)
    for sql in ("do $$ begin truncate t; end $$", "do $$ begin execute x; end $$", "call p()"):
        got = counting(analyze_sql(sql), 1, LIMITED, "simple", in_block=True)
        assert isinstance(got, Verdict) and got.action == "block", sql
