"""What the relay asks of the recorder and the metrics around each execution, compiled: it
calls these for every statement (an Execute's gate before, the completion after).

Interpreted closures here were Python frames each time (the completion's two: itself and the
overhead histogram's method); as compiled classes called by the compiled relay, they are none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pgwarden.counters import Histogram
from pgwarden.proxy.state import ConnectionState
from pgwarden.recorder import Recorder, RecordingFailed
from pgwarden.relay.execution import Execution, ExecutionListener

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.proxy.client import ClientConnection


class Completed(ExecutionListener):
    """The relay's ``on_complete`` for one session: pgwarden's time into the overhead histogram,
    the masked values and shadow verdicts into the metrics, and a result record if anyone records."""

    def __init__(self, stats: Stats, recorder: Recorder, conn: ClientConnection) -> None:
        self.stats = stats
        self.overhead: Callable[[float], None] = stats.overhead
        # The histogram whose ``add`` that is, called natively (compiled: no call through the
        # generic API and its argument parsing); None when the stats count otherwise.
        owner = getattr(stats.overhead, "__self__", None)
        self.histogram: Histogram | None = (
            owner if isinstance(owner, Histogram) and stats.overhead == owner.add else None)
        self.recorder = recorder
        self.conn = conn
        #: the same connection by its native base: compiled, ``shadow`` read from its struct
        self.state: ConnectionState = conn

    def completed(self, ex: Execution) -> None:
        histogram = self.histogram
        if histogram is not None:
            histogram.add(ex.pgwarden_s)
        else:
            self.overhead(ex.pgwarden_s)
        if ex.masked:
            self.stats.masked(ex.masked)
        shadow = self.state.shadow
        if shadow is not None:
            from pgwarden.shadow import result_entries

            self.stats.shadow(result_entries(shadow, ex.rows, ex.shadow_masked))
        recorder = self.recorder
        if recorder.active:
            try:
                recorder.result(self.conn, ex)
            except RecordingFailed:
                pass  # the recorder now refuses statements and says why


class ExecuteGate:
    """The relay's ``execute_gate``: why an Execute of an earlier Parse may not run now (records
    cannot be written), or None. Asked at every Execute; recording may be switched on by a reload."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(self) -> str | None:
        recorder = self.recorder
        if not recorder.active or recorder.failure is None or recorder.retry():
            return None
        return "records cannot be written; the session ended before its statement ran"
