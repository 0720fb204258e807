"""Every protocol 3.0 message as a small attrs class, with its decoder and encoder.

Frontend and backend messages live in separate registries because the same type
byte means different things in each direction ('D' is Describe from the client
and DataRow from the server). Startup packets carry no type byte and are decoded
by `decode_startup`.

Each class has ``TYPE`` (the type byte), ``decode(body)`` (the bytes after the
length word) and ``encode()`` (the whole message, type byte and length included).
The relay keeps hot messages (DataRow, CopyData) as raw bytes and only calls
these when it needs a field.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from typing import ClassVar, Protocol, Self

import attrs

from pgwarden.wire.errors import LocalProtocolError, ProtocolError
from pgwarden.wire.reader import Reader, parse_fields

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HEADER = struct.Struct("!ci")

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class Writer:
    """Builds a message body; `frame` prepends the type byte and length."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def int16(self, v: int) -> Writer:
        try:
            self._parts.append(_I16.pack(v))
        except struct.error as e:
            raise LocalProtocolError(f"int16 out of range: {v}") from e
        return self

    def int32(self, v: int) -> Writer:
        try:
            self._parts.append(_I32.pack(v))
        except struct.error as e:
            raise LocalProtocolError(f"int32 out of range: {v}") from e
        return self

    def uint32(self, v: int) -> Writer:
        try:
            self._parts.append(_U32.pack(v))
        except struct.error as e:
            raise LocalProtocolError(f"uint32 out of range: {v}") from e
        return self

    def raw(self, b: bytes) -> Writer:
        self._parts.append(bytes(b))
        return self

    def byte(self, v: int) -> Writer:
        if not 0 <= v <= 255:
            raise LocalProtocolError(f"byte out of range: {v}")
        self._parts.append(bytes((v,)))
        return self

    def code(self, c: str, allowed: str | None = None) -> Writer:
        """A one-character code (a field code, a Describe target, a status)."""
        if len(c) != 1 or c == "\0" or ord(c) > 255 or (allowed is not None and c not in allowed):
            raise LocalProtocolError(f"invalid one-character code {c!r}"
                                     + (f" (expected one of {allowed})" if allowed else ""))
        self._parts.append(c.encode("latin-1"))
        return self

    def cstring(self, s: str) -> Writer:
        try:
            b = s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LocalProtocolError(f"a protocol string must be encodable: {e}") from None
        if b"\0" in b:
            raise LocalProtocolError("a protocol string cannot contain NUL")
        self._parts.append(b + b"\0")
        return self

    def value(self, v: bytes | None) -> Writer:
        if v is None:
            return self.int32(-1)
        return self.int32(len(v)).raw(v)

    def body(self) -> bytes:
        return b"".join(self._parts)

    def frame(self, type_byte: bytes) -> bytes:
        body = self.body()
        return type_byte + _I32.pack(len(body) + 4) + body


def frame(type_byte: bytes, body: bytes = b"") -> bytes:
    """Wraps a body into a typed message."""
    return type_byte + _I32.pack(len(body) + 4) + body


class _Empty:
    """A message that has no fields: its type byte and length say everything."""

    __slots__ = ()
    TYPE: ClassVar[bytes]

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if body:
            raise ProtocolError(f"{cls.__name__}: unexpected bytes in an empty message")
        return cls()

    def encode(self) -> bytes:
        return frame(self.TYPE)


# --------------------------------------------------------------------------- frontend


@attrs.frozen
class Query:
    TYPE: ClassVar[bytes] = b"Q"
    sql: str

    @classmethod
    def decode(cls, body: bytes) -> Query:
        r = Reader(body, "Query")
        q = cls(r.cstring())
        r.end()
        return q

    def encode(self) -> bytes:
        return Writer().cstring(self.sql).frame(self.TYPE)


@attrs.frozen
class Parse:
    TYPE: ClassVar[bytes] = b"P"
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    @classmethod
    def decode(cls, body: bytes) -> Parse:
        return cls(*parse_fields(body))

    def encode(self) -> bytes:
        w = Writer().cstring(self.name).cstring(self.sql).int16(len(self.param_types))
        for t in self.param_types:
            w.uint32(t)
        return w.frame(self.TYPE)


