#!/usr/bin/env python3
"""A bare TCP forwarder on pgwarden's own reactor: what a Python proxy costs before it does anything.

Why: pgwarden's targets are ratios to PostgreSQL reached directly. To know how
much of the gap is pgwarden's work (framing, the relay, decisions, records)
and how much is being a proxy in CPython on Twisted at all (two more sockets
per session, the event loop, the system calls), this forwards bytes between
client and server without reading them: no protocol, no parsing, no policy.
It uses the reactor `pgwarden run` installs (`pgwarden.proxy.reactor`) and
pgwarden's turn batching (`pgwarden.turns`: sends at the end of each poll
iteration), so the only difference from pass-through pgwarden is the work
pgwarden does on the bytes.

    python bench/forwarder.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT [--ready-file F] [--reuseport]

With ``--reuseport`` several forwarders can listen on one port (SO_REUSEPORT: the
kernel spreads connections over them), to see whether a second process, and so
a second core, raises the ceiling.

`bench/ceiling.py` runs pgbench directly, through this and through pgwarden
in alternating rounds and prints the ratios.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgwarden.proxy.reactor import install  # noqa: E402

reactor = install()

from pgwarden.turns import Turns  # noqa: E402

turns = Turns(reactor)

from twisted.internet.protocol import ClientFactory, Factory, Protocol  # noqa: E402


class _Upstream(Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        turns.send(self.client.transport, [data])

    def connectionLost(self, reason=None) -> None:
        self.client.transport.loseConnection()


class _Client(Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.upstream: _Upstream | None = None
        self.early: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        factory = ClientFactory()
        factory.noisy = False
        factory.buildProtocol = lambda addr: _Upstream(self)
        reactor.connectTCP(self.host, self.port, factory)

    def upstream_ready(self, upstream: _Upstream) -> None:
        upstream.transport.setTcpNoDelay(True)
        self.upstream = upstream
        if self.early:
            turns.send(upstream.transport, self.early)
            self.early = []

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            turns.send(self.upstream.transport, [data])

    def connectionLost(self, reason=None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("upstream_host")
    p.add_argument("upstream_port", type=int)
    p.add_argument("--ready-file")
    p.add_argument("--reuseport", action="store_true", help="listen with SO_REUSEPORT")
    args = p.parse_args()
    factory = Factory()
    factory.noisy = False
    factory.buildProtocol = lambda addr: _Client(args.upstream_host, args.upstream_port)
    if args.reuseport:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(128)
        sock.setblocking(False)
        listening = reactor.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)
        sock.close()  # the reactor holds its own duplicate
    else:
        listening = reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    if args.ready_file:
        Path(args.ready_file).write_text(str(listening.getHost().port))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
