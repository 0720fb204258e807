"""Plugins through a real pgwarden: decisions, failures, options, rule kinds, sessions, masks."""

from __future__ import annotations

import subprocess
import sys

import attrs
import psycopg
import pytest
from twisted.internet import defer

from pgwarden import Session, Statement, StoreKey, Verdict, hookimpl
from pgwarden.api import MASK
from pgwarden.config import ConfigError
from pgwarden.plugins import PluginError
from pgwarden.testing.pytest_plugin import check_records


class BlockDeletes:
    @hookimpl
    def pgwarden_check(self, statement: Statement, session: Session):
        if "delete" in statement.kinds:
            return Verdict.block("DELETE is not allowed here", "Reads are allowed.", policy="p", rule="r")
        return None


def test_inline_plugin_blocks_with_the_error_contract(make_pgwarden, pg_server):
    pg_server.psql("drop table if exists pt; create table pt (x int); insert into pt values (1)", "appdb")
    running = make_pgwarden(plugins=[("block-deletes", BlockDeletes())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("DELETE FROM pt")
        diag = excinfo.value.diag
        assert diag.message_primary == "pgwarden: blocked: DELETE is not allowed here"
        assert diag.message_detail == "Refused by policy 'p', rule 'r'."
        assert diag.message_hint == "Reads are allowed."
        assert c.execute("select count(*) from pt").fetchone() == (1,)
    assert pg_server.psql("select count(*) from pt", "appdb") == "1"


def test_strictest_verdict_wins(make_pgwarden):
    class Allow:
        @hookimpl
        def pgwarden_check(self, statement, session):
            return Verdict.allow()

    running = make_pgwarden(plugins=[("allow", Allow()), ("block-deletes", BlockDeletes())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("delete from pg_class where false")
        assert c.execute("select 1").fetchone() == (1,)


class Raises:
    @hookimpl
    def pgwarden_check(self, statement, session):
        if "boom" in statement.sql:
            raise RuntimeError("bug in plugin")
        return None


class Hangs:
    @hookimpl
    def pgwarden_check(self, statement, session):
        return defer.Deferred() if "slow" in statement.sql else None


class AnswersNonsense:
    @hookimpl
    def pgwarden_check(self, statement, session):
        return "yes" if "nonsense" in statement.sql else None


@pytest.mark.parametrize(
    "name, plugin, sql, why",
    [
        ("raises", Raises(), "select 'boom'", "failed"),
        ("hangs", Hangs(), "select 'slow'", "did not answer within 0.2s"),
        ("nonsense", AnswersNonsense(), "select 'nonsense'", "answered str, not a Verdict"),
    ],
)
def test_a_failing_plugin_blocks_and_names_itself(make_pgwarden, tmp_path, name, plugin, sql, why):
    from pgwarden.testing.pytest_plugin import check_records

    running = make_pgwarden(plugins=[(name, plugin)], plugins_section={"timeout_s": 0.2})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute(sql)
        assert excinfo.value.diag.message_primary == f"pgwarden: blocked: plugin {name!r} {why}"
        assert c.execute("select 1").fetchone() == (1,)  # the session goes on
    # and recorded as refused, in the plugin's name
    (refused,) = [r for r in check_records([tmp_path / "records.jsonl"])
                  if r["type"] == "statement" and r["sql"] == sql]
    assert refused["verdict"]["action"] == "block" and refused["verdict"]["rule"] == f"plugin:{name}"


def test_an_async_plugin_is_awaited(make_pgwarden, reactor_thread):
    from twisted.internet import task

    class AsyncLater:
        @hookimpl
        async def pgwarden_check(self, statement, session):
            await task.deferLater(reactor_thread, 0.01, lambda: None)  # a look-up elsewhere, say
            return Verdict.block("async no", rule="async") if "no" in statement.sql else None

    running = make_pgwarden(plugins=[("async", AsyncLater())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 'yes'").fetchone() == ("yes",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="async no"):
            c.execute("select 'no'")


def test_a_wrapper_wraps_the_built_in_decisions(make_pgwarden):
    seen = []

    class Audit:
        """Wraps every plugin's decision (the built-in block plugin's here) through pluggy."""

        @hookimpl(wrapper=True)
        def pgwarden_check(self, statement):
            answers = yield
            seen.append((statement.sql, [a.action for a in answers if a is not None]))
            if "pg_sleep" in statement.functions:
                return [Verdict.block("no sleeping on the job", rule="audit")]
            return answers

    running = make_pgwarden(plugins=[("audit", Audit())],
                            policies=[{"name": "everyone", "rules": [{"block": {"statements": ["ddl"]}}]}])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no sleeping on the job"):
            c.execute("select pg_sleep(0)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("create table audited (x int)")
    assert ("create table audited (x int)", ["block"]) in seen and ("select 1", []) in seen


def test_a_deferred_verdict_is_awaited(make_pgwarden, reactor_thread):
    class Later:
        @hookimpl
        def pgwarden_check(self, statement, session):
            d = defer.Deferred()
            verdict = Verdict.block("later no") if "no" in statement.sql else Verdict.allow()
            reactor_thread.callLater(0.01, d.callback, verdict)
            return d

    running = make_pgwarden(plugins=[("later", Later())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 'yes'").fetchone() == ("yes",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select 'no'")


def test_approve_without_an_approval_store_fails_closed(make_pgwarden):
    class NeedsApproval:
        @hookimpl
        def pgwarden_check(self, statement, session):
            return Verdict.approve("writes need a human") if "insert" in statement.kinds else None

    running = make_pgwarden(plugins=[("needs-approval", NeedsApproval())], plugins_section={"disable": ["approve"]})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("create temp table ap (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into ap values (1)")
        assert excinfo.value.diag.message_primary == "pgwarden: approval required: writes need a human"


def test_approval_store_decides(make_pgwarden):
    requests = []

    class Store:
        @hookimpl
        def pgwarden_await_approval(self, request, session):
            requests.append(request)
            ok = "ok" in request.statement.sql
            return defer.succeed(Verdict.allow() if ok else Verdict.block("the DBA said no"))

        @hookimpl
        def pgwarden_check(self, statement, session):
            return Verdict.approve("held") if "insert" in statement.kinds else None

    running = make_pgwarden(plugins=[("store", Store())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("create temp table ap2 (x text)")
        c.execute("insert into ap2 values ('ok')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
            c.execute("insert into ap2 values ('nope')")
        assert excinfo.value.diag.message_primary == "pgwarden: approval denied: the DBA said no"
        assert c.execute("select x from ap2").fetchall() == [("ok",)]
    assert [r.verdict.reason for r in requests] == ["held", "held"]


def _cancelled(_reactor) -> defer.Deferred:
    waiting = defer.Deferred()
    waiting.cancel()  # no canceller: fails with CancelledError
    return waiting


# How an approval wait can fail, and what the request ends as (docs/records.md, approval).
APPROVAL_FAILURES = {
    "python-timeout": (lambda _reactor: defer.fail(TimeoutError("nobody answered")),
                       "expired", psycopg.errors.InsufficientPrivilege, "pgwarden: approval expired"),
    "twisted-addTimeout": (lambda reactor: defer.Deferred().addTimeout(0.05, reactor),
                           "expired", psycopg.errors.InsufficientPrivilege, "pgwarden: approval expired"),
    "cancelled": (_cancelled, "expired", psycopg.errors.InsufficientPrivilege, "pgwarden: approval expired"),
    "store-unreachable": (lambda _reactor: defer.fail(ConnectionRefusedError("the store is down")),
                          "withdrawn", psycopg.errors.InsufficientPrivilege,
                          "pgwarden: approval failed: the approval store did not answer"),
}


@pytest.mark.parametrize("how", APPROVAL_FAILURES)
def test_an_approval_wait_that_fails_is_expired_or_withdrawn_never_allowed(make_pgwarden, tmp_path, how):
    from pgwarden.testing.pytest_plugin import check_records

    fail, state, error, message = APPROVAL_FAILURES[how]

    class FailingStore:
        @hookimpl
        def pgwarden_check(self, statement, session):
            return Verdict.approve("held") if "insert" in statement.kinds else None

        @hookimpl
        def pgwarden_await_approval(self, request, session):
            return fail(running.reactor)

    running = make_pgwarden(plugins=[("failing-store", FailingStore())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        c.execute("create temp table held (x int)")
        with pytest.raises(error) as excinfo:
            c.execute("insert into held values (1)")
        assert excinfo.value.diag.message_primary == message
        assert c.execute("select count(*) from held").fetchone() == (0,)
    running.call(running.app.stop)
    records = check_records([tmp_path / "records.jsonl"])
    approvals = [r for r in records if r["type"] == "approval"]
    assert [r["state"] for r in approvals] == ["requested", state]
    assert approvals[1]["approver"] is None and isinstance(approvals[1]["reason"], str)  # the failure's message
    assert next(r for r in records if r["type"] == "session_end")["refused"] == 1


COUNT = StoreKey[int]("count")


def test_session_hooks_and_typed_store(make_pgwarden):
    seen = {}

    class Counter:
        @hookimpl
        def pgwarden_session_start(self, session):
            session.store[COUNT] = 0

        @hookimpl
        def pgwarden_check(self, statement, session):
            session.store[COUNT] += 1

        @hookimpl
        def pgwarden_session_end(self, session, summary):
            seen[session.identity.subject] = (session.store[COUNT], summary.statements)

    running = make_pgwarden(plugins=[("counter", Counter())])
    with psycopg.connect(running.dsn(running.token("counted")), autocommit=True) as c:
        for _ in range(3):
            c.execute("select 1")
    running.call(lambda: None)  # let the reactor see the close
    for _ in range(200):
        if "counted" in seen:
            break
        running.call(lambda: None)
    assert seen["counted"] == (3, 3)


def test_masks_rewrite_rows(make_pgwarden, pg_server):
    pg_server.psql(
        "drop table if exists people; create table people (name text, ssn text);"
        "insert into people values ('ann', '123-45-6789')",
        "appdb",
    )

    class MaskSsn:
        @hookimpl
        def pgwarden_result_masks(self, shape, statement, session):
            return {i: (lambda v, col: None if v is None else b"***-**-****")
                    for i, col in enumerate(shape.columns) if col.name == "ssn"}

    running = make_pgwarden(plugins=[("ssn-mask", MaskSsn())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select name, ssn from people").fetchall() == [("ann", "***-**-****")]
        # extended protocol, prepared, and a portal nobody described: masked all the same
        assert c.execute("select ssn from people where name = %s", ("ann",), prepare=True).fetchone() == (
            "***-**-****",
        )


# ---------------------------------------------------------------------------- loading and config


def test_misspelled_hook_fails_at_start(make_pgwarden):
    class Typo:
        @hookimpl
        def pgwarden_chek(self, statement, session):
            return None

    with pytest.raises(PluginError) as excinfo:
        make_pgwarden(plugins=[("typo", Typo())])
    assert "pgwarden_chek" in str(excinfo.value)


@attrs.frozen
class LimitOptions:
    max_rows: int = 100
    label: str = "x"


class WithOptions:
    configured = None

    @hookimpl
    def pgwarden_options(self):
        return LimitOptions

    @hookimpl
    def pgwarden_configure(self, options):
        WithOptions.configured = options


def test_plugin_options_are_validated_and_delivered(make_pgwarden):
    make_pgwarden(plugins=[("limits", WithOptions())], plugins_section={"limits": {"max_rows": 5}})
    assert WithOptions.configured == LimitOptions(max_rows=5)
    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins=[("limits", WithOptions())],
                      plugins_section={"limits": {"max_rows": "many", "colour": 1}})
    problems = excinfo.value.problems
    assert any(p.startswith("plugins.limits.max_rows:") for p in problems), problems
    assert any("plugins.limits" in p and "colour" in p for p in problems), problems


def test_options_for_an_unknown_plugin(make_pgwarden):
    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins_section={"nosuch": {}})
    assert excinfo.value.problems == ["plugins.nosuch: no loaded plugin is named 'nosuch'"]


def test_rule_kind_without_a_plugin_is_a_config_error(make_pgwarden):
    class Masker:
        @hookimpl
        def pgwarden_rule_kinds(self):
            return [MASK]

    policies = [{"name": "p", "rules": [{"name": "pii", "mask": {"columns": ["public.users.ssn"]}}]}]
    make_pgwarden(plugins=[("masker", Masker())], policies=policies)  # claimed: fine
    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins=[("masker", Masker())], policies=policies,
                      plugins_section={"disable": ["masker", "mask"]})
    assert "policies[0].rules[0]: rule kind 'mask' is interpreted by no loaded plugin" in excinfo.value.problems[0]


def test_disabling_the_only_authenticator_is_refused(make_pgwarden):
    with pytest.raises(ConfigError) as excinfo:
        make_pgwarden(plugins_section={"disable": ["jwt"]})
    assert "authenticates" in str(excinfo.value)


def test_pgwarden_plugins_lists_builtins_with_hooks():
    out = subprocess.run([sys.executable, "-m", "pgwarden", "plugins"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert "jwt 0.1.0 (entry point)" in lines and "block 0.1.0 (entry point)" in lines
    jwt_hooks = lines[lines.index("jwt 0.1.0 (entry point)") + 1:]
    assert jwt_hooks[:4] == ["    pgwarden_authenticate", "    pgwarden_config_sections", "    pgwarden_configure",
                             "    pgwarden_validate"]
    block = lines[lines.index("block 0.1.0 (entry point)") + 1:]
    assert "    rule kind block: StatementMatch — refuses the statements it matches" in block


def test_trace_hooks(tmp_path, pg_server, signing_keys):
    import yaml

    from pgwarden.testing.pytest_plugin import base_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base_config(pg_server, signing_keys, tmp_path)))
    out = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom twisted.logger import globalLogBeginner, textFileLogObserver\n"
         "globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])\n"
         "from pgwarden.config import load_config\nfrom pgwarden.plugins import PluginHost\n"
         f"h = PluginHost(load_config({str(cfg)!r}), None)\nh.configure(load_config({str(cfg)!r}))\n"],
        capture_output=True, text=True, env={"PGWARDEN_TRACE_HOOKS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert "hook:   pgwarden_configure [hook]" in out.stdout, out.stdout + out.stderr
    assert "finish pgwarden_configure" in out.stdout


def test_a_failing_masker_refuses_the_result_and_the_session_goes_on(make_pgwarden, pg_server, tmp_path):
    pg_server.psql(
        "drop table if exists people2; create table people2 (ssn text); insert into people2 values ('123-45-6789')",
        "appdb",
    )

    class Broken:
        @hookimpl
        def pgwarden_result_masks(self, result, statement, session):
            if any(c.name == "ssn" for c in result.columns):
                raise RuntimeError("masker bug")
            return None

    running = make_pgwarden(plugins=[("broken", Broken())])
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        for prepare in (False, True):  # simple protocol, then extended
            with pytest.raises(psycopg.errors.InternalError_) as excinfo:
                c.execute("select ssn from people2", prepare=prepare).fetchall()
            assert "123-45-6789" not in str(excinfo.value)
            assert excinfo.value.diag.message_primary == (
                "pgwarden: result refused: plugin 'broken' failed to mask the result: RuntimeError('masker bug')")
            assert c.execute("select 1").fetchone() == (1,)  # the session goes on
    running.call(running.app.stop)
    records = [r for r in check_records([tmp_path / "records.jsonl"]) if r["type"] == "result"]
    refused = [r for r in records if r["sqlstate"] == "XX000"]
    assert len(refused) == 2 and all("plugin 'broken'" in r["error"] for r in refused)
    assert "123-45-6789" not in repr(records)
    assert running.app.stats.results_refused == {"broken": 2}


INTRUDER = '''
from pgwarden import Verdict, hookimpl


class Intruder:
    @hookimpl
    def pgwarden_check(self, statement, session):
        return Verdict.block("a plugin installed for something else", rule="intruder")


plugin = Intruder()
'''


@pytest.fixture
def installed_intruder(tmp_path, monkeypatch):
    """A third-party plugin installed in the environment (a distribution with an entry point)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pgwarden_intruder.py").write_text(INTRUDER)
    dist = site / "pgwarden_intruder-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pgwarden-intruder\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pgwarden]\nintruder = pgwarden_intruder:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("pgwarden_intruder", None)


def test_an_installed_plugin_applies_to_the_fixture_unless_only_leaves_it_out(make_pgwarden, installed_intruder,
                                                                             tmp_path):
    from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

    everything = make_pgwarden()
    assert "intruder" in {p.name for p in everything.app.plugins.loaded()}
    with psycopg.connect(everything.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="a plugin installed for something else"):
            c.execute("select 1")

    shipped = make_pgwarden(only=BUILTIN_PLUGINS, plugins=[("block-deletes", BlockDeletes())],  # records apart
                            recording={"sinks": [{"file": str(tmp_path / "shipped.jsonl"), "fsync_s": 0}]})
    assert {p.name for p in shipped.app.plugins.loaded()} == {"jwt", "block", "recording", "mask", "approve",
                                                               "block-deletes"}
    with psycopg.connect(shipped.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="DELETE is not allowed here"):
            c.execute("delete from pg_class where false")


def test_only_names_installed_plugins(make_pgwarden):
    with pytest.raises(PluginError, match=r"no installed plugin is named 'blok' \(installed: .*block"):
        make_pgwarden(only=["jwt", "blok"])
    with pytest.raises(ConfigError, match="rule kind 'block' is interpreted by no loaded plugin"):
        make_pgwarden(only=["jwt", "recording"],
                      policies=[{"name": "p", "rules": [{"block": {"statements": ["ddl"]}}]}])
