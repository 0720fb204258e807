"""Applying the maskers plugins return for a result shape to its DataRows."""

from __future__ import annotations

from collections.abc import Callable

from pgwarden.wire import messages as m

Masker = Callable[[bytes | None, m.Column], bytes | None]


def row_transform(shape: m.RowDescription, maskers: dict[int, Masker]) -> Callable[[bytes], bytes]:
    """A function rewriting one raw DataRow of ``shape`` with ``maskers`` (column index -> masker)."""
    columns = shape.columns
    plan = sorted((i, f) for i, f in maskers.items() if 0 <= i < len(columns))

    def transform(raw: bytes) -> bytes:
        values = list(m.DataRow.decode(raw[5:]).values)
        for i, masker in plan:
            if i < len(values):
                values[i] = masker(values[i], columns[i])
        return m.DataRow(tuple(values)).encode()

    transform.columns = tuple(columns[i].name for i, _ in plan)  # type: ignore[attr-defined]  # named in result records
    return transform
