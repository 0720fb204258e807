"""Masked values decode as their type, in text and binary format, through a real client's codecs
(psycopg's loaders, chosen by type OID as a client chooses them)."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from psycopg.adapt import Transformer
from psycopg.pq import Format

from pgwarden_plugins.mask import values as v
from pgwarden_plugins.mask.detectors import BUILTIN, Scanner

KEY = b"k" * 32
_T = Transformer()


def load(data: bytes | None, oid: int, fmt: int) -> object:
    if data is None:
        return None
    return _T.get_loader(oid, Format.BINARY if fmt else Format.TEXT).load(data)


def dump(value: object, oid: int, fmt: int) -> bytes:
    """The value as the server sends it (psycopg's dumpers write the same forms)."""
    family = v.family_of(oid)
    if fmt == 0:
        return str(value).encode() if not isinstance(value, bytes) else b"\\x" + value.hex().encode()
    return v.encode(value, family, 1) or b""


# (type OID, an original value, the Python type a client decodes a masked value to)
TYPED = [
    (v.TEXT, "secret value", str), (v.VARCHAR, "secret", str), (v.BPCHAR, "secret", str),
    (v.INT2, 1234, int), (v.INT4, 987654321, int), (v.INT8, 98765432101234, int),
    (v.FLOAT8, 3.5, float), (v.FLOAT4, 2.5, float), (v.NUMERIC, 123456, Decimal),
    (v.UUID, uuid.UUID("6f1e2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"), uuid.UUID),
    (v.DATE, datetime.date(1980, 2, 3), datetime.date), (v.BYTEA, b"\x01secret", bytes),
    (v.JSON, '{"a": 1}', object), (v.JSONB, '{"a": 1}', object),
]


@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
@pytest.mark.parametrize("oid, original, pytype", TYPED, ids=[str(t[0]) for t in TYPED])
def test_hash_is_a_valid_value_of_the_type_and_the_same_in_both_formats(oid, original, pytype, fmt):
    family = v.family_of(oid)
    raw = dump(original, oid, fmt)
    masked = v.hashed(KEY)(raw, family, fmt)
    assert masked is not None
    decoded = load(masked, oid, fmt)
    if pytype is not object:
        assert isinstance(decoded, pytype), (decoded, pytype)
    assert decoded != original
    other = 1 - fmt  # the same value sent in the other format hashes to the same value
    assert load(v.hashed(KEY)(dump(original, oid, other), family, other), oid, other) == decoded
    assert load(v.hashed(b"another key" * 3)(raw, family, fmt), oid, fmt) != decoded


@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
@pytest.mark.parametrize("oid, original, pytype", TYPED, ids=[str(t[0]) for t in TYPED])
def test_redact_is_text_for_text_json_for_json_else_null(oid, original, pytype, fmt):
    family = v.family_of(oid)
    masked = v.redact()(dump(original, oid, fmt), family, fmt)
    decoded = load(masked, oid, fmt)
    if family is v.Family.TEXT:
        assert decoded == "***"
    elif family in (v.Family.JSON, v.Family.JSONB):
        assert decoded == "***"
    else:
        assert decoded is None


@pytest.mark.parametrize("fmt", [0, 1])
def test_fixed_values_are_typed_or_null(fmt):
    assert load(v.fixed("42")(dump(7, v.INT4, fmt), v.Family.INT4, fmt), v.INT4, fmt) == 42
    assert load(v.fixed("n/a")(dump(7, v.INT4, fmt), v.Family.INT4, fmt), v.INT4, fmt) is None
    assert load(v.fixed("n/a")(b"x", v.Family.TEXT, fmt), v.TEXT, fmt) == "n/a"
    assert load(v.fixed("2000-01-01")(dump(datetime.date(1980, 1, 1), v.DATE, fmt), v.Family.DATE, fmt),
                v.DATE, fmt) == datetime.date(2000, 1, 1)
    assert load(v.fixed('{"masked": true}')(b"\x01{}" if fmt else b"{}", v.Family.JSONB, fmt), v.JSONB, fmt) == \
        {"masked": True}


@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
def test_a_char_is_masked_as_one_character(fmt):
    """The one-byte ``"char"`` (``ssn::"char"``, pg_type's ``typtype``) is one byte in binary and one
    character in text: ``***`` is neither (before: ``***``, which no server sends)."""
    family = v.family_of(v.CHAR)
    assert family is v.Family.CHAR and v.CHAR in v.TEXT_TYPES
    for strategy in (v.redact(), v.partial(0, 4), v.partial(1, 0), v.email()):
        masked = strategy(b"c", family, fmt)
        assert masked == b"*" and load(masked, v.CHAR, fmt) in ("*", b"*")
    assert v.hashed(KEY)(b"c", family, fmt) is None  # 256 values: a hash would tell the value
    assert v.fixed("x")(b"c", family, fmt) == b"x"
    assert v.fixed("xy")(b"c", family, fmt) is None and v.fixed("\u00e9")(b"c", family, fmt) is None
    assert v.null()(b"c", family, fmt) is None


def test_partial_keeps_separators_and_email_keeps_the_domain():
    partial = v.partial(0, 4)
    assert partial(b"123-45-6789", v.Family.TEXT, 0) == b"***-**-6789"
    assert partial(b"4111 1111 1111 1111", v.Family.TEXT, 1) == b"**** **** **** 1111"
    assert v.partial(2, 2)(b"abcdefgh", v.Family.TEXT, 0) == b"ab****gh"
    assert partial(b"1234", v.Family.TEXT, 0) == b"****"  # keeping 4 of 4 would keep it all
    assert partial(b"1234", v.Family.INT4, 0) is None


@pytest.mark.parametrize("kept", [(0, 4), (0, 1), (2, 2), (1, 0), (0, 0)])
def test_partial_for_text_answers_as_partial(kept):
    """The text columns' short way (`partial_text`) must give exactly `partial`'s answers."""
    import random

    chars = "0123456789-- aZ*é_\\"
    rng = random.Random(18)
    samples = [b"", b"1234", b"123-45-6789", b"-1234", b"12-34", b"***-1234", "é1234".encode(), b"ab", b"----"]
    samples += ["".join(rng.choice(chars) for _ in range(rng.randrange(12))).encode() for _ in range(3000)]
    general, text = v.partial(*kept), v.partial_text(*kept)
    for value in samples:
        assert text(value, None) == general(value, v.Family.TEXT, 0), value
    assert text(None, None) is None
    assert v.email()(b"ann.secret@example.com", v.Family.TEXT, 0) == b"***@example.com"
    assert v.email()(b"no at sign", v.Family.TEXT, 0) == b"***"


def test_hash_of_text_is_hex_and_deterministic():
    h = v.hashed(KEY)
    assert h(b"ann@example.com", v.Family.TEXT, 0) == h(b"ann@example.com", v.Family.TEXT, 1)
    assert len(h(b"x", v.Family.TEXT, 0)) == 16 and h(b"x", v.Family.TEXT, 0) != h(b"y", v.Family.TEXT, 0)
    assert json.loads(h(b'{"a":1}', v.Family.JSON, 0))  # a JSON string


@pytest.mark.parametrize("text, found", [
    ("ssn 123-45-6789.", ["ssn"]),
    ("ssn 000-12-3456", []),  # not a valid SSN (area 000)
    ("card 4111 1111 1111 1111 ok", ["credit_card"]),
    ("card 4111 1111 1111 1112", []),  # Luhn fails
    ("mail ann@example.com", ["email"]),
    ("iban GB82 WEST 1234 5698 7654 32", ["iban"]),
    ("iban GB82 WEST 1234 5698 7654 33", []),
    ("call +1 650-253-0000", ["phone"]),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU", ["jwt"]),
    ("key AKIAIOSFODNN7EXAMPLE and sk_live_4eC39HqLyjWDarjtT1zdp7dc", ["api_key", "api_key"]),
    ("nothing 12345 here", []),
])
def test_detectors_find_validated_values_only(text, found):
    scanner = Scanner(BUILTIN)
    scrubbed, hits = scanner.scrub(text)
    assert hits == found
    for name in found:
        assert f"[{name}]" in scrubbed
    if found:
        assert scanner.candidate(text.encode())


def test_a_candidate_in_a_run_of_rows_is_found_whatever_the_bytes_before_it():
    # A length prefix ending in a digit byte ('1' = 0x31) right before the value must not hide it.
    scanner = Scanner(BUILTIN)
    run = b"D\x00\x00\x00\x31\x00\x01\x00\x00\x00\x31" + b"123-45-6789"
    assert scanner.candidate(run)
