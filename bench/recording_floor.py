#!/usr/bin/env python3
"""The floor under recording's cost: what recording costs when writing a record does the least it can.

Recording every statement costs TPS in two parts: the core builds each record
(`pgwarden.recorder`), and the `recording` plugin serialises it, seals it into
the sink's hash chain and writes the turn's lines. This measures how much of
the cost is left if the second part does only what no chained log can skip:
serialise each record (orjson), hash it together with the previous hash
(SHA-256), and one `write` per turn, with no `prev`/`hash` fields in the line,
no rotation, no fsync, no failure handling. The record file it writes is not a
pgwarden record log (`pgwarden verify` rejects it); only its cost matters.

Three ten-rule pgwardens run in rotating order, select-only: recording off,
recording to a file (`run.py`'s `(recording)` pgwarden), and the same with the
floor's writing. Their ratios to recording off say what the issue's target
("at most 10% of TPS") leaves to the plugin: if the floor alone costs more,
no way of writing the records closes the gap; the core's record building would
have to shrink too.

The floor pgwarden is started through this file (``--serve``), which replaces
`Recording.pgwarden_records_flush` before running `pgwarden run`; pgwarden
itself has no such mode.

    .venv/bin/python bench/recording_floor.py                    # simple and prepared, 4 rounds of 6 s
    .venv/bin/python bench/recording_floor.py --mode simple --rounds 6
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(argv: list[str]) -> int:
    """`pgwarden run` whose recording plugin writes records the floor's way."""
    import orjson

    from pgwarden import hookimpl
    from pgwarden_plugins.recording import Recording
    from pgwarden_plugins.recording.sinks import FileSink

    dumps, sha256 = orjson.dumps, hashlib.sha256

    @hookimpl
    def floor_flush(self) -> list[str]:
        batch, self._batch = self._batch, []
        if batch:
            sink = self.sinks[0]
            assert isinstance(sink, FileSink), "the floor writes to one file sink"
            head = getattr(self, "_floor_head", b"")
            lines = []
            for record in batch:
                body = dumps(record)
                head = sha256(body + head).digest()
                lines.append(body)
            self._floor_head = head
            lines.append(b"")
            os.write(sink._fd, b"\n".join(lines))
        return []

    Recording.pgwarden_records_flush = floor_flush  # before the plugin is registered
    from pgwarden.cli import main as pgwarden

    return pgwarden(argv)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from ceiling import compare, round_arguments, serve_through, setting_up
    from pgbench_run import pgwardens, settings, workloads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    round_arguments(p, rounds=4, duration=6)
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work, pg, _, jwks, token = setting_up(stack, "pgwarden-recording-floor-")

        def recording(name: str) -> Path:
            return pgwardens.write_pgwarden_config(pg, work, name, settings.RULES_POLICY, jwks,
                                               recording=pgwardens.recording_section(work / name))

        off = pgwardens.PgwardenRunner(
            "off", pgwardens.write_pgwarden_config(pg, work, "off", settings.RULES_POLICY, jwks), work, token,
            stack)
        (work / "recording").mkdir()
        (work / "floor").mkdir()
        rec = pgwardens.PgwardenRunner("recording", recording("recording"), work, token, stack)
        floor, port = serve_through(__file__, "floor", recording("floor"), work, stack)
        targets = {
            "off": (off.target, [off.service.pid]),
            "recording": (rec.target, [rec.service.pid]),
            "floor": (workloads.Target("floor", "127.0.0.1", port, settings.BENCH_SUBJECT, token), [floor.pid]),
        }
        compare(pg, targets, args.mode or ["simple", "prepared"], args.rounds, args.duration,
                ", ten rules, to recording off; floor: records built as ever, written the least way")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.path.insert(0, str(HERE.parent))
        sys.exit(serve(sys.argv[2:]))
    sys.exit(main())
