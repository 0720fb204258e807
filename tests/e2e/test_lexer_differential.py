"""Differential: pgwarden reads the same statements out of the same bytes as the server.

For strings built from quotes, backslashes, semicolons, E'' and U&'' prefixes,
dollar quotes, comments and characters of the encoding (those whose second byte
is 0x5C or 0x7C first), encoded in every client encoding PostgreSQL accepts and
pgwarden can read, under standard_conforming_strings on and off: the bytes go to
the server as a simple Query over a raw connection (the encoding and the setting
in the startup packet, no pgwarden in between), and through pgwarden's reading
(`ClientEncoding.decode`, then `lexer.parse_json` with the session's settings).
Both must find the same statements with the same literal values, or both a
syntax error. Fast by default (a quarter of the profile's examples per
encoding), deep under ``HYPOTHESIS_PROFILE=deep``.
"""

from __future__ import annotations

import functools
import json
import socket

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pglast.parser import ParseError

from pgwarden import lexical
from pgwarden.relay.handshake import UpstreamLogin
from pgwarden.sql import encoding as enc
from pgwarden.sql.encoding import UnreadableText, client_encoding
from pgwarden.sql.lexer import parse_json
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER
from pgwarden.wire import messages as m
from pgwarden.wire.framing import NEED_DATA, MessageFramer

ENCODINGS = sorted(name for name, entry in enc._ENCODINGS.items() if entry is not None)

# Where the server raises errors while reading the text: the lexer, the grammar, and the checks of
# the bytes an escape makes (the server's own encoding; its conversion of the client's bytes is
# told apart in server_reading). An error in a result's output comes after its RowDescription.
READING = {"scan.l", "scansup.c", "gram.y", "parser.c", "mbutils.c", "wchar.c"}


class ServerSession:
    """A raw connection straight to the server, for sending exactly chosen bytes."""

    def __init__(self, host: str, port: int, **parameters: str) -> None:
        login = UpstreamLogin(APP_USER, "appdb", APP_PASSWORD, tuple(parameters.items()))
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(login.start())
        while not login.done:
            data = self.sock.recv(65536)
            assert data, "the server closed during login"
            out = login.receive(data)
            if out:
                self.sock.sendall(out)
        self.parameters = {p.name: p.value for p in login.server_parameters}
        self.framer = MessageFramer(1 << 26)
        self.framer.feed(login.leftover())

    def query(self, body: bytes) -> list:
        self.sock.sendall(m.frame(b"Q", body + b"\0"))
        out = []
        while True:
            raw = self.framer.next_frame()
            if raw is NEED_DATA:
                self.framer.feed(self.sock.recv(65536))
                continue
            msg = m.decode_backend(raw) if raw[:1] != b"D" else ("row", _values(raw))
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    def close(self) -> None:
        self.sock.close()


def _values(raw: bytes) -> tuple:
    """A DataRow's values as the bytes the server sent (in the client encoding)."""
    body, values, at = raw[5:], [], 2
    for _ in range(int.from_bytes(body[:2], "big")):
        n = int.from_bytes(body[at : at + 4], "big", signed=True)
        at += 4
        values.append(None if n < 0 else body[at : at + n])
        at += max(n, 0)
    return tuple(values)


@pytest.fixture(scope="module")
def sessions(pg_server):
    opened: dict = {}

    def session(encoding: str, standard: bool) -> ServerSession:
        key = (encoding, standard)
        if key not in opened:
            opened[key] = ServerSession(pg_server.host, pg_server.port, client_encoding=encoding,
                                        standard_conforming_strings="on" if standard else "off")
        return opened[key]

    yield session
    for s in opened.values():
        s.close()


# --------------------------------------------------------------------------- what to send

_LOOK_IN = [*map(chr, range(0x80, 0x800)), *map(chr, range(0x3000, 0x3100)), *map(chr, range(0x4E00, 0x5400)),
            *map(chr, range(0xAC00, 0xAC80)), *map(chr, range(0xFF00, 0xFFF0)), "😀"]


@functools.cache
def characters(name: str) -> tuple[list[bytes], list[bytes]]:
    """The encoding's non-ASCII characters pgwarden reads (as bytes): those with a second byte
    0x5C or 0x7C, and the others."""
    e = client_encoding(name)
    tricky, plain = [], []
    for c in _LOOK_IN:
        try:
            data = c.encode(e.codec)
            if e.decode(data) != c:
                continue
        except (UnicodeError, UnreadableText):
            continue
        (tricky if len(data) > 1 and data[1] in (0x5C, 0x7C) else plain).append(data)
    return tricky, plain


ASCII = [b"'", b"''", b"\\", b"\\'", b"\\\\", b";", b"E'", b"$$", b"$q$", b" ", b"a", b"1", b"--", b"\n",
         b"/*", b"*/", b'"', b"\\x41", b"\\n", b"|", b"U&'"]
