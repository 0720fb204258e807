"""`Reader`: the protocol primitives of a message body, for `pgwarden.wire.messages`' decoders.

A module of its own so that it runs compiled (`pgwarden.compiled`) where the messages cannot
(their attrs classes hold class constants mypyc would make fields): every decode the relay asks
for per statement (a Parse, a Bind, an Execute) reads through it, several calls each.
"""

from __future__ import annotations

import struct

from pgwarden.wire.errors import ProtocolError

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class Reader:
    """Reads protocol primitives from a message body; every overrun is a ProtocolError."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes | bytearray, what: str) -> None:  # (compiled, the type is checked)
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise ProtocolError(f"{self._what}: message is shorter than its contents")
        chunk = self._data[self._pos : end]
        self._pos = end
        return bytes(chunk)

    def int16(self) -> int:
        value: int = _I16.unpack(self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _I32.unpack(self._take(4))[0]
        return value

    def uint32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def byte(self) -> bytes:
        return self._take(1)

    def cstring(self) -> str:
        end = self._data.find(b"\0", self._pos)
        if end < 0:
            raise ProtocolError(f"{self._what}: unterminated string")
        raw = bytes(self._data[self._pos : end])
        self._pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolError(f"{self._what}: negative count")
        return n

    def value(self) -> bytes | None:
        n = self.int32()
        if n == -1:
            return None
        if n < -1:
            raise ProtocolError(f"{self._what}: negative length")
        return self._take(n)

    def rest(self) -> bytes:
        chunk = bytes(self._data[self._pos :])
        self._pos = len(self._data)
        return chunk

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(f"{self._what}: unexpected bytes after the message")


def parse_fields(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """A Parse message's body as (statement name, query text, parameter type OIDs), the whole
    body checked: `pgwarden.wire.messages.Parse.decode`'s, and the relay's on every extended
    statement, which needs only the types (no message object, no interpreted frame)."""
    r = Reader(body, "Parse")
    name, sql = r.cstring(), r.cstring()
    types = tuple([r.uint32() for _ in range(r.count())])
    r.end()
    return name, sql, types
