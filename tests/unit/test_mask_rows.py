"""`row_transform` (`pgwarden.mask_rows`) rewrites runs of raw DataRows exactly as masking each decoded row
would."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden import mask_rows
from pgwarden.mask_rows import PartialText
from pgwarden.masking import ColumnMask, row_transform
from pgwarden.wire import messages as m
from pgwarden_plugins.mask import detection, values
from pgwarden_plugins.mask.detectors import BUILTIN, Scanner

WIDTH = 6
SHAPE = m.RowDescription(tuple(m.Column(f"c{i}") for i in range(WIDTH)))


def _upper(value: bytes | None, _column: m.Column) -> bytes | None:
    return None if value is None else value.upper() + b"!"


def _nulls(value: bytes | None, _column: m.Column) -> bytes | None:
    return None if value is None or value.startswith(b"n") else value[:1]


def _plain(value: bytes | None, _column: m.Column) -> bytes | None:
    return b"was null" if value is None else b""


def _fixed(_value: bytes | None, _column: m.Column) -> bytes | None:
    return b"***"


MASKERS = {
    "upper": lambda: ColumnMask(_upper, 1, strategy="partial"),
    "nulls": lambda: ColumnMask(_nulls, 1, strategy="partial"),
    "constant": lambda: ColumnMask(_fixed, 4, strategy="redact", constant=True),
    "plain": lambda: _plain,  # a v1 Masker: NULL is given to it
}


def _expected(rows: list[tuple[bytes | None, ...]], masks: dict[int, object]) -> bytes:
    out = []
    for row in rows:
        masked = []
        for i, value in enumerate(row):
            mask = masks.get(i)
            if mask is None or (value is None and isinstance(mask, ColumnMask)):
                masked.append(value)
            else:
                masker = mask.masker if isinstance(mask, ColumnMask) else mask
                masked.append(masker(value, SHAPE.columns[i]))
        out.append(m.DataRow(tuple(masked)).encode())
    return b"".join(out)


def _rows(rng: random.Random, count: int) -> list[tuple[bytes | None, ...]]:
    def value() -> bytes | None:
        kind = rng.random()
        if kind < 0.2:
            return None
        if kind < 0.3:
            return b""
        return bytes(rng.choice(b"abcnxyz0\x00\xff") for _ in range(rng.randrange(1, 300)))

    rows = []
    for _ in range(count):
        width = WIDTH if rng.random() < 0.85 else rng.randrange(0, WIDTH + 3)  # other widths: the general loop
        rows.append(tuple(value() for _ in range(width)))
    return rows


@pytest.mark.parametrize("seed", range(12))
def test_runs_are_rewritten_as_each_row_would_be(seed):
    rng = random.Random(seed)
    columns = rng.sample(range(WIDTH), rng.randrange(1, WIDTH + 1))
    masks = {i: MASKERS[rng.choice(list(MASKERS))]() for i in columns}
    rows = _rows(rng, 400)
    transform = row_transform(SHAPE, masks)
    run = b"".join(m.DataRow(r).encode() for r in rows)
    assert transform(run) == _expected(rows, masks)
    counted = {i: sum(1 for r in rows if i < len(r) and r[i] is not None) for i in columns}
    assert dict(transform.plan.values) == {i: n for i, n in counted.items() if n}


def test_a_run_no_quick_test_finds_anything_in_comes_back_as_it_was():
    mask = ColumnMask(_upper, -1, strategy="detect", candidate=lambda raw: b"secret" in raw)
    transform = row_transform(SHAPE, {2: mask})
    run = m.DataRow((b"a",) * WIDTH).encode()
    assert transform(run) is run
    secret = m.DataRow((b"secret",) * WIDTH).encode()
    assert transform(secret) == m.DataRow((b"secret",) * 2 + (b"SECRET!",) + (b"secret",) * 3).encode()


def test_a_column_whose_values_do_not_repeat_is_masked_alike_without_its_memo():
    asked: list[bytes | None] = []

    def counting(value: bytes | None, column: m.Column) -> bytes | None:
        asked.append(value)
        return _upper(value, column)

    masks = {1: ColumnMask(counting, 1, strategy="partial"), 3: ColumnMask(counting, 1, strategy="partial")}
    transform = row_transform(SHAPE, masks)
    for start in range(0, 3000, 500):  # column 1: every value another; column 3: ten values
        rows = [(b"x", b"%d" % g, None, b"%d" % (g % 10), b"", None) for g in range(start, start + 500)]
        run = b"".join(m.DataRow(r).encode() for r in rows)
        assert transform(run) == _expected(rows, {1: MASKERS["upper"](), 3: MASKERS["upper"]()})
    assert len(asked) == 3000 + 10  # each distinct value asked once: column 3's remembered throughout
    assert dict(transform.plan.values) == {1: 3000, 3: 3000}


# ---------------------------------------------------------------------------- the walk, by hypothesis

SCANNER = Scanner(BUILTIN)
# Values as columns hold them: digits and separators (SSNs, cards, dates), words, e-mail
# addresses, detector hits, binary bytes, non-ASCII text, NULL and empty.
_TEXTISH = st.text(alphabet="0123456789 -.@_abcxyzAKIJé\x1c", max_size=30).map(str.encode)
_HITS = st.sampled_from([b"123-45-6789", b"4111 1111 1111 1111", b"user7@example.com", b"+1 (415) 555-2671",
                         b"eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", b"AKIAABCDEFGHIJKLMNOP", b"DE89370400440532013000"])
_VALUE = st.one_of(st.none(), _TEXTISH, _HITS, st.binary(max_size=20),
                   st.tuples(_TEXTISH, _HITS, _TEXTISH).map(b"".join))


def _detection(json: bool = False) -> ColumnMask:
    """The mask plugin's detection masker for a text (or json) column, as `_detection` builds it."""
    return ColumnMask(detection(SCANNER, Counter(), json), -1, rule="json" if json else "text", strategy="detect",
                      prefilter=SCANNER.prefilter)


