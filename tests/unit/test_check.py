"""`pgwarden check` agrees with `pgwarden run`: whatever run refuses before it serves, check
reports, every problem at once, in file order, each with its line.

The example third-party plugin (examples/pgwarden-business-hours) is installed for these
tests only, as an entry point on PYTHONPATH of the commands they start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgwarden import hookimpl
from pgwarden.config import ConfigError
from pgwarden.preflight import load_checked

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pgwarden-business-hours"

GOOD = """\
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
upstream:
  host: 127.0.0.1
  port: 1
  database: appdb
  user: app
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /nonexistent/jwks.json}
"""


@pytest.fixture(scope="module")
def with_example_plugin(tmp_path_factory) -> dict:
    """An environment in which the example plugin is installed (its entry point visible)."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "pgwarden_business_hours-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pgwarden-business-hours\nVersion: 1.0.0\n")
    (dist / "entry_points.txt").write_text("[pgwarden]\nbusiness-hours = pgwarden_business_hours:plugin\n")
    path = os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def pgwarden(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgwarden", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def problems_of(stderr: str, source: Path) -> list[str]:
    return [line.removeprefix(f"{source}: ") for line in stderr.splitlines() if line.startswith(f"{source}: ")]


def check_and_run(tmp_path, text: str, env=None) -> list[str]:
    """The problems `check` reports, after asserting that `run` refuses the file with the same."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    checked = pgwarden("check", "-c", str(cfg), env=env)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    ran = pgwarden("run", "-c", str(cfg), "--reload-poll-s", "0", env=env)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    found = problems_of(checked.stderr, cfg)
    assert found and found == problems_of(ran.stderr, cfg), (checked.stderr, ran.stderr)
    return found


def test_a_plugin_option_run_refuses_fails_check_with_its_line(tmp_path, with_example_plugin):
    found = check_and_run(tmp_path, GOOD + "plugins:\n  business-hours: {timezone: Mars/Olympus}\n",
                          env=with_example_plugin)
    assert found == ["line 11: plugins.business-hours.timezone: expected an IANA time zone like Europe/Berlin, "
                     "got 'Mars/Olympus'"]


def test_the_example_plugins_options_pass_when_good(tmp_path, with_example_plugin):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "plugins:\n  business-hours: {timezone: Europe/Berlin, start: 8}\n")
    out = pgwarden("check", "-c", str(cfg), env=with_example_plugin)
    assert out.returncode == 0, out.stderr
    listed = pgwarden("plugins", env=with_example_plugin)
    assert "business-hours 1.0.0 (entry point)" in listed.stdout


def test_structural_and_rule_kind_problems_come_together(tmp_path):
    found = check_and_run(tmp_path, GOOD.replace("database: appdb", "databse: appdb") + (
        "policies:\n"
        "  - name: agents\n"
        "    rules:\n"
        "      - {name: pii, mask: {columns: [public.users.ssn], with: hsah}}\n"
        "      - {name: writes, approve: {statements: [insert], mode: later}}\n"
    ))
    assert found == [
        "line 6: upstream.databse: unknown key; did you mean `database`?",
        "line 13: policies[0].rules[0].mask.with: expected one of redact, partial, hash, null, email, fixed, "
        "got 'hsah'; did you mean `hash`?",
        "line 14: policies[0].rules[1].approve.mode: expected one of hold, retry",
    ]


def test_duplicate_policy_names_are_refused(tmp_path):
    found = check_and_run(tmp_path, GOOD + "policies:\n  - {name: agents}\n  - {name: ci}\n  - {name: agents}\n")
    assert found == ["line 13: policies[2].name: policy name 'agents' is taken by policies[0]; "
                     "expected each policy to have a name of its own"]


def test_plugins_section_problems_with_lines_and_suggestions(tmp_path):
    found = check_and_run(tmp_path, GOOD + "plugins:\n  disable: [recordng]\n  timeout_s: soon\n  blok: {}\n")
    assert found == [
        "line 11: plugins.disable[0]: no plugin is named 'recordng'; did you mean `recording`?",
        "line 12: plugins.timeout_s: expected a number of seconds above 0, got 'soon'",
        "line 13: plugins.blok: no loaded plugin is named 'blok'; did you mean `block`?",
    ]


def test_no_authenticator_is_refused_by_check_too(tmp_path):
    found = check_and_run(tmp_path, GOOD + "plugins: {disable: [jwt]}\n")
    assert found == ["line 10: plugins.disable: no loaded plugin authenticates clients (pgwarden_authenticate); "
                     "disabled: jwt"]


def test_upstream_tls_that_cannot_verify_is_refused(tmp_path):
    found = check_and_run(tmp_path, GOOD.replace("user: app", "user: app\n  tls: {mode: verify-full}"))
    assert found == ["line 8: upstream.tls: expected ca_file with mode verify-full "
                     "(it verifies the server against that CA)"]


def test_a_key_file_that_is_there_but_unusable(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text("not json")
    found = check_and_run(tmp_path, GOOD.replace("/nonexistent/jwks.json", str(jwks)))
    assert len(found) == 1 and found[0].startswith(f"line 9: auth.jwt.jwks_file: {jwks}: not JSON"), found


class Zoned:
    """An inline plugin whose options validate themselves, as the example's do."""

    @hookimpl
    def pgwarden_options(self):
        import attrs

        def zone(_inst, attribute, value):
            if value not in ("UTC", "Europe/Berlin"):
                raise ValueError(f"{attribute.name}: expected a known time zone, got {value!r}")

        return attrs.make_class("ZonedOptions", {"tz": attrs.field(default="UTC", validator=zone, type=str),
                                                 "start": attrs.field(default=9, type=int)}, frozen=True)


def test_plugin_option_problems_name_the_key_and_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "plugins:\n  zoned:\n    start: nine\n    tz: Mars\n    colour: red\n")
    with pytest.raises(ConfigError) as excinfo:
        load_checked(cfg, extra=[("zoned", Zoned())])
    assert excinfo.value.problems == [
        "line 12: plugins.zoned.start: invalid value for type, expected int",
        "line 14: plugins.zoned.colour: unknown key; expected one of tz, start",
    ]  # the class's own validator runs once its fields structure
    cfg.write_text(GOOD + "plugins:\n  zoned:\n    start: 8\n    tz: Mars\n")
    with pytest.raises(ConfigError) as excinfo:
        load_checked(cfg, extra=[("zoned", Zoned())])
    assert excinfo.value.problems == ["line 13: plugins.zoned.tz: expected a known time zone, got 'Mars'"]


def test_a_good_file_gives_the_config_and_its_plugins(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "policies: [{name: agents, rules: [{block: {statements: [ddl]}}]}]\n")
    config, plugins = load_checked(cfg)
    assert [p.name for p in config.policies] == ["agents"]
    assert {"jwt", "block", "recording"} <= {p.name for p in plugins.loaded()}
    assert plugins.checks
