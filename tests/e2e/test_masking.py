"""Masking end to end: every path a value takes to the client, through real clients.

The table ``mpeople`` holds values no byte the client receives may contain (``SECRETS``); each
test reads them one way and checks the client's view, and where the path allows it, that what
the client got is still a valid value of the column's type (binary results decoded by type OID).
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import uuid

import asyncpg
import psycopg
import pytest

from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS, check_records

SSN = "123-45-6789"
CARD = "4111111111111111"
EMAIL = "ann.secret@example.com"
SECRET_ID = 987654321
SECRET_UUID = uuid.UUID("6f1e2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b")
SECRETS = (SSN, "123456789", CARD, "ann.secret", str(SECRET_ID), str(SECRET_UUID))

TABLES = f"""
drop table if exists mpeople cascade;
drop table if exists mnotes cascade;
create table mpeople (id int primary key, name text, ssn text, card text, email text, emp_id int,
                     token uuid, born date);
insert into mpeople values (1, 'ann', '{SSN}', '{CARD}', '{EMAIL}', {SECRET_ID}, '{SECRET_UUID}', '1980-02-03'),
                          (2, 'bob', '234-56-7890', '5500000000000004', 'bob@example.org', 42,
                           '00000000-0000-4000-8000-000000000002', '1990-01-01'),
                          (3, 'cy', null, null, null, null, null, null);
