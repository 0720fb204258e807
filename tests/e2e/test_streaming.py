"""`pgwarden run` as its own process: bounded memory while streaming to a reader that stalls."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pgwarden.testing.postgres import free_port
from pgwarden.testing.pytest_plugin import base_config
from pgwarden.tokens import mint
from pgwarden.wire import messages as m
from pgwarden.wire.framing import MessageFramer

from rawclient import RawClient

MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def pgwarden_process(pg_server, signing_keys, tmp_path, spawn):
    doc = base_config(pg_server, signing_keys, tmp_path, listen={"port": free_port()})
    cfg = tmp_path / "pgwarden.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    ready = tmp_path / "ready"
    proc = spawn(
        [sys.executable, "-m", "pgwarden", "run", "-c", str(cfg), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"pgwarden did not start: {proc.stdout.read().decode()}")
        time.sleep(0.05)
    return proc, int(ready.read_text())


def test_stalled_reader_keeps_memory_flat(pgwarden_process, pg_server, signing_keys):
    proc, port = pgwarden_process
    # Idle RSS (about 52 MiB: Twisted with pyOpenSSL and cryptography) is reported by `make bench`.

    token = mint(signing_keys["private"], subject="streamer", issuer="https://issuer.pgwarden.test",
                 audience="pgwarden", groups=["ai-agents"])
    rc = RawClient("127.0.0.1", port, timeout=60)
    rc.login(token)
    rc.send(m.Query("select pg_backend_pid()").encode())
    backend = int(next(x for x in rc.until_ready() if isinstance(x, m.DataRow)).values[0])

    rows, width = 200_000, 1000  # about 200 MB of DataRows
    rc.send(m.Query(f"select repeat('x', {width}) from generate_series(1, {rows})").encode())

    # Read nothing until the server itself is blocked writing: back-pressure has
    # reached it through pgwarden, which therefore is not buffering the result.
    deadline = time.monotonic() + 60
    while pg_server.psql(f"select wait_event from pg_stat_activity where pid = {backend}") != "ClientWrite":
        assert time.monotonic() < deadline, "the server never blocked: pgwarden is buffering"
    stalled_kib = status_kib(proc.pid, "VmRSS")

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
    peak_kib = status_kib(proc.pid, "VmHWM")
    assert stalled_kib < 100 * 1024, f"RSS while stalled {stalled_kib} KiB"
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