@attrs.frozen
class Bind:
    TYPE: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    @classmethod
    def decode(cls, body: bytes) -> Bind:
        r = Reader(body, "Bind")
        portal, statement = r.cstring(), r.cstring()
        pf = tuple(r.int16() for _ in range(r.count()))
        params = tuple(r.value() for _ in range(r.count()))
        rf = tuple(r.int16() for _ in range(r.count()))
        r.end()
        return cls(portal, statement, pf, params, rf)

    def encode(self) -> bytes:
        w = Writer().cstring(self.portal).cstring(self.statement)
        w.int16(len(self.param_formats))
        for f in self.param_formats:
            w.int16(f)
        w.int16(len(self.params))
        for p in self.params:
            w.value(p)
        w.int16(len(self.result_formats))
        for f in self.result_formats:
            w.int16(f)
        return w.frame(self.TYPE)


def _target(r: Reader, what: str) -> str:
    kind = r.byte()
    if kind not in (b"S", b"P"):
        raise ProtocolError(f"{what}: target must be 'S' or 'P', not {kind!r}")
    return kind.decode()


@attrs.frozen
class Describe:
    TYPE: ClassVar[bytes] = b"D"
    kind: str  # "S" statement or "P" portal
    name: str

    @classmethod
    def decode(cls, body: bytes) -> Describe:
        r = Reader(body, "Describe")
        d = cls(_target(r, "Describe"), r.cstring())
        r.end()
        return d

    def encode(self) -> bytes:
        return Writer().code(self.kind, "SP").cstring(self.name).frame(self.TYPE)


@attrs.frozen
class Close:
    TYPE: ClassVar[bytes] = b"C"
    kind: str
    name: str

    @classmethod
    def decode(cls, body: bytes) -> Close:
        r = Reader(body, "Close")
        c = cls(_target(r, "Close"), r.cstring())
        r.end()
        return c

    def encode(self) -> bytes:
        return Writer().code(self.kind, "SP").cstring(self.name).frame(self.TYPE)


@attrs.frozen
class Execute:
    TYPE: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0

    @classmethod
    def decode(cls, body: bytes) -> Execute:
        r = Reader(body, "Execute")
        e = cls(r.cstring(), r.int32())
        r.end()
        return e

    def encode(self) -> bytes:
        return Writer().cstring(self.portal).int32(self.max_rows).frame(self.TYPE)


@attrs.frozen
class Flush(_Empty):
    TYPE: ClassVar[bytes] = b"H"


@attrs.frozen
class Sync(_Empty):
    TYPE: ClassVar[bytes] = b"S"


@attrs.frozen
class Terminate(_Empty):
    TYPE: ClassVar[bytes] = b"X"


@attrs.frozen
class CopyData:
    TYPE: ClassVar[bytes] = b"d"
    data: bytes

    @classmethod
    def decode(cls, body: bytes) -> CopyData:
        return cls(bytes(body))

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)


@attrs.frozen
class CopyDone(_Empty):
    TYPE: ClassVar[bytes] = b"c"


@attrs.frozen
class CopyFail:
    TYPE: ClassVar[bytes] = b"f"
    message: str

    @classmethod
    def decode(cls, body: bytes) -> CopyFail:
        r = Reader(body, "CopyFail")
        m = cls(r.cstring())
        r.end()
        return m

    def encode(self) -> bytes:
        return Writer().cstring(self.message).frame(self.TYPE)


@attrs.frozen
class FunctionCall:
    TYPE: ClassVar[bytes] = b"F"
    function_oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0

    @classmethod
    def decode(cls, body: bytes) -> FunctionCall:
        r = Reader(body, "FunctionCall")
        oid = r.uint32()
        af = tuple(r.int16() for _ in range(r.count()))
        args = tuple(r.value() for _ in range(r.count()))
        rf = r.int16()
        r.end()
        return cls(oid, af, args, rf)

    def encode(self) -> bytes:
        w = Writer().uint32(self.function_oid).int16(len(self.arg_formats))
        for f in self.arg_formats:
            w.int16(f)
        w.int16(len(self.args))
        for a in self.args:
            w.value(a)
        return w.int16(self.result_format).frame(self.TYPE)


@attrs.frozen
class PasswordMessage:
    """'p': a password, or a SASL/GSS token; what it holds depends on the auth exchange."""

    TYPE: ClassVar[bytes] = b"p"
    data: bytes

    @classmethod
    def decode(cls, body: bytes) -> PasswordMessage:
        return cls(bytes(body))

    def encode(self) -> bytes:
        return frame(self.TYPE, self.data)

    def password(self) -> str:
        r = Reader(self.data, "PasswordMessage")
        pw = r.cstring()
        r.end()
        return pw

    @classmethod
    def cleartext(cls, password: str) -> PasswordMessage:
        return cls(Writer().cstring(password).body())

    @classmethod
    def sasl_initial(cls, mechanism: str, data: bytes) -> PasswordMessage:
        return cls(Writer().cstring(mechanism).value(data).body())


