"""How the core calls plugins: through pluggy, one plugin at a time where it must know who answered.

pluggy passes an implementation only the arguments it names, in its own order;
wrappers (``wrapper=True``) wrap each plugin's decision; ``async def``
implementations run as Deferreds; a plugin that raises, fails later, answers
nonsense or not in time blocks the statement in its own name. The clock is
Twisted's `task.Clock`, so timeouts are tested without waiting.
"""

from __future__ import annotations

from twisted.internet import defer, task

from pgwarden import Verdict, hookimpl
from pgwarden.config import parse_config
from pgwarden.identity import Identity
from pgwarden.plugins import PluginHost
from pgwarden.session import Session
from pgwarden.sql.statement import Statement

CONFIG = """
listen: {host: 127.0.0.1, port: 6432}
upstream: {host: db, database: appdb, user: app, password_file: /run/secrets/pw}
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}
policies:
  - name: agents
"""


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple] = []


class ReversedArguments(Seen):
    @hookimpl
    def pgwarden_check(self, session, statement):
        self.calls.append((session, statement))
        return None


class StatementOnly(Seen):
    @hookimpl
    def pgwarden_check(self, statement):
        self.calls.append((statement,))
        return Verdict.block("no", rule="statement-only") if "drop" in statement.sql else None


class SessionOnly(Seen):
    @hookimpl
    def pgwarden_check(self, session):
        self.calls.append((session,))
        return Verdict.approve("a human looks at it", rule="session-only")


def session() -> Session:
    return Session("s1", Identity("agent-1", frozenset()), "appdb")


def host(*plugins, reactor=None) -> PluginHost:
    config = parse_config(CONFIG, "t.yaml")
    return PluginHost(config, reactor=reactor, extra=[(type(p).__name__, p) for p in plugins],
                      use_entry_points=False)


def settled(answer):
    """What a Deferred has fired with (or the answer itself)."""
    if not isinstance(answer, defer.Deferred):
        return answer
    out = []
    answer.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_each_check_gets_the_arguments_it_names_in_its_own_order():
    reversed_, statement_only, session_only = ReversedArguments(), StatementOnly(), SessionOnly()
    plugins = host(reversed_, statement_only, session_only)
    assert plugins.checks
    s, statement = session(), Statement("select 1")
    verdict = plugins.check(statement, s)
    assert reversed_.calls == [(s, statement)]
    assert statement_only.calls == [(statement,)]
    assert session_only.calls == [(s,)]
    assert verdict.action == "approve" and verdict.rule == "session-only"  # the strictest of the three


class AsksLast(Seen):
    """A check with work of its own (the mask plugin asks the server): asked last."""

    @hookimpl(trylast=True)
    def pgwarden_check(self, statement):
        self.calls.append((statement,))
        return None


def test_a_block_ends_the_asking_and_a_check_marked_trylast_is_not_asked_for_a_blocked_statement():
    # pluggy asks the last registered first; trylast after every other
    last, reversed_, statement_only, session_only = AsksLast(), ReversedArguments(), StatementOnly(), SessionOnly()
    plugins = host(last, reversed_, statement_only, session_only)
    s = session()
    verdict = plugins.check(Statement("drop table t"), s)
    assert verdict.action == "block" and verdict.rule == "statement-only"  # over session-only's approve
    assert session_only.calls == [(s,)] and len(statement_only.calls) == 1
    assert reversed_.calls == [] and last.calls == []  # after the block: not asked
    plugins.check(Statement("select 1"), s)
    assert len(reversed_.calls) == 1 and len(last.calls) == 1  # no block: every one asked


def test_without_a_block_the_strictest_is_the_approval():
    plugins = host(ReversedArguments(), StatementOnly(), SessionOnly())
    verdict = plugins.check(Statement("select 1"), session())
    assert verdict.action == "approve" and verdict.rule == "session-only"


def test_no_check_at_all_allows():
    plugins = host()
    assert not plugins.checks
    assert plugins.check(Statement("select 1"), session()).action == "allow"


class Allows(Seen):
    @hookimpl
    def pgwarden_check(self, statement):
        self.calls.append((statement,))
        return Verdict.allow()


class NoDropsOnFridays:
    """Only wraps: sees each plugin's decision through pluggy, and may change it."""

    def __init__(self) -> None:
        self.seen: list[list] = []

    @hookimpl(wrapper=True)
    def pgwarden_check(self, statement):
        answers = yield
        self.seen.append(list(answers))
        if "drop" in statement.sql:
            return [Verdict.block("not on a Friday", rule="friday")]
        return answers


