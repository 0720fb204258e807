"""The relay reads statement text as the server does: the session's encoding, fixed for the session.

Conversation style, as in test_relay.py: ``client(...)`` is what the agent sends,
``upstream()`` what pgwarden forwards, ``server(...)`` what PostgreSQL answers.
"""

from __future__ import annotations

import pytest
from test_relay import Talk

from pgwarden.relay.engine import ALLOW, Relay, SessionState
from pgwarden.sql.encoding import UnsupportedEncoding
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.wire import messages as m


class Session(Talk):
    """A Talk whose server reported ``parameters`` at login."""

    def __init__(self, decide=lambda req: ALLOW, **parameters: str) -> None:
        self.requests = []

        def recording(req):
            self.requests.append(req)
            return decide(req)

        self.relay = Relay(recording, state=SessionState(parameters=dict(parameters)))

    def raw(self, type_byte: bytes, body: bytes) -> None:
        self.relay.client_data(m.frame(type_byte, body))


SNEAKY = "SELECT E'表'; DELETE FROM t; --'"


def test_query_and_parse_are_decoded_in_the_session_encoding():
    t = Session(client_encoding="SJIS")
    t.raw(b"Q", SNEAKY.encode("cp932") + b"\0")
    t.server(m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    t.raw(b"P", "名".encode("cp932") + b"\0" + SNEAKY.encode("cp932") + b"\0\0\0")
    simple, extended = t.requests
    assert simple.sql == SNEAKY and simple.encoding == "SJIS" and simple.refusal is None
    assert extended.sql == SNEAKY and extended.statement_name == "名"
    # backslash_quote's default refuses \' in a client-only encoding: so does pgwarden's parse.
    assert simple.lexer == LexerSettings(standard_conforming_strings=True, backslash_quote=False)
    assert t.relay.state.statements["名"].sql == SNEAKY


def test_the_client_bytes_go_upstream_unchanged():
    t = Session(client_encoding="SJIS")
    data = m.frame(b"Q", SNEAKY.encode("cp932") + b"\0")
    t.relay.client_data(data)
    assert b"".join(t.relay.pop_upstream()) == data


def test_a_session_reports_its_lexer_settings_on_every_request():
    t = Session(client_encoding="UTF8", standard_conforming_strings="off")
    t.client(m.Query("select 1"))
    (req,) = t.requests
    assert req.lexer == LexerSettings(standard_conforming_strings=False) and req.encoding == "UTF8"
    t = Session(client_encoding="UTF8", standard_conforming_strings="on")
    t.client(m.Query("select 1"))
    assert t.requests[0].lexer is DEFAULT_LEXER


@pytest.mark.parametrize("encoding, body", [
    ("UTF8", b"select '\xc3('"),  # was read as LATIN1 before: now refused
    ("SJIS", b"select '\x95"),
    ("SHIFT_JIS_2004", b"SELECT E'\x81\x5f'; DELETE FROM t; --'"),
])
def test_unreadable_text_is_refused_whatever_the_decider_says(encoding, body):
    t = Session(client_encoding=encoding)  # the decider allows everything
    t.raw(b"Q", body + b"\0")
    (req,) = t.requests
    assert req.refusal is not None and req.refusal.sqlstate == "42501"
    assert req.refusal.message.startswith("pgwarden: blocked: the statement ")
    assert encoding in req.refusal.message and encoding in req.refusal.hint
    assert "\\x" in req.sql  # the record shows the bytes it could not read
    (sent,) = t.upstream()
    assert isinstance(sent, m.Query) and sent.sql.startswith("DO $pgwarden$")
    assert body not in m.Query(sent.sql).encode()


def test_an_unreadable_parse_is_refused_and_skips_until_sync():
    t = Session(client_encoding="BIG5")
    t.raw(b"P", b"\0select '\xa4'\0\0\0")
    t.client(m.Bind("", ""), m.Execute("", 0), m.Sync())
    (req,) = t.requests
    assert req.protocol == "extended" and req.refusal is not None
    sent = t.upstream()
    assert [type(x) for x in sent] == [m.Parse, m.Bind, m.Execute, m.Sync]
    assert sent[0].sql.startswith("DO $pgwarden$")


def test_an_unreadable_statement_name_is_refused():
    t = Session(client_encoding="UTF8")
    t.raw(b"P", b"n\xff\0select 1\0\0\0")
    (req,) = t.requests
    assert req.refusal.message == "pgwarden: blocked: the statement name is not valid UTF8 text"


def test_names_of_bind_describe_and_close_are_read_in_the_session_encoding():
    t = Session(client_encoding="SJIS")
    name = "表".encode("cp932")
    t.raw(b"P", name + b"\0select 1\0\0\0")
    t.raw(b"B", b"\0" + name + b"\0\0\0\0\0\0\0")
    assert t.relay.state.portals[""].statement is t.relay.state.statements["表"]
    t.raw(b"C", b"S" + name + b"\0")
    assert "表" not in t.relay.state.statements


def test_own_describe_names_the_portal_in_the_clients_bytes():
    t = Session(client_encoding="SJIS")
    portal = "表".encode("cp932")
    t.raw(b"P", b"\0select 1\0\0\0")
    t.raw(b"B", portal + b"\0\0\0\0\0\0\0\0")
    t.raw(b"E", portal + b"\0\0\0\0\0")
    up = b"".join(t.relay.pop_upstream())
    assert m.frame(b"D", b"P" + portal + b"\0") in up


@pytest.mark.parametrize("name, value", [
    ("client_encoding", "SJIS"), ("standard_conforming_strings", "off"),
])
def test_a_reported_change_ends_the_session(name, value):
    t = Session(client_encoding="UTF8", standard_conforming_strings="on")
    t.client(m.Query("select f()"))
    t.upstream()
    t.server(m.ParameterStatus(name, value), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    (fatal,) = t.down()
    assert isinstance(fatal, m.ErrorResponse) and fatal.get("V") == "FATAL" and fatal.sqlstate == "42501"
    assert name in fatal.message and value in fatal.message
    assert t.upstream() == [m.Terminate()]
    assert t.relay.closing


def test_a_report_of_the_same_value_or_another_setting_passes():
    t = Session(client_encoding="SJIS", standard_conforming_strings="on")
    t.server(m.ParameterStatus("client_encoding", "SJIS"), m.ParameterStatus("standard_conforming_strings", "on"),
             m.ParameterStatus("TimeZone", "UTC"))
    assert len(t.down()) == 3 and not t.relay.closing


@pytest.mark.parametrize("encoding", ["MULE_INTERNAL", "EUC_TW"])
def test_a_session_in_an_encoding_without_a_codec_cannot_be_relayed(encoding):
    with pytest.raises(UnsupportedEncoding):
        Relay(lambda req: ALLOW, state=SessionState(parameters={"client_encoding": encoding}))


def test_refusals_are_ascii_so_every_encoding_reads_them_alike():
    nasty = "表\\' ; 功\\x'; DELETE FROM t; --"  # trail bytes 0x5C in SJIS and BIG5 if sent as such
    from pgwarden.verdict import Refusal

    t = Session(lambda req: Refusal("42501", nasty, nasty, nasty), client_encoding="SJIS")
    t.client(m.Query("select 1"))
    (sent,) = t.upstream()
    assert sent.sql.isascii()
    import pglast

    tree = pglast.parse_sql(sent.sql)
    assert len(tree) == 1 and type(tree[0].stmt).__name__ == "DoStmt"


WAIT = "pgwarden: blocked: a statement with non-ASCII text or backslashes must wait"


def test_text_settings_could_change_waits_for_the_statements_before_it():
    t = Session(client_encoding="UTF8")
    t.client(m.Query("select f()"), m.Query("select 'é'"), m.Query("select 'a\\'"), m.Query("select 2"))
    first, accented, backslash, ascii_ = t.requests
    assert first.refusal is None and ascii_.refusal is None
    assert accented.refusal.message.startswith(WAIT) and backslash.refusal.message.startswith(WAIT)
    t.upstream()
    for _ in range(4):
        t.server(m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    t.client(m.Query("select 'é'"))  # everything before it has been reported: read as it is
    assert t.requests[-1].refusal is None


def test_an_execute_is_reported_at_the_ready_for_query_of_its_sync():
    t = Session(client_encoding="UTF8")
    t.client(m.Parse("", "select f()"), m.Bind("", ""), m.Execute("", 0), m.Sync())
    t.server(m.ParseComplete(), m.BindComplete(), m.CommandComplete("SELECT 1"))
    t.client(m.Parse("n", "select 'é'"))  # f() has run, but what it did is reported only at ReadyForQuery
    assert t.requests[-1].refusal.message.startswith(WAIT)
    t.client(m.Sync())
    t.upstream()
    t.server(m.ReadyForQuery("I"))  # f()'s Sync
    t.server(m.ParseComplete(), m.BindComplete(), m.ErrorResponse.build("ERROR", "42501", "x"),
             m.ReadyForQuery("I"))  # the refusal's
    t.client(m.Parse("n", "select 'é'"))
    assert t.requests[-1].refusal is None


def _name_by_find(raw: bytes, start: int, encoding):
    """`engine._name` as it was written before its one-scan form: ``find`` and ``isascii``."""
    from pgwarden.wire.errors import ProtocolError

    if len(raw) > start and raw[start] == 0:
        return "", start + 1
    end = raw.find(b"\0", start)
    if end < 0 or len(raw) < 6:
        raise ProtocolError(f"message {chr(raw[0])!r}: unterminated name")
    name = raw[start:end]
    if name.isascii():
        return name.decode("ascii"), end + 1
    return encoding.readable(name), end + 1


@pytest.mark.parametrize("encoding", ["UTF8", "SJIS", "LATIN1"])
def test_a_name_is_read_as_find_and_isascii_read_it(encoding):
    # Names with and without a NUL, ASCII or not, valid in the encoding or not, at any start.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pgwarden.relay.engine import _name
    from pgwarden.sql.encoding import client_encoding
    from pgwarden.testing.matrix import examples

    enc = client_encoding(encoding)

    def outcome(f, raw, start):
        try:
            return f(raw, start, enc)
        except Exception as e:  # the same exception, with the same message
            return type(e), str(e)

    @settings(max_examples=examples(1500), deadline=None)
    @given(raw=st.binary(min_size=1, max_size=24).map(lambda b: b"B" + b) |
           st.lists(st.sampled_from([b"\0", b"a", b"P0_1", "名".encode(), b"\x81", b"\xff"]), min_size=1,
                    max_size=6).map(lambda parts: b"B\0\0\0\0" + b"".join(parts)),
           start=st.integers(0, 8))
    def check(raw, start):
        start = min(start, len(raw))
        assert outcome(_name, raw, start) == outcome(_name_by_find, raw, start)

    check()
