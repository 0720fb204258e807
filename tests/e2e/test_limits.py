"""`limit` rules: a row cap per result (with a notice and a consistent tag), a statement_timeout upstream."""

from __future__ import annotations

import psycopg
import pytest
from rawclient import RawClient

from pgwarden.wire import messages as m

LIMITED = [{"name": "budget", "rules": [{"name": "budget", "limit": {"rows": 10, "statement_timeout": "1500ms"}}]}]


@pytest.fixture
def limited(make_pgwarden):
    return make_pgwarden(policies=LIMITED)


def test_simple_query_is_cut_with_a_notice_and_a_consistent_tag(limited):
    rc = RawClient(limited.host, limited.port)
    rc.login(limited.token())
    rc.send(m.Query("select g from generate_series(1, 1000) g; select 1").encode())
    answer = rc.until_ready()
    rows = [x for x in answer if isinstance(x, m.DataRow)]
    assert [int(r.values[0]) for r in rows] == list(range(1, 11)) + [1]
    notices = [x for x in answer if isinstance(x, m.NoticeResponse)]
    assert [n.message for n in notices] == ["pgwarden: result truncated at 10 rows"]
    tags = [x.tag for x in answer if isinstance(x, m.CommandComplete)]
    assert tags == ["SELECT 10", "SELECT 1"]
    rc.close()


def test_extended_and_binary_results_are_cut(limited):
    notices = []
    with psycopg.connect(limited.dsn(), autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur = c.cursor(binary=True)
        rows = cur.execute("select g from generate_series(1, %s) g", (500,)).fetchall()
        assert rows == [(i,) for i in range(1, 11)]
        assert cur.rowcount == 10
        assert c.execute("select count(*) from generate_series(1, 500)").fetchone() == (500,)
    assert notices == ["pgwarden: result truncated at 10 rows"]


def test_statement_timeout_applies_upstream(limited):
    with psycopg.connect(limited.dsn(), autocommit=True) as c:
        assert c.execute("show statement_timeout").fetchone() == ("1500ms",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("select pg_sleep(5)")


def test_protocol_level_portal_counts_across_executes(limited):
    rc = RawClient(limited.host, limited.port)
    rc.login(limited.token())
    rc.send(m.Query("begin").encode())
    rc.until_ready()
    rc.send(m.Parse("", "select g from generate_series(1, 100) g").encode() + m.Bind("p", "").encode()
            + m.Execute("p", 6).encode() + m.Execute("p", 6).encode() + m.Sync().encode())
    answer = rc.until_ready()
    rows = [x for x in answer if isinstance(x, m.DataRow)]
    assert len(rows) == 10  # 6, then 4 of the next 6
    assert [n.message for n in answer if isinstance(n, m.NoticeResponse)] == ["pgwarden: result truncated at 10 rows"]
    rc.close()
