"""pgwarden's descriptor limit: the soft limit raised to the hard one, and what it leaves room for."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from pgwarden.descriptors import DescriptorLimit

CHILD = """
import resource
from pgwarden.descriptors import raise_soft_limit
limit = raise_soft_limit()
print(limit.before, limit.soft, limit.hard, *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def run_with_soft_limit(soft: int) -> list[int]:
    """raise_soft_limit in a child process started with this soft limit (the hard one unchanged)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    return [int(n) for n in done.stdout.split()]


def test_a_soft_limit_below_the_hard_one_is_raised_to_it():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise to")
    assert run_with_soft_limit(256) == [256, hard, hard, hard, hard]


def test_a_soft_limit_at_the_hard_one_is_left_alone():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("an unlimited hard limit is left alone by design")
    assert run_with_soft_limit(hard) == [hard, hard, hard, hard, hard]


def test_the_log_line_says_what_was_raised_and_how_many_sessions_fit():
    raised = DescriptorLimit(before=1024, soft=524288, hard=524288)
    assert raised.describe() == ("file descriptors: soft limit raised from 1024 to 524288 (hard limit 524288); "
                                 "room for about 262112 sessions (two descriptors each)")
    kept = DescriptorLimit(before=1024, soft=1024, hard=1024)
    assert kept.describe() == ("file descriptors: soft limit 1024 (hard limit 1024); "
                               "room for about 480 sessions (two descriptors each)")