def _scrubbed(value: bytes, json: bool) -> bytes:
    """What the detectors make of ``value``, the long way: `Scanner.scrub` over its text."""
    if SCANNER.pattern.search(value) is None:
        return value
    text, found = SCANNER.scrub(value.decode("utf-8", "replace"))
    if not found:
        return value
    return ('"[' + ",".join(dict.fromkeys(found)) + ']"' if json else text).encode()


def _partial(first: int, last: int) -> ColumnMask:
    return ColumnMask(values.partial_text(first, last), 3, strategy="partial")


_MASK = st.one_of(
    st.sampled_from(sorted(MASKERS)).map(lambda name: MASKERS[name]()),
    st.builds(_partial, st.integers(0, 2), st.integers(0, 5)),
    st.builds(_detection, st.booleans()),
)


def _reference(rows: list[tuple[bytes | None, ...]], masks: dict[int, ColumnMask]) -> bytes:
    """Each decoded row masked value by value: every masker asked about every value (no
    prefilter, no memo, no short way: detectors by `Scanner.scrub`); NULL given to v1 maskers only."""
    out = []
    for row in rows:
        masked = []
        for i, value in enumerate(row):
            mask = masks.get(i)
            if mask is None or (value is None and mask.strategy != "plugin"):
                masked.append(value)
            elif mask.strategy == "detect":
                masked.append(_scrubbed(value, mask.rule == "json"))
            else:
                masked.append(mask.masker(value, SHAPE.columns[i]))
        out.append(m.DataRow(tuple(masked)).encode())
    return b"".join(out)


@given(rows=st.lists(st.one_of(st.lists(_VALUE, min_size=WIDTH, max_size=WIDTH), st.lists(_VALUE, max_size=WIDTH + 2))
                     .map(tuple), max_size=40),
       masks=st.dictionaries(st.integers(0, WIDTH - 1), _MASK, max_size=WIDTH),
       cuts=st.lists(st.integers(0, 40), max_size=5), compiled=st.booleans())
