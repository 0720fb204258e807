"""Lineage against a live catalog: tables, views and functions made here, names resolved as the
server resolves them (the server's own RowDescription names are checked too)."""

from __future__ import annotations

import psycopg
import pytest

from pgwarden.catalog.loader import build_catalog, read_rows
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lineage import Lineage, NamedLineage, OracleUse, Source, lineage_of
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER

DB = "lineagedb"

SETUP = r"""
CREATE TABLE users (id int PRIMARY KEY, gone text, name text, ssn text, email text, card text);
ALTER TABLE users DROP COLUMN gone;
CREATE TABLE orders (id int, user_id int, total numeric, note text);
CREATE SCHEMA hr;
CREATE TABLE hr."Staff" ("Full Name" text, ssn text);
CREATE TABLE hr.users (ssn text, salary int);
CREATE VIEW v_users AS SELECT id, ssn AS tax_id, upper(name) AS shout FROM users;
CREATE VIEW v_nested(ident, tin) AS SELECT id, tax_id FROM v_users WHERE shout <> '';
CREATE MATERIALIZED VIEW mv_users AS SELECT id, email FROM users;
CREATE FUNCTION all_users() RETURNS SETOF users LANGUAGE sql STABLE AS 'SELECT * FROM users';
CREATE FUNCTION user_ssn(uid int) RETURNS text LANGUAGE sql STABLE AS 'SELECT ssn FROM users WHERE id = uid';
CREATE FUNCTION pairs() RETURNS TABLE (who text, tin text) LANGUAGE sql STABLE
    BEGIN ATOMIC SELECT name, ssn FROM users; END;
CREATE FUNCTION starts(p text) RETURNS SETOF int LANGUAGE sql STABLE
    AS $$ SELECT id FROM users WHERE ssn LIKE p || '%' $$;
CREATE FUNCTION pl_users() RETURNS SETOF users LANGUAGE plpgsql STABLE
    AS $$ BEGIN RETURN QUERY SELECT * FROM users; END $$;
CREATE FUNCTION pl_secret(uid int) RETURNS text LANGUAGE plpgsql STABLE
    AS $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = uid; RETURN s; END $$;
CREATE FUNCTION anything() RETURNS SETOF record LANGUAGE plpgsql
    AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT ssn FROM users'; END $$;
CREATE FUNCTION hr_ssn() RETURNS SETOF text LANGUAGE sql STABLE SET search_path = hr AS 'SELECT ssn FROM users';
CREATE TABLE people (id int, ssn text);
CREATE TABLE hr.people_archive (note text) INHERITS (people);
CREATE TABLE hr.people_old () INHERITS (hr.people_archive);
CREATE TABLE events (id int, detail text) PARTITION BY RANGE (id);
CREATE TABLE hr.events_low PARTITION OF events FOR VALUES FROM (0) TO (10);
CREATE FUNCTION computed(q text) RETURNS SETOF record LANGUAGE plpgsql
    AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT ' || q || ' FROM users'; END $$;
"""


