"""A detector's promises (`Detector.digits`, `.anchors`) hold for every match of its pattern: the
prefilter built from them never passes over a value its expression would find something in."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden import mask_rows
from pgwarden.mask_rows import Prefilter
from pgwarden_plugins.mask.detectors import BUILTIN, Scanner


def passes(prefilter: Prefilter, run: bytes, a: int = 0, b: int | None = None) -> bool:
    """What the prefilter says of ``run[a:b]``, the same both ways it reads a value: compiled (a
    loop of loads) and plain (translate)."""
    saved = mask_rows.COMPILED
    try:
        answers = set()
        for compiled in (True, False):
            mask_rows.COMPILED = compiled
            answers.add(prefilter.passes_at(run, a, len(run) if b is None else b))
    finally:
        mask_rows.COMPILED = saved
    assert len(answers) == 1
    return answers.pop()


@pytest.mark.parametrize("detector", BUILTIN, ids=[d.name for d in BUILTIN])
def test_each_builtin_detector_keeps_its_promises(detector):
    prefilter = Prefilter.of([(detector.digits, detector.anchors)])
    assert prefilter is not None  # each built-in promises something

    @given(st.from_regex(detector.pattern.encode()), st.binary(max_size=8), st.binary(max_size=8))
    def holds(value: bytes, before: bytes, after: bytes) -> None:
        run = before + value + after
        assert passes(prefilter, run, len(before), len(before) + len(value))

    holds()


def test_the_scanner_prefilter_passes_whatever_the_combined_expression_finds():
    scanner = Scanner(BUILTIN)
    assert scanner.prefilter is not None

    @given(st.from_regex(scanner.pattern))
    def holds(value: bytes) -> None:
        assert scanner.pattern.search(value) is not None
        assert passes(scanner.prefilter, value)

    holds()


@pytest.mark.parametrize("value, expected", [
    (b"User 1234", False), (b"a note about order 123", False), (b"City 12", False), (b"", False),
    (b"user1@example.com", True), (b"123456789", True), (b"12345678", False), (b"token eyJx", True),
])
def test_most_values_are_passed_over(value, expected):
    detectors = [d for d in BUILTIN if d.name != "iban"]  # iban promises 2 digits only
    assert passes(Scanner(detectors).prefilter, value) is expected


def test_a_detector_that_promises_nothing_has_every_value_searched():
    assert Prefilter.of([(9, ()), (0, ())]) is None
    assert Prefilter.of([(0, ("",))]) is None


def test_a_value_that_is_one_hit_whole_is_answered_as_scrub_would():
    scanner = Scanner(BUILTIN)
    for value in [b"user7@example.com", b"eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"]:
        match = scanner.pattern.search(value)
        assert match is not None and match.span() == (0, len(value))
        name = scanner.whole[match.lastgroup]
        assert scanner.scrub(value.decode()) == (f"[{name}]", [name])
    # \s matches \x1c-\x1f in text but not in bytes: with it in a pattern, nothing is answered whole.
    spaced = Scanner([*BUILTIN, type(BUILTIN[0])("spaced", r"a\sb")])
    assert spaced.whole == {}
    assert re.search(r"\s", "\x1c") and not re.search(rb"\s", b"\x1c")
