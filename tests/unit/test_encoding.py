"""Reading statement bytes in the session's client_encoding (pgwarden.sql.encoding).

The server's side of these facts is checked against a real server in
tests/e2e/test_encodings.py; here, what pgwarden itself does with the bytes.
"""

from __future__ import annotations

import functools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.sql import encoding as enc
from pgwarden.sql.encoding import UnreadableText, UnsupportedEncoding, canonical, client_encoding

# Every encoding PostgreSQL 15 knows (pg_encoding_to_char(0..41)).
POSTGRES_ENCODINGS = [
    "SQL_ASCII", "EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "UTF8", "MULE_INTERNAL",
    "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8", "LATIN9", "LATIN10",
    "WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R", "WIN1251", "WIN1252", "ISO_8859_5", "ISO_8859_6",
    "ISO_8859_7", "ISO_8859_8", "WIN1250", "WIN1253", "WIN1254", "WIN1255", "WIN1257", "KOI8U", "SJIS",
    "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004",
]
WITHOUT_CODEC = {"EUC_TW", "MULE_INTERNAL"}
READABLE = [name for name in POSTGRES_ENCODINGS if name not in WITHOUT_CODEC]
SINGLE_BYTE = [name for name in READABLE if enc._ENCODINGS[name][1] == b""
               and name not in ("UTF8", "SQL_ASCII")]

# A character whose second byte is 0x5C (a backslash on its own) in each client-only encoding.
BACKSLASH_TRAIL = {"SJIS": "表", "BIG5": "功", "GBK": "乗", "GB18030": "乗",
                   "SHIFT_JIS_2004": "表"}


def test_every_postgres_encoding_is_read_or_refused_by_name():
    assert set(enc._ENCODINGS) == set(POSTGRES_ENCODINGS)
    for name in READABLE:
        assert client_encoding(name).name == name
    for name in WITHOUT_CODEC:
        with pytest.raises(UnsupportedEncoding) as e:
            client_encoding(name)
        assert e.value.name == name


@pytest.mark.parametrize("spelling, name", [
    ("utf-8", "UTF8"), ("Unicode", "UTF8"), ("Shift_JIS", "SJIS"), ("windows-932", "SJIS"),
    ("ISO-8859-1", "LATIN1"), ("iso_8859_15", "LATIN9"), ("WIN", "WIN1251"), ("cp936", None),
    ("sjis ", "SJIS"), ("mule_internal", "MULE_INTERNAL"), ("", None), ("x" * 64, None),
])
def test_names_are_cleaned_as_postgres_cleans_them(spelling, name):
    assert canonical(spelling) == name


@pytest.mark.parametrize("name", READABLE)
def test_ascii_bytes_are_ascii_in_every_encoding(name):
    e = client_encoding(name)
    ascii_bytes = bytes(range(1, 128))
    assert e.decode(ascii_bytes) == ascii_bytes.decode("ascii")


@pytest.mark.parametrize("name", SINGLE_BYTE)
def test_single_byte_codecs_never_read_a_high_byte_as_ascii(name):
    # What lets single-byte encodings skip the cut by character (ClientEncoding.decode).
    codec = client_encoding(name).codec
    for b in range(0x80, 0x100):
        try:
            text = bytes([b]).decode(codec)
        except UnicodeDecodeError:
            continue
        assert len(text) == 1 and text >= "\x80", (name, hex(b))


@pytest.mark.parametrize("name, char", sorted(BACKSLASH_TRAIL.items()))
def test_a_backslash_second_byte_stays_inside_its_character(name, char):
    e = client_encoding(name)
    data = b"SELECT E'" + char.encode(e.codec) + b"'; DELETE FROM t; --'"
    assert char.encode(e.codec)[1] == 0x5C
    assert e.decode(data) == f"SELECT E'{char}'; DELETE FROM t; --'"


