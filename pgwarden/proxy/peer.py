"""Naming the other end of a connection, for logs and records."""

from __future__ import annotations

from twisted.internet import address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IListeningPort, IPushProducer, ITLSTransport


class IRelayTransport(ITLSTransport, IPushProducer, IConsumer):
    """Either side's TCP connection as Twisted gives it: TLS can start on it, and it is the
    producer and the consumer of the other side's (back-pressure both ways)."""


def port_number(listening: IListeningPort) -> int:
    """The TCP port ``listening`` listens on."""
    address = listening.getHost()
    if not isinstance(address, IPv4Address | IPv6Address):
        raise TypeError(f"not listening on TCP: {address}")
    return address.port


def peer_text(peer: object) -> str:
    """``host:port`` (``[v6]:port``), or the socket path."""
    if isinstance(peer, address.UNIXAddress):
        return str(peer.name or "unix")
    host = getattr(peer, "host", "?")
    port = getattr(peer, "port", "?")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