def test_a_wrapper_wraps_each_plugins_decision_and_may_change_it():
    wrapper, allows, statement_only = NoDropsOnFridays(), Allows(), StatementOnly()
    plugins = host(wrapper, allows, statement_only)
    assert plugins.check(Statement("select 1"), session()).action == "allow"
    assert sorted(map(len, wrapper.seen)) == [0, 1]  # one call per deciding plugin: [allow] and []
    verdict = plugins.check(Statement("drop table t"), session())
    assert (verdict.action, verdict.rule) == ("block", "friday")
    assert [type(p).__name__ for p in (allows, statement_only) if p.calls] == ["Allows", "StatementOnly"]


class WrapperRaises:
    @hookimpl(wrapper=True)
    def pgwarden_check(self):
        yield
        raise RuntimeError("wrapper bug")


def test_a_wrapper_that_raises_blocks_in_its_own_name():
    verdict = host(WrapperRaises(), Allows()).check(Statement("select 1"), session())
    assert (verdict.action, verdict.reason) == ("block", "plugin 'WrapperRaises' failed")


class Raises:
    @hookimpl
    def pgwarden_check(self, statement):
        return statement.no_such_attribute  # a bug, deep in the plugin


def test_a_raising_plugin_blocks_in_its_own_name_and_the_others_still_decide():
    allows = Allows()
    verdict = host(allows, Raises()).check(Statement("select 1"), session())
    assert (verdict.action, verdict.reason, verdict.rule) == ("block", "plugin 'Raises' failed", "plugin:Raises")
    assert allows.calls


class Later:
    """An ``async def`` implementation: its coroutine runs as a Deferred."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock

    @hookimpl
    async def pgwarden_check(self, statement):
        await task.deferLater(self.clock, 1.0, lambda: None)
        if "forever" in statement.sql:
            await defer.Deferred()
        if "oops" in statement.sql:
            raise ValueError("async bug")
        return Verdict.block("later no", rule="later") if "no" in statement.sql else None


def test_an_async_plugin_is_awaited_within_the_timeout():
    clock = task.Clock()
    plugins = host(Later(clock), Allows(), reactor=clock)
    answer = plugins.check(Statement("select 'no'"), session())
    assert isinstance(answer, defer.Deferred) and not answer.called
    clock.advance(1.0)
    assert settled(answer).rule == "later"
    answer = plugins.check(Statement("select 'yes'"), session())
    clock.advance(1.0)
    assert settled(answer).action == "allow"
    answer = plugins.check(Statement("select 'oops'"), session())
    clock.advance(1.0)
    assert settled(answer).reason == "plugin 'Later' failed"
    answer = plugins.check(Statement("select 'forever'"), session())
    clock.advance(plugins.timeout_s - 0.1)
    assert not answer.called
    clock.advance(0.1)
    assert settled(answer).reason == "plugin 'Later' did not answer within 10s"


class Nonsense:
    @hookimpl
    def pgwarden_check(self):
        return "yes"


class LaterNonsense:
    @hookimpl
    async def pgwarden_check(self):
        return "yes"


def test_nonsense_blocks_now_or_later():
    assert host(Nonsense()).check(Statement("select 1"), session()).reason == \
        "plugin 'Nonsense' answered str, not a Verdict"
    assert settled(host(LaterNonsense()).check(Statement("select 1"), session())).reason == \
        "plugin 'LaterNonsense' answered 'yes'"


class AsyncAuthenticator:
    @hookimpl
    async def pgwarden_authenticate(self, secret):
        from pgwarden import Identity

        return Identity(secret) if secret.startswith("ok-") else None


class BrokenAuthenticator:
    @hookimpl
    def pgwarden_authenticate(self):
        raise KeyError("bug")


def test_authentication_through_pluggy_async_and_failing():
    from pgwarden.identity import AuthenticationFailed

    plugins = host(AsyncAuthenticator())
    assert settled(plugins.authenticate(None, "ok-agent")).subject == "ok-agent"
    assert settled(plugins.authenticate(None, "nope")) is None
    try:
        host(BrokenAuthenticator()).authenticate(None, "x")
    except AuthenticationFailed as e:
        assert "'BrokenAuthenticator' failed" in e.reason
    else:
        raise AssertionError("a broken authenticator let a client in")


def test_notifications_go_on_past_a_failing_plugin():
    seen = []

    class Fails:
        @hookimpl
        def pgwarden_session_start(self, session):
            raise RuntimeError("notifier bug")

    class FailsLater:
        @hookimpl
        async def pgwarden_session_start(self, session):
            raise RuntimeError("async notifier bug")

    class Counts:
        @hookimpl
        def pgwarden_session_start(self, session):
            seen.append(session.id)

    host(Counts(), Fails(), FailsLater()).notify("pgwarden_session_start", session=session())
    assert seen == ["s1"]


def test_explain_takes_the_proxys_path_through_pluggy(tmp_path, monkeypatch, capsys):
    """`pgwarden explain` decides as the proxy does: hook tracing sees its pgwarden_check."""
    from twisted.logger import globalLogPublisher

    from pgwarden import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.replace("/etc/jwks.json", "/nonexistent/jwks.json")
                   + "    rules: [{name: no-ddl, block: {statements: [ddl]}}]\n")
    traced: list[str] = []

    def observe(event):
        if event.get("log_namespace") == "pgwarden.plugins" and "text" in event:
            traced.append(event["text"])

    monkeypatch.setenv("PGWARDEN_TRACE_HOOKS", "1")
    globalLogPublisher.addObserver(observe)
    try:
        assert cli.main(["explain", "-c", str(cfg), "--subject", "a", "drop table t"]) == 1
    finally:
        globalLogPublisher.removeObserver(observe)
    assert "verdict    block by agents / no-ddl" in capsys.readouterr().out
    assert any(text.strip().startswith("pgwarden_check [hook]") for text in traced), traced


class OneByOne:
    """A sink on the per-record hook of plugin contract v0."""

    @hookimpl
    def pgwarden_record(self, record):
        pass


class Both(OneByOne):
    """A sink for pgwarden before and after v1: the per-record hook, and the batch one."""

    @hookimpl
    def pgwarden_records(self, records):
        pass


def test_the_per_record_hook_still_works_with_a_deprecation_warning_and_never_beside_the_batch_one():
    plugins = host(OneByOne(), Both())
    plugins.configure(plugins.config)
    warned = {p.name: p.warnings for p in plugins.loaded()}
    assert "pgwarden_record (one call per record) is deprecated" in warned["OneByOne"][0]
    assert warned["Both"] == ()  # it takes records the v1 way
    assert [name for name, _ in plugins.record_writers()] == ["OneByOne"]
    assert [name for name, _ in plugins.record_takers()] == ["Both"]


def test_pluggys_call_monitoring_sees_each_decision_and_the_answers_stay_the_same():
    """A plugin's one plain implementation is called without pluggy's executor only while
    that executor is pluggy's own: monitoring (as tracing) replaces it and sees every call."""
    statement_only = StatementOnly()
    plugins = host(statement_only, Allows())
    first = plugins.check(Statement("drop table t"), session())
    seen: list[str] = []
    undo = plugins.pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name),
                                              lambda outcome, name, impls, kwargs: None)
    try:
        second = plugins.check(Statement("drop table t"), session())
    finally:
        undo()
    assert seen == ["pgwarden_check", "pgwarden_check"]
    assert first == second and first.rule == "statement-only"
    assert len(statement_only.calls) == 2