def test_shift_jis_2004_reads_its_ascii_bytes_as_postgres_does():
    e = client_encoding("SHIFT_JIS_2004")
    # Python's codec reads 0x5C and 0x7E as a yen sign and an overline; PostgreSQL as \ and ~.
    assert e.decode(b"E'\\\\' ~ '\xa1\\'") == "E'\\\\' ~ '｡\\'"
    # 0x815F is a backslash to both: a multi-byte character read as ASCII is never trusted.
    with pytest.raises(UnreadableText) as err:
        e.decode(b"SELECT E'\x81\x5f'; DELETE FROM t; --'")
    assert err.value.offset == 9 and "cannot tell from '\\\\'" in err.value.why


@pytest.mark.parametrize("name, data, offset", [
    ("UTF8", b"SELECT '\xc3('", 8),
    ("UTF8", b"SELECT '\xed\xa0\x80'", 8),  # a surrogate: the server refuses it too
    ("SQL_ASCII", b"SELECT '\xff'", 8),
    ("SJIS", b"SELECT '\x95", 8),  # cut off
    ("SJIS", b"SELECT '\x81\x20'", 8),  # not a second byte
    ("BIG5", b"SELECT '\xa4", 8),
    ("GB18030", b"SELECT '\x81\x30\x81'", 8),
    ("EUC_JP", b"SELECT '\x8f\xa1'", 8),
    ("WIN1252", b"SELECT '\x81'", 8),  # unassigned in code page 1252 (and for the server)
])
def test_bytes_that_are_not_text_are_refused_never_replaced(name, data, offset):
    e = client_encoding(name)
    with pytest.raises(UnreadableText) as err:
        e.decode(data)
    assert err.value.offset == offset
    assert err.value.why.startswith(f"is not valid {name} text")
    assert "\\x" in e.readable(data)  # what records show instead


# Where to look for each encoding's characters: Latin, Greek, Cyrillic, ..., kana, some CJK,
# some Hangul, full-width forms, and the characters known for an ASCII second byte.
_LOOK_IN = [*map(chr, range(0x80, 0x800)), *map(chr, range(0x3000, 0x3100)), *map(chr, range(0x4E00, 0x5000)),
            *map(chr, range(0xAC00, 0xAC80)), *map(chr, range(0xFF00, 0xFFF0)), *BACKSLASH_TRAIL.values(),
            "功", "乗", "表", "ポ", "倒", "亅"]


@functools.cache
def _characters(name: str) -> list[str]:
    """Characters the codec writes as one character by PostgreSQL's cut, and reads back (not
    those the server reads as another character, which pgwarden refuses: `_READ_OTHERWISE`)."""
    codec, char = enc._ENCODINGS[name]
    otherwise = enc._READ_OTHERWISE.get(name, frozenset())
    return [c for c in _LOOK_IN if _one_character(c, codec, char) and c.encode(codec) not in otherwise]


def _one_character(c: str, codec: str, char: bytes) -> bool:
    try:
        data = c.encode(codec)
    except UnicodeError:
        return False
    return data.decode(codec) == c and (not char or re.fullmatch(char, data) is not None)


@pytest.mark.parametrize("name", [n for n in READABLE if n not in ("SQL_ASCII",)])
@settings(max_examples=max(10, settings().max_examples // 4))
@given(data=st.data())
def test_text_of_ascii_and_the_encodings_characters_reads_back(name, data):
    e = client_encoding(name)
    ascii_part = st.sampled_from(["'", "\\", ";", "E'", "$$", "|", "~", " ", "a", "--", "\n"])
    parts = data.draw(st.lists(st.one_of(ascii_part, st.sampled_from(_characters(name))), max_size=12))
    encoded = b"".join(p.encode("ascii") if p.isascii() else p.encode(e.codec) for p in parts)
    text = "".join(parts)
    try:
        assert e.decode(encoded) == text
    except UnreadableText as err:  # only a character the codec reads as ASCII may be refused
        assert name == "SHIFT_JIS_2004" and "cannot tell from" in err.why
