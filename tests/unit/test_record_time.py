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