def test_the_walk_masks_every_row_as_the_maskers_would_value_by_value(rows, masks, cuts, compiled):
    """Any rows (NULLs, empty values, binary bytes, detector hits, rows of other widths), any masks
    (constant, v1, partial, detectors with their prefilter), the run cut anywhere between rows (the
    relay hands over whole messages, in runs of any size): the same bytes as masking each value."""
    saved = mask_rows.COMPILED
    mask_rows.COMPILED = compiled  # the prefilter's two ways: a loop of loads, or translate
    try:
        plain = {i: (ColumnMask(mask, 4, strategy="plugin") if not isinstance(mask, ColumnMask) else mask)
                 for i, mask in masks.items()}
        expected = _reference(rows, plain)
        transform = row_transform(SHAPE, masks)
        encoded = [m.DataRow(r).encode() for r in rows]
        bounds = sorted({0, len(rows), *(c for c in cuts if c <= len(rows))})
        got = b"".join(transform(b"".join(encoded[a:b])) for a, b in zip(bounds, bounds[1:]))
        assert got == expected
        counted = {i: sum(1 for r in rows if i < len(r) and r[i] is not None) for i in masks}
        assert dict(transform.plan.values) == {i: n for i, n in counted.items() if n}
    finally:
        mask_rows.COMPILED = saved


def test_a_run_nothing_changes_in_comes_back_itself():
    transform = row_transform(SHAPE, {1: _detection(), 4: MASKERS["constant"]()})
    run = b"".join(m.DataRow((b"1", b"User 1", b"x", b"y", None, b"z")).encode() for _ in range(50))
    assert transform(run) is run
    assert transform.plan.values == {1: 50}


def test_partial_keeping_the_tail_stars_the_head_in_place_as_the_strategy_does():
    masker = values.partial_text(0, 4)
    assert isinstance(masker, PartialText)
    rows = [(b"1", b"123-45-6789"), (b"2", b"----6789"), (b"3", b"12-\xc3\xa9-6789"), (b"4", b"6789"), (b"5", b"a-b")]
    shape = m.RowDescription((m.Column("id"), m.Column("ssn")))
    transform = row_transform(shape, {1: ColumnMask(masker, 3, strategy="partial")})
    got = transform(b"".join(m.DataRow(r).encode() for r in rows))
    assert got == b"".join(m.DataRow((i, values.partial(0, 4)(v, values.Family.TEXT, 0))).encode() for i, v in rows)
    assert m.DataRow((b"1", b"***-**-6789")).encode() in got


@pytest.mark.parametrize("json", [False, True])
def test_detector_hits_whole_or_within_a_value_are_masked_as_scrub_would(json):
    """A value that is one hit whole takes the short way; a hit with anything before or after it,
    several hits, hits needing validation, and non-ASCII text around one take `scrub`."""
    cases = [b"user7@example.com", b"user7@example.com and more", b"user7@example.com0", b"mail user7@example.com",
             b"123-45-6789", b"123-45-6789 x", b"user7@example.com 123-45-6789", b"\xc3\xa9user7@example.com",
             b"4111 1111 1111 1111", b"4111 1111 1111 1112", b"nothing here", b""]
    rows = [(b"1", value, None, b"x", b"y", b"z") for value in cases]
    masks = {1: _detection(json)}
    assert row_transform(SHAPE, masks)(b"".join(m.DataRow(r).encode() for r in rows)) == _reference(rows, masks)
    assert _detection(json).masker(b"user7@example.com and more", SHAPE.columns[1]) in (
        b"[email] and more", b'"[email]"')


@pytest.mark.parametrize("run", [b"D\x00\x00\x00\x00\x00\x01", b"D\x00\x00\x00\x20\x00\x01\x00\x00\x00\x01x",
                                 b"D\xff\xff\xff\xff\x00\x01"])
def test_a_run_that_is_not_whole_datarows_raises_rather_than_loops_or_passes(run):
    """The relay frames runs; should a broken one come, the transform raises (the relay then ends
    the session) instead of looping on a length that does not advance or reading past the run."""
    transform = row_transform(SHAPE, {0: MASKERS["constant"]()})
    with pytest.raises(ValueError):
        transform(run)
