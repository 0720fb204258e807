# ruff: noqa: F811  (the fixtures of test_hostile, imported, are the tests' arguments)
"""Round eight: writes a red team got past `limit: {rows_written: N}`, checked on the server.

Policy `capped` of test_hostile (rows_written 2, DDL allowed); `public.things` holds 5 rows whose
n sum to 15 after `server.reset()`. Each test asserts what the server holds afterwards.

* Work the server does after the statement comes after pgwarden's check: at COMMIT a DEFERRABLE
  constraint trigger whose function writes, and DECLARE ... WITH HOLD (the commit runs the cursor's
  query to keep its rows), by the statement or by a function it runs (round nine); at every later
  DDL statement an event trigger (round nine). Such statements are refused under a cap, and so is
  SQL built at run time, which may leave the same; read-only ones of the same shapes are not.
* The extended protocol: the server plans a statement at its Bind, and planning runs functions (a
  function declared IMMUTABLE is folded, whatever it writes): the count begins before the Bind.
"""

from __future__ import annotations

import pytest
from test_hostile import DB, GROUPS, Agent, errors, hostile, hostile_db, server  # noqa: F401

from pgwarden.testing.matrix import thin

PROTOCOLS = ["simple"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)
BOTH = ["simple", "extended"]  # (where the extended protocol is the point)

CLEAN = """
DROP EVENT TRIGGER IF EXISTS r8_evt;
DROP TABLE IF EXISTS public.r8_t, public.r8_log, public.r8_x CASCADE;
DROP FUNCTION IF EXISTS public.r8_wipe(), public.r8_checks(), public.r8_fill(int), public.r8_bump(),
    public.r8_liar(), public.r8_hold(), public.r8_outer(), public.r8_evt() CASCADE;
"""


def _one(server, sql):
    return server.conn.execute(sql).fetchone()[0]


def _steps(hostile, protocol, steps):
    agent = Agent(hostile, GROUPS["capped"], protocol)
    answers = []
    try:
        for step in steps:
            answers.append(agent.run(step))
    finally:
        agent.close()
    return answers


def _refresh(hostile):
    hostile.call(hostile.app.catalog.invalidate, "test setup")
    hostile.call(hostile.app.catalog.fresh)


@pytest.fixture
def clean(hostile, server):
    server.reset()
    server.conn.execute(CLEAN)
    _refresh(hostile)
    yield server
    server.conn.execute(CLEAN)
    server.reset()
    _refresh(hostile)


def _things_untouched(server, answers):
    assert (_one(server, "SELECT count(*) FROM public.things"), _one(server, "SELECT sum(n) FROM public.things")) \
        == (5, 15), answers


def _refused_after_count(answer) -> None:
    (error,) = errors(answer)
    assert error.sqlstate == "42501", answer
    assert "a write the server would do after the count is not allowed" in error.message, error.message


# ----------------------------------------------------------------- work done at COMMIT

