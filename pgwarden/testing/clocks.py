"""Clocks for tests that play reactor turns: one for each way `pgwarden.turns.Turns` ends a turn.

Why two: the record-before-send guarantee and the order of records must be the
same on pgwarden's reactor (the end of the poll) and on any other
(``callLater(0)``); a test parametrised over both proves it on each.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface import implementer

from pgwarden.turns import IEndOfPoll


@implementer(IEndOfPoll)
class EndOfPollClock(Clock):
    """A clock with the end of poll of pgwarden's reactor; the test says when a poll ends."""

    def __init__(self) -> None:
        super().__init__()
        self.at_end: list = []

    def call_at_end_of_poll(self, f) -> None:
        self.at_end.append(f)

    def turn(self) -> None:
        """The end of one poll: what was asked for runs, then what that asked for (`PgwardenReactor`)."""
        while self.at_end:
            calls, self.at_end = self.at_end, []
            for f in calls:
                f()

    def sleep(self, seconds: float) -> None:
        """The reactor waits for events: what was asked for runs first (`PgwardenReactor.doPoll`)."""
        self.turn()
        self.advance(seconds)


class StockClock(Clock):
    """A clock like any other reactor: `Turns` ends a turn with ``callLater(0)``."""

    def turn(self) -> None:
        self.advance(0)

    def sleep(self, seconds: float) -> None:
        self.advance(0)  # what is due now runs before the reactor waits for events
        self.advance(seconds)


#: Both, for ``pytest.mark.parametrize``.
CLOCKS = (EndOfPollClock, StockClock)
