"""A hostile corpus, end to end: what an agent trying to get around its policy would send.

Grouped by the causes of issue 15 (function calls without call syntax, catalog
knowledge, the statement cache, names and search_path, missing WHERE, depth,
bodies, false alarms), plus objects of the database's own that only the live
catalog knows: a volatile SQL function that deletes, an operator whose function
writes, views over pg_read_file and over a volatile function, SECURITY DEFINER
functions, a cast and an aggregate whose functions write, a procedure.

Every case runs through one pgwarden over both protocols (a simple Query, and
Parse/Bind/Describe/Execute/Sync), each in a new session, after its set-up
statements. A refusal is not taken at its word: the server's state (row counts
and sums, a table that must survive, a sequence, large objects, replication
slots and origins, statistics resets, ACLs, roles, prepared transactions,
postgresql.auto.conf, a marker file a program would create, another backend
that must stay alive) is read on a direct connection before and after, and must
be unchanged; a refused statement must not have sent a single row.

A case that fails because the analysis is wrong is marked ``xfail(strict=True)``
with what the analysis says: the list for whoever fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import psycopg
import pytest
from rawclient import RawClient

from pgwarden import hookimpl
from pgwarden.testing.matrix import protocols_of
from pgwarden.testing.postgres import APP_USER
from pgwarden.wire import messages as m

DB = "hostile"
MARKER = Path(f"/tmp/pgwarden-hostile-{os.getpid()}-pwned")

# Block rules like those of `pgwarden demo`'s policy, with the new kinds;
# the table rule also covers the schema named after the upstream role (what "$user" on the default
# search_path stands for).
DESIGN = {
    "name": "agents",
    "when": {"groups": ["ai-agents"]},
    "rules": [
        {"name": "no-ddl", "block": {"statements": [
            "ddl", "truncate", "grant", "role", "system", "side_effect", "server_files", "copy_program",
            "copy_file", "unknown"]}},
        {"name": "no-files", "block": {"functions": ["pg_read_file", "lo_export", "dblink"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "secrets", "block": {"tables": ["secret.*", "app.*"]}},
    ],
}
# Every write refused, by naming what writes.
NO_WRITES = {
    "name": "no-writes",
    "when": {"groups": ["no-writes"]},
    "rules": [
        {"name": "writes", "block": {"statements": [
            "insert", "update", "delete", "merge", "truncate", "copy_from", "ddl", "grant", "role", "system",
            "side_effect", "server_files", "copy_program", "copy_file", "unknown"]}},
    ],
}
# Every write refused, by allowing only reads (default: block).
READ_ONLY = {
    "name": "read-only",
    "when": {"groups": ["read-only"]},
    "default": "block",
    "rules": [{"name": "reads", "allow": {"statements": ["select", "show", "set", "explain", "transaction"]}}],
}
# DDL allowed (a migration tool's identity), so functions can be created and called in one string.
MIGRATORS = {
    "name": "migrators",
    "when": {"groups": ["migrators"]},
    "rules": [
        {"name": "no-admin", "block": {"statements": [
            "truncate", "grant", "role", "system", "side_effect", "server_files", "copy_program", "copy_file",
            "unknown"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "secrets", "block": {"tables": ["secret.*"]}},
    ],
}
# Functions created and called (volatile ones too): what they do is judged by their bodies.
BODIES = {
    "name": "bodies",
    "when": {"groups": ["bodies"]},
    "rules": [
        {"name": "no-admin", "block": {"statements": [
            "truncate", "grant", "role", "system", "server_files", "copy_program", "copy_file", "unknown"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "secrets", "block": {"tables": ["secret.*"]}},
        {"name": "no-files", "block": {"functions": ["pg_read_file"]}},
    ],
}
# `where: absent` with the server counting what a write touched: the tautologies no syntax check
# sees (a column's NOT NULL, a self-join) are rolled back by the count.
CAPPED = {
    "name": "capped",
    "when": {"groups": ["capped"]},
    "rules": [
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "small-writes", "limit": {"rows_written": 2}},
    ],
}
# TRUNCATE allowed, the secret schema not.
TRUNCATORS = {"name": "truncators", "when": {"groups": ["truncators"]},
              "rules": [{"name": "secrets", "block": {"tables": ["secret.*"]}}]}
POLICIES = [DESIGN, NO_WRITES, READ_ONLY, MIGRATORS, BODIES, CAPPED, TRUNCATORS]
GROUPS = {"design": "ai-agents", "nowrite": "no-writes", "readonly": "read-only", "migrators": "migrators",
          "bodies": "bodies", "capped": "capped", "truncators": "truncators"}

# What the database's owner created: objects only the live catalog knows.
SETUP = """
CREATE EXTENSION dblink;
CREATE EXTENSION tablefunc;
CREATE SCHEMA secret;
CREATE SCHEMA app;
CREATE TABLE public.things (id int PRIMARY KEY, n int);
CREATE INDEX things_brin ON public.things USING brin (n);
CREATE TABLE secret.things (id int PRIMARY KEY, n int);
CREATE TABLE app.notes (id int, n int);
INSERT INTO app.notes VALUES (1, 7);
CREATE SEQUENCE public.s;
CREATE FUNCTION public.purge() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d $$;
CREATE FUNCTION public.bump(int) RETURNS int LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN UPDATE public.things SET n = n + 1; RETURN $1; END $$;
CREATE FUNCTION public.harmless(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';
CREATE FUNCTION public.plus_one(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN $1 + 1; END';
CREATE FUNCTION public.count_things() RETURNS bigint LANGUAGE plpgsql STABLE
    AS 'BEGIN RETURN (SELECT count(*) FROM public.things); END';
CREATE FUNCTION public.op_purge(int, int) RETURNS boolean LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT true $$;
CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.op_purge);
CREATE VIEW public.file_peek AS SELECT pg_read_file('/etc/hostname') AS f;
CREATE VIEW public.purging AS SELECT public.purge() AS n;
CREATE VIEW public.leak AS SELECT * FROM secret.things;
CREATE FUNCTION public.peek_secret() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER
    AS 'SELECT sum(n) FROM secret.things';
CREATE FUNCTION public.stable_purge() RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER
    AS 'BEGIN RETURN public.purge(); END';
CREATE FUNCTION public.liar() RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT public.purge()';
CREATE TYPE public.ticket AS (id int);
CREATE FUNCTION public.to_ticket(int) RETURNS public.ticket LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT row($1)::public.ticket $$;
CREATE CAST (int AS public.ticket) WITH FUNCTION public.to_ticket(int);
CREATE DOMAIN public.checked AS int CHECK (public.purge() >= 0);
CREATE TABLE public.guarded (c public.checked);
CREATE TYPE public.stamp AS (n int);
CREATE FUNCTION public.to_stamp(int) RETURNS public.stamp LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT row($1)::public.stamp $$;
CREATE CAST (int AS public.stamp) WITH FUNCTION public.to_stamp(int) AS ASSIGNMENT;
CREATE TABLE public.stamps (s public.stamp);
CREATE FUNCTION public.purge_step(int, int) RETURNS int LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT 1 $$;
CREATE AGGREGATE public.agg_purge(int) (SFUNC = public.purge_step, STYPE = int);
CREATE PROCEDURE public.proc_purge() LANGUAGE sql AS $$ DELETE FROM public.things $$;
CREATE FUNCTION public.neg_purge(text) RETURNS int LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM public.things RETURNING 1) SELECT 0 $$;
CREATE OPERATOR public.- (RIGHTARG = text, FUNCTION = public.neg_purge);
"""
# Objects the upstream role owns, so an agent's session may make casts and operators of them, add a
# CHECK to a domain, replace a cast's or an operator's function: in an open transaction, the
# catalog pgwarden read shows none of it until the commit.
OWNED = f"""
CREATE TYPE public.fresh AS (n int);
CREATE FUNCTION public.mk_fresh(int) RETURNS public.fresh LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT row($1)::public.fresh $$;
CREATE FUNCTION public.fresh_text(public.fresh) RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
CREATE TABLE public.fresh_rows (f public.fresh);
INSERT INTO public.fresh_rows VALUES (row(1));
CREATE DOMAIN public.plain AS int CHECK (VALUE > 0);
CREATE TYPE public.token AS (n int);
CREATE FUNCTION public.to_token(int) RETURNS public.token LANGUAGE sql IMMUTABLE AS 'SELECT row($1)::public.token';
CREATE CAST (int AS public.token) WITH FUNCTION public.to_token(int);
CREATE FUNCTION public.op_same(int, int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = public.op_same);
CREATE TABLE public.audited (id int);
CREATE FUNCTION public.audit_wipe() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN DELETE FROM secret.things; RETURN NULL; END $$;
CREATE TRIGGER audited_wipe AFTER INSERT OR UPDATE OR DELETE ON public.audited
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_wipe();
CREATE TABLE public.ruled (id int);
CREATE RULE ruled_wipe AS ON INSERT TO public.ruled DO ALSO DELETE FROM secret.things;
CREATE FUNCTION public.default_wipe() RETURNS int LANGUAGE sql
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 1 $$;
CREATE TABLE public.defaulted (id int, d int DEFAULT public.default_wipe());
CREATE TABLE public.parents (id int PRIMARY KEY);
CREATE TABLE secret.children (id int REFERENCES public.parents ON DELETE CASCADE);
CREATE TABLE public.kin (id int PRIMARY KEY);
CREATE TABLE secret.kin_notes (id int REFERENCES public.kin);
INSERT INTO public.kin VALUES (1); INSERT INTO secret.kin_notes VALUES (1);
CREATE TABLE public.stamped (id int, at timestamptz DEFAULT now(), n serial);
CREATE FUNCTION public.trig_ok() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TABLE public.suppressed (id int);
CREATE TRIGGER suppressed_same BEFORE UPDATE ON public.suppressed
    FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
CREATE EXTENSION "uuid-ossp";
CREATE EXTENSION lo;
CREATE EXTENSION pgcrypto;
CREATE TABLE public.keyed (id uuid DEFAULT uuid_generate_v4(), salt bytea DEFAULT gen_random_bytes(8), n int);
CREATE TABLE public.images (id int, raster lo);
CREATE TRIGGER images_lo BEFORE UPDATE OR DELETE ON public.images FOR EACH ROW EXECUTE FUNCTION lo_manage(raster);
CREATE VIEW public.audited_v AS SELECT * FROM public.audited;
CREATE TABLE public.family (id int, n int);
CREATE TABLE secret.heirs () INHERITS (public.family);
INSERT INTO secret.heirs VALUES (1, 1001);
CREATE TABLE public.logged (id int);
CREATE TABLE public.log (id int, at timestamptz);
CREATE FUNCTION public.log_it() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN INSERT INTO public.log VALUES (NEW.id, now()); RETURN NEW; END $$;
CREATE TRIGGER logged_log AFTER INSERT ON public.logged FOR EACH ROW EXECUTE FUNCTION public.log_it();
ALTER TYPE public.fresh OWNER TO {APP_USER};
ALTER FUNCTION public.mk_fresh(int) OWNER TO {APP_USER};
ALTER FUNCTION public.fresh_text(public.fresh) OWNER TO {APP_USER};
ALTER TABLE public.fresh_rows OWNER TO {APP_USER};
ALTER DOMAIN public.plain OWNER TO {APP_USER};
ALTER TYPE public.token OWNER TO {APP_USER};
ALTER FUNCTION public.to_token(int) OWNER TO {APP_USER};
ALTER FUNCTION public.op_same(int, int) OWNER TO {APP_USER};
CREATE FUNCTION public.helper_ok() RETURNS int LANGUAGE sql AS 'SELECT 1';
ALTER FUNCTION public.helper_ok() OWNER TO {APP_USER};
CREATE FUNCTION public.trig_calls() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM public.helper_ok(); RETURN NULL; END $$;
ALTER OPERATOR public.=== (int, int) OWNER TO {APP_USER};
-- what a row stored or a maintenance statement runs besides defaults and triggers (red team,
-- 2026-12-06): a CHECK constraint, an expression index, a partial index's predicate; the function
-- deletes only when the case's session arms it (SET hostile.armed = on), so the set-up does not
CREATE FUNCTION public.wipe_if_armed() RETURNS boolean LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things WHERE current_setting('hostile.armed', true) = 'on'
                     RETURNING 1) SELECT true $$;
CREATE TABLE public.checked_t (a int CHECK (public.wipe_if_armed()));
CREATE FUNCTION public.idx_f(int) RETURNS int LANGUAGE sql IMMUTABLE
    AS 'SELECT $1 + CASE WHEN public.wipe_if_armed() THEN 0 ELSE 0 END';
CREATE TABLE public.indexed (a int);
INSERT INTO public.indexed VALUES (1);
CREATE INDEX indexed_expr ON public.indexed ((public.idx_f(a)));
CREATE FUNCTION public.idx_p(int) RETURNS boolean LANGUAGE sql IMMUTABLE
    AS 'SELECT $1 > 0 AND public.wipe_if_armed()';
CREATE TABLE public.partial_t (a int);
CREATE INDEX partial_idx ON public.partial_t (a) WHERE public.idx_p(a);
ALTER TABLE public.checked_t OWNER TO {APP_USER};
ALTER TABLE public.indexed OWNER TO {APP_USER};
ALTER TABLE public.partial_t OWNER TO {APP_USER};
-- foreign tables of file_fdw: a server file, a program
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE public.host_file (line text) SERVER files OPTIONS (filename '/etc/hostname', format 'text');
CREATE FOREIGN TABLE public.host_prog (line text) SERVER files OPTIONS (program 'touch {MARKER}; echo hi');
GRANT SELECT ON public.host_file, public.host_prog TO {APP_USER};
-- (round two) extended statistics' expressions, run by ANALYZE; a domain's default; a trigger's WHEN
CREATE FUNCTION public.st_f(int) RETURNS int LANGUAGE sql IMMUTABLE
    AS 'SELECT $1 + CASE WHEN public.wipe_if_armed() THEN 0 ELSE 0 END';
