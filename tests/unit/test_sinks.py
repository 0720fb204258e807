"""The record sinks' writes when the kernel takes only part of the bytes (pgwarden_plugins.recording.sinks)."""

from __future__ import annotations

import fcntl
import os

from pgwarden.chain import GENESIS, lines_for
from pgwarden_plugins.recording.sinks import StdoutSink


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_a_write_the_pipe_takes_in_part_keeps_the_rest_for_the_next_flush_nothing_lost_nothing_twice():
    """A non-blocking pipe takes what fits (a first write that wrote part, then EAGAIN): the sink
    keeps exactly the bytes not written and writes them first at its next flush."""
    read_end, write_end = os.pipe()
    try:
        for fd in (read_end, write_end):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        capacity = fcntl.fcntl(write_end, 1032)  # F_GETPIPE_SZ
        sink = StdoutSink("open", fd=write_end)
        bodies = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 1000) for i in range(3 * capacity // 1000)]
        sink.add(bodies)
        sink.flush()  # more than the pipe holds: fails open, the rest kept
        assert sink.failure is not None and sink.errors == 1
        got = _drain(read_end)
        assert 0 < len(got) < sum(len(b) for b in bodies)
        for _ in range(10):  # drained: the next flushes write what was kept (a pipe's worth each)
            sink.flush()
            got += _drain(read_end)
            if sink.failure is None:
                break
        assert sink.failure is None, "the bytes kept were never all written"
        expected: list[bytes] = []
        lines_for(bodies, GENESIS, expected)
        assert got == b"".join(expected)
    finally:
        os.close(read_end)
        os.close(write_end)
