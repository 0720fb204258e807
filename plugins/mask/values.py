"""Masked values that stay valid for their column's type, in text and in binary format.

Clients decode a value by the type OID of its RowDescription, which pgwarden never
changes: a masked ``int4`` must still be four bytes in binary and digits in text, a
masked ``uuid`` sixteen bytes or its canonical text. Each strategy therefore works on
a *family* of types (`family_of`) and yields a Python value that `encode` writes in the
column's format; where a family has no masked form for a strategy, the value is NULL,
which every type accepts (docs/masking.md has the table).

``hash`` is HMAC-SHA256 under the operator's key over the value's canonical text (the
same for text and binary results, so a value hashes alike whichever format a client
asks for), rendered in the column's type: equal values stay equal, so joins and GROUP BY
on the masked output still work.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal, localcontext
from enum import Enum

from pgwarden.mask_rows import PartialText

# PostgreSQL type OIDs (pg_type.dat).
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, JSON = 16, 17, 18, 19, 20, 21, 23, 25, 114
XML, FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR, DATE = 142, 700, 701, 705, 1042, 1043, 1082
NUMERIC, UUID, JSONB = 1700, 2950, 3802

REDACTED = "***"
_EPOCH = datetime.date(2000, 1, 1)  # PostgreSQL's binary dates count days from here


class Family(Enum):
    TEXT = "text"
    CHAR = "char"  # the one-byte "char" (pg_type's typtype, ...): one character in text and in binary
    INT2 = "int2"
    INT4 = "int4"
    INT8 = "int8"
    NUMERIC = "numeric"
    FLOAT4 = "float4"
    FLOAT8 = "float8"
    BOOL = "bool"
    UUID = "uuid"
    DATE = "date"
    JSON = "json"
    JSONB = "jsonb"
    BYTEA = "bytea"
    OTHER = "other"  # arrays, time, network, geometric, enums, composites...: NULL


_FAMILIES = {
    TEXT: Family.TEXT, VARCHAR: Family.TEXT, BPCHAR: Family.TEXT, NAME: Family.TEXT, UNKNOWN: Family.TEXT,
    CHAR: Family.CHAR, INT2: Family.INT2, INT4: Family.INT4, INT8: Family.INT8, NUMERIC: Family.NUMERIC,
    FLOAT4: Family.FLOAT4, FLOAT8: Family.FLOAT8, BOOL: Family.BOOL, UUID: Family.UUID, DATE: Family.DATE,
    JSON: Family.JSON, JSONB: Family.JSONB, BYTEA: Family.BYTEA,
}
#: The type OIDs whose values are text as they are, in either format (detectors read them).
TEXT_TYPES = frozenset(oid for oid, f in _FAMILIES.items() if f is Family.TEXT) | {CHAR, JSON, JSONB, XML}
#: Types whose values have a fixed form no text can hide in (numbers, times, addresses, ...):
#: detectors pass over them. Every other type (arrays, records, enums, bytea, ranges, domains'
#: and extensions' types) may carry a text value inside it (``ARRAY[notes]``, ``ROW(u.*)``).
FIXED_FORM = frozenset({
    BOOL, INT8, INT2, INT4, 26, 27, 28, 29, FLOAT4, FLOAT8, 790, NUMERIC, DATE, 1083, 1266, 1114, 1184, 1186,
    UUID, 869, 650, 829, 774, 1560, 1562, 3220, 5069,  # oid tid xid cid, money, times, uuid, inet...pg_lsn xid8
})


def family_of(type_oid: int) -> Family:
    return _FAMILIES.get(type_oid, Family.OTHER)


# ---------------------------------------------------------------------------- reading a value


def canonical(value: bytes, family: Family, fmt: int) -> bytes:
    """The value's text form whatever format it came in: what ``hash`` hashes."""
    if fmt == 0 or family in (Family.TEXT, Family.JSON):
        if family is Family.BYTEA and value.startswith(b"\\x"):
            return value[2:].lower()
        return value
    try:
        if family is Family.INT2:
            return str(struct.unpack("!h", value)[0]).encode()
        if family is Family.INT4:
            return str(struct.unpack("!i", value)[0]).encode()
        if family is Family.INT8:
            return str(struct.unpack("!q", value)[0]).encode()
        if family is Family.FLOAT4:
            return repr(struct.unpack("!f", value)[0]).encode()
        if family is Family.FLOAT8:
            return repr(struct.unpack("!d", value)[0]).encode()
        if family is Family.UUID:
            return str(uuid.UUID(bytes=value)).encode()
        if family is Family.DATE:
            return (_EPOCH + datetime.timedelta(days=struct.unpack("!i", value)[0])).isoformat().encode()
        if family is Family.JSONB:
            return value[1:]
        if family is Family.BYTEA:
            return value.hex().encode()
        if family is Family.NUMERIC:
            return _numeric_text(value).encode()
    except (struct.error, ValueError, OverflowError):
        pass
    return b"\\binary:" + value


