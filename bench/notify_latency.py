#!/usr/bin/env python3
"""How much later a NOTIFY reaches a listener through pgwarden than directly (p50, p99).

A notifier connected directly sends ``NOTIFY <channel>, '<i>'`` (autocommit: delivered at
its commit) to one of two listeners in turn: one connected directly, listening on
``bench_direct``, one through a pass-through pgwarden (recording off, as in `run.py`),
listening on ``bench_pgwarden``. All three are raw protocol sockets served by one thread
with ``select``, so the timestamps are not skewed by client libraries or threads taking
turns: a notification's latency is the time from just before its NOTIFY is sent to its
arrival, on one clock. One notification at a time, alternating between the listeners (so
both see the same conditions); the first 100 warm up and are not counted. The figures to
read are the differences between the two listeners' percentiles.

    .venv/bin/python bench/notify_latency.py                 # 2000 notifications to each
    .venv/bin/python bench/notify_latency.py --count 5000
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402

from pgwarden.relay.handshake import UpstreamLogin  # noqa: E402
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER  # noqa: E402
from pgwarden.wire import messages as m  # noqa: E402
from pgwarden.wire.framing import NEED_DATA, MessageFramer  # noqa: E402

WARM_UP = 100


class Conn:
    """A logged-in protocol connection whose messages are read as they come."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self.framer = MessageFramer(1 << 20)
        self.framer.feed(leftover)

    def messages(self):
        """The messages that have arrived whole so far (reads once, without waiting)."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        self.framer.feed(chunk)
        while (raw := self.framer.next_frame()) is not NEED_DATA:
            yield m.decode_backend(raw)

    def query(self, sql: str) -> None:
        """Sends ``sql`` and waits for its ReadyForQuery."""
        self.sock.sendall(m.Query(sql).encode())
        self.until_ready()

    def until_ready(self) -> None:
        while True:
            while (raw := self.framer.next_frame()) is not NEED_DATA:
                if isinstance(m.decode_backend(raw), m.ReadyForQuery):
                    return
            self.framer.feed(self.sock.recv(65536))


def direct(pg) -> Conn:
    login = UpstreamLogin(APP_USER, bench.DATABASE, APP_PASSWORD)
    sock = socket.create_connection((pg.host, pg.port))
    sock.sendall(login.start())
    while not login.done:
        reply = login.receive(sock.recv(65536))
        if reply:
            sock.sendall(reply)
    return Conn(sock, login.leftover())


def through_pgwarden(port: int, token: str) -> Conn:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", bench.DATABASE))).encode())
    conn = Conn(sock)
    sock.recv(65536)  # AuthenticationCleartextPassword
    sock.sendall(m.PasswordMessage.cleartext(token).encode())
    conn.until_ready()
    return conn


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000)
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgwarden-notify-")))
        pg = bench.start_postgres(stack)
        jwks, token = bench.mint_bench_token(work)
        config = bench.write_pgwarden_config(pg, work, bench.PGWARDEN, bench.PASS_THROUGH_POLICY, jwks)
        _, port = bench.start_pgwarden(bench.PGWARDEN, config, work, stack)
        listeners = {"direct": direct(pg), "pgwarden": through_pgwarden(port, token)}
        for name, conn in listeners.items():
            conn.query(f"LISTEN bench_{name}")
        notifier = direct(pg)
        latencies: dict[str, list[float]] = {name: [] for name in listeners}
        for i in range(2 * (args.count + WARM_UP)):
            name = "direct" if i % 2 == 0 else "pgwarden"
            listener = listeners[name]
            sent = time.perf_counter()
            notifier.sock.sendall(m.Query(f"NOTIFY bench_{name}, '{i}'").encode())
            arrived = False
            while not arrived:
                if not select.select([listener.sock], [], [], 10)[0]:
                    raise SystemExit(f"notification {i} did not arrive at the {name} listener")
                at = time.perf_counter()
                arrived = any(isinstance(msg, m.NotificationResponse) and msg.payload == str(i)
                              for msg in list(listener.messages()))
            if i >= 2 * WARM_UP:
                latencies[name].append((at - sent) * 1e6)
            notifier.until_ready()
    print(f"{args.count} notifications to each listener, from NOTIFY sent to arrival (µs):")
    for name, values in latencies.items():
        print(f"  {name:9} p50 {percentile(values, 50):7.0f}  p99 {percentile(values, 99):7.0f}  "
              f"mean {statistics.fmean(values):7.0f}")
    d, p_ = latencies["direct"], latencies["pgwarden"]
    print(f"  added     p50 {percentile(p_, 50) - percentile(d, 50):7.0f}  "
          f"p99 {percentile(p_, 99) - percentile(d, 99):7.0f}")


if __name__ == "__main__":
    main()
