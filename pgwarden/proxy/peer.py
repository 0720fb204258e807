"""Naming the other end of a connection, for logs and records."""

from __future__ import annotations

from twisted.internet import address
from twisted.internet.interfaces import IConsumer, IPushProducer, ITLSTransport


class IRelayTransport(ITLSTransport, IPushProducer, IConsumer):
    """Either side's TCP connection as Twisted gives it: TLS can start on it, and it is the
    producer and the consumer of the other side's (back-pressure both ways)."""


def peer_text(peer: object) -> str:
    """``host:port`` (``[v6]:port``), or the socket path."""
    if isinstance(peer, address.UNIXAddress):
        return str(peer.name or "unix")
    host = getattr(peer, "host", "?")
    port = getattr(peer, "port", "?")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