def _numeric_text(value: bytes) -> str:
    """A numeric's binary form as the server writes it in text: with its display scale (``50000.00``,
    not ``50000``: a hash of either form must be the same), never in exponent notation."""
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", value)
    special = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}.get(sign)
    if special is not None:
        return special
    digits = struct.unpack_from(f"!{ndigits}H", value, 8)
    with localcontext() as context:
        context.prec = max(28, 4 * (ndigits + abs(weight) + 2) + dscale)
        number = Decimal(0)
        for i, d in enumerate(digits):
            number += Decimal(d) * Decimal(10000) ** (weight - i)
        number = number.quantize(Decimal(1).scaleb(-dscale))
        return format(-number if sign == 0x4000 else number, "f")


# ---------------------------------------------------------------------------- writing a value


def _numeric_int(n: int) -> bytes:
    """A non-negative integer as numeric's binary form (base-10000 digits)."""
    digits: list[int] = []
    while n:
        n, d = divmod(n, 10000)
        digits.append(d)
    digits.reverse()
    return struct.pack(f"!hhHh{len(digits)}H", len(digits), max(len(digits) - 1, 0), 0, 0, *digits)


def encode(value: object, family: Family, fmt: int) -> bytes | None:
    """``value`` (str, int, float, bool, UUID, date, bytes, or None) in ``family``'s ``fmt``; None
    (NULL) when it has no form there."""
    if value is None:
        return None
    if fmt == 0:
        if isinstance(value, bytes):
            return b"\\x" + value.hex().encode()
        if isinstance(value, bool):
            return b"t" if value else b"f"
        if isinstance(value, (datetime.date, uuid.UUID)):
            return str(value).encode()
        if family is Family.FLOAT4 or family is Family.FLOAT8:
            return repr(float(value)).encode()  # type: ignore[arg-type]
        return str(value).encode()
    if family is Family.TEXT or family is Family.JSON or family is Family.CHAR:
        return str(value).encode()
    if family is Family.JSONB:
        return b"\x01" + str(value).encode()
    if family is Family.INT2:
        return struct.pack("!h", int(value))  # type: ignore[call-overload]
    if family is Family.INT4:
        return struct.pack("!i", int(value))  # type: ignore[call-overload]
    if family is Family.INT8:
        return struct.pack("!q", int(value))  # type: ignore[call-overload]
    if family is Family.FLOAT4:
        return struct.pack("!f", float(value))  # type: ignore[arg-type]
    if family is Family.FLOAT8:
        return struct.pack("!d", float(value))  # type: ignore[arg-type]
    if family is Family.NUMERIC and isinstance(value, int) and value >= 0:
        return _numeric_int(value)
    if family is Family.BOOL and isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if family is Family.UUID and isinstance(value, uuid.UUID):
        return value.bytes
    if family is Family.DATE and isinstance(value, datetime.date):
        return struct.pack("!i", (value - _EPOCH).days)
    if family is Family.BYTEA and isinstance(value, bytes):
        return value
    return None