@pytest.fixture(scope="module")
def ctx(pg_server) -> SqlContext:
    pg_server.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_server.psql(f"CREATE DATABASE {DB} OWNER {APP_USER}")
    pg_server.psql(f"SET ROLE {APP_USER};" + SETUP, database=DB)
    with psycopg.connect(pg_server.dsn(APP_USER, APP_PASSWORD, DB), autocommit=True) as conn:
        catalog = build_catalog(read_rows(conn), source="live", complete=True)
    yield SqlContext(catalog, user=APP_USER)
    pg_server.psql(f"DROP DATABASE {DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def conn(pg_server, ctx):
    with psycopg.connect(pg_server.dsn(APP_USER, APP_PASSWORD, DB), autocommit=True) as c:
        yield c


def U(column: str) -> Source:
    return Source("public", "users", column)


def Ord(column: str) -> Source:
    return Source("public", "orders", column)


def one(sql: str, ctx: SqlContext) -> Lineage:
    (lineage,) = lineage_of(sql, ctx)
    return lineage


def shape(lineage: Lineage) -> list[tuple[str, set[Source], str]]:
    return [(o.name, set(o.sources), "opaque" if o.opaque else "direct" if o.direct else "derived")
            for o in lineage.outputs]


D, X, Q = "direct", "derived", "opaque"

def P(schema: str, table: str, *columns: str) -> set[Source]:
    return {Source(schema, table, c) for c in columns}


CASES = [
    # reading a parent reads its children's rows: their columns are the output's sources too (a
    # rule masking a partition's or child's column masks it read through the parent)
    ("SELECT ssn, id FROM people",
     [("ssn", P("public", "people", "ssn") | P("hr", "people_archive", "ssn") | P("hr", "people_old", "ssn"), D),
      ("id", P("public", "people", "id") | P("hr", "people_archive", "id") | P("hr", "people_old", "id"), D)]),
    ("SELECT note FROM hr.people_archive", [("note", P("hr", "people_archive", "note") | P("hr", "people_old", "note"), D)]),
    ("SELECT detail FROM events", [("detail", P("public", "events", "detail") | P("hr", "events_low", "detail"), D)]),
    # a partition's rows are its parent's: a rule on the parent's column masks it read by its own name
    ("SELECT detail FROM hr.events_low", [("detail", P("hr", "events_low", "detail") | P("public", "events", "detail"), D)]),
    ("SELECT * FROM users", [("id", {U("id")}, D), ("name", {U("name")}, D), ("ssn", {U("ssn")}, D),
                             ("email", {U("email")}, D), ("card", {U("card")}, D)]),
    ('SELECT u.ssn AS "Tax", "u".name FROM users u', [("Tax", {U("ssn")}, D), ("name", {U("name")}, D)]),
    ("SELECT o.*, u.ssn FROM orders o JOIN users u ON u.id = o.user_id",
     [("id", {Ord("id")}, D), ("user_id", {Ord("user_id")}, D), ("total", {Ord("total")}, D),
      ("note", {Ord("note")}, D), ("ssn", {U("ssn")}, D)]),
    ("SELECT * FROM users JOIN orders USING (id) LIMIT 0",  # USING column once, first
     [("id", {U("id"), Ord("id")}, D), ("name", {U("name")}, D), ("ssn", {U("ssn")}, D),
      ("email", {U("email")}, D), ("card", {U("card")}, D), ("user_id", {Ord("user_id")}, D),
      ("total", {Ord("total")}, D), ("note", {Ord("note")}, D)]),
    ('SELECT * FROM hr."Staff"', [("Full Name", {Source("hr", "Staff", "Full Name")}, D),
                                  ("ssn", {Source("hr", "Staff", "ssn")}, D)]),
    ("SELECT s.x FROM (SELECT ssn AS x FROM users) s", [("x", {U("ssn")}, D)]),
    ("WITH a AS (SELECT ssn FROM users), b(z) AS (SELECT ssn FROM a) SELECT z FROM b", [("z", {U("ssn")}, D)]),
    ("WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM users UNION ALL SELECT n + 1, s || name FROM r, users "
     "WHERE n < 2) SELECT s, n FROM r", [("s", {U("ssn"), U("name")}, X), ("n", set(), X)]),
    ("SELECT name FROM users UNION SELECT ssn FROM users", [("name", {U("name"), U("ssn")}, D)]),
    ("SELECT name, 1 FROM users UNION ALL SELECT note, id FROM orders",
     [("name", {U("name"), Ord("note")}, D), ("?column?", {Ord("id")}, X)]),
    ("SELECT * FROM v_users", [("id", {U("id")}, D), ("tax_id", {U("ssn")}, D), ("shout", {U("name")}, X)]),
    ("SELECT tin, ident FROM v_nested", [("tin", {U("ssn")}, D), ("ident", {U("id")}, D)]),
    ("SELECT * FROM mv_users", [("id", {U("id")}, D), ("email", {U("email")}, D)]),
    ("SELECT x.s FROM users u, LATERAL (SELECT u.ssn AS s) x", [("s", {U("ssn")}, D)]),
    ("SELECT (SELECT ssn FROM users WHERE id = o.user_id) FROM orders o", [("ssn", {U("ssn")}, D)]),
    ("SELECT CASE WHEN id > 1 THEN ssn ELSE 'x' END, coalesce(email, card), format('%s', name), "
     "concat(ssn, '') FROM users",
     [("case", {U("id"), U("ssn")}, X), ("coalesce", {U("email"), U("card")}, X), ("format", {U("name")}, X),
      ("concat", {U("ssn")}, X)]),
    ("SELECT ssn::bytea, ssn::json, xmlparse(content ssn), CAST(id AS text) FROM users",
     [("ssn", {U("ssn")}, X), ("ssn", {U("ssn")}, X), ("xmlparse", {U("ssn")}, X), ("id", {U("id")}, X)]),
    ("SELECT row_to_json(u), to_jsonb(u.*), ROW(u.id, u.ssn), u FROM users u",
     [(n, {U(c) for c in ("id", "name", "ssn", "email", "card")} if n != "row" else {U("id"), U("ssn")}, X)
      for n in ("row_to_json", "to_jsonb", "row", "u")]),
    ("SELECT (u).ssn, (u).* FROM users u",
     [("ssn", {U("ssn")}, D)] + [(c, {U(c)}, D) for c in ("id", "name", "ssn", "email", "card")]),
    ("SELECT json_agg(ssn), array_agg(name ORDER BY id), string_agg(email, ',') FROM users",
     [("json_agg", {U("ssn")}, X), ("array_agg", {U("name"), U("id")}, X), ("string_agg", {U("email")}, X)]),
    ("SELECT ARRAY[ssn, name], ARRAY(SELECT card FROM users) FROM users",
     [("array", {U("ssn"), U("name")}, X), ("array", {U("card")}, X)]),
    ("SELECT lag(ssn) OVER (ORDER BY id) FROM users", [("lag", {U("ssn")}, X)]),
    ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM users", [("percentile_disc", {U("ssn")}, X)]),
    ("SELECT x FROM users u, unnest(ARRAY[u.ssn]) x", [("x", {U("ssn")}, X)]),
    ("SELECT * FROM v_users v JOIN users USING (id)",
     [("id", {U("id")}, D), ("tax_id", {U("ssn")}, D), ("shout", {U("name")}, X)]
     + [(c, {U(c)}, D) for c in ("name", "ssn", "email", "card")]),
    ("SELECT j.ssn FROM (users u JOIN orders o ON o.user_id = u.id) j", [("ssn", {U("ssn")}, D)]),
    ("SELECT first_value(ssn) OVER w FROM users WINDOW w AS (PARTITION BY email)", [("first_value", {U("ssn")}, X)]),
    ("WITH d AS (DELETE FROM users WHERE id = 1 RETURNING ssn) SELECT * FROM d", [("ssn", {U("ssn")}, D)]),
    ("SELECT ssn FROM users UNION SELECT 'x'", [("ssn", {U("ssn")}, X)]),
    ("SELECT (pairs()).*, (all_users()).ssn",
     [("who", {U("name")}, D), ("tin", {U("ssn")}, D), ("ssn", {U("ssn")}, D)]),
    ("VALUES ((SELECT ssn FROM users LIMIT 1))", [("column1", {U("ssn")}, D)]),
    ("SELECT users FROM users", [("users", {U(c) for c in ("id", "name", "ssn", "email", "card")}, X)]),
    ("SELECT * FROM all_users()", [(c, {U(c)}, D) for c in ("id", "name", "ssn", "email", "card")]),
    ("SELECT who, tin FROM pairs()", [("who", {U("name")}, D), ("tin", {U("ssn")}, D)]),
    ("SELECT user_ssn(1)", [("user_ssn", {U("ssn")}, X)]),
    ("SELECT * FROM starts('1')", [("starts", {U("id")}, D)]),
    ("SELECT * FROM hr_ssn()", [("hr_ssn", {Source("hr", "users", "ssn")}, D)]),  # its own search_path
    ("SELECT t.ssn FROM pl_users() t", [("ssn", {U(c) for c in ("id", "name", "ssn", "email", "card")}, Q)]),
    ("SELECT pl_secret(1)", [("pl_secret", {U(c) for c in ("id", "name", "ssn", "email", "card")}, Q)]),
    ("INSERT INTO users (id) VALUES (9) RETURNING ssn, id", [("ssn", {U("ssn")}, D), ("id", {U("id")}, D)]),
    ("UPDATE users SET name = 'x' WHERE id = 1 RETURNING name", [("name", {U("name")}, D)]),
    ("DELETE FROM orders o USING users u WHERE u.id = o.user_id RETURNING u.ssn", [("ssn", {U("ssn")}, D)]),
    ("COPY users TO STDOUT", [(c, {U(c)}, D) for c in ("id", "name", "ssn", "email", "card")]),
    ("COPY users (ssn, id) TO STDOUT", [("ssn", {U("ssn")}, D), ("id", {U("id")}, D)]),
    ("COPY (SELECT lower(ssn) FROM users) TO STDOUT", [("lower", {U("ssn")}, X)]),
    ("SHOW work_mem", [("work_mem", set(), X)]),
    ("EXPLAIN SELECT ssn FROM users", [("QUERY PLAN", set(), X)]),
]


@pytest.mark.parametrize("sql, expected", CASES, ids=[c[0][:60] for c in CASES])
def test_outputs(ctx, conn, sql, expected):
    lineage = one(sql, ctx)
    assert shape(lineage) == expected
    if sql.startswith(("SELECT", "WITH")):  # the server names the outputs the same
        with conn.cursor() as cur:
            cur.execute(sql)
            assert [c.name for c in cur.description] == [o.name for o in lineage.outputs]


@pytest.mark.parametrize("sql, clauses", [
    ("INSERT INTO orders (note) SELECT ssn FROM users", {("ssn", "write")}),
    ("INSERT INTO orders (id, note) VALUES (1, 'x') ON CONFLICT DO NOTHING", set()),
    ("MERGE INTO orders o USING users u ON u.id = o.user_id WHEN MATCHED AND u.ssn > '5' THEN "
     "UPDATE SET note = u.email", {("id", "JOIN"), ("user_id", "JOIN"), ("ssn", "WHERE"), ("email", "write")}),
    ("SELECT DISTINCT ssn FROM users", {("ssn", "DISTINCT")}),
    ("SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM users", {("ssn", "FILTER")}),
])
def test_writes_and_other_oracles(ctx, sql, clauses):
    lineage = one(sql, ctx)
    assert {(o.source.column, o.clause) for o in lineage.oracles} == clauses
    if not sql.startswith("SELECT"):
        assert lineage.outputs is None


def test_reads_include_what_views_filter_on(ctx):
    assert one("SELECT ident FROM v_nested", ctx).reads == {U("id"), U("ssn"), U("name")}


def test_a_dropped_column_keeps_the_attnums(ctx):
    (rel,) = [r for r in ctx.catalog.relations_named("users") if r.schema == "public"]
    assert ctx.catalog.column(rel.oid, 4).name == "ssn" and ctx.catalog.column(rel.oid, 2) is None


@pytest.mark.parametrize("sql, clauses", [
    ("SELECT id FROM users WHERE ssn LIKE '1%'", {("ssn", "WHERE")}),
    ("SELECT o.id FROM orders o JOIN users u ON u.ssn = o.note", {("ssn", "JOIN"), ("note", "JOIN")}),
    ("SELECT id FROM users ORDER BY ssn", {("ssn", "ORDER BY")}),
    ("SELECT id FROM users ORDER BY 1", {("id", "ORDER BY")}),
    ("SELECT count(*) FROM users GROUP BY ssn", {("ssn", "GROUP BY")}),
    ("SELECT DISTINCT ON (ssn) id FROM users", {("ssn", "DISTINCT")}),
    ("SELECT count(DISTINCT ssn), min(card) FROM users", {("ssn", "aggregate"), ("card", "aggregate")}),
    ("SELECT name FROM users GROUP BY name HAVING max(ssn) > '5'",
     {("name", "GROUP BY"), ("ssn", "HAVING"), ("ssn", "aggregate")}),
    ("SELECT rank() OVER (PARTITION BY email ORDER BY ssn) FROM users", {("email", "window"), ("ssn", "window")}),
    ("SELECT id FROM orders WHERE EXISTS (SELECT 1 FROM users WHERE ssn LIKE '1%')", {("ssn", "WHERE")}),
    ("SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM users", {("ssn", "CASE")}),
    ("SELECT id FROM users LIMIT (SELECT length(ssn) FROM users LIMIT 1)", {("ssn", "LIMIT")}),
    ("DELETE FROM users WHERE ssn LIKE '1%' RETURNING id", {("ssn", "WHERE")}),
    ("UPDATE orders SET note = u.ssn FROM users u WHERE u.id = orders.user_id",
     {("ssn", "write"), ("id", "WHERE"), ("user_id", "WHERE")}),
    ("SELECT * FROM starts('1')", {("ssn", "WHERE")}),  # the caller's argument steers the body's filter
    ("SELECT 1 FROM users u, generate_series(1, ascii(u.ssn))", {("ssn", "rows")}),
    ("SELECT generate_series(1, length(ssn)) FROM users", {("ssn", "rows")}),
    # A set-returning function over a structure the statement fixes counts no value ...
    ("SELECT k FROM users u, json_object_keys(row_to_json(u)) k", set()),
    ("SELECT * FROM jsonb_each_text((SELECT to_jsonb(u) FROM users u WHERE id = 1))", {("id", "WHERE")}),
    ("SELECT unnest(ARRAY[ssn, email]), unnest(ARRAY[ARRAY[card], ARRAY[name]]) FROM users", set()),
    ("SELECT * FROM users, jsonb_each(jsonb_build_object('s', ssn, 'e', email))", set()),
    # ... but over one the value shapes, it counts what the value holds.
    ("SELECT * FROM users, jsonb_array_elements(ssn::jsonb)", {("ssn", "rows")}),
    ("SELECT * FROM users, jsonb_each(to_jsonb(ssn))", {("ssn", "rows")}),
    ("SELECT k FROM users, jsonb_object_keys(jsonb_build_object(ssn, 1)) k", {("ssn", "rows")}),
    ("SELECT regexp_split_to_table(ssn, '-') FROM users", {("ssn", "rows")}),
    ("SELECT unnest(string_to_array(ssn, '-')) FROM users", {("ssn", "rows")}),
    ("SELECT unnest(ARRAY[string_to_array(ssn, '-'), ARRAY[name]]) FROM users", {("ssn", "rows")}),
    # a view's own filter is the reader's too: a view is a query the reader runs, and one an agent
    # made could filter on a masked value (WHERE substr(ssn, i, 1) = d: a red team, 2026-12-06)
    ("SELECT tin FROM v_nested", {("name", "WHERE")}),
    ("SELECT ssn FROM users UNION SELECT '1'", {("ssn", "set operation")}),
    ("SELECT ssn FROM users INTERSECT ALL SELECT '1'", {("ssn", "set operation")}),
    ("SELECT ssn FROM users UNION ALL SELECT '1'", set()),
    # run, it shows the sizes of what it computed and which nodes ran: every column it reads too
    ("EXPLAIN ANALYZE SELECT id FROM users WHERE ssn = '1'",
     {("ssn", "WHERE"), ("id", "EXPLAIN ANALYZE"), ("ssn", "EXPLAIN ANALYZE")}),
    ("EXPLAIN SELECT id FROM users WHERE ssn = '1'", {("ssn", "WHERE")}),
])
def test_oracles(ctx, sql, clauses):
    assert {(o.source.column, o.clause) for o in one(sql, ctx).oracles} == clauses


@pytest.mark.parametrize("sql", [
    "SELECT * FROM computed('ssn') AS t(x text)",
    "SELECT query_to_xml('select ssn from users', true, true, '')",
    "SELECT * FROM no_such_table",
    "CALL no_such_procedure()",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM users LIMIT 1); END $$",
])
def test_what_cannot_be_traced_is_opaque(ctx, sql):
    lineage = one(sql, ctx)
    assert lineage.reads is None
    assert lineage.opaque or all(o.opaque for o in lineage.outputs)


