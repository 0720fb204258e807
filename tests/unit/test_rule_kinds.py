"""Rule kinds and config sections as plugins declare them; deprecations as pluggy reports them.

A third party's rule kind is read from the file like the built-in ones, through
the same path `pgwarden check` and `pgwarden run` take (`load_checked`): every
problem at once, each with its key path and line.
"""

from __future__ import annotations

import attrs
import pytest

from pgwarden import hookspecs
from pgwarden.api import (
    BLOCK,
    LIMIT,
    MASK,
    UPSTREAM,
    ConfigProblem,
    ConfigSection,
    PgwardenDeprecationWarning,
    Rule,
    RuleKind,
    Sections,
    Upstream,
    hookimpl,
)
from pgwarden.config import ConfigError, parse_config
from pgwarden.plugins import PluginError, PluginHost
from pgwarden.policy.model import Unread, row_cap, statement_timeout_ms
from pgwarden.preflight import load_checked

HEAD = """\
listen: {host: 127.0.0.1, port: 0}
upstream: {host: 127.0.0.1, port: 1, database: appdb, user: app}
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /nonexistent/jwks.json}
policies:
  - name: agents
    rules:
"""


def _weekday(_inst, attribute, value: int) -> None:
    if not 0 <= value <= 6:
        raise ValueError(f"{attribute.name}: expected 0 (Monday) to 6, got {value!r}")


@attrs.frozen
class QuietDay:
    tables: tuple[str, ...]
    weekday: int = attrs.field(default=6, validator=_weekday)


QUIET = RuleKind("quiet", QuietDay, "no statements on these tables on one day")


class Quiet:
    @hookimpl
    def pgwarden_rule_kinds(self):
        return [QUIET]


def checked(tmp_path, rules: str, *plugins):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(HEAD + rules)
    return load_checked(cfg, extra=[(type(p).__name__.lower(), p) for p in plugins])


def problems(tmp_path, rules: str, *plugins) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        checked(tmp_path, rules, *plugins)
    return [p.removeprefix(str(tmp_path / "c.yaml") + ": ") for p in excinfo.value.problems]


def test_a_plugins_rule_kind_is_read_into_its_class(tmp_path):
    config, host = checked(tmp_path, "      - {name: sunday, quiet: {tables: [public.orders]}}\n"
                                     "      - {name: cap, limit: {rows: 5, statement_timeout: 2s}}\n", Quiet())
    quiet, cap = config.policies[0].rules
    assert QUIET.of(quiet) == QuietDay(tables=("public.orders",)) and QUIET.of(cap) is None
    assert BLOCK.of(quiet) is None and LIMIT.of(cap).rows == 5
    assert row_cap(config.policies) == 5 and statement_timeout_ms(config.policies) == 2000
    assert host.rule_kinds["quiet"] == ("quiet",) and host.rule_kinds["limit"] == ("pgwarden",)


def test_its_problems_come_with_the_others_each_at_its_line(tmp_path):
    found = problems(tmp_path, "      - {quiet: {tables: [a.b], weekday: 9}}\n"
                               "      - {quiet: {weekday: 1, colour: red}}\n"
                               "      - {quiet: {tables: a.b}}\n"
                               "      - {block: {statements: [delet]}}\n", Quiet())
    assert found == [
        "line 8: policies[0].rules[0].quiet.weekday: expected 0 (Monday) to 6, got 9",
        "line 9: policies[0].rules[1].quiet.colour: unknown key; expected one of tables, weekday",
        "line 9: policies[0].rules[1].quiet.tables: required field missing",
        "line 10: policies[0].rules[2].quiet.tables: expected a list of strings, got 'a.b'",
        "line 11: policies[0].rules[3].block.statements: invalid value: unknown statement kind(s) delet; "
        "did you mean `delete`?",
    ]


def test_without_its_plugin_a_kind_is_refused_and_a_misspelt_one_gets_a_guess(tmp_path):
    assert problems(tmp_path, "      - {quiet: {tables: [a.b]}}\n      - {blok: {}}\n") == [
        "line 8: policies[0].rules[0]: rule kind 'quiet' is interpreted by no loaded plugin "
        "(loaded rule kinds: allow, approve, block, limit, mask)",
        "line 9: policies[0].rules[1]: rule kind 'blok' is interpreted by no loaded plugin; did you mean `block`? "
        "(loaded rule kinds: allow, approve, block, limit, mask)",
    ]


def test_a_file_that_does_not_structure_still_has_its_rules_read(tmp_path):
    found = problems(tmp_path, "      - {quiet: {tables: [a.b], weekday: 9}}\n"
                               "listen2: {}\n", Quiet())
    assert found == ["line 8: policies[0].rules[0].quiet.weekday: expected 0 (Monday) to 6, got 9",
                     "line 9: listen2: unknown key; did you mean `listen`?"]


