"""`row_transform` rewrites runs of raw DataRows exactly as masking each decoded row would."""

from __future__ import annotations

import random

import pytest

from pgwarden.masking import ColumnMask, row_transform
from pgwarden.wire import messages as m

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
    for values in rows:
        masked = []
        for i, value in enumerate(values):
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
