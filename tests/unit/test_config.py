"""The config file: every mistake reported with its path and line; secrets stay out of reprs."""

from __future__ import annotations

import pytest

from pgwarden.api import APPROVE, MASK, hookimpl
from pgwarden.config import ConfigError, load_config, parse_config
from pgwarden.plugins import PluginHost

GOOD = """
listen: {host: 127.0.0.1, port: 6432}
upstream:
  host: db
  database: appdb
  user: app
  password_file: /run/secrets/pw
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}
"""


def test_good_file_structures_with_defaults():
    c = parse_config(GOOD, "good.yaml")
    assert c.listen.port == 6432 and c.upstream.port == 5432
    assert c.auth.jwt.algorithms == ("RS256", "ES256")
    assert c.upstream.tls.mode == "disable"
    assert c.source == "good.yaml"


def pgwarden_check(cfg):
    """`pgwarden check -c cfg` as an operator runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg)], capture_output=True, text=True)


class TakesOnMaskAndApprove:
    """Interprets the built-in kinds no built-in plugin does, so their rules are only read."""

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [MASK, APPROVE]


def problems(text: str) -> list[str]:
    """Every problem of ``text``, its rules read by their kinds as `check` and `run` read them."""
    with pytest.raises(ConfigError) as excinfo:
        PluginHost(parse_config(text, "f.yaml"), None, [("masks", TakesOnMaskAndApprove())])
    return excinfo.value.problems


def test_wrong_type_names_path_and_line():
    assert problems(GOOD.replace("port: 6432", "port: many")) == [
        "line 2: listen.port: invalid value for type, expected int"
    ]


def test_unknown_key_is_an_error_at_its_own_line_with_the_nearest_key():
    assert problems(GOOD.replace("user: app", "user: app\n  pasword_file: /x")) == [
        "line 7: upstream.pasword_file: unknown key; did you mean `password_file`?"
    ]
    assert problems(GOOD + "polices: []\n") == ["line 10: polices: unknown key; did you mean `policies`?"]
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{blok: {statements: [ddl]}}]}]\n")
    assert p.startswith("line 10: policies[0].rules[0]: rule kind 'blok' is interpreted by no loaded plugin; "
                        "did you mean `block`?"), p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{block: {statements: [ddl]}, reasn: x}]}]\n")
    assert p == "line 10: policies[0].rules[0].reasn: unknown key; did you mean `reason`?"
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {columns: [a.b.c], wiht: hash}}]}]\n")
    assert p == "line 10: policies[0].rules[0].mask.wiht: unknown key; did you mean `with`?"


def test_a_key_nothing_like_any_other_lists_the_keys():
    (p,) = problems(GOOD.replace("port: 6432", "port: 6432, zzz: 1"))
    assert p == "line 2: listen.zzz: unknown key; expected one of host, port, tls, allow_cleartext_remote"


def test_a_misspelt_required_key_is_one_problem_not_two():
    assert problems(GOOD.replace("database: appdb", "databse: appdb")) == [
        "line 5: upstream.databse: unknown key; did you mean `database`?"
    ]


def test_every_problem_at_once():
    text = GOOD.replace("port: 6432", "port: 70000").replace("user: app", "usr: app")
    found = problems(text)
    assert found == [
        "line 2: listen: invalid value: port must be a TCP port (0-65535), got 70000",
        "line 6: upstream.usr: unknown key; did you mean `user`?",
    ]
    (missing,) = problems(GOOD.replace("  host: db\n", ""))
    assert missing == "line 3: upstream.host: required field missing"


def test_missing_required_section():
    (p,) = problems("listen: {port: 1}\nupstream: {host: a, database: b, user: c}\n")
    assert "auth" in p and "required" in p


def test_insecure_algorithms_refused():
    (p,) = problems(GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /x, algorithms: [HS256]"))
    assert "HS256" in p and "auth.jwt" in p


def test_exactly_one_key_source():
    (p,) = problems(GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /x, public_key_file: /y"))
    assert "exactly one" in p


def test_tls_mode_is_checked():
    (p,) = problems(GOOD.replace("user: app", "user: app\n  tls: {mode: sometimes}"))
    assert "upstream.tls.mode" in p


def test_not_yaml_and_not_a_mapping():
    (p,) = problems("upstream: [1\n")
    assert p.startswith("line 2: not valid YAML")
    (p,) = problems("- a\n- b\n")
    assert "mapping" in p


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(excinfo.value)


def test_password_is_read_from_its_file_not_kept_in_the_config(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-value\n")
    c = parse_config(GOOD.replace("/run/secrets/pw", str(pw)))
    assert c.upstream.read_password() == "s3cret-value"
    assert "s3cret-value" not in repr(c)


def test_check_prints_what_the_file_grants(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "policies:\n  - {name: agents, when: {groups: [ai-agents]}}\n"
                   "  - {name: ci, when: {subject: 'ci-*'}}\n")
    out = pgwarden_check(cfg)
    assert out.returncode == 0, out.stderr
    assert "policy agents: for groups ai-agents; default allow; 0 rule(s)" in out.stdout
    assert "policy ci: for subject ci-*; default allow" in out.stdout
    cfg.write_text(GOOD.replace("port: 6432", "port: x") + "policies: [{name: p, rules: [{limit: {rows: 5}}]}]\n")
    out = pgwarden_check(cfg)
    assert out.returncode == 2
    assert "line 2: listen.port: invalid value for type, expected int" in out.stderr


def test_unclaimed_rule_kind_fails_check(tmp_path):
    cfg = tmp_path / "c.yaml"
    # the plugin that interprets mask rules is switched off: its rules are not silently dropped
    cfg.write_text(GOOD + "plugins: {disable: [mask]}\n"
                   "policies: [{name: p, rules: [{name: r, mask: {columns: [public.u.ssn]}}]}]\n")
    out = pgwarden_check(cfg)
    assert out.returncode == 2
    assert "policies[0].rules[0]: rule kind 'mask' is interpreted by no loaded plugin" in out.stderr


def test_rule_must_say_exactly_one_thing():
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{name: r, reason: why}]}]\n")
    assert p == ("line 10: policies[0].rules[0]: expected exactly one rule kind (block, allow, approve, mask, "
                 "limit or one a plugin declares) besides name, reason, hint and mode; this one says none")
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{block: {}, mask: {}}]}]\n")
    assert p.endswith("this one says block, mask"), p


def test_mask_strategy_is_checked():
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {columns: [a.b.c], with: hsah}}]}]\n")
    assert p.endswith("policies[0].rules[0].mask.with: expected one of redact, partial, hash, null, email, fixed, "
                      "got 'hsah'; did you mean `hash`?"), p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {columns: [a.b.c], with: hash, keep_last: 2}}]}]\n")
    assert p.endswith("policies[0].rules[0].mask.keep_first: invalid value: keep_first and keep_last go with `with: partial`, "
                      "not hash"), p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {columns: [users.ssn]}}]}]\n")
    assert p.endswith("policies[0].rules[0].mask.columns: expected schema.table.column (globs allowed: "
                      "public.*.ssn), got 'users.ssn'"), p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {columns: [a.b.c], with: fixed}}]}]\n")
    assert p.endswith("policies[0].rules[0].mask.value: invalid value: `with: fixed` needs the value to show (value: ...)"), p


def test_statement_kinds_are_checked():
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{block: {statements: [delet]}}]}]\n")
    assert "unknown statement kind(s) delet" in p


def test_policy_needs_a_name():
    (p,) = problems(GOOD + "policies: [{when: {groups: [a]}}]\n")
    assert "policies[0].name: required field missing" in p


def test_default_block_without_an_enforcer_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "plugins: {disable: [block]}\npolicies: [{name: p, default: block}]\n")
    out = pgwarden_check(cfg)
    assert out.returncode == 2
    assert "policies[0].default: 'block' needs a plugin that interprets block rules" in out.stderr


def test_explain_without_a_database(tmp_path):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "policies:\n  - name: agents\n    when: {groups: [ai-agents]}\n    rules:\n"
                   "      - {name: unfiltered-writes, block: {statements: [delete, update], where: absent}}\n")
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgwarden", "explain", "-c", str(cfg), *a],
                              capture_output=True, text=True)

    out = run("--subject", "a", "--group", "ai-agents", "--json", "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1")
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["kinds"] == ["delete", "select"] and result["writes"] == ["public.t"]
    assert result["verdict"]["action"] == "block" and result["verdict"]["rule"] == "unfiltered-writes"
    ok = run("--subject", "a", "--group", "ai-agents", "DELETE FROM t WHERE id = 1")
    assert ok.returncode == 0 and "verdict    allow" in ok.stdout
    nobody = run("--subject", "a", "SELECT 1")
    assert nobody.returncode == 1 and "no policy for this identity" in nobody.stdout


def test_limits_are_checked():
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{limit: {statement_timeout: soon}}]}]\n")
    assert "expected a duration like 30s" in p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{limit: {rows: 0}}]}]\n")
    assert "rows must be at least 1" in p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{limit: {rows_written: 0}}]}]\n")
    assert "rows_written must be at least 1" in p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{limit: {rows_written: many}}]}]\n")
    assert "rows_written" in p


def test_results_delay_is_checked():
    assert parse_config(GOOD, "f.yaml").recording.results_delay_ms == 10
    assert parse_config(GOOD + "recording: {results_delay_ms: 0}\n", "f.yaml").recording.results_delay_ms == 0
    for bad in ("-1", "5000"):
        (p,) = problems(GOOD + f"recording: {{results_delay_ms: {bad}}}\n")
        assert p.startswith("line 10: recording") and "results_delay_ms must be between 0 and 1000" in p, p
    (p,) = problems(GOOD + "recording: {results_delay_ms: soon}\n")
    assert "recording.results_delay_ms" in p and "expected float" in p, p


@pytest.mark.parametrize("statements, sql, reason", [
    (["ddl"], "CREATE TABLE x (a int)", "schema changes (DDL) are not allowed"),
    (["role"], "SET ROLE postgres", "role changes are not allowed"),
    (["truncate"], "TRUNCATE t", "TRUNCATE is not allowed"),
    (["delete", "update"], "WITH d AS (DELETE FROM t RETURNING 1) UPDATE u SET a = 1",
     "DELETE, UPDATE are not allowed"),
])
def test_reasons_written_from_rules_agree_in_number(tmp_path, statements, sql, reason):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + "policies:\n  - name: agents\n    rules:\n"
                   f"      - {{name: r, block: {{statements: {json.dumps(statements)}}}}}\n")
    out = subprocess.run([sys.executable, "-m", "pgwarden", "explain", "-c", str(cfg), "--subject", "a", "--json", sql],
                         capture_output=True, text=True)
    assert json.loads(out.stdout)["verdict"]["reason"] == reason, out.stderr


def test_two_sinks_may_not_write_to_one_stream():
    (p,) = problems(GOOD + "recording: {sinks: [{file: /var/log/r.jsonl}, {file: /var/log/../log/r.jsonl}]}\n")
    assert "sinks[1] writes to /var/log/r.jsonl, as sinks[0] does" in p, p
    (p,) = problems(GOOD + "recording: {sinks: [stdout, {file: /var/log/r.jsonl}, {stdout: true}]}\n")
    assert "sinks[2] writes to standard output, as sinks[0] does" in p, p
    assert len(parse_config(GOOD + "recording: {sinks: [stdout, {file: /var/log/r.jsonl}]}\n", "f.yaml")
               .recording.sinks) == 2


def test_two_policies_may_not_share_a_name():
    found = problems(GOOD + "policies:\n  - {name: agents}\n  - {name: agents, when: {groups: [x]}}\n")
    assert found == ["line 12: policies[1].name: policy name 'agents' is taken by policies[0]; "
                     "expected each policy to have a name of its own"]


def test_misspelt_values_get_the_nearest_choice():
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{block: {statements: [ddl, delet]}}]}]\n")
    assert p.endswith("unknown statement kind(s) delet; did you mean `delete`?"), p
    (p,) = problems(GOOD + "policies: [{name: p, rules: [{mask: {detect: [credit_crad]}}]}]\n")
    assert p == ("line 10: policies[0].rules[0].mask.detect: expected one of ssn, credit_card, email, iban, phone, "
                 "jwt, api_key or a plugin's <plugin>.<name>, got 'credit_crad'; did you mean `credit_card`?")
    (p,) = problems(GOOD + "policies: [{name: p, default: blok}]\n")
    assert p == "line 10: policies[0].default: expected one of allow, block, got 'blok'; did you mean `block`?"


def test_upstream_tls_files_go_together():
    (p,) = problems(GOOD.replace("user: app", "user: app\n  tls: {mode: require, cert_file: /c.pem}"))
    assert p == "line 7: upstream.tls: expected both cert_file and key_file for a client certificate, or neither"


def test_structuring_problems_come_in_file_order():
    text = GOOD.replace("port: 6432", "port: 6432, hots: x") + "policies: [{name: p, default: x}]\nlisten2: {}\n"
    assert [p.split(":")[0] for p in problems(text)] == ["line 2", "line 10", "line 11"]


@pytest.mark.parametrize(("text", "said"), [
    # a word where a list of words belongs was split into its characters, silently: an approver in
    # group "d" approved, a rule naming tables `secret.*` named the tables s, e, c, ... (session 30)
    (GOOD + "policies: [{name: p, when: {groups: ai-agents}}]\n",
     "line 10: policies[0].when.groups: expected a list of strings, got 'ai-agents'"),
    (GOOD + "approvals: {approver_groups: db-approvers}\n",
     "line 10: approvals.approver_groups: expected a list of strings, got 'db-approvers'"),
    (GOOD + "policies: [{name: p, rules: [{block: {tables: secret.*}}]}]\n",
     "line 10: policies[0].rules[0].block.tables: expected a list of strings, got 'secret.*'"),
    (GOOD + "policies: [{name: p, rules: [{approve: {statements: [delete], tables: public.*}}]}]\n",
     "line 10: policies[0].rules[0].approve.tables: expected a list of strings, got 'public.*'"),
    (GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /etc/jwks.json, algorithms: RS256"),
     "line 9: auth.jwt.algorithms: expected a list of strings, got 'RS256'"),
    # a list or a word where a section's keys belong: said so, with the keys it takes
    (GOOD.replace("listen: {host: 127.0.0.1, port: 6432}", "listen: [127.0.0.1, 6432]"),
     "line 2: listen: expected a mapping of host, port, tls, allow_cleartext_remote, got a list"),
    (GOOD.replace("user: app", "user: app\n  tls: verify-full"),
     "line 7: upstream.tls: expected a mapping of mode, ca_file, cert_file, key_file, got 'verify-full'"),
    # (these were taken item by item too: `got 's'`, the first letter's sink)
    (GOOD + "recording: {sinks: stdout}\n", "line 10: recording.sinks: expected a list of sinks, got 'stdout'"),
    (GOOD + "approvals: {notify: {webhook: https://h}}\n",
     "line 10: approvals.notify: expected a list of notifications, got {'webhook': 'https://h'}"),
])
def test_a_word_or_a_list_where_another_shape_belongs_is_said(text, said):
    assert problems(text) == [said]


@pytest.mark.parametrize(("text", "said"), [
    (GOOD + "policies: [{name: p, when: {subject: [agent-*]}}]\n",
     "line 10: policies[0].when.subject: expected a string, got ['agent-*']"),
    (GOOD.replace("user: app", "user: yes"), "line 6: upstream.user: expected a string, got True"),
    (GOOD.replace("database: appdb", "database: {name: appdb}"),
     "line 5: upstream.database: expected a string, got {'name': 'appdb'}"),
    (GOOD.replace("jwks_file: /etc/jwks.json", "jwks_file: /etc/jwks.json, leeway_s: -30"),
     "line 9: auth.jwt: invalid value: leeway_s must be zero or more, got -30.0"),
])
def test_a_list_a_mapping_or_a_boolean_is_no_string(text, said):
    """(session 30: they became their text, `['agent-*']` a glob of one character)"""
    assert problems(text) == [said]


def test_a_number_where_a_name_belongs_is_its_digits():
    assert parse_config(GOOD.replace("user: app", "user: 1234"), "f.yaml").upstream.user == "1234"


def test_a_reader_that_leaves_early_ends_the_command_without_a_traceback(tmp_path):
    """`pgwarden check ... | head -1`: the pipe's reader gone, the command ends as a shell's
    would (141, SIGPIPE's), with no traceback on its standard error."""
    import os
    import subprocess
    import sys

    cfg = tmp_path / "good.yaml"
    cfg.write_text(GOOD)
    read, write = os.pipe()
    os.close(read)  # (every write to the pipe fails: the reader left before the first)
    try:
        done = subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg)], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