def test_a_plpgsql_body_is_opaque_over_every_column_it_reads(ctx):
    lineage = one("SELECT * FROM anything() AS t(x text)", ctx)
    assert shape(lineage) == [("x", {U(c) for c in ("id", "name", "ssn", "email", "card")}, Q)]
    assert U("ssn") in lineage.reads


def test_prepare_execute_and_cursors_in_a_session(ctx):
    named = NamedLineage()
    statements = lineage_of(
        "PREPARE p AS SELECT ssn FROM users; DECLARE c CURSOR FOR SELECT name FROM users;"
        "EXECUTE p; FETCH ALL FROM c; CLOSE c; FETCH 1 FROM c; DEALLOCATE p; EXECUTE p", ctx)
    seen = []
    for lineage in statements:
        seen.append(named.resolve(lineage))
        named.after(lineage)
    assert shape(seen[2]) == [("ssn", {U("ssn")}, D)] and shape(seen[3]) == [("name", {U("name")}, D)]
    assert seen[5].opaque and seen[7].opaque  # closed, deallocated: not known any more


def test_statement_lineage_is_cached_per_text_and_context(ctx):
    cache = StatementCache()
    first = cache.get("SELECT ssn FROM users", ctx).lineage
    assert cache.get("SELECT ssn FROM users", ctx).lineage is first
    assert shape(first[0]) == [("ssn", {U("ssn")}, D)]