TRIGGER = """
CREATE TABLE public.r8_t (id int);
CREATE FUNCTION public.r8_wipe() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN UPDATE public.things SET n = n + 100 WHERE id = abs(id); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER r8_w AFTER INSERT ON public.r8_t {timing}
    FOR EACH ROW EXECUTE FUNCTION public.r8_wipe();
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("steps", [
    ["INSERT INTO public.r8_t VALUES (1)"],
    ["BEGIN", "INSERT INTO public.r8_t VALUES (1)", "SET CONSTRAINTS ALL IMMEDIATE", "COMMIT"],
], ids=["autocommit", "set-constraints"])
def test_a_write_firing_a_deferred_trigger_that_writes_is_refused(hostile, clean, protocol, steps):
    # (it counted 1 row; the trigger's UPDATE of 5 ran at the commit, after the check)
    clean.conn.execute(TRIGGER.format(timing="DEFERRABLE INITIALLY DEFERRED"))
    _refresh(hostile)
    answers = _steps(hostile, protocol, steps)
    _refused_after_count(answers[1 if len(steps) > 1 else 0])
    _things_untouched(clean, answers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trigger_deferred_only_by_set_constraints_is_refused_too(hostile, clean, protocol):
    # DEFERRABLE INITIALLY IMMEDIATE: SET CONSTRAINTS ALL DEFERRED moves it to the commit.
    clean.conn.execute(TRIGGER.format(timing="DEFERRABLE INITIALLY IMMEDIATE"))
    _refresh(hostile)
    answers = _steps(hostile, protocol, [
        "BEGIN", "SET CONSTRAINTS ALL DEFERRED", "INSERT INTO public.r8_t VALUES (1)", "COMMIT"])
    _refused_after_count(answers[2])
    _things_untouched(clean, answers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_agent_cannot_arm_a_deferred_trigger_that_writes(hostile, clean, protocol):
    answers = _steps(hostile, protocol, [
        "CREATE TABLE public.r8_t (id int)",
        "CREATE FUNCTION public.r8_wipe() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN UPDATE public.things SET n = n + 100 WHERE id = abs(id); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER r8_w AFTER INSERT ON public.r8_t DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION public.r8_wipe()",
        "INSERT INTO public.r8_t VALUES (1)",
    ])
    assert not errors(answers[0]) and not errors(answers[1]), answers
    _refused_after_count(answers[2])
    assert _one(clean, "SELECT count(*) FROM pg_trigger WHERE tgname = 'r8_w'") == 0
    _things_untouched(clean, answers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_deferred_trigger_that_only_reads_is_no_reason_to_refuse(hostile, clean, protocol):
    # A deferred check (the usual use) writes nothing at the commit: the INSERT runs and is counted.
    clean.conn.execute(
        "CREATE TABLE public.r8_t (id int);"
        "CREATE FUNCTION public.r8_checks() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF (SELECT count(*) FROM public.things) > 100 THEN RAISE EXCEPTION 'too many'; END IF; "
        "RETURN NULL; END $$;"
        "CREATE CONSTRAINT TRIGGER r8_c AFTER INSERT ON public.r8_t DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION public.r8_checks();"
        # and a foreign key deferred as Django makes them (its triggers are the server's own)
        "ALTER TABLE public.r8_t ADD COLUMN thing int REFERENCES public.things (id) DEFERRABLE INITIALLY DEFERRED")
    _refresh(hostile)
    answers = _steps(hostile, protocol, ["INSERT INTO public.r8_t (id, thing) VALUES (1, 2), (2, 3)",
                                         "INSERT INTO public.r8_t (id, thing) VALUES (3, 4), (4, 5), (5, 1)"])
    assert not errors(answers[0]), answers
    assert "wrote 3 rows" in errors(answers[1])[0].message, answers
    assert _one(clean, "SELECT count(*) FROM public.r8_t") == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_holdable_cursor_over_a_query_that_writes_is_refused(hostile, clean, protocol):
    # DECLARE ran nothing (0 counted); the commit ran the query to keep its rows: 50 inserted.
    clean.conn.execute(
        "CREATE TABLE public.r8_log (id int);"
        "CREATE FUNCTION public.r8_fill(int) RETURNS int LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO public.r8_log VALUES ($1); RETURN $1; END $$")
    _refresh(hostile)
    answers = _steps(hostile, protocol, [
        "DECLARE c CURSOR WITH HOLD FOR SELECT public.r8_fill(g) FROM generate_series(1, 50) AS g", "CLOSE c"])
    _refused_after_count(answers[0])
    assert _one(clean, "SELECT count(*) FROM public.r8_log") == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_holdable_cursor_over_a_read_is_allowed(hostile, clean, protocol):
    answers = _steps(hostile, protocol, [
        "DECLARE c CURSOR WITH HOLD FOR SELECT id, n FROM public.things ORDER BY id", "FETCH 2 FROM c", "CLOSE c"])
    assert not any(errors(a) for a in answers), answers
    assert [r for r in answers[1] if type(r).__name__ == "DataRow"], answers


# ----------------------------------------------------------------- work left by a function's body (round nine)

FILL = """CREATE TABLE public.r8_log (id int);
CREATE FUNCTION public.r8_fill(int) RETURNS int LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO public.r8_log VALUES ($1); RETURN $1; END $$"""
HOLD_QUERY = "SELECT public.r8_fill(g) FROM generate_series(1, 50) AS g"
HOLDING = {  # functions that declare a holdable cursor over a query that writes
    "sql-body": [f"CREATE FUNCTION public.r8_hold() RETURNS int LANGUAGE sql AS "
                 f"$$ DECLARE r8c CURSOR WITH HOLD FOR {HOLD_QUERY}; SELECT 1 $$"],
    # (PL/pgSQL's EXECUTE of a constant: judged as the statement it holds)
    "plpgsql-execute": [f"CREATE FUNCTION public.r8_hold() RETURNS int LANGUAGE plpgsql AS "
                        f"$$ BEGIN EXECUTE 'DECLARE r8c CURSOR WITH HOLD FOR {HOLD_QUERY}'; RETURN 1; END $$"],
    "nested": [f"CREATE FUNCTION public.r8_outer() RETURNS int LANGUAGE sql AS "
               f"$$ DECLARE r8c CURSOR WITH HOLD FOR {HOLD_QUERY}; SELECT 1 $$",
               "CREATE FUNCTION public.r8_hold() RETURNS int LANGUAGE sql AS $$ SELECT public.r8_outer() + 0 $$"],
}


@pytest.mark.parametrize("protocol", BOTH)
@pytest.mark.parametrize("who", ["owner", "agent"])
@pytest.mark.parametrize("fn", list(HOLDING))
def test_a_holdable_cursor_declared_by_a_function_is_refused(hostile, clean, fn, who, protocol):
    # Red team nine: the DECLARE in the body ran nothing (0 counted); the commit ran the cursor's
    # query to keep its rows, after the check: 50 rows inserted.
    clean.conn.execute(FILL)
    made = HOLDING[fn] if who == "agent" else []
    for sql in HOLDING[fn] if who == "owner" else []:
        clean.conn.execute(sql)
    _refresh(hostile)
    answers = _steps(hostile, protocol, [*made, "SELECT public.r8_hold()", "CLOSE r8c"])
    assert not any(errors(a) for a in answers[:len(made)]), answers
    _refused_after_count(answers[len(made)])
    assert _one(clean, "SELECT count(*) FROM public.r8_log") == 0, answers


# A policy that lets SQL built at run time through (`allow: {statements: [unknown]}`), under a cap.
RUNTIME_SQL = [{"name": "runtime-sql", "rules": [
    {"name": "dynamic", "allow": {"statements": ["unknown"]}},
    {"name": "small-writes", "limit": {"rows_written": 2}},
]}]


@pytest.mark.parametrize("protocol", BOTH)
@pytest.mark.parametrize("built", [
    f"EXECUTE 'DECLARE r8c CURSOR WITH HOLD FOR ' || '{HOLD_QUERY}'",
    "EXECUTE 'INSERT INTO public.r8_log ' || 'VALUES (1)'",
], ids=["holdable-cursor", "one-row"])
def test_sql_built_at_run_time_is_refused_under_the_cap(make_pgwarden, clean, built, protocol):
    # What SQL built at run time does no analysis sees: it may declare a holdable cursor whose
    # query the commit runs after the count (50 rows). Under a cap it is refused, even where a
    # policy allows `unknown`, and even when it would write one row.
    clean.conn.execute(f"{FILL}; CREATE FUNCTION public.r8_hold() RETURNS int LANGUAGE plpgsql AS "
                       f"$$ BEGIN {built}; RETURN 1; END $$")
    agent = Agent(make_pgwarden(policies=RUNTIME_SQL, upstream={"database": DB}), "anyone", protocol)
    try:
        answers = [agent.run("SELECT public.r8_hold()"), agent.run("CLOSE r8c")]
    finally:
        agent.close()
    _refused_after_count(answers[0])
    assert _one(clean, "SELECT count(*) FROM public.r8_log") == 0, answers


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_ordinary_function_call_that_writes_is_still_counted(hostile, clean, protocol):
    # (the control: a function that writes, with nothing left after the count, runs and is counted)
    clean.conn.execute(FILL)
    _refresh(hostile)
    answers = _steps(hostile, protocol, ["SELECT public.r8_fill(1)", "SELECT public.r8_fill(g) FROM generate_series(1, 5) AS g",
                                         "DECLARE c CURSOR WITH HOLD FOR SELECT id FROM public.things", "CLOSE c"])
    assert not errors(answers[0]) and not errors(answers[2]) and not errors(answers[3]), answers
    assert "wrote 5 rows, more than the 2 allowed" in errors(answers[1])[0].message, answers
    assert _one(clean, "SELECT count(*) FROM public.r8_log") == 1


# ----------------------------------------------------------------- an event trigger armed under the cap (round nine)

EVENT_FUNCTION = ("CREATE {replace}FUNCTION public.r8_evt() RETURNS event_trigger LANGUAGE plpgsql {volatility} AS "
                  "$$ BEGIN {body}; END $$")
WRITES = "UPDATE public.things SET n = n + 100 WHERE id = abs(id)"
READS = "RAISE NOTICE 'ddl: %', tg_tag"
ARM = "CREATE EVENT TRIGGER r8_evt ON ddl_command_end EXECUTE FUNCTION public.r8_evt()"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_agent_cannot_arm_an_event_trigger_that_writes(hostile, clean, protocol):
    # Red team nine: arming wrote nothing (counted: 0); every later DDL statement, never counted,
    # then ran its function: 5 rows each.
    answers = _steps(hostile, protocol, [
        EVENT_FUNCTION.format(replace="", volatility="", body=WRITES), ARM, "CREATE TABLE public.r8_x (a int)"])
    assert not errors(answers[0]) and not errors(answers[2]), answers
    _refused_after_count(answers[1])
    assert _one(clean, "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'r8_evt'") == 0
    _things_untouched(clean, answers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_armed_event_triggers_function_cannot_be_replaced_by_one_that_writes(hostile, clean, protocol):
    # Armed over a function that only reads (allowed, below), then the function replaced: its new
    # body would run at every later CREATE TABLE, uncounted (not at the replacement itself, which
    # is counted: the trigger's tag filter leaves it out).
    answers = _steps(hostile, protocol, [
        EVENT_FUNCTION.format(replace="", volatility="STABLE", body=READS),
        ARM.replace(" EXECUTE", " WHEN TAG IN ('CREATE TABLE') EXECUTE"),
        EVENT_FUNCTION.format(replace="OR REPLACE ", volatility="", body=WRITES), "CREATE TABLE public.r8_x (a int)"])
    assert not errors(answers[0]) and not errors(answers[1]) and not errors(answers[3]), answers
    _refused_after_count(answers[2])
    _things_untouched(clean, answers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_event_trigger_that_only_reads_may_be_armed(hostile, clean, protocol):
    answers = _steps(hostile, protocol, [
        EVENT_FUNCTION.format(replace="", volatility="STABLE", body=READS), ARM, "CREATE TABLE public.r8_x (a int)"])
    assert not any(errors(a) for a in answers), answers
    assert any("ddl: CREATE TABLE" in getattr(x, "message", "") for x in answers[2]), answers


# ----------------------------------------------------------------- planning at Bind

LIAR = """
CREATE FUNCTION public.r8_bump() RETURNS int LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN UPDATE public.things SET n = n + 100 WHERE id = abs(id); RETURN 1; END $$;
CREATE FUNCTION public.r8_liar() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT public.r8_bump()';
"""


@pytest.mark.parametrize("protocol", BOTH)
@pytest.mark.parametrize("sql", ["SELECT public.r8_liar()", "SELECT 1 WHERE public.r8_liar() > 0"])
def test_writes_made_while_planning_at_bind_are_counted(hostile, clean, protocol, sql):
    # Extended: the Bind folded the IMMUTABLE-declared call (5 rows) before the count began.
    clean.conn.execute(LIAR)
    _refresh(hostile)
    (answer,) = _steps(hostile, protocol, [sql])
    assert "wrote 5 rows, more than the 2 allowed" in errors(answer)[0].message, answer
    _things_untouched(clean, [answer])