# --------------------------------------------------------------------------- backend


@attrs.frozen
class Authentication:
    """'R': one class for every authentication request; ``code`` tells which."""

    TYPE: ClassVar[bytes] = b"R"
    OK: ClassVar[int] = 0
    CLEARTEXT: ClassVar[int] = 3
    MD5: ClassVar[int] = 5
    SASL: ClassVar[int] = 10
    SASL_CONTINUE: ClassVar[int] = 11
    SASL_FINAL: ClassVar[int] = 12
    code: int
    data: bytes = b""

    @classmethod
    def decode(cls, body: bytes) -> Authentication:
        r = Reader(body, "Authentication")
        return cls(r.int32(), r.rest())

    def encode(self) -> bytes:
        return Writer().int32(self.code).raw(self.data).frame(self.TYPE)

    def sasl_mechanisms(self) -> list[str]:
        r = Reader(self.data, "AuthenticationSASL")
        names = []
        while (name := r.cstring()) != "":
            names.append(name)
        return names


@attrs.frozen
class BackendKeyData:
    TYPE: ClassVar[bytes] = b"K"
    process_id: int
    secret_key: int

    @classmethod
    def decode(cls, body: bytes) -> BackendKeyData:
        r = Reader(body, "BackendKeyData")
        k = cls(r.int32(), r.uint32())
        r.end()
        return k

    def encode(self) -> bytes:
        return Writer().int32(self.process_id).uint32(self.secret_key).frame(self.TYPE)


@attrs.frozen
class ParseComplete(_Empty):
    TYPE: ClassVar[bytes] = b"1"


@attrs.frozen
class BindComplete(_Empty):
    TYPE: ClassVar[bytes] = b"2"


@attrs.frozen
class CloseComplete(_Empty):
    TYPE: ClassVar[bytes] = b"3"


@attrs.frozen
class NoData(_Empty):
    TYPE: ClassVar[bytes] = b"n"


@attrs.frozen
class EmptyQueryResponse(_Empty):
    TYPE: ClassVar[bytes] = b"I"


@attrs.frozen
class PortalSuspended(_Empty):
    TYPE: ClassVar[bytes] = b"s"


@attrs.frozen
class CommandComplete:
    TYPE: ClassVar[bytes] = b"C"
    tag: str

    @classmethod
    def decode(cls, body: bytes) -> CommandComplete:
        r = Reader(body, "CommandComplete")
        c = cls(r.cstring())
        r.end()
        return c

    def encode(self) -> bytes:
        return Writer().cstring(self.tag).frame(self.TYPE)


@attrs.frozen
class _CopyResponse:
    TYPE: ClassVar[bytes] = b"?"
    format: int
    column_formats: tuple[int, ...] = ()

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body, cls.__name__)
        fmt = r.byte()[0]
        cols = tuple(r.int16() for _ in range(r.count()))
        r.end()
        return cls(fmt, cols)

    def encode(self) -> bytes:
        w = Writer().byte(self.format).int16(len(self.column_formats))
        for f in self.column_formats:
            w.int16(f)
        return w.frame(self.TYPE)


@attrs.frozen
class CopyInResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"G"


@attrs.frozen
class CopyOutResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"H"


@attrs.frozen
class CopyBothResponse(_CopyResponse):
    TYPE: ClassVar[bytes] = b"W"


@attrs.frozen
class DataRow:
    TYPE: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    @classmethod
    def decode(cls, body: bytes) -> DataRow:
        r = Reader(body, "DataRow")
        row = cls(tuple(r.value() for _ in range(r.count())))
        r.end()
        return row

    def encode(self) -> bytes:
        w = Writer().int16(len(self.values))
        for v in self.values:
            w.value(v)
        return w.frame(self.TYPE)


@attrs.frozen
class _FieldsMessage:
    TYPE: ClassVar[bytes] = b"?"
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body, cls.__name__)
        fields = []
        while (code := r.byte()) != b"\0":
            fields.append((code.decode("latin-1"), r.cstring()))
        r.end()
        return cls(tuple(fields))

    def encode(self) -> bytes:
        w = Writer()
        for code, value in self.fields:
            w.code(code).cstring(value)
        return w.raw(b"\0").frame(self.TYPE)

    def get(self, code: str, default: str | None = None) -> str | None:
        for c, v in self.fields:
            if c == code:
                return v
        return default

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str | None:
        return self.get("M")

    @classmethod
    def build(
        cls,
        severity: str,
        sqlstate: str,
        message: str,
        detail: str | None = None,
        hint: str | None = None,
    ) -> Self:
        fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if detail:
            fields.append(("D", detail))
        if hint:
            fields.append(("H", hint))
        return cls(tuple(fields))

    def without(self, codes: str) -> Self:
        return type(self)(tuple(f for f in self.fields if f[0] not in codes))