def test_the_search_path_decides_which_table(ctx):
    import attrs

    hr = attrs.evolve(ctx, search_path=("hr", "public"))
    assert shape(one('SELECT ssn FROM "Staff"', hr)) == [("ssn", {Source("hr", "Staff", "ssn")}, D)]
    assert one("SELECT ssn FROM users", hr).outputs[0].sources == {Source("hr", "users", "ssn")}
    assert one("SELECT ssn FROM users", ctx).outputs[0].sources == {U("ssn")}


def test_after_a_statement_of_the_same_string_any_schema_may_be_on_the_path(ctx):
    _, after = lineage_of("SET search_path = hr; SELECT ssn FROM users", ctx)
    assert shape(after) == [("ssn", {Source("hr", "users", "ssn"), U("ssn")}, D)]
    _, after = lineage_of("SELECT 1; SELECT * FROM users", ctx)
    assert after.opaque or len(after.outputs) >= 2  # public.users or hr.users: not one table's columns alone


def test_system_columns_hold_no_columns_value(ctx):
    assert shape(one("SELECT ctid, u.xmin, tableoid FROM users u", ctx)) == [
        ("ctid", set(), X), ("xmin", set(), X), ("tableoid", set(), X)]


def test_oracle_use_names_the_source(ctx):
    assert OracleUse(U("ssn"), "WHERE") in one("SELECT 1 FROM users WHERE ssn = '1'", ctx).oracles


