"""`pgwarden run` as its own process: bounded memory while streaming to a reader that stalls."""

from __future__ import annotations

from pathlib import Path

from rawclient import RawClient

from pgwarden.testing import wait_until
from pgwarden.wire import messages as m
from pgwarden.wire.framing import MessageFramer

MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_stalled_reader_keeps_memory_flat(pgwarden_process, pg_server):
    running = pgwarden_process()
    # Idle RSS (about 52 MiB: Twisted with pyOpenSSL and cryptography) is reported by `make bench`.

    rc = RawClient(running.host, running.port, timeout=60)
    rc.login(running.token("streamer"))
    rc.send(m.Query("select pg_backend_pid()").encode())
    backend = int(next(x for x in rc.until_ready() if isinstance(x, m.DataRow)).values[0])

    rows, width = 200_000, 1000  # about 200 MB of DataRows
    rc.send(m.Query(f"select repeat('x', {width}) from generate_series(1, {rows})").encode())

    # Read nothing until the server itself is blocked writing: back-pressure has
    # reached it through pgwarden, which therefore is not buffering the result.
    wait_until(60, lambda: pg_server.psql(f"select wait_event from pg_stat_activity where pid = {backend}"),
               "the server to block writing to pgwarden (else pgwarden is buffering)",
               until=lambda event: event == "ClientWrite")
    stalled_kib = status_kib(running.pid, "VmRSS")

    framer = MessageFramer(MIB)
    seen = 0
    tail = []
    while True:
        chunk = rc.sock.recv(256 * 1024)
        assert chunk, "connection closed mid-result"
        framer.feed(chunk)
        for raw in framer.frames():
            if raw[:1] == b"D":
                seen += 1
            else:
                tail.append(m.decode_backend(raw))
        if tail and isinstance(tail[-1], m.ReadyForQuery):
            break
    rc.close()
    assert seen == rows
    assert [type(x) for x in tail] == [m.RowDescription, m.CommandComplete, m.ReadyForQuery]
    peak_kib = status_kib(running.pid, "VmHWM")
    assert stalled_kib < 100 * 1024, f"RSS while stalled {stalled_kib} KiB"
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
