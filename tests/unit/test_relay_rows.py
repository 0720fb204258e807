"""A result's rows apart from the protocol: the row cap, the transform, and what is metered."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.relay.engine import ALLOW, Relay
from pgwarden.relay.execution import Execution, tag_rows
from pgwarden.relay.rows import Refused, ResultMeter, ResultStream, refused
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m

SHAPE = m.RowDescription((m.Column("n"),))


def run(*values: bytes) -> bytes:
    return b"".join(m.DataRow((v,)).encode() for v in values)


def values(rows: list[bytes]) -> list[bytes | None]:
    return [m.DataRow.decode(r[5:]).values[0] for r in rows]


class Portal:
    def __init__(self) -> None:
        self.rows_sent = 0

    def result_shape(self) -> m.RowDescription | None:
        return SHAPE


def test_no_cap_no_transform_inspects_nothing() -> None:
    assert not ResultStream(SHAPE.encode()).inspects
    assert ResultStream(SHAPE.encode(), cap=0).inspects


def test_the_cap_cuts_a_run_in_the_middle_and_the_tag_counts_what_was_sent() -> None:
    result = ResultStream(SHAPE.encode(), cap=3)
    assert values(result.rows(run(b"1", b"2"))) == [b"1", b"2"]
    assert not result.truncated
    assert values(result.rows(run(b"3", b"4", b"5"))) == [b"3"]
    assert result.truncated and result.sent == 3 and result.rows_left == 0
    assert result.rows(run(b"6")) == []
    notice, end = result.truncation_notice(3, ord("C"), m.CommandComplete("SELECT 6").encode())
    assert m.NoticeResponse.decode(notice[5:]).get("M") == "pgwarden: result truncated at 3 rows"
    assert m.CommandComplete.decode(end[5:]).tag == "SELECT 3"
    suspended = m.PortalSuspended().encode()
    assert result.truncation_notice(3, suspended[0], suspended)[1] == suspended


def test_a_portal_fetched_in_several_executes_counts_all_it_sent() -> None:
    portal = Portal()
    first = ResultStream(None, portal, cap=3)
    assert len(first.rows(run(b"1", b"2"))) == 2
    second = ResultStream(None, portal, cap=3)  # the next Execute of the same portal
    assert second.shape == SHAPE
    assert values(second.rows(run(b"3", b"4"))) == [b"3"]
    assert second.truncated and portal.rows_sent == 3


def test_a_transform_alone_takes_whole_runs() -> None:
    seen: list[bytes] = []

    def upper(data: bytes) -> bytes:
        seen.append(data)
        return data.upper()

    result = ResultStream(SHAPE.encode())
    result.transform = upper
    rows = run(b"a", b"b")
    assert result.rows(rows) == [rows.upper()] and seen == [rows]
    result.transform = lambda data: b""
    assert result.rows(rows) == []


def test_rows_a_transform_drops_do_not_count_against_the_cap() -> None:
    result = ResultStream(SHAPE.encode(), cap=2)
    result.transform = lambda row: b"" if m.DataRow.decode(row[5:]).values[0] == b"x" else row
    assert values(result.rows(run(b"x", b"1", b"x", b"2", b"3"))) == [b"1", b"2"]
    assert result.truncated and result.sent == 2


def test_a_transform_that_raises_is_not_swallowed() -> None:
    """The relay ends the session on it (fail closed): nothing here may turn it into rows."""
    def broken(data: bytes) -> bytes:
        raise RuntimeError("masker broke")

    for cap in (None, 5):
        result = ResultStream(SHAPE.encode(), cap=cap)
        result.transform = broken
        with pytest.raises(RuntimeError):
            result.rows(run(b"secret"))


def test_a_refused_result_sends_no_row_and_says_why() -> None:
    plain = refused(ValueError("x"))
    assert isinstance(plain, Refused) and plain(run(b"secret")) == b""
    assert m.ErrorResponse.decode(plain.error[5:]).get("C") == "XX000"
    e = ValueError("x")
    e.refusal = Refusal("42501", "no")  # type: ignore[attr-defined]
    assert m.ErrorResponse.decode(refused(e).error[5:]).get("C") == "42501"


def test_the_sample_is_bounded_in_rows_and_bytes_and_ends_with_the_execution() -> None:
    meter = ResultMeter(sample_rows=2, sample_bytes=100)
    result = ResultStream(SHAPE.encode())
    meter.rows_sent(run(b"1", b"2", b"3"), result)
    ex = Execution(1, "simple", 0.0, 0.0)
    meter.finish(ex)
    assert ex.sample == [["1"], ["2"]] and not ex.sample_clipped and ex.bytes == len(run(b"1", b"2", b"3"))
    assert meter.bytes == 0
    meter.rows_sent(run(b"x" * 60, b"y" * 60), result)
    meter.finish(ex)
    assert ex.sample == [["x" * 60]] and ex.sample_clipped
    meter.fragment_sent(10)  # part of a row too large to hold: the sample says it lacks one
    meter.finish(ex)
    assert ex.sample == [] and ex.sample_clipped and ex.bytes == 10


def test_without_a_sample_the_shape_is_never_decoded() -> None:
    meter = ResultMeter()
    meter.rows_sent(run(b"1"), ResultStream(b"T\0\0\0\5garbage"))
    ex = Execution(1, "simple", 0.0, 0.0)
    meter.finish(ex)
    assert ex.sample is None and ex.bytes == len(run(b"1"))


def test_masking_plans_go_to_the_execution_that_ends_next() -> None:
    class Planned:
        plan = "p"

        def __call__(self, data: bytes) -> bytes:
            return data

    meter = ResultMeter()
    meter.mask(Planned())
    meter.mask(lambda data: data)  # no plan: nothing to record
    ex = Execution(1, "simple", 0.0, 0.0)
    meter.finish(ex)
    assert ex.masked == ("p",) and meter.masked == ()


def _relayed(on_shape, *server: object, row_cap: int | None = None) -> tuple[Relay, bytes]:
    relay = Relay(lambda req: ALLOW, on_shape=on_shape)
    relay.row_cap = row_cap
    relay.client_data(m.Query("select n from t").encode())
    relay.pop_upstream()
    relay.server_data(b"".join(x.encode() for x in server))  # type: ignore[attr-defined]
    return relay, b"".join(relay.pop_client())


@pytest.mark.parametrize("row_cap", [None, 1])
def test_in_the_relay_a_transform_that_raises_mid_result_ends_the_session_before_its_rows(row_cap) -> None:
    def on_shape(shape: m.RowDescription, origin: object) -> Callable[[bytes], bytes]:
        def transform(data: bytes) -> bytes:
            if b"secret" in data:
                raise RuntimeError("masker broke")
            return data
        return transform

    relay, down = _relayed(on_shape, SHAPE, m.DataRow((b"ok",)), m.DataRow((b"secret",)),
                           m.CommandComplete("SELECT 2"), m.ReadyForQuery("I"), row_cap=row_cap)
    assert b"secret" not in down and relay.closing and isinstance(relay.error, RuntimeError)
    last = down
    while int.from_bytes(last[1:5], "big") + 1 < len(last):
        last = last[int.from_bytes(last[1:5], "big") + 1:]
    assert m.ErrorResponse.decode(last[5:]).get("C") == "XX000"


def test_in_the_relay_a_result_whose_plan_failed_sends_its_error_for_its_rows() -> None:
    def on_shape(shape: m.RowDescription, origin: object) -> Callable[[bytes], bytes]:
        raise ValueError("no plan")

    relay, down = _relayed(on_shape, SHAPE, m.DataRow((b"secret",)), m.CommandComplete("SELECT 1"),
                           m.ReadyForQuery("I"))
    assert b"secret" not in down and b"SELECT 1" not in down and not relay.closing
    assert b"pgwarden: result refused: ValueError" in down


@pytest.mark.parametrize(("tag", "rows"), [
    (b"SELECT 5", 5), (b"INSERT 0 3", 3), (b"UPDATE 12345678901234567890", 12345678901234567890),
    (b"BEGIN", 0), (b"SELECT ", 0), (b"SELECT 1a", 0), (b"COPY 0", 0), (b"MOVE 7", 7), (b"", 0), (b"7", 0),
])
def test_tag_rows_reads_the_tags_last_word_when_it_is_all_digits(tag: bytes, rows: int) -> None:
    assert tag_rows(m.CommandComplete(tag.decode()).encode()) == rows
    assert tag_rows(m.CommandComplete(tag.decode()).encode()[:-1]) == rows  # without its NUL too


@given(st.binary(max_size=24))
def test_tag_rows_is_the_last_space_separated_word_as_a_number(tag: bytes) -> None:
    """What the count is, read off the tag: the bytes after its last space, if they are all ASCII digits."""
    raw = b"C\0\0\0\0" + tag + b"\0"
    word = tag.rsplit(b" ", 1)[1] if b" " in tag else None
    expected = int(word) if word and all(48 <= c <= 57 for c in word) else 0
    assert tag_rows(raw) == expected
