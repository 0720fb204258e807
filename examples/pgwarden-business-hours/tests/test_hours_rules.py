"""The plugin's own rule kind, `hours`, end to end: validated with lines by `pgwarden check`,
listed by `pgwarden plugins`, and enforced by a real pgwarden in front of a real PostgreSQL."""

from __future__ import annotations

import datetime
import subprocess
import sys

import psycopg
import pytest

from pgwarden_business_hours import HOURS, BusinessHours, HoursRule

UTC = datetime.UTC
MONDAY_EVENING_PARIS = datetime.datetime(2026, 11, 30, 19, 30, tzinfo=UTC)  # 20:30 in Paris
MONDAY_MORNING_PARIS = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 10:00 in Paris

ORDERS_IN_OFFICE_HOURS = {"name": "orders-in-office-hours",
                          "hours": {"tables": ["public.bh_orders"], "between": "09:00-18:00", "tz": "Europe/Paris"}}


def running_at(make_pgwarden, moment, *rules):
    # Registered inline with a fixed clock (the installed one switched off), so the test does
    # not depend on today; reads only, so the plugin's own rule for writes stays out of the way.
    return make_pgwarden(plugins=[("business-hours-test", BusinessHours(clock=lambda: moment))],
                         plugins_section={"disable": ["business-hours"]},
                         policies=[{"name": "agents", "rules": list(rules)}],
                         approvals={"mode": "retry"})  # an approve verdict refused at once, with its request id


@pytest.fixture
def orders(pg_server):
    pg_server.psql("drop table if exists bh_orders; create table bh_orders (id int); insert into bh_orders values (1);"
                   "drop table if exists bh_other; create table bh_other (id int)", "appdb")


def test_outside_the_window_the_tables_are_refused(make_pgwarden, orders):
    running = running_at(make_pgwarden, MONDAY_EVENING_PARIS, ORDERS_IN_OFFICE_HOURS)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select * from bh_orders")
        diag = excinfo.value.diag
        assert diag.message_primary == ("pgwarden: blocked: public.bh_orders may be used only 09:00-18:00 "
                                        "Europe/Paris on weekdays")
        assert diag.message_detail == "Refused by policy 'agents', rule 'orders-in-office-hours'."
        assert diag.message_hint == "Try again 09:00-18:00 Europe/Paris."
        assert c.execute("select count(*) from bh_other").fetchone() == (0,)  # other tables: no rule


def test_within_the_window_they_are_not(make_pgwarden, orders):
    running = running_at(make_pgwarden, MONDAY_MORNING_PARIS, ORDERS_IN_OFFICE_HOURS)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select id from bh_orders").fetchall() == [(1,)]


def test_outside_may_hold_for_approval_instead(make_pgwarden, orders):
    rule = {"name": "late-orders", "reason": "orders after hours need a human",
            "hours": {**ORDERS_IN_OFFICE_HOURS["hours"], "outside": "approve", "statements": ["select"]}}
    running = running_at(make_pgwarden, MONDAY_EVENING_PARIS, rule)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("select * from bh_orders")
        diag = excinfo.value.diag
        assert diag.message_primary.startswith("pgwarden: approval required: request ")
        assert diag.message_detail == "orders after hours need a human (policy 'agents', rule 'late-orders')."


def test_the_rule_is_read_into_its_class(make_pgwarden):
    running = running_at(make_pgwarden, MONDAY_MORNING_PARIS, ORDERS_IN_OFFICE_HOURS)
    (rule,) = running.app.config.policies[0].rules
    assert HOURS.of(rule) == HoursRule(tables=("public.bh_orders",), between="09:00-18:00", tz="Europe/Paris")


def test_without_the_plugin_an_hours_rule_is_refused(make_pgwarden):
    from pgwarden.config import ConfigError

    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins_section={"disable": ["business-hours"]},
                      policies=[{"name": "agents", "rules": [ORDERS_IN_OFFICE_HOURS]}])
    assert excinfo.value.problems[0].startswith(
        "policies[0].rules[0]: rule kind 'hours' is interpreted by no loaded plugin")


