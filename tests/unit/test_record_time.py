"""A record's ``ts``: the same text, compiled or not, as datetime would write it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from pgwarden.recorder import timestamp


@given(st.integers(min_value=0, max_value=4_102_444_800), st.integers(min_value=0, max_value=999_999))
def test_a_given_time_is_written_to_the_microsecond(second, micro):
    expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{micro:06d}Z"
    now = second + micro / 1e6
    if int((now - int(now)) * 1e6) == micro:  # the float holds the microsecond (what the oplog passes)
        assert timestamp(now) == expected


def test_now_is_written_in_rfc_3339_with_six_digits():
    before = time.time()
    ts = timestamp()
    after = time.time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts)
    at = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 1e-6 <= at <= after


def test_now_of_the_compiled_build_is_the_stamp_of_an_instant_between_two_clock_reads():
    # `pgwarden.stamp.now`, compiled, reads clock_gettime(2) itself and writes the digits in C;
    # whatever it writes must be `format_ns` of an instant between the reads around it, across a
    # change of second too (its text up to the seconds is kept from one stamp to the next).
    from pgwarden.stamp import format_ns, now

    first = time.time_ns()
    seconds = set()
    while len(seconds) < 2:  # until a second has changed (at most ~1 s)
        before = time.time_ns()
        stamp = now()
        after = time.time_ns()
        assert format_ns(before) <= stamp <= format_ns(after), (before, stamp, after)
        seconds.add(stamp[:19])
        if after - first > 3 * 10**9:
            break
    assert len(seconds) >= 2


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_format_ns_writes_what_datetime_writes(ns):
    from pgwarden.stamp import format_ns

    second, rest = divmod(ns, 10**9)
    expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest // 1000:06d}Z"
    assert format_ns(ns) == expected