def test_explain_with_a_dsn_resolves_against_the_live_catalog(pg_server, ctx, tmp_path):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: {host: 127.0.0.1, port: 6432}\n"
                   "upstream: {host: db, database: appdb, user: app, password_file: /run/secrets/pw}\n"
                   "auth: {jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}}\n"
                   "policies: [{name: agents, rules: []}]\n")
    dsn = pg_server.dsn(APP_USER, APP_PASSWORD, DB)
    def run(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pgwarden", "explain", "-c", str(cfg), "--subject", "a", *a],
                              capture_output=True, text=True, check=False)

    out = run("--dsn", dsn, "--json", "SELECT * FROM v_nested WHERE tin LIKE '1%'")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["catalog"] == "live"
    (lineage,) = result["lineage"]
    assert lineage["outputs"] == [{"name": "ident", "sources": ["public.users.id"], "lineage": "direct"},
                                  {"name": "tin", "sources": ["public.users.ssn"], "lineage": "direct"}]
    assert sorted(lineage["oracles"], key=str) == [{"source": "public.users.name", "clause": "WHERE"},  # (the view's)
                                                   {"source": "public.users.ssn", "clause": "WHERE"}]
    text = run("--dsn", dsn, "SELECT upper(tin) FROM v_nested")
    assert "  upper <- public.users.ssn (derived)" in text.stdout
    # without the database, v_nested is not known: opaque
    offline = json.loads(run("--json", "SELECT * FROM v_nested").stdout)
    assert offline["lineage"][0]["opaque"] and offline["catalog"].startswith("snapshot")
    bad = run("--dsn", dsn.replace(APP_PASSWORD, "wrong-Secret-pw"), "SELECT 1")
    assert bad.returncode == 2 and "cannot read the catalog" in bad.stderr and "wrong-Secret-pw" not in bad.stderr