def test_a_rule_is_read_once_and_not_before():
    rule = Rule("quiet", Unread({"tables": ["a.b"]}))
    with pytest.raises(RuntimeError, match="not been read"):
        QUIET.of(rule)


def test_two_plugins_cannot_declare_one_kind_differently_but_may_share_it():
    class Other:
        @hookimpl
        def pgwarden_rule_kinds(self):
            return [RuleKind("quiet", QuietDay)]

    class Shares:
        @hookimpl
        def pgwarden_rule_kinds(self):
            return [QUIET]

    # (pluggy asks the plugin registered last first)
    with pytest.raises(PluginError, match="plugin 'quiet' declares rule kind 'quiet', which plugin 'other' "
                                          "declares already"):
        PluginHost(None, None, [("quiet", Quiet()), ("other", Other())], use_entry_points=False)
    host = PluginHost(None, None, [("quiet", Quiet()), ("shares", Shares())], use_entry_points=False)
    assert sorted(host.rule_kinds["quiet"]) == ["quiet", "shares"]

    class Redeclares:
        @hookimpl
        def pgwarden_rule_kinds(self):
            return [RuleKind("block", QuietDay)]

    with pytest.raises(PluginError, match="which pgwarden declares already"):
        PluginHost(None, None, [("redeclares", Redeclares())], use_entry_points=False)


def test_a_rule_kind_needs_a_word_and_an_attrs_class():
    with pytest.raises(ValueError, match="a key of every rule"):
        RuleKind("reason", QuietDay)
    with pytest.raises(ValueError, match="attrs class"):
        RuleKind("quiet", dict)


class ByName:
    @hookimpl
    def pgwarden_rule_kinds(self):
        return ["mask"]  # plugin contract v0


def test_a_built_in_kind_claimed_by_its_name_still_works_with_a_deprecation():
    host = PluginHost(None, None, [("byname", ByName())], use_entry_points=False)
    assert host.rule_kinds["mask"] == ("byname",)
    (loaded,) = host.loaded()
    assert loaded.rule_kinds == ("mask",)
    assert loaded.warnings == ("claims rule kind 'mask' by its name; return the RuleKind object "
                               "(pgwarden.api.MASK): names go after v1",)


def test_a_hook_marked_for_removal_warns_through_pluggy(monkeypatch):
    """The deprecation path of the contract: pluggy's warn_on_impl, reported per plugin."""
    opts = dict(hookspecs.pgwarden_stop.pgwarden_spec)
    opts["warn_on_impl"] = PgwardenDeprecationWarning("pgwarden_stop goes in v2: use pgwarden_shutdown")
    monkeypatch.setattr(hookspecs.pgwarden_stop, "pgwarden_spec", opts)

    class Stops:
        @hookimpl
        def pgwarden_stop(self):
            pass

    (loaded,) = PluginHost(None, None, [("stops", Stops())], use_entry_points=False).loaded()
    assert loaded.warnings == ("pgwarden_stop goes in v2: use pgwarden_shutdown",)


def test_plugin_contract_v0_configure_is_refused_with_a_pointer():
    class V0:
        @hookimpl
        def pgwarden_configure(self, config, options):
            pass

    with pytest.raises(PluginError, match="declare the sections you need with pgwarden_config_sections"):
        PluginHost(None, None, [("v0", V0())], use_entry_points=False)


class NeedsUpstream:
    def __init__(self) -> None:
        self.given: list[Sections] = []

    @hookimpl
    def pgwarden_config_sections(self):
        return [UPSTREAM]

    @hookimpl
    def pgwarden_validate(self, sections):
        if sections[UPSTREAM].port == 1:
            return [ConfigProblem(("upstream", "port"), "port 1 is tcpmux, surely not PostgreSQL")]
        return None

    @hookimpl
    def pgwarden_configure(self, sections, options):
        self.given.append(sections)
        if sections[UPSTREAM].database == "refused":
            raise ExceptionGroup("two", [ConfigProblem(("upstream", "database"), "not this one"),
                                         ConfigProblem(("upstream", "user"), "nor this one")])


def test_a_plugin_gets_the_sections_it_declared_and_only_those(tmp_path):
    plugin = NeedsUpstream()
    found = problems(tmp_path, "      - {name: r, limit: {rows: 1}}\n", plugin)
    assert found == ["line 2: upstream.port: port 1 is tcpmux, surely not PostgreSQL"]
    host = PluginHost(parse_config(HEAD.replace("port: 1,", "port: 5432,") + "      - {limit: {rows: 1}}\n"),
                      None, [("needs", plugin)], use_entry_points=False)
    host.configure(host.config)
    (sections,) = plugin.given
    assert list(sections) == [UPSTREAM] and isinstance(sections[UPSTREAM], Upstream)
    with pytest.raises(KeyError, match="'recording' was not declared"):
        sections[ConfigSection("recording", object)]
    refused = parse_config(HEAD.replace("database: appdb", "database: refused") + "      - {limit: {rows: 1}}\n",
                           "r.yaml")
    with pytest.raises(ConfigError) as excinfo:
        host.configure(host.accept(refused))
    assert excinfo.value.problems == ["line 2: upstream.database: not this one", "line 2: upstream.user: nor this one"]