CREATE TABLE public.statted (a int);
INSERT INTO public.statted VALUES (1), (2);
CREATE STATISTICS public.statted_s ON (public.st_f(a)), a FROM public.statted;
ALTER TABLE public.statted OWNER TO {APP_USER};
CREATE DOMAIN public.wiping AS int DEFAULT (CASE WHEN public.wipe_if_armed() THEN 1 ELSE 1 END);
CREATE TABLE public.dom_t (id int, w public.wiping);
ALTER TABLE public.dom_t OWNER TO {APP_USER};
CREATE TABLE public.when_t (id int);
CREATE TRIGGER when_t_trg BEFORE INSERT ON public.when_t FOR EACH ROW WHEN (public.wipe_if_armed())
    EXECUTE FUNCTION public.trig_ok();
ALTER TABLE public.when_t OWNER TO {APP_USER};
CREATE SEQUENCE secret.counter;
SELECT setval('secret.counter', 4242);
GRANT SELECT ON secret.counter TO {APP_USER};
-- (round three) a plain table to COPY into; functions named like the SQL/JSON syntax and MERGE's
-- support function of PostgreSQL 16-18 (plain calls on a server without those keywords)
CREATE TABLE public.plain_t (id int);
ALTER TABLE public.plain_t OWNER TO {APP_USER};
CREATE FUNCTION public.json_value(text, text) RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
CREATE FUNCTION public.json_scalar(int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
CREATE FUNCTION public.json_array(int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
CREATE FUNCTION public.merge_action() RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
CREATE FUNCTION public.json_object(int, int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT 'x'::text $$;
-- (round four) an index expression calling a function declared IMMUTABLE that deletes when armed:
-- planning any statement on the table folds it
CREATE FUNCTION public.folded_liar() RETURNS int LANGUAGE sql IMMUTABLE
    AS 'SELECT CASE WHEN public.wipe_if_armed() THEN 0 ELSE 0 END';
CREATE TABLE public.idx_t (id int);
CREATE INDEX idx_t_liar ON public.idx_t ((public.folded_liar() + id));
ALTER TABLE public.idx_t OWNER TO {APP_USER};
-- ... and in a column's DEFAULT: a plain EXPLAIN of a write plans the default in, and folds it
CREATE TABLE public.dflt_t (id int, v int DEFAULT public.folded_liar());
ALTER TABLE public.dflt_t OWNER TO {APP_USER};
CREATE VIEW public.dflt_v AS SELECT id FROM public.dflt_t;
ALTER VIEW public.dflt_v OWNER TO {APP_USER};
"""
RESET = """
DELETE FROM public.plain_t;
DELETE FROM public.things; INSERT INTO public.things SELECT g, g FROM generate_series(1, 5) g;
DELETE FROM secret.things; INSERT INTO secret.things SELECT g, 1000 + g FROM generate_series(1, 3) g;
CREATE TABLE IF NOT EXISTS public.victim (a int);
SELECT setval('public.s', 1, false);
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin;
DROP FUNCTION IF EXISTS public.swap_h(), public.swap_k(), public.harmless(smallint);
DROP VIEW IF EXISTS public.unchecked_v;
DROP SCHEMA IF EXISTS shadowing CASCADE;
DELETE FROM secret.children; DELETE FROM public.parents; DELETE FROM secret.heirs;
INSERT INTO secret.heirs VALUES (1, 1001);
INSERT INTO public.parents VALUES (1); INSERT INTO secret.children VALUES (1);
DROP TRIGGER IF EXISTS victim_wipe ON public.victim;
DROP CAST IF EXISTS (int AS public.fresh);
DROP CAST IF EXISTS (public.fresh AS text);
DROP OPERATOR IF EXISTS public.<+> (int, int);
ALTER DOMAIN public.plain DROP CONSTRAINT IF EXISTS p2;
CREATE OR REPLACE FUNCTION public.to_token(int) RETURNS public.token LANGUAGE sql IMMUTABLE
    AS 'SELECT row($1)::public.token';
CREATE OR REPLACE FUNCTION public.trig_ok() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION public.helper_ok() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE OR REPLACE FUNCTION public.op_same(int, int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
"""
STATE = """
SELECT (SELECT count(*) FROM public.things) AS things,
       (SELECT sum(n) FROM public.things) AS things_sum,
       (SELECT count(*) FROM secret.things) AS secret_things,
       (SELECT count(*) FROM secret.children) AS secret_children,
       (SELECT count(*) FROM secret.heirs) AS secret_heirs,
       (SELECT count(*) FROM secret.kin_notes) AS secret_kin_notes,
       to_regclass('public.victim') IS NOT NULL AS victim_table,
       (SELECT last_value || '/' || is_called FROM public.s) AS sequence,
       (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
       (SELECT count(*) FROM pg_replication_slots) AS slots,
       (SELECT count(*) FROM pg_replication_origin) AS origins,
       (SELECT count(*) FROM pg_prepared_xacts) AS prepared_xacts,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) AS db_stats_reset,
       (SELECT stats_reset FROM pg_stat_bgwriter) AS bgwriter_stats_reset,
       (SELECT relacl::text FROM pg_class WHERE oid = 'public.things'::regclass) AS acl,
       (SELECT count(*) FROM pg_roles) AS roles,
       (SELECT count(*) FROM pg_collation WHERE collnamespace = 'public'::regnamespace) AS collations,
       (SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf') AS auto_conf
"""


@attrs.frozen
class Case:
    cause: str
    sql: str
    setup: tuple[str, ...] = ()
    policy: str = "design"
    allowed: bool = False
    changes: dict = attrs.field(factory=dict)  # for allowed writes: state fields and their new values
    probe: tuple[str, str] | None = None  # (SQL run in the same session afterwards, its expected value)
    xfail: str | None = None
    protocols: tuple[str, ...] = ("simple", "extended")


def refused(cause, sql, **kw) -> Case:
    return Case(cause, sql, **kw)


def allowed(cause, sql, **kw) -> Case:
    return Case(cause, sql, allowed=True, **kw)


SIMPLE = ("simple",)  # several statements in one string: the extended protocol takes only one
SECRET_PATH = ("SELECT set_config('search_path', 'secret', false)",)
# (in public, dropped by RESET: the live catalog does not read another session's pg_temp)
HARMLESS_H = "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'"
# replaced to write a blocked table (DDL is allowed in the bodies policy)
SWAP_SQL = ("CREATE OR REPLACE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql AS "
            "'WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT count(*) FROM d'")
SWAP_PLPGSQL = ("CREATE OR REPLACE FUNCTION public.swap_h() RETURNS bigint LANGUAGE plpgsql AS "
                "'BEGIN DELETE FROM secret.things; RETURN 1; END'")
SWAP_FILE = ("CREATE OR REPLACE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql AS "
             "'SELECT length(pg_read_file(''/etc/hostname''))::bigint'")
# filtered, so the bodies policy would let it write public.things: its `things` is read on the caller's path
FILTERED_K = ("CREATE FUNCTION public.swap_k() RETURNS bigint LANGUAGE sql AS "
              "'WITH d AS (DELETE FROM things WHERE id > 0 RETURNING 1) SELECT count(*) FROM d'")


def _nested(inner: str, depth: int) -> str:
    for i in range(depth):
        inner = f"SELECT * FROM ({inner}) AS s{i}"
    return inner


_PREPARED_TEXT = "PREPARE p(text) AS SELECT 1 WHERE $1 IS NOT NULL"

CASES = [
    # -------------------------------------- PL/pgSQL: an assignment read as the server reads it
    # (found by a red team on 2026-12-06: the expression was cut at the first ':=', even one
    # inside a dollar-quoted literal, and what came before it was never analysed)
    refused("plpgsql", "DO $d$ DECLARE x text; BEGIN x = pg_read_file($f$/etc/hostname$f$)::text || $a$:=$a$ || $a$y$a$; "
            "RAISE NOTICE '%', x; END $d$"),
    refused("plpgsql", "DO $d$ DECLARE x text; BEGIN x = (SELECT string_agg(n::text, $s$,$s$) FROM secret.things) "
            "|| $a$:=$a$ || $a$y$a$; RAISE NOTICE '%', x; END $d$"),
    refused("plpgsql", "DO $d$ DECLARE x text; BEGIN x = nextval($f$public.s$f$)::text || $a$:=$a$ || $a$y$a$; END $d$"),
    refused("plpgsql", "DO $d$ DECLARE x text; BEGIN x = public.purge()::text || $a$:=$a$ || $a$y$a$; "
            "END $d$", policy="nowrite"),
    refused("plpgsql", "DO $d$ DECLARE x int[]; BEGIN x[nextval($f$public.s$f$)] := 1; END $d$"),
    # ---------------------------------------------- writes of every row in other words (red team, 12-06)
    refused("where", "MERGE INTO things t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE"),
    refused("where", "MERGE INTO things t USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET n = 0"),
    refused("where", "INSERT INTO things SELECT id, 0 FROM things ON CONFLICT (id) DO UPDATE SET n = 0"),
    # an unqualified name that is not the table's column: a constant for every row
    refused("where", "DELETE FROM things USING (SELECT 1 AS x) s WHERE x = 1"),
    refused("where", "UPDATE things SET n = 0 FROM (VALUES (1)) AS v(k) WHERE k = 1"),
    refused("where", "DELETE FROM things USING pg_class WHERE relname = 'pg_class'"),
    refused("where", "DO $$ DECLARE k int := 1; BEGIN DELETE FROM things WHERE k = 1; END $$"),
    refused("where", "DO $$ #variable_conflict use_variable\nDECLARE n int := 1; BEGIN DELETE FROM things "
            "WHERE n = 1; END $$"),
    refused("where", "DELETE FROM things WHERE id = 3 OR NULL = NULL", setup=("SET transform_null_equals = on",)),
    # (round two) a block's label named like the table qualifies its variable, not the column
    refused("where", "DO $$ #variable_conflict use_variable\n<<things>> DECLARE id int := 1; BEGIN "
            "DELETE FROM things WHERE things.id = 1; END $$"),
    refused("where", "DO $$ #variable_conflict use_variable\n<<t>> DECLARE id int := 1; BEGIN "
            "UPDATE things t SET n = 0 WHERE t.id = 1; END $$"),
    refused("where", "DELETE FROM things WHERE (1 = 2) IS NOT TRUE"),
    # ------------------------------------ relations named by a function's argument (red team, 12-06)
    refused("named", "SELECT table_to_xml('secret.things'::regclass, true, false, '')"),
    refused("named", "SELECT table_to_xml_and_xmlschema('secret.things', true, false, '')"),
    refused("named", "SELECT table_to_xml('app.notes', true, false, '')"),
    refused("named", "SELECT table_to_xml('public.leak', true, false, '')"),
    refused("named", "SELECT table_to_xml('public.file_peek', true, false, '')"),
    refused("named", "SELECT table_to_xml('public.purging', true, false, '')", policy="nowrite"),
    refused("named", "SELECT table_to_xml(relname::regclass, true, false, '') FROM pg_class WHERE relname = 'leak'"),
    refused("named", "SELECT schema_to_xml('secret', true, false, '')"),
    refused("named", "SELECT schema_to_xml('public', true, false, '') IS NOT NULL", policy="nowrite"),
    refused("named", "SELECT database_to_xml(true, false, '') IS NOT NULL"),
    refused("named", "SELECT * FROM connectby('secret.things', 'id', 'n', '1', 0) AS t(id int, n int, level int)"),
    refused("named", "SELECT * FROM connectby('things', 'id', 'public.purge()', '1', 0) AS t(id int, n bigint, "
            "level int)", policy="nowrite"),
    allowed("named", "SELECT table_to_xml('things', true, false, '')"),
    refused("named", "SELECT table_to_xml(targetns => 'public.things', tbl => 'secret.things', nulls => true, "
            "tableforest => false)"),
    refused("named", "SELECT table_to_xml_and_xmlschema(targetns => '', tableforest => false, nulls => true, "
            "tbl => 'app.notes')"),
    # the planner's statistics hold every analysed table's values
    refused("named", "SELECT histogram_bounds::text FROM pg_stats WHERE schemaname = 'secret'",
            setup=("ANALYZE public.things",)),
    refused("named", "SELECT s.most_common_vals::text FROM pg_catalog.pg_stats AS s", setup=("ANALYZE public.things",)),
    # ---------------------------- what a row stored or a maintenance statement runs (red team, 12-06)
    refused("stored", "INSERT INTO checked_t VALUES (1)", setup=("SET hostile.armed = on",)),
    refused("stored", "INSERT INTO indexed VALUES (2)", setup=("SET hostile.armed = on",)),
    refused("stored", "INSERT INTO partial_t VALUES (1)", setup=("SET hostile.armed = on",)),
    refused("stored", "UPDATE checked_t SET a = 2 WHERE a = 1", setup=("SET hostile.armed = on",)),
    refused("stored", "ANALYZE public.indexed", policy="nowrite", setup=("SET hostile.armed = on",)),
    refused("stored", "REINDEX TABLE public.indexed", policy="nowrite", setup=("SET hostile.armed = on",)),
    refused("stored", "VACUUM FULL public.indexed", policy="nowrite", protocols=SIMPLE,
            setup=("SET hostile.armed = on",)),
    refused("stored", "ANALYZE", policy="nowrite", setup=("SET hostile.armed = on",)),
    refused("stored", "SELECT * FROM host_file"),
    refused("stored", "SELECT * FROM host_prog"),
    refused("stored", "SELECT * FROM host_prog", policy="nowrite"),
    refused("stored", "SELECT * FROM host_prog", policy="readonly"),
    allowed("stored", "ANALYZE public.things", policy="nowrite"),
    refused("stored", "ANALYZE public.statted", policy="nowrite", setup=("SET hostile.armed = on",)),
    refused("stored", "INSERT INTO dom_t (id) VALUES (1)", setup=("SET hostile.armed = on",)),
    refused("stored", "INSERT INTO when_t VALUES (1)", setup=("SET hostile.armed = on",)),
    refused("named", "SELECT pg_sequence_last_value('secret.counter')"),
    refused("named", "SELECT last_value FROM pg_sequences WHERE schemaname = 'secret'"),
    # a sequence named at run time may be any (pg_sequences' own call): every sequence is read
    # (session 30: it had been `unknown`, so `SELECT * FROM pg_sequences` was refused everywhere)
    refused("named", "SELECT pg_sequence_last_value(c.oid) FROM pg_class c WHERE c.relname = 'counter'"),
    refused("named", "SELECT pg_sequence_last_value(('secret.' || 'counter')::regclass)"),
    refused("named", "SELECT * FROM pg_sequences"),
    allowed("named", "SELECT pg_sequence_last_value(c.oid) FROM pg_class c WHERE c.relname = 's'",
            policy="capped"),
    allowed("named", "SELECT sequencename, last_value FROM pg_sequences", policy="capped"),
    refused("named", "SELECT sequencename, last_value FROM pg_sequences", policy="truncators"),
    # ---------------------------------------------------------------- 2: calls without call syntax
    refused("2", "SELECT ('/etc/passwd'::text).pg_read_file"),
    refused("2", "SELECT x.pg_read_file FROM (SELECT '/etc/passwd'::text AS x) AS q"),
    refused("2", "SELECT ({victim}).pg_terminate_backend"),
    refused("2", "SELECT ('public.s'::regclass).nextval"),
    refused("2", "SELECT ('DROP TABLE public.victim'::text).dblink_exec"),
    refused("2", "SELECT (0::oid).lo_create"),
    refused("2", "SELECT ('bgwriter'::text).pg_stat_reset_shared"),
    refused("2", "SELECT (5).bump"),
    refused("2", "SELECT x.bump FROM (SELECT 5 AS x) AS q"),
    refused("2", "SELECT 1 ### 2"),
    refused("2", "SELECT * FROM things WHERE id OPERATOR(public.###) 1"),
    refused("2", "SELECT 5::ticket"),
    refused("2", "SELECT CAST(5 AS public.ticket)"),
    refused("2", "SELECT ticket(5)"),  # no function of that name: a cast
    refused("2", "SELECT 5::ticket", policy="nowrite"),
    refused("2", "SELECT 5::checked"),
    refused("2", "SELECT '5'::checked", policy="readonly"),
    refused("2", "SELECT '{5}'::checked[]"),
    refused("2", "SELECT * FROM things WHERE n = 1::checked"),
    refused("2", "INSERT INTO guarded VALUES (1)"),  # a column of the domain: its CHECK runs
    refused("2", "INSERT INTO stamps VALUES (5)"),  # an assignment cast to the column's type
    refused("2", "ALTER TABLE public.things ALTER COLUMN n TYPE public.checked", policy="migrators"),
    refused("2", "DO $$ DECLARE x public.checked; BEGIN x := 6; END $$"),  # assigning a variable checks it
    refused("2", "PREPARE p(public.checked) AS SELECT $1"),  # EXECUTE p(5) would check
    allowed("2", "SELECT 5::int, 'x'::text, now()::date, '{1}'::int[], 1.5::numeric(4, 1)", policy="nowrite"),
    allowed("2", "SELECT count(*) FROM guarded, stamps", policy="nowrite"),
    refused("2", "SELECT agg_purge(id) FROM things"),
    refused("2", 'SELECT "pg_read_file"(\'/etc/passwd\')'),
    refused("2", "SELECT U&\"\\0070g_read_file\"('/etc/passwd')"),
    refused("2", "SELECT * FROM ROWS FROM (public.purge()) AS r(n)"),
    refused("2", "COPY (SELECT public.purge()) TO STDOUT"),
    refused("2", "EXPLAIN SELECT liar()"),
    # ---------------------------------------------------------------- user-defined objects (live catalog)
    refused("udf", "SELECT public.purge()"),
    refused("udf", "SELECT purge()", policy="nowrite"),
    refused("udf", "SELECT * FROM purging"),
    refused("udf", "SELECT * FROM purging", policy="nowrite"),
    refused("udf", "SELECT * FROM file_peek"),
    refused("udf", "SELECT * FROM leak"),
    refused("udf", "TABLE leak"),
    refused("udf", "SELECT l.n FROM public.leak AS l JOIN things USING (id)"),
    refused("udf", "SELECT stable_purge()"),
    refused("udf", "SELECT peek_secret()"),
    refused("udf", "CALL proc_purge()"),
    refused("udf", "CALL proc_purge()", policy="nowrite"),
    refused("udf", "SELECT 1 ### 2", policy="nowrite"),
    allowed("udf", "SELECT harmless(1)"),
    allowed("udf", "SELECT plus_one(1)"),
    allowed("udf", "SELECT count_things()"),
    # ---------------------------------------------------------------- 3: the catalog, not lists
    refused("3", "SELECT nextval('public.s')"),
    refused("3", "SELECT setval('public.s', 100)"),
    refused("3", "SELECT lo_create(0)"),
    refused("3", "SELECT lo_from_bytea(0, '\\x41')"),
    refused("3", "SELECT lo_import('/etc/passwd')"),
    refused("3", "SELECT pg_logical_emit_message(true, 'x', 'y')"),
    refused("3", "SELECT brin_summarize_new_values('public.things_brin'::regclass)"),
    refused("3", "SELECT pg_stat_reset()"),
    refused("3", "SELECT pg_stat_reset_shared('bgwriter')"),
    refused("3", "SELECT pg_create_physical_replication_slot('hostile_slot')"),
    refused("3", "SELECT pg_replication_origin_create('hostile_origin')"),
    refused("3", "SELECT pg_import_system_collations('public')"),
    refused("3", "SELECT pg_reload_conf()"),
    refused("3", "SELECT * FROM pg_file_settings"),
    refused("3", "SELECT * FROM pg_hba_file_rules"),
    refused("3", "SELECT * FROM pg_ls_logdir()"),
    refused("3", "SELECT * FROM pg_ls_waldir()"),
    refused("3", "SELECT pg_read_binary_file('/etc/passwd')"),
    refused("3", "SELECT * FROM pg_stat_file('/etc/passwd')"),
    refused("3", "SELECT * FROM ts_stat('DELETE FROM things RETURNING to_tsvector(n::text)')"),
    refused("3", "SELECT * FROM crosstab('DELETE FROM things RETURNING id, id, n') AS c(a int, b int, c int)"),
    refused("3", "SELECT query_to_xml('INSERT INTO things VALUES (9, 9) RETURNING 1', true, false, '')",
            policy="nowrite"),
    refused("3", "SET log_min_messages = debug5", probe=("SELECT current_setting('log_min_messages')", "warning")),
    refused("3", "SET log_min_error_statement = panic",
            probe=("SELECT current_setting('log_min_error_statement')", "error")),
    refused("3", "SET track_activities = off", probe=("SELECT current_setting('track_activities')", "on")),
    refused("3", "SELECT set_config('log_statement', 'none', false)"),
    refused("3", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
    refused("3", "START TRANSACTION READ WRITE"),
    refused("3", "DISCARD ALL"),
    refused("3", "PREPARE TRANSACTION 'hostile'", setup=("BEGIN", "INSERT INTO things VALUES (9, 9)"),
            protocols=SIMPLE),
    refused("3", "ALTER SYSTEM SET work_mem = '64MB'"),
    refused("3", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'"),
    refused("3", "COPY (SELECT 1) TO '{marker}'"),
    refused("3", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'", policy="nowrite"),
    refused("9", "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$"),
    allowed("3", "SELECT random(), clock_timestamp(), pg_sleep(0), now(), txid_current()"),
    allowed("3", "SELECT set_config('work_mem', '8MB', false)"),
    refused("r8", "SELECT set_config('application_name', 'x', false)"),  # (the core's: it names the identity)
    allowed("3", "SELECT count(*) FROM pg_stat_activity"),
    allowed("3", "SELECT count(*) FROM pg_settings WHERE name = 'work_mem'"),
    allowed("3", "SELECT count(*) FROM pg_locks"),
    # ---------------------------------------------------------------- 4: the statement cache
    refused("4", "EXECUTE never_prepared"),
    # normalize makes `$1` of `-5` and of `-'5'` alike; only the second calls the prefix `-` (on text:
    # public.neg_purge). The first, allowed, must not lend the second its analysis.
    refused("4", "SELECT -'5'", setup=("SELECT -5",)),
    refused("4", "SELECT 1 FROM things WHERE id = - '5'", setup=("SELECT 1 FROM things WHERE id = - 5",)),
    # `id + 5 = id + 6` filters (no row), `id + 0 = id + 0` does not (every row): the constants decide.
    refused("4", "DELETE FROM things WHERE id + 0 = id + 0", setup=("DELETE FROM things WHERE id + 5 = id + 6",)),
    # `LIMIT 0`, `LIMIT ALL` and `LIMIT NULL` all normalize to `LIMIT $1`; only a number limits.
    refused("4", "DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT ALL)",
            setup=("DELETE FROM things WHERE id IN (SELECT id FROM things LIMIT 0)",)),
    # ---------------------------------------------------------------- 5: names and search_path
    refused("5", "SELECT * FROM things", setup=SECRET_PATH),
    refused("5", "SELECT * FROM things", setup=("SET search_path = secret",)),
    refused("5", "SELECT * FROM things", setup=("SET search_path TO secret, public",)),
    refused("5", "SELECT * FROM things", setup=("SET search_path = pg_temp, secret",)),
    refused("5", "SELECT * FROM things", setup=("BEGIN", "SET LOCAL search_path = secret")),
    refused("5", "SELECT * FROM things", setup=("BEGIN", "SELECT set_config('search_path', 'secret', true)")),
    refused("5", "SELECT * FROM notes"),  # "$user" (the upstream role, app) is on the default path
    refused("5", "SELECT * FROM notes", setup=("SET search_path = \"$user\"",)),
    refused("5", "SELECT * FROM things", setup=("SELECT set_config('search_path', 'sec' || 'ret', false)",)),
    refused("5", "SELECT * FROM things",
            setup=("SELECT set_config('search_path', p, false) FROM (VALUES ('secret')) AS v(p)",)),
    refused("5", "SET search_path = secret; SELECT * FROM things", protocols=SIMPLE),
    refused("5", "SELECT set_config('search_path', 'secret', false); SELECT * FROM things", protocols=SIMPLE),
    refused("5", "EXECUTE p", setup=("PREPARE p AS SELECT * FROM things",) + SECRET_PATH),
    refused("5", "SELECT * FROM things", setup=(
        "PREPARE sp(text) AS SELECT set_config('search_path', $1, false)", "EXECUTE sp('secret')")),
    refused("5", "SELECT * FROM things", setup=("DO $$ BEGIN PERFORM set_config('search_path', 'secret', false); "
                                                "END $$",)),
    refused("5", "SELECT * FROM things", setup=(
        "SELECT * FROM things, LATERAL (SELECT set_config('search_path', 'secret', false)) AS s",)),
    refused("5", "WITH RECURSIVE things AS (SELECT * FROM secret.things) SELECT * FROM things"),
    refused("5", "WITH things AS (SELECT 1 AS id, 2 AS n) SELECT * FROM secret.things"),
    refused("5", "WITH x AS (SELECT * FROM things) SELECT * FROM x", setup=SECRET_PATH),
    refused("5", "SELECT * FROM (WITH things AS (SELECT 1 AS id) SELECT * FROM things) AS a, things AS b",
            setup=SECRET_PATH),
    refused("5", 'SELECT * FROM "secret"."things"'),
    refused("5", "SELECT * FROM SECRET.THINGS"),
    refused("5", 'SELECT * FROM U&"\\0073ecret".things'),
    refused("5", "SELECT * FROM hostile.secret.things"),
    refused("5", "SELECT * FROM ONLY secret.things"),
    allowed("5", "SELECT * FROM things"),
    allowed("5", "WITH things AS (SELECT 1 AS id) SELECT * FROM things", setup=SECRET_PATH),
    # ---------------------------------------------------------------- 6: missing WHERE
    *(refused("6", f"DELETE FROM things WHERE {w}") for w in (
        "NOT false", "1 < 2", "1::boolean", "coalesce(true, false)", "EXISTS (SELECT 1)", "(SELECT true)",
        "length('a') = 1", "now() IS NOT NULL", "'x' LIKE '%'", "id = id", "id IN (SELECT id FROM things)",
        "ctid IS NOT NULL", "id + 0 = id + 0", "id IS NOT DISTINCT FROM id", "current_user = current_user",
        "1 IN (1, 2)", "(id = id) IS NOT FALSE", "EXISTS (SELECT 1 FROM things)", "id = id OR id = 1",
        "id IN (SELECT id FROM things LIMIT NULL)", "id IN (SELECT id FROM things WHERE true)")),
    refused("6", "DELETE FROM things WHERE id IS NOT NULL",
            xfail="id is NOT NULL (primary key): the condition selects every row; has_where True"),
    refused("6", "DELETE FROM things WHERE n IS NULL OR n IS NOT NULL"),
    refused("6", "DELETE FROM things WHERE EXISTS (SELECT 1 FROM things AS t2 WHERE t2.id = things.id)",
            xfail="every row finds itself: has_where True"),
    refused("6", "DELETE FROM things WHERE id + 0 <> id + 1",
            xfail="true for every row whose id is not NULL: has_where True (no arithmetic in the fold)"),
    # ... which `rows_written` catches: the server counts the rows (has_where stays True)
    refused("6", "DELETE FROM things WHERE id IS NOT NULL", policy="capped"),
    refused("6", "DELETE FROM things WHERE EXISTS (SELECT 1 FROM things AS t2 WHERE t2.id = things.id)",
            policy="capped"),
    refused("6", "DELETE FROM things WHERE id + 0 <> id + 1", policy="capped"),
    allowed("6", "DELETE FROM things WHERE id IS NOT NULL AND id < 3", policy="capped",
            changes={"things": 3, "things_sum": 12}),
    refused("6", "UPDATE things AS t SET n = 0 WHERE t.id = t.id"),
    refused("6", "WITH d AS (DELETE FROM things WHERE true RETURNING *) SELECT * FROM d"),
    refused("6", "EXPLAIN ANALYZE DELETE FROM things WHERE 1 = 1"),
    # (with transform_null_equals off, as here, only id 3; but any session may turn it on, and then
    # `NULL = NULL` is true: read as it may be read, a false alarm on text no one needs)
    refused("6", "DELETE FROM things WHERE id = 3 OR NULL = NULL"),
    allowed("6", "DELETE FROM things WHERE id = 3 OR NULL::int = NULL::int", changes={"things": 4, "things_sum": 12}),
    allowed("6", "UPDATE things SET n = 0 WHERE id = 3 OR false", changes={"things_sum": 12}),
    allowed("6", "DELETE FROM things WHERE id IN (1, 2)", changes={"things": 3, "things_sum": 12}),
    allowed("6", "SELECT * FROM things WHERE id BETWEEN 1 AND 3"),
    # ---------------------------------------------------------------- 8: depth
    allowed("8", _nested("SELECT id FROM things", 150)),
    allowed("8", "SELECT " + " + ".join(["id"] * 1000) + " FROM things"),
    refused("8", _nested("SELECT pg_read_file('/etc/passwd')", 150)),
    refused("8", "SELECT " + " + ".join(["1"] * 1000) + " + nextval('public.s')"),
    refused("8", "DELETE FROM things WHERE " + "NOT " * 1001 + "false"),
    # ---------------------------------------------------------------- 9: bodies
    refused("9", "DO $$ BEGIN EXECUTE 'DROP TABLE public.victim'; END $$"),
    refused("9", "DO $x$ BEGIN EXECUTE $q$DROP TABLE public.victim$q$; END $x$"),
    refused("9", "DO $$ BEGIN DROP TABLE public.victim; END $$"),
    refused("9", "DO $$ BEGIN EXECUTE 'DELETE FROM things'; END $$"),
    refused("9", "DO $$ BEGIN EXECUTE 'DELETE FROM ' || 'things'; END $$"),
    refused("9", "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'victim'); END $$"),
    refused("9", "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM things RETURNING id' "
            "LOOP END LOOP; END $$"),
    refused("9", "DO $$ BEGIN EXECUTE 'DO $b$ BEGIN DROP TABLE public.victim; END $b$'; END $$"),
    refused("9", "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$"),
    refused("9", "DO $$ BEGIN SET ROLE postgres; END $$"),
    refused("9", "DECLARE c CURSOR WITH HOLD FOR SELECT public.purge()"),
    refused("9", "DO $$ BEGIN PERFORM nextval('public.s'); END $$"),
    refused("9", "DO $$ BEGIN PERFORM * FROM secret.things; END $$"),
    refused("9", "DO $$ DECLARE x bigint; BEGIN x := public.purge(); END $$"),
    refused("9", "DO $$ BEGIN RAISE NOTICE '%', public.purge(); END $$"),
    refused("9", "DO $$ BEGIN UPDATE things SET n = 0 WHERE id = id; END $$"),
    refused("9", "DO $$ BEGIN EXECUTE 'DELETE FROM things WHERE id = 1'; END $$", policy="nowrite"),
    refused("9", "DO $$ BEGIN CALL public.proc_purge(); END $$"),
    refused("9", "CREATE FUNCTION pg_temp.f() RETURNS bigint LANGUAGE sql AS "
            "'WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d'; SELECT pg_temp.f()",
            policy="migrators"),
    refused("9", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE plpgsql AS "
            "'BEGIN TRUNCATE public.things; RETURN 1; END'; SELECT pg_temp.f()", policy="migrators"),
    refused("9", "CREATE FUNCTION pg_temp.g() RETURNS bigint LANGUAGE sql STABLE AS "
            "'SELECT sum(n) FROM secret.things'; SELECT pg_temp.g()", policy="migrators", protocols=SIMPLE),
    refused("9", "SELECT pg_temp.h()", policy="migrators", setup=(
        "CREATE FUNCTION pg_temp.h() RETURNS bigint LANGUAGE sql AS "
        "'WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d'",)),
    refused("9", "CREATE TEMP VIEW v AS SELECT * FROM secret.things", policy="migrators"),
    # a function replaced in place is judged by its new body, as arming a trigger with it is:
    # whatever calls it already (a prepared statement, a trigger, a default, a view, another
    # session) runs that body from then on (the named statements re-decided after a replacement
    # are tested below, `test_a_named_statement_bound_after_its_function_is_replaced`)
    refused("9", SWAP_SQL, policy="bodies", setup=(HARMLESS_H, "PREPARE p AS SELECT public.swap_h()")),
    refused("9", SWAP_PLPGSQL, policy="bodies", setup=(HARMLESS_H,)),
    refused("9", SWAP_FILE, policy="bodies", setup=(HARMLESS_H, "PREPARE p AS SELECT public.swap_h()")),
    # ... in an open transaction too
    refused("9", SWAP_SQL, policy="bodies", setup=(HARMLESS_H, "BEGIN")),
    refused("9", SWAP_PLPGSQL, policy="bodies", setup=(HARMLESS_H, "PREPARE p AS SELECT public.swap_h()", "BEGIN")),
    # a plain CREATE makes a new function, which nothing made before calls: not judged by its body
    allowed("9", "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql AS "
            "'WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT count(*) FROM d'", policy="bodies"),
    # an overload that matches the prepared call better, made after it
    refused("9", "EXECUTE p", policy="bodies", setup=(
        "DROP FUNCTION IF EXISTS public.harmless(smallint)",  # (DDL here: the catalog read again after RESET)
        "PREPARE p AS SELECT public.harmless(1::smallint)",
        "CREATE FUNCTION public.harmless(smallint) RETURNS int LANGUAGE sql AS "
        "'WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT count(*)::int FROM d'")),
    refused("9", "EXECUTE p", policy="bodies", setup=(
        FILTERED_K, "PREPARE p AS SELECT public.swap_k()", "SET search_path = secret, public")),
    # (the body's unqualified names are matched in every schema: refused on the default path too)
    refused("9", "EXECUTE p", policy="bodies", setup=(FILTERED_K, "PREPARE p AS SELECT public.swap_k()")),
    # a body's DELETE without WHERE is one to a `where: absent` rule (it ran before)
    refused("9", "SELECT public.swap_h()", policy="bodies", setup=(
        "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql AS "
        "'WITH d AS (DELETE FROM public.things RETURNING 1) SELECT count(*) FROM d'",)),
    refused("9", "SELECT public.swap_h()", policy="bodies", setup=(
        "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE plpgsql AS "
        "'BEGIN UPDATE public.things SET n = 0; RETURN 1; END'",)),
    allowed("9", "SELECT public.swap_h()", policy="bodies", setup=(
        "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE plpgsql AS "
        "'BEGIN UPDATE public.things SET n = 0 WHERE id = 1; RETURN 1; END'",), changes={"things_sum": 14}),
    allowed("9", "DO $$ BEGIN PERFORM 1; END $$"),
    allowed("9", "DO $$ BEGIN UPDATE things SET n = n + 1 WHERE id = 1; END $$", changes={"things_sum": 16}),
    # a cast, an operator, a domain's CHECK made or replaced in the transaction still open: the
    # catalog shows the old picture until the commit (each string commits what it ran)
    refused("9", "SELECT 5::public.fresh; COMMIT", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE CAST (int AS public.fresh) WITH FUNCTION public.mk_fresh(int)")),
    refused("9", "CREATE CAST (int AS public.fresh) WITH FUNCTION public.mk_fresh(int); SELECT 5::public.fresh",
            policy="bodies", protocols=SIMPLE),
    refused("9", "INSERT INTO public.fresh_rows VALUES (5); COMMIT", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE CAST (int AS public.fresh) WITH FUNCTION public.mk_fresh(int) AS ASSIGNMENT")),
    refused("9", "SELECT f::text FROM public.fresh_rows; COMMIT", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE CAST (public.fresh AS text) WITH FUNCTION public.fresh_text(public.fresh)")),
    # (the function of a CHECK, a cast or an operator replaced there: judged by its new body)
    refused("9", "CREATE OR REPLACE FUNCTION public.op_same(int, int) RETURNS boolean LANGUAGE sql AS "
            "'WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT true'", policy="bodies", setup=(
                "BEGIN", "ALTER DOMAIN public.plain ADD CONSTRAINT p2 CHECK (public.op_same(VALUE, VALUE))")),
    refused("9", "ALTER DOMAIN public.plain ADD CONSTRAINT p2 CHECK (public.purge() >= 0)", policy="bodies"),
    refused("9", "CREATE OR REPLACE FUNCTION public.to_token(int) RETURNS public.token LANGUAGE sql AS "
            "'WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT row($1)::public.token'", policy="bodies",
            setup=("BEGIN",)),
    refused("9", "SELECT 1 <+> 2; COMMIT", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE OPERATOR public.<+> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.op_purge)")),
    # a cast's function replaced in the transaction to a body that passes, then the cast: unknown (stale)
    refused("9", "SELECT 5::public.token; COMMIT", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE OR REPLACE FUNCTION public.to_token(int) RETURNS public.token LANGUAGE sql AS "
        "'SELECT row($1 + 1)::public.token'")),
    allowed("9", "SELECT 5::public.token, 1 === 2, 5::public.plain", policy="bodies"),
    # ---------------------------------------------------------------- writes the text does not show
    # (the database owner's triggers, rules, defaults, foreign keys: from the catalog)
    refused("fx", "INSERT INTO audited VALUES (1)"),  # its trigger deletes secret.things
    refused("fx", "UPDATE audited SET id = 2 WHERE id = 1"),
    refused("fx", "DELETE FROM audited WHERE id = 1", policy="bodies"),
    refused("fx", "WITH i AS (INSERT INTO audited VALUES (1) RETURNING id) SELECT * FROM i"),
    refused("fx", "INSERT INTO ruled VALUES (1)"),  # DO ALSO DELETE FROM secret.things
    refused("fx", "INSERT INTO defaulted (id) VALUES (1)"),  # the default calls a function that deletes
    refused("fx", "DELETE FROM parents WHERE id = 1"),  # ON DELETE CASCADE into secret.children
    refused("fx", "INSERT INTO audited_v VALUES (1)"),  # through a view: audited's trigger fires
    refused("fx", "SELECT * FROM family"),  # secret.heirs inherits it: its rows come too
    refused("fx", "DELETE FROM family WHERE id = 1"),
    refused("fx", "TRUNCATE public.kin CASCADE", policy="truncators"),  # empties secret.kin_notes
    refused("fx", "TRUNCATE public.parents CASCADE", policy="truncators"),
    allowed("fx", "TRUNCATE public.victim", policy="truncators"),
    allowed("fx", "DELETE FROM public.kin WHERE id = 2", policy="truncators"),  # no action: nothing cascades
    refused("fx", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
            "EXECUTE FUNCTION public.audit_wipe()", policy="bodies"),
    refused("fx", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
            "EXECUTE FUNCTION pg_temp.wipe()", policy="bodies", setup=(
                "BEGIN", "CREATE FUNCTION pg_temp.wipe() RETURNS trigger LANGUAGE plpgsql AS "
                "'BEGIN DELETE FROM secret.things; RETURN NULL; END'")),
    # armed with a harmless function, which is then replaced, in the transaction still open: the
    # trigger is not in the catalog yet, so the replacement is judged by its body, as the arming was
    refused("fx", "CREATE OR REPLACE FUNCTION public.trig_ok() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN DELETE FROM secret.things; RETURN NULL; END'", policy="bodies", setup=(
                "BEGIN", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
                "EXECUTE FUNCTION public.trig_ok()")),
    # ... and through a function the trigger's calls, in one string with the write
    refused("fx", "CREATE OR REPLACE FUNCTION public.harmless(int) RETURNS int LANGUAGE sql AS "
            "'DELETE FROM secret.things RETURNING $1'; INSERT INTO victim DEFAULT VALUES", policy="bodies",
            protocols=SIMPLE, setup=(
                "BEGIN", "ALTER TABLE public.victim ALTER COLUMN a SET DEFAULT public.harmless(1)")),
    # a default armed in the transaction, its function replaced in the next statement
    refused("fx", "CREATE OR REPLACE FUNCTION public.harmless(int) RETURNS int LANGUAGE sql AS "
            "'DELETE FROM secret.things RETURNING $1'", policy="bodies", setup=(
                "BEGIN", "ALTER TABLE public.victim ALTER COLUMN a SET DEFAULT public.harmless(1)")),
    # armed with a function that calls another by name, which is then dropped and made again with
    # another body in the transaction (a plain CREATE: nothing calls the new function by its OID)
    refused("fx", "INSERT INTO victim VALUES (1); COMMIT", policy="bodies", protocols=SIMPLE, xfail=(
        "a plain CREATE FUNCTION counts nothing, and the trigger armed in the open transaction is in no catalog: "
        "the INSERT is an insert"), setup=(
        "BEGIN", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
        "EXECUTE FUNCTION public.trig_calls()",
        "DROP FUNCTION public.helper_ok()",
        "CREATE FUNCTION public.helper_ok() RETURNS int LANGUAGE sql AS 'DELETE FROM secret.things RETURNING 1'")),
    # its setting moved there: what the names in its body mean is not what was judged
    refused("fx", "ALTER FUNCTION public.trig_ok() SET search_path = secret", policy="bodies", setup=(
        "BEGIN", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
        "EXECUTE FUNCTION public.trig_ok()")),
    # replaced harmlessly there: a definition, allowed, and the write after it too
    allowed("fx", "INSERT INTO victim VALUES (1)", policy="bodies", protocols=SIMPLE, setup=(
        "BEGIN", "CREATE TRIGGER victim_wipe AFTER INSERT ON public.victim FOR EACH STATEMENT "
        "EXECUTE FUNCTION public.trig_ok()",
        "CREATE OR REPLACE FUNCTION public.trig_ok() RETURNS trigger LANGUAGE plpgsql AS "
        "'BEGIN RETURN NULL; END'")),
    refused("fx", "CREATE RULE victim_wipe AS ON INSERT TO public.victim DO ALSO DELETE FROM secret.things",
            policy="bodies"),
    allowed("fx", "SELECT count(*) FROM audited, ruled, defaulted, parents, stamped"),
    # an aggregate's state function deletes public.things (no WHERE): as a call of it
    refused("fx", "SELECT agg_purge(id) FROM things", policy="bodies"),
    allowed("fx", "INSERT INTO parents VALUES (2)"),  # an insert cascades nothing
    allowed("fx", "INSERT INTO stamped (id) VALUES (1)"),  # now() and nextval() in defaults
    allowed("fx", "UPDATE suppressed SET id = 1 WHERE id = 1"),  # a built-in trigger function
    allowed("fx", "INSERT INTO keyed (n) VALUES (1)"),  # an extension's function computes the default
    refused("fx", "DELETE FROM images WHERE id = 1"),  # lo_manage (C) unlinks large objects
    allowed("fx", "INSERT INTO logged VALUES (1)"),  # an audit trigger: an INSERT into public.log
    refused("fx", "INSERT INTO logged VALUES (1)", policy="nowrite"),
    # ---------------------------------------------------------------- 10: false alarms (and their twins)
    allowed("10", "EXPLAIN (ANALYZE false) DELETE FROM things"),
    allowed("10", "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM things"),
    allowed("10", "EXPLAIN DELETE FROM things"),
    allowed("10", "SET CONSTRAINTS ALL DEFERRED", setup=("BEGIN",)),
    allowed("10", "EXPLAIN (ANALYZE false) INSERT INTO things VALUES (9, 9)", policy="nowrite"),
    refused("10", "EXPLAIN (ANALYZE) DELETE FROM things"),
    refused("10", "EXPLAIN (ANALYZE 1) DELETE FROM things"),
    refused("10", "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM things"),
    refused("10", "EXPLAIN ANALYZE INSERT INTO things VALUES (9, 9)", policy="nowrite"),
    refused("10", "EXPLAIN (ANALYZE false, ANALYZE true) INSERT INTO things VALUES (9, 9)", policy="nowrite"),
    # ---------------------------------------------------------------- writes under the other policies
    refused("w", "WITH d AS (DELETE FROM things WHERE id = 1 RETURNING *) SELECT * FROM d", policy="nowrite"),
    refused("w", "INSERT INTO things VALUES (9, 9) ON CONFLICT DO NOTHING", policy="nowrite"),
    refused("w", "MERGE INTO things USING (SELECT 9 AS id) AS s ON things.id = s.id "
            "WHEN NOT MATCHED THEN INSERT VALUES (9, 9)", policy="nowrite"),
    refused("w", "SELECT lo_from_bytea(0, '\\x41')", policy="nowrite"),
    allowed("w", "SELECT count(*) FROM things", policy="nowrite"),
    refused("w", "WITH d AS (DELETE FROM things WHERE id = 1 RETURNING *) SELECT * FROM d", policy="readonly"),
    refused("w", "SELECT nextval('public.s')", policy="readonly"),
    refused("w", "EXPLAIN ANALYZE DELETE FROM things WHERE id = 1", policy="readonly"),
    refused("w", "SELECT public.purge()", policy="readonly"),
    allowed("w", "SELECT count(*) FROM things", policy="readonly"),
    # ---------------------------------------------------------------- round three (red team, 2026-12-06)
    # COPY ... FROM ... WHERE: the condition runs for every row copied
    refused("r3", "COPY public.plain_t FROM STDIN WHERE public.purge() > 0"),
    refused("r3", "COPY public.plain_t FROM STDIN WHERE 1 ### 2"),
    refused("r3", "COPY public.plain_t FROM STDIN WHERE nextval('public.s') > 0"),
    refused("r3", "COPY public.plain_t FROM STDIN WHERE pg_terminate_backend({victim})"),
    refused("r3", "COPY public.plain_t FROM STDIN WHERE table_to_xml('secret.things', true, false, '')::text::int > 0"),
    # a column definition list converts each field to its type (a domain's CHECK runs)
    *(refused("r3", sql, policy=policy) for policy in ("design", "nowrite") for sql in (
        "SELECT * FROM json_to_record('{\"c\":5}') AS x(c public.checked)",
        "SELECT * FROM jsonb_to_recordset('[{\"c\":5}]') AS x(c checked)",
        "SELECT * FROM ROWS FROM (json_to_record('{\"c\":5}') AS (c public.checked)) r",
        # a table's row type converts each field to its column's type
        "SELECT '(5)'::public.guarded",
        "SELECT ROW(5)::public.guarded",
        "SELECT '{\"(5)\"}'::guarded[]",
        "SELECT * FROM json_populate_record(NULL::public.guarded, '{\"c\":5}')",
        # syntax of a newer release than the server's: a call of the database's function there
        "SELECT json_value('{}', 'x')",
        "SELECT json_scalar(1)",
        "SELECT json_array(1)",
        "SELECT merge_action()",
        "SELECT json_object(1, 2)",
        # planning computes STABLE functions too (estimates), not only IMMUTABLE ones
        "EXPLAIN SELECT * FROM things WHERE id = public.stable_purge()",
        "EXPLAIN (ANALYZE false) SELECT 1 FROM things WHERE n < stable_purge()",
        "EXPLAIN SELECT * FROM things LIMIT stable_purge()",
        "EXPLAIN DELETE FROM things WHERE id = stable_purge()",
        # a recursive CTE's CYCLE mark values are converted
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 2) "
        "CYCLE n SET m TO public.checked '1' DEFAULT public.checked '2' USING p SELECT n FROM t",
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 2) "
        "CYCLE n SET m TO public.guarded '(1)' DEFAULT public.guarded '(2)' USING p SELECT n FROM t",
        # SQL text after an empty statement, or text pgwarden's (newer) parser refuses, is run
        "SELECT * FROM crosstab(';SELECT 1, 1, public.purge()') AS c(a int, b bigint)",
        "SELECT * FROM crosstab('SELECT 1,1,p FROM public.purge() system_user(p)') AS c(a int, b bigint)",
    )),
    # EXPLAIN EXECUTE computes its arguments, whatever they call
    *(refused("r3", "EXPLAIN EXECUTE p(public.purge()::text)", policy=policy, setup=(_PREPARED_TEXT,))
      for policy in ("design", "nowrite")),
    refused("r3", "SELECT * FROM crosstab(';SELECT id, id, n FROM secret.things') AS c(a int, b int)"),
    refused("r3", "SELECT * FROM crosstab(E'\\n;SELECT 1, 1, n FROM app.notes') AS c(a int, b int)"),
    refused("r3", "SELECT * FROM crosstab('SELECT id, id, n FROM secret.things system_user') AS c(a int, b int)"),
    refused("r3", "SELECT * FROM crosstab(';SELECT 1, 1, nextval(''public.s'')') AS c(a int, b bigint)"),
    refused("r3", "EXPLAIN EXECUTE p(nextval('public.s')::text)", setup=(_PREPARED_TEXT,)),
    refused("r3", "EXPLAIN EXECUTE p(lo_from_bytea(424242, 'pwned')::text)", setup=(_PREPARED_TEXT,)),
    refused("r3", "EXPLAIN EXECUTE p(set_config('role', 'md5_user', false))", setup=(_PREPARED_TEXT,)),
    refused("r3", "SELECT * FROM crosstab(';SELECT 1,1,set_config(''default_transaction_read_only'',''off'',false)') "
            "AS c(a int, b text); COMMIT; SELECT * FROM crosstab(';SELECT 1, 1, public.purge()::text') AS c(a int, b text)",
            policy="readonly", protocols=SIMPLE),
    # (round four) planning folds the table's index expressions, of any statement on it
    refused("r4", "SELECT * FROM public.idx_t", setup=("SET hostile.armed = on",)),
    refused("r4", "EXPLAIN SELECT 1 FROM public.idx_t WHERE id = 1", setup=("SET hostile.armed = on",)),
    # ... and a plain EXPLAIN of a write plans the target's defaults in, folding IMMUTABLE-declared calls
    refused("r4", "EXPLAIN INSERT INTO public.dflt_t (id) VALUES (1)", setup=("SET hostile.armed = on",)),
    refused("r4", "EXPLAIN (COSTS off) INSERT INTO public.dflt_t SELECT 1", setup=("SET hostile.armed = on",)),
    refused("r4", "EXPLAIN INSERT INTO public.dflt_v VALUES (1)", setup=("SET hostile.armed = on",)),
    allowed("r4", "EXPLAIN INSERT INTO public.plain_t VALUES (1)"),
    # round five: a notification reaches other sessions' LISTENers (a change of state, as
    # pg_logical_emit_message's WAL message); CLUSTER ... USING changes the table's definition
    refused("r5", "NOTIFY chan, 'from the agent'"),
    refused("r5", "SELECT pg_notify('chan', 'from the agent')"),
    refused("r5", "CLUSTER things USING things_pkey"),
    allowed("r5", "LISTEN chan"),
    # ... the same column written two ways is a WHERE that selects every row
    refused("r5", "DELETE FROM things WHERE id = things.id"),
    refused("r5", "UPDATE things SET n = 1 WHERE id IN (id)"),
    refused("r5", "DELETE FROM public.things WHERE id = (things).id"),
    # ... and the twins that must pass
    allowed("r3", "SELECT * FROM json_to_record('{\"c\":5}') AS x(c int)"),
    allowed("r3", "SELECT ROW(5, 6)::public.things IS NULL"),
    allowed("r3", "EXPLAIN SELECT * FROM things WHERE id = extract(epoch FROM now())::int"),
    allowed("r3", "EXPLAIN EXECUTE p('x')", setup=(_PREPARED_TEXT,)),
    allowed("r3", "SELECT * FROM crosstab('SELECT 1, 1, 2') AS c(a int, b int)"),
]


def _params():
    out = []
    for index, case in enumerate(CASES):
        for protocol in protocols_of(index, case.protocols):
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
            after = f"{case.setup[-1][:40]} then " if case.setup else ""
            label = f"{case.cause}-{case.policy}-{protocol}-{after}{case.sql[:60]}"
            out.append(pytest.param(case, protocol, id=label, marks=marks))
    return out


# ---------------------------------------------------------------------- the server and pgwarden


def _direct(pg_server) -> psycopg.Connection:
    return psycopg.connect(pg_server.dsn(database=DB), autocommit=True)


@pytest.fixture(scope="module")
def hostile_db(pg_server):
    pg_server.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_server.psql(f"CREATE DATABASE {DB} OWNER {APP_USER}")
    pg_server.psql(SETUP + OWNED, DB)
    yield DB
    MARKER.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def hostile(hostile_db, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """One pgwarden for the module, with the four policies, in front of the hostile database."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    doc = base_config(pg_server, signing_keys, tmp_path_factory.mktemp("hostile"), policies=POLICIES,
                      upstream={"database": DB})
    with module_pgwarden(doc, signing_keys, reactor_thread) as rp:
        yield rp


class Server:
    """A direct connection to the hostile database (no pgwarden), and a backend to protect."""

    def __init__(self, pg_server) -> None:
        self.pg = pg_server
        self.conn = _direct(pg_server)
        self.victim = _direct(pg_server)

    def reset(self) -> None:
        self.conn.execute(RESET)
        MARKER.unlink(missing_ok=True)
        if not self.victim_alive():
            self.victim = _direct(self.pg)

    def victim_alive(self) -> bool:
        try:
            self.victim.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def state(self) -> dict:
        cur = self.conn.execute(STATE)
        state = dict(zip((d.name for d in cur.description), cur.fetchone()))
        state["marker_file"] = MARKER.exists()
        state["victim_alive"] = self.victim_alive()
        return state


@pytest.fixture(scope="module")
def server(hostile_db, pg_server):
    s = Server(pg_server)
    yield s
    s.conn.close()
    s.victim.close()


class Agent:
    """One session through pgwarden, statement by statement, over one protocol."""

    def __init__(self, running, group: str, protocol: str) -> None:
        self.rc = RawClient(running.host, running.port)
        answer = self.rc.login(running.token(groups=[group]), database=DB)
        assert isinstance(answer[-1], m.ReadyForQuery), answer
        self.protocol = protocol

    def run(self, sql: str) -> list:
        if self.protocol == "simple":
            self.rc.send(m.Query(sql).encode())
        else:
            self.rc.send(m.Parse("", sql).encode() + m.Bind("", "").encode() + m.Describe("P", "").encode()
                         + m.Execute("").encode() + m.Sync().encode())
        return self.rc.until_ready()

    def close(self) -> None:
        self.rc.close()


def errors(answer: list) -> list:
    return [x for x in answer if isinstance(x, m.ErrorResponse)]


def read_catalog_again(hostile, why: str) -> None:
    """The running pgwarden's live catalog read again, now: the test made or dropped objects on a
    connection of its own, which pgwarden's checks did not see."""
    hostile.call(hostile.app.catalog.invalidate, why)
    hostile.call(hostile.app.catalog.fresh)


def made(hostile, server, *sqls: str) -> None:
    """``sqls`` run on the direct connection (as the database's owner would), then the running
    pgwarden's catalog read again."""
    server.reset()
    for sql in sqls:
        server.conn.execute(sql)
    read_catalog_again(hostile, "objects made by the test")


def run_policy(hostile, policy: str, protocol: str, *sqls: str) -> list[list]:
    """``sqls`` in one session of an agent of ``policy``'s group (`GROUPS`): each one's answer."""
    agent = Agent(hostile, GROUPS[policy], protocol)
    try:
        return [agent.run(sql) for sql in sqls]
    finally:
        agent.close()


def first_value(conn, sql: str):
    """The first column of the first row ``sql`` returns on a direct connection."""
    return conn.execute(sql).fetchone()[0]


def data_rows(answer: list) -> list:
    return [row.values for row in answer if isinstance(row, m.DataRow)]


def assert_refused(answer: list, sql: str) -> None:
    errs = errors(answer)
    assert errs, f"not refused: {sql[:200]!r}: {answer[-3:]}"
    assert (errs[0].sqlstate, errs[0].message.split(":")[0]) == ("42501", "pgwarden"), errs[0]
    assert errs[0].message.startswith("pgwarden: blocked: "), errs[0]
    assert not any(isinstance(x, (m.DataRow, m.CopyData)) for x in answer), "rows sent before the refusal"


# ---------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case, protocol", _params())
def test_hostile(hostile, server, case: Case, protocol: str):
    server.reset()
    victim_pid = server.victim.info.backend_pid
    sql = case.sql.replace("{victim}", str(victim_pid)).replace("{marker}", str(MARKER))
    agent = Agent(hostile, GROUPS[case.policy], protocol)
    try:
        try:
            for step in case.setup:
                assert not errors(answer := agent.run(step)), (step, answer)
            before = server.state()
            answer = agent.run(sql)
            if case.allowed:
                assert not errors(answer), answer
            else:
                assert_refused(answer, sql)
            if case.probe is not None:
                probe_sql, expected = case.probe
                rows = [x for x in agent.run(probe_sql) if isinstance(x, m.DataRow)]
                assert [r.values[0].decode() for r in rows] == [expected]
        finally:
            agent.close()
        after = server.state()
        assert after == {**before, **case.changes}
    finally:
        if "COMMIT" in sql.upper():
            # What the case committed (a trigger it armed) is dropped by the next reset on a
            # connection of its own: the catalog pgwarden read must not keep it for the next case.
            # Whatever the case's outcome: an expected failure (the xfail case that commits a
            # trigger) must not leave its trigger in pgwarden's catalog either, where a load begun
            # at its COMMIT and ended after the next case's reset made that case flaky.
            server.reset()
            read_catalog_again(hostile, "a case committed its DDL")


def test_parameters_where_another_text_has_constants_lend_it_nothing(hostile, server):
    # `id + $1 = id + $2` holds for every row when bound alike, and normalizes as `id + 0 = id + 0`
    # does: neither passes as a filter, and the first lends the second nothing.
    server.reset()
    before = server.state()
    agent = Agent(hostile, GROUPS["design"], "extended")
    try:
        agent.rc.send(m.Parse("", "DELETE FROM things WHERE id + $1 = id + $2").encode()
                      + m.Bind("", "", (), (b"5", b"5")).encode() + m.Execute("").encode() + m.Sync().encode())
        assert_refused(agent.rc.until_ready(), "id + $1 = id + $2")
        agent.protocol = "simple"
        assert_refused(agent.run("DELETE FROM things WHERE id + 0 = id + 0"), "id + 0 = id + 0")
    finally:
        agent.close()
    assert server.state() == before


def test_sql_text_bound_to_a_parameter_is_not_run_unchecked(reloadable, server):
    # query_to_xml runs the text it is given: bound to a parameter, that text is not in the statement.
    before = server.state()
    answers = _session(reloadable, "simple", (), [
        "PREPARE q(text) AS SELECT query_to_xml($1, true, false, '')",
        "EXECUTE q('WITH i AS (INSERT INTO things VALUES (100, 0) RETURNING 1) SELECT * FROM i')"])
    assert_refused(answers[0], "PREPARE q")
    assert errors(answers[1])
    assert server.state() == before


def test_corpus_size():
    """The corpus stays about the size the issue asks for (~100 cases over both protocols)."""
    assert len(CASES) >= 100


# ---------------------------------------------------------------------- 4: the statement cache after a reload

LENIENT = [{"name": "p", "rules": [{"name": "secrets", "block": {"tables": ["secret.*"]}}]}]
NO_INSERTS = [{"name": "p", "rules": [{"name": "no-inserts", "block": {"statements": ["insert", "unknown"]},
                                       "reason": "no inserts"}]}]


@pytest.fixture
def reloadable(make_pgwarden, hostile_db, pg_server, signing_keys, tmp_path, server):
    """A pgwarden of its own (its policy changes while sessions live), lenient to begin with."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    server.reset()
    running = make_pgwarden(policies=LENIENT, upstream={"database": DB})

    def tighten():
        doc = base_config(pg_server, signing_keys, tmp_path, policies=NO_INSERTS, upstream={"database": DB})
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))

    return running, tighten


def _session(reloadable, protocol, before=(), after=(), group="ai-agents"):
    """Runs ``before``, tightens the policy, runs ``after``; the answers of ``after``."""
    running, tighten = reloadable
    agent = Agent(running, group, protocol)
    try:
        for step in before:
            assert not errors(answer := agent.run(step)), (step, answer)
        tighten()
        return [agent.run(step) for step in after]
    finally:
        agent.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_execute_after_a_reload_is_judged_by_its_own_name(reloadable, server, protocol):
    before = server.state()
    answers = _session(reloadable, protocol,
                       ["PREPARE a AS SELECT 1", "PREPARE b AS INSERT INTO things VALUES (100, 0)"],
                       ["EXECUTE a", "EXECUTE b", "EXECUTE a"])
    assert not errors(answers[0]) and not errors(answers[2])
    assert_refused(answers[1], "EXECUTE b")
    assert server.state() == before


def test_execute_a_then_b_in_one_string_after_a_reload(reloadable, server):
    before = server.state()
    answers = _session(reloadable, "simple",
                       ["PREPARE a AS SELECT 1", "PREPARE b AS INSERT INTO things VALUES (100, 0)"],
                       ["EXECUTE a", "EXECUTE a; EXECUTE b"])
    assert not errors(answers[0])
    assert_refused(answers[1], "EXECUTE a; EXECUTE b")
    assert server.state() == before


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_quoted_prepared_name_is_not_another_names_twin(reloadable, server, protocol):
    before = server.state()
    answers = _session(reloadable, protocol, ['PREPARE "B" AS INSERT INTO things VALUES (100, 0)'],
                       ["PREPARE b AS SELECT 1", 'EXECUTE "B"'])
    assert not errors(answers[0])
    assert_refused(answers[1], 'EXECUTE "B"')
    assert server.state() == before


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_prepare_the_server_refuses_does_not_rename_the_statement(reloadable, server, protocol):
    before = server.state()
    answers = _session(reloadable, protocol, ["PREPARE b AS INSERT INTO things VALUES (100, 0)"],
                       ["PREPARE b AS SELECT 1", "EXECUTE b"])
    assert errors(answers[0])[0].sqlstate == "42P05"  # duplicate_prepared_statement
    assert_refused(answers[1], "EXECUTE b")
    assert server.state() == before


# ---------------------------------------------------------------------- 5: names from the startup packet


@pytest.mark.parametrize("path", ["secret", "secret, public", '"secret"'])
def test_a_search_path_given_at_startup_is_followed(hostile, server, path):
    server.reset()
    rc = RawClient(hostile.host, hostile.port)
    try:
        rc.login(hostile.token(groups=[GROUPS["design"]]), database=DB, search_path=path)
        rc.send(m.Query("SELECT * FROM things").encode())
        assert_refused(rc.until_ready(), "SELECT * FROM things")
    finally:
        rc.close()


# ---------------------------------------------------------------------- 5: a protocol-level statement re-analysed


def test_a_named_statement_bound_after_a_search_path_change(hostile, server):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "simple")
    rc = agent.rc
    try:
        rc.send(m.Parse("q", "SELECT n FROM things").encode() + m.Sync().encode())
        assert not errors(rc.until_ready())
        assert not errors(agent.run(SECRET_PATH[0]))
        rc.send(m.Bind("", "q").encode() + m.Execute("").encode() + m.Sync().encode())
        answer = rc.until_ready()
        leaked = [int(r.values[0]) for r in answer if isinstance(r, m.DataRow) and int(r.values[0]) > 1000]
        assert leaked == []
        assert_refused(answer, "Bind q")
    finally:
        agent.close()


# ---------------------------------------------------------------------- 5: session state while nothing checks

UNCHECKED_VIEW = "CREATE OR REPLACE VIEW public.unchecked_v AS SELECT id, id AS n FROM public.things"
MASK_SECRET = [{"name": "p", "rules": [{"name": "secret-n", "mask": {"columns": ["secret.things.n"], "with": "redact"}}]}]


@pytest.fixture(params=["recorded", "unrecorded"])
def unchecked(request, make_pgwarden, hostile_db, pg_server, signing_keys, tmp_path, server):
    """A pgwarden without the block plugin whose one policy has no rule: no plugin checks a
    statement, until a reload brings a mask rule. Recorded (each statement parsed for its
    record), or not (not even parsed)."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    server.reset()
    server.conn.execute(UNCHECKED_VIEW)
    section = {"disable": ["block"]}
    # (no change check: DDL through the session is the only way pgwarden may learn of it)
    extra: dict = {"catalog": {"check_s": 3600}}
    if request.param == "unrecorded":
        section = {"disable": ["block", "recording"]}
        extra["recording"] = {"sinks": []}
    running = make_pgwarden(policies=[{"name": "p"}], upstream={"database": DB}, plugins_section=section, **extra)
    assert running.app.recorder.active is (request.param == "recorded")

    def mask():
        doc = base_config(pg_server, signing_keys, tmp_path, policies=MASK_SECRET, upstream={"database": DB},
                          plugins=section, **extra)
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))

    return running, mask


def _assert_secret_masked(answer) -> None:
    """The answer has rows, and none carries secret.things.n's values (all above 1000) unmasked."""
    assert not errors(answer), answer
    values = [r.values[0] for r in answer if isinstance(r, m.DataRow)]
    assert values and not any(v is not None and int(v) > 1000 for v in values), values


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_search_path_set_while_nothing_checks_is_followed_after_a_reload(unchecked, server, protocol):
    # The SET goes through while no plugin checks statements; a reload then masks secret.things.n.
    # Read through an expression (no table in the row description), `things` must still be
    # taken for secret.things, as the server takes it: pgwarden followed the SET all along.
    running, mask = unchecked
    agent = Agent(running, "ai-agents", protocol)
    try:
        assert not errors(agent.run("SET search_path = secret, public"))
        mask()
        # (no ORDER BY: the first statement after statements pgwarden did not read is judged on a
        # catalog that may be stale, where a condition or an ordering is refused as an oracle)
        answer = agent.run("SELECT n + 0 AS n FROM things")
        _assert_secret_masked(answer)
    finally:
        agent.close()


class SecretMasker:
    """A third party's masker with no check of its own: it masks what comes from secret.things.n."""

    @hookimpl
    def pgwarden_result_masks(self, result, statement, session):
        from pgwarden.masking import ColumnMask

        return {c.index: ColumnMask(lambda value, column: None, 1, "p/secret", "secret.things.n", "redact")
                for c in result.columns
                if c.direct == "secret.things.n" or "secret.things.n" in c.sources or c.opaque} or None


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_search_path_is_followed_for_a_masker_that_checks_nothing(make_pgwarden, hostile_db, server, protocol):
    # No plugin checks statements, nothing is recorded: only the masker reads the statements'
    # lineage, which must follow the SET as the server does.
    server.reset()
    running = make_pgwarden(plugins=[("secret-masker", SecretMasker())], upstream={"database": DB},
                            plugins_section={"disable": ["block", "mask", "recording"]}, recording={"sinks": []})
    agent = Agent(running, "ai-agents", protocol)
    try:
        assert not errors(agent.run("SET search_path = secret, public"))
        answer = agent.run("SELECT n + 0 AS n FROM things ORDER BY id")
        _assert_secret_masked(answer)
    finally:
        agent.close()


def test_a_view_replaced_while_nothing_checks_is_read_again_after_a_reload(unchecked, server):
    # The view pgwarden's catalog knows is replaced (unchecked) to return secret.things.n; the
    # reload masks that column: the view's rows must not be read through its old definition.
    running, mask = unchecked
    agent = Agent(running, "ai-agents", "simple")
    try:
        assert not errors(agent.run("CREATE OR REPLACE VIEW public.unchecked_v AS SELECT id, n FROM secret.things"))
        mask()
        answer = agent.run("SELECT n FROM public.unchecked_v")  # (no ORDER BY: see above)
        _assert_secret_masked(answer)
    finally:
        agent.close()


# ---------------------------------------------------------------------- 9: a named statement's function replaced


# A STABLE function: a call of it changes nothing, so its named statement is decided at Parse
# alone, and again at a Bind only once something may have changed what it runs.
STABLE_H = "CREATE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 1::bigint'"
SWAP_STABLE = ("CREATE OR REPLACE FUNCTION public.swap_h() RETURNS bigint LANGUAGE sql STABLE AS "
               "'SELECT sum(n) FROM secret.things'")


@pytest.mark.parametrize("harmless, swap", [(HARMLESS_H, SWAP_SQL), (HARMLESS_H, SWAP_PLPGSQL),
                                            (HARMLESS_H, SWAP_FILE), (STABLE_H, SWAP_STABLE)],
                         ids=["sql", "plpgsql", "function-rule", "stable-read"])
def test_a_named_statement_bound_after_its_function_is_replaced(hostile, server, harmless, swap):
    # Parse once, Bind after the function it calls was replaced: the server plans it again and
    # runs the new body; pgwarden decides the Bind again on the catalog that shows the change.
    # Replaced through pgwarden, the replacement is refused (judged by its new body); replaced by
    # the function's owner on a connection of its own, then DDL of the session's own (after
    # which the server plans q again): the Bind is decided again on the catalog read after it.
    server.reset()
    before = server.state()
    agent = Agent(hostile, GROUPS["bodies"], "simple")
    rc = agent.rc
    try:
        assert not errors(agent.run(harmless))
        rc.send(m.Parse("q", "SELECT public.swap_h()").encode() + m.Bind("", "q").encode()
                + m.Execute("").encode() + m.Sync().encode())
        assert not errors(rc.until_ready())
        assert_refused(agent.run(swap), swap)
        server.conn.execute(swap)
        assert not errors(agent.run("CREATE TEMP TABLE replanned ()"))
        rc.send(m.Bind("", "q").encode() + m.Execute("").encode() + m.Sync().encode())
        answer = rc.until_ready()
        assert not [r for r in answer if isinstance(r, m.DataRow) and int(r.values[0] or 0) > 1000]
        assert_refused(answer, "Bind q")
    finally:
        agent.close()
    assert server.state() == before


def test_psycopg_prepared_after_its_function_is_replaced(hostile, server):
    # The same through psycopg's own named statements (prepare=True: Parse once, Bind each time).
    server.reset()
    before = server.state()
    token = hostile.token(groups=[GROUPS["bodies"]])
    with psycopg.connect(hostile.dsn(token, database=DB), autocommit=True) as c:
        c.execute(HARMLESS_H)
        assert c.execute("SELECT public.swap_h()", prepare=True).fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pgwarden: blocked"):
            c.execute(SWAP_SQL)  # judged by its new body
        server.conn.execute(SWAP_SQL)  # by the function's owner, then DDL of the session's own
        c.execute("CREATE TEMP TABLE replanned ()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pgwarden: blocked"):
            c.execute("SELECT public.swap_h()", prepare=True)
    assert server.state() == before


def test_a_named_statement_bound_after_a_same_named_function_comes_first(hostile, server):
    # Parse resolves swap_h() to public's; a SET then puts a schema with its own swap_h (which
    # reads secret.things) first: the server plans the Bind again and calls that one.
    server.reset()
    server.conn.execute("CREATE SCHEMA shadowing; CREATE FUNCTION shadowing.swap_h() RETURNS bigint LANGUAGE sql "
                        "STABLE AS 'SELECT sum(n) FROM secret.things'")
    read_catalog_again(hostile, "the test's setup")
    agent = Agent(hostile, GROUPS["bodies"], "simple")
    rc = agent.rc
    try:
        assert not errors(agent.run(STABLE_H))
        rc.send(m.Parse("q", "SELECT swap_h()").encode() + m.Bind("", "q").encode()
                + m.Execute("").encode() + m.Sync().encode())
        assert not errors(rc.until_ready())
        assert not errors(agent.run("SET search_path = shadowing, public"))
        rc.send(m.Bind("", "q").encode() + m.Execute("").encode() + m.Sync().encode())
        answer = rc.until_ready()
        assert not [r for r in answer if isinstance(r, m.DataRow) and int(r.values[0] or 0) > 1000]
        assert_refused(answer, "Bind q")
    finally:
        agent.close()
        server.conn.execute("DROP SCHEMA shadowing CASCADE")


def test_a_named_statement_bound_after_its_function_is_replaced_in_the_same_pipeline(hostile, server):
    # No Sync between the replacement and the Bind: one implicit transaction, the change unread
    # by any load when the Bind is decided.
    server.reset()
    before = server.state()
    agent = Agent(hostile, GROUPS["bodies"], "simple")
    rc = agent.rc
    try:
        assert not errors(agent.run(HARMLESS_H))
        rc.send(m.Parse("q", "SELECT public.swap_h()").encode() + m.Sync().encode())
        assert not errors(rc.until_ready())
        rc.send(m.Parse("", SWAP_PLPGSQL).encode() + m.Bind("", "").encode() + m.Execute("").encode()
                + m.Bind("", "q").encode() + m.Execute("").encode() + m.Sync().encode())
        assert_refused(rc.until_ready(), "Bind q")
    finally:
        agent.close()
    assert server.state() == before


# ---------------------------------------------------------------------- 4: SQL-level PREPAREs no plugin saw

APPROVE_DELETES = [{"name": "p", "rules": [{"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry"}}]}]
NO_RULES = [{"name": "p"}]


# (another identity's: the approve plugin checks statements, but none of the agents')
OTHERS = {"name": "others", "when": {"groups": ["others"]},
          "rules": [{"name": "inserts", "approve": {"statements": ["insert"], "mode": "retry"}}]}


@pytest.fixture(params=["recorded", "unrecorded", "others"])
def approving(request, make_pgwarden, hostile_db, pg_server, signing_keys, tmp_path, server):
    """A pgwarden whose only checker is the approve plugin (block disabled); ``policies(doc)``
    reloads it with other policies. Recorded (every statement analysed, none checked while no
    approve rule applies), not (not even parsed: the session untracked), or with an approve
    rule for another identity (the plugin checks, but not the agent's statements)."""
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.pytest_plugin import base_config

    server.reset()
    section: dict = {"disable": ["block"]}
    extra: dict = {}
    if request.param == "unrecorded":
        section = {"disable": ["block", "recording"]}
        extra["recording"] = {"sinks": []}
    others = [OTHERS] if request.param == "others" else []
    running = make_pgwarden(policies=NO_RULES + others, upstream={"database": DB}, plugins_section=section, **extra)

    def policies(doc):
        config = base_config(pg_server, signing_keys, tmp_path, policies=doc + others, upstream={"database": DB},
                             plugins=section, **extra)
        assert running.call(running.app.reload, _CONVERTER.structure(config, Config))

    return running, policies


def _assert_held(answer, sql: str) -> None:
    errs = errors(answer)
    assert errs and errs[0].sqlstate == "42501" and errs[0].message.startswith("pgwarden: "), (sql, answer[-3:])


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_execute_of_a_statement_prepared_while_no_approve_rule_applied(approving, server, protocol):
    # PREPARE goes upstream while nothing checks; a reload brings an approve rule on DELETE:
    # EXECUTE p runs a DELETE, and must wait for (or be refused) approval, not run.
    running, policies = approving
    before = server.state()
    agent = Agent(running, "ai-agents", protocol)
    try:
        assert not errors(agent.run("PREPARE p AS DELETE FROM things"))
        policies(APPROVE_DELETES)
        _assert_held(agent.run("EXECUTE p"), "EXECUTE p")
    finally:
        agent.close()
    assert server.state() == before


def test_execute_of_a_name_prepared_again_while_no_approve_rule_applied(approving, server):
    # The plugin saw `p` prepared as a SELECT; the rule goes away, `p` is deallocated and
    # prepared again as a DELETE unseen; the rule comes back: EXECUTE p is not the SELECT.
    running, policies = approving
    policies(APPROVE_DELETES)
    before = server.state()
    agent = Agent(running, "ai-agents", "simple")
    try:
        assert not errors(agent.run("PREPARE p AS SELECT 1"))
        assert not errors(agent.run("EXECUTE p"))
        policies(NO_RULES)
        assert not errors(agent.run("DEALLOCATE p"))
        assert not errors(agent.run("PREPARE p AS DELETE FROM things"))
        policies(APPROVE_DELETES)
        _assert_held(agent.run("EXECUTE p"), "EXECUTE p")
        # a DEALLOCATE pgwarden judges may not run (`SELECT 1/0; DEALLOCATE p`): `p` stays unknown
        assert not errors(agent.run("DEALLOCATE p"))
        assert not errors(agent.run("PREPARE p AS SELECT 2"))
        _assert_held(agent.run("EXECUTE p"), "EXECUTE p after DEALLOCATE")
    finally:
        agent.close()
    assert server.state() == before


def test_a_computed_delete_waits_for_approval_without_the_block_plugin(approving, server):
    # What pgwarden cannot analyse may be a DELETE: an approve rule on DELETE holds it.
    running, policies = approving
    policies(APPROVE_DELETES)
    before = server.state()
    agent = Agent(running, "ai-agents", "simple")
    try:
        _assert_held(agent.run("DO $$ BEGIN EXECUTE 'DELETE FROM ' || 'things'; END $$"), "DO")
        assert not errors(agent.run("SELECT count(*) FROM things"))
    finally:
        agent.close()
    assert server.state() == before


# ---------------------------------------------------------------------- writes the text does not show: COPY


def test_copy_into_a_table_whose_trigger_deletes_is_refused(hostile, server):
    # COPY FROM fires the table's INSERT triggers (audited's deletes secret.things)
    server.reset()
    before = server.state()
    with psycopg.connect(hostile.dsn(hostile.token(groups=[GROUPS["design"]]), database=DB), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="pgwarden: blocked"):
            with c.cursor().copy("COPY audited FROM STDIN") as copy:
                copy.write_row((1,))
        with c.cursor().copy("COPY logged FROM STDIN") as copy:  # an audit trigger: allowed
            copy.write_row((1,))
    assert server.state() == before


# ---------------------------------------------------------------------- round three: protocol paths


def _type_oid(server, name: str) -> int:
    return server.conn.execute(f"SELECT '{name}'::regtype::oid::int").fetchone()[0]


@pytest.mark.parametrize("policy", ["design", "nowrite"])
@pytest.mark.parametrize("type_name, value", [("public.checked", b"5"), ("public.guarded", b"(5)"),
                                              ("public.checked[]", b"{5}")])
def test_a_parameter_declared_of_a_type_whose_conversion_deletes_is_refused(hostile, server, policy, type_name, value):
    # the server converts the value bound to the declared type at the Bind: a domain's CHECK runs
    server.reset()
    agent = Agent(hostile, GROUPS[policy], "extended")
    try:
        before = server.state()
        agent.rc.send(m.Parse("q", "SELECT 1 WHERE $1 IS NULL", (_type_oid(server, type_name),)).encode()
                      + m.Bind("", "q", (), (value,)).encode() + m.Execute("").encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
    finally:
        agent.close()
    assert_refused(answer, f"Parse with a parameter of {type_name}")
    assert "is declared of" in errors(answer)[0].message
    assert server.state() == before


def test_a_parameter_declared_of_a_harmless_type_of_the_databases_own_runs(hostile, server):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "extended")
    try:
        agent.rc.send(m.Parse("q", "SELECT $1 + 1", (_type_oid(server, "public.plain"),)).encode()
                      + m.Bind("", "q", (), (b"5",)).encode() + m.Execute("").encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
    finally:
        agent.close()
    assert not errors(answer), answer
    assert [r.values[0] for r in answer if isinstance(r, m.DataRow)] == [b"6"]


def test_a_startup_packet_naming_search_path_twice_is_refused(hostile, server):
    # the server takes the last value; a pgwarden that took the first read `things` as public.things
    rc = RawClient(hostile.host, hostile.port)
    try:
        rc.send(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", DB), ("search_path", "public"),
                                                  ("search_path", "secret"))).encode())
        answer = rc.recv_message()
    finally:
        rc.close()
    assert isinstance(answer, m.ErrorResponse) and answer.sqlstate == "08P01", answer
    assert 'names the parameter "search_path" more than once' in answer.message


