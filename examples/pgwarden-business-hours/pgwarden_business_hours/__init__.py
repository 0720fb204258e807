"""A third-party pgwarden plugin: writes outside business hours need a human's approval.

Configured under ``plugins.business-hours`` of pgwarden's config file::

    plugins:
      business-hours: {timezone: Europe/Berlin, start: 9, end: 18, weekdays: [0, 1, 2, 3, 4]}
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import attrs

from pgwarden import Session, Statement, Verdict, hookimpl

WRITES = frozenset({"insert", "update", "delete", "merge", "truncate", "ddl", "copy_from"})


@attrs.frozen
class Options:
    timezone: str = "UTC"
    start: int = 9  # first hour of business
    end: int = 18  # first hour after business
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday is 0


class BusinessHours:
    def __init__(self, clock=None) -> None:
        self.options = Options()
        self._clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))

    @hookimpl
    def pgwarden_options(self):
        return Options

    @hookimpl
    def pgwarden_configure(self, config, options: Options) -> None:
        ZoneInfo(options.timezone)  # an unknown zone fails at start-up, not at 3 a.m.
        self.options = options

    def open_now(self) -> bool:
        o = self.options
        now = self._clock().astimezone(ZoneInfo(o.timezone))
        return now.weekday() in o.weekdays and o.start <= now.hour < o.end

    @hookimpl
    def pgwarden_check(self, statement: Statement, session: Session):
        if statement.kinds & WRITES and not self.open_now():
            o = self.options
            return Verdict.approve(
                f"writes outside business hours ({o.start}:00-{o.end}:00 {o.timezone}) need approval",
                rule="business-hours",
            )
        return None


plugin = BusinessHours()