def test_a_view_whose_kept_definition_names_a_renamed_table_is_opaque(pg_server, ctx):
    from pgwarden.catalog.loader import ViewDependencies

    views = ViewDependencies()
    pg_server.psql(f"SET ROLE {APP_USER}; CREATE TABLE before_t (id int, secret text);"
                   "CREATE VIEW over_t AS SELECT secret FROM before_t", database=DB)
    try:
        with psycopg.connect(pg_server.dsn(APP_USER, APP_PASSWORD, DB), autocommit=True) as conn:
            first = SqlContext(build_catalog(read_rows(conn, views=views), source="live", complete=True))
            assert shape(one("SELECT * FROM over_t", first)) == [
                ("secret", {Source("public", "before_t", "secret")}, D)]
            conn.execute("ALTER TABLE before_t RENAME TO after_t")  # the view's rule is not rewritten
            later = SqlContext(build_catalog(read_rows(conn, views=views), source="live", complete=True))
            assert views.last_read == 0  # the definition text was kept: it still says before_t
            lineage = one("SELECT * FROM over_t", later)
            assert lineage.opaque and lineage.reads is None
    finally:
        pg_server.psql(f"SET ROLE {APP_USER}; DROP VIEW IF EXISTS over_t; DROP TABLE IF EXISTS after_t, before_t",
                       database=DB)


