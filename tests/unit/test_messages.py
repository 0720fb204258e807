"""Message codec: round trips, hand-written vectors from the protocol docs, decoder fuzzing.

Property tests carry "property" or "fuzz" in their names so that
``make fuzz`` (``-k "property or fuzz"``, profile ``deep``) picks them up.
"""

from __future__ import annotations

import inspect
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.testing.matrix import examples
from pgwarden.wire import messages as m
from pgwarden.wire.errors import LocalProtocolError, ProtocolError

# Tests parametrized over ~40 classes run a quarter of the profile's examples
# per class, to keep the default run short; ``deep`` still gives each 1250.
PER_CLASS = settings(max_examples=max(10, settings().max_examples // 4))

# --------------------------------------------------------------------------- strategies

INT16 = st.integers(-(2**15), 2**15 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
# Any text the codec can carry: no NUL (strings are NUL-terminated), no lone surrogates.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=16)
BLOB = st.binary(max_size=48)
VALUE = st.none() | BLOB  # a length-prefixed value; None is SQL NULL (length -1)
TARGET = st.sampled_from("SP")  # Describe / Close: statement or portal
FIELD_CODE = st.characters(min_codepoint=1, max_codepoint=127)  # single non-NUL ASCII
FORMAT8 = st.integers(0, 255)  # the Int8 overall format of Copy*Response


def tuples(elements, max_size=6):
    return st.lists(elements, max_size=max_size).map(tuple)


def _copy_response(cls):
    return st.builds(cls, FORMAT8, tuples(INT16))


def _fields(cls):
    return st.builds(cls, tuples(st.tuples(FIELD_CODE, TEXT), max_size=8))


COLUMN = st.builds(m.Column, TEXT, UINT32, INT16, UINT32, INT16, INT32, INT16)

STRATEGIES: dict[type, st.SearchStrategy] = {
    # frontend
    m.Bind: st.builds(m.Bind, TEXT, TEXT, tuples(INT16), tuples(VALUE), tuples(INT16)),
    m.Close: st.builds(m.Close, TARGET, TEXT),
    m.CopyData: st.builds(m.CopyData, BLOB),
    m.CopyDone: st.just(m.CopyDone()),
    m.CopyFail: st.builds(m.CopyFail, TEXT),
    m.Describe: st.builds(m.Describe, TARGET, TEXT),
    m.Execute: st.builds(m.Execute, TEXT, INT32),
    m.Flush: st.just(m.Flush()),
    m.FunctionCall: st.builds(m.FunctionCall, UINT32, tuples(INT16), tuples(VALUE), INT16),
    m.Parse: st.builds(m.Parse, TEXT, TEXT, tuples(UINT32)),
    m.PasswordMessage: st.builds(m.PasswordMessage, BLOB),
    m.Query: st.builds(m.Query, TEXT),
    m.Sync: st.just(m.Sync()),
    m.Terminate: st.just(m.Terminate()),
    # backend
    m.Authentication: st.builds(m.Authentication, INT32, BLOB),
    m.BackendKeyData: st.builds(m.BackendKeyData, INT32, UINT32),
    m.BindComplete: st.just(m.BindComplete()),
    m.CloseComplete: st.just(m.CloseComplete()),
    m.CommandComplete: st.builds(m.CommandComplete, TEXT),
    m.CopyInResponse: _copy_response(m.CopyInResponse),
    m.CopyOutResponse: _copy_response(m.CopyOutResponse),
    m.CopyBothResponse: _copy_response(m.CopyBothResponse),
    m.DataRow: st.builds(m.DataRow, tuples(VALUE)),
    m.EmptyQueryResponse: st.just(m.EmptyQueryResponse()),
    m.ErrorResponse: _fields(m.ErrorResponse),
    m.NoticeResponse: _fields(m.NoticeResponse),
    m.FunctionCallResponse: st.builds(m.FunctionCallResponse, VALUE),
    m.NegotiateProtocolVersion: st.builds(m.NegotiateProtocolVersion, INT32, tuples(TEXT)),
    m.NoData: st.just(m.NoData()),
    m.NotificationResponse: st.builds(m.NotificationResponse, INT32, TEXT, TEXT),
    m.ParameterDescription: st.builds(m.ParameterDescription, tuples(UINT32)),
    m.ParameterStatus: st.builds(m.ParameterStatus, TEXT, TEXT),
    m.ParseComplete: st.just(m.ParseComplete()),
    m.PortalSuspended: st.just(m.PortalSuspended()),
    m.ReadyForQuery: st.builds(m.ReadyForQuery, st.sampled_from("ITE")),
    m.RowDescription: st.builds(m.RowDescription, tuples(COLUMN, max_size=4)),
}

STARTUP_STRATEGIES: dict[type, st.SearchStrategy] = {
    m.StartupMessage: st.builds(
        m.StartupMessage,
        st.integers(0, 0xFFFF).map(lambda minor: m.PROTOCOL_3_0 | minor),
        # An empty name would read as the list terminator, so names are non-empty.
        tuples(st.tuples(NAME, TEXT), max_size=5),
    ),
    m.SSLRequest: st.just(m.SSLRequest()),
    m.GSSENCRequest: st.just(m.GSSENCRequest()),
    m.CancelRequest: st.builds(m.CancelRequest, INT32, UINT32),
}

REGISTRIES = {"frontend": m.FRONTEND, "backend": m.BACKEND}
REGISTERED = [
    pytest.param(direction, cls, id=f"{direction}-{cls.__name__}")
    for direction, registry in REGISTRIES.items()
    for cls in registry.values()
]
ALL_TYPED = sorted({cls for reg in REGISTRIES.values() for cls in reg.values()}, key=lambda c: c.__name__)


# --------------------------------------------------------------------------- coverage of the strategies


def test_every_registered_class_has_a_strategy():
    missing = sorted(c.__name__ for c in ALL_TYPED if c not in STRATEGIES)
    assert not missing, f"message classes without a hypothesis strategy: {missing}"


def test_every_message_class_of_the_module_is_registered():
    """A public message class (one with a one-byte TYPE) left out of both registries is a bug."""
    registered = set(ALL_TYPED)
    declared = {
        cls
        for name, cls in vars(m).items()
        if inspect.isclass(cls)
        and not name.startswith("_")
        and cls.__module__ == m.__name__
        and isinstance(getattr(cls, "TYPE", None), bytes)
        and len(cls.TYPE) == 1
    }
    assert declared, "found no message class at all"
    assert sorted(c.__name__ for c in declared - registered) == []


def test_registry_keys_are_the_class_type_bytes():
    for registry in REGISTRIES.values():
        for key, cls in registry.items():
            assert key == cls.TYPE


# --------------------------------------------------------------------------- round trips


def _check_header(cls, raw: bytes) -> None:
    assert raw[:1] == cls.TYPE
    (length,) = struct.unpack("!i", raw[1:5])
    assert length == len(raw) - 1, "the length word counts itself and the body, not the type byte"


@pytest.mark.parametrize(("direction", "cls"), REGISTERED)
@PER_CLASS
@given(data=st.data())
def test_roundtrip_property(direction, cls, data):
    msg = data.draw(STRATEGIES[cls])
    raw = msg.encode()
    assert isinstance(raw, bytes)
    _check_header(cls, raw)
    decoded = m.decode(REGISTRIES[direction], raw[:1], raw[5:])
    assert type(decoded) is cls
    assert decoded == msg
    # Encoding is deterministic: the decoded message re-encodes to the same bytes.
    assert decoded.encode() == raw


@pytest.mark.parametrize("cls", list(STARTUP_STRATEGIES), ids=lambda c: c.__name__)
@PER_CLASS
@given(data=st.data())
def test_startup_roundtrip_property(cls, data):
    msg = data.draw(STARTUP_STRATEGIES[cls])
    raw = msg.encode()
    (length,) = struct.unpack("!i", raw[:4])
    assert length == len(raw)
    decoded = m.decode_startup(raw[4:])
    assert type(decoded) is cls
    assert decoded == msg


@given(st.sampled_from(ALL_TYPED).flatmap(lambda cls: STRATEGIES[cls]))
def test_decode_frontend_and_backend_helpers_property(msg):
    raw = msg.encode()
    if msg.TYPE in m.FRONTEND and type(msg) is m.FRONTEND[msg.TYPE]:
        assert m.decode_frontend(raw) == msg
    if msg.TYPE in m.BACKEND and type(msg) is m.BACKEND[msg.TYPE]:
        assert m.decode_backend(raw) == msg


# --------------------------------------------------------------------------- byte-exact vectors
#
# Written by hand from "Message Formats" in the PostgreSQL documentation
# (protocol-message-formats.html): Byte1 type, Int32 length counting itself but
# not the type byte, then the body; strings are NUL-terminated; integers are
# big-endian; a value is Int32 length (-1 for NULL) then the bytes.

TYPED_VECTORS = [
    ("frontend", m.Query("select 1"), b"Q\x00\x00\x00\x0dselect 1\x00"),
    ("frontend", m.Sync(), b"S\x00\x00\x00\x04"),
    ("frontend", m.Flush(), b"H\x00\x00\x00\x04"),
    ("frontend", m.Terminate(), b"X\x00\x00\x00\x04"),
    ("frontend", m.CopyDone(), b"c\x00\x00\x00\x04"),
    ("frontend", m.CopyData(b"1\t2\n"), b"d\x00\x00\x00\x081\t2\n"),
    ("frontend", m.CopyFail("no"), b"f\x00\x00\x00\x07no\x00"),
    ("frontend", m.Describe("P", ""), b"D\x00\x00\x00\x06P\x00"),
    ("frontend", m.Close("S", "s1"), b"C\x00\x00\x00\x08Ss1\x00"),
    ("frontend", m.Execute("", 0), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
    (
        "frontend",
        m.Parse("", "select $1", (23,)),
        b"P\x00\x00\x00\x15\x00select $1\x00\x00\x01\x00\x00\x00\x17",
    ),
    (
        "frontend",
        m.Bind("", "s", (1,), (b"\x00\x00\x00\x2a", None), (1,)),
        b"B\x00\x00\x00\x1d"
        b"\x00s\x00"  # portal "", statement "s"
        b"\x00\x01\x00\x01"  # one parameter format: binary
        b"\x00\x02\x00\x00\x00\x04\x00\x00\x00\x2a\xff\xff\xff\xff"  # 42, NULL
        b"\x00\x01\x00\x01",  # one result format: binary
    ),
    (
        "frontend",
        m.FunctionCall(1598, (0,), (b"x",), 0),
        b"F\x00\x00\x00\x15\x00\x00\x06\x3e\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00",
    ),
    ("frontend", m.PasswordMessage(b"secret\x00"), b"p\x00\x00\x00\x0bsecret\x00"),
    ("backend", m.ReadyForQuery("I"), b"Z\x00\x00\x00\x05I"),
    ("backend", m.ReadyForQuery("T"), b"Z\x00\x00\x00\x05T"),
    ("backend", m.Authentication(0), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    ("backend", m.Authentication(5, b"salt"), b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt"),
    (
        "backend",
        m.Authentication(10, b"SCRAM-SHA-256\x00\x00"),
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
    ),
    (
        "backend",
        m.BackendKeyData(1234, 0xDEADBEEF),
        b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef",
    ),
    ("backend", m.ParameterStatus("TimeZone", "UTC"), b"S\x00\x00\x00\x11TimeZone\x00UTC\x00"),
    ("backend", m.ParseComplete(), b"1\x00\x00\x00\x04"),
    ("backend", m.BindComplete(), b"2\x00\x00\x00\x04"),
    ("backend", m.CloseComplete(), b"3\x00\x00\x00\x04"),
    ("backend", m.NoData(), b"n\x00\x00\x00\x04"),
    ("backend", m.EmptyQueryResponse(), b"I\x00\x00\x00\x04"),
    ("backend", m.PortalSuspended(), b"s\x00\x00\x00\x04"),
    ("backend", m.CommandComplete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
    (
        "backend",
        m.DataRow((b"1", None, b"")),
        b"D\x00\x00\x00\x13\x00\x03\x00\x00\x00\x011\xff\xff\xff\xff\x00\x00\x00\x00",
    ),
    (
        "backend",
        m.RowDescription((m.Column("a", 16384, 1, 23, 4, -1, 0),)),
        b"T\x00\x00\x00\x1a\x00\x01a\x00"
        b"\x00\x00\x40\x00"  # table oid
        b"\x00\x01"  # attribute number
        b"\x00\x00\x00\x17"  # type oid 23 (int4)
        b"\x00\x04"  # type size
        b"\xff\xff\xff\xff"  # type modifier -1
        b"\x00\x00",  # format text
    ),
    ("backend", m.ParameterDescription((23, 25)), b"t\x00\x00\x00\x0e\x00\x02\x00\x00\x00\x17\x00\x00\x00\x19"),
    (
        "backend",
        m.ErrorResponse((("S", "ERROR"), ("C", "42601"), ("M", "syntax"))),
        b"E\x00\x00\x00\x1bSERROR\x00C42601\x00Msyntax\x00\x00",
    ),
    ("backend", m.NoticeResponse((("M", "hi"),)), b"N\x00\x00\x00\x09Mhi\x00\x00"),
    ("backend", m.CopyInResponse(0, (0, 0)), b"G\x00\x00\x00\x0b\x00\x00\x02\x00\x00\x00\x00"),
    ("backend", m.CopyOutResponse(1, (1,)), b"H\x00\x00\x00\x09\x01\x00\x01\x00\x01"),
    ("backend", m.CopyBothResponse(0, ()), b"W\x00\x00\x00\x07\x00\x00\x00"),
    ("backend", m.FunctionCallResponse(None), b"V\x00\x00\x00\x08\xff\xff\xff\xff"),
    ("backend", m.FunctionCallResponse(b"ok"), b"V\x00\x00\x00\x0a\x00\x00\x00\x02ok"),
    (
        "backend",
        m.NegotiateProtocolVersion(0, ("_pq_.x",)),
        b"v\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\x00",
    ),
    (
        "backend",
        m.NotificationResponse(42, "ch", "hi"),
        b"A\x00\x00\x00\x0e\x00\x00\x00\x2ach\x00hi\x00",
    ),
]


@pytest.mark.parametrize(
    ("direction", "msg", "raw"),
    TYPED_VECTORS,
    ids=[f"{d}-{type(msg).__name__}-{i}" for i, (d, msg, _) in enumerate(TYPED_VECTORS)],
)
def test_vector(direction, msg, raw):
    # The vectors themselves must be self-consistent (guards against a typo in this file).
    assert struct.unpack("!i", raw[1:5])[0] == len(raw) - 1
    assert msg.encode() == raw
    assert m.decode(REGISTRIES[direction], raw[:1], raw[5:]) == msg


STARTUP_VECTORS = [
    # SSLRequest: length 8, code 1234 << 16 | 5679 = 80877103.
    (m.SSLRequest(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    # GSSENCRequest: 1234 << 16 | 5680.
    (m.GSSENCRequest(), b"\x00\x00\x00\x08\x04\xd2\x16\x30"),
    # CancelRequest: length 16, code 1234 << 16 | 5678, process id, secret key.
    (m.CancelRequest(7, 0xFFFFFFFF), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x07\xff\xff\xff\xff"),
    # StartupMessage 3.0: version 196608, name/value pairs, a final NUL.
    (
        m.StartupMessage(196608, (("user", "alice"), ("database", "db"))),
        b"\x00\x00\x00\x20\x00\x03\x00\x00user\x00alice\x00database\x00db\x00\x00",
    ),
    (m.StartupMessage(196610, ()), b"\x00\x00\x00\x09\x00\x03\x00\x02\x00"),
]


@pytest.mark.parametrize(("msg", "raw"), STARTUP_VECTORS, ids=lambda v: type(v).__name__)
def test_startup_vector(msg, raw):
    assert struct.unpack("!i", raw[:4])[0] == len(raw)
    assert msg.encode() == raw
    assert m.decode_startup(raw[4:]) == msg


def test_startup_protocol_constants():
    assert m.SSL_REQUEST_CODE == 80877103
    assert m.GSSENC_REQUEST_CODE == 80877104
    assert m.CANCEL_REQUEST_CODE == 80877102
    assert m.PROTOCOL_3_0 == 196608
    sm = m.StartupMessage(196608 + 2, (("user", "u"),))
    assert (sm.major, sm.minor) == (3, 2)
    assert sm.get("user") == "u" and sm.get("database") is None


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("registry", "type_byte", "body"),
    [
        (m.FRONTEND, b"Q", b"select 1"),  # unterminated string
        (m.FRONTEND, b"Q", b"select 1\x00extra"),  # trailing bytes
        (m.FRONTEND, b"S", b"\x00"),  # bytes in an empty message
        (m.FRONTEND, b"D", b"X\x00"),  # target neither S nor P
        (m.FRONTEND, b"Z", b"I"),  # a backend type from the client
        (m.BACKEND, b"Z", b"X"),  # unknown transaction status
        (m.BACKEND, b"Z", b""),
        (m.BACKEND, b"D", b"\xff\xff"),  # negative count
        (m.BACKEND, b"D", b"\x00\x01\xff\xff\xff\xfe"),  # value length -2
        (m.BACKEND, b"D", b"\x00\x01\x00\x00\x00\x05abc"),  # value shorter than its length
        (m.BACKEND, b"v", b"\x00\x00\x00\x00\xff\xff\xff\xff"),  # negative count
        (m.BACKEND, b"E", b"Mno terminator\x00"),  # fields not ended by a NUL
        (m.BACKEND, b"K", b"\x00\x00\x00\x01"),  # too short
    ],
)
def test_invalid_bodies_are_protocol_errors(registry, type_byte, body):
    with pytest.raises(ProtocolError):
        m.decode(registry, type_byte, body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x03",
        struct.pack("!i", 2 << 16) + b"\x00",  # protocol 2
        struct.pack("!i", 4 << 16) + b"\x00",  # protocol 4
        struct.pack("!i", m.SSL_REQUEST_CODE) + b"x",  # trailing bytes
        struct.pack("!i", m.CANCEL_REQUEST_CODE) + b"\x00\x00\x00\x01",  # no secret key
        struct.pack("!i", m.PROTOCOL_3_0) + b"user\x00alice\x00",  # no final NUL
        struct.pack("!i", m.PROTOCOL_3_0) + b"user\x00",  # name without value
    ],
)
def test_invalid_startup_bodies_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        m.decode_startup(body)


# --------------------------------------------------------------------------- decoder fuzzing


def _decode_or_protocol_error(decode, body):
    """Runs a decoder; anything but a result or a ProtocolError fails the test."""
    try:
        return decode(body)
    except ProtocolError:
        return None


@st.composite
def mutated(draw, strategy, encode):
    """A valid encoding, then truncated, extended, or with bytes overwritten."""
    raw = bytearray(encode(draw(strategy)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "extend", "overwrite", "insert"]))
        if op == "truncate":
            del raw[draw(st.integers(0, len(raw))) :]
        elif op == "extend":
            raw += draw(st.binary(min_size=1, max_size=8))
        elif raw and op == "overwrite":
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


@pytest.mark.parametrize("cls", ALL_TYPED, ids=lambda c: c.__name__)
@PER_CLASS
@given(data=st.data())
def test_fuzz_decode_body(cls, data):
    """Random bytes, or a valid body damaged, given straight to the class's decoder."""
    body = data.draw(st.binary(max_size=64) | mutated(STRATEGIES[cls], lambda msg: msg.encode()[5:]))
    result = _decode_or_protocol_error(cls.decode, body)
    if result is not None:
        assert type(result) is cls
        # Whatever decodes is a message the encoder can write again.
        assert cls.decode(result.encode()[5:]) == result


@given(
    body=st.binary(max_size=64)
    | st.sampled_from(list(STARTUP_STRATEGIES.values())).flatmap(
        lambda s: mutated(s, lambda msg: msg.encode()[4:])
    )
)
def test_fuzz_decode_startup_body(body):
    result = _decode_or_protocol_error(m.decode_startup, body)
    if result is not None:
        assert m.decode_startup(result.encode()[4:]) == result


@given(type_byte=st.binary(min_size=1, max_size=1), body=st.binary(max_size=32))
def test_fuzz_decode_any_type_byte(type_byte, body):
    for registry in REGISTRIES.values():
        _decode_or_protocol_error(lambda b, registry=registry: m.decode(registry, type_byte, b), body)


# --------------------------------------------------------------------------- helpers on messages


def test_fields_message_accessors():
    err = m.ErrorResponse.build("ERROR", "42501", "permission denied", detail="d", hint="h")
    assert err.sqlstate == "42501"
    assert err.message == "permission denied"
    assert err.get("D") == "d" and err.get("H") == "h" and err.get("W") is None
    assert err.without("DH").fields == (("S", "ERROR"), ("V", "ERROR"), ("C", "42501"), ("M", "permission denied"))
    assert m.decode_backend(err.encode()) == err


def test_password_message_builders():
    assert m.PasswordMessage.cleartext("pw").encode() == b"p\x00\x00\x00\x07pw\x00"
    assert m.PasswordMessage.cleartext("pw").password() == "pw"
    initial = m.PasswordMessage.sasl_initial("SCRAM-SHA-256", b"n,,n=,r=x")
    assert initial.data == b"SCRAM-SHA-256\x00\x00\x00\x00\x09n,,n=,r=x"
    with pytest.raises(ProtocolError):
        m.PasswordMessage(b"no terminator").password()


def test_sasl_mechanisms():
    auth = m.Authentication(m.Authentication.SASL, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00")
    assert auth.sasl_mechanisms() == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    with pytest.raises(ProtocolError):
        m.Authentication(m.Authentication.SASL, b"SCRAM-SHA-256\x00").sasl_mechanisms()


def test_row_description_with_formats():
    rd = m.RowDescription(tuple(m.Column(n) for n in "abc"))
    assert [c.format for c in rd.with_formats(()).columns] == [0, 0, 0]
    assert [c.format for c in rd.with_formats((1,)).columns] == [1, 1, 1]
    assert [c.format for c in rd.with_formats((1, 0, 1)).columns] == [1, 0, 1]
    assert [c.name for c in rd.with_formats((1,)).columns] == ["a", "b", "c"]


@given(st.builds(m.RowDescription, st.tuples(st.builds(
    # names a server can send: no NUL, and encodable (a lone surrogate is refused by the encoder)
    m.Column, st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                      max_size=8),
    st.integers(0, 2**32 - 1), st.integers(-(2**15), 2**15 - 1), st.integers(0, 2**32 - 1)))))
def test_shared_row_description_is_the_decoded_one_and_kept_by_its_bytes(rd):
    body = rd.encode()[5:]
    shared = m.RowDescription.shared(body)
    assert shared == m.RowDescription.decode(body) == rd
    assert m.RowDescription.shared(bytes(bytearray(body))) is shared  # equal bytes, another object


def test_shared_row_description_raises_for_bytes_that_do_not_decode_every_time():
    for _ in range(2):
        with pytest.raises(ProtocolError):
            m.RowDescription.shared(b"\x00\x01")


def test_encoder_refuses_what_the_protocol_cannot_carry():
    with pytest.raises(LocalProtocolError):
        m.Query("a\x00b").encode()
    with pytest.raises(LocalProtocolError):
        m.Execute("", 2**31).encode()
    with pytest.raises(LocalProtocolError):
        m.BackendKeyData(1, -1).encode()
    with pytest.raises(LocalProtocolError):
        m.DataRow((None,) * (2**15)).encode()  # more values than an Int16 count holds


# Fields that once escaped Writer's checks: each would have been encoded as
# bytes the peer reads as a different or invalid message, or raised another error.
@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(
            m.ErrorResponse((("", "x"),)),
            id="field-code-empty",
        ),
        pytest.param(
            m.ErrorResponse((("SV", "x"),)),
            id="field-code-two-chars",
        ),
        pytest.param(
            m.NoticeResponse((("\x00", "x"),)),
            id="field-code-nul",
        ),
        pytest.param(
            m.NoticeResponse((("\u20ac", "x"),)),
            id="field-code-not-latin1",
        ),
        pytest.param(
            m.CopyInResponse(256),
            id="copy-format-256",
        ),
        pytest.param(
            m.Describe("X", "n"),
            id="describe-target",
        ),
        pytest.param(
            m.Close("", "n"),
            id="close-target-empty",
        ),
        pytest.param(
            m.ReadyForQuery("X"),
            id="ready-status",
        ),
        pytest.param(
            m.Query("\ud800"),
            id="cstring-surrogate",
        ),
        pytest.param(
            m.CancelRequest(1, -1),
            id="cancel-key-negative",
        ),
    ],
)
def test_encoder_refuses_unencodable_fields(msg):
    with pytest.raises(LocalProtocolError):
        msg.encode()


@settings(max_examples=examples(300))
@given(data=st.binary(max_size=12), kind=st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_reader_integers_and_strings_are_what_struct_and_find_say_property(data, kind):
    # The reader assembles integers from their bytes and tests an empty string by its first
    # byte (`pgwarden.wire.reader`): the same values, the same errors, as struct and find.
    from pgwarden.wire.reader import Reader

    body = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[kind](data)
    for fmt, read in (("!h", Reader.int16), ("!i", Reader.int32), ("!I", Reader.uint32)):
        size = struct.calcsize(fmt)
        r = Reader(body, "X")
        if len(data) < size:
            with pytest.raises(ProtocolError, match="X: message is shorter than its contents"):
                read(r)
        else:
            assert read(r) == struct.unpack_from(fmt, data)[0]
            assert r.rest() == data[size:]
    r = Reader(body, "X")
    end = data.find(b"\0")
    if end < 0:
        with pytest.raises(ProtocolError, match="X: unterminated string"):
            r.cstring()
    else:
        raw = data[:end]
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            expected = raw.decode("latin-1")
        assert r.cstring() == expected
        assert type(r.rest()) is bytes and Reader(body, "X").byte() == data[:1]


@settings(max_examples=examples(200))
@given(name=st.binary().filter(lambda b: b"\0" not in b), sql=st.binary().filter(lambda b: b"\0" not in b),
       types=st.lists(st.integers(0, 2**32 - 1), max_size=5), extra=st.binary(max_size=3))
def test_parse_parts_gives_the_name_and_text_as_sent_and_checks_the_whole_body_property(name, sql, types, extra):
    # The relay reads an extended statement's name and text undecoded (`parse_parts`), to decode
    # them in the session's encoding; whatever follows the types is refused as before.
    from pgwarden.wire.reader import parse_fields, parse_parts

    body = name + b"\0" + sql + b"\0" + struct.pack(f"!h{len(types)}I", len(types), *types)
    assert parse_parts(body) == (name, sql, tuple(types))
    assert parse_fields(body)[2] == tuple(types)
    if extra:
        with pytest.raises(ProtocolError, match="Parse: unexpected bytes after the message"):
            parse_parts(body + extra)
    with pytest.raises(ProtocolError):
        parse_parts(body[:-1] if types else name + b"\0" + sql)
