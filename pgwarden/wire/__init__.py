"""Sans-IO codec for the PostgreSQL frontend/backend protocol, version 3.

Bytes in, messages out; messages in, bytes out. Nothing here touches a socket or
imports Twisted (a test enforces it), so every byte-level rule can be tested
without a network and driven by any event loop.
"""

from pgwarden.wire.errors import LocalProtocolError, MessageTooLarge, ProtocolError
from pgwarden.wire.framing import NEED_DATA, MessageFramer, StartupFramer

__all__ = [
    "NEED_DATA",
    "LocalProtocolError",
    "MessageFramer",
    "MessageTooLarge",
    "ProtocolError",
    "StartupFramer",
]