def test_another_sessions_temporary_table_does_not_hide_the_real_one(pg_server, ctx):
    with psycopg.connect(pg_server.dsn(APP_USER, APP_PASSWORD, DB), autocommit=True) as other, \
            psycopg.connect(pg_server.dsn(APP_USER, APP_PASSWORD, DB), autocommit=True) as conn:
        other.execute("CREATE TEMP TABLE users (ssn text, id int)")
        catalog = build_catalog(read_rows(conn), source="live", complete=True)
        lineage = one("SELECT ssn FROM users", SqlContext(catalog, user=APP_USER))
        assert U("ssn") in lineage.outputs[0].sources  # pg_temp.users.ssn too: which one is not known


def test_explain_with_a_dsn_says_what_is_masked_through_views_and_functions(pg_server, ctx, tmp_path):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: {host: 127.0.0.1, port: 6432}\n"
                   "upstream: {host: db, database: appdb, user: app, password_file: /run/secrets/pw}\n"
                   "auth: {jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}}\n"
                   "policies: [{name: agents, rules: [{name: pii, mask: {columns: [public.users.ssn], "
                   "with: partial, keep_last: 2}}]}]\n")
    dsn = pg_server.dsn(APP_USER, APP_PASSWORD, DB)

    def run(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pgwarden", "explain", "-c", str(cfg), "--subject", "a",
                               "--dsn", dsn, *a], capture_output=True, text=True, check=False)

    out = run("SELECT ident, tin, user_ssn(ident) AS again FROM v_nested")
    assert out.returncode == 0, out.stderr
    assert "masks      2 of 3 output(s) masked\n" in out.stdout
    assert "  tin: partial by agents/pii (source public.users.ssn)\n" in out.stdout
    assert "  again: redact (masked whole) by agents/pii (source public.users.ssn)\n" in out.stdout
    refused = json.loads(run("--json", "SELECT id FROM users WHERE ssn = '1'").stdout)
    assert refused["masking_refusals"] == [{"plugin": "mask", "policy": "agents", "rule": "pii",
                                           "reason": "masked column public.users.ssn used in WHERE"}]
    assert refused["masks"] == [{"outputs": [{"output": "id", "rule": None, "strategy": None, "source": None,
                                              "whole": False}], "refused": None}]