def _parse_bind_execute(sql: str, name: str = "") -> bytes:
    return m.Parse(name, sql).encode() + m.Bind("", name).encode() + m.Execute("").encode()


def test_a_sync_during_copy_from_stdin_owes_no_answer(hostile, server):
    # libpq's way with a COPY through the extended protocol: Execute and Sync at once, the data,
    # CopyDone and another Sync. The server ignores the first Sync: one ReadyForQuery in all, and
    # the statements after it are answered as what they are.
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "simple")
    try:
        agent.rc.send(_parse_bind_execute("COPY plain_t FROM STDIN") + m.Sync().encode()
                      + m.CopyData(b"1\n2\n").encode() + m.CopyDone().encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
        assert not errors(answer), answer
        assert sum(isinstance(x, m.ReadyForQuery) for x in answer) == 1
        counted = agent.run("SELECT count(*) FROM plain_t")
        assert [r.values[0] for r in counted if isinstance(r, m.DataRow)] == [b"2"], counted
        agent.rc.send(_parse_bind_execute("SELECT 41 + 1") + m.Sync().encode())
        answer = agent.rc.until_ready()
        assert [r.values[0] for r in answer if isinstance(r, m.DataRow)] == [b"42"], answer
        # nothing owed any more: an answer owed to the ignored Sync would still be waited for
        assert hostile.call(lambda: [c.relay.idle for c in hostile.app.connections
                                     if c.relay is not None and not c.relay.closing]) == [True]
    finally:
        agent.close()


def _desync_then_bind(agent: Agent, statement: str) -> list:
    """A Sync during COPY FROM STDIN, then a simple Query's error: had pgwarden owed an answer to
    the ignored Sync, it would take the Query's error for an extended one and think the server
    skipping until Sync, and forward the Bind after it undecided."""
    rc = agent.rc
    rc.send(_parse_bind_execute("COPY plain_t FROM STDIN") + m.Sync().encode() + m.CopyData(b"1\n").encode()
            + m.CopyDone().encode() + m.Sync().encode())
    assert not errors(rc.until_ready())
    rc.send(_parse_bind_execute("SELECT 1") + m.Query("SELECT 1/0").encode())
    rc.until_ready()
    rc.send(m.Bind("", statement).encode() + m.Execute("").encode() + m.Sync().encode())
    return rc.until_ready()


@pytest.mark.parametrize("prepare", ["PREPARE p AS SELECT n FROM things", "PREPARE p AS DELETE FROM things WHERE id > 0"])
def test_a_sync_during_copy_does_not_let_an_sql_prepared_statement_be_bound(hostile, server, prepare):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "simple")
    try:
        assert not errors(agent.run(prepare))
        assert not errors(agent.run("SET search_path = secret, public"))
        before = server.state()
        answer = _desync_then_bind(agent, "p")
    finally:
        agent.close()
    assert not any(isinstance(x, m.DataRow) for x in answer), answer
    assert server.state() == before


