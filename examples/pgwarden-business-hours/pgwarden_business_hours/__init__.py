"""A third-party pgwarden plugin: writes outside business hours need a human's approval.

Configured under ``plugins.business-hours`` of pgwarden's config file::

    plugins:
      business-hours: {timezone: Europe/Berlin, start: 9, end: 18, weekdays: [0, 1, 2, 3, 4]}
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from pgwarden import Session, Statement, Verdict, hookimpl

WRITES = frozenset({"insert", "update", "delete", "merge", "truncate", "ddl", "copy_from"})


# Each message starts with the field's name and a colon: pgwarden then reports the
# problem at that key's line of the config file.
def _time_zone(_inst, attribute, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{attribute.name}: expected an IANA time zone like Europe/Berlin, got {value!r}") from None


def _hour(_inst, attribute, value: int) -> None:
    if not 0 <= value <= 24:
        raise ValueError(f"{attribute.name}: expected an hour from 0 to 24, got {value!r}")


# Validated here, when pgwarden structures the options, not in pgwarden_configure:
# so `pgwarden check` reports a bad value (with its line), as `pgwarden run` would.
@attrs.frozen
class Options:
    timezone: str = attrs.field(default="UTC", validator=_time_zone)
    start: int = attrs.field(default=9, validator=_hour)  # first hour of business
    end: int = attrs.field(default=18, validator=_hour)  # first hour after business
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
        self.options = options  # already validated: an unknown zone fails `check` and start-up

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