# ---------------------------------------------------------------------------- the command line

CONFIG = """\
upstream: {host: 127.0.0.1, port: 1, database: appdb, user: app}
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /nonexistent/jwks.json}
policies:
  - name: agents
    rules:
      - name: orders-in-office-hours
        hours:
"""


def pgwarden(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgwarden", *args], capture_output=True, text=True, timeout=60)


def test_check_shows_an_hours_rule(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG + "          tables: [public.orders, 'billing.*']\n"
                            "          between: '22:00-06:00'\n"
                            "          tz: Europe/Paris\n")
    out = pgwarden("check", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert ("    hours    orders-in-office-hours: tables=('public.orders', 'billing.*'), between=22:00-06:00, "
            "tz=Europe/Paris, weekdays=(0, 1, 2, 3, 4), outside=block") in out.stdout, out.stdout
    assert "hours by business-hours" in out.stdout


def test_check_names_each_problem_of_hours_rules_at_its_line(tmp_path):
    # (a class's validators run once its keys structure, the first that fails says why)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG + "          tabels: [public.orders]\n"
                            "      - hours: {tables: [a.b], between: 9-18}\n"
                            "      - hours:\n"
                            "          tables: [a.b]\n"
                            "          tz: Mars/Olympus\n"
                            "      - {hours: {tables: [a.b], statements: [selct], outside: ask}}\n"
                            "      - {hour: {tables: [a.b]}}\n")
    out = pgwarden("check", "-c", str(cfg))
    assert out.returncode == 2
    assert [line.removeprefix(f"{cfg}: ") for line in out.stderr.splitlines()] == [
        "line 9: policies[0].rules[0].hours.tabels: unknown key; did you mean `tables`?",
        "line 10: policies[0].rules[1].hours.between: expected a window like 09:00-18:00 (22:00-06:00 spans "
        "midnight), got '9-18'",
        "line 13: policies[0].rules[2].hours.tz: expected an IANA time zone like Europe/Berlin, got 'Mars/Olympus'",
        "line 14: policies[0].rules[3].hours.outside: expected one of block, approve",
        "line 15: policies[0].rules[4]: rule kind 'hour' is interpreted by no loaded plugin; did you mean `hours`? "
        "(loaded rule kinds: allow, approve, block, hours, limit, mask)",
    ]


def test_plugins_lists_the_rule_kind():
    out = pgwarden("plugins")
    lines = out.stdout.splitlines()
    mine = lines[lines.index("business-hours 1.0.0 (entry point)") + 1:]
    assert "    rule kind hours: HoursRule — statements on these tables only within a time window" in mine
    assert "    pgwarden_rule_kinds" in mine


# ---------------------------------------------------------------------------- the window


@pytest.mark.parametrize("moment, open_", [
    (datetime.datetime(2026, 11, 30, 21, 0, tzinfo=UTC), True),  # Monday 22:00 Paris: the window starts
    (datetime.datetime(2026, 11, 30, 20, 59, tzinfo=UTC), False),
    (datetime.datetime(2026, 12, 1, 4, 59, tzinfo=UTC), True),  # Tuesday 05:59 Paris: Monday's night
    (datetime.datetime(2026, 12, 1, 5, 0, tzinfo=UTC), False),  # 06:00: over
    (datetime.datetime(2026, 12, 5, 22, 0, tzinfo=UTC), False),  # Saturday 23:00: not a weekday
    (datetime.datetime(2026, 12, 5, 2, 0, tzinfo=UTC), True),  # Saturday 03:00: Friday's night
])
def test_a_window_across_midnight(moment, open_):
    rule = HoursRule(tables=("a.b",), between="22:00-06:00", tz="Europe/Paris")
    assert rule.open_at(moment) is open_
