"""Rewriting runs of raw DataRows with a result's masks: the hot path of masking.

Plain, fully annotated Python that mypyc compiles as it is (no closures, no ``exec``, no
dynamic attributes): compiled, a row costs a few native loads and the slices it must make;
as plain Python it still runs, slower. `pgwarden.masking.row_transform` builds a `Walker`
per result.

What a row costs is what it must cost and no more: the walk reads the length words of a row
up to its last masked column; a field that stays as it came (NULL, a value a detector's
prefilter rejects) is not even cut out of the run; unchanged bytes leave as slices of the
run, a run in which nothing changed as the run itself, and a changed run as one join.
Answers that do not depend on the value (``redact``, ``null``, ``fixed``) are made once
per result, and ``partial`` keeping the last characters of an ASCII value (``***-**-6789``)
stars the head of the value and keeps its tail where it lies in the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pgwarden.wire.messages import Column

#: (value or None for NULL, the RowDescription column) -> the masked value, None for NULL
Masker = Callable[[bytes | None, "Column"], "bytes | None"]

NULL: Final = b"\xff\xff\xff\xff"
#: values remembered per masked column (a column's values repeat; an answer depends on the value alone)
MEMO: Final = 4096
#: values looked up before a column whose values hardly repeat stops remembering them
WATCH: Final = 1024
#: whether this module runs compiled (mypyc): the prefilter reads values byte by byte then
COMPILED: Final = not __file__.endswith(".py")
#: row headers (``D`` and the length word) remembered per length
_HEADERS: Final = 512

_ALNUM: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_STAR: Final = bytes.maketrans(_ALNUM, b"*" * len(_ALNUM))
_DIGITS: Final = b"0123456789"
# ASCII characters from rarest to commonest in text a database holds (a rough order; anything
# not listed counts as rarest): a prefilter looks for the rarest character of each anchor.
_COMMON: Final = ("@#$%^&*~`|\\{}[]<>=+_QZXJKVWYUIOPAHGFEDCBLMNRST!?;:\"'/()qzxjkvbpygfwmucldrhsnioate-.,"
                  "0123456789 ")


def _word(run: bytes, p: int) -> int:
    """The signed big-endian 32-bit word at ``p`` (a length; -1 for NULL)."""
    w = (run[p] << 24) | (run[p + 1] << 16) | (run[p + 2] << 8) | run[p + 3]
    return w - 0x100000000 if w & 0x80000000 else w


def field(value: bytes | None) -> bytes:
    """A DataRow field: the length word and the value (-1 and nothing for NULL)."""
    return NULL if value is None else len(value).to_bytes(4, "big") + value


class Prefilter:
    """A test cheaper than any regular expression that every value a set of detectors could
    find something in passes: it holds at least ``digits`` ASCII digits, or one of the ``keys``
    characters (the rarest of each anchor the detectors declare)."""

    def __init__(self, digits: int, keys: bytes) -> None:
        self.digits = digits
        self.keys = keys
        # What each byte is: 1 a digit, 2 a key, 0 anything else.
        kinds = bytearray(256)
        for c in _DIGITS:
            kinds[c] = 1
        for c in keys:
            kinds[c] = 2
        self._kinds = bytes(kinds)
        # The same as one ``translate`` (digits to 1, keys to 2, the rest to 0), for plain Python.
        self._table = self._kinds.translate(bytes.maketrans(b"\x00\x01\x02", b"012"))

    def passes(self, value: bytes) -> bool:
        """Whether a detector could find something in ``value``."""
        return self.passes_at(value, 0, len(value))

    def passes_at(self, run: bytes, a: int, b: int) -> bool:
        """`passes` for the value at ``run[a:b]``, read where it lies (compiled: a loop of loads)."""
        if not COMPILED:  # a loop of loads is slow in plain Python: C's translate and count instead
            kept = run[a:b].translate(self._table)
            return b"2" in kept or kept.count(b"1") >= self.digits
        kinds = self._kinds
        need = self.digits
        digits = 0
        i = a
        while i < b:
            kind = kinds[run[i]]
            i += 1
            if kind:
                if kind == 2:
                    return True
                digits += 1
                if digits >= need:
                    return True
        return False

    @staticmethod
    def of(needs: list[tuple[int, tuple[str, ...]]]) -> Prefilter | None:
        """The prefilter of detectors that each need (``digits``, ``anchors``); None when one
        needs neither (every value is then a candidate)."""
        digits = 1 << 30
        keys: list[int] = []
        for need_digits, anchors in needs:
            if anchors:
                if not all(anchors):
                    return None
                for anchor in anchors:
                    key = min(anchor.encode("utf-8"), key=_rarity)
                    if key not in keys:
                        keys.append(key)
            elif need_digits > 0:
                digits = min(digits, need_digits)
            else:
                return None
        return Prefilter(digits, bytes(keys))


def _rarity(c: int) -> int:
    found = _COMMON.find(chr(c)) if c < 128 else -1
    return found if found >= 0 else -1


class PartialText:
    """``partial`` for a text column, as a masker: ``first`` / ``last`` letters and digits kept,
    the others starred, separators kept. ``general`` answers every value; the walker answers the
    usual one itself (ASCII, ``first`` 0, ending in ``last`` letters or digits: ``123-45-6789``),
    with the same answer."""

    def __init__(self, first: int, last: int, general: Callable[[bytes], bytes | None]) -> None:
        self.first = first
        self.last = last
        self.general = general

    def __call__(self, value: bytes | None, column: object) -> bytes | None:
        if value is None:
            return None
        last = self.last
        tail = len(value) - last
        # The last characters are letters or digits (bytes.isalnum: ASCII ones only), and the
        # value is ASCII: they are the ones kept, and everything before them is starred.
        if not self.first and tail > 0 and value[tail:].isalnum() and value.isascii():
            head = value[:tail]
            starred = head.translate(_STAR)
            if starred == head:  # nothing to star before them: keeping them would keep everything
                return starred + value[tail:].translate(_STAR)
            return starred + value[tail:]
        return self.general(value)


class Detection:
    """A column's detectors as a masker, the usual cases answered here: no hit, and a value that
    is one hit whole of a detector without validator (a column of e-mail addresses), which its
    `Scanner` would replace whole by the detector's name. Everything else goes to ``rest``.

    ``whole`` maps a match's group to the replacement and the detector's name; give it only where
    the bytes expression matches ASCII text as the text one does (the scanner knows)."""

    def __init__(self, search: Callable[[bytes], re.Match[bytes] | None], whole: dict[str, tuple[bytes, str]],
                 rest: Callable[[bytes, re.Match[bytes]], bytes | None], hits: dict[str, int]) -> None:
        self.search = search
        self.whole = whole
        self.rest = rest
        self.hits = hits

    def __call__(self, value: bytes | None, column: object) -> bytes | None:
        if value is None:
            return None
        match = self.search(value)
        if match is None:
            return value
        if match.start() == 0 and match.end() == len(value) and value.isascii():
            known = self.whole.get(match.lastgroup or "")
            if known is not None:
                hits = self.hits
                hits[known[1]] = hits.get(known[1], 0) + 1
                return known[0]
        return self.rest(value, match)


class Step:
    """One masked column of a result: its masker, and what the walk keeps for it."""

    def __init__(self, index: int, masker: Masker, column: Column, constant: bytes | None, plain: bool,
                 prefilter: Prefilter | None) -> None:
        self.index = index
        self.masker = masker
        self.column = column
        #: the field every non-NULL value gets (the masker gives every value the same answer)
        self.constant = constant
        #: a v1 Masker: it is given NULL too
        self.plain = plain
        #: values it rejects come back unchanged (a detector's): they are not asked about
        self.prefilter = prefilter
        #: ``partial`` keeping the last N: the walk stars the head itself (0: it does not)
        self.keep_last = masker.last if isinstance(masker, PartialText) and masker.first == 0 \
            and masker.last > 0 else 0
        self.memo: dict[bytes, bytes] = {}
        #: whether values are remembered: until `WATCH` looks show that they seldom repeat
        self.remember = constant is None and self.keep_last == 0
        self.looked = 0
        self.misses = 0
        #: non-NULL values seen (records: "values masked")
        self.count = 0

    def field(self, value: bytes | None) -> bytes:
        """The field the masker gives ``value``."""
        return field(self.masker(value, self.column))

    def answer(self, value: bytes) -> bytes:
        """`field`, through the memo while the column's values repeat."""
        if not self.remember:
            return self.field(value)
        self.looked += 1
        memo = self.memo
        known = memo.get(value)
        if known is not None:
            return known
        self.misses += 1
        known = self.field(value)
        if len(memo) >= MEMO:
            memo.clear()
        memo[value] = known
        if self.looked >= WATCH and self.misses * 10 > self.looked * 9:
            # Every value another (each SSN of a table): a lookup and a store per value for nothing.
            self.remember = False
            memo.clear()
        return known


