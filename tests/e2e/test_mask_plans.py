"""Masking checks lineage against the server's own plan (plugins/mask/plans.py, docs/masking.md).

The honest case where lineage resolves a name differently from the server, whatever its own
quality: the catalog it resolves with is older than the server's. Another client (an operator's
migration) replaces a view to return the masked column; until pgwarden's catalog reads the change
(``catalog.check_s``, here an hour), lineage traces the view's column to the old, unmasked one.
The server's plan shows the masked column: the statement is refused instead of delivering it.
"""

from __future__ import annotations

import psycopg
import pytest

from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

SSN = "123-45-6789"
SETUP = f"""
drop table if exists pl_users cascade;
create table pl_users (id int primary key, name text, ssn text);
insert into pl_users values (1, 'ann', '{SSN}');
create view pl_view as select id, name as x from pl_users;
drop table if exists pl_plain;
create table pl_plain (a int);
insert into pl_plain values (1);
"""
POLICY = {"name": "agents", "default": "allow", "rules": [
    {"name": "ssn", "mask": {"columns": ["public.pl_users.ssn"], "with": "redact"}}]}
# The catalog read once at the start, then not again within any test's time.
SLOW_CATALOG = {"ttl_s": 3600, "max_stale_s": 7200, "check_s": 3600}


@pytest.fixture
def stale(pg_server, make_pgwarden):
    pg_server.psql(SETUP, "appdb")
    warden = make_pgwarden(policies=[POLICY], only=BUILTIN_PLUGINS, catalog=SLOW_CATALOG)
    yield warden
    pg_server.psql("drop table if exists pl_users cascade; drop table if exists pl_plain", "appdb")


def _replace_view(pg_server, body: str) -> None:
    """Another client's change, not through pgwarden."""
    pg_server.psql(f"create or replace view pl_view as {body}", "appdb")


def test_a_view_read_through_a_catalog_older_than_the_server_is_refused_not_delivered(stale, pg_server):
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        assert c.execute("select x from pl_view").fetchall() == [("ann",)]
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        # lineage still traces x to pl_users.name; the plan reads pl_users.ssn
        for sql in ("select x from pl_view where id = 1", "select upper(x) from pl_view"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="server's plan of this statement reads masked column public.pl_users.ssn"):
                c.execute(sql)
        # the extended protocol is judged the same way
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="reads masked column"):
            c.execute("select x from pl_view where id = %s", (1,))


def test_a_condition_the_catalog_does_not_know_is_on_a_masked_column_is_refused(stale, pg_server):
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        # x is returned nowhere: only which rows come back tells the digit (an oracle)
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="tests masked column public.pl_users.ssn"):
            c.execute("select id from pl_view where x like '1%'")
        # a legitimate read of what is not masked goes on
        assert c.execute("select id from pl_view").fetchall() == [(1,)]


def test_the_plan_is_asked_once_per_statement_text(stale):
    plans = stale.app.plans
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        before = plans.asked
        for _ in range(3):
            assert c.execute("select id, x from pl_view order by id").fetchall() == [(1, "ann")]
        assert plans.asked == before + 1
        c.execute("select id, x from pl_view order by id desc")
        assert plans.asked == before + 2


def test_what_only_the_session_has_is_left_to_lineage(stale):
    """A temporary table exists in the session alone: the server refuses to plan it on pgwarden's
    connection (42P01), and the statement is judged by lineage (masked, not refused)."""
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        c.execute("create temp table t_mine (a int)")
        c.execute("insert into t_mine values (1)")
        assert c.execute("select a, u.ssn from t_mine, pl_users u").fetchall() == [(1, "***")]
        # and the session's own uncommitted change holds a lock pgwarden's connection does not wait on
        with c.transaction():
            c.execute("create or replace view pl_view as select id, ssn as x from pl_users")
            got = c.execute("select x from pl_view").fetchall()
            assert SSN not in repr(got)
            c.execute("create or replace view pl_view as select id, name as x from pl_users")


