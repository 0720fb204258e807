"""What follows each execution's completion, compiled: the relay calls it for every statement.

An interpreted closure here was two Python frames a statement (itself and the overhead
histogram's method); as a compiled class called by the compiled relay, it is none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pgwarden.recorder import Recorder, RecordingFailed
from pgwarden.relay.execution import Execution

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.proxy.client import ClientConnection


class Completed:
    """The relay's ``on_complete`` for one session: pgwarden's time into the overhead histogram,
    the masked values and shadow verdicts into the metrics, and a result record if anyone records."""

    def __init__(self, stats: Stats, recorder: Recorder, conn: ClientConnection) -> None:
        self.stats = stats
        self.overhead: Callable[[float], None] = stats.overhead
        self.recorder = recorder
        self.conn = conn

    def __call__(self, ex: Execution) -> None:
        self.overhead(ex.pgwarden_s)
        if ex.masked:
            self.stats.masked(ex.masked)
        shadow = self.conn.shadow
        if shadow is not None:
            from pgwarden.shadow import result_entries

            self.stats.shadow(result_entries(shadow, ex.rows, ex.shadow_masked))
        recorder = self.recorder
        if recorder.active:
            try:
                recorder.result(self.conn, ex)
            except RecordingFailed:
                pass  # the recorder now refuses statements and says why