# ---------------------------------------------------------------------------- strategies

#: (value, family, fmt) -> the masked value (bytes in ``fmt``, None for NULL); given non-NULL values only
Strategy = Callable[[bytes, Family, int], "bytes | None"]


def _json_string(text: str, family: Family) -> str:
    return '"' + text + '"' if family in (Family.JSON, Family.JSONB) else text


#: the masked value of a "char" (one byte in binary, one character in text: ``***`` is neither) for
#: ``redact``, ``partial`` (keeping an end of one character would keep it all) and ``email``
CHAR_MASKED = b"*"


def redact() -> Strategy:
    def masked(value: bytes, family: Family, fmt: int) -> bytes | None:
        if family is Family.CHAR:
            return CHAR_MASKED
        if family in (Family.TEXT, Family.JSON, Family.JSONB):
            return encode(_json_string(REDACTED, family), family, fmt)
        return None
    return masked


def null() -> Strategy:
    return lambda value, family, fmt: None


_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_STAR = str.maketrans(_ALNUM, "*" * len(_ALNUM))
_DROP = str.maketrans("", "", _ALNUM)


def keep(text: str, first: int, last: int) -> str:
    """``text`` with its letters and digits starred but the first and last ones asked for;
    separators stay where they are (``***-**-6789``)."""
    if not text.isascii():
        positions = [i for i, ch in enumerate(text) if ch.isalnum()]
        if first + last >= len(positions):  # keeping that much would keep everything: nothing is kept
            first = last = 0
        hidden = set(positions[first:len(positions) - last])
        return "".join("*" if i in hidden else ch for i, ch in enumerate(text))
    starred = text.translate(_STAR)
    count = len(text) - len(text.translate(_DROP))
    if first + last >= count:
        return starred
    head = tail = len(text)
    if first:
        seen = 0
        for head, ch in enumerate(text):  # noqa: B007 - the position is what is wanted
            if ch.isalnum():
                seen += 1
                if seen == first:
                    break
        head += 1
    else:
        head = 0
    if last:
        seen = 0
        for tail in range(len(text) - 1, -1, -1):
            if text[tail].isalnum():
                seen += 1
                if seen == last:
                    break
    return text[:head] + starred[head:tail] + text[tail:]


_ALNUM_B = _ALNUM.encode()
_STAR_B = bytes.maketrans(_ALNUM_B, b"*" * len(_ALNUM_B))


def partial(first: int, last: int) -> Strategy:
    # ASCII values (the usual SSN, card, phone) are done in bytes by C code: translate and two
    # anchored expressions find where the kept characters begin and end.
    head_re = re.compile(rb"(?:[^A-Za-z0-9]*[A-Za-z0-9]){%d}" % first) if first else None
    tail_re = re.compile(rb"(?:[^A-Za-z0-9]*[A-Za-z0-9]){%d}" % last) if last else None  # over the reversed value

    def masked(value: bytes, family: Family, fmt: int) -> bytes | None:
        if family is not Family.TEXT:
            return CHAR_MASKED if family is Family.CHAR else None
        if not value.isascii():
            return keep(value.decode("utf-8", "replace"), first, last).encode()
        starred = value.translate(_STAR_B)
        if first + last >= len(value) - len(value.translate(None, _ALNUM_B)):
            return starred
        head = head_re.match(value).end() if head_re is not None else 0  # type: ignore[union-attr]
        tail = len(value) - tail_re.match(value[::-1]).end() if tail_re is not None else len(value)  # type: ignore[union-attr]
        return value[:head] + starred[head:tail] + value[tail:]
    return masked


