"""The statement counters: one series per verdict and kind, never one per combination of kinds."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.metrics import OVERHEAD_BUCKETS, Stats
from pgwarden.policy.model import STATEMENT_KINDS
from pgwarden.sql.analysis import analyze_sql

#: every label pgwarden_statements_total may carry: the kinds, and the two words for "no kinds"
KIND_LABELS = STATEMENT_KINDS | {"unanalysed", "none"}

# Statements of many kinds, several of them of more than one kind on their own.
CORPUS = [
    "select 1", "insert into t values (1)", "update t set a = 1 where id = 1", "delete from t",
    "merge into t using s on t.id = s.id when matched then delete", "copy t from stdin",
    "copy t to stdout", "copy t to program 'true'", "copy t from '/etc/passwd'", "drop table t",
    "truncate t", "grant all on t to public", "set role postgres", "alter system set work_mem = 1",
    "do $$begin end$$", "call p()", "lock table t", "vacuum t", "prepare p as delete from t",
    "execute p", "explain analyze update t set a = 1", "begin", "commit", "set work_mem = 1",
    "show work_mem", "listen x", "declare c cursor for select 1", "sel ect broken", "",
    "with d as (delete from t returning *) select * from d",
]

statements = st.lists(st.sampled_from(CORPUS), min_size=1, max_size=6).map("; ".join)


@given(st.lists(st.one_of(statements, st.text(max_size=40)), max_size=20),
       st.sampled_from(["allow", "block", "approve"]))
def test_each_kind_counts_on_its_own_and_the_labels_are_bounded(sqls, verdict):
    stats = Stats()
    expected: dict[str, int] = {}
    for sql in sqls:
        kinds = analyze_sql(sql).kinds
        stats.statement(verdict, kinds)
        for kind in kinds or {"none"}:
            expected[kind] = expected.get(kind, 0) + 1
    assert {kind for _, kind in stats.statements} <= KIND_LABELS
    assert {kind: n for (_, kind), n in stats.statements.items()} == expected
    assert stats.verdicts == ({verdict: len(sqls)} if sqls else {})


def test_a_transaction_with_an_update_counts_once_as_each():
    stats = Stats()
    stats.statement("allow", analyze_sql("begin; update t set a = 1 where id = 1; commit").kinds)
    stats.statement("allow", ("unanalysed",))
    assert stats.statements == {("allow", "transaction"): 1, ("allow", "update"): 1, ("allow", "unanalysed"): 1}
    assert stats.verdicts == {"allow": 2}


def test_counts_by_set_of_kinds_stay_bounded_and_add_up_when_read():
    """`Stats.statement` counts by (verdict, set of kinds) and spreads them when read; however many
    sets it sees, it keeps a bounded number unspread, and what is read adds up."""
    stats = Stats()
    for i in range(3000):
        stats.statement("block" if i % 3 else "allow", frozenset({f"k{i}", "select"}))
        assert len(stats._decided) <= 1025
    stats.statement("allow", frozenset())
    statements = stats.statements
    assert statements[("block", "select")] == 2000 and statements[("allow", "select")] == 1000
    assert statements[("allow", "none")] == 1 and statements[("block", "k1")] == 1
    assert stats.verdicts == {"allow": 1001, "block": 2000}
    stats.statement("allow", frozenset({"select"}))
    assert stats.statements[("allow", "select")] == 1001 and stats.verdicts["allow"] == 1002  # read again: no double count


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=50))
def test_the_overhead_histogram_counts_each_value_under_the_first_bound_at_or_above_it(values):
    stats = Stats()
    for v in values:
        stats.overhead(v)
    expected = [0] * (len(OVERHEAD_BUCKETS) + 1)
    for v in values:
        expected[bisect.bisect_left(OVERHEAD_BUCKETS, v)] += 1
    assert stats.overhead_buckets == expected
    assert stats.overhead_sum == pytest.approx(sum(values))
    for bound in OVERHEAD_BUCKETS:  # a value on a bound counts under that bound (Prometheus's le)
        before = list(stats.overhead_buckets)
        stats.overhead(bound)
        assert [b - a for a, b in zip(before, stats.overhead_buckets)] == [
            int(i == OVERHEAD_BUCKETS.index(bound)) for i in range(len(expected))]


_KIND_SETS = [frozenset({"select"}), frozenset({"select", "update"}), frozenset(), ("unanalysed",)]


@given(st.lists(st.tuples(st.sampled_from(["allow", "block", "approve"]), st.integers(0, 3), st.booleans(),
                          st.integers(0, 4)), max_size=60))
def test_runs_of_one_verdict_and_kinds_are_counted_as_each_statement_would_be(steps):
    """`StatementCounts.count` keeps the last (verdict, kinds) and its run out of the dictionaries
    until another comes or the counts are read: what is read is every statement's, in any order,
    and kinds equal but not the same object count together."""
    stats = Stats()
    expected: dict[tuple[str, str], int] = {}
    verdicts: dict[str, int] = {}
    for action, k, copy, read in steps:
        kinds = _KIND_SETS[k]
        if copy:  # an equal set, another object
            kinds = frozenset(kinds) if isinstance(kinds, frozenset) else tuple(list(kinds))
        stats.statement(action, kinds)
        for kind in kinds or ("none",):
            expected[(action, kind)] = expected.get((action, kind), 0) + 1
        verdicts[action] = verdicts.get(action, 0) + 1
        if read == 0:  # read midway now and then: the run so far is in it
            assert sum(stats._decided.values()) == sum(verdicts.values())
    assert stats.statements == expected
    assert stats.verdicts == verdicts
    stats.statement("allow", _KIND_SETS[0])
    assert stats.verdicts.get("allow", 0) == verdicts.get("allow", 0) + 1  # read again: no double count

