"""Statement text as the server reads it: bytes in the session's ``client_encoding``.

The server converts every Query and Parse from the client encoding to its own
before the lexer sees a byte; pgwarden must read the same characters, or a
string literal ends in a different place for it than for the server (in SJIS,
BIG5, GBK, ... the second byte of a character may be 0x5C, a backslash on its
own). So the relay decodes with the codec of the encoding the server reported
(ParameterStatus), strictly: bytes that do not decode refuse the statement,
never a replacement character.

Where a Python codec and PostgreSQL might split bytes into characters
differently, only one difference matters to the lexer: which bytes are ASCII
characters (quotes, backslashes, semicolons, ``$``, ``-``). PostgreSQL decides
that by its own rule (``pg_encoding_mblen``): a byte below 0x80 where a
character starts is that ASCII character, and a byte from 0x80 starts a
character of a length fixed by the encoding. `ClientEncoding.decode` cuts the
text by that rule, takes the ASCII bytes as they are, and has the codec decode
only the runs of other characters; a run the codec turns into anything ASCII
(``SHIFT_JIS_2004`` 0x815F is ``\\`` to PostgreSQL and to Python alike) is
refused rather than trusted. Checked byte for byte against the server in
``tests/e2e/test_encodings.py``.
"""

from __future__ import annotations

import re

import attrs

# A character that starts with a byte from 0x80, as long as PostgreSQL's mblen says
# (src/common/wchar.c). Trail bytes may be anything: the codec (or the server) refuses
# what is not a character, and an ASCII trail byte stays inside its character.
_ONE_BYTE = b""  # single-byte: the codec reads every byte from 0x80 as non-ASCII (a unit test proves it)
_EUC = rb"\x8f[\x00-\xff]{2}|[\x80-\x8e\x90-\xff][\x00-\xff]"  # SS3: three bytes, others two (pg_euc_mblen)
_TWO_BYTES = rb"[\x80-\xff][\x00-\xff]"  # BIG5, GBK, UHC, EUC_CN
_SJIS = rb"[\xa1-\xdf]|[\x80-\xa0\xe0-\xff][\x00-\xff]"  # half-width katakana: one byte (pg_sjis_mblen)
_GB18030 = rb"[\x80-\xff][\x30-\x39][\x00-\xff]{2}|[\x80-\xff][\x00-\x2f\x3a-\xff]"  # digit second: four

# PostgreSQL's name → (Python codec, one non-ASCII character). None: no codec reads it
# as PostgreSQL does; a session in it is refused.
_ENCODINGS: dict[str, tuple[str, bytes] | None] = {
    "SQL_ASCII": ("utf-8", b""),  # no conversion: the server checks the bytes as its own (UTF8)
    "UTF8": ("utf-8", b""),
    "EUC_JP": ("euc_jp", _EUC),
    "EUC_CN": ("gb2312", _TWO_BYTES),
    "EUC_KR": ("euc_kr", _EUC),
    "EUC_TW": None,  # CNS 11643: no Python codec
    "EUC_JIS_2004": ("euc_jis_2004", _EUC),
    "MULE_INTERNAL": None,
    "LATIN1": ("latin-1", _ONE_BYTE),
    "LATIN2": ("iso8859_2", _ONE_BYTE),
    "LATIN3": ("iso8859_3", _ONE_BYTE),
    "LATIN4": ("iso8859_4", _ONE_BYTE),
    "LATIN5": ("iso8859_9", _ONE_BYTE),
    "LATIN6": ("iso8859_10", _ONE_BYTE),
    "LATIN7": ("iso8859_13", _ONE_BYTE),
    "LATIN8": ("iso8859_14", _ONE_BYTE),
    "LATIN9": ("iso8859_15", _ONE_BYTE),
    "LATIN10": ("iso8859_16", _ONE_BYTE),
    "WIN1256": ("cp1256", _ONE_BYTE),
    "WIN1258": ("cp1258", _ONE_BYTE),
    "WIN866": ("cp866", _ONE_BYTE),
    "WIN874": ("cp874", _ONE_BYTE),
    "KOI8R": ("koi8_r", _ONE_BYTE),
    "WIN1251": ("cp1251", _ONE_BYTE),
    "WIN1252": ("cp1252", _ONE_BYTE),
    "ISO_8859_5": ("iso8859_5", _ONE_BYTE),
    "ISO_8859_6": ("iso8859_6", _ONE_BYTE),
    "ISO_8859_7": ("iso8859_7", _ONE_BYTE),
    "ISO_8859_8": ("iso8859_8", _ONE_BYTE),
    "WIN1250": ("cp1250", _ONE_BYTE),
    "WIN1253": ("cp1253", _ONE_BYTE),
    "WIN1254": ("cp1254", _ONE_BYTE),
    "WIN1255": ("cp1255", _ONE_BYTE),
    "WIN1257": ("cp1257", _ONE_BYTE),
    "KOI8U": ("koi8_u", _ONE_BYTE),
    # Client-only encodings: a trail byte may be ASCII (0x5C, 0x7C, letters, digits).
    "SJIS": ("cp932", _SJIS),  # PostgreSQL's SJIS is Microsoft's code page 932
    "BIG5": ("cp950", _TWO_BYTES),
    "GBK": ("gbk", _TWO_BYTES),
    "UHC": ("cp949", _TWO_BYTES),
    "GB18030": ("gb18030", _GB18030),
    "JOHAB": ("johab", _EUC),  # pg_johab_mblen is pg_euc_mblen
    "SHIFT_JIS_2004": ("shift_jis_2004", _SJIS),  # its codec reads 0x5C as a yen sign: the cut fixes it
}