def test_a_sync_during_copy_does_not_skip_a_named_statements_new_decision(hostile, server):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "simple")
    try:
        agent.rc.send(m.Parse("q", "SELECT n FROM things").encode() + m.Sync().encode())
        assert not errors(agent.rc.until_ready())
        assert not errors(agent.run("SET search_path = secret, public"))
        answer = _desync_then_bind(agent, "q")
    finally:
        agent.close()
    assert_refused(answer, "Bind of q after the search_path moved")


def test_a_message_other_than_copy_data_during_copy_from_stdin_ends_the_session(hostile, server):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], "simple")
    try:
        agent.rc.send(m.Query("COPY plain_t FROM STDIN").encode())
        assert isinstance(agent.rc.recv_message(), m.CopyInResponse)
        agent.rc.send(m.Query("SELECT 1").encode())
        answer = agent.rc.recv_message()
    finally:
        agent.close()
    assert isinstance(answer, m.ErrorResponse) and "during COPY FROM STDIN" in answer.message, answer


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_explain_execute_that_moves_the_search_path_is_followed(hostile, server, protocol):
    server.reset()
    agent = Agent(hostile, GROUPS["design"], protocol)
    try:
        assert not errors(agent.run(_PREPARED_TEXT))
        agent.run("EXPLAIN EXECUTE p(set_config('search_path', 'secret', false))")
        answer = agent.run("SELECT n FROM things")
    finally:
        agent.close()
    assert_refused(answer, "SELECT n FROM things with secret first on the search_path")