@attrs.frozen
class ErrorResponse(_FieldsMessage):
    TYPE: ClassVar[bytes] = b"E"


@attrs.frozen
class NoticeResponse(_FieldsMessage):
    TYPE: ClassVar[bytes] = b"N"


@attrs.frozen
class FunctionCallResponse:
    TYPE: ClassVar[bytes] = b"V"
    result: bytes | None

    @classmethod
    def decode(cls, body: bytes) -> FunctionCallResponse:
        r = Reader(body, "FunctionCallResponse")
        m = cls(r.value())
        r.end()
        return m

    def encode(self) -> bytes:
        return Writer().value(self.result).frame(self.TYPE)


@attrs.frozen
class NegotiateProtocolVersion:
    TYPE: ClassVar[bytes] = b"v"
    newest_minor: int
    unrecognized: tuple[str, ...] = ()

    @classmethod
    def decode(cls, body: bytes) -> NegotiateProtocolVersion:
        r = Reader(body, "NegotiateProtocolVersion")
        minor = r.int32()
        n = r.int32()
        if n < 0:
            raise ProtocolError("NegotiateProtocolVersion: negative count")
        names = tuple(r.cstring() for _ in range(n))
        r.end()
        return cls(minor, names)

    def encode(self) -> bytes:
        w = Writer().int32(self.newest_minor).int32(len(self.unrecognized))
        for n in self.unrecognized:
            w.cstring(n)
        return w.frame(self.TYPE)


@attrs.frozen
class NotificationResponse:
    TYPE: ClassVar[bytes] = b"A"
    process_id: int
    channel: str
    payload: str

    @classmethod
    def decode(cls, body: bytes) -> NotificationResponse:
        r = Reader(body, "NotificationResponse")
        m = cls(r.int32(), r.cstring(), r.cstring())
        r.end()
        return m

    def encode(self) -> bytes:
        return (
            Writer().int32(self.process_id).cstring(self.channel).cstring(self.payload)
        ).frame(self.TYPE)


@attrs.frozen
class ParameterDescription:
    TYPE: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    @classmethod
    def decode(cls, body: bytes) -> ParameterDescription:
        r = Reader(body, "ParameterDescription")
        m = cls(tuple(r.uint32() for _ in range(r.count())))
        r.end()
        return m

    def encode(self) -> bytes:
        w = Writer().int16(len(self.type_oids))
        for t in self.type_oids:
            w.uint32(t)
        return w.frame(self.TYPE)


@attrs.frozen
class ParameterStatus:
    TYPE: ClassVar[bytes] = b"S"
    name: str
    value: str

    @classmethod
    def decode(cls, body: bytes) -> ParameterStatus:
        r = Reader(body, "ParameterStatus")
        m = cls(r.cstring(), r.cstring())
        r.end()
        return m

    def encode(self) -> bytes:
        return Writer().cstring(self.name).cstring(self.value).frame(self.TYPE)


@attrs.frozen
class ReadyForQuery:
    TYPE: ClassVar[bytes] = b"Z"
    status: str  # I idle, T in transaction, E failed transaction

    @classmethod
    def decode(cls, body: bytes) -> ReadyForQuery:
        r = Reader(body, "ReadyForQuery")
        status = r.byte().decode("latin-1")
        r.end()
        if status not in ("I", "T", "E"):
            raise ProtocolError(f"ReadyForQuery: unknown transaction status {status!r}")
        return cls(status)

    def encode(self) -> bytes:
        return Writer().code(self.status, "ITE").frame(self.TYPE)


@attrs.frozen
class Column:
    """One field of a RowDescription: where the value comes from and how it is encoded."""

    name: str
    table_oid: int = 0
    attnum: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