# Characters (as bytes) that PostgreSQL's conversion reads as another character than the Python
# codec does: a statement holding one is refused, since a name or a literal with it would not be
# what the server reads (a masked table's name, a search_path). Found by converting every one-,
# two- and (EUC) three-byte sequence with the server's convert_from and with the codec
# (PostgreSQL 15); `tests/e2e/test_encodings.py` checks the table against the server it runs.
_READ_OTHERWISE: dict[str, frozenset[bytes]] = {
    "EUC_JP": frozenset(map(bytes.fromhex, ["a1c1", "a1c2", "a1dd", "a1f1", "a1f2", "a2cc", "8fa2c3"])),
    "EUC_JIS_2004": frozenset(map(bytes.fromhex, ["a1b1", "a1bd", "a1ef", "a2d6", "a2d7"])),
    "BIG5": frozenset(map(bytes.fromhex, [
        "a145", "a14e", "a15a", "a1c2", "a1c3", "a1c5", "a1e3", "a1f2", "a1f3", "a1fe", "a240", "a241", "a242",
        "a244", "a246", "a247", "a2cc", "a2ce"])),
    "SHIFT_JIS_2004": frozenset(map(bytes.fromhex, ["815c", "81d4", "81d5"])),
}

# Encodings the server only converts from (PG_ENCODING_IS_CLIENT_ONLY): a trail byte may be ASCII.
_CLIENT_ONLY = frozenset({"SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004"})

# Every spelling PostgreSQL accepts (encnames.c), cleaned as it cleans them: ASCII letters
# and digits only, lower case.
_ALIASES = {
    "abc": "WIN1258", "alt": "WIN866", "big5": "BIG5", "euccn": "EUC_CN", "eucjis2004": "EUC_JIS_2004",
    "eucjp": "EUC_JP", "euckr": "EUC_KR", "euctw": "EUC_TW", "gb18030": "GB18030", "gbk": "GBK",
    "iso88591": "LATIN1", "iso885910": "LATIN6", "iso885913": "LATIN7", "iso885914": "LATIN8",
    "iso885915": "LATIN9", "iso885916": "LATIN10", "iso88592": "LATIN2", "iso88593": "LATIN3",
    "iso88594": "LATIN4", "iso88595": "ISO_8859_5", "iso88596": "ISO_8859_6", "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8", "iso88599": "LATIN5", "johab": "JOHAB", "koi8": "KOI8R", "koi8r": "KOI8R",
    "koi8u": "KOI8U", "latin1": "LATIN1", "latin10": "LATIN10", "latin2": "LATIN2", "latin3": "LATIN3",
    "latin4": "LATIN4", "latin5": "LATIN5", "latin6": "LATIN6", "latin7": "LATIN7", "latin8": "LATIN8",
    "latin9": "LATIN9", "mskanji": "SJIS", "muleinternal": "MULE_INTERNAL", "shiftjis": "SJIS",
    "shiftjis2004": "SHIFT_JIS_2004", "sjis": "SJIS", "sqlascii": "SQL_ASCII", "tcvn": "WIN1258",
    "tcvn5712": "WIN1258", "uhc": "UHC", "unicode": "UTF8", "utf8": "UTF8", "vscii": "WIN1258",
    "win": "WIN1251", "win1250": "WIN1250", "win1251": "WIN1251", "win1252": "WIN1252", "win1253": "WIN1253",
    "win1254": "WIN1254", "win1255": "WIN1255", "win1256": "WIN1256", "win1257": "WIN1257",
    "win1258": "WIN1258", "win866": "WIN866", "win874": "WIN874", "win932": "SJIS", "win936": "GBK",
    "win949": "UHC", "win950": "BIG5", "windows1250": "WIN1250", "windows1251": "WIN1251",
    "windows1252": "WIN1252", "windows1253": "WIN1253", "windows1254": "WIN1254", "windows1255": "WIN1255",
    "windows1256": "WIN1256", "windows1257": "WIN1257", "windows1258": "WIN1258", "windows866": "WIN866",
    "windows874": "WIN874", "windows932": "SJIS", "windows936": "GBK", "windows949": "UHC", "windows950": "BIG5",
}
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]+")
_ASCII_CHAR = re.compile(r"[\x00-\x7f]")


