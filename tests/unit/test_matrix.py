"""The thin matrix of CI's second pass, `make test-second-pass` (pgwarden.testing.matrix)."""

from __future__ import annotations

from pgwarden.testing import matrix

FIVE = ("simple", "ext-text", "ext-binary", "portal", "asyncpg")


def test_the_full_matrix_runs_every_protocol(monkeypatch):
    monkeypatch.delenv(matrix.ENV, raising=False)
    assert [matrix.protocols_of(i, FIVE) for i in range(3)] == [FIVE] * 3


def test_a_thin_matrix_runs_each_case_twice_and_every_protocol_somewhere(monkeypatch):
    monkeypatch.setenv(matrix.ENV, "thin")
    chosen = [matrix.protocols_of(i, FIVE) for i in range(8)]
    assert all(len(c) == 2 and c[0] == "simple" for c in chosen)
    assert {p for c in chosen for p in c} == set(FIVE)
    pair = [matrix.protocols_of(i, ("simple", "extended")) for i in range(2)]
    assert pair == [("simple",), ("extended",)]
    assert matrix.protocols_of(3, ("simple",)) == ("simple",)


def test_the_leak_corpus_is_thin_unless_the_full_matrix_is_asked_for(monkeypatch):
    monkeypatch.delenv(matrix.ENV, raising=False)
    assert matrix.protocols_of(1, FIVE, default_thin=True) == ("simple", "ext-binary")
    monkeypatch.setenv(matrix.ENV, "full")
    assert matrix.protocols_of(1, FIVE, default_thin=True) == FIVE


def test_in_the_thin_pass_a_corpus_thin_by_default_runs_each_case_once_and_every_protocol_somewhere(monkeypatch):
    monkeypatch.setenv(matrix.ENV, "thin")
    chosen = [matrix.protocols_of(i, FIVE, default_thin=True) for i in range(5)]
    assert all(len(c) == 1 for c in chosen) and {c[0] for c in chosen} == set(FIVE)


def test_the_thin_pass_generates_half_the_examples_and_at_least_ten(monkeypatch):
    monkeypatch.delenv(matrix.ENV, raising=False)
    assert (matrix.examples(300), matrix.examples(25)) == (300, 25)
    monkeypatch.setenv(matrix.ENV, "thin")
    assert (matrix.examples(300), matrix.examples(25), matrix.examples(4)) == (150, 12, 10)
