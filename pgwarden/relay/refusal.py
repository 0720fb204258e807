"""Refusals raised by the server itself.

pgwarden never emulates what a server error does to a session. In place of a
refused statement it sends a statement of its own that raises pgwarden's error
(a ``DO`` block with ``RAISE ... USING``), in the same protocol position. The
server then aborts the transaction, applies skip-until-Sync, rolls back an
implicit pipeline transaction and reports the transaction status, exactly as it
would for an error of its own; there is no emulated state to get wrong.
"""

from __future__ import annotations

import secrets

from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m
from pgwarden.wire.errors import ProtocolError

# ErrorResponse fields that describe pgwarden's DO block rather than the
# client's statement; they are removed before the client sees the error.
OWN_ERROR_NOISE = "WFLRPpq"


def literal(text: str) -> str:
    """An escape-string literal, valid whatever standard_conforming_strings says.

    ASCII only (other characters as ``\\uXXXX`` escapes), so that the server reads it
    the same in every client_encoding: sent as UTF-8 to an SJIS session, the last
    byte of a character followed by an escaping backslash would make one SJIS
    character and free the quote after it.
    """
    escaped = text.replace("\\", "\\\\").replace("'", "''")
    if escaped.isascii():
        return "E'" + escaped + "'"
    return "E'" + "".join(c if c < "\x80" else _unicode_escape(c) for c in escaped) + "'"


def _unicode_escape(c: str) -> str:
    code = ord(c)
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate is no character: the server would refuse it
        return "?"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def raise_items(refusal: Refusal) -> str:
    """The ``USING`` list of a PL/pgSQL RAISE of ``refusal``."""
    items = [f"ERRCODE = {literal(refusal.sqlstate)}", f"MESSAGE = {literal(refusal.message)}"]
    if refusal.detail:
        items.append(f"DETAIL = {literal(refusal.detail)}")
    if refusal.hint:
        items.append(f"HINT = {literal(refusal.hint)}")
    return ", ".join(items)


def do_block(body: str) -> str:
    """``DO`` with ``body`` dollar-quoted under a tag the body does not contain."""
    tag = "$pgwarden$"
    while tag in body:
        tag = f"$pgwarden_{secrets.token_hex(4)}$"
    return f"DO {tag}{body}{tag}"


def raising_sql(refusal: Refusal) -> str:
    """SQL that makes the server raise ``refusal`` as its own error."""
    return do_block(f"BEGIN RAISE EXCEPTION USING {raise_items(refusal)}; END")


def raising_query(refusal: Refusal) -> bytes:
    """A simple-protocol Query that raises ``refusal``."""
    return m.Query(raising_sql(refusal)).encode()


def raising_extended(refusal: Refusal) -> bytes:
    """Parse/Bind/Execute of the unnamed statement and portal, raising ``refusal`` on Execute."""
    return (
        m.Parse("", raising_sql(refusal)).encode()
        + m.Bind("", "").encode()
        + m.Execute("", 0).encode()
    )


def clean_own_error(raw: bytes) -> bytes:
    """The server's report of pgwarden's own error, without the DO block's context.

    Cut as bytes: the texts are in the session's client_encoding, which decoding
    and encoding again as UTF-8 would garble.
    """
    body = raw[5:]
    kept = []
    at = 0
    while at < len(body) and body[at] != 0:
        end = body.find(b"\0", at + 1)
        if end < 0:
            raise ProtocolError("ErrorResponse: unterminated field")
        if chr(body[at]) not in OWN_ERROR_NOISE:
            kept.append(body[at : end + 1])
        at = end + 1
    return m.frame(raw[:1], b"".join(kept) + b"\0")
