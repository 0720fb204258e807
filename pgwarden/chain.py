"""The hash chain that makes a record log tamper-evident, and its verification.

Each record line is the canonical JSON of the record with ``prev`` (the hash
of the line before it in the same sink, or GENESIS) and then ``hash``: the
SHA-256 of the canonical JSON of everything but ``hash``. Canonical means
orjson with sorted keys, compact, UTF-8: a line parsed and serialised again
gives the same bytes, so `verify` needs nothing but the line itself.

An edited line no longer matches its hash; a deleted, inserted or moved line
breaks the ``prev`` link of the line after it. Lines cut off at the end of a
file are caught when the last line is incomplete; whole lines removed from the
end can only be caught against a chain head known from elsewhere (``--head``:
pgwarden logs the head of each file sink when it rotates and when it stops).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import attrs
import orjson

GENESIS = "0" * 64
_dumps = orjson.dumps
_sha256 = hashlib.sha256


def canonical(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def seal(record: dict, prev: str) -> tuple[bytes, str]:
    """The record as one chained line (with its newline), and its hash.

    ``prev`` is put into ``record`` for the time of serialising (cheaper than a copy);
    the record is left as it was given.
    """
    record["prev"] = prev  # records never carry their own: sinks chain them
    body = _dumps(record, option=orjson.OPT_SORT_KEYS)
    del record["prev"]
    digest = _sha256(body).hexdigest()
    return b'%s,"hash":"%s"}\n' % (body[:-1], digest.encode()), digest


@attrs.frozen
class Problem:
    file: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}"


@attrs.frozen
class Report:
    records: int
    problem: Problem | None
    starts_at: str  # the prev of the first record: GENESIS, or a hash from earlier files
    head: str | None  # the hash of the last record


def _lines(paths: Iterable[str]):
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                yield path, number, line


def verify(paths: list[str], *, allow_restarts: bool = False, head: str | None = None) -> Report:
    """Checks the chain through ``paths`` (oldest first) and names the first broken line."""
    # The positions of every hash first, so a moved line can be told from a missing one.
    where: dict[str, tuple[str, int]] = {}
    for path, number, line in _lines(paths):
        try:
            h = orjson.loads(line).get("hash")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(h, str):
            where.setdefault(h, (path, number))

    count = 0
    expected: str | None = None
    starts_at = GENESIS
    previous_at: tuple[str, int] | None = None

    def report(path: str, number: int, why: str) -> Report:
        return Report(count, Problem(path, number, why), starts_at, expected)

    for path, number, line in _lines(paths):
        if not line.endswith(b"\n"):
            return report(path, number, "truncated: the last record is incomplete")
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return report(path, number, "not a JSON record (edited or damaged)")
        if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
            return report(path, number, "not a chained record (no hash)")
        claimed = record.pop("hash")
        prev = record.get("prev")
        if hashlib.sha256(canonical(record)).hexdigest() != claimed:
            return report(path, number, "edited: the record does not match its hash")
        if expected is None:
            starts_at = prev
        elif prev != expected:
            if prev == GENESIS:
                if not allow_restarts:
                    return report(path, number, "the chain starts again here (a new process writing to "
                                                "stdout? pass --allow-restarts if so); records may be missing")
            elif prev in where:
                was = where[prev]
                after = f"{was[0]}:{was[1]}" if was[0] != path else f"line {was[1]}"
                prior = f"{previous_at[0]}:{previous_at[1]}" if previous_at and previous_at[0] != path \
                    else f"line {previous_at[1]}" if previous_at else "the start"
                return report(path, number, f"reordered: this record follows {after}, not {prior}")
            else:
                return report(path, number, "missing records before this line: its prev matches no record here")
        expected = claimed
        previous_at = (path, number)
        count += 1
    if head is not None and head not in where:
        return Report(count, Problem(paths[-1] if paths else "-", 0,
                                     f"truncated: the chain never reaches the head {head[:16]}…"), starts_at, expected)
    return Report(count, None, starts_at, expected)
