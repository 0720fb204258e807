"""Walkarounds through the server's reading of text (issue 15, cause 1), end to end.

pgwarden must analyse the bytes as the server will execute them: in the session's
client_encoding, with its standard_conforming_strings. Each walkaround here ran a
DELETE that pgwarden took for a string literal; now it is refused, and the table
still has its rows afterwards.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.wire import messages as m

POLICY = {
    "name": "agents",
    "when": {"groups": ["ai-agents"]},
    "rules": [
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "no-ddl", "block": {"statements": ["ddl", "truncate", "unknown"]},
         "reason": "禁止變更表 (migrations)"},  # not ASCII: must reach SJIS, BIG5, GBK clients intact
    ],
}
ROWS = 3

# One character per encoding whose second byte is 0x5C, a backslash when read alone.
BACKSLASH_TRAIL = {"SJIS": ("表", "cp932"), "BIG5": ("功", "cp950"), "GBK": ("乗", "gbk"),
                   "GB18030": ("乗", "gb18030"), "SHIFT_JIS_2004": ("表", "shift_jis_2004")}


def sneaky_forms(char: str) -> list[str]:
    """Text that hides a DELETE from a reader that takes the character's 0x5C for a backslash."""
    return [
        f"SELECT E'{char}'; DELETE FROM walkaround_t; --'",
        f"WITH x AS (SELECT E'{char}') DELETE FROM walkaround_t --') SELECT 1",  # one statement: for Parse
    ]


SCS_FORMS = [
    "SELECT 'x\\''; DELETE FROM walkaround_t; --'",
    "WITH x AS (SELECT 'x\\'') DELETE FROM walkaround_t --') SELECT 1",
]


@pytest.fixture
def table(pg_server):
    pg_server.psql(
        "drop table if exists walkaround_t; create table walkaround_t (id int);"
        f"insert into walkaround_t select generate_series(1, {ROWS})", "appdb")
    return lambda database="appdb": int(pg_server.psql("select count(*) from walkaround_t", database))


@pytest.fixture
def guarded(make_pgwarden, table):
    return make_pgwarden(policies=[POLICY])


def simple(rc: RawClient, sql: bytes) -> list:
    rc.send(m.frame(b"Q", sql + b"\0"))
    return rc.until_ready()


def extended(rc: RawClient, sql: bytes) -> list:
    rc.send(m.frame(b"P", b"\0" + sql + b"\0\0\0") + m.Bind("", "").encode() + m.Execute("", 0).encode()
            + m.Sync().encode())
    return rc.until_ready()


def error_of(answer: list) -> m.ErrorResponse | None:
    return next((x for x in answer if isinstance(x, m.ErrorResponse)), None)


def login(running, **params) -> RawClient:
    rc = RawClient(running.host, running.port)
    answer = rc.login(running.token(), **params)
    assert isinstance(answer[-1], m.ReadyForQuery), answer
    return rc


# --------------------------------------------------------------------------- standard_conforming_strings

@pytest.mark.parametrize("setting", [
    "SET standard_conforming_strings = off",
    "SET SESSION standard_conforming_strings TO 'false'",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SELECT set_config(n, 'off', false) FROM (VALUES ('standard_conforming_strings')) v(n)",
])
@pytest.mark.parametrize("send", [simple, extended])
def test_turning_standard_conforming_strings_off_is_refused_even_in_a_pipeline(guarded, table, setting, send):
    rc = login(guarded)
    for sneaky in SCS_FORMS if send is simple else SCS_FORMS[1:]:
        # Both in one packet: pgwarden decides the second before the server has run the first.
        rc.send(m.frame(b"Q", setting.encode() + b"\0") + m.frame(b"Q", sneaky.encode() + b"\0"))
        refused, second = rc.until_ready(), rc.until_ready()
        error = error_of(refused)
        assert error is not None and error.sqlstate == "42501", refused
        assert error.message.startswith("pgwarden: blocked:")
        assert error_of(second) is None  # read by both as one harmless SELECT
        assert error_of(send(rc, sneaky.encode())) is None
    assert table() == ROWS
    answer = simple(rc, b"show standard_conforming_strings")
    assert next(x for x in answer if isinstance(x, m.DataRow)).values == (b"on",)
    rc.close()