def partial_text(first: int, last: int) -> PartialText:
    """`partial` for a text column, as a `pgwarden.api.Masker`: the same answers, with a short
    way for the usual value (ASCII, ending in the characters to keep: ``123-45-6789``), which
    every row of a column of distinct values takes (no memo helps there); the row walk knows it
    and stars such values in place (`pgwarden.mask_rows`)."""
    general = partial(first, last)

    def text(value: bytes) -> bytes | None:
        return general(value, Family.TEXT, 0)

    return PartialText(first, last, text)


def email() -> Strategy:
    def masked(value: bytes, family: Family, fmt: int) -> bytes | None:
        if family is not Family.TEXT:
            return CHAR_MASKED if family is Family.CHAR else None
        text = value.decode("utf-8", "replace")
        at = text.rfind("@")
        return (REDACTED + text[at:] if at > 0 else REDACTED).encode()
    return masked


def fixed(shown: str) -> Strategy:
    typed: dict[Family, object] = {}

    def of(family: Family) -> object:
        if family not in typed:
            typed[family] = _parse(shown, family)
        return typed[family]

    def masked(value: bytes, family: Family, fmt: int) -> bytes | None:
        return encode(of(family), family, fmt)
    return masked


def _parse(text: str, family: Family) -> object:
    """``fixed``'s value read as ``family`` (None where it is not one: NULL instead)."""
    try:
        if family in (Family.INT2, Family.INT4, Family.INT8):
            n = int(text)
            bits = {Family.INT2: 15, Family.INT4: 31, Family.INT8: 63}[family]
            return n if -(1 << bits) <= n < (1 << bits) else None
        if family in (Family.FLOAT4, Family.FLOAT8):
            return float(text)
        if family is Family.NUMERIC:
            return int(text) if text.isdigit() else None
        if family is Family.BOOL:
            return {"true": True, "t": True, "false": False, "f": False}.get(text.lower())
        if family is Family.UUID:
            return uuid.UUID(text)
        if family is Family.DATE:
            return datetime.date.fromisoformat(text)
        if family in (Family.JSON, Family.JSONB):
            import json

            json.loads(text)
            return text
        if family is Family.TEXT:
            return text
        if family is Family.CHAR:
            return text if len(text) == 1 and text.isascii() else None
    except ValueError:
        return None
    return None


def hashed(key: bytes) -> Strategy:
    """HMAC-SHA256 under ``key``, rendered in the column's type; a small cache of recent values
    keeps repeated values (the usual case in a column) at one dictionary lookup."""
    cache: dict[tuple[bytes, Family, int], bytes | None] = {}

    def masked(value: bytes, family: Family, fmt: int) -> bytes | None:
        k = (value, family, fmt)
        found = cache.get(k, cache)
        if found is not cache:
            return found  # type: ignore[return-value]
        digest = hmac.new(key, canonical(value, family, fmt), hashlib.sha256).digest()
        out = encode(_rendered(digest, family), family, fmt)
        if len(cache) > 4096:
            cache.clear()
        cache[k] = out
        return out
    return masked


def _rendered(digest: bytes, family: Family) -> object:
    n = int.from_bytes(digest[:8], "big")
    if family is Family.TEXT:
        return digest.hex()[:16]
    if family in (Family.JSON, Family.JSONB):
        return '"' + digest.hex()[:16] + '"'
    if family is Family.INT2:
        return n % (1 << 15)
    if family is Family.INT4:
        return n % (1 << 31)
    if family is Family.INT8:
        return n % (1 << 63)
    if family is Family.NUMERIC:
        return n % 10**15
    if family is Family.FLOAT4:
        return float(n % (1 << 24))
    if family is Family.FLOAT8:
        return float(n % (1 << 53))
    if family is Family.UUID:
        return uuid.UUID(bytes=digest[:16])
    if family is Family.DATE:
        return _EPOCH + datetime.timedelta(days=n % 36525)
    if family is Family.BYTEA:
        return digest
    return None  # bool and "char" (two and 256 values: a hash would be the value), and what has no form