class Walker:
    """A result's masks applied to runs of raw DataRows (whole messages, as the relay hands them)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = sorted(steps, key=lambda s: s.index)
        self.headers: dict[int, bytes] = {}

    def header(self, length: int) -> bytes:
        """``D`` and the length word of a row of ``length``."""
        known = self.headers.get(length)
        if known is None:
            if len(self.headers) >= _HEADERS:
                self.headers.clear()
            known = self.headers[length] = b"D" + length.to_bytes(4, "big")
        return known

    def walk(self, run: bytes) -> bytes:
        """``run`` with each row's masked fields replaced; ``run`` itself when nothing changed."""
        steps = self.steps
        nsteps = len(steps)
        out: list[bytes] = []
        size_run = len(run)
        pending = 0  # bytes from here on are copied as they are, when something after them changes
        pos = 0
        while pos < size_run:
            length = _word(run, pos + 1)
            if length < 6 or pos + 1 + length > size_run:  # framed by the relay: never, unless broken
                raise ValueError(f"not a whole DataRow at {pos} of a run of {size_run} bytes")
            end = pos + 1 + length
            ncols = (run[pos + 5] << 8) | run[pos + 6]
            p = pos + 7
            col = 0
            delta = 0
            at = -1  # where this row's header goes in ``out`` once a field of it changes
            k = 0
            while k < nsteps:
                step = steps[k]
                k += 1
                i = step.index
                if i >= ncols:
                    break
                while col < i:
                    s = _word(run, p)
                    p += 4 + s if s > 0 else 4
                    col += 1
                col += 1
                s = _word(run, p)
                a = p + 4
                b = a + s if s > 0 else a
                got: bytes
                if s < 0:
                    if not step.plain:
                        p = a  # NULL stays NULL
                        continue
                    got = step.field(None)
                else:
                    step.count += 1
                    constant = step.constant
                    if constant is not None:
                        got = constant
                    elif step.keep_last and s > step.keep_last:
                        tail = b - step.keep_last
                        kept = run[tail:b]
                        head = run[a:tail]
                        starred = head.translate(_STAR)
                        if kept.isalnum() and head.isascii() and starred != head:
                            # Same length: the length word stays, the tail stays where it is.
                            if at < 0:
                                if pending < pos:
                                    out.append(run[pending:pos])
                                at = len(out)
                                out.append(b"")
                                pending = pos + 5
                            out.append(run[pending:a])
                            out.append(starred)
                            pending = tail
                            p = b
                            continue
                        got = step.field(run[a:b])
                    else:
                        prefilter = step.prefilter
                        if prefilter is not None and not prefilter.passes_at(run, a, b):
                            p = b  # unchanged: not asked, not cut out
                            continue
                        got = step.answer(run[a:b])
                if at < 0:
                    if pending < pos:
                        out.append(run[pending:pos])
                    at = len(out)
                    out.append(b"")
                    pending = pos + 5
                out.append(run[pending:p])
                out.append(got)
                delta += len(got) - 4 - (s if s > 0 else 0)
                p = b
                pending = p
            if at >= 0:
                out[at] = self.header(length + delta)
            pos = end
        if not out:
            return run
        out.append(run[pending:])
        return b"".join(out)