def test_set_local_in_a_transaction_is_refused_through_psycopg(guarded, table):
    with psycopg.connect(guarded.dsn()) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("SET LOCAL standard_conforming_strings = off")
        assert e.value.diag.message_primary == (
            "pgwarden: blocked: standard_conforming_strings cannot be changed during the session")
        assert "E'...'" in e.value.diag.message_hint
        c.rollback()
        c.execute(SCS_FORMS[1])
    assert table() == ROWS


@pytest.fixture
def scs_off_database(pg_server):
    """A database whose sessions start with standard_conforming_strings = off."""
    if pg_server.psql("select count(*) from pg_database where datname = 'scs_off'") == "0":
        pg_server.psql("create database scs_off owner app")
        pg_server.psql("alter database scs_off set standard_conforming_strings = off")
    pg_server.psql(f"drop table if exists walkaround_t; create table walkaround_t (id int);"
                   f"insert into walkaround_t select generate_series(1, {ROWS})", "scs_off")
    return "scs_off"


def test_a_session_that_starts_with_standard_conforming_strings_off_is_parsed_that_way(
        make_pgwarden, pg_server, scs_off_database):
    running = make_pgwarden(policies=[POLICY], upstream={"database": scs_off_database})
    rc = RawClient(running.host, running.port)
    params = {p.name: p.value for p in rc.login(running.token(), database=scs_off_database)
              if isinstance(p, m.ParameterStatus)}
    assert params["standard_conforming_strings"] == "off"
    for send, sneaky in [(simple, SCS_FORMS[0]), (simple, SCS_FORMS[1]), (extended, SCS_FORMS[1])]:
        error = error_of(send(rc, sneaky.encode()))
        assert error is not None and error.get("D") == "Refused by policy 'agents', rule 'unfiltered-writes'."
    # No false alarm: the same rules as the server for what is harmless.
    answer = simple(rc, b"SELECT 'it\\'s', E'\\\\'")
    assert next(x for x in answer if isinstance(x, m.DataRow)).values == (b"it's", b"\\")
    assert int(pg_server.psql("select count(*) from walkaround_t", scs_off_database)) == ROWS
    rc.close()


# --------------------------------------------------------------------------- client_encoding

@pytest.mark.parametrize("encoding", sorted(BACKSLASH_TRAIL))
def test_a_second_byte_0x5c_does_not_hide_a_delete(guarded, table, encoding):
    char, codec = BACKSLASH_TRAIL[encoding]
    assert char.encode(codec)[1] == 0x5C
    rc = login(guarded, client_encoding=encoding)
    for send, sneaky in [(simple, sneaky_forms(char)[0]), (simple, sneaky_forms(char)[1]),
                         (extended, sneaky_forms(char)[1])]:
        error = error_of(send(rc, sneaky.encode(codec)))
        assert error is not None, (send.__name__, sneaky)
        assert error.get("D") == "Refused by policy 'agents', rule 'unfiltered-writes'."
    # The character itself is no reason to refuse.
    answer = simple(rc, f"SELECT E'{char}'".encode(codec))
    assert next(x for x in answer if isinstance(x, m.DataRow)).values == (char.encode(codec),)
    assert table() == ROWS
    rc.close()


