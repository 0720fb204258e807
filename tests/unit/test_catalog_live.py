"""The control connection's parameters and status, without a server (loading: tests/e2e/test_catalog.py)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from pgwarden.catalog.live import CatalogStatus, LiveCatalog, connection_parameters
from pgwarden.catalog.snapshot import load_snapshot, stand_in_snapshot
from pgwarden.config import Upstream, UpstreamTLS


def upstream(**kw) -> Upstream:
    return Upstream(host="db.internal", port=6432, database="appdb", user="pgwarden", **kw)


def test_parameters_are_pgwardens_own_upstream_settings():
    params = connection_parameters(upstream(connect_timeout_s=2.5))
    assert {k: params[k] for k in ("host", "port", "dbname", "user", "sslmode", "connect_timeout")} == {
        "host": "db.internal", "port": 6432, "dbname": "appdb", "user": "pgwarden", "sslmode": "disable",
        "connect_timeout": 3,
    }
    assert "password" not in params
    # nothing of the environment decides: no ~/.pgpass, no GSSAPI encryption
    assert params["gssencmode"] == "disable" and params["passfile"] == "/dev/null"
    assert connection_parameters(upstream(connect_timeout_s=0.5))["connect_timeout"] == 2  # libpq's least


@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-ca", "verify-full"])
def test_tls_modes_are_libpq_sslmodes(mode, tmp_path):
    ca, cert, key = (str(tmp_path / n) for n in ("ca.pem", "client.pem", "client.key"))
    params = connection_parameters(upstream(tls=UpstreamTLS(mode=mode, ca_file=ca, cert_file=cert, key_file=key)))
    assert params["sslmode"] == mode
    assert (params["sslrootcert"], params["sslcert"], params["sslkey"]) == (ca, cert, key)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verifying_without_a_ca_is_refused_as_the_sessions_refuse_it(mode):
    with pytest.raises(ValueError, match="ca_file"):
        connection_parameters(upstream(tls=UpstreamTLS(mode=mode)))


def test_before_any_load_the_snapshot_is_current():
    clock = task.Clock()
    clock.advance(1000)
    live = LiveCatalog(upstream(), clock)
    assert live.current is stand_in_snapshot() and live.current.stand_in
    assert live.status == CatalogStatus("loading", 1000, stand_in_snapshot().source)
    assert not live.pending and live.fresh().result is live.current  # not started: nothing to wait for
    assert "db.internal" in repr(live)


@pytest.mark.parametrize(
    "kw", [{"ttl_s": 0}, {"max_stale_s": -1}, {"retry_s": 0}, {"ttl_s": 60, "max_stale_s": 60}]
)
def test_timings_that_cannot_work_are_refused(kw):
    with pytest.raises(ValueError):
        LiveCatalog(upstream(), task.Clock(), **kw)


def test_status_lines():
    ok = CatalogStatus("ok", 100, "live", loaded_at=130)
    assert ok.describe(now=150) == "catalog: ok; using the live catalog read 20s ago"
    failed = CatalogStatus("failed", 100, "snapshot postgresql-15", error="OperationalError: refused")
    assert failed.describe(now=160) == (
        "catalog: loads failing for 60s (OperationalError: refused); "
        "using the snapshot postgresql-15 (the database's own objects are unknown)"
    )


def test_stop_gives_each_caller_its_own_deferred():
    live = LiveCatalog(upstream(), task.Clock(), run_in_thread=defer.maybeDeferred)
    first, second = live.stop(), live.stop()
    assert first is not second and first.called and second.called and live.status.state == "stopped"
    assert live.stop().result is None


def test_pending_and_redefining_follow_every_load_and_invalidation():
    """Both are attributes kept up to date (the decision reads ``pending`` at every statement):
    each step that changes what they are made of is checked against what they must say."""
    loads: list[defer.Deferred] = []

    def held(_read):
        d: defer.Deferred = defer.Deferred()
        loads.append(d)
        return d

    clock = task.Clock()
    live = LiveCatalog(upstream(), clock, run_in_thread=held)
    catalog = load_snapshot()
    assert (live.pending, live.redefining) == (False, False)
    live.start()  # the first load is awaited
    assert (live.pending, live.redefining, len(loads)) == (True, False, 1)
    loads[-1].callback(catalog)
    assert (live.pending, live.redefining) == (False, False) and live.current is catalog
    live.invalidate("ddl", redefines=True)
    assert (live.pending, live.redefining) == (True, True)
    clock.advance(live.settle_s)
    live.invalidate("more ddl while it loads", redefines=False)  # one more load after this one
    loads[-1].callback(catalog)  # it began before the second invalidation: still pending
    assert (live.pending, live.redefining) == (True, False)
    loads[-1].callback(catalog)
    assert (live.pending, live.redefining) == (False, False)
    live.invalidate("ddl", redefines=True)
    assert (live.pending, live.redefining) == (True, True)
    live.stop()
    assert (live.pending, live.redefining) == (False, False)


def test_a_change_the_check_saw_redefines_but_not_as_a_sessions_change_and_is_announced():
    """``sessions_redefining`` follows the changes sessions made through pgwarden only: while a
    change the change check saw (``seen``) is not read, statements wait for the load
    (``redefining``) but rows of a statement decided before it are traced as before (the bound of
    another client's DDL); its listeners are told, so that sessions decide their Binds again (of a
    session's change too, since red team fifteen: the other sessions' portals and Binds)."""
    loads: list[defer.Deferred] = []

    def held(_read):
        d: defer.Deferred = defer.Deferred()
        loads.append(d)
        return d

    clock = task.Clock()
    live = LiveCatalog(upstream(), clock, run_in_thread=held)
    told: list[int] = []
    live.on_change_seen.append(lambda functions: told.append(1))
    catalog = load_snapshot()
    live.start()
    loads[-1].callback(catalog)
    flags = lambda: (live.pending, live.redefining, live.sessions_redefining)  # noqa: E731
    assert flags() == (False, False, False)
    live.invalidate("seen by the check", seen=True)
    assert flags() == (True, True, False) and told == [1]
    live.invalidate("seen, a nextval", redefines=False, seen=True)  # redefines nothing: nobody told
    assert told == [1]
    clock.advance(live.settle_s)
    loads[-1].callback(catalog)
    assert flags() == (False, False, False)
    live.invalidate("a session's ddl")
    assert flags() == (True, True, True) and told == [1, 1]
    live.invalidate("seen while a session's change is not read", seen=True)  # (most likely that one)
    assert flags() == (True, True, True) and told == [1, 1]
    clock.advance(live.settle_s)
    loads[-1].callback(catalog)
    assert flags() == (False, False, False)
    live.stop()
    assert flags() == (False, False, False)


def test_the_snapshot_standing_in_for_the_live_catalog_fails_closed_on_the_databases_own_relations():
    # Before the first load, and once the live facts are too old, the database's own views,
    # triggers, defaults and policies are unknown: a statement naming one of its relations is
    # `unknown` (a view over secret tables was read as a plain table before). A deployment that
    # chose the snapshot (`catalog: {live: false}`) reads its tables as before.
    from pgwarden.sql.analysis import analyze_sql
    from pgwarden.sql.context import SqlContext

    standing_in = SqlContext(stand_in_snapshot())
    chosen = SqlContext(load_snapshot())
    for sql in ("SELECT * FROM public.leak", "SELECT * FROM users", "DELETE FROM things WHERE id = 1",
                "SELECT table_to_xml('public.leak', true, false, '')"):
        assert "unknown" in analyze_sql(sql, standing_in).kinds, sql
        assert "unknown" not in analyze_sql(sql, chosen).kinds, sql
    for sql in ("SELECT relname FROM pg_class", "SELECT * FROM information_schema.tables", "SELECT 1",
                "WITH users AS (SELECT 1) SELECT * FROM users"):
        assert "unknown" not in analyze_sql(sql, standing_in).kinds, sql
