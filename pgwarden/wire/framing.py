"""Incremental framers: any split of the byte stream gives the same messages.

`StartupFramer` reads the untyped packets a client sends before authentication;
`MessageFramer` reads typed messages. Both buffer into a `bytearray`, refuse a
length prefix above their bound before allocating anything, and hand out whole
messages as raw bytes: decoding is left to whoever needs the fields.

A message of a *streamable* type (DataRow, CopyData when nothing needs to look
inside) may exceed the bound: once its header has arrived it is handed out as
`Fragment`s as bytes come in, so a gigabyte value passes with bounded memory.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from pgwarden.wire import scanning
from pgwarden.wire.errors import MessageTooLarge, ProtocolError
from pgwarden.wire.messages import CancelRequest, GSSENCRequest, SSLRequest, StartupMessage, decode_startup


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

_LEN = struct.Struct("!i")
_HEADER = struct.Struct("!Bi")



def int32_at(data: bytes, pos: int) -> int:
    """The signed big-endian int32 at ``data[pos:pos + 4]`` (the caller knows the bytes are there)."""
    value = (data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
    return value - 0x100000000 if value & 0x80000000 else value


def _type_table(valid_types: frozenset[int] | None) -> bytes:
    """256 bytes, the one at a type byte's value 1 when the type is in ``valid_types`` (every
    one when None), else 0."""
    if valid_types is None:
        return b"\x01" * 256
    table = bytearray(256)
    for t in valid_types:
        if 0 <= t < 256:
            table[t] = 1
    return bytes(table)


DEFAULT_MAX_MESSAGE: Final = 16 * 1024 * 1024
# Startup packets are tiny; PostgreSQL itself caps them at 10000 bytes.
MAX_STARTUP_PACKET: Final = 10000
# A streamable message longer than this is relayed in pieces as it arrives.
STREAM_THRESHOLD: Final = 256 * 1024
#: `pgwarden.wire.scanning.complete_messages` (compiled, kept where this module's compiled code
#: calls it without a lookup in the module's globals)
_complete_messages: Final = scanning.complete_messages


@attrs.frozen
class Fragment:
    """A piece of a large message relayed without buffering it whole.

    ``first`` is true for the piece that starts with the type byte and length;
    ``last`` for the piece that ends the message.
    """

    type: int
    data: bytes
    first: bool
    last: bool


class StartupFramer:
    """Frames untyped startup packets: a length word, then the body."""

    def __init__(self, max_size: int = MAX_STARTUP_PACKET) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | _NeedData:
        """The next decoded startup packet, or NEED_DATA."""
        buf = self._buf
        if len(buf) < 4:
            return NEED_DATA
        (length,) = _LEN.unpack_from(buf, 0)
        if length < 8 or length > self._max:
            raise ProtocolError(f"invalid startup packet length {length}")
        if len(buf) < length:
            return NEED_DATA
        body = bytes(buf[4:length])
        del buf[:length]
        return decode_startup(body)

    def take_rest(self) -> bytes:
        """Bytes received after the last packet (they belong to the next phase)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class MessageFramer:
    """Frames typed messages: type byte, int32 length (itself included), body."""

    __slots__ = ("_buf", "_max", "_need", "streamable", "_stream_left", "_stream_type", "valid_types", "run_type",
                 "_valid", "_plan")

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_MESSAGE,
        valid_types: frozenset[int] | None = None,
        run_type: int | None = None,
    ) -> None:
        self._buf = bytearray()
        self._max = max_size
        #: consecutive complete messages of this type are handed out as one
        #: bytes object (a run): a 10,000-row result costs a few objects, not 10,000.
        self.run_type = run_type
        #: type bytes (as ints) that may be handed out as Fragments when large.
        self.streamable: frozenset[int] = frozenset()
        #: when set, any other type byte is a ProtocolError as soon as it is seen.
        self.valid_types = valid_types
        # What `_scan` tests per message: a byte per type byte value (1: valid; every byte 1
        # without valid_types); with the run's type (-1: none, since a type byte is 0-255) and the
        # bound, the plan `complete_messages` is given. Made here: all are fixed at construction.
        self._valid = _type_table(valid_types)
        self._plan = scanning.plan(self._valid, max_size, -1 if run_type is None else run_type)
        self._stream_left = 0
        self._stream_type = 0
        self._need = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def frames(self) -> list[bytes | Fragment]:
        """Every complete message buffered so far (raw bytes), plus Fragments.

        Raises ProtocolError for a length that cannot be right or that exceeds
        the bound; nothing of the claimed size is allocated first.
        """
        buf = self._buf
        n = len(buf)
        if n < self._need:
            return []
        out: list[bytes | Fragment] = []
        pos = 0
        if self._stream_left:
            if not n:
                return []
            take = min(self._stream_left, n)
            self._stream_left -= take
            out.append(Fragment(self._stream_type, bytes(buf[:take]), False, self._stream_left == 0))
            pos = take
        # One copy of the buffer, then slices of immutable bytes: cheaper per
        # message than slicing the bytearray and converting each slice.
        pos, self._need = self._scan(bytes(buf), pos, out)
        if pos:
            del buf[:pos]
        return out

    @property
    def streaming(self) -> bool:
        """Whether a message is being handed on in parts (`Fragment`): the next bytes are its rest."""
        return self._stream_left > 0

    def take(self, data: bytes) -> list[bytes | Fragment]:
        """`feed` then `frames`, without copying ``data`` into the buffer when nothing waits there.

        The common case on a busy session: each read holds whole messages, so they are
        sliced straight out of what was read and only a trailing partial message is kept.
        """
        buf = self._buf
        out: list[bytes | Fragment] = []
        start = 0
        if buf or self._stream_left:
            cut = self._need - len(buf)
            if self._stream_left or cut <= 0 or len(data) < cut:
                buf += data
                return self.frames()
            # The buffered message (its header read and checked: `_need` is its length) ends within
            # ``data``: completed from ``data``'s first bytes, and the rest framed where it lies.
            # (Appending all of ``data`` to the buffer, then copying the buffer to frame it, copied
            # each read of a large result twice more: a read of a result nearly always ends inside
            # a row.)
            buf += data[:cut]
            whole = bytes(buf)
            buf.clear()
            self._scan(whole, 0, out)
            start = cut
        n = len(data)
        pos, need = self._scan(data, start, out) if n - start >= 5 else (start, 0)
        if pos < n:
            buf += data[pos:] if pos else data
        self._need = need
        return out

    def _scan(self, data: bytes, pos: int, out: list[bytes | Fragment]) -> tuple[int, int]:
        """Appends to ``out`` the messages of ``data[pos:]``; returns where it stopped and the
        buffered length the next message needs (0: unknown yet).

        The complete messages of valid types and lengths are `complete_messages`'s (compiled by
        Cython); each message where it stops is judged here."""
        valid = self._valid
        maximum = self._max
        n = len(data)
        need = 0
        while True:
            pos = _complete_messages(data, pos, out, self._plan)
            if n - pos < 5:
                break
            # Not a complete message of a valid type and length: which it is.
            t = data[pos]
            length = int32_at(data, pos + 1)
            end = pos + 1 + length
            if not valid[t]:
                raise ProtocolError(f"unknown message type {chr(t)!r}")
            if length < 4:
                raise ProtocolError(f"invalid message length {length} for type {chr(t)!r}")
            if t in self.streamable:
                if end <= n:  # complete, larger than the bound: relayed whole, as it is here
                    out.append(data[pos:end])
                    pos = end
                    continue
                if length > STREAM_THRESHOLD:
                    # Relay what has arrived; the rest follows as Fragments.
                    out.append(Fragment(t, data[pos:n], True, False))
                    self._stream_left = end - n
                    self._stream_type = t
                    pos = n
                    break
            elif length > maximum:
                raise MessageTooLarge(
                    f"message of type {chr(t)!r} claims {length} bytes, "
                    f"more than the limit of {maximum}"
                )
            need = end - pos
            break
        return pos, need

    def next_frame(self) -> bytes | _NeedData:
        """One complete message as raw bytes, or NEED_DATA (convenience for handshakes)."""
        buf = self._buf
        if len(buf) < 5:
            return NEED_DATA
        t, length = _HEADER.unpack_from(buf, 0)
        if self.valid_types is not None and t not in self.valid_types:
            raise ProtocolError(f"unknown message type {chr(t)!r}")
        if length < 4:
            raise ProtocolError(f"invalid message length {length} for type {chr(t)!r}")
        if length > self._max:
            raise MessageTooLarge(
                f"message of type {chr(t)!r} claims {length} bytes, more than the limit of {self._max}"
            )
        end = 1 + length
        if len(buf) < end:
            return NEED_DATA
        raw = bytes(buf[:end])
        del buf[:end]
        return raw

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def split_run(run: bytes) -> list[bytes]:
    """The messages of a run (see ``MessageFramer.run_type``), one bytes object each."""
    out = []
    pos = 0
    n = len(run)
    unpack_length = _LEN.unpack_from
    while pos < n:
        (length,) = unpack_length(run, pos + 1)
        out.append(run[pos : pos + 1 + length])
        pos += 1 + length
    return out