@pytest.mark.parametrize("section, why", [
    (ConfigSection("upstream.nope", str), "no section 'upstream.nope': upstream has no key 'nope'"),
    (ConfigSection("source", str), "no section 'source': the top level has no key 'source'"),
    (ConfigSection("upstream", str), "section 'upstream' holds"),
])
def test_a_section_that_is_not_there_refuses_the_plugin(section, why):
    class Wants:
        @hookimpl
        def pgwarden_config_sections(self):
            return [section]

    with pytest.raises(PluginError, match=why):
        PluginHost(None, None, [("wants", Wants())], use_entry_points=False)


def test_masks_claimed_by_a_plugin_are_read_as_the_built_in_kind(tmp_path):
    class Masks:
        @hookimpl
        def pgwarden_rule_kinds(self):
            return [MASK]

    config, _ = checked(tmp_path, "      - {mask: {columns: [public.u.ssn], with: {partial: {keep_last: 2}}}}\n",
                        Masks())
    spec = MASK.of(config.policies[0].rules[0])
    assert (spec.with_, spec.keep_last, spec.kept) == ("partial", 2, (0, 2))  # the design card's form, read flat


class _Masker:
    """Masks by its ``quiet`` rules; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [QUIET]

    @hookimpl
    def pgwarden_check(self, statement):
        self.calls.append("check")

    @hookimpl
    def pgwarden_result_masks(self, result):
        self.calls.append("result")

    @hookimpl
    def pgwarden_message_masks(self, statement):
        self.calls.append("message")


class OnlyByItsRules(_Masker):
    pgwarden_checks_only_its_rules = True
    pgwarden_masks_only_by_its_rules = True


class Always(_Masker):
    pgwarden_rule_kinds = None  # declares no kind: nothing tells when it has nothing to do


def test_a_plugin_that_acts_only_on_its_rules_is_not_called_for_sessions_without_them(tmp_path):
    """``pgwarden_checks_only_its_rules`` and ``pgwarden_masks_only_by_its_rules``: its check and
    masks are skipped for policies without its rule kinds; a plugin that does not say so is
    called for every session."""
    from pgwarden.identity import Identity
    from pgwarden.masking import resolve_shape
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement
    from pgwarden.wire import messages as m

    only, always = OnlyByItsRules(), Always()
    config, host = checked(tmp_path, "      - {name: sunday, quiet: {tables: [public.orders]}}\n", only, always)
    shape = resolve_shape(m.RowDescription((m.Column("a"),)), lambda: None, None)
    with_rule = config.policies
    without = (attrs.evolve(config.policies[0], rules=()),)
    for policies, called in ((without, []), (with_rule, ["check", "result", "message"])):
        session = Session("s1", Identity("agent", frozenset()), "appdb", policies=policies)
        only.calls.clear()
        always.calls.clear()
        host.check(Statement("select 1"), session)
        assert host.result_masks(shape, None, session) == {}
        assert host.message_masks(None, session) == []
        assert only.calls == called
        assert always.calls == ["check", "result", "message"]
        assert bool(host.maskers(policies).results) is True  # `Always` is always asked


def test_sessions_under_other_policies_in_turn_each_get_their_own_checkers(tmp_path):
    """`Checkers` keeps the checkers of the policies it was last asked about (a session's next
    statement needs no lookup): statements of two sessions, one whose policies have the plugin's
    rule and one without, in turn, each call exactly the plugins their own policies want."""
    from pgwarden.identity import Identity
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement

    only, always = OnlyByItsRules(), Always()
    config, host = checked(tmp_path, "      - {name: sunday, quiet: {tables: [public.orders]}}\n", only, always)
    with_rule = Session("s1", Identity("agent", frozenset()), "appdb", policies=config.policies)
    without = Session("s2", Identity("agent", frozenset()), "appdb",
                      policies=(attrs.evolve(config.policies[0], rules=()),))
    for session, called in [(with_rule, ["check"]), (with_rule, ["check"]), (without, []), (with_rule, ["check"]),
                            (without, []), (without, [])]:
        only.calls.clear()
        always.calls.clear()
        host.check(Statement("select 1"), session)
        assert only.calls == called
        assert always.calls == ["check"]
