"""`wait_until`: the value once the condition holds; at the deadline, a failure that says what it saw."""

from __future__ import annotations

import pytest

from pgwarden.testing import WaitTimeout, wait_until


class Clock:
    """A clock that moves only when the wait sleeps; the sleeps are kept."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def polled(*values):
    """A poll that answers ``values`` in turn (an exception is raised), and counts its calls."""
    answers = iter(values)

    def poll():
        poll.calls += 1
        value = next(answers)
        if isinstance(value, BaseException):
            raise value
        return value

    poll.calls = 0
    return poll


def test_the_first_value_that_satisfies_is_returned():
    clock = Clock()
    poll = polled(None, "", "4242", "9999")
    assert wait_until(5, poll, "a port", clock=clock, sleep=clock.sleep) == "4242"
    assert poll.calls == 3 and clock.sleeps == [0.05, 0.05]


def test_until_decides_on_the_value():
    clock = Clock()
    poll = polled("ClientRead", "ClientRead", "ClientWrite")
    assert wait_until(5, poll, "a write wait", until=lambda v: v == "ClientWrite", clock=clock,
                      sleep=clock.sleep) == "ClientWrite"


def test_at_the_deadline_it_fails_naming_what_and_the_last_value_seen():
    clock = Clock()
    poll = polled(*(["1"] * 20 + ["0"]))
    with pytest.raises(WaitTimeout) as failure:
        wait_until(0.5, poll, "the backend to end", until=lambda n: n == "0", interval_s=0.125,
                   detail=lambda: "server log: nothing", clock=clock, sleep=clock.sleep)
    assert str(failure.value) == ("gave up after 0.5 s waiting for the backend to end; last seen: '1'\n"
                                  "server log: nothing")
    # polled once at the start and once at the deadline, never slept past it
    assert poll.calls == 5 and clock.sleeps == [0.125] * 4
    assert isinstance(failure.value, TimeoutError)


def test_the_last_sleep_ends_at_the_deadline():
    clock = Clock()
    with pytest.raises(WaitTimeout):
        wait_until(0.625, polled(*[None] * 10), "x", interval_s=0.25, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [0.25, 0.25, 0.125]


def test_ignored_exceptions_are_not_yet_and_shown_as_the_last_value():
    clock = Clock()
    missing = FileNotFoundError(2, "No such file", "ready")
    assert wait_until(1, polled(missing, missing, "ok"), "x", ignore=(FileNotFoundError,), clock=clock,
                      sleep=clock.sleep) == "ok"
    with pytest.raises(WaitTimeout, match=r"last seen: FileNotFoundError\(2, 'No such file'\)"):
        wait_until(0.1, polled(*[missing] * 10), "the ready file", ignore=(FileNotFoundError,), clock=clock,
                   sleep=clock.sleep)


def test_any_other_exception_ends_the_wait_at_once():
    clock = Clock()
    poll = polled(None, RuntimeError("pgwarden exited (2)"), "never")
    with pytest.raises(RuntimeError, match="pgwarden exited"):
        wait_until(60, poll, "x", ignore=(OSError,), clock=clock, sleep=clock.sleep)
    assert poll.calls == 2 and clock.now == pytest.approx(100.05)


def test_a_long_last_value_shows_its_end():
    clock = Clock()
    log = "line\n" * 1000 + "the last line"
    with pytest.raises(WaitTimeout) as failure:
        wait_until(0, lambda: log, "x", until=lambda _: False, clock=clock, sleep=clock.sleep)
    message = str(failure.value)
    assert message.endswith("the last line'") and len(message) < 2200 and "last seen: ..." in message


def test_on_the_real_clock():
    ticks = iter(range(1000))
    assert wait_until(5, lambda: next(ticks), "three polls", until=lambda n: n >= 2, interval_s=0.001) == 2