def test_a_lock_the_agent_takes_does_not_turn_the_check_off(stale, pg_server):
    """``LOCK TABLE`` in the agent's transaction makes pgwarden's question wait (55P03 after its
    lock_timeout): that refuses a statement that may read masked columns, it does not leave it to
    lineage alone (lineage here traces the view through the stale catalog to ``name``)."""
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        with c.transaction():
            c.execute("lock table pl_users in access exclusive mode")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"could not check .*SQLSTATE 55P03"):
                c.execute("select x from pl_view")


@pytest.mark.parametrize("sql", [
    "declare c cursor with hold for select x from pl_view",
    "copy (select x from pl_view) to stdout",
    "prepare p as select x from pl_view where id = $1",
])
def test_a_query_inside_a_cursor_a_copy_or_a_prepare_is_checked_too(stale, pg_server, sql):
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="reads masked column public.pl_users.ssn"):
            c.execute(sql)


def test_a_result_column_the_plan_computes_from_a_masked_column_lineage_traced_elsewhere(stale, pg_server):
    """The masked column is read elsewhere in the statement (a sub-select lineage traces), so the
    plan's reads agree with lineage's; but result column 1 is the masked column by the server's
    plan and ``name`` by lineage's stale view: it would have been returned in clear."""
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"result column 1 \(x\) from masked column"):
            c.execute("select x, (select ssn from pl_users limit 1) as y from pl_view")


def test_a_statement_that_names_only_plain_unmasked_tables_is_not_asked_about(stale, pg_server):
    """The plan of such a statement cannot name a masked column: no round trip is spent on it. A
    view, a function of the database's own or a masked table is asked about."""
    plans = stale.app.plans
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        before = plans.asked
        for sql in ("select a from pl_plain", "select count(*), max(a) from pl_plain where a > 0", "select now()"):
            c.execute(sql)
        assert plans.asked == before
        for sql in ("select id from pl_users", "select id from pl_view", "select id from pl_users, pl_plain"):
            c.execute(sql)
        assert plans.asked == before + 3


def test_a_question_leaves_nothing_on_pgwardens_connection(pg_server, caplog):
    """No prepared statement, setting or open transaction outlives a question, whether the server
    answered or refused (a constant folded at plan time failing; a name it does not know), and
    psycopg logs nothing of a refusal."""
    import logging

    from pgwarden.catalog.planner import PlanRefused, ServerPlans

    caplog.set_level(logging.WARNING, logger="psycopg")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        path = c.execute("show search_path").fetchone()
        asked = ["select 1/0 where $1::int = 1", "select x from nowhere where a = $1", "select 1 where $1::int = 1",
                 "select 1/0", "select $1::int + 1"]
        answers = [ServerPlans._explain(c, sql, ("pg_catalog",), False, ()) for sql in asked]
        assert [type(a).__name__ for a in answers] == ["PlanRefused", "PlanRefused", "list", "PlanRefused", "list"]
        assert isinstance(answers[0], PlanRefused) and answers[0].sqlstate == "22012"
        assert c.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        assert c.execute("show search_path").fetchone() == path
        assert c.execute("show standard_conforming_strings").fetchone() == ("on",)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert not [r for r in caplog.records if r.name.startswith("psycopg")], caplog.records


def test_statements_after_a_setting_in_the_same_query_are_left_to_lineage(stale):
    """``SET search_path ...; SELECT ...`` in one Query: the plan would be asked under the path
    before the SET, naming other relations: the statements after it are not asked about."""
    plans = stale.app.plans
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        before = plans.asked
        c.execute("select id from pl_users where id = 1; set search_path to pg_catalog, public; "
                  "select id from pl_users where id = 2; reset search_path")
        assert plans.asked == before + 1


def test_the_plan_is_asked_with_the_types_the_client_declared(stale, pg_server):
    """``OR $2 IS NULL`` (an ORM's optional filter) has no type but the one the client declares:
    psycopg declares an int's. Asked without it, the server could not plan the statement (42P18)
    and pgwarden refused it; asked with it, the plan is compared as any other."""
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        sql = "select id, x from pl_view where id = %s or %s is null"
        assert c.execute(sql, (1, 5)).fetchall() == [(1, "ann")]
        # the check is made, not skipped: the view replaced behind the stale catalog is seen
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="reads masked column public.pl_users.ssn"):
            c.execute(sql + " and %s::int > 0", (1, 5, 2))