create view mpeople_v as select id, name, ssn as social, upper(card) as c from mpeople;
create table mnotes (id int, body text);
insert into mnotes values (1, 'call me at {SSN} or mail {EMAIL}'), (2, 'nothing here');
"""

RULES = [
    {"name": "ssn", "mask": {"columns": ["public.mpeople.ssn"], "with": "partial", "keep_last": 4}},
    {"name": "card", "mask": {"columns": ["public.mpeople.card"], "with": "redact"}},
    {"name": "email", "mask": {"columns": ["public.mpeople.email"], "with": "email"}},
    {"name": "ids", "mask": {"columns": ["public.mpeople.emp_id", "public.mpeople.token"], "with": "hash",
                             "oracle": "allow"}},
]
POLICY = {"name": "agents", "default": "allow", "rules": RULES}


@pytest.fixture
def masked(make_pgwarden, pg_server, tmp_path):
    pg_server.psql(TABLES, "appdb")
    key = tmp_path / "mask-key"
    key.write_text("a-test-key-of-enough-bytes-0123456789\n")
    return make_pgwarden(policies=[POLICY], only=BUILTIN_PLUGINS, plugins_section={"mask": {"key_file": str(key)}})


def _leaks(payload: object) -> list[str]:
    text = repr(payload)
    return [s for s in SECRETS if s in text]


def test_plain_select_is_masked_not_refused_text_and_binary(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        rows = c.execute("select * from mpeople order by id").fetchall()
        assert _leaks(rows) == []
        ann = rows[0]
        assert ann[2] == "***-**-6789" and ann[3] == "***" and ann[4] == "***@example.com"
        assert isinstance(ann[5], int) and ann[5] != SECRET_ID  # hashed, still an int4
        assert isinstance(ann[6], uuid.UUID) and ann[6] != SECRET_UUID
        assert ann[7] == datetime.date(1980, 2, 3)  # not masked
        assert rows[2][2:7] == (None, None, None, None, None)  # NULL stays NULL
        with c.cursor(binary=True) as cur:
            brows = cur.execute("select * from mpeople order by id").fetchall()
        assert _leaks(brows) == []
        assert brows == rows  # binary values are the same masked values, decoded by type OID
        # deterministic: equal values hash alike, joins on the hash work
        again = c.execute("select emp_id from mpeople where id = 1").fetchone()
        assert again == (ann[5],)


def test_aliases_expressions_and_views_are_masked_whole(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        got = c.execute("select ssn as x, upper(ssn), ssn || '', reverse(card), row_to_json(p)::text, "
                        "to_jsonb(p) ->> 'email' from mpeople p").fetchall()
        assert _leaks(got) == []
        assert got[0][0] in ("***-**-6789", "***-**-7890", None)
        assert all(v in ("***", None) for row in got for v in row[1:5])
        view = c.execute("select social, c from mpeople_v order by id").fetchall()
        assert _leaks(view) == [] and view[0] == ("***-**-6789", "***")


def test_oracles_are_refused_with_a_hint_and_allowed_where_the_rule_says(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("select name from mpeople where ssn like '1%'")
        diag = e.value.diag
        assert diag.message_primary.startswith("pgwarden: blocked: masked column public.mpeople.ssn used in")
        assert "ssn" in diag.message_hint
        assert diag.message_detail == "Refused by policy 'agents', rule 'ssn'."
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # an aggregate's argument is an oracle too
            c.execute("select max(ssn) from mpeople")
        # the session goes on; a hashed column may be joined on (oracle: allow)
        assert c.execute("select count(*) from mpeople a join mpeople b on a.emp_id = b.emp_id").fetchone() == (2,)


def test_extended_protocol_prepared_and_undescribed_portal(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        for prepare in (False, True):
            got = c.execute("select ssn, card from mpeople where id = %s", (1,), prepare=prepare).fetchone()
            assert got == ("***-**-6789", "***")
        with c.cursor(binary=True) as cur:
            assert cur.execute("select ssn from mpeople where id = %s", (1,)).fetchone() == ("***-**-6789",)


def test_sql_level_prepare_and_cursor_are_masked_by_their_bodies(masked):
    # EXECUTE and FETCH carry no lineage of their own: the session remembers what PREPARE and
    # DECLARE defined (and DEALLOCATE and CLOSE forget), so the columns the body does not mask
    # arrive as they are, not masked whole.
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        # (an expression: the server's row description names no column for it, only lineage does)
        c.execute("prepare p as select upper(name), ssn from mpeople where id = 1")
        assert c.execute("execute p").fetchall() == [("ANN", "***-**-6789")]
        c.execute("deallocate p")
        c.execute("prepare p as select ssn, lower(name) from mpeople where id = 1")
        assert c.execute("execute p").fetchall() == [("***-**-6789", "ann")]
        with c.transaction():
            c.execute("declare cur cursor for select upper(name), card from mpeople where id = 1")
            assert c.execute("fetch 1 from cur").fetchall() == [("ANN", "***")]


def test_multi_statement_query_masks_each_result_by_its_own_statement(masked):
    sql = "select 1, 'x'; select ssn, name from mpeople where id = 1"
    out = subprocess.run(["psql", masked.dsn(), "-At", "-c", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1|x", "***-**-6789|ann"]


def _copied(c: psycopg.Connection, sql: str) -> bytes:
    with c.cursor() as cur, cur.copy(sql) as copy:
        return b"".join(bytes(block) for block in copy)


def test_copy_to_stdout_text_and_csv_masked_binary_refused(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        text = _copied(c, "copy mpeople (id, ssn, card) to stdout")
        csv = _copied(c, "copy (select id, ssn, email from mpeople order by id) to stdout with (format csv, header)")
        assert _leaks(text) == [] and _leaks(csv) == []
        assert b"1\t***-**-6789\t***\n" in text and b"3\t\\N\t\\N\n" in text
        assert csv.splitlines()[0] == b"id,ssn,email" and csv.splitlines()[1] == b"1,***-**-6789,***@example.com"
        for options in ("format binary", "delimiter ';'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                _copied(c, f"copy mpeople to stdout with ({options})")
            assert "COPY of masked columns in binary format" in str(e.value)
        # unmasked columns may go out in binary
        assert _copied(c, "copy (select id from mpeople) to stdout with (format binary)").startswith(b"PGCOPY")
        assert c.execute("select 1").fetchone() == (1,)  # the session goes on


def test_error_messages_do_not_echo_masked_values(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            c.execute("select ssn::int from mpeople where id = 1")
        # the message of an error that may quote data is withheld whole; the SQLSTATE stays
        assert e.value.diag.message_primary == ("pgwarden: message withheld: the statement reads masked columns "
                                                "(SQLSTATE 22P02, InvalidTextRepresentation)")
        assert e.value.diag.message_detail is None and e.value.diag.sqlstate == "22P02"
        # ... for quoting rules cannot be trusted with a value holding quotes of its own: the
        # server writes ""<value>"", and a pairwise mask of quoted parts leaves the value between
        # (found by a red team on 2026-12-06, the digits mapped to letters past the digit mask)
        disguised = SSN.translate(str.maketrans("0123456789", "abcdefghij"))
        for sql in ("""select ('"' || translate(ssn, '0123456789', 'abcdefghij') || '"')::int from mpeople
                       where id = 1""",
                    """select ('{"' || translate(ssn, '0123456789', 'abcdefghij') || '}')::text[] from mpeople
                       where id = 1"""):
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            said = " ".join(str(v) for v in (e.value.diag.message_primary, e.value.diag.message_detail,
                                               e.value.diag.message_hint, e.value.diag.context) if v)
            assert disguised not in said and disguised.replace("-", "") not in said, said
        # ... names too: a name can be made of a value (relation "<ssn>" does not exist)
        for sql in ("select ssn::regclass from mpeople where id = 1",
                    """select ('"x""' || translate(ssn, '0123456789', 'abcdefghij') || '"')::regclass from mpeople
                       where id = 1"""):
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            said = str(e.value.diag.message_primary) + str(e.value.diag.message_detail)
            assert _leaks(said) == [] and disguised not in said, said
        # ... but not an error in the statement's own text, every name it quotes the agent's
        # (tests/e2e/test_ordinary_work.py: a typo's error says what is wrong), its hint withheld
        with pytest.raises(psycopg.errors.UndefinedColumn) as e:
            c.execute("select nosuch, ssn from mpeople")
        assert e.value.diag.message_primary == 'column "nosuch" does not exist'
        assert e.value.diag.message_hint is None and e.value.diag.message_detail is None
        notices = []
        c.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail)))
        c.execute("do $$ begin raise notice 'value %', '" + SSN + "'; end $$")
        assert _leaks(notices) == [] and notices


def test_the_nulls_of_an_output_computed_from_a_masked_value_are_masked_too(masked):
    # nullif(substr(ssn, i, 1), 'd') is NULL exactly when digit i is d: with NULL kept, 110 such
    # columns gave the whole SSN in one SELECT (a red team, 2026-12-06)
    sql = ("select " + ", ".join(f"nullif(substr(ssn, {i}, 1), '{d}')" for i in (1, 2, 3) for d in range(10))
           + " from mpeople where id = 1")
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        for binary in (False, True):
            row = c.cursor(binary=binary).execute(sql).fetchone()
            assert set(row) == {"***"}, row
        copied = _copied(c, f"copy ({sql}) to stdout")
        assert set(copied.rstrip(b"\n").split(b"\t")) == {b"***"}, copied
        # a masked column itself keeps its NULLs (person 3 has no SSN), as documented
        assert c.execute("select ssn from mpeople where id = 3").fetchone() == (None,)


def test_set_operations_and_views_filtering_masked_values_are_oracles(masked, pg_server):
    # (a red team, 2026-12-06) INTERSECT with a table of guesses returned the right (position,
    # digit) pairs as plain integers; a view an agent made (or the database had) filtered on
    # substr(ssn, i, 1) = d and its reader got the matches
    pg_server.psql("drop view if exists dba_ones; create view dba_ones as select id from mpeople where ssn like '1%'",
                   "appdb")
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        for sql in (
            "select k from (select k, substr(ssn, k / 10, 1) from mpeople, generate_series(10, 119) k where id = 1 "
            "intersect select i * 10 + d, d::text from generate_series(1, 11) i, generate_series(0, 9) d) s",
            "select left(ssn, 1) from mpeople where id = 1 union select '1'",
            "select ssn from mpeople except all select '123-45-6789'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                c.execute(sql)
            assert "UNION / INTERSECT / EXCEPT" in str(e.value)
        assert _leaks(c.execute("select ssn from mpeople union all select 'x'").fetchall()) == []  # compares nothing
        c.execute("drop view if exists agent_digits")
        c.execute("create view agent_digits as select m.id, i, d from mpeople m, generate_series(1, 11) i, "
                  "generate_series(0, 9) d where substr(m.ssn, i, 1) = d::text")
        for sql in ("select i, d from agent_digits where id = 1", "select id from dba_ones"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                c.execute(sql)
            assert "WHERE" in str(e.value)
        c.execute("drop view agent_digits")
    pg_server.psql("drop view dba_ones", "appdb")


@pytest.mark.parametrize("sql, said", [
    # (a red team's second round, 2026-12-06: each rebuilt the SSN in one statement or a few)
    ("select (select count(*) from mpeople tablesample system ((substr(m.ssn, 1, 1) = '1')::int * 100)) "
     "from mpeople m where id = 1", "rows"),
    ("select (select count(*) from mpeople tablesample bernoulli (10) repeatable (ascii(substr(m.ssn, 1, 1)))) "
     "from mpeople m where id = 1", "rows"),
    ("select (select max(c) from (select count(*) over (order by g rows between current row and "
     "(ascii(substr(m.ssn, 1, 1)) - 48) following) c from generate_series(1, 20) g) s) from mpeople m", "window"),
    ("with recursive t(k, v) as (select k, substr(ssn, k / 10, 1) from mpeople, generate_series(10, 119) k "
     "where id = 1 union select k, (k % 10)::text from t) select k from t", "UNION / INTERSECT / EXCEPT"),
    ("explain (analyze, costs off, timing off, summary off) select repeat('x', 100000 * "
     "(ascii(substr(ssn, 1, 1)) - 48)) from mpeople where id = 1 order by name", "EXPLAIN ANALYZE"),
    ("select setseed((ascii(substr(ssn, 1, 1)) - 48) / 10.0) from mpeople where id = 1", "keep values elsewhere"),
])
def test_more_oracles_refused(masked, sql, said):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute(sql)
        assert said in str(e.value)


def test_a_function_without_arguments_filtering_on_a_masked_value_is_an_oracle(masked):
    # its body's filters are its caller's: the agent may have written the constants itself
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        c.execute("drop function if exists digits()")
        c.execute("create function digits() returns setof int language sql as $$ select i * 10 + d from mpeople m, "
                  "generate_series(1, 11) i, generate_series(0, 9) d where m.id = 1 and substr(m.ssn, i, 1) = d::text $$")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("select * from digits()")
        assert "WHERE" in str(e.value)
        c.execute("drop function digits()")


def test_a_syntax_error_raised_while_running_keeps_no_message(masked):
    # to_tsquery's run-time syntax error quotes its whole input (pgwarden refuses what does not
    # parse before it reaches the server: every 42601 from the server is raised while running)
    disguised = SSN.translate(str.maketrans("0123456789", "abcdefghij"))
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            c.execute("""select to_tsquery('a" ' || translate(ssn, '0123456789', 'abcdefghij') || ' "b &')
                         from mpeople where id = 1""")
        assert disguised not in str(e.value) and "message withheld" in str(e.value)


def test_asyncpg_binary_codecs(masked):
    async def run():
        conn = await asyncpg.connect(masked.url(), ssl=False)
        try:
            rows = await conn.fetch("select id, ssn, emp_id, token, email from mpeople order by id")
            stmt = await conn.prepare("select ssn, card from mpeople where id = $1")
            one = await stmt.fetchrow(1)
            chars = await conn.fetchrow('select ssn::"char", card::"char", email::"char" from mpeople where id = 1')
            return [tuple(r) for r in rows], tuple(one), tuple(chars)
        finally:
            await conn.close()

    rows, one, chars = asyncio.run(run())
    assert _leaks(rows) == [] and _leaks(one) == []
    assert rows[0][1] == "***-**-6789" and isinstance(rows[0][2], int) and isinstance(rows[0][3], uuid.UUID)
    assert one == ("***-**-6789", "***")
    # a "char" (one byte in binary) masked whole, derived from masked columns: one byte still
    assert chars == (b"*", b"*", b"*")
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        for binary in (False, True):
            assert c.cursor(binary=binary).execute(
                'select ssn::"char", card::"char" from mpeople where id = 1').fetchone() == ("*", "*")


def test_records_name_sources_and_rules_never_values(masked, tmp_path):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        c.execute("select ssn as s, card from mpeople").fetchall()
    masked.call(masked.app.recorder.flush) if hasattr(masked.app.recorder, "flush") else None
    masked.call(masked.app.stop)
    records = check_records([tmp_path / "records.jsonl"])
    assert _leaks(records) == []
    result = [r for r in records if r["type"] == "result" and r.get("masked")][0]
    assert result["masked"] == ["public.mpeople.ssn", "public.mpeople.card"]
    assert {(m["column"], m["source"], m["rule"], m["strategy"]) for m in result["masks"]} == {
        ("s", "public.mpeople.ssn", "agents/ssn", "partial"), ("card", "public.mpeople.card", "agents/card", "redact")}


FUNCTIONS = """
create or replace function leak(i int) returns text language plpgsql stable as $$
begin return (select ssn from mpeople where id = i); end $$;
"""


def test_a_function_that_hides_where_its_value_comes_from_is_masked_whole_or_refused(make_pgwarden, pg_server,
                                                                                    tmp_path):
    pg_server.psql(TABLES + FUNCTIONS, "appdb")
    key = tmp_path / "mask-key"
    key.write_text("a-test-key-of-enough-bytes-0123456789\n")
    running = make_pgwarden(policies=[POLICY], only=BUILTIN_PLUGINS, plugins_section={"mask": {"key_file": str(key)}})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select leak(1)").fetchone() == ("***",)
        assert c.execute("select 1, 'plain'").fetchone() == (1, "plain")  # nothing masked reads nothing masked
    strict = [{**RULES[0], "mask": {**RULES[0]["mask"], "unknown": "refuse"}}]
    running = make_pgwarden(policies=[{**POLICY, "rules": strict}], only=BUILTIN_PLUGINS,
                            recording={"sinks": [{"file": str(tmp_path / "strict.jsonl"), "fsync_s": 0}]})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("select leak(1)")
        assert "cannot tell which columns this statement returns" in str(e.value)
        assert c.execute("select name, ssn from mpeople where id = 1").fetchone() == ("ann", "***-**-6789")


def test_without_the_live_catalog_statements_near_masked_columns_are_refused(make_pgwarden, pg_server):
    pg_server.psql(TABLES, "appdb")
    running = make_pgwarden(policies=[POLICY], only=BUILTIN_PLUGINS, catalog={"live": False})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("select name from mpeople")
        assert "live catalog is unreachable" in str(e.value)
        assert c.execute("select 1, 'fine'").fetchone() == (1, "fine")


DETECT = {"name": "agents", "default": "allow",
          "rules": [{"name": "pii", "mask": {"detect": ["ssn", "credit_card", "email"]}}]}


def test_detectors_on_text_columns_and_messages_counted_never_shown(make_pgwarden, pg_server, tmp_path):
    pg_server.psql(TABLES, "appdb")
    running = make_pgwarden(policies=[DETECT], only=BUILTIN_PLUGINS)
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        got = c.execute("select id, body from mnotes order by id").fetchall()
        assert got == [(1, "call me at [ssn] or mail [email]"), (2, "nothing here")]
        with c.cursor(binary=True) as cur:
            got = cur.execute("select body from mnotes where id = 1").fetchone()
        assert got == ("call me at [ssn] or mail [email]",)
        assert c.execute("select to_jsonb(n) from mnotes n where id = 1").fetchone() == ("[ssn,email]",)
        # A value inside an array or a record is found too: the whole value goes (NULL).
        assert c.execute("select array[body], row(id, body), id from mnotes where id = 1").fetchone() == (
            None, None, 1)
        with c.cursor(binary=True) as cur:
            assert cur.execute("select array[body], id from mnotes order by id").fetchall() == [
                (None, 1), (["nothing here"], 2)]
        with pytest.raises(psycopg.errors.RaiseException) as e:
            c.execute("do $$ begin raise exception 'card 4111 1111 1111 1111 rejected'; end $$")
        assert e.value.diag.message_primary == "card [credit_card] rejected"
    running.call(running.app.stop)
    records = check_records([tmp_path / "records.jsonl"])
    # (the statement records hold the SQL the agent sent; what came back is masked)
    assert _leaks(records) == [] and "4111 1111" not in repr([r for r in records if r["type"] == "result"])
    result = next(r for r in records if r["type"] == "result" and r.get("detected"))
    assert sorted((d["detector"], d["count"]) for d in result["detected"]) == [("email", 1), ("ssn", 1)]
    assert running.app.stats.detections[("ssn", "public.mnotes.body")] >= 1


def test_metrics_name_masked_values_by_source(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        c.execute("select ssn as alias from mpeople").fetchall()
    stats = masked.app.stats.masked_values
    assert stats[("public.mpeople.ssn", "agents/ssn", "partial")] == 2  # two non-NULL values


def test_rules_naming_columns_that_do_not_exist_warn_at_start_reload_and_check(make_pgwarden, pg_server, tmp_path):
    import sys

    import yaml

    from pgwarden.testing.postgres import APP_PASSWORD
    from pgwarden.testing.pytest_plugin import base_config

    pg_server.psql(TABLES, "appdb")
    typo = {"name": "agents", "default": "allow",
            "rules": [{"name": "typo", "mask": {"columns": ["public.mpeople.ssnn"]}}, RULES[1]]}
    running = make_pgwarden(policies=[typo], only=BUILTIN_PLUGINS)
    expected = ["mask rule agents/typo: public.mpeople.ssnn matches no column of the database; it masks nothing"]
    assert running.call(lambda: running.app.warn_mask_columns(running.app.catalog.current)) == expected
    doc = base_config(pg_server, running.keys, tmp_path, policies=[typo])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg), "--dsn", pg_server.dsn()],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "warning: " + expected[0]
    assert APP_PASSWORD not in out.stdout + out.stderr
    bad = subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg), "--dsn",
                          "postgresql://nobody@127.0.0.1:1/x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("cannot read the catalog at --dsn:")


def test_values_kept_elsewhere_are_refused_and_notifications_masked(masked):
    with psycopg.connect(masked.dsn(), autocommit=True) as c:
        for sql in ("select set_config('leak.x', ssn, false) from mpeople where id = 1",
                    "select lo_from_bytea(4242, convert_to(email, 'UTF8')) from mpeople where id = 1",
                    "select pg_notify('leak', ssn) from mpeople"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                c.execute(sql)
            assert "may not also keep values elsewhere" in str(e.value), sql
        c.execute("listen leak")
        c.execute(f"notify leak, 'ssn {SSN}'")  # a value of the agent's own, in SSN shape: detected
        assert [n.payload for n in c.notifies(timeout=1, stop_after=1)] == ["ssn [ssn]"]


def test_what_was_prepared_before_a_reload_brought_mask_rules_is_masked_after_it(make_pgwarden, pg_server,
                                                                                 signing_keys, tmp_path):
    """A named statement (Parse before, Bind after), an SQL-level PREPARE and a cursor WITH HOLD,
    all made while the identity had no mask rule: after the reload that gives it one, what they
    return is masked (their derived outputs whole), in text and in binary, or refused."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    pg_server.psql(TABLES, "appdb")
    running = make_pgwarden(policies=[{"name": "agents", "default": "allow"}], only=BUILTIN_PLUGINS)
    derived = "select reverse(ssn), ssn, card from mpeople where id = 1"
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute(derived, prepare=True).fetchone() == (SSN[::-1], SSN, CARD)
        c.execute("prepare p as select upper(ssn), card || '' from mpeople where id = 1")
        c.execute("declare k cursor with hold for select reverse(ssn), card from mpeople")
        doc = base_config(pg_server, signing_keys, tmp_path, policies=[POLICY])
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
        got = [c.execute(derived, prepare=True).fetchone(), c.execute("fetch all from k").fetchall()]
        try:  # (an EXECUTE of what this pgwarden's session state no longer names is refused: fine)
            got.append(c.execute("execute p").fetchone())
        except psycopg.errors.InsufficientPrivilege:
            pass
        with c.cursor(binary=True) as cur:
            got.append(cur.execute(derived, prepare=True).fetchone())
        assert _leaks(got) == [] and SSN[::-1] not in repr(got)
        assert got[0] == ("***", "***-**-6789", "***")


