"""A third-party pgwarden plugin: office hours for writes, and for the tables a policy names.

Two things, both written against the plugin contract v1 (`pgwarden.api`):

* its options, under ``plugins.business-hours`` of pgwarden's config file: writes
  outside business hours need a human's approval, whoever makes them::

    plugins:
      business-hours: {timezone: Europe/Berlin, start: 9, end: 18, weekdays: [0, 1, 2, 3, 4]}

* a rule kind of its own, ``hours``, for the policies: the statements that touch
  these tables are refused (or held for approval) outside the window::

    policies:
      - name: agents
        rules:
          - name: orders-in-office-hours
            hours: {tables: [public.orders, "billing.*"], between: "09:00-18:00", tz: Europe/Paris}

pgwarden reads each ``hours`` rule into `HoursRule`, with the same converter as
the rest of the file: a bad window or time zone is reported by ``pgwarden
check`` at its line, and a policy with ``hours`` rules is refused when this
plugin is not loaded.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from pgwarden.api import STATEMENT_KINDS, RuleKind, Session, Statement, Verdict, hookimpl

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


def _weekdays(_inst, attribute, value: tuple[int, ...]) -> None:
    if not all(0 <= d <= 6 for d in value):
        raise ValueError(f"{attribute.name}: expected days from 0 (Monday) to 6 (Sunday), got {list(value)!r}")


# Validated here, when pgwarden structures the options, not in pgwarden_configure:
# so `pgwarden check` reports a bad value (with its line), as `pgwarden run` would.
@attrs.frozen
class Options:
    timezone: str = attrs.field(default="UTC", validator=_time_zone)
    start: int = attrs.field(default=9, validator=_hour)  # first hour of business
    end: int = attrs.field(default=18, validator=_hour)  # first hour after business
    weekdays: tuple[int, ...] = attrs.field(default=(0, 1, 2, 3, 4), validator=_weekdays)  # Monday is 0


_WINDOW = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def window(text: str) -> tuple[datetime.time, datetime.time] | None:
    """``"09:00-18:00"`` -> (09:00, 18:00), the end excluded; None when it is not such a window."""
    found = _WINDOW.match(text)
    if found is None:
        return None
    h1, m1, h2, m2 = map(int, found.groups())
    if h1 == 24 or (h2 == 24 and m2) or (h1, m1) == (h2, m2):
        return None
    end = datetime.time.max if h2 == 24 else datetime.time(h2, m2)
    return datetime.time(h1, m1), end


def _between(_inst, attribute, value: str) -> None:
    if window(value) is None:
        raise ValueError(f"{attribute.name}: expected a window like 09:00-18:00 (22:00-06:00 spans midnight), "
                         f"got {value!r}")


def _tables(_inst, attribute, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: expected at least one table (schema.table, globs allowed)")


def _statement_kinds(_inst, attribute, value: tuple[str, ...]) -> None:
    unknown = [k for k in value if k not in STATEMENT_KINDS]
    if unknown:
        raise ValueError(f"{attribute.name}: unknown statement kind(s) {', '.join(unknown)}")


@attrs.frozen
class HoursRule:
    """The options of an ``hours`` rule: which tables, when, and what happens outside."""

    tables: tuple[str, ...] = attrs.field(validator=_tables)  # globs over schema.table
    between: str = attrs.field(default="09:00-18:00", validator=_between)  # local time, the end excluded
    tz: str = attrs.field(default="UTC", validator=_time_zone)
    weekdays: tuple[int, ...] = attrs.field(default=(0, 1, 2, 3, 4), validator=_weekdays)
    statements: tuple[str, ...] = attrs.field(default=(), validator=_statement_kinds)  # none given: every kind
    outside: Literal["block", "approve"] = "block"

    def open_at(self, moment: datetime.datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.tz))
        start, end = window(self.between)  # type: ignore[misc]  # validated
        now = local.time()
        if start < end:
            return local.weekday() in self.weekdays and start <= now < end
        # Across midnight: the evening belongs to its day, the early hours to the day before.
        if now >= start:
            return local.weekday() in self.weekdays
        return now < end and (local.weekday() - 1) % 7 in self.weekdays

    def applies_to(self, statement: Statement) -> list[str]:
        """The tables of ``statement`` this rule governs (none: it does not apply)."""
        if self.statements and not statement.kinds & set(self.statements):
            return []
        return sorted(t for t in statement.tables if any(fnmatch.fnmatchcase(t, g) for g in self.tables))


HOURS = RuleKind("hours", HoursRule, "statements on these tables only within a time window")

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _days(weekdays: tuple[int, ...]) -> str:
    if tuple(sorted(weekdays)) == (0, 1, 2, 3, 4):
        return "weekdays"
    return ", ".join(_DAY_NAMES[d] for d in sorted(weekdays))


class BusinessHours:
    def __init__(self, clock=None) -> None:
        self.options = Options()
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    @hookimpl
    def pgwarden_options(self):
        return Options

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [HOURS]

    @hookimpl
    def pgwarden_configure(self, options: Options) -> None:
        self.options = options  # already validated: an unknown zone fails `check` and start-up

    def open_now(self) -> bool:
        o = self.options
        now = self._clock().astimezone(ZoneInfo(o.timezone))
        return now.weekday() in o.weekdays and o.start <= now.hour < o.end

    @hookimpl
    def pgwarden_check(self, statement: Statement, session: Session) -> Verdict | None:
        verdicts = []
        if statement.kinds & WRITES and not self.open_now():
            o = self.options
            verdicts.append(Verdict.approve(
                f"writes outside business hours ({o.start}:00-{o.end}:00 {o.timezone}) need approval",
                rule="business-hours",
            ))
        now = None
        for policy in session.policies:
            for i, rule in enumerate(policy.rules):
                hours = HOURS.of(rule)
                if hours is None:
                    continue
                tables = hours.applies_to(statement)
                if not tables:
                    continue
                now = now or self._clock()
                if hours.open_at(now):
                    continue
                reason = rule.reason or (f"{', '.join(tables)} may be used only {hours.between} {hours.tz} "
                                         f"on {_days(hours.weekdays)}")
                where = {"policy": policy.name, "rule": rule.name or f"rules[{i}]"}
                if hours.outside == "approve":
                    verdicts.append(Verdict.approve(reason, **where))
                else:
                    verdicts.append(Verdict.block(reason, rule.hint or f"Try again {hours.between} {hours.tz}.",
                                                  **where))
        return Verdict.strictest(verdicts) if verdicts else None


plugin = BusinessHours()