@attrs.frozen
class RowDescription:
    TYPE: ClassVar[bytes] = b"T"
    columns: tuple[Column, ...]

    @classmethod
    def decode(cls, body: bytes) -> RowDescription:
        r = Reader(body, "RowDescription")
        cols = tuple(
            Column(r.cstring(), r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(), r.int16())
            for _ in range(r.count())
        )
        r.end()
        return cls(cols)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def shared(body: bytes) -> RowDescription:
        """`decode`, memoised by the bytes: a session's statements mostly come back in a few
        shapes, so each result's shape (masking asks for every one) costs a lookup, not a decode
        of every column. Safe to share: a RowDescription is frozen, its columns a tuple of
        frozen Columns; a body that does not decode raises every time (errors are not kept)."""
        return RowDescription.decode(body)

    def encode(self) -> bytes:
        w = Writer().int16(len(self.columns))
        for c in self.columns:
            w.cstring(c.name).uint32(c.table_oid).int16(c.attnum).uint32(c.type_oid)
            w.int16(c.type_size).int32(c.type_modifier).int16(c.format)
        return w.frame(self.TYPE)

    def with_formats(self, formats: tuple[int, ...]) -> RowDescription:
        """The shape a portal really returns, given the result format codes of its Bind."""
        n = len(self.columns)
        if not formats:
            fmts = (0,) * n
        elif len(formats) == 1:
            fmts = formats * n
        else:
            fmts = formats[:n] + (0,) * max(0, n - len(formats))
        return RowDescription(tuple(attrs.evolve(c, format=f) for c, f in zip(self.columns, fmts)))


# --------------------------------------------------------------------------- startup


@attrs.frozen
class StartupMessage:
    version: int
    parameters: tuple[tuple[str, str], ...]

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF

    def get(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.parameters:
            if k == name:
                return v
        return default

    def encode(self) -> bytes:
        w = Writer().int32(self.version)
        for k, v in self.parameters:
            w.cstring(k).cstring(v)
        body = w.raw(b"\0").body()
        return _I32.pack(len(body) + 4) + body


@attrs.frozen
class SSLRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


@attrs.frozen
class GSSENCRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)


@attrs.frozen
class CancelRequest:
    process_id: int
    secret_key: int

    def encode(self) -> bytes:
        body = Writer().int32(CANCEL_REQUEST_CODE).int32(self.process_id).uint32(self.secret_key).body()
        return _I32.pack(len(body) + 4) + body


def decode_startup(body: bytes) -> SSLRequest | GSSENCRequest | CancelRequest | StartupMessage:
    """Decodes an untyped startup packet (the bytes after its length word)."""
    r = Reader(body, "startup packet")
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        m = CancelRequest(r.int32(), r.uint32())
        r.end()
        return m
    if code >> 16 != 3:
        raise ProtocolError(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "pgwarden speaks protocol 3"
        )
    params = []
    while (name := r.cstring()) != "":
        params.append((name, r.cstring()))
    r.end()
    return StartupMessage(code, tuple(params))


class MessageClass(Protocol):
    """What a registry holds: a message class, which decodes a body into its message."""

    def decode(self, body: bytes) -> object: ...


FRONTEND: dict[bytes, MessageClass] = {
    cls.TYPE: cls
    for cls in (
        Bind,
        Close,
        CopyData,
        CopyDone,
        CopyFail,
        Describe,
        Execute,
        Flush,
        FunctionCall,
        Parse,
        PasswordMessage,
        Query,
        Sync,
        Terminate,
    )
}

BACKEND: dict[bytes, MessageClass] = {
    cls.TYPE: cls
    for cls in (
        Authentication,
        BackendKeyData,
        BindComplete,
        CloseComplete,
        CommandComplete,
        CopyData,
        CopyDone,
        CopyInResponse,
        CopyOutResponse,
        CopyBothResponse,
        DataRow,
        EmptyQueryResponse,
        ErrorResponse,
        FunctionCallResponse,
        NegotiateProtocolVersion,
        NoData,
        NoticeResponse,
        NotificationResponse,
        ParameterDescription,
        ParameterStatus,
        ParseComplete,
        PortalSuspended,
        ReadyForQuery,
        RowDescription,
    )
}


def decode(registry: Mapping[bytes, MessageClass], type_byte: bytes, body: bytes) -> object:
    """Decodes one message body with the class its type byte names in ``registry``."""
    cls = registry.get(type_byte)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_byte!r}")
    return cls.decode(body)


def decode_frontend(raw: bytes) -> object:
    """Decodes one whole frontend message (type byte and length included)."""
    return decode(FRONTEND, raw[:1], raw[5:])


def decode_backend(raw: bytes) -> object:
    """Decodes one whole backend message (type byte and length included)."""
    return decode(BACKEND, raw[:1], raw[5:])
