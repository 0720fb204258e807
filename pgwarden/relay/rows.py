"""What happens to a result's rows between the server and the agent, apart from the protocol.

The relay's state machine knows which request a DataRow answers; what is done to the rows
once that is known lives here, sans-IO like the relay: a `ResultStream` per result cuts its
rows at the row cap and rewrites them with the result's transform (masks), and a
`ResultMeter` per execution counts and samples what went to the agent, for records.

Rows come in runs (consecutive DataRows in one buffer) and leave in runs when nothing must
look at each row: that is what keeps relaying cheap. A transform that raises is not caught
here: the relay ends the session, so no row passes unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from pgwarden.relay.execution import Execution, RowSampler
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m
from pgwarden.wire.framing import split_run

_B_COMMAND_COMPLETE: Final = 67  # C

#: Rewrites one DataRow or a run of them; returns b"" for nothing to send.
RowTransform = Callable[[bytes], bytes]


class RowSource(Protocol):
    """A portal, as results see it: its shape, and the rows it has sent over all its Executes."""

    rows_sent: int

    def result_shape(self) -> m.RowDescription | None: ...


class Refused:
    """The transform of a result a masking plugin could not plan: no row of it is sent, and its
    error goes in place of its CommandComplete."""

    __slots__ = ("error",)

    def __init__(self, error: bytes) -> None:
        self.error = error

    def __call__(self, run: bytes) -> bytes:
        return b""


def refused(e: Exception) -> Refused:
    """The refusal for a result whose transform could not be had (the plugin raised ``e``)."""
    refusal = getattr(e, "refusal", None)
    if isinstance(refusal, Refusal):  # the listener says why, as the client is to see it
        return Refused(m.ErrorResponse.build("ERROR", refusal.sqlstate, refusal.message, refusal.detail,
                                             refusal.hint).encode())
    message = str(e) if isinstance(e, Exception) and str(e).startswith("plugin ") else f"{type(e).__name__}"
    return Refused(m.ErrorResponse.build(
        "ERROR", "XX000", f"pgwarden: result refused: {message}",
        "pgwarden masks results before they reach the client; masking this one failed, so none of it is sent.",
        "This is pgwarden's fault, not the statement's: retry later or ask an operator.",
    ).encode())


class ResultStream:
    """One result in flight: its shape, and its rows cut at the cap and rewritten.

    The shape is decoded only when asked: most results are relayed without anyone looking.
    """

    __slots__ = ("_decoded", "description", "portal", "rows_left", "sent", "transform", "truncated")

    def __init__(self, description: bytes | None = None, portal: RowSource | None = None,
                 cap: int | None = None) -> None:
        self.description = description
        self._decoded: m.RowDescription | None = None
        self.portal = portal
        #: the rows' rewrite (masks), installed by the relay once it knows the shape; None: as they came
        self.transform: RowTransform | None = None
        #: rows still allowed under the cap; None: no cap. A portal fetched in several Executes
        #: counts all it has sent.
        self.rows_left: int | None = (
            None if cap is None else max(0, cap - (portal.rows_sent if portal is not None else 0)))
        #: rows beyond the cap were dropped
        self.truncated = False
        #: rows sent of this result (counted under a cap only)
        self.sent = 0

    @property
    def shape(self) -> m.RowDescription | None:
        if self.portal is not None:
            return self.portal.result_shape()
        if self._decoded is None and self.description is not None:
            self._decoded = m.RowDescription.shared(self.description[5:])
        return self._decoded

    @property
    def inspects(self) -> bool:
        """Whether its rows must be looked at (rewritten or counted) rather than passed on."""
        return self.transform is not None or self.rows_left is not None

    def rows(self, run: bytes) -> list[bytes]:
        """What goes on of a run of rows: whole runs where only a transform applies, single rows
        otherwise (the cap counts them)."""
        transform = self.transform
        left = self.rows_left
        if left is None and transform is not None:
            # A transform takes the whole run: runs no mask needs come back as they went in.
            out = transform(run)
            return [out] if out else []
        rows = split_run(run)
        if transform is not None:
            rows = [out for out in (transform(row) for row in rows) if out]
        if left is not None:
            if len(rows) > left:
                rows = rows[:left]
                self.truncated = True
            self.rows_left = left - len(rows)
            self.sent += len(rows)
            if self.portal is not None:
                self.portal.rows_sent += len(rows)
        return rows

    def truncation_notice(self, cap: int | None, t: int, raw: bytes) -> tuple[bytes, bytes]:
        """Before the end of a cut result: a notice, and the end message (a CommandComplete's tag
        counts what was sent)."""
        notice = m.NoticeResponse.build(
            "NOTICE", "01000", f"pgwarden: result truncated at {cap} rows",
            "Rows beyond the limit of this identity's policy were not sent.",
            "Narrow the query (WHERE, LIMIT) or aggregate in SQL.",
        ).encode()
        if t != _B_COMMAND_COMPLETE:
            return notice, raw
        tag = m.CommandComplete.decode(raw[5:]).tag
        words = tag.split(" ")
        if words[-1].isdigit():
            words[-1] = str(self.sent)
        return notice, m.CommandComplete(" ".join(words)).encode()


class ResultMeter:
    """What went to the agent since the last execution ended: bytes, rows, a sample, masks.

    Kept per session rather than per result: a simple Query's statements are one execution.
    The sample is bounded (``sample_rows``, ``sample_bytes``); 0 rows: none is kept.
    """

    __slots__ = ("_sample_bytes", "_sample_rows", "_sampler", "bytes", "masked", "rows", "shadow_masked",
                 "truncated")

    def __init__(self, sample_rows: int = 0, sample_bytes: int = 0) -> None:
        self.bytes = 0
        #: rows of a simple Query's statements (their CommandCompletes) so far
        self.rows = 0
        self.truncated = False
        #: the masking plans of the results so far (records, metrics)
        self.masked: tuple[object, ...] = ()
        #: what shadow mask rules would have masked in the results so far
        self.shadow_masked: tuple[object, ...] = ()
        self._sample_rows = sample_rows
        self._sample_bytes = sample_bytes
        self._sampler: RowSampler | None = None

    def _sampler_now(self) -> RowSampler:
        if self._sampler is None:
            self._sampler = RowSampler(self._sample_rows, self._sample_bytes)
        return self._sampler

    def rows_sent(self, run: bytes, result: ResultStream | None) -> None:
        """Rows as they went to the agent (after masks and the row cap): counted, maybe sampled.
        The result's shape is decoded only for a sample."""
        self.bytes += len(run)
        if self._sample_rows:
            sampler = self._sampler_now()
            if not sampler.full:
                shape = result.shape if result is not None else None
                sampler.take(run, tuple(c.format for c in shape.columns) if shape is not None else ())

    def fragment_sent(self, size: int) -> None:
        """Part of a row too large to hold whole went on: counted, and the sample says a row is missing."""
        self.bytes += size
        if self._sample_rows:
            self._sampler_now().clipped = True

    def mask(self, transform: object) -> None:
        """A transform was installed: its masking plan, if it has one, is the execution's."""
        plan = getattr(transform, "plan", None)
        if plan is not None:
            self.masked += (plan,)
        shadow = getattr(transform, "shadow", None)
        if shadow is not None:
            self.shadow_masked += (shadow,)

    def finish(self, ex: Execution) -> None:
        """An execution ended: what went to the agent since the previous one is its."""
        ex.bytes = self.bytes
        self.bytes = 0
        sampler = self._sampler
        if sampler is not None:
            ex.sample, ex.sample_clipped = sampler.rows, sampler.clipped
            self._sampler = None
        ex.masked = self.masked
        self.masked = ()
        if self.shadow_masked:
            ex.shadow_masked = self.shadow_masked
            self.shadow_masked = ()
