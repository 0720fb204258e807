"""Naming the other end of a connection, for logs and records."""

from __future__ import annotations

from twisted.internet import address


def peer_text(peer) -> str:
    """``host:port`` (``[v6]:port``), or the socket path."""
    if isinstance(peer, address.UNIXAddress):
        return str(peer.name or "unix")
    host = getattr(peer, "host", "?")
    return f"[{host}]:{peer.port}" if ":" in host else f"{host}:{peer.port}"