def test_explain_execute_of_a_protocol_statement_does_not_lift_read_only(hostile, server):
    # READ_ONLY refuses PREPARE; a statement Parsed through the protocol serves as well
    server.reset()
    agent = Agent(hostile, GROUPS["readonly"], "simple")
    try:
        agent.rc.send(m.Parse("q", "SELECT 1 WHERE $1::text IS NOT NULL").encode() + m.Sync().encode())
        assert not errors(agent.rc.until_ready())
        before = server.state()
        answer = agent.run("EXPLAIN EXECUTE q(set_config('default_transaction_read_only', 'off', false)); COMMIT; "
                           "EXPLAIN EXECUTE q(public.purge()::text)")
    finally:
        agent.close()
    assert_refused(answer, "EXPLAIN EXECUTE q(set_config(...))")
    assert server.state() == before


# ---------------------------------------------------------------------- round five: names the protocol took

APPROVE_DELETES_BLOCK_UNKNOWN = [{"name": "p", "when": {"groups": ["ai-agents"]}, "rules": [
    {"name": "deletes", "approve": {"statements": ["delete"], "mode": "retry"}},
    {"name": "new-things", "approve": {"statements": ["insert"], "tables": ["public.things"], "mode": "retry"}},
    {"name": "unparsable", "block": {"statements": ["unknown"]}},
]}]


