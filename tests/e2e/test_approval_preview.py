"""The impact preview against a real server: EXPLAIN only, one statement only, failures shown, the credential never."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred, succeed

from pgwarden.config import Upstream
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER
from pgwarden_plugins.approve.preview import Previewer


def _now(d: Deferred):
    out: list = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


@pytest.fixture
def previewer(pg_server, tmp_path):
    made = []

    def make(password: str = APP_PASSWORD) -> Previewer:
        secret = tmp_path / "password"
        secret.write_text(password)
        upstream = Upstream(host=pg_server.host, port=pg_server.port, database="appdb", user=APP_USER,
                            password_file=str(secret))
        p = Previewer(upstream, reactor=None, timeout_s=5, run_in_thread=lambda f: succeed(f()))
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def table(pg_server):
    pg_server.psql("drop table if exists pv_orders; create table pv_orders (id int primary key, note text); "
                   "insert into pv_orders select g, 'n' from generate_series(1, 1000) g; analyze pv_orders", "appdb")
    yield
    pg_server.psql("drop table if exists pv_orders", "appdb")


def _preview(p: Previewer, sql: str, params=None):
    d = p._run(lambda: p._explain(sql, len(params or ())))  # the thread's work, here (no reactor)
    return _now(d)


def test_a_write_is_explained_never_run(previewer, table, pg_server):
    preview = _preview(previewer(), "delete from pv_orders where id > 500")
    assert preview.ok and preview.writes == ("public.pv_orders",) and not preview.generic
    assert 300 < preview.rows < 700 and preview.cost > 0
    assert json.loads(preview.plan)[0]["Plan"]["Node Type"] == "ModifyTable"
    assert pg_server.psql("select count(*) from pv_orders", "appdb") == "1000"


def test_a_parameterised_statement_gets_the_generic_plan(previewer, table, pg_server):
    p = previewer()
    preview = _preview(p, "update pv_orders set note = $2 where id = $1", ["7", "x"])
    assert preview.ok and preview.generic and preview.writes == ("public.pv_orders",)
    # the preview's prepared statement does not outlive it: a second one works the same
    assert _preview(p, "update pv_orders set note = $2 where id = $1", ["7", "x"]).ok
    assert pg_server.psql("select count(*) from pv_orders where note = 'x'", "appdb") == "0"


def test_only_one_statement_is_ever_explained(previewer, table, pg_server):
    p = previewer()
    smuggled = "select 1; commit; delete from pv_orders"
    assert not _now(p.preview(smuggled, None)).ok
    # and were the check skipped, the extended protocol refuses a second statement
    assert not _preview(p, smuggled).ok
    assert pg_server.psql("select count(*) from pv_orders", "appdb") == "1000"


def test_a_failed_preview_says_why_without_the_credential(previewer, pg_server):
    wrong = "not-the-password-" + APP_PASSWORD
    preview = _preview(previewer(wrong), "delete from pv_orders")
    assert not preview.ok and preview.error and "password" in preview.error.lower()
    assert wrong not in preview.error and APP_PASSWORD not in preview.error
    failed = _preview(previewer(), "delete from no_such_table")
    assert not failed.ok and "no_such_table" in failed.error