def test_a_reload_that_adds_or_takes_away_mask_rules_applies_to_open_sessions(make_pgwarden, pg_server,
                                                                              signing_keys, tmp_path):
    """A session whose policies have no mask rule has no result's shape looked at (the relay asks
    nothing, docs/performance.md); a reload that gives its identity mask rules masks its next
    result, in the same session, and one that takes them away lets it through again."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    pg_server.psql(TABLES, "appdb")
    plain = {"name": "agents", "default": "allow"}
    running = make_pgwarden(policies=[plain], only=BUILTIN_PLUGINS)

    def reload(policy: dict) -> None:
        doc = base_config(pg_server, signing_keys, tmp_path, policies=[policy])
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))

    with psycopg.connect(running.dsn(), autocommit=True) as c:
        select = "select ssn, card from mpeople where id = 1"
        assert c.execute(select).fetchone() == (SSN, CARD)
        reload(POLICY)
        assert c.execute(select).fetchone() == ("***-**-6789", "***")
        reload(plain)
        assert c.execute(select).fetchone() == (SSN, CARD)


def test_a_rule_on_a_child_or_partition_masks_its_column_read_through_the_parent(make_pgwarden, pg_server, tmp_path):
    """Reading a parent reads its children's rows: a rule naming a partition's (or an inheritance
    child's) column masks that column however it is reached, the parent's own rows too."""
    pg_server.psql(f"""
        drop table if exists mledger cascade; drop table if exists mbase cascade;
        create table mledger (id int, ssn text) partition by range (id);
        create table mledger_hot partition of mledger for values from (0) to (10);
        create table mledger_cold partition of mledger for values from (10) to (100);
        insert into mledger values (1, '{SSN}'), (20, 'plain-cold');
        create table mbase (id int, ssn text);
        create table mkid () inherits (mbase);
        insert into mkid values (2, '{SSN}');
        """, "appdb")
    key = tmp_path / "mask-key"
    key.write_text("a-test-key-of-enough-bytes-0123456789\n")
    rules = [{"name": "hot", "mask": {"columns": ["public.mledger_hot.ssn", "public.mkid.ssn"], "with": "redact"}}]
    running = make_pgwarden(policies=[{**POLICY, "rules": rules}], only=BUILTIN_PLUGINS,
                            plugins_section={"mask": {"key_file": str(key)}})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        for sql in ("select id, ssn from mledger order by id", "select id, ssn from mledger_hot",
                    "select id, ssn from mbase", "select id, upper(ssn) from mbase", "select * from mkid"):
            rows = c.execute(sql).fetchall()
            assert rows and not _leaks(rows), (sql, rows)
        # the partition without a rule, read on its own, is not masked
        assert c.execute("select ssn from mledger_cold").fetchall() == [("plain-cold",)]