@pytest.fixture
def approving_and_blocking(make_pgwarden, hostile_db, server):
    """A pgwarden whose policy holds DELETEs for approval and refuses what it cannot analyse."""
    server.reset()
    return make_pgwarden(policies=APPROVE_DELETES_BLOCK_UNKNOWN, upstream={"database": DB})


def _protocol(agent: Agent, *messages) -> list:
    agent.rc.send(b"".join(x.encode() for x in messages) + m.Sync().encode())
    return agent.rc.until_ready()


def test_sql_execute_of_a_name_a_protocol_parse_took_after_close(approving_and_blocking, server):
    # Red team five: the block plugin knew `p` as SQL's `PREPARE p AS SELECT 1`; the protocol
    # closed it and Parsed a DELETE under the name (a Parse held for approval is forwarded: its
    # Binds are decided); SQL's `EXECUTE p` ran the DELETE, judged by the SELECT.
    before = server.state()
    agent = Agent(approving_and_blocking, "ai-agents", "simple")
    try:
        assert not errors(agent.run("PREPARE p AS SELECT 1"))
        assert not errors(_protocol(agent, m.Close("S", "p")))
        assert not errors(_protocol(agent, m.Parse("p", "DELETE FROM things")))
        assert_refused(agent.run("EXECUTE p"), "EXECUTE p")
    finally:
        agent.close()
    assert server.state() == before