def canonical(name: str) -> str | None:
    """PostgreSQL's own name for an encoding spelt ``name`` (``utf-8`` → ``UTF8``); None if unknown."""
    if len(name.encode("utf-8", "surrogatepass")) >= 64:  # NAMEDATALEN: "certainly not in the table"
        return None
    return _ALIASES.get(_NOT_ALNUM.sub("", name).lower())


class UnsupportedEncoding(ValueError):
    """A client_encoding pgwarden cannot read as the server does."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class UnreadableText(ValueError):
    """Bytes that are not text in the session's encoding, or not text pgwarden can read safely.

    ``why`` completes "the statement ...": ``is not valid SJIS text``.
    """

    def __init__(self, encoding: str, offset: int, why: str) -> None:
        super().__init__(f"{why} at byte {offset}")
        self.encoding = encoding
        self.offset = offset
        self.why = why


@attrs.frozen
class ClientEncoding:
    """One client encoding: its PostgreSQL name and how to read statement bytes in it."""

    name: str
    codec: str
    _run: re.Pattern | None = attrs.field(default=None, repr=False)  # non-ASCII characters in a row
    _char: re.Pattern | None = attrs.field(default=None, repr=False)  # one of them
    _otherwise: frozenset[bytes] = attrs.field(default=frozenset(), repr=False)  # `_READ_OTHERWISE`

    @property
    def client_only(self) -> bool:
        """Not a server encoding: a character's second byte may be ASCII (0x5C, a backslash)."""
        return self.name in _CLIENT_ONLY

    def decode(self, data: bytes) -> str:
        """The text the server's lexer will see; UnreadableText when it must not be guessed."""
        if data.isascii():  # ASCII bytes are ASCII in every encoding PostgreSQL has for clients
            return data.decode("ascii")
        if self._run is None:
            try:
                return data.decode(self.codec)
            except UnicodeDecodeError as e:
                raise UnreadableText(self.name, e.start, f"is not valid {self.name} text") from None
        parts: list[str] = []
        at = 0
        for match in self._run.finditer(data):
            start, end = match.span()
            if start > at:
                parts.append(self._ascii(data, at, start))
            try:
                text = data[start:end].decode(self.codec)
            except UnicodeDecodeError as e:
                raise UnreadableText(self.name, start + e.start, f"is not valid {self.name} text") from None
            otherwise = self._otherwise
            if otherwise and self._char is not None:
                chunk = data[start:end]
                if any(c in chunk for c in otherwise):  # (a cheap look first: nearly never)
                    for char in self._char.finditer(chunk):
                        if char.group() in otherwise:
                            raise UnreadableText(self.name, start + char.start(),
                                                 f"has a {self.name} character that PostgreSQL reads as another "
                                                 f"character than pgwarden does")
            ascii_char = _ASCII_CHAR.search(text)
            if ascii_char is not None:
                raise UnreadableText(self.name, start, f"has a {self.name} character that pgwarden cannot "
                                                       f"tell from {ascii_char.group()!r}")
            parts.append(text)
            at = end
        if at < len(data):
            parts.append(self._ascii(data, at, len(data)))
        return "".join(parts)

    def _ascii(self, data: bytes, start: int, end: int) -> str:
        chunk = data[start:end]
        if not chunk.isascii():  # a lead byte with its character cut off at the end
            raise UnreadableText(self.name, start + next(i for i, b in enumerate(chunk) if b >= 0x80),
                                 f"is not valid {self.name} text (a character is cut off)")
        return chunk.decode("ascii")

    def readable(self, data: bytes) -> str:
        """For names and records: the text, or the bytes that are not text as ``\\xNN`` escapes."""
        try:
            return self.decode(data)
        except UnreadableText as e:  # what could be read, then the rest as bytes
            try:
                head = self.decode(data[: e.offset])
            except UnreadableText:
                head = data[: e.offset].decode("ascii", "backslashreplace")
            return head + data[e.offset :].decode("ascii", "backslashreplace")


def client_encoding(name: str) -> ClientEncoding:
    """The encoding the server calls ``name``; UnsupportedEncoding when pgwarden cannot read it."""
    pg_name = canonical(name)
    entry = _ENCODINGS.get(pg_name) if pg_name is not None else None
    if entry is None or pg_name is None:
        raise UnsupportedEncoding(pg_name or name)
    codec, run = entry
    return _CACHE.setdefault(pg_name, ClientEncoding(
        pg_name, codec, re.compile(b"(?:" + run + b")+") if run else None, re.compile(run) if run else None,
        _READ_OTHERWISE.get(pg_name, frozenset())))


_CACHE: dict[str, ClientEncoding] = {}

UTF8 = client_encoding("UTF8")
