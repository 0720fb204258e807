"""The leak finder's reading of a stream: random bytes no statement chose are not a leak."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from pgwarden.testing.leaks import LeakFinder, Secret, searched, without_key_data
from pgwarden.wire import messages as m

DOB = dt.date(1942, 3, 19)
JULIAN = DOB.toordinal() + 1721425  # what to_char(d, 'J') gives; its int4 is 00 25 15 e6
SPELLED = struct.pack(">i", JULIAN)


def _stream(*messages) -> bytes:
    return b"".join(message.encode() for message in messages)


def _greeting(pid: int, key: int) -> list:
    return [m.Authentication(m.Authentication.OK), m.ParameterStatus("TimeZone", "Etc/UTC"),
            m.BackendKeyData(pid, key), m.ReadyForQuery("I")]


def test_the_form_is_what_the_ci_run_saw():
    # the pid's last three bytes and the key's first spelled the date of birth
    assert SPELLED == b"\x00\x25\x15\xe6"
    assert struct.pack(">iI", 0x2515, 0xE6B56379)[1:5] == SPELLED


@pytest.mark.parametrize("prefix", [b"", b"N", b"NN"])
def test_a_cancel_key_that_spells_a_secret_is_not_a_leak(prefix):
    finder = LeakFinder([Secret("user 2 dob", DOB)])
    stream = prefix + _stream(*_greeting(0x2515, 0xE6B56379))
    assert SPELLED in stream
    assert finder.find(stream) == []


def test_the_same_bytes_in_a_row_are_a_leak():
    finder = LeakFinder([Secret("user 2 dob", DOB)])
    stream = _stream(*_greeting(77, 1), m.DataRow((b"\x01" + SPELLED + b"\x02",)), m.ReadyForQuery("I"))
    leaks = finder.find(stream)
    assert [leak.form for leak in leaks] == ["int4(julian day)"]


def test_only_the_key_data_body_is_zeroed():
    rows = _stream(m.DataRow((SPELLED,)), m.ReadyForQuery("I"))
    stream = b"N" + _stream(*_greeting(0x2515, 0xE6B56379)) + rows
    cleaned = without_key_data(stream)
    assert len(cleaned) == len(stream)
    assert cleaned.endswith(rows)
    assert cleaned.replace(bytes(8), b"", 1) == stream.replace(struct.pack(">iI", 0x2515, 0xE6B56379), b"", 1)


def test_a_stream_that_is_not_messages_is_left_alone():
    junk = b"K\x00\x00\x00\x0c" + SPELLED + b"\x00\x00\x00\x00"  # a key-data shape after a broken length
    stream = b"D\x00\x00\x00\x02" + junk
    assert without_key_data(stream) == stream


def test_a_derived_value_of_one_repeated_byte_is_not_searched():
    """An int8 0 (a count on one database, 1 on the twin) is eight zero bytes: the zeroed key
    data and any framing hold it; a value of two distinct bytes is still searched."""
    finder = LeakFinder([Secret("user 2 dob", DOB)])
    stream = _stream(*_greeting(0x2515, 0xE6B56379), m.DataRow((bytes(7) + b"\x01",)), m.ReadyForQuery("I"))
    assert finder.find(stream, [("count", bytes(8))]) == []
    assert [leak.form for leak in finder.find(stream, [("count", bytes(7) + b"\x01")])] == ["derived"]


def test_a_secrets_form_of_one_repeated_byte_is_not_searched():
    """A date of birth at the epoch: its seconds' int4 is four zero bytes, in any stream's framing
    (every row of the twin database was a false alarm, once in ~5,000 runs); its other forms are
    still searched."""
    epoch = Secret("user 4 dob", dt.date(1970, 1, 1))
    assert all(len(set(form.pattern)) > 1 for form in epoch.forms() if form.how == "binary")
    assert not searched(bytes(4), "binary") and searched(b"\x00\x01\x51\x80", "binary")
    assert searched(b"11111111", "digits")  # a run of one digit is a number still
    finder = LeakFinder([epoch])
    assert finder.find(_stream(m.DataRow((bytes(8),)), m.ReadyForQuery("I"))) == []
    assert [leak.form for leak in finder.find(_stream(m.DataRow((b"1970-01-01",)), m.ReadyForQuery("I")))]
