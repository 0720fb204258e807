"""What one execution of a statement did, as the agent saw it: the stuff of a result record.

The relay fills an `Execution` as the server answers (rows, bytes, the error)
and hands it to its ``on_complete`` listener when the execution ends. Timing
uses the clock the relay was given, so the relay itself stays free of I/O.
"""

from __future__ import annotations

import struct

from pgwarden.native_bases import mypyc_attr
from pgwarden.wire import messages as m
from pgwarden.wire.framing import split_run


class Execution:
    """One run of a statement: a simple Query, an Execute of a portal, or a Parse that failed."""

    __slots__ = (
        "seq", "protocol", "arrived", "forwarded", "finished", "decide_s", "bind", "rows", "bytes",
        "sqlstate", "message", "truncated", "suspended", "sample", "sample_clipped", "masked",
        "shadow_masked", "rolled_back_from", "record_seq",
    )

    def __init__(self, seq: int, protocol: str, arrived: float, forwarded: float,
                 decide_s: float = 0.0, bind: bytes | None = None) -> None:
        self.seq = seq  # the StatementRequest it runs (0: a statement parsed before it was tracked)
        self.protocol = protocol  # "simple" | "extended" | "function_call"
        self.arrived = arrived
        self.forwarded = forwarded
        self.finished = forwarded
        self.decide_s = decide_s
        self.bind = bind  # the Bind message of an Execute: its parameters, decoded on demand
        self.rows = 0
        self.bytes = 0
        self.sqlstate: str | None = None
        self.message: str | None = None
        self.truncated = False
        #: it ended with PortalSuspended (the Execute's row limit): ``rows`` are the rows sent, not
        #: what the statement did (a DELETE ... RETURNING has deleted every row it will already)
        self.suspended = False
        self.sample: list[list[str | None]] | None = None
        self.sample_clipped = False
        #: the masking plans (`pgwarden.masking`) of its results: what was masked, by which rule
        self.masked: tuple[object, ...] = ()
        #: what shadow mask rules would have masked in its results (`pgwarden.shadow.ShadowMasks`)
        self.shadow_masked: tuple[object, ...] = ()
        #: the transaction it ran in ended at it without committing (an error, a ROLLBACK, a
        #: COMMIT answered ROLLBACK): the first execution of that transaction (itself, if none
        #: before). What they did, as their results tell it, the server undid (red team fifteen)
        self.rolled_back_from: Execution | None = None
        #: the ``seq`` of its result record, once built (0: none)
        self.record_seq = 0

    @property
    def upstream_s(self) -> float:
        return self.finished - self.forwarded

    @property
    def pgwarden_s(self) -> float:
        """pgwarden's own share: deciding (and any wait for approval) before forwarding."""
        return (self.forwarded - self.arrived) + self.decide_s

    def parameters(self, max_bytes: int) -> list[str | None] | None:
        """The Bind parameters as sent: text as text, binary as ``\\x`` hex; each cut at max_bytes.

        Read straight from the message (this runs for every Execute that is recorded):
        the relay has already checked its framing, and a malformed one is the server's to refuse.
        """
        raw = self.bind
        if raw is None:
            return None
        try:
            return _bind_parameters(raw, max_bytes)
        except (ValueError, struct.error):
            return ["<malformed Bind>"]

    def error(self, raw: bytes) -> None:
        """The first error of the execution is the one the agent acted on."""
        if self.sqlstate is not None:
            return
        try:
            e = m.ErrorResponse.decode(raw[5:])
        except Exception:  # noqa: BLE001 - a record must not fail over a bad message
            self.sqlstate, self.message = "XX000", "unreadable error message"
            return
        self.sqlstate = e.get("C")
        self.message = e.get("M")


_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!i").unpack_from


def _bind_parameters(raw: bytes, max_bytes: int) -> list[str | None]:
    i = raw.index(b"\0", 5) + 1  # portal name
    i = raw.index(b"\0", i) + 1  # statement name
    (nformats,) = _H(raw, i)
    if nformats == 0:
        formats: tuple = ()
    elif nformats == 1:
        formats = _H(raw, i + 2)
    else:
        formats = struct.unpack_from(f"!{nformats}H", raw, i + 2)
    i += 2 + 2 * nformats
    (count,) = _H(raw, i)
    i += 2
    single = formats[0] if nformats == 1 else 0
    out: list[str | None] = []
    for k in range(count):
        (size,) = _I(raw, i)
        i += 4
        if size < 0:
            out.append(None)
            continue
        value = raw[i:i + min(size, max_bytes)]
        i += size
        fmt = formats[k] if nformats > 1 else single
        text = value.decode("utf-8", "replace") if fmt == 0 else "\\x" + value.hex()
        out.append(text + "…" if size > max_bytes else text)
    return out


def render_value(value: bytes | None, fmt: int, max_bytes: int) -> str | None:
    if value is None:
        return None
    clipped = value[:max_bytes]
    if fmt == 0:
        text = clipped.decode("utf-8", "replace")
    else:
        text = "\\x" + clipped.hex()
    return text + "…" if len(value) > max_bytes else text


def tag_rows(raw: bytes) -> int:
    """The row count a CommandComplete reports (``SELECT 5``, ``INSERT 0 3``), else 0: the tag's
    last word when it is all digits. (Read backwards byte by byte, compiled: a slice, ``rfind``,
    ``isdigit`` and ``int`` of bytes were a few thousand instructions on every statement.)"""
    end = len(raw) - 1 if raw and raw[-1] == 0 else len(raw)
    count = 0
    scale = 1
    i = end - 1
    while i >= 5 and 48 <= raw[i] <= 57:
        count += (raw[i] - 48) * scale
        scale *= 10
        i -= 1
    if i == end - 1 or i < 5 or raw[i] != 32:  # no digits, or not a word of its own after a space
        return 0
    return count


@mypyc_attr(allow_interpreted_subclasses=True)
class ExecutionListener:
    """A relay's ``on_complete`` that the relay calls natively (`completed`): compiled, a call of
    any other callable goes through the generic API (~450 instructions, at every statement)."""

    def completed(self, ex: Execution) -> None:
        """An execution ended (`Execution.finished` set)."""
        raise NotImplementedError

    def __call__(self, ex: Execution) -> None:
        self.completed(ex)


class RowSampler:
    """Keeps the first rows of a result as text, bounded in rows and bytes."""

    __slots__ = ("max_rows", "max_bytes", "rows", "used", "clipped")

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows: list[list[str | None]] = []
        self.used = 0
        self.clipped = False

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.max_rows or self.clipped

    def take(self, run: bytes, formats: tuple[int, ...]) -> None:
        for raw in split_run(run):
            if self.full:
                return
            values = m.DataRow.decode(raw[5:]).values
            size = sum(len(v) for v in values if v is not None)
            if self.used + size > self.max_bytes:
                self.clipped = True
                return
            self.used += size
            self.rows.append([
                render_value(v, formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0), size + 1)
                for i, v in enumerate(values)
            ])