class InOrder(Seen):
    """Takes the hookspec's arguments in its order: called directly (`_PluginCall.positional`)."""

    def __init__(self, answer=None, fails: bool = False) -> None:
        super().__init__()
        self.answer, self.fails = answer, fails

    @hookimpl
    def pgwarden_check(self, statement, session):
        self.calls.append((statement, session))
        if self.fails:
            raise RuntimeError("bug")
        return self.answer


def test_a_plugin_taking_the_hookspecs_arguments_in_order_is_called_directly_unless_monitored():
    in_order, statement_only = InOrder(), StatementOnly()
    plugins = host(statement_only, in_order)  # (in_order asked first: the block ends the asking)
    s, statement = session(), Statement("drop table t")
    first = plugins.check(statement, s)
    assert in_order.calls == [(statement, s)] and first.rule == "statement-only"  # its None: no answer
    seen: list[str] = []
    undo = plugins.pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name),
                                              lambda outcome, name, impls, kwargs: None)
    try:
        second = plugins.check(statement, s)
    finally:
        undo()
    assert seen == ["pgwarden_check", "pgwarden_check"]  # the direct one too, while monitored
    assert first == second and in_order.calls == [(statement, s)] * 2
    assert plugins.check(Statement("select 1"), s).action == "allow"  # none answers: allowed
    blocked = host(InOrder(Verdict.block("no", rule="in-order"))).check(statement, s)
    assert (blocked.action, blocked.rule) == ("block", "in-order")
    failed = host(InOrder(fails=True), Allows()).check(statement, s)
    assert (failed.action, failed.rule) == ("block", "plugin:InOrder")
