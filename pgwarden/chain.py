"""The hash chain that makes a record log tamper-evident, and its verification.

A record line is the record's JSON object as serialised (orjson, compact,
UTF-8, keys in the order the record was built) with two keys appended:
``prev``, the hash of the line before it in the same sink (or GENESIS), and
then ``hash``: the SHA-256 of the line's own bytes without ``,"hash":"…"``,
that is of ``{…,"prev":"…"}``. The hash covers the bytes exactly as written,
so checking a line needs no canonical form and no particular JSON library:
cut the fixed-size ``hash`` field off the end, hash what is left.

Why bytes and not a canonical re-serialisation (which earlier builds
used): a record is serialised once for all sinks, only ``prev`` differs per
sink, and sorting keys is not needed on the hot path; and a checker that
hashes what it reads cannot disagree with the writer about float formatting
or key order.

An edited line no longer matches its hash; a deleted, inserted or moved line
breaks the ``prev`` link of the line after it. Lines cut off at the end of a
file are caught when the last line is incomplete; whole lines removed from the
end can only be caught against a chain head known from elsewhere (``--head``:
pgwarden logs the head of each file sink when it rotates and when it stops).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Final

import attrs
import orjson

from pgwarden import rawio
from pgwarden.sealing import lines_for

GENESIS = "0" * 64
# Final: compiled, C variables (module globals are a dictionary lookup at each use)
_sha256: Final = hashlib.sha256
_dumps: Final = orjson.dumps
# rawio's (compiled: write(2) and writev(2) without the GIL's release; os.write in the pure build)
_write: Final = rawio.write
_writev: Final = rawio.writev
_WRITEV_MAX: Final = rawio.WRITEV_MAX
_HASH_KEY = b',"hash":"'
#: the bytes ``,"hash":"<64 hex>"}\n`` at the end of every line
_TAIL = len(_HASH_KEY) + 64 + len(b'"}\n')


def seal(body: bytes, prev: str) -> tuple[bytes, str]:
    """The line for one serialised record (a JSON object, ``orjson.dumps(record)``), and its hash."""
    lines: list[bytes] = []
    digest = lines_for([body], prev, lines)
    return lines[0], digest


class Chain:
    """One sink's chain: the hash of its last record, and the lines sealed since its last write.

    Compiled with this module, so sealing a turn's records (`seal_into`) and taking the lines
    to write cost no interpreted frame per sink: a statement's record is sealed between its
    Query's arrival and its bytes leaving for the server.

    A sink may also let its chain write its lines itself (`write`, `write_all`), natively,
    while a write has nothing else to do: it sets ``fd`` and ``room`` and takes back what was
    written (``written``, ``written_head``) when it next does its own work. The common write
    then costs no interpreted frame either; anything else (a rotation due, a failure, bytes a
    failed write left, a partial write) goes to the sink's own flush, as before.
    """

    def __init__(self, prev: str = GENESIS) -> None:
        self.prev = prev
        self.lines: list[bytes] = []
        #: where `write` may write the lines directly, or -1: only the sink's flush writes
        self.fd = -1
        #: how many bytes `write` may still write before the sink has work of its own (a rotation)
        self.room = 0
        #: bytes `write` wrote since the sink last took them into its accounts
        self.written = 0
        #: the hash of the last record known written (by `write` or by the sink)
        self.written_head = prev

    def add(self, bodies: list[bytes]) -> None:
        self.prev = lines_for(bodies, self.prev, self.lines)

    def take(self) -> bytes:
        """The lines sealed since the last take, as one write; the buffer is left empty."""
        lines = self.lines
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        lines.clear()
        return data

    def write(self) -> bool:
        """Writes the lines sealed since the last write, when the sink lets the chain write them
        (``fd``) and they fit in ``room``; False when the sink's own flush must: nothing was
        written then, or a write failed part of the way (what is left stays as one line).
        Never True while the sink does not let the chain write (a failure or bytes left over to
        report or retry), even with no lines."""
        fd = self.fd
        if fd < 0:  # the sink has work of its own (or never writes directly)
            return False
        lines = self.lines
        if not lines:
            return True
        count = len(lines)
        if count == 1:
            data = lines[0]
            total = len(data)
        else:
            # (the lines written together without joining them first: `rawio.writev`)
            data = b""
            total = 0
            for line in lines:
                total += len(line)
        if total > self.room:
            return False
        done = 0
        while done < total:  # a partial write is continued here: no rotation inside a line
            try:
                if done == 0 and count > 1 and count <= _WRITEV_MAX:
                    done += _writev(fd, lines)
                else:
                    if not data:
                        data = b"".join(lines)
                    done += _write(fd, data if done == 0 else data[done:])
            except OSError:  # the sink's flush writes what is left again and handles the error
                if done == 0:
                    return False
                if not data:
                    data = b"".join(lines)
                lines.clear()
                lines.append(data[done:])
                self.room -= done
                self.written += done
                return False
        lines.clear()
        self.room -= done
        self.written += done
        self.written_head = self.prev
        return True


def write_all(chains: list[Chain]) -> bool:
    """Every chain's lines written directly (`Chain.write`); False if a sink's flush must write
    some (every chain that can write still has)."""
    done = True
    for chain in chains:
        if not chain.write():
            done = False
    return done


def seal_into(records: Sequence[Mapping[str, object]], chains: list[Chain]) -> None:
    """Each record serialised once (orjson: the sinks differ only in their chains) and sealed
    into every chain, in order."""
    seal_bodies([_dumps(record) for record in records], chains)


def seal_bodies(bodies: list[bytes], chains: list[Chain]) -> None:
    """Serialised records (``orjson.dumps(record)``) sealed into every chain, in order."""
    for chain in chains:
        chain.prev = lines_for(bodies, chain.prev, chain.lines)


def seal_record(record: dict, prev: str) -> tuple[bytes, str]:
    """`seal` for a record not yet serialised."""
    return seal(orjson.dumps(record), prev)


def _claimed_hash(line: bytes) -> str | None:
    """The hash a line ends with, or None if it does not end with a hash field."""
    if len(line) <= _TAIL or line[-_TAIL:-_TAIL + len(_HASH_KEY)] != _HASH_KEY or line[-3:] != b'"}\n':
        return None
    return line[-_TAIL + len(_HASH_KEY):-3].decode("ascii", "replace")


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


def open_records(path: str) -> IO[bytes]:
    """A record file for reading, decompressed when gzip'd (a rotated file compressed by
    logrotate, say): the chain is over the bytes as written, which gzip gives back unchanged."""
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return f


def _lines(paths: Iterable[str]):
    for path in paths:
        with open_records(path) as f:
            for number, line in enumerate(f, 1):
                yield path, number, line


def verify(paths: list[str], *, allow_restarts: bool = False, head: str | None = None) -> Report:
    """Checks the chain through ``paths`` (oldest first) and names the first broken line."""
    # The positions of every hash first, so a moved line can be told from a missing one.
    where: dict[str, tuple[str, int]] = {}
    for path, number, line in _lines(paths):
        h = _claimed_hash(line)
        if h is not None:
            where.setdefault(h, (path, number))

    count = 0
    expected: str | None = None
    starts_at: str = GENESIS
    previous_at: tuple[str, int] | None = None

    def report(path: str, number: int, why: str) -> Report:
        return Report(count, Problem(path, number, why), starts_at, expected)

    for path, number, line in _lines(paths):
        if not line.endswith(b"\n"):
            return report(path, number, "truncated: the last record is incomplete")
        claimed = _claimed_hash(line)
        if claimed is None:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                return report(path, number, "not a JSON record (edited or damaged)")
            return report(path, number, "not a chained record (no hash)")
        covered = line[:-_TAIL] + b"}"
        try:
            record = orjson.loads(covered)
        except orjson.JSONDecodeError:
            return report(path, number, "not a JSON record (edited or damaged)")
        if not isinstance(record, dict):
            return report(path, number, "not a chained record (no hash)")
        prev = record.get("prev")
        if not isinstance(prev, str):
            return report(path, number, "not a chained record (no prev)")
        if _sha256(covered).hexdigest() != claimed:
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