# Outputs' names as the server gives them (FigureColname): an outer query selects a sub-select's
# column by its name, joins USING or NATURAL by them, sorts by them; a name lineage gives otherwise
# is another column (red team five read ssn in clear through each of these). Compared with the
# server's own names for the same statement.
NAMED = [
    "SELECT 'x'::text, 1::int, CAST('a' AS varchar), (u.*)::text, CASE WHEN true THEN 1 ELSE u.id END FROM users u",
    "SELECT (SELECT * FROM (SELECT 1 AS x) s), (SELECT 1 AS y UNION SELECT 1), (VALUES (1)), (z.*)::text, "
    "ARRAY[1]::int[], CASE WHEN true THEN 1 ELSE z.k END, (z).k, (SELECT ARRAY[z.k])[1] FROM (SELECT 1 AS k) z",
    "SELECT (t).a[1], (ts_debug('a')).lexemes[1], (t).a, t.a[1] FROM (SELECT ARRAY['x'] AS a) t",
    "SELECT (SELECT 1)::text, (CASE WHEN true THEN 1 END)::text, 1::integer, x::int, x::int::text, "
    "(x)::bigint FROM (SELECT 1 AS x) q",
    "SELECT CASE WHEN true THEN 'a' ELSE name::text END, CASE WHEN true THEN 'a' ELSE 1::text END, "
    "CASE WHEN true THEN 1 END, nullif(1, 2), coalesce(name, ''), greatest(1, 2), row(1), ARRAY[1], "
    "EXISTS (SELECT 1), ARRAY(SELECT 1), (SELECT name FROM users LIMIT 1), current_user, "
    "'a' COLLATE \"C\", (name)::varchar(3), 1 + 1, -id, id IS NULL, grouping(id) FROM users GROUP BY id, name",
    "SELECT (SELECT u FROM users u LIMIT 1), (SELECT * FROM (SELECT 1 AS q) s2), "
    "(SELECT o.* FROM (SELECT 2 AS r) o), (SELECT v FROM (VALUES (1)) v LIMIT 1)",
    "SELECT xmlelement(name a), xmlconcat('<a/>'), xmlforest(1 AS a), xmlserialize(CONTENT '<a/>' AS text), "
    "'<a/>'::xml IS DOCUMENT, localtimestamp, current_date, session_user",
    "SELECT * FROM ROWS FROM (jsonb_array_elements('[1]'), generate_series(1, 2))",
    "SELECT jsonb_array_elements.* FROM ROWS FROM (jsonb_array_elements('[1]'), generate_series(1, 2))",
    "SELECT * FROM generate_series(1, 2) g, jsonb_array_elements_text('[1]') WITH ORDINALITY",
    "SELECT user, current_user, session_user, current_role, current_catalog, current_schema, "
    "('<a/>'::xml IS DOCUMENT)::text, (SELECT 1 AS \"*\"), (SELECT * FROM (SELECT 2 AS \"*\") q)",
]


@pytest.mark.parametrize("sql", NAMED)
def test_output_names_are_the_servers(ctx, conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        server = [d.name for d in cur.description]
    assert [o.name for o in one(sql, ctx).outputs] == server
