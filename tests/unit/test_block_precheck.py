"""The block plugin's compiled memo (`pgwarden.plugin_call.Precheck`): the plugin host asks it
before calling the plugin, and its answer is always the plugin's own; other plugins are still
called for every statement, and the plugin itself whenever the memo cannot answer."""

from __future__ import annotations

from pgwarden.api import hookimpl
from pgwarden.config import _CONVERTER
from pgwarden.identity import Identity
from pgwarden.plugin_call import ASK, Precheck
from pgwarden.plugins import PluginHost
from pgwarden.policy.model import Policy
from pgwarden.session import Session, replace_policies
from pgwarden.sql.analysis import analyze_sql
from pgwarden.sql.cache import StatementCache


class Counts:
    """A third-party checker: never answers, counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def pgwarden_check(self, statement, session):
        self.calls += 1


def _host(*extra) -> PluginHost:
    return PluginHost(None, None, list(extra))  # the built-in plugins (block among them), and these


def _policy(host: PluginHost, rules=(), default="allow", name="p") -> Policy:
    structured = _CONVERTER.structure({"name": name, "default": default, "rules": list(rules)}, Policy)
    return host.read_policies((structured,))[0]


def _session(policies) -> Session:
    return Session("s1", Identity("agent-1", frozenset()), "appdb", policies=tuple(policies))


def test_the_memo_answers_only_what_the_plugin_judged_and_as_it_did():
    host = _host()
    block = host.pm.get_plugin("block")
    assert isinstance(block.precheck, Precheck)
    policies = (_policy(host, [{"block": {"statements": ["delete"]}}]),)
    session = _session(policies)
    cache = StatementCache()
    delete, select = cache.get("delete from t where id = 1"), cache.get("select 1")
    delete.analyse()
    select.analyse()
    precheck = block.precheck
    assert precheck.answer(delete, session) is ASK  # nothing judged yet: the plugin judges
    first = block.pgwarden_check(delete, session)
    assert first is not None and first.action == "block"
    assert precheck.answer(delete, session) is first  # its own verdict, remembered
    assert precheck.answer(select, session) is ASK
    assert block.pgwarden_check(select, session) is None
    assert precheck.answer(select, session) is None  # judged: no verdict of its own
    other = _session((_policy(host, [{"block": {"statements": ["delete"]}}]),))  # an equal tuple, another object
    assert precheck.answer(delete, other) is ASK
    assert precheck.answer(cache.get("delete from t where id = 2"), session) is ASK  # not analysed yet
    open_session = _session((_policy(host),))  # no rule: nothing to enforce
    assert block.pgwarden_check(select, open_session) is None
    assert precheck.answer(delete, session) is first  # (the last answer: for these policies only)
    assert precheck.answer(delete, open_session) is None
    assert precheck.answer(delete, session) is first


def test_without_rules_the_memo_answers_none_but_asks_the_plugin_for_what_cannot_be_analysed():
    host = _host()
    block = host.pm.get_plugin("block")
    session = _session((_policy(host),))
    cache = StatementCache()
    select, unknown = cache.get("select 1"), cache.get("select frobnicate(1)")
    select.analyse()
    assert "unknown" in unknown.analyse().kinds
    assert block.precheck.answer(select, session) is ASK  # the policies not seen yet
    assert block.pgwarden_check(select, session) is None
    assert block.precheck.answer(select, session) is None
    assert block.precheck.answer(unknown, session) is ASK
    refused = host.check(unknown, session)
    assert refused.action == "block" and refused.rule == "unknown: block"


def test_what_uses_prepared_statements_is_never_answered_by_the_memo():
    analysis = analyze_sql("execute p")
    assert analysis.uses_prepared and analyze_sql("prepare p as select 1").uses_prepared
    assert analyze_sql("deallocate p").uses_prepared and not analyze_sql("select 1").uses_prepared
    host = _host()
    block = host.pm.get_plugin("block")
    session = _session((_policy(host, [{"block": {"statements": ["delete"]}}]),))
    cache = StatementCache()
    execute = cache.get("execute p")
    for sql in ("prepare p as select 1", "execute p"):
        assert host.check(cache.get(sql), session).action == "allow"
    assert block.precheck.answer(execute, session) is ASK
    for sql in ("deallocate p", "prepare p as delete from t where id = 1"):
        host.check(cache.get(sql), session)
    assert host.check(execute, session).action == "block"  # the same text and analysis: judged again


def test_through_the_host_the_verdicts_are_the_plugins_and_other_plugins_are_called_each_time():
    counts = Counts()
    host = _host(("counts", counts))
    policies = (_policy(host, [{"block": {"statements": ["delete"]}}]),)
    session = _session(policies)
    cache = StatementCache()
    texts = ["delete from t where id = 1", "select 1", "select frobnicate(1)"] * 3
    actions = [host.check(cache.get(sql), session).action for sql in texts]
    assert actions == ["block", "allow", "block"] * 3
    assert counts.calls == len(texts)
    # A reload: other policies, judged afresh (right after the same statement was answered)
    assert host.check(cache.get("delete from t where id = 2"), session).action == "block"
    replace_policies(session, (_policy(host),))
    assert host.check(cache.get("delete from t where id = 1"), session).action == "allow"
    assert counts.calls == len(texts) + 2


def test_a_monitored_host_calls_the_block_plugin_itself():
    host = _host()
    session = _session((_policy(host, [{"block": {"statements": ["delete"]}}]),))
    statement = StatementCache().get("delete from t where id = 1")
    assert host.check(statement, session).action == "block"  # judged, then remembered
    seen: list[str] = []
    undo = host.pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name),
                                           lambda outcome, name, impls, kwargs: None)
    try:
        assert host.check(statement, session).action == "block"
    finally:
        undo()
    assert seen == ["pgwarden_check"]