def test_a_prepared_statement_judged_again_after_a_reload_keeps_its_declared_types(
        stale, pg_server, signing_keys, tmp_path):
    """After a reload, each Bind of a statement parsed before it is judged again under the new
    policies: with the types its Parse declared (without them, `$2 IS NULL` had no plan)."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    sql = "select id, x from pl_view where id = %s or %s is null"
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        assert c.execute(sql, (1, 5), prepare=True).fetchall() == [(1, "ann")]
        stricter = {**POLICY, "rules": [{"name": "ssn-again", "mask": {"columns": ["public.pl_users.ssn"],
                                                                         "with": "redact"}}]}
        doc = base_config(pg_server, signing_keys, tmp_path, policies=[stricter], catalog=SLOW_CATALOG)
        assert stale.call(stale.app.reload, _CONVERTER.structure(doc, Config))
        # judged again (the policies changed), by the same question as at its Parse: answered
        assert c.execute(sql, (1, 5), prepare=True).fetchall() == [(1, "ann")]


@pytest.mark.parametrize("how", ["set", "set_config"])
def test_a_custom_setting_the_session_set_is_set_for_the_question(stale, pg_server, how):
    """The planner computes ``current_setting('app.k')`` (a LIMIT, an estimate): without the session's
    custom setting the question failed (42704) and the statement had been left to lineage alone,
    which read the replaced view through the stale catalog: the SSN in clear (red team seven)."""
    sql = "select x from pl_view where id = current_setting('app.k')::int"
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        c.execute("set app.k = '1'" if how == "set" else "select set_config('app.k', '1', false)")
        assert c.execute(sql).fetchall() == [("ann",)]  # asked with it: answered
        _replace_view(pg_server, "select id, ssn as x from pl_users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="reads masked column public.pl_users.ssn"):
            c.execute(sql + " limit current_setting('app.k')::int")


def test_a_custom_setting_of_a_value_pgwarden_does_not_know_refuses(stale):
    with psycopg.connect(stale.dsn(), autocommit=True) as c:
        c.execute("select set_config('app.j', %s, false)", ("1",))  # (a parameter: its value unread)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"could not check .*SQLSTATE 42704"):
            c.execute("select x from pl_view where id = current_setting('app.j')::int")


def test_a_question_leaves_nothing_the_statements_code_did_on_pgwardens_connection(pg_server):
    """Planning runs a statement's IMMUTABLE functions (folded) and STABLE ones (estimates): what
    their code does that ROLLBACK does not undo is undone at the question's end, whether the plan
    was given or the statement failed. A session-level advisory lock (its key, in pg_locks, had
    been an SSN: red team eight) and a prepared statement a VOLATILE function they call made (one
    named pgwarden_plan had failed every later question)."""
    from pgwarden.catalog.planner import ServerPlans

    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("CREATE FUNCTION pg_temp.prep() RETURNS int LANGUAGE plpgsql VOLATILE AS $$ BEGIN "
                  "EXECUTE 'PREPARE pgwarden_plan AS SELECT 1'; EXECUTE 'PREPARE other AS SELECT 2'; "
                  "RETURN 1; END $$")
        c.execute("CREATE FUNCTION pg_temp.locks(fail bool) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
                  "PERFORM pg_advisory_lock(812573964); PERFORM pg_advisory_lock_shared(7); PERFORM pg_temp.prep(); "
                  "IF fail THEN RAISE EXCEPTION 'no'; END IF; RETURN 1; END $$")
        for sql in ("select pg_temp.locks(false)", "select pg_temp.locks(true)",
                    "select pg_temp.locks(false) where $1::int = 1", "select pg_temp.locks(true) where $1::int = 1"):
            ServerPlans._explain(c, sql, ("pg_catalog",), True, ())
            assert c.execute("select count(*) from pg_locks where locktype = 'advisory' "
                             "and pid = pg_backend_pid()").fetchone() == (0,), sql
            assert c.execute("select count(*) from pg_prepared_statements").fetchone() == (0,), sql
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # and a question with parameters after them is answered
        assert isinstance(ServerPlans._explain(c, "select $1::int + 1", ("pg_catalog",), True, ()), list)
