"""The record sinks' writes when the kernel takes only part of the bytes (pgwarden_plugins.recording.sinks)."""

from __future__ import annotations

import fcntl
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.chain import GENESIS, lines_for, verify, write_all
from pgwarden.testing.matrix import examples
from pgwarden_plugins.recording.sinks import SinkFailed, StdoutSink


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



def _nonblocking_pipe() -> tuple[int, int, int]:
    """A pipe whose both ends never block, and how many bytes it holds (F_GETPIPE_SZ)."""
    read_end, write_end = os.pipe()
    for fd in (read_end, write_end):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return read_end, write_end, fcntl.fcntl(write_end, 1032)


def test_a_write_the_pipe_takes_in_part_keeps_the_rest_for_the_next_flush_nothing_lost_nothing_twice():
    """A non-blocking pipe takes what fits (a first write that wrote part, then EAGAIN): the sink
    keeps exactly the bytes not written and writes them first at its next flush."""
    read_end, write_end, capacity = _nonblocking_pipe()
    try:
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


# ------------------------------------------------------------------ the chain writing directly

def _file_sink(path, max_bytes: int, *, direct: bool = True, on_error: str = "closed"):
    from twisted.internet.defer import maybeDeferred

    from pgwarden_plugins.recording.sinks import FileSink

    # in_thread: as pgwarden's reactor has, a runner for the periodic fsync (the chain may write)
    sink = FileSink(str(path), max_bytes=max_bytes, keep=1000, fsync_s=60, on_error=on_error,
                    in_thread=maybeDeferred if direct else None)
    assert (sink.chain.fd >= 0) is direct
    return sink


def _files(path) -> list[bytes]:
    """The sink's file and its rotations, oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    return [p.read_bytes() for p in [*rotated, path]]


@settings(max_examples=examples(30), deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=4), min_size=1, max_size=25),
       st.integers(min_value=150, max_value=3000))
def test_lines_the_chain_writes_itself_land_in_the_same_files_as_the_sinks_own_writes(tmp_path_factory, turns,
                                                                                      max_bytes):
    """Rotation by size, the head known written and the bytes: the same whether the chain writes
    a turn's lines (`write_all`, as the recorder does first) or the sink's flush does."""
    got = {}
    for direct in (True, False):
        path = tmp_path_factory.mktemp("direct" if direct else "flush") / "r.jsonl"
        sink = _file_sink(path, max_bytes, direct=direct)
        directly = 0
        for n, sizes in enumerate(turns):
            sink.add([b'{"turn":%d,"pad":"%s"}' % (n, b"x" * size) for size in sizes])
            if write_all([sink.chain]):
                directly += 1
            else:
                sink.flush()
            assert sink.written_head == sink.prev  # every record written, whoever wrote it
        if not direct:
            assert directly == 0
        sink.tick()
        size = sink.size
        sink.close()
        assert size == path.stat().st_size  # what the chain wrote is in the sink's accounts
        got[direct] = _files(path)
    assert got[True] == got[False]


def test_a_direct_write_that_fails_goes_to_the_sinks_flush_which_fails_closed_and_keeps_the_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    sink = _file_sink(path, 1 << 20)
    sink.add([b'{"n":1}'])
    assert write_all([sink.chain]) and sink.chain.lines == []
    own, full = sink._fd, os.open("/dev/full", os.O_WRONLY)
    try:
        sink._fd = full  # the disk is full from now on
        sink._direct()
        sink.add([b'{"n":2}'])
        assert not write_all([sink.chain])
        with pytest.raises(SinkFailed):
            sink.flush()
        assert sink.failure is not None and sink.chain.fd == -1
        assert not write_all([sink.chain]), "a sink with a failure to retry must get its flush, lines or not"
        sink._fd = own
        sink.add([b'{"n":3}'])
        assert not write_all([sink.chain])
        sink.flush()  # written again: what was kept, then the new line
        assert sink.failure is None and sink.chain.fd == own and sink.written_head == sink.prev
        sink.add([b'{"n":4}'])
        assert write_all([sink.chain])
    finally:
        os.close(full)
    sink.close()
    assert [orjson.loads(line)["n"] for line in path.read_bytes().splitlines()] == [1, 2, 3, 4]
    assert verify([str(path)]).problem is None


@pytest.mark.parametrize("pad", [1000, 40000])  # (many lines: joined; a few: writev(2), Chain.write)
def test_a_direct_write_the_pipe_takes_in_part_leaves_the_rest_to_the_flush_nothing_lost_nothing_twice(pad):
    read_end, write_end, capacity = _nonblocking_pipe()
    try:
        sink = StdoutSink("open", fd=write_end)
        assert sink.chain.fd == write_end
        bodies = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * pad) for i in range(max(3 * capacity // pad, 3))]
        sink.add(bodies)
        assert not write_all([sink.chain])  # a pipe's worth written, then EAGAIN
        assert 0 < sink.chain.written and len(sink.chain.lines) == 1
        got = _drain(read_end)
        assert len(got) == sink.chain.written
        for _ in range(10):
            if write_all([sink.chain]):
                break
            sink.flush()
            got += _drain(read_end)
        got += _drain(read_end)
        assert sink.failure is None
        expected: list[bytes] = []
        lines_for(bodies, GENESIS, expected)
        assert got == b"".join(expected)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_second_writer_of_a_record_file_is_refused_until_the_first_closes(tmp_path):
    """Two pgwardens appending to one file (the same config started twice, a shared volume) would
    interleave two hash chains: the second is refused at its start, saying why (red team eight)."""
    import subprocess
    import sys

    path = tmp_path / "r.jsonl"
    first = _file_sink(path, 1 << 20)
    other = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom pgwarden_plugins.recording.sinks import FileSink, SinkFailed\n"
         "try:\n    FileSink(sys.argv[1], max_bytes=1 << 20, keep=1, fsync_s=1, on_error='closed')\n"
         "except SinkFailed as e:\n    print(e)\n    sys.exit(3)\n", str(path)],
        capture_output=True, text=True, timeout=60)
    assert other.returncode == 3, other.stderr
    assert f"another process is writing records to {path}" in other.stdout
    with pytest.raises(SinkFailed, match="two writers would interleave two hash chains"):
        _file_sink(path, 1 << 20)  # (flock's lock is the open file's: a second open here is refused too)
    first.add([b'{"n":1}'])
    first.flush()
    first.close()
    second = _file_sink(path, 1 << 20)  # the first let go: the chain goes on
    second.add([b'{"n":2}'])
    second.flush()
    second.close()
    assert verify([str(path)]).problem is None
