"""The plugin through a real pgwarden, with pgwarden's own fixtures (pgwarden.testing)."""

import datetime

import psycopg
import pytest

from pgwarden_business_hours import BusinessHours, Options

SATURDAY_NOON = datetime.datetime(2026, 11, 28, 12, tzinfo=datetime.UTC)
MONDAY_TEN = datetime.datetime(2026, 11, 30, 10, tzinfo=datetime.UTC)


def running_at(make_pgwarden, moment):
    # Registered inline with a fixed clock, so the test does not depend on today.
    plugin = BusinessHours(clock=lambda: moment)
    # Retry mode: an `approve` verdict is refused at once with a request id, rather than held on
    # the wire until an approver of the built-in approve plugin decides it (docs/approvals.md).
    return make_pgwarden(plugins=[("business-hours-test", plugin)],
                         plugins_section={"disable": ["business-hours"]}, approvals={"mode": "retry"})


def test_weekend_write_needs_approval(make_pgwarden):
    running = running_at(make_pgwarden, SATURDAY_NOON)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("create temp table t (x int)")
        assert excinfo.value.diag.message_primary.startswith("pgwarden: approval required: request ")
        assert excinfo.value.diag.message_detail.startswith("writes outside"), excinfo.value.diag.message_detail
        assert c.execute("select 1").fetchone() == (1,)  # reads pass


def test_weekday_write_passes(make_pgwarden):
    running = running_at(make_pgwarden, MONDAY_TEN)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("create temp table t (x int)")
        c.execute("insert into t values (1)")
        assert c.execute("select count(*) from t").fetchone() == (1,)


def test_only_leaves_the_installed_plugin_out(make_pgwarden):
    from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

    running = make_pgwarden(only=BUILTIN_PLUGINS)
    assert "business-hours" not in [p.name for p in running.app.plugins.loaded()]


def test_installed_through_the_entry_point(make_pgwarden):
    running = make_pgwarden(plugins_section={"business-hours": {"timezone": "Europe/Berlin", "start": 8}})
    names = [p.name for p in running.app.plugins.loaded()]
    assert "business-hours" in names
    from pgwarden_business_hours import plugin

    assert plugin.options == Options(timezone="Europe/Berlin", start=8)


def test_bad_options_are_config_errors(make_pgwarden):
    from pgwarden.config import ConfigError

    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins_section={"business-hours": {"start": "nine"}})
    assert any(p.startswith("plugins.business-hours.start:") for p in excinfo.value.problems)


def test_an_unknown_time_zone_is_a_config_error(make_pgwarden):
    # Refused while the options are structured, so `pgwarden check` refuses it too.
    from pgwarden.config import ConfigError

    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins_section={"business-hours": {"timezone": "Mars/Olympus"}})
    assert excinfo.value.problems == [
        "plugins.business-hours.timezone: expected an IANA time zone like Europe/Berlin, got 'Mars/Olympus'"
    ]
