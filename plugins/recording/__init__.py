"""Built-in plugin ``recording``: writes every record to the sinks of ``recording:``.

Each sink keeps its own hash chain. `pgwarden_records` serialises each record
once and seals it into every sink's chain (the lines wait in the sink);
`pgwarden_records_flush`, which the core calls before any byte of a reactor turn
goes upstream, writes each sink's lines with one call, so a statement never runs
before its record is with the operating system.

The plugin takes records early (`pgwarden.recorder.TAKES_EARLY`): the core hands
it the records that carry no verdict (a statement's ``result``) once the turn's
sends have left, so they are serialised and sealed off the latency path, and the
next barrier only writes them, with the next statement's record.

It reads ``recording:`` as any plugin reads a section of pgwarden's
configuration, by declaring it; with no sinks there it wants no records
(`pgwarden_records_wanted`), and pgwarden builds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pgwarden.api import RECORDING, ConfigProblem, Reactor, Record, Sections, hookimpl
from pgwarden.chain import Chain, seal_into, write_all
from pgwarden.config import FileSink as FileSinkConfig
from pgwarden_plugins.recording.sinks import FileSink, Sink, SinkFailed, StdoutSink

if TYPE_CHECKING:
    from twisted.internet.task import LoopingCall


def _thread_runner(reactor):
    """``f -> Deferred`` running ``f`` in the reactor's thread pool; None without one (tests' clocks)."""
    if reactor is None or not hasattr(reactor, "getThreadPool"):
        return None
    from twisted.internet.threads import deferToThreadPool

    return lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)


class Recording:
    #: `pgwarden_records` only serialises and seals (into the sinks' buffers): records may be
    #: handed over before the turn's barrier (`pgwarden.recorder.TAKES_EARLY`).
    pgwarden_takes_records_early = True

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        #: the sinks' chains, in their order (one list, changed in place: the core may hold it,
        #: `pgwarden_chains`)
        self._chains: list[Chain] = []
        self._ticker: LoopingCall | None = None

    @hookimpl
    def pgwarden_config_sections(self):
        return [RECORDING]

    @hookimpl
    def pgwarden_records_wanted(self) -> bool:
        return bool(self.sinks)

    @hookimpl
    def pgwarden_configure(self, sections: Sections, reactor: Reactor) -> None:
        """Opens the configured sinks; those configured before (same file) keep their chain."""
        recording = sections[RECORDING]
        known = {s.name: s for s in self.sinks}
        # Every new sink opens before anything changes: one that cannot refuses the config (at
        # start-up, or a reload, which then keeps the sinks in use as they are).
        fresh: dict[str, Sink] = {}
        for i, spec in enumerate(recording.sinks):
            if spec.name in known:
                continue
            if isinstance(spec, FileSinkConfig):
                try:
                    fresh[spec.name] = FileSink(spec.file, max_bytes=spec.max_bytes, keep=spec.keep,
                                                fsync_s=spec.fsync_s, on_error=spec.on_error,
                                                in_thread=_thread_runner(reactor))
                except SinkFailed as e:
                    for sink in fresh.values():
                        sink.discard()
                    raise ConfigProblem(("recording", "sinks", i, "file"), str(e)) from None
            else:
                fresh[spec.name] = StdoutSink(spec.on_error)
        sinks: list[Sink] = []
        for spec in recording.sinks:
            sink = known.pop(spec.name, None)
            if sink is None:
                sink = fresh[spec.name]
            else:
                sink.on_error = spec.on_error
                if isinstance(spec, FileSinkConfig) and isinstance(sink, FileSink):
                    sink.max_bytes, sink.keep, sink.fsync_s = spec.max_bytes, spec.keep, spec.fsync_s
                    sink.configured()
            sinks.append(sink)
        for dropped in known.values():
            dropped.close()
        self.sinks = sinks
        self._chains[:] = [sink.chain for sink in sinks]
        if self._ticker is None and reactor is not None:
            from twisted.internet.task import LoopingCall

            self._ticker = LoopingCall(self._tick)
            self._ticker.clock = reactor  # type: ignore[assignment]  # the whole reactor
            self._ticker.start(0.25, now=False)

    def _tick(self) -> None:
        for sink in self.sinks:
            sink.tick()

    @hookimpl
    def pgwarden_records(self, records: Sequence[Record]) -> None:
        """Sealed now into every sink's chain (compiled), written by the next flush."""
        seal_into(records, self._chains)

    @property
    def pgwarden_chains(self) -> list[Chain]:
        """The sinks' chains: `pgwarden_records` is `seal_into` them, and `pgwarden_records_flush`
        has nothing to do beyond `write_all` when that writes them all. The recorder, when this
        plugin alone takes records, does just that itself, natively, and calls the flush hook only
        when a sink has work of its own (`pgwarden.recorder.Recorder.configure`)."""
        return self._chains

    @hookimpl
    def pgwarden_records_flush(self) -> list[str] | None:
        """Writes every sink's buffer; raises naming the sinks that fail closed and could not write."""
        if write_all(self._chains):  # each sink let its chain write, and it did (no failure then)
            return None
        failed: list[str] = []
        problems: list[str] | None = None
        for sink in self.sinks:
            try:
                sink.flush()
            except SinkFailed as e:
                failed.append(str(e))
            if sink.failure:  # failing open: reported, not fatal
                problems = [sink.failure] if problems is None else [*problems, sink.failure]
        if failed:
            raise SinkFailed("; ".join(failed))
        return problems

    @hookimpl
    def pgwarden_stop(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        for sink in self.sinks:
            sink.close()