OPENERS = [b"'", b"E'", b"e'", b"$$", b"$q$", b"U&'"]
CLOSERS = {b"'": b"'", b"E'": b"'", b"e'": b"'", b"$$": b"$$", b"$q$": b"$q$", b"U&'": b"'"}


@st.composite
def statement_bytes(draw, name: str) -> bytes:
    tricky, plain = characters(name)
    pieces = [st.sampled_from(ASCII)]
    if tricky:
        pieces.append(st.sampled_from(tricky))
    if plain:
        pieces.append(st.sampled_from(plain))
    content = st.lists(st.one_of(pieces), max_size=6).map(b"".join)
    # Most mistakes need a character of the encoding and an ASCII special near each other.
    mixed = st.tuples(st.sampled_from(ASCII), st.one_of(pieces[1:] or pieces), st.sampled_from(ASCII)).map(b"".join)

    def literal():
        opener = draw(st.sampled_from(OPENERS))
        closer = draw(st.one_of(st.just(CLOSERS[opener]), st.sampled_from(OPENERS)))
        return opener + draw(content) + draw(st.one_of(st.just(b""), mixed)) + draw(content) + closer

    statements = []
    for _ in range(draw(st.integers(1, 3))):
        targets = [literal() for _ in range(draw(st.integers(1, 2)))]
        statements.append(b"SELECT " + b", ".join(targets))
    separator = draw(st.sampled_from([b";", b"; ", b";\n"]))
    tail = draw(st.sampled_from([b"", b" --" + draw(content), b";"]))
    return separator.join(statements) + tail


# --------------------------------------------------------------------------- the two readings

def pgwarden_reading(data: bytes, name: str, parameters: dict):
    """What pgwarden makes of the bytes: "unreadable", "error", or per statement its literal values."""
    encoding = client_encoding(name)
    try:
        text = encoding.decode(data)
    except UnreadableText:
        return "unreadable"
    try:
        tree = json.loads(parse_json(text, lexical.lexer_of(parameters, encoding)))
    except ParseError:
        return "error"
    readings = []
    for raw in tree.get("stmts", []):
        select = raw["stmt"].get("SelectStmt")
        if select is None:
            readings.append(None)
            continue
        values = []
        for target in select.get("targetList", []):
            const = target["ResTarget"]["val"].get("A_Const", {})
            values.append(const["sval"].get("sval", "") if "sval" in const else None)
        readings.append(values)
    return readings


def server_reading(session: ServerSession, data: bytes, name: str):
    """What the server did: ("refused input", e) | ("error", e) | (results, error or None)."""
    answer = session.query(data)
    results, current, error = [], None, None
    for msg in answer:
        if isinstance(msg, m.RowDescription):
            current = []
        elif isinstance(msg, tuple):
            current.append(msg[1])
        elif isinstance(msg, m.CommandComplete):
            results.append(current[0] if current else None)
            current = None
        elif isinstance(msg, m.ErrorResponse):
            error = msg
    if error is not None and not results and name != "UTF8" and (
            error.sqlstate == "22021" and f'for encoding "{name}"' in error.message
            or error.sqlstate == "22P05" and f'in encoding "{name}" has no equivalent' in error.message):
        return "refused input", error  # the server's conversion refused bytes the codec took
    if error is not None and not results and current is None and error.get("F") in READING:
        return "error", error
    return results, error


@pytest.mark.parametrize("name", ENCODINGS)
@settings(max_examples=max(10, settings().max_examples // 4),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_pgwarden_reads_the_statements_the_server_reads(sessions, name, data):
    standard = data.draw(st.booleans(), label="standard_conforming_strings")
    sql = data.draw(statement_bytes(name), label="bytes")
    session = sessions(name, standard)
    ours = pgwarden_reading(sql, name, session.parameters)
    theirs = server_reading(session, sql, name)
    if ours == "unreadable":
        event("pgwarden refuses bytes it cannot read")
        return
    if theirs[0] == "refused input":
        event("the server refuses the bytes")
        return
    if theirs[0] == "error":
        assert ours == "error", f"the server found a syntax error ({theirs[1].message}), pgwarden: {ours}"
        event("both: syntax error")
        return
    results, error = theirs
    assert ours != "error", f"pgwarden found a syntax error, the server ran {results} ({error and error.message})"
    if error is None:
        assert len(results) == len(ours), (results, ours)
    else:  # an execution error stops the rest: what ran must be what pgwarden read first
        assert len(results) < len(ours), (results, ours, error.message)
    decoder = client_encoding(name)
    for got, expected in zip(results, ours):
        if expected is not None and len(expected) == 1 and expected[0] is not None:
            assert got is not None and len(got) == 1
            assert decoder.decode(got[0]) == expected[0], (got, expected)
    event("both: the same statements")


def test_the_generated_characters_include_second_bytes_0x5c_and_0x7c():
    for name in ("SJIS", "BIG5", "GBK", "GB18030", "SHIFT_JIS_2004"):
        tricky, _ = characters(name)
        assert {t[1] for t in tricky} == {0x5C, 0x7C}, name