@pytest.mark.parametrize("encoding", ["SJIS", "BIG5", "GBK"])
def test_psycopg_with_client_encoding_in_the_connection_string(guarded, table, encoding):
    char = BACKSLASH_TRAIL[encoding][0]
    with psycopg.connect(guarded.dsn(client_encoding=encoding), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute(sneaky_forms(char)[1])
        assert e.value.diag.message_detail == "Refused by policy 'agents', rule 'unfiltered-writes'."
        assert c.execute(f"SELECT E'{char}'").fetchone() == (char,)
        # A refusal whose text is not ASCII arrives intact in the session's encoding.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("DROP TABLE walkaround_t")
        assert e.value.diag.message_primary == "pgwarden: blocked: 禁止變更表 (migrations)"
    assert table() == ROWS


@pytest.mark.parametrize("setting", [
    "SET client_encoding = 'SJIS'",
    "SET NAMES 'BIG5'",
    "SELECT set_config('client_encoding', 'GBK', false)",
])
def test_changing_client_encoding_is_refused_with_a_hint(guarded, table, setting):
    rc = login(guarded)
    # Pipelined with a statement in the encoding it asks for: never read in the wrong one.
    sneaky = sneaky_forms("表")[0].encode("cp932")
    rc.send(m.frame(b"Q", setting.encode() + b"\0") + m.frame(b"Q", sneaky + b"\0"))
    refused, second = rc.until_ready(), rc.until_ready()
    error = error_of(refused)
    assert error.sqlstate == "42501"
    assert error.message == "pgwarden: blocked: client_encoding cannot be changed during the session"
    assert "connection string" in error.get("H")
    # Still UTF8 on both sides: those bytes are not UTF-8, so pgwarden refuses them unread.
    assert error_of(second).message == "pgwarden: blocked: the statement is not valid UTF8 text"
    assert table() == ROWS
    rc.close()


@pytest.mark.parametrize("sql", [
    "SET client_encoding = 'utf-8'", "SET NAMES 'UTF8'", "SET standard_conforming_strings = on",
    "RESET client_encoding", "RESET ALL", "DISCARD ALL", "SET client_encoding TO DEFAULT",
])
def test_no_false_alarm_for_settings_that_change_nothing(guarded, sql):
    with psycopg.connect(guarded.dsn(), autocommit=True) as c:
        c.execute(sql)
        assert c.execute("show client_encoding").fetchone() == ("UTF8",)


def test_bytes_that_are_not_text_are_refused_and_recorded(guarded, tmp_path, table):
    rc = login(guarded)
    error = error_of(simple(rc, b"SELECT '\xff'; DELETE FROM walkaround_t"))
    assert error.sqlstate == "42501"
    assert error.message == "pgwarden: blocked: the statement is not valid UTF8 text"
    assert "byte 8" in error.get("D") and "client_encoding" in error.get("H")
    assert error_of(simple(rc, b"SELECT 1")) is None  # the session goes on
    rc.close()
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    refused = next(r for r in records if r["type"] == "statement" and r["verdict"]["action"] == "block")
    assert refused["sql"] == "SELECT '\\xff'; DELETE FROM walkaround_t"
    assert table() == ROWS


@pytest.mark.parametrize("encoding", ["EUC_TW"])
def test_a_login_in_an_encoding_pgwarden_cannot_read_is_refused(guarded, encoding):
    rc = RawClient(guarded.host, guarded.port)
    answer = rc.login(guarded.token(), client_encoding=encoding)
    (error,) = [x for x in answer if isinstance(x, m.ErrorResponse)]
    assert error.get("V") == "FATAL" and error.sqlstate == "0A000"
    assert error.message.startswith(f"pgwarden: client_encoding {encoding} is not supported")
    assert not any(isinstance(x, m.ReadyForQuery) for x in answer)
    assert rc.closed()


# --------------------------------------------------------------------------- the safety net

def flip(pg_server, setting: str, value: str) -> str:
    """A function (made by someone else) that changes ``setting``: pgwarden cannot see inside it."""
    pg_server.psql(
        f"create or replace function pgwarden_flip_{setting}() returns text language sql "
        f"as $$ select set_config('{setting}', '{value}', false) $$", "appdb")
    return f"select pgwarden_flip_{setting}()"


@pytest.mark.parametrize("setting, value", [
    ("standard_conforming_strings", "off"), ("client_encoding", "SJIS"),
])
def test_a_change_made_by_a_function_ends_the_session(make_pgwarden, pg_server, table, setting, value):
    call = flip(pg_server, setting, value)
    running = make_pgwarden()  # everything allowed: only the core stands in the way
    rc = login(running)
    fatal = error_of(simple(rc, call.encode()))
    assert fatal is not None and fatal.get("V") == "FATAL" and fatal.sqlstate == "42501"
    assert setting in fatal.message and value in fatal.message
    assert rc.closed()


@pytest.mark.parametrize("setting, value, sneaky", [
    ("standard_conforming_strings", "off", SCS_FORMS[0].encode()),
    # Valid UTF-8 (ō is C5 8D), and in SJIS 8D 5C is one character: the quote after it ends the string.
    ("client_encoding", "SJIS", "SELECT E'ō\\'; DELETE FROM walkaround_t; --'".encode()),
])
def test_a_statement_pipelined_behind_such_a_function_waits_its_turn(make_pgwarden, pg_server, table,
                                                                     setting, value, sneaky):
    call = flip(pg_server, setting, value)
    running = make_pgwarden(policies=[POLICY])
    rc = login(running)
    # Both in one packet: pgwarden decides the second before the server has run the first. Read
    # the old way it is one harmless SELECT; read the way the server will, a DELETE.
    rc.send(m.frame(b"Q", call.encode() + b"\0") + m.frame(b"Q", sneaky + b"\0"))
    answer = rc.until_ready()
    errors = [x for x in answer if isinstance(x, m.ErrorResponse)]
    assert errors[0].get("V") == "FATAL" and setting in errors[0].message
    assert rc.closed()
    assert table() == ROWS


def test_ascii_without_backslashes_may_be_pipelined_behind_anything(guarded, table):
    rc = login(guarded)
    rc.send(b"".join(m.frame(b"Q", f"select {i}".encode() + b"\0") for i in range(3)))
    for i in range(3):
        answer = rc.until_ready()
        assert next(x for x in answer if isinstance(x, m.DataRow)).values == (str(i).encode(),)
    # Text that settings could change waits for the statements before it that could change them
    # (a SET, a function that changes state, ...).
    rc.send(m.frame(b"Q", b"set work_mem = '8MB'\0") + m.frame(b"Q", "select 'é'".encode() + b"\0"))
    rc.until_ready()
    error = error_of(rc.until_ready())
    assert error.message.startswith("pgwarden: blocked: a statement with non-ASCII text or backslashes must wait")
    assert error_of(simple(rc, "select 'é'".encode())) is None  # alone, it passes
    # Behind a statement the analysis shows cannot change a setting, it passes pipelined too.
    rc.send(m.frame(b"Q", b"select pg_sleep(0.05)\0") + m.frame(b"Q", "select 'é'".encode() + b"\0"))
    rc.until_ready()
    assert error_of(rc.until_ready()) is None
    rc.close()


def test_the_characters_read_otherwise_are_those_the_server_reads_otherwise(pg_server):
    """Every character of every encoding pgwarden reads (one and two bytes, EUC's three-byte SS3
    ones) converted by the server and by pgwarden: where they differ, pgwarden refuses the
    character (`_READ_OTHERWISE`), and it refuses no character the server reads as it does."""
    from pgwarden.sql import encoding as enc
    from pgwarden.testing.postgres import SUPERUSER, SUPERUSER_PASSWORD

    found: dict[str, set[bytes]] = {}
    with psycopg.connect(pg_server.dsn(SUPERUSER, SUPERUSER_PASSWORD, "postgres"), autocommit=True) as c:
        c.execute("""CREATE OR REPLACE FUNCTION pg_temp.converted(enc text, codes bytea[])
            RETURNS TABLE(i int, ch text) LANGUAGE plpgsql AS $$
            DECLARE k int; BEGIN FOR k IN 1..array_length(codes, 1) LOOP
              BEGIN i := k; ch := convert_from(codes[k], enc); RETURN NEXT;
              EXCEPTION WHEN OTHERS THEN NULL; END;
            END LOOP; END $$""")
        for name, entry in enc._ENCODINGS.items():
            if entry is None or name in ("UTF8", "SQL_ASCII") or not entry[1]:
                continue  # (single-byte encodings: their codecs read every byte as the server does)
            codes = [bytes([a, b]) for a in range(0x80, 0x100) for b in range(0x40, 0x100)]
            if entry[1].startswith(rb"\x8f"):  # EUC: SS3 and two bytes
                codes += [bytes([0x8F, a, b]) for a in range(0xA1, 0xFF) for b in range(0xA1, 0xFF)]
            server = {codes[i - 1]: ch for i, ch in c.execute("SELECT i, ch FROM pg_temp.converted(%s, %s)",
                                                               (name, codes)).fetchall()}
            reader = enc.ClientEncoding(name, entry[0], enc.client_encoding(name)._run,
                                        enc.client_encoding(name)._char)  # without the refusals
            found[name] = set()
            for code, ch in server.items():
                try:
                    if reader.decode(code) != ch:
                        found[name].add(code)
                except enc.UnreadableText:
                    continue
            for code in enc._READ_OTHERWISE.get(name, ()):
                with pytest.raises(enc.UnreadableText):
                    enc.client_encoding(name).decode(b"SELECT '" + code + b"'")
    assert {k: v for k, v in found.items() if v} == {k: set(v) for k, v in enc._READ_OTHERWISE.items()}