def test_sql_execute_of_a_name_a_protocol_parse_took_before_a_failed_prepare(approving_and_blocking, server):
    # The Parse first; SQL's PREPARE of the name fails on the server (it exists), but the plugin
    # had taken the SELECT for the name's body.
    before = server.state()
    agent = Agent(approving_and_blocking, "ai-agents", "simple")
    try:
        assert not errors(_protocol(agent, m.Parse("q", "DELETE FROM things")))
        assert errors(agent.run("PREPARE q AS SELECT 1"))[0].sqlstate == "42P05"
        assert_refused(agent.run("EXECUTE q"), "EXECUTE q")
        assert_refused(agent.run("EXPLAIN ANALYZE EXECUTE q"), "EXPLAIN ANALYZE EXECUTE q")
    finally:
        agent.close()
    assert server.state() == before


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_copy_from_stdin_into_a_table_whose_inserts_wait_for_approval_waits_too(approving_and_blocking, server,
                                                                               protocol):
    # COPY ... FROM inserts rows as INSERT does: an approve rule on INSERT into the table covers it
    # (it had gone through, `copy_from` being no `insert`).
    before = server.state()
    agent = Agent(approving_and_blocking, "ai-agents", protocol)
    try:
        answer = agent.run("COPY things (id, n) FROM STDIN")
        assert not any(isinstance(x, m.CopyInResponse) for x in answer), answer
        _assert_held(answer, "COPY things FROM STDIN")
        assert not errors(agent.run("COPY things TO STDOUT"))
    finally:
        agent.close()
    assert server.state() == before


