"""How the core calls statement checks: directly, not through pluggy, so the call must match pluggy's.

pluggy passes an implementation only the arguments it names, in its own order;
`PluginHost.check` calls the (guarded) implementations itself on the hot path,
and must do the same.
"""

from __future__ import annotations

from pgwarden import Verdict, hookimpl
from pgwarden.config import parse_config
from pgwarden.plugins import PluginHost
from pgwarden.identity import Identity
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


def host(*plugins) -> PluginHost:
    config = parse_config(CONFIG, "t.yaml")
    return PluginHost(config, reactor=None, extra=[(type(p).__name__, p) for p in plugins],
                      use_entry_points=False)


def test_each_check_gets_the_arguments_it_names_in_its_own_order():
    reversed_, statement_only, session_only = ReversedArguments(), StatementOnly(), SessionOnly()
    plugins = host(reversed_, statement_only, session_only)
    assert plugins.checks
    s, statement = session(), Statement("drop table t")
    verdict = plugins.check(statement, s)
    assert reversed_.calls == [(s, statement)]
    assert statement_only.calls == [(statement,)]
    assert session_only.calls == [(s,)]
    assert verdict.action == "block" and verdict.rule == "statement-only"  # the strictest of the three


def test_without_a_block_the_strictest_is_the_approval():
    plugins = host(ReversedArguments(), StatementOnly(), SessionOnly())
    verdict = plugins.check(Statement("select 1"), session())
    assert verdict.action == "approve" and verdict.rule == "session-only"


def test_no_check_at_all_allows():
    plugins = host()
    assert not plugins.checks
    assert plugins.check(Statement("select 1"), session()).action == "allow"
