"""`Reader`: the protocol primitives of a message body, for `pgwarden.wire.messages`' decoders.

A module of its own so that it runs compiled (`pgwarden.compiled`) where the messages cannot
(their attrs classes hold class constants mypyc would make fields): every decode the relay asks
for per statement (a Parse, a Bind, an Execute) reads through it, several calls each.
"""

from __future__ import annotations

from typing import Final

from pgwarden.wire import scanning
from pgwarden.wire.errors import ProtocolError

#: ``bytes.find(b"\\0", pos)``, compiled by Cython (`pgwarden.wire.scanning`): kept where this
#: module's compiled code calls it without a lookup in the module's globals
_nul_at: Final = scanning.nul_at


class Reader:
    """Reads protocol primitives from a message body; every overrun is a ProtocolError.

    The body is held as ``bytes`` (a ``bytearray`` or ``memoryview`` is copied once): compiled,
    a slice, an indexed byte and a length of ``bytes`` are C operations, where the same on a
    value typed ``bytes | bytearray`` was a call through the generic API each, and the integers
    are assembled from their bytes rather than unpacked by a ``struct`` method call (~1,200
    instructions a call: a Parse and a Bind of an extended statement read a dozen).
    """

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self._data: bytes = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._what = what

    def _short(self) -> ProtocolError:
        return ProtocolError(f"{self._what}: message is shorter than its contents")

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self._short()
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def int16(self) -> int:
        data = self._data
        pos = self._pos
        if pos + 2 > len(data):
            raise self._short()
        self._pos = pos + 2
        value = (data[pos] << 8) | data[pos + 1]
        return value - 0x10000 if value & 0x8000 else value

    def uint32(self) -> int:
        data = self._data
        pos = self._pos
        if pos + 4 > len(data):
            raise self._short()
        self._pos = pos + 4
        return (data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]

    def int32(self) -> int:
        value = self.uint32()
        return value - 0x100000000 if value & 0x80000000 else value

    def byte(self) -> bytes:
        return self._take(1)

    def cbytes(self) -> bytes:
        """A NUL-terminated string's bytes, undecoded (the terminator read, not returned)."""
        data = self._data
        pos = self._pos
        if pos < len(data) and data[pos] == 0:  # an empty string (the unnamed statement, portal): no search
            self._pos = pos + 1
            return b""
        end: int = _nul_at(data, pos)
        if end < 0:
            raise ProtocolError(f"{self._what}: unterminated string")
        self._pos = end + 1
        return data[pos:end]

    def cstring(self) -> str:
        """A NUL-terminated string, UTF-8 (Latin-1 when it is not: every byte then reads as a character)."""
        return _text(self.cbytes())

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
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(f"{self._what}: unexpected bytes after the message")


def parse_parts(body: bytes) -> tuple[bytes, bytes, tuple[int, ...]]:
    """A Parse message's body as (statement name, query text, parameter type OIDs), the name and
    the text undecoded, the whole body checked: the relay's on every extended statement, which
    decodes them in the session's encoding (no message object, no interpreted frame)."""
    r = Reader(body, "Parse")
    name, sql = r.cbytes(), r.cbytes()
    types = tuple([r.uint32() for _ in range(r.count())])
    r.end()
    return name, sql, types


def parse_fields(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """`parse_parts` with the name and the text decoded as `Reader.cstring` decodes them:
    `pgwarden.wire.messages.Parse.decode`'s."""
    name, sql, types = parse_parts(body)
    return _text(name), _text(sql), types


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