@pytest.mark.parametrize("message", [
    lambda name: m.Parse(name, "SELECT 1"),
    lambda name: m.Bind(name, ""),
    lambda name: m.Bind("", name),
    lambda name: m.Execute(name, 0),
    lambda name: m.Describe("S", name),
    lambda name: m.Close("S", name),
], ids=["parse", "bind-portal", "bind-statement", "execute", "describe", "close"])
def test_a_name_the_server_would_cut_ends_the_session(hostile, server, message):
    # The server tells statement and portal names apart by their first 63 bytes: a Close of
    # 'a' * 63 + 'Z' closed the statement pgwarden knew as 'a' * 63 + 'Y' (the one it had
    # decided), which a Parse of an approval-held INSERT then took.
    agent = Agent(hostile, GROUPS["design"], "simple")
    try:
        assert not errors(_protocol(agent, m.Parse("a" * 63, "SELECT 1")))  # 63 bytes: the server's whole name
        agent.rc.send(message("a" * 63 + "Y").encode() + m.Sync().encode())
        answer = agent.rc.until_ready()
        assert agent.rc.recv_message() is None and not any(isinstance(x, m.ReadyForQuery) for x in answer), answer
    finally:
        agent.close()
    refusals = errors(answer)
    assert refusals and "longer than 63 bytes" in refusals[0].message, answer


def test_a_name_the_server_converts_past_63_bytes_ends_the_session(hostile, server):
    # In LATIN1, 'é' is one byte; the server (UTF-8) stores it as two: 40 of them are 80 bytes there.
    rc = RawClient(hostile.host, hostile.port)
    try:
        assert isinstance(rc.login(hostile.token(groups=[GROUPS["design"]]), database=DB,
                                   client_encoding="LATIN1")[-1], m.ReadyForQuery)
        body = ("é" * 40).encode("latin-1") + b"\0SELECT 1\0\0\0"
        rc.send(m.frame(b"P", body) + m.Sync().encode())
        answer = rc.until_ready()
        assert rc.recv_message() is None and not any(isinstance(x, m.ReadyForQuery) for x in answer), answer
    finally:
        rc.close()
    assert errors(answer) and "longer than 63 bytes" in errors(answer)[0].message, answer


@pytest.mark.parametrize("deallocate", ["SELECT 1/0; DEALLOCATE q", "DEALLOCATE q; DROP TABLE no_such_table"])
def test_a_deallocate_that_does_not_run_leaves_the_protocol_statement_unknown(approving_and_blocking, server,
                                                                              deallocate):
    # The name's DEALLOCATE is judged, not run (an earlier statement fails, or pgwarden refuses the
    # string); the PREPARE after it fails on the server (the name is held), so EXECUTE q runs the
    # protocol's DELETE.
    before = server.state()
    agent = Agent(approving_and_blocking, "ai-agents", "simple")
    try:
        assert not errors(_protocol(agent, m.Parse("q", "DELETE FROM things")))
        agent.run(deallocate)
        agent.run("PREPARE q AS SELECT 1")
        assert_refused(agent.run("EXECUTE q"), "EXECUTE q")
    finally:
        agent.close()
    assert server.state() == before


@pytest.mark.parametrize("reader", ["cursor_to_xml('c', 100, false, false, '')",
                                    "cursor_to_xmlschema('c', false, false, '') IS NULL, cursor_to_xml('c', 100, "
                                    "false, false, '')"], ids=["cursor_to_xml", "and-xmlschema"])
def test_a_protocol_portal_run_by_cursor_to_xml_is_counted(hostile, server, reader):
    # cursor_to_xml FETCHes from the portal it names, the protocol's too: the write bound there
    # and never Executed runs then, and is counted as FETCH's is (it had updated every row).
    server.reset()
    before = server.state()
    agent = Agent(hostile, GROUPS["capped"], "simple")
    try:
        assert not errors(agent.run("BEGIN"))  # (the portal lives until the transaction ends)
        assert not errors(_protocol(agent, m.Parse("", "UPDATE things SET n = n + 1 WHERE id = abs(id) RETURNING id"),
                                    m.Bind("c", "")))
        answer = agent.run(f"SELECT {reader}")
        agent.run("COMMIT")
    finally:
        agent.close()
    refusals = errors(answer)
    assert refusals and refusals[0].sqlstate == "42501" and "more than the 2 allowed" in refusals[0].message, answer
    assert server.state() == before


def test_a_simple_query_the_server_skips_after_an_error_is_skipped_here_too(approving_and_blocking, server):
    # After an extended-protocol error the server skips everything up to the Sync, a Query too,
    # unanswered: pgwarden had taken the Sync's ReadyForQuery for the Query's, read every later
    # answer one behind, and taken a re-Parse the server refused (42P05) for done; the Bind of
    # that name then ran the DELETE held there for approval.
    before = server.state()
    agent = Agent(approving_and_blocking, "ai-agents", "simple")
    try:
        assert not errors(_protocol(agent, m.Parse("n1", "DELETE FROM things")))
        agent.rc.send(b"".join(x.encode() for x in (m.Parse("", "SELECT 1/0"), m.Bind("", ""), m.Execute("", 0),
                                                     m.Flush())))
        while not isinstance(agent.rc.recv_message(), m.ErrorResponse):  # (the server skips to the Sync now)
            pass
        answer = _protocol(agent, m.Query("SELECT 42"))
        assert [type(x) for x in answer] == [m.ReadyForQuery], answer  # the Sync's only: the Query skipped
        answer = _protocol(agent, m.Parse("n1", "SELECT 1"))
        assert errors(answer) and errors(answer)[0].sqlstate == "42P05", answer
        answer = _protocol(agent, m.Bind("", "n1"), m.Execute("", 0))
        assert errors(answer), answer  # n1 is still the DELETE: its Bind waits for approval, refused here
        assert not errors(agent.run("SELECT 42"))  # and the session reads its answers in step
    finally:
        agent.close()
    assert server.state() == before


def test_a_simple_query_after_the_sync_goes_on(approving_and_blocking, server):
    agent = Agent(approving_and_blocking, "ai-agents", "simple")
    try:
        answer = _protocol(agent, m.Parse("", "SELECT 1/0"), m.Bind("", ""), m.Execute("", 0))
        assert errors(answer) and isinstance(answer[-1], m.ReadyForQuery)
        assert not errors(agent.run("SELECT 42"))
    finally:
        agent.close()
