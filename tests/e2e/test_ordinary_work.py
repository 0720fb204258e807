"""Ordinary work passes: what an AI coding agent, and the clients and tools it uses, send every day.

The red-team corpora (test_hostile*.py, test_mask_*.py) make sure pgwarden refuses what it must;
this one makes sure it does not refuse what it must not. One pgwarden in front of a PostgreSQL of
its own holding `pgwarden demo`'s sample data, logged in upstream as the demo's owner role (an
ordinary one, not a superuser), with three policies, each for a group of its own:

* ``demo``: `pgwarden demo`'s policy, taken from the demo's own config text (pgwarden/demo.py);
* ``typical``: an agent policy as docs/policies.md and docs/configuration.md show one: DDL, roles,
  system and server files blocked, deletes approved by a person, unfiltered writes blocked, a
  `rows_written` cap, ssn and email masked;
* ``masking``: everything allowed, ssn, email and card_number masked: reads of them come back
  masked, never refused.

Each statement of the corpus is run through real clients (psql, psycopg 3, asyncpg) and must pass;
where a policy refuses one by design (a right refusal an agent may trip over: NOTIFY under the
demo's `no-side-effects`, COPY FROM under a `rows_written` cap, temporary tables under `no-ddl`),
the case says which rule, and the test checks that the error names it and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import os
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import attrs
import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from pgwarden import demo
from pgwarden.approvals_cli import ApiClient
from pgwarden.testing.postgres import TempPostgres, _bin
from pgwarden.testing.waiting import wait_until
from pgwarden_plugins.mask import NOTIFICATION_WITHHELD

# ---------------------------------------------------------------------- the policies

#: the groups of the three policies' tokens
GROUPS = {"demo": "ai-agents", "typical": "typical-agents", "masking": "maskers"}
APPROVERS = demo.APPROVERS

TYPICAL = {
    "name": "typical", "when": {"groups": [GROUPS["typical"]]}, "default": "allow",
    "rules": [
        {"name": "no-ddl", "block": {"statements": ["ddl", "truncate", "grant", "role", "system"]},
         "reason": "schema changes go through migrations"},
        {"name": "no-files", "block": {"statements": ["copy_program", "copy_file", "server_files"]}},
        {"name": "unfiltered-writes", "block": {"statements": ["delete", "update"], "where": "absent"}},
        {"name": "deletes", "approve": {"statements": ["delete"]}, "reason": "deletes need a human"},
        {"name": "budget", "limit": {"rows_written": 100, "statement_timeout": "30s"}},
        {"name": "pii", "mask": {"columns": ["public.users.ssn"], "with": "redact"}},
        {"name": "contact", "mask": {"columns": ["public.users.email"], "with": "email"}},
        {"name": "vault", "mask": {"columns": ["public.vault.codes"], "with": "redact"}},
    ],
}
MASKING = {
    "name": "masking", "when": {"groups": [GROUPS["masking"]]}, "default": "allow",
    "rules": [
        {"name": "pii", "mask": {"columns": ["public.users.ssn"], "with": "redact"}},
        {"name": "contact", "mask": {"columns": ["public.users.email"], "with": "email"}},
        {"name": "cards", "mask": {"columns": ["public.users.card_number"], "with": "partial", "keep_last": 4}},
        {"name": "vault", "mask": {"columns": ["public.vault.codes"], "with": "redact"}},
        {"name": "notes", "mask": {"columns": ["public.*.secret_note"], "with": "redact"}},
    ],
}
#: the name each policy has in the config (the demo's own is `demo.POLICY`), as refusals name it
TITLES = {"demo": demo.POLICY, "typical": "typical", "masking": "masking"}
#: the columns each policy masks, of public.users
MASKED = {"demo": {"ssn", "card_number"}, "typical": {"ssn", "email"}, "masking": {"ssn", "email", "card_number"}}
POLICY_NAMES = list(GROUPS)

# What the corpus needs beside the demo's sample data, made by the demo's owner role.
EXTRA = """
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
CREATE TYPE money_pair AS (amount numeric, currency text);
CREATE TABLE tickets (
    id      int PRIMARY KEY,
    status  order_status NOT NULL DEFAULT 'new',
    price   money_pair,
    tags    text[] NOT NULL DEFAULT '{}',
    payload jsonb NOT NULL DEFAULT '{}',
    opened  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tickets (id, status, price, tags, payload, opened)
SELECT g, (ARRAY['new', 'paid', 'shipped']::order_status[])[g % 3 + 1], ROW(g * 1.5, 'EUR')::money_pair,
       ARRAY['t' || g, 'common'], jsonb_build_object('n', g, 'kind', CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END,
       'items', jsonb_build_array(g, g + 1)), timestamptz '2026-01-01' + g * interval '1 day'
FROM generate_series(1, 20) g;
CREATE TABLE categories (id int PRIMARY KEY, parent_id int REFERENCES categories (id), name text NOT NULL);
INSERT INTO categories VALUES (1, NULL, 'root'), (2, 1, 'books'), (3, 2, 'novels'), (4, 1, 'music');
CREATE TABLE scratch (id int PRIMARY KEY, note text, updated_at timestamptz);
CREATE INDEX orders_user_id_idx ON orders (user_id);
CREATE VIEW order_totals AS SELECT user_id, count(*) AS n, sum(amount) AS total FROM orders GROUP BY user_id;
CREATE FUNCTION order_count(uid int) RETURNS bigint LANGUAGE sql STABLE
    AS 'SELECT count(*) FROM orders WHERE user_id = uid';
COMMENT ON TABLE orders IS 'what users bought';
CREATE TABLE vault (id int PRIMARY KEY, codes text[] NOT NULL, pins int[] NOT NULL);
INSERT INTO vault VALUES (1, ARRAY['alpha-secret', 'beta-secret'], ARRAY[1111, 2222]),
                         (2, ARRAY['gamma-secret'], ARRAY[3333]);
"""


@pytest.fixture(scope="module")
def demo_pg():
    """A PostgreSQL of its own with the demo's sample data, made as `pgwarden demo` makes it (its
    owner role takes appdb over, so not the session's server): the server and the role's password."""
    pg = TempPostgres()
    pg.start()
    try:
        password = demo.create_sample_data(pg)
        pg.psql(f"SET ROLE {demo.OWNER};" + EXTRA, demo.DATABASE)
        yield pg, password
    finally:
        pg.stop()


def demo_policy(directory: Path, pg: TempPostgres) -> tuple[dict, dict]:
    """The demo's policy and approvals section, read from the config text the demo writes."""
    doc = yaml.safe_load(demo.config_text(directory, pg, directory / "jwks.json", 0, directory / "pw"))
    (policy,) = doc["policies"]
    assert policy["when"] == {"groups": [GROUPS["demo"]]}
    return policy, doc["approvals"]


@contextlib.contextmanager
def ordinary_pgwarden(demo_pg, signing_keys, reactor_thread, tmp_path_factory, extra_policies=()):
    """One pgwarden, the three policies (and ``extra_policies`` after them), in front of the demo's
    database: this module's and test_ordinary_tools.py's."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    pg, password = demo_pg
    workdir = tmp_path_factory.mktemp("ordinary")
    policy, approvals = demo_policy(workdir, pg)
    pwfile = workdir / "owner-password"
    pwfile.write_text(password + "\n")
    doc = base_config(pg, signing_keys, workdir, policies=[policy, TYPICAL, MASKING, *extra_policies],
                      upstream={"user": demo.OWNER, "password_file": str(pwfile)},
                      approvals={**approvals, "timeout_s": 60})
    with module_pgwarden(doc, signing_keys, reactor_thread, admin=True) as rp:
        yield rp


@pytest.fixture(scope="module")
def running(demo_pg, signing_keys, reactor_thread, tmp_path_factory):
    """One pgwarden for the module, the three policies, in front of the demo's database."""
    with ordinary_pgwarden(demo_pg, signing_keys, reactor_thread, tmp_path_factory) as rp:
        yield rp


@pytest.fixture(scope="module")
def direct(demo_pg):
    """The demo's database without pgwarden, as its owner: what the server holds."""
    pg, password = demo_pg
    with psycopg.connect(pg.dsn(user=demo.OWNER, password=password, database=demo.DATABASE),
                         autocommit=True) as conn:
        yield conn


def dsn(running, policy: str) -> str:
    return running.dsn(running.token(groups=[GROUPS[policy]]))


def connect(running, policy: str, **kw) -> psycopg.Connection:
    return psycopg.connect(dsn(running, policy), **{"autocommit": True, **kw})


def psql(running, policy: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", dsn(running, policy), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


def passed(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr + done.stdout
    return done.stdout


def refusal_of(excinfo) -> psycopg.errors.Diagnostic:
    diag = excinfo.value.diag
    assert diag.sqlstate == "42501" and diag.message_primary.startswith("pgwarden: blocked: "), diag.message_primary
    return diag


def assert_refused_by(excinfo, policy: str, rule: str) -> None:
    """A right refusal: the error names the policy and the rule, and says why (a reason and a hint)."""
    diag = refusal_of(excinfo)
    assert diag.message_detail == f"Refused by policy '{TITLES[policy]}', rule '{rule}'.", diag.message_detail
    assert len(diag.message_primary) > len("pgwarden: blocked: ") + 10, diag.message_primary
    assert diag.message_hint, f"no hint for {rule}: {diag.message_primary}"


# ---------------------------------------------------------------------- ordinary SQL


@attrs.frozen
class Sql:
    sql: str
    #: a policy that refuses it by design: policy -> the rule that does (a right refusal)
    refused: dict = attrs.field(factory=dict)
    params: tuple | None = None
    #: refused by pgwarden's core under every policy (a control of its own, not a rule's): what
    #: the error says
    core: str | None = None


S = Sql
CORPUS: list[Sql] = [
    # the basics an agent starts with
    S("SELECT current_user, current_database(), current_schema()"),
    S("SELECT version()"),
    S("SHOW work_mem"),
    S("SHOW server_version"),
    S("SET statement_timeout = '5s'"),
    # pgwarden names the session after the identity; the client's name goes in the connection
    # string (test_application_name_in_the_connection_string)
    S("SET application_name = 'my-agent'", core="application_name cannot be changed during the session"),
    S("SET search_path = public"),
    S("SET search_path TO \"$user\", public"),
    S("SET TIME ZONE 'UTC'"),
    S("RESET statement_timeout"),
    S("SELECT now(), current_date, clock_timestamp() > now() - interval '1 hour'"),
    # reads of the sample data
    S("SELECT * FROM users ORDER BY id LIMIT 5"),
    S("SELECT id, name FROM users WHERE id = %s", params=(3,)),
    S("SELECT count(*) FROM orders WHERE amount > %s AND created_at > now() - %s::interval",
      params=(decimal.Decimal("10.5"), "7 days")),
    S("SELECT u.name, count(o.id), sum(o.amount) FROM users u LEFT JOIN orders o ON o.user_id = u.id "
      "GROUP BY u.name ORDER BY 3 DESC NULLS LAST LIMIT 10"),
    S("SELECT * FROM order_totals ORDER BY total DESC LIMIT 3"),
    S("SELECT order_count(1)"),
    # CTEs, recursive too
    S("WITH big AS (SELECT user_id, amount FROM orders WHERE amount > 250) "
      "SELECT user_id, count(*) FROM big GROUP BY user_id ORDER BY 2 DESC LIMIT 5"),
    S("WITH RECURSIVE tree AS (SELECT id, parent_id, name, 1 AS depth FROM categories WHERE parent_id IS NULL "
      "UNION ALL SELECT c.id, c.parent_id, c.name, t.depth + 1 FROM categories c JOIN tree t ON c.parent_id = t.id) "
      "SELECT * FROM tree ORDER BY depth, id"),
    S("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT sum(i) FROM n"),
    # window functions
    S("SELECT id, user_id, amount, row_number() OVER (PARTITION BY user_id ORDER BY amount DESC), "
      "sum(amount) OVER (PARTITION BY user_id), lag(amount) OVER w, rank() OVER w "
      "FROM orders WINDOW w AS (ORDER BY created_at) ORDER BY id LIMIT 20"),
    S("SELECT user_id, avg(total) OVER (ORDER BY user_id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
      "FROM order_totals"),
    # JSON / JSONB
    S("SELECT payload->>'kind', payload->'items'->0, payload #>> '{items,1}', jsonb_typeof(payload) "
      "FROM tickets WHERE payload @> '{\"kind\": \"even\"}' AND payload ? 'n' ORDER BY id"),
    S("SELECT jsonb_agg(jsonb_build_object('id', id, 'tags', tags)) FROM tickets WHERE id < 4"),
    S("SELECT t.id, e.key, e.value FROM tickets t, jsonb_each(t.payload) e WHERE t.id = 1"),
    S("SELECT jsonb_path_query_array(payload, '$.items[*] ? (@ > 5)') FROM tickets ORDER BY id LIMIT 5"),
    S("SELECT json_build_object('a', 1, 'b', ARRAY[1, 2]), '{\"a\": {\"b\": 2}}'::json -> 'a', "
      "to_jsonb(row(1, 'x')), jsonb_set('{\"a\": 1}', '{a}', '2'), jsonb_pretty('{\"a\": 1}')"),
    S("SELECT row_to_json(o) FROM orders o ORDER BY id LIMIT 2"),
    S("SELECT %s::jsonb -> 'k'", params=(Jsonb({"k": [1, 2]}),)),
    # arrays
    S("SELECT id, tags, array_length(tags, 1), tags[1], 'common' = ANY (tags) FROM tickets WHERE tags && "
      "ARRAY['t1', 't2'] ORDER BY id"),
    S("SELECT unnest(ARRAY[3, 1, 2]) AS x ORDER BY x"),
    S("SELECT array_agg(id ORDER BY id), array_to_string(array_agg(DISTINCT status::text), ',') FROM tickets"),
    S("SELECT * FROM orders WHERE id = ANY (%s) ORDER BY id", params=([1, 2, 3],)),
    # LATERAL, DISTINCT ON, GROUPING SETS, FILTER
    S("SELECT u.id, last.amount FROM users u CROSS JOIN LATERAL (SELECT amount FROM orders o WHERE o.user_id = u.id "
      "ORDER BY created_at DESC LIMIT 1) last ORDER BY u.id LIMIT 5"),
    S("SELECT DISTINCT ON (user_id) user_id, id, amount FROM orders ORDER BY user_id, created_at DESC"),
    S("SELECT user_id, date_trunc('day', created_at), sum(amount) FROM orders "
      "GROUP BY GROUPING SETS ((user_id), (date_trunc('day', created_at)), ()) ORDER BY 1, 2 LIMIT 10"),
    S("SELECT user_id, sum(amount) FROM orders GROUP BY ROLLUP (user_id) ORDER BY 1 LIMIT 5"),
    S("SELECT count(*) FILTER (WHERE amount > 100), count(*) FILTER (WHERE amount <= 100) FROM orders"),
    # date/time, generate_series, strings, regex
    S("SELECT date_trunc('month', now()) - interval '1 month', extract(dow FROM created_at), "
      "age(now(), created_at), created_at::date, to_char(created_at, 'YYYY-MM-DD HH24:MI') FROM orders LIMIT 3"),
    S("SELECT d::date, count(o.id) FROM generate_series(now() - interval '3 days', now(), interval '1 day') d "
      "LEFT JOIN orders o ON date_trunc('day', o.created_at) = date_trunc('day', d) GROUP BY 1 ORDER BY 1"),
    S("SELECT generate_series(1, 5), generate_series('2026-01-01'::date, '2026-01-03'::date, '1 day')"),
    S("SELECT upper(name), lower(name), length(name), substr(name, 1, 3), split_part(name, ' ', 2), "
      "replace(name, 'User', 'U'), concat_ws('-', id, name), format('%%s/%%s', id, name), left(name, 2), "
      "trim(both ' ' from name), position('r' in name), initcap(name), md5(name) FROM users ORDER BY id LIMIT 3"),
    S("SELECT name FROM users WHERE name ~ '^User [0-9]$' OR name ~* 'user 1[0-2]' ORDER BY id"),
    S("SELECT regexp_replace(name, '[0-9]+', '#'), regexp_matches(name, '([0-9]+)'), "
      "name SIMILAR TO 'User%%', name ILIKE 'user 1%%' FROM users ORDER BY id LIMIT 3"),
    S("SELECT string_agg(name, ', ' ORDER BY id) FROM users WHERE id <= 3"),
    # EXPLAIN
    S("EXPLAIN SELECT * FROM orders WHERE user_id = 3"),
    S("EXPLAIN (FORMAT JSON) SELECT u.name, o.amount FROM users u JOIN orders o ON o.user_id = u.id"),
    S("EXPLAIN ANALYZE SELECT count(*) FROM orders WHERE amount > 100"),
    S("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM orders ORDER BY created_at DESC LIMIT 5"),
    # information_schema and pg_catalog as tools read them
    S("SELECT table_schema, table_name, table_type FROM information_schema.tables "
      "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"),
    S("SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
      "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position", params=("orders",)),
    S("SELECT tc.constraint_name, tc.constraint_type, kcu.column_name, ccu.table_name AS foreign_table "
      "FROM information_schema.table_constraints tc "
      "JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name "
      "LEFT JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name "
      "WHERE tc.table_name = 'orders'"),
    S("SELECT * FROM pg_tables WHERE schemaname = 'public'"),
    S("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders'"),
    S("SELECT relname, n_live_tup, seq_scan, idx_scan FROM pg_stat_user_tables ORDER BY relname"),
    S("SELECT pg_size_pretty(pg_total_relation_size('orders')), pg_relation_size('users')"),
    S("SELECT datname FROM pg_database WHERE NOT datistemplate"),
    S("SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database()"),
    S("SELECT name, setting, unit FROM pg_settings WHERE name IN ('work_mem', 'max_connections')"),
    S("SELECT extname, extversion FROM pg_extension"),
    S("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'orders'::regclass"),
    S("SELECT pg_get_viewdef('order_totals'::regclass, true)"),
    S("SELECT pg_get_functiondef('order_count'::regproc)"),
    S("SELECT obj_description('orders'::regclass, 'pg_class'), col_description('orders'::regclass, 1)"),
    S("SELECT pg_typeof(now()), 'orders'::regclass::oid > 0, to_regclass('public.nothing_here')"),
    S("SELECT has_table_privilege('orders', 'SELECT'), has_schema_privilege('public', 'USAGE')"),
    # SQLAlchemy 2.0's reflection (PGDialect.get_columns, _get_table_oids, get_pk_constraint, get_indexes)
    S("SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
      "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relkind = "
      "ANY (ARRAY['r', 'p']) AND pg_catalog.pg_class.relpersistence != 't' "
      "AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != "
      "'pg_catalog'"),
    S("SELECT pg_catalog.pg_attribute.attname AS name, pg_catalog.format_type(pg_catalog.pg_attribute.atttypid, "
      "pg_catalog.pg_attribute.atttypmod) AS format_type, (SELECT pg_catalog.pg_get_expr("
      "pg_catalog.pg_attrdef.adbin, pg_catalog.pg_attrdef.adrelid) FROM pg_catalog.pg_attrdef WHERE "
      "pg_catalog.pg_attrdef.adrelid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attrdef.adnum = "
      "pg_catalog.pg_attribute.attnum AND pg_catalog.pg_attribute.atthasdef) AS \"default\", "
      "pg_catalog.pg_attribute.attnotnull AS not_null, pg_catalog.pg_class.relname AS table_name, "
      "pg_catalog.pg_description.description AS comment, pg_catalog.pg_attribute.attgenerated AS generated, "
      "(SELECT json_build_object('always', pg_catalog.pg_attribute.attidentity = 'a', 'start', "
      "pg_catalog.pg_sequence.seqstart, 'increment', pg_catalog.pg_sequence.seqincrement, 'minvalue', "
      "pg_catalog.pg_sequence.seqmin, 'maxvalue', pg_catalog.pg_sequence.seqmax, 'cache', "
      "pg_catalog.pg_sequence.seqcache, 'cycle', pg_catalog.pg_sequence.seqcycle) AS json_build_object_1 "
      "FROM pg_catalog.pg_sequence WHERE pg_catalog.pg_attribute.attidentity != '' AND "
      "pg_catalog.pg_sequence.seqrelid = CAST(CAST(pg_catalog.pg_get_serial_sequence(CAST(CAST("
      "pg_catalog.pg_attribute.attrelid AS REGCLASS) AS TEXT), pg_catalog.pg_attribute.attname) AS REGCLASS) "
      "AS OID)) AS identity_options FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute ON "
      "pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_attribute.attnum > 0 AND "
      "NOT pg_catalog.pg_attribute.attisdropped LEFT OUTER JOIN pg_catalog.pg_description ON "
      "pg_catalog.pg_description.objoid = pg_catalog.pg_attribute.attrelid AND pg_catalog.pg_description.objsubid "
      "= pg_catalog.pg_attribute.attnum JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = "
      "pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm']) "
      "AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != "
      "'pg_catalog' AND pg_catalog.pg_class.relname IN ('users', 'orders') ORDER BY pg_catalog.pg_class.relname, "
      "pg_catalog.pg_attribute.attnum"),
    S("SELECT attr.conrelid, array_agg(CAST(attr.attname AS TEXT) ORDER BY attr.ord) AS cols, attr.conname, "
      "min(attr.description) AS description FROM (SELECT con.conrelid AS conrelid, con.conname AS conname, "
      "con.description AS description, pg_catalog.pg_attribute.attname AS attname, con.ord AS ord FROM "
      "pg_catalog.pg_attribute JOIN (SELECT pg_catalog.pg_constraint.conrelid AS conrelid, "
      "pg_catalog.pg_constraint.conname AS conname, unnest(pg_catalog.pg_constraint.conkey) AS attnum, "
      "generate_subscripts(pg_catalog.pg_constraint.conkey, 1) AS ord, pg_catalog.pg_description.description "
      "AS description FROM pg_catalog.pg_constraint LEFT OUTER JOIN pg_catalog.pg_description ON "
      "pg_catalog.pg_description.objoid = pg_catalog.pg_constraint.oid WHERE pg_catalog.pg_constraint.contype "
      "= 'p' AND pg_catalog.pg_constraint.conrelid IN ('orders'::regclass, 'users'::regclass)) AS con ON "
      "pg_catalog.pg_attribute.attnum = con.attnum AND pg_catalog.pg_attribute.attrelid = con.conrelid) AS attr "
      "GROUP BY attr.conrelid, attr.conname ORDER BY attr.conrelid, attr.conname"),
    S("SELECT pg_catalog.pg_index.indrelid, cls_idx.relname AS relname_index, pg_catalog.pg_index.indisunique, "
      "pg_catalog.pg_constraint.conrelid IS NOT NULL AS has_constraint, pg_catalog.pg_index.indoption, "
      "cls_idx.reloptions, pg_catalog.pg_am.amname, CASE WHEN (pg_catalog.pg_index.indpred IS NOT NULL) THEN "
      "pg_catalog.pg_get_expr(pg_catalog.pg_index.indpred, pg_catalog.pg_index.indrelid) END AS filter_definition, "
      "pg_catalog.pg_index.indnkeyatts, pg_catalog.pg_index.indnullsnotdistinct FROM pg_catalog.pg_index JOIN "
      "pg_catalog.pg_class AS cls_idx ON pg_catalog.pg_index.indexrelid = cls_idx.oid JOIN pg_catalog.pg_am ON "
      "cls_idx.relam = pg_catalog.pg_am.oid LEFT OUTER JOIN pg_catalog.pg_constraint ON "
      "pg_catalog.pg_index.indrelid = pg_catalog.pg_constraint.conrelid AND pg_catalog.pg_index.indexrelid = "
      "pg_catalog.pg_constraint.conindid AND pg_catalog.pg_constraint.contype = ANY (ARRAY['p', 'u', 'x']) WHERE "
      "pg_catalog.pg_index.indrelid IN ('orders'::regclass) AND NOT pg_catalog.pg_index.indisprimary "
      "ORDER BY pg_catalog.pg_index.indrelid, cls_idx.relname"),
    S("SELECT t.typname AS name, pg_catalog.format_type(t.typbasetype, t.typtypmod) AS attype, NOT t.typnotnull "
      "AS nullable, t.typdefault AS \"default\", pg_catalog.pg_type_is_visible(t.oid) AS visible, n.nspname AS "
      "schema, e.enumlabel FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_namespace n ON n.oid = "
      "t.typnamespace LEFT JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid WHERE t.typtype IN ('e', 'd') "
      "ORDER BY n.nspname, t.typname, e.enumsortorder"),
    # Django's introspection (get_table_list, get_relations, get_constraints)
    S("SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END, "
      "obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON "
      "n.oid = c.relnamespace WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', "
      "'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)"),
    S("SELECT a1.attname, c2.relname, a2.attname FROM pg_constraint con LEFT JOIN pg_class c1 ON con.conrelid = "
      "c1.oid LEFT JOIN pg_class c2 ON con.confrelid = c2.oid LEFT JOIN pg_attribute a1 ON c1.oid = a1.attrelid "
      "AND a1.attnum = con.conkey[1] LEFT JOIN pg_attribute a2 ON c2.oid = a2.attrelid AND a2.attnum = "
      "con.confkey[1] WHERE c1.relname = %s AND con.contype = 'f' AND c1.relnamespace = c2.relnamespace AND "
      "pg_catalog.pg_table_is_visible(c1.oid)", params=("orders",)),
    S("SELECT c.conname, array(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY cols(colid, arridx) "
      "JOIN pg_attribute AS ca ON cols.colid = ca.attnum WHERE ca.attrelid = c.conrelid ORDER BY cols.arridx), "
      "c.contype, (SELECT fkc.relname || '.' || fka.attname FROM pg_attribute AS fka JOIN pg_class AS fkc ON "
      "fka.attrelid = fkc.oid WHERE fka.attrelid = c.confrelid AND fka.attnum = c.confkey[1]), cl.reloptions "
      "FROM pg_constraint AS c JOIN pg_class AS cl ON c.conrelid = cl.oid WHERE cl.relname = %s AND "
      "pg_catalog.pg_table_is_visible(cl.oid)", params=("orders",)),
    S("SELECT indexname, array_agg(attname ORDER BY arridx), indisunique, indisprimary, array_agg(ordering "
      "ORDER BY arridx), amname, exprdef, s2.attoptions FROM (SELECT c2.relname as indexname, idx.*, attr.attname, "
      "am.amname, CASE WHEN idx.indexprs IS NOT NULL THEN pg_get_indexdef(idx.indexrelid) END AS exprdef, "
      "CASE am.amname WHEN %s THEN CASE (option & 1) WHEN 1 THEN 'DESC' ELSE 'ASC' END END as ordering, "
      "c2.reloptions as attoptions FROM (SELECT * FROM pg_index i, unnest(i.indkey, i.indoption) WITH ORDINALITY "
      "koi(key, option, arridx)) idx LEFT JOIN pg_class c ON idx.indrelid = c.oid LEFT JOIN pg_class c2 ON "
      "idx.indexrelid = c2.oid LEFT JOIN pg_am am ON c2.relam = am.oid LEFT JOIN pg_attribute attr ON "
      "attr.attrelid = c.oid AND attr.attnum = idx.key WHERE c.relname = %s AND "
      "pg_catalog.pg_table_is_visible(c.oid)) s2 GROUP BY indexname, indisunique, indisprimary, amname, exprdef, "
      "attoptions", params=("btree", "orders")),
    # writes an agent makes (to the scratch table; orders' INSERT is the demo's approval case)
    S("INSERT INTO scratch (id, note) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, "
      "updated_at = now() RETURNING id, note", params=(1, "upserted")),
    S("INSERT INTO scratch (id, note) VALUES (2, 'two') ON CONFLICT DO NOTHING"),
    S("UPDATE scratch SET note = %s, updated_at = now() WHERE id = %s", params=("updated", 1)),
    S("UPDATE orders SET amount = amount WHERE id = %s RETURNING id", params=(5,)),
    S("UPDATE users SET name = name WHERE id = %s", params=(4,)),
    S("INSERT INTO users (name, email) VALUES ('New User', 'new@example.com') RETURNING id"),
    S("SELECT * FROM tickets WHERE status = 'paid' AND price IS NOT NULL ORDER BY id"),
    S("SELECT (price).amount, (price).currency, status::text, status < 'shipped' FROM tickets ORDER BY id LIMIT 3"),
    # transactions
    S("BEGIN READ ONLY"),
    S("BEGIN ISOLATION LEVEL REPEATABLE READ"),
    S("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"),
    S("COMMIT"),
    S("ROLLBACK"),
    S("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"),
    S("SELECT pg_backend_pid(), inet_server_port(), txid_current_if_assigned()"),
    S("SELECT gen_random_uuid() IS NOT NULL, random() < 2"),
    # maintenance an agent asks for
    # (the demo's `no-maintenance` blocks every kind of it: VACUUM and ANALYZE too)
    S("ANALYZE orders", refused={"demo": "no-maintenance"}),
    S("VACUUM (ANALYZE) scratch", refused={"demo": "no-maintenance"}),
    S("VACUUM orders", refused={"demo": "no-maintenance"}),
    # temporary tables: DDL, so under `no-ddl` (docs/analysis.md: kinds)
    S("CREATE TEMP TABLE tmp_ids AS SELECT id FROM orders WHERE amount > 100",
      refused={"demo": "no-ddl", "typical": "no-ddl"}),
    S("CREATE TEMP TABLE tmp_work (id int, note text)", refused={"demo": "no-ddl", "typical": "no-ddl"}),
    # what ORMs and drivers send at connection
    S("select pg_catalog.version()"),
    S("select current_schema()"),
    S("show transaction isolation level"),
    S("show standard_conforming_strings"),
    S("SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1"),
    S("SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid WHERE typname = 'hstore'"),
    S("SELECT set_config('TimeZone', 'UTC', false)"),
    S("SELECT pg_sleep(0.01)"),
    # more reads and writes an agent makes
    S("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE amount > 400) ORDER BY id"),
    S("SELECT u.* FROM users u ORDER BY u.id DESC LIMIT 3"),
    S("SELECT count(DISTINCT user_id), min(created_at), max(amount) FROM orders"),
    S("UPDATE users SET email = 'new4@example.com' WHERE id = 4"),
    S("SELECT format('%%I.%%I', 'public', 'users'), quote_literal('it''s'), quote_ident('Name')"),
    # a masked column in WHERE or ORDER BY: its rows would tell its values (an oracle)
    S("SELECT id, name FROM users WHERE email = 'user3@example.com'",
      refused={"typical": "contact", "masking": "contact"}),
    S("SELECT id, name FROM users ORDER BY ssn LIMIT 3",
      refused={"demo": "pii", "typical": "pii", "masking": "pii"}),
    # notifications: other sessions' listeners act on them (docs/analysis.md, round five)
    S("LISTEN jobs"),
    S("UNLISTEN *"),
    S("NOTIFY jobs, 'done'", refused={"demo": "no-side-effects"}),
    S("SELECT pg_notify('jobs', 'done')", refused={"demo": "no-side-effects"}),
]


def _corpus_params():
    out = []
    for index, case in enumerate(CORPUS):
        for policy in POLICY_NAMES:
            out.append(pytest.param(policy, case, id=f"{policy}-{index}-{case.sql[:50]}"))
    return out


@pytest.mark.parametrize("policy, case", _corpus_params())
def test_ordinary_sql_through_psycopg(running, policy: str, case: Sql):
    """Each statement, extended protocol (psycopg), in a fresh session: it passes, or it is refused by
    the rule the case names, with an error that says which and why."""
    with connect(running, policy) as conn:
        if case.core is not None:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                conn.execute(case.sql, case.params)
            diag = refusal_of(excinfo)
            assert case.core in diag.message_primary and diag.message_detail and diag.message_hint, diag
            return
        if policy in case.refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                conn.execute(case.sql, case.params)
            assert_refused_by(excinfo, policy, case.refused[policy])
            return
        try:
            conn.execute(case.sql, case.params)
        except psycopg.errors.InsufficientPrivilege as e:
            pytest.fail(f"refused: {e.diag.message_primary} / {e.diag.message_detail} / {e.diag.message_hint}")


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_ordinary_sql_through_psql_file(running, policy: str, tmp_path):
    """The corpus as one file through `psql -f` (simple protocol, one Query per statement as psql
    sends them): every statement the policy allows runs; the refused ones fail as the cases say."""
    allowed = [c for c in CORPUS if policy not in c.refused and c.params is None and c.core is None]
    script = tmp_path / "work.sql"
    # A transaction statement of the corpus would leave one open: each gets its own close.
    lines = []
    for c in allowed:
        lines.append(c.sql.replace("%%", "%") + ";")
        if c.sql.startswith(("BEGIN", "START")):
            lines.append("ROLLBACK;")
    script.write_text("\n".join(lines) + "\n")
    done = psql(running, policy, "-q", "-f", str(script))
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr, done.stderr
    refused = [c for c in CORPUS if policy in c.refused]
    for c in refused:
        out = psql(running, policy, "-c", c.sql)
        assert out.returncode != 0 and f"rule '{c.refused[policy]}'" in out.stderr, out.stderr


# ---------------------------------------------------------------------- psql's meta-commands


META = [
    ("\\l", demo.DATABASE),
    ("\\dn", "public"),
    ("\\dt", "orders"),
    ("\\dt+", "what users bought"),
    ("\\d users", "card_number"),
    ("\\d+ orders", "orders_user_id_idx"),
    ("\\di", "orders_user_id_idx"),
    ("\\dv", "order_totals"),
    ("\\df", "order_count"),
    ("\\df+ order_count", "order_count"),
    ("\\du", demo.OWNER),
    ("\\dx", "plpgsql"),
    ("\\dT", "order_status"),
    ("\\dT+ order_status", "shipped"),
    ("\\ds", "users_id_seq"),
    ("\\dp orders", "orders"),
    ("\\d tickets", "order_status"),
    ("\\d order_totals", "total"),
    ("\\sf order_count", "SELECT count(*)"),
    ("\\conninfo", "You are connected to database"),
    ("\\encoding", "UTF8"),
]


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("command, expected", META, ids=[c for c, _ in META])
def test_psql_meta_commands(running, policy: str, command: str, expected: str):
    out = passed(psql(running, policy, "-c", command))
    assert expected in out, out


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psql_c_with_several_statements(running, policy: str):
    """`psql -c` sends its text as one Query: reads together pass; a write beside them under a
    `rows_written` cap is refused (its count is per statement), saying to send it alone."""
    out = passed(psql(running, policy, "-A", "-t", "-c", "SELECT count(*) FROM orders; SELECT count(*) FROM users"))
    assert out.split() == ["500", out.split()[1]] and int(out.split()[1]) >= 50
    mixed = psql(running, policy, "-c", "UPDATE scratch SET note = 'psql' WHERE id = 2; SELECT note FROM scratch "
                                        "WHERE id = 2")
    if policy == "masking":
        passed(mixed)
        return
    assert mixed.returncode != 0 and "pgwarden: blocked:" in mixed.stderr, mixed.stderr
    assert "HINT:" in mixed.stderr and "rule '" in mixed.stderr, mixed.stderr
    for one in ("UPDATE scratch SET note = 'psql' WHERE id = 2", "SELECT note FROM scratch WHERE id = 2"):
        passed(psql(running, policy, "-c", one))


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psql_session_settings_and_expanded_output(running, policy: str):
    script = "\\x\n\\timing on\nSELECT id, name FROM users WHERE id = 1;\n\\x off\n\\timing off\n" \
             "\\pset format aligned\nSELECT count(*) FROM orders;\n"
    out = passed(psql(running, policy, stdin=script))
    assert "Expanded display is on." in out and "-[ RECORD 1 ]" in out and "Time:" in out, out
    assert " 500" in out or "500" in out.split("count")[1], out


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psql_reads_masked_where_the_policy_masks(running, policy: str, direct):
    out = passed(psql(running, policy, "-A", "-t", "-F", "|", "-c",
                      "SELECT id, name, email, ssn, card_number FROM users ORDER BY id LIMIT 3"))
    clear = {r[0]: r for r in direct.execute("SELECT id, name, email, ssn, card_number FROM users "
                                             "ORDER BY id LIMIT 3").fetchall()}
    columns = ["id", "name", "email", "ssn", "card_number"]
    for line in out.strip().splitlines():
        values = line.split("|")
        row = clear[int(values[0])]
        for index, column in enumerate(columns):
            if column in MASKED[policy]:
                assert values[index] != str(row[index]), (column, values)
            else:
                assert values[index] == str(row[index]), (column, values)


# ---------------------------------------------------------------------- pg_dump


def pg_dump(running, policy: str, *args: str) -> subprocess.CompletedProcess:
    """pg_dump of the server's own version (beside its psql), as a client through pgwarden."""
    exe = Path(_bin("psql")).with_name("pg_dump")
    return subprocess.run([str(exe), "--no-password", *args, dsn(running, policy)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_pg_dump_of_the_schema(running, policy: str):
    """`pg_dump --schema-only`, which an agent runs to read a schema: its catalog queries, its
    settings (it lifts statement_timeout: `SET statement_timeout = 0`; it sets
    restrict_nonsystem_relation_kind with `SELECT set_config(name, ...) FROM pg_settings WHERE
    name = '...'`, refused before as a setting name computed at run time) and its LOCK TABLEs."""
    done = pg_dump(running, policy, "--schema-only")
    if policy == "typical":  # its statement_timeout limit: lifting it is refused, pg_dump says so
        assert done.returncode != 0 and "statement_timeout" in done.stderr, done.stderr
        return
    # (a role that is no superuser counts the database's subscriptions: pg_subscription's columns
    # PUBLIC may read, test_ordinary_tools' pg_subscription test; the demo refused it until then)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE public.orders" in done.stdout and "CREATE TYPE public.order_status" in done.stdout


@pytest.mark.parametrize("policy", ["demo", "masking"])
def test_pg_dump_of_a_tables_data_is_masked(running, policy: str, direct):
    done = pg_dump(running, policy, "--data-only", "--table=users")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("COPY public.users (id, name, email, ssn, card_number) FROM stdin;\n")[1].split("\\.")[0]
    rows = [line.split("\t") for line in lines.strip().splitlines()]
    rows = [(int(r[0]), *[None if v == "\\N" else v for v in r[1:]]) for r in rows if int(r[0]) <= 50]
    _check_masked(policy, ["id", "name", "email", "ssn", "card_number"], rows, direct)


# ---------------------------------------------------------------------- results of counted statements


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_counted_statements_computed_outputs_are_judged_by_its_lineage(running, policy: str):
    """Under a `rows_written` cap (the demo's, the typical policy's) a Query that may write is run
    as Parse/Bind/Describe/Execute between pgwarden's count statements; its answer had no statement
    for its origin, so its computed outputs were masked whole as of unknown lineage: pg_dump's
    `EXECUTE dumpFunc(...)` gave `***` for a function's arguments (and then failed on
    `EXECUTE dumpCompositeType(...)`: `could not parse numeric array "**"`)."""
    with connect(running, policy) as conn:
        oid = conn.execute("SELECT 'order_count'::regproc::oid").fetchone()[0]
        conn.execute("PREPARE fn_args(pg_catalog.oid) AS SELECT p.proname, pg_catalog.pg_get_function_arguments(p.oid) "
                     "AS args, p.pronargs + 1 AS more FROM pg_catalog.pg_proc p WHERE p.oid = $1")
        assert conn.execute(f"EXECUTE fn_args('{oid}')").fetchone() == ("order_count", "uid integer", 2)
        conn.execute("DEALLOCATE fn_args")
        assert conn.execute("UPDATE scratch SET note = note WHERE id = %s RETURNING id * 10, upper('x')",
                            (1,)).fetchall() in ([(10, "X")], [])


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_counted_statements_masked_outputs_stay_masked(running, policy: str, direct):
    """The hostile cousins: what a counted statement computes from a masked column (RETURNING, an
    EXECUTE of a PREPARE reading it) is masked by its lineage, as it was masked whole before."""
    ssn, card = direct.execute("SELECT ssn, card_number FROM users WHERE id = 3").fetchone()
    with connect(running, policy) as conn:
        for sql in ("UPDATE users SET name = name WHERE id = 3 RETURNING ssn, ssn || '' AS s2, lower(card_number)",
                    "EXECUTE read_ssn"):
            if sql.startswith("EXECUTE"):
                conn.execute("PREPARE read_ssn AS SELECT ssn || '' AS s, upper(card_number) AS c FROM users WHERE id = 3")
            try:
                rows = conn.execute(sql).fetchall()
            except psycopg.errors.InsufficientPrivilege as e:  # refused is as good as masked
                assert e.diag.message_primary.startswith("pgwarden: blocked: "), e.diag.message_primary
                continue
            said = repr(rows)
            assert rows and ssn not in said and ssn.replace("-", "") not in said, said  # every policy masks ssn
            if "card_number" in MASKED[policy]:
                assert card[:14].lower() not in said.lower(), said


# ---------------------------------------------------------------------- masking: masked, not refused


READS_OF_MASKED = [
    "SELECT * FROM users ORDER BY id LIMIT 5",
    "SELECT id, name, email, ssn, card_number FROM users WHERE id <= 5 ORDER BY id",
    "SELECT u.id, u.name, u.email, u.ssn, u.card_number, count(o.id) AS n FROM users u JOIN orders o "
    "ON o.user_id = u.id WHERE u.id <= 5 GROUP BY u.id ORDER BY u.id",
    "WITH a AS (SELECT id, name, email, ssn, card_number FROM users) SELECT * FROM a WHERE id <= 5 ORDER BY id",
    "SELECT id, name, email, ssn, card_number FROM users WHERE id = ANY (ARRAY[1, 2, 3, 4, 5]) ORDER BY id",
]


def _check_masked(policy: str, columns: list[str], rows: list, direct) -> None:
    assert rows, "no rows"
    ids = [row[columns.index("id")] for row in rows]
    clear = {r[0]: r for r in direct.execute(
        "SELECT id, name, email, ssn, card_number FROM users WHERE id = ANY (%s)", (ids,)).fetchall()}
    names = ["id", "name", "email", "ssn", "card_number"]
    for row in rows:
        truth = clear[row[columns.index("id")]]
        for name in names:
            if name not in columns:
                continue
            got, real = row[columns.index(name)], truth[names.index(name)]
            if name in MASKED[policy]:
                assert got != real and got is not None, (name, got)
                if name == "card_number":
                    assert got.endswith(real[-4:]) and "4111" not in got, got
            else:
                assert got == real, (name, got, real)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("sql", READS_OF_MASKED)
def test_reads_of_masked_columns_come_back_masked(running, policy: str, sql: str, direct):
    with connect(running, policy) as conn:
        cur = conn.execute(sql)
        columns = [d.name for d in cur.description]
        _check_masked(policy, columns, cur.fetchall(), direct)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_copy_to_stdout_of_a_table_is_masked(running, policy: str, direct):
    with connect(running, policy) as conn, conn.cursor() as cur:
        with cur.copy("COPY (SELECT id, name, email, ssn, card_number FROM users WHERE id <= 5) TO STDOUT") as copy:
            rows = [tuple(r) for r in copy.rows()]
        rows = [(int(r[0]), *r[1:]) for r in rows]
        _check_masked(policy, ["id", "name", "email", "ssn", "card_number"], rows, direct)
        with cur.copy("COPY users TO STDOUT") as copy:
            whole = [tuple(r) for r in copy.rows()]
        whole = [(int(r[0]), *r[1:]) for r in whole if int(r[0]) <= 50]
        _check_masked(policy, ["id", "name", "email", "ssn", "card_number"], whole, direct)
        with cur.copy("COPY orders TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            data = b"".join(bytes(b) for b in copy)
        assert data.startswith(b"id,user_id,amount,created_at\n") and data.count(b"\n") >= 501


def test_a_temporary_table_and_its_use_where_ddl_is_allowed(running, direct):
    """The masking policy blocks no DDL: a temporary table is made, filled, read, changed and
    dropped, and reads of the masked table in the same session, after the DDL, are still masked
    column by column (not whole), the other columns intact."""
    with connect(running, "masking") as conn:
        conn.execute("CREATE TEMP TABLE work_ids (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO work_ids SELECT user_id, sum(amount) FROM orders GROUP BY user_id")
        assert conn.execute("SELECT count(*) FROM work_ids").fetchone()[0] == 50
        conn.execute("UPDATE work_ids SET total = total + 1 WHERE id = %s", (3,))
        rows = conn.execute("SELECT u.id, u.name, u.email, u.ssn, w.total FROM users u JOIN work_ids w ON w.id = u.id "
                            "WHERE u.id <= 5 ORDER BY u.id").fetchall()
        _check_masked("masking", ["id", "name", "email", "ssn"], [r[:4] for r in rows], direct)
        cur = conn.execute("SELECT id, name, email, ssn, card_number FROM users WHERE id <= 3 ORDER BY id")
        _check_masked("masking", [d.name for d in cur.description], cur.fetchall(), direct)
        conn.execute("DROP TABLE work_ids")


# ---------------------------------------------------------------------- psycopg 3


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psycopg_session(running, policy: str, direct):
    with connect(running, policy, autocommit=False) as conn:
        assert conn.info.server_version >= 150000
        assert conn.info.parameter_status("server_encoding") == "UTF8"
        # typed parameters, both ways
        row = conn.execute(
            "SELECT %s::int + 1, %s::numeric * 2, %s::date + 1, %s::timestamptz, %s::uuid, %s::text[], %s::jsonb, "
            "%s::bool, %s::bytea, %s::float8",
            (41, decimal.Decimal("1.25"), datetime.date(2026, 1, 1),
             datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC), uuid.UUID(int=7), ["a", "b"],
             Jsonb({"a": [1]}), True, b"\x00\x01", 0.5)).fetchone()
        assert row[0] == 42 and row[1] == decimal.Decimal("2.50") and row[2] == datetime.date(2026, 1, 2)
        assert row[5] == ["a", "b"] and row[6] == {"a": [1]} and row[7] is True and row[8] == b"\x00\x01"
        conn.rollback()
        # a transaction, with a savepoint rolled back inside it
        with conn.transaction():
            conn.execute("UPDATE scratch SET note = %s WHERE id = %s", ("in a transaction", 2))
            try:
                with conn.transaction():
                    conn.execute("UPDATE scratch SET note = %s WHERE id = %s", ("rolled back", 2))
                    conn.execute("SELECT 1 / 0")
            except psycopg.errors.DivisionByZero:
                pass
            assert conn.execute("SELECT note FROM scratch WHERE id = 2").fetchone() in [("in a transaction",), None]
        # explicit SAVEPOINT statements too
        conn.execute("SAVEPOINT sp1")
        conn.execute("SELECT count(*) FROM orders")
        conn.execute("ROLLBACK TO SAVEPOINT sp1")
        conn.execute("RELEASE SAVEPOINT sp1")
        conn.commit()
        # prepared statements (psycopg prepares a query it sees often, or when asked)
        for uid in (1, 2, 3):
            assert conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (uid,), prepare=True).fetchone()[0] > 0
        conn.commit()
        # SQL-level PREPARE / EXECUTE
        conn.execute("PREPARE by_user(int) AS SELECT id, amount FROM orders WHERE user_id = $1")
        assert conn.execute("EXECUTE by_user(3)").fetchall()
        conn.execute("DEALLOCATE by_user")
        conn.commit()
        # a server-side cursor (DECLARE ... FETCH ... CLOSE)
        with conn.cursor(name="big_read") as cur:
            cur.itersize = 50
            cur.execute("SELECT id, amount FROM orders ORDER BY id")
            first = cur.fetchmany(10)
            assert [r[0] for r in first] == list(range(1, 11))
            assert len(cur.fetchall()) == 490
        conn.commit()
        with conn.cursor(name="held", withhold=True) as cur:
            cur.execute("SELECT id FROM tickets ORDER BY id")
            conn.commit()
            assert len(cur.fetchall()) == 20
        # an explicit DECLARE / FETCH / MOVE / CLOSE
        conn.execute("DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id")
        assert conn.execute("FETCH 5 FROM c").fetchall() == [(i,) for i in range(1, 6)]
        conn.execute("MOVE FORWARD 10 IN c")
        assert conn.execute("FETCH NEXT FROM c").fetchone() == (16,)
        conn.execute("CLOSE c")
        conn.commit()


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psycopg_type_registration(running, policy: str):
    """psycopg's TypeInfo queries (what `register_enum`, `register_composite` and hstore's check
    send on first use), then rows of those types."""
    from psycopg.types import TypeInfo
    from psycopg.types.composite import CompositeInfo, register_composite
    from psycopg.types.enum import EnumInfo, register_enum

    with connect(running, policy) as conn:
        register_enum(EnumInfo.fetch(conn, "order_status"), conn)
        info = CompositeInfo.fetch(conn, "money_pair")
        register_composite(info, conn)
        assert TypeInfo.fetch(conn, "hstore") is None  # not installed: the query answers nothing
        status, price = conn.execute("SELECT status, price FROM tickets WHERE id = 2").fetchone()
        assert status.name == "shipped" and price.currency == "EUR"
        assert conn.execute("SELECT %s::order_status", (status,)).fetchone()[0] == status


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psycopg_executemany(running, policy: str, direct):
    base = 1000 + POLICY_NAMES.index(policy) * 100
    direct.execute("DELETE FROM scratch WHERE id >= %s AND id < %s", (base, base + 100))
    with connect(running, policy) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO scratch (id, note) VALUES (%s, %s)", [(base + i, f"n{i}") for i in range(20)])
            cur.executemany("UPDATE scratch SET note = %s WHERE id = %s", [("u", base + i) for i in range(5)])
    assert direct.execute("SELECT count(*), count(*) FILTER (WHERE note = 'u') FROM scratch WHERE id >= %s "
                          "AND id < %s", (base, base + 100)).fetchone() == (20, 5)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_psycopg_copy_from_stdin(running, policy: str, direct):
    """COPY ... FROM STDIN into the scratch table: where the policy caps rows written it is refused
    (docs/configuration.md: the server's count does not see a COPY; INSERT instead), elsewhere it
    loads the rows."""
    base = 2000 + POLICY_NAMES.index(policy) * 100
    direct.execute("DELETE FROM scratch WHERE id >= %s AND id < %s", (base, base + 100))
    rules = {"demo": "blast-radius", "typical": "budget"}
    with connect(running, policy) as conn, conn.cursor() as cur:
        if policy in rules:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                with cur.copy("COPY scratch (id, note) FROM STDIN") as copy:
                    copy.write_row((base, "copied"))
            assert_refused_by(excinfo, policy, rules[policy])
            assert "INSERT" in excinfo.value.diag.message_hint or "INSERT" in excinfo.value.diag.message_primary
            return
        with cur.copy("COPY scratch (id, note) FROM STDIN") as copy:
            for i in range(30):
                copy.write_row((base + i, f"copied {i}"))
    assert direct.execute("SELECT count(*) FROM scratch WHERE id >= %s AND id < %s",
                          (base, base + 100)).fetchone() == (30,)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_listen_and_notify(running, policy: str, direct):
    with connect(running, policy) as listener:
        listener.execute("LISTEN ordinary_jobs")
        channel = "ordinary_jobs"
        if policy == "demo":  # NOTIFY is a side effect there: sent on a connection of the server's own
            direct.execute("NOTIFY ordinary_jobs, 'from the app'")
        else:
            with connect(running, policy) as sender:
                sender.execute("SELECT pg_notify(%s, %s)", (channel, "from the agent"))
        listener.execute("SELECT 1")
        got = next(listener.notifies(timeout=10, stop_after=1))
        assert got.channel == channel


@pytest.mark.parametrize("policy", ["masking"])
def test_a_sessions_own_notification_keeps_its_payload(running, policy: str):
    """NOTIFY (refused by the demo's `no-side-effects`) from the listening session itself: judged by
    the statement it came with, which reads no masked column; another session's is withheld (the
    asyncpg test), the channel kept. (Under the typical policy's `rows_written` cap NOTIFY is
    counted: its notification comes at the end of pgwarden's counted run, after the check, with
    no statement of the agent's, and is withheld as another session's: left as it is.)"""
    with connect(running, policy) as conn:
        conn.execute("LISTEN own_jobs")
        conn.execute("NOTIFY own_jobs, 'job 7 done'")
        got = next(conn.notifies(timeout=10, stop_after=1))
        assert (got.channel, got.payload) == ("own_jobs", "job 7 done")
        with connect(running, policy) as other:
            other.execute("NOTIFY own_jobs, 'from another session'")
        conn.execute("SELECT 1")
        got = next(conn.notifies(timeout=10, stop_after=1))
        assert (got.channel, got.payload) == ("own_jobs", NOTIFICATION_WITHHELD)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_application_name_in_the_connection_string(running, policy: str):
    """`SET application_name` is refused by the core (the session is named after the identity);
    the client's own name, given at connection as its hint says, is kept after the identity."""
    with psycopg.connect(dsn(running, policy) + " application_name=my-orm", autocommit=True) as conn:
        name = conn.execute("SHOW application_name").fetchone()[0]
        assert "my-orm" in name and "agent-1" in name, name
        conn.execute("RESET application_name")


# ---------------------------------------------------------------------- a typo's error under masking


TYPOS = [
    ("SELECT nme FROM users", "42703", 'column "nme" does not exist'),
    ("SELECT id, nosuch FROM orders WHERE id = 1", "42703", 'column "nosuch" does not exist'),
    ("SELECT * FROM userz", "42P01", 'relation "userz" does not exist'),
    ("SELECT u.nme FROM users u", "42703", "column u.nme does not exist"),
    ("SELECT \"Name\" FROM users", "42703", 'column "Name" does not exist'),
    ("SELECT count(*) FROM users u WHERE u.id IN (SELECT user_id FROM orderz)", "42P01",
     'relation "orderz" does not exist'),
    ("SELECT count(*) FROM orders WHERE id > %s::int AND amout > 3", "42703", 'column "amout" does not exist'),
    ("SELECT count(*) FROM users WHERE id > %s::int AND nmae = 'x'", "42703", 'column "nmae" does not exist'),
    ("SELECT id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND amout > 3)", "42703",
     'column "amout" does not exist'),
    # refused by pgwarden itself (it cannot tell what they do): the hint says why
    ("SELECT u.name, o.amount FROM users u JOIN order o ON o.user_id = u.id", "42501", "does not parse"),
    ("SELECT count(*) FROM users WHERE lenght(name) > 3", "42501", "no function named lenght()"),
]


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("sql, sqlstate, message", TYPOS, ids=[t[0][:40] for t in TYPOS])
def test_a_typos_error_says_what_is_wrong(running, policy: str, sql: str, sqlstate: str, message):
    """An error the server raises while it analyses the statement's own text (an unknown column,
    table or function), every name it quotes written in the text, comes through in a session with
    masked columns: the agent corrects itself by it (it was withheld as if it quoted a value). An
    unknown name on tables the catalog lists (a column added since it was read, or a typo) is that
    table's column, not any value: a WHERE over it is not an oracle. A syntax error and an unknown
    function are refused by pgwarden itself, its hint saying which."""
    with connect(running, policy) as conn:
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute(sql, (1,) if "%s" in sql else None)
    diag = excinfo.value.diag
    if sqlstate == "42501":
        assert diag.message_primary.startswith("pgwarden: blocked: "), diag.message_primary
        assert message in diag.message_hint, diag.message_hint
        return
    assert (diag.sqlstate, diag.message_primary) == (sqlstate, message)
    # (the server's hint, `Perhaps you meant to reference the column "users.name"`, where the
    # statement reads no masked column: names of the catalog, never a value)
    assert diag.message_hint is None or diag.message_hint.startswith("Perhaps you meant"), diag.message_hint


VALUE_ERRORS = [
    "SELECT ssn::regclass FROM users WHERE id = 3",
    "SELECT ssn::regtype FROM users WHERE id = 3",
    "SELECT ssn::regproc FROM users WHERE id = 3",
    "SELECT email::int FROM users WHERE id = 3",
    "SELECT (SELECT ssn FROM users WHERE id = 3)::regclass",
    "SELECT query_to_xml('SELECT ' || quote_ident(ssn) || ' FROM users', true, true, '') FROM users WHERE id = 3",
    "SELECT current_setting(ssn) FROM users WHERE id = 3",
]


@pytest.mark.parametrize("policy", ["typical", "masking"])
@pytest.mark.parametrize("sql", VALUE_ERRORS)
def test_an_error_that_quotes_a_masked_value_stays_withheld(running, policy: str, sql: str, direct):
    """The hostile cousins of the typo's error: errors raised as the statement runs, from a masked
    value (one the runtime parses too: ``ssn::regtype``, a syntax error with a position): refused
    or withheld, never the value."""
    ssn, email = direct.execute("SELECT ssn, email FROM users WHERE id = 3").fetchone()
    with connect(running, policy) as conn:
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute(sql)
    diag = excinfo.value.diag
    said = " ".join(filter(None, [diag.message_primary, diag.message_detail, diag.message_hint, diag.context]))
    assert ssn not in said and email not in said and ssn.split("-")[0] not in said, said
    assert diag.message_primary.startswith("pgwarden: "), said


def test_a_column_added_since_the_catalog_was_read_is_masked_by_its_rule(running, direct):
    """The hostile cousin of the typo's name: a name the catalog does not list on a table is that
    table's column (one added since the catalog was read), which a rule naming columns by a glob
    masks (`public.*.secret_note`), read or compared, whether pgwarden has read the catalog again
    or not."""
    direct.execute("ALTER TABLE scratch ADD COLUMN IF NOT EXISTS secret_note text")
    direct.execute("INSERT INTO scratch (id, note, secret_note) SELECT g, 'n', 'hush-' || g FROM generate_series(500, 505) g "
                   "ON CONFLICT (id) DO UPDATE SET secret_note = excluded.secret_note")
    with connect(running, "masking") as conn:
        try:
            rows = conn.execute("SELECT id, secret_note FROM scratch WHERE id BETWEEN 500 AND 505").fetchall()
        except psycopg.errors.InsufficientPrivilege as e:
            assert e.diag.message_primary.startswith("pgwarden: blocked: ")
        else:
            assert len(rows) == 6 and not any("hush" in (v or "") for _, v in rows), rows
        for sql in ("SELECT id FROM scratch WHERE secret_note LIKE 'hush-50%'",
                    "SELECT count(*) FROM scratch s WHERE EXISTS (SELECT 1 FROM orders o WHERE secret_note = 'hush-501')",
                    "SELECT id FROM scratch ORDER BY secret_note"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                conn.execute(sql)
            refusal_of(excinfo)
    caught_up(running)


def caught_up(running) -> None:
    """pgwarden has read the operator's DDL of the test (seen later by its catalog's check, the
    change would forget the open portals and cursors of a test after it: red team fifteen)."""
    running.call(running.app.catalog.confirm)


def test_a_failed_write_to_a_table_without_masked_columns_says_why(running, direct):
    """Under a rule naming columns by a glob (`public.*.secret_note`), a failed write to a table
    whose columns the catalog lists, none of them a `secret_note`, keeps its message and detail:
    what an agent corrects its write by (session 30: every error of a write to any table of public
    was withheld). Its hostile cousins: a table that holds such a column, and one the catalog does
    not know yet (made since it was read, by another client), keep theirs withheld."""
    direct.execute("CREATE TABLE IF NOT EXISTS noted (id int PRIMARY KEY, secret_note text NOT NULL)")
    direct.execute("INSERT INTO noted VALUES (77, 'hush-77') ON CONFLICT DO NOTHING")
    caught_up(running)
    with connect(running, "masking") as conn:
        with pytest.raises(psycopg.errors.UniqueViolation) as excinfo:
            conn.execute("INSERT INTO categories (id, name) VALUES (1, 'again')")
        diag = excinfo.value.diag
        assert diag.message_primary == 'duplicate key value violates unique constraint "categories_pkey"', diag.message_primary
        assert diag.message_detail == "Key (id)=(1) already exists.", diag.message_detail
        with pytest.raises(psycopg.errors.NotNullViolation) as excinfo:
            conn.execute("UPDATE categories SET name = NULL WHERE id = 4")
        assert excinfo.value.diag.message_detail == "Failing row contains (4, 1, null).", excinfo.value.diag.message_detail
        for sql in ("UPDATE noted SET id = NULL WHERE id = 77", "INSERT INTO noted VALUES (77, 'x')",
                    "UPDATE noted SET id = id + 0 WHERE id = 77 AND 1 / 0 = 1"):
            with pytest.raises(psycopg.Error) as excinfo:
                conn.execute(sql)
            diag = excinfo.value.diag
            said = " ".join(filter(None, [diag.message_primary, diag.message_detail, diag.message_hint, diag.context]))
            assert "hush" not in said, (sql, said)
            if not diag.message_primary.startswith("pgwarden: blocked: "):  # (the plan check's: 1 / 0)
                assert diag.message_primary.startswith("pgwarden: message withheld"), (sql, said)
                assert diag.message_detail is None, (sql, said)


# ---------------------------------------------------------------------- unnest of several arrays


def test_unnest_of_several_columns_is_traced(running):
    """``unnest(i.indkey, i.indoption)`` (Django's index introspection) is the server's
    ``ROWS FROM (unnest(i.indkey), unnest(i.indoption))``: its columns come from pg_index, not from
    anywhere; used in a JOIN ... ON it was refused as a value that may hold masked columns."""
    sql = ("SELECT c.relname, a.attname, koi.option FROM pg_index i, unnest(i.indkey, i.indoption) "
           "WITH ORDINALITY koi(key, option, n) JOIN pg_attribute a ON a.attnum = koi.key "
           "JOIN pg_class c ON c.oid = a.attrelid WHERE i.indrelid = 'orders'::regclass AND a.attrelid = i.indrelid "
           "ORDER BY 1, koi.n")
    for policy in POLICY_NAMES:
        with connect(running, policy) as conn:
            assert conn.execute(sql).fetchall() == [("orders", "id", 0), ("orders", "user_id", 0)]


UNNEST_COUSINS = [
    # a masked column's array beside another: its elements masked, or refused
    ("SELECT x.a, x.b FROM users u, unnest(ARRAY[u.ssn], ARRAY[u.id]) x(a, b) WHERE u.id = 3", "out"),
    ("SELECT x.a FROM users u, unnest(string_to_array(u.ssn, '-'), ARRAY[1, 2, 3]) x(a, b) WHERE u.id = 3", "out"),
    ("SELECT x.b FROM users u, unnest(string_to_array(u.ssn, '-'), ARRAY[1, 2, 3]) x(a, b) WHERE x.a = '123'",
     "refused"),
    ("SELECT u.id FROM users u, unnest(ARRAY[u.id], ARRAY[u.ssn]) x(a, b) JOIN orders o ON o.id::text = x.b",
     "refused"),
    ("SELECT count(*) FROM users u, unnest(ARRAY[1], string_to_array(u.ssn, '-')) x(a, b) WHERE x.b LIKE '1%'",
     "refused"),
]


@pytest.mark.parametrize("policy", ["typical", "masking"])
@pytest.mark.parametrize("sql, expect", UNNEST_COUSINS, ids=[c[0][:60] for c in UNNEST_COUSINS])
def test_unnest_of_several_arrays_does_not_unmask(running, policy: str, sql: str, expect: str, direct):
    ssns = {r[0] for r in direct.execute("SELECT ssn FROM users WHERE ssn IS NOT NULL").fetchall()}
    parts = {p for s in ssns for p in s.split("-")}
    with connect(running, policy) as conn:
        if expect == "refused":
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                conn.execute(sql)
            refusal_of(excinfo)
            return
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.errors.InsufficientPrivilege as e:  # refused is as good as masked
            assert e.diag.message_primary.startswith("pgwarden: blocked: "), e.diag.message_primary
            return
    assert rows
    for row in rows:
        assert row[0] not in ssns and row[0] not in parts, row


VAULT_COUSINS = [
    # a masked array column unnested beside another: its elements masked, or refused
    ("SELECT x.a, x.b FROM vault v, unnest(v.codes, v.pins) x(a, b) ORDER BY x.b", "out"),
    ("SELECT * FROM (SELECT * FROM vault v, unnest(v.pins, v.codes) WITH ORDINALITY x(a, b, n)) s", "out"),
    ("SELECT x.b FROM vault v, unnest(v.codes, v.pins) x(a, b) WHERE x.a = 'alpha-secret'", "refused"),
    ("SELECT x.a FROM vault v, unnest(v.pins, v.codes) x(a, b) WHERE x.b LIKE 'a%'", "refused"),
    ("SELECT v.id FROM vault v, unnest(v.pins, v.codes) x(a, b) JOIN orders o ON o.id::text = x.b", "refused"),
    ("SELECT x.a FROM vault v, unnest(v.pins, v.codes) x(a, b) ORDER BY x.b", "refused"),
    ("SELECT count(*) FROM vault v, unnest(v.pins, v.codes) x(a, b)", "refused"),
    ("SELECT count(*) FROM vault v, unnest(v.codes) x(a)", "refused"),
]


@pytest.mark.parametrize("policy", ["typical", "masking"])
@pytest.mark.parametrize("sql, expect", VAULT_COUSINS, ids=[c[0][:60] for c in VAULT_COUSINS])
def test_unnest_of_a_masked_array_column_does_not_unmask(running, policy: str, sql: str, expect: str):
    """The hostile cousins of the traced ``unnest(i.indkey, i.indoption)``: a masked array column
    unnested beside another is masked where returned, and an oracle where compared, counted,
    ordered by or joined on, as ``unnest(v.codes)`` alone is."""
    with connect(running, policy) as conn:
        if expect == "refused":
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as excinfo:
                conn.execute(sql)
            refusal_of(excinfo)
            return
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.errors.InsufficientPrivilege as e:  # refused (its rows an oracle) is as good as masked
            assert e.diag.message_primary.startswith("pgwarden: blocked: "), e.diag.message_primary
            return
    assert rows
    assert "secret" not in repr(rows), rows


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_read_only_and_isolation_transactions(running, policy: str):
    with connect(running, policy) as conn:
        conn.execute("BEGIN READ ONLY")
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.execute("SELECT count(*) FROM orders")
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("serializable",)
        conn.execute("SET LOCAL statement_timeout = '2s'")
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT sum(amount) FROM orders")
        conn.execute("COMMIT")
    with connect(running, policy, autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SELECT count(*) FROM users").fetchone()
        conn.commit()


# ---------------------------------------------------------------------- asyncpg


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_asyncpg_session(running, policy: str, direct):
    base = 3000 + POLICY_NAMES.index(policy) * 100
    direct.execute("DELETE FROM scratch WHERE id >= %s AND id < %s", (base, base + 100))

    async def main():
        conn = await asyncpg.connect(running.url(running.token(groups=[GROUPS[policy]])), ssl=False)
        try:
            assert conn.get_server_version().major >= 15
            # every statement is prepared; the first use of a custom type runs the type introspection
            rows = await conn.fetch("SELECT id, status, price, tags, payload FROM tickets WHERE id <= $1 "
                                    "ORDER BY id", 3)
            assert [r["status"] for r in rows] == ["paid", "shipped", "new"]
            assert rows[0]["price"]["currency"] == "EUR" and rows[0]["tags"] == ["t1", "common"]
            assert await conn.fetchval("SELECT count(*) FROM tickets WHERE status = ANY ($1::order_status[])",
                                       ["new", "paid"]) > 0
            assert await conn.fetchval("SELECT $1::order_status", "shipped") == "shipped"
            assert await conn.fetchval("SELECT ARRAY[price] FROM tickets WHERE id = $1", 2)
            stmt = await conn.prepare("SELECT id, amount FROM orders WHERE user_id = $1 AND amount > $2")
            assert await stmt.fetch(3, decimal.Decimal("0"))
            assert [a.name for a in stmt.get_attributes()] == ["id", "amount"]
            assert await conn.fetchval("SELECT $1::timestamptz + $2::interval",
                                       datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                                       datetime.timedelta(days=1))
            await conn.executemany("INSERT INTO scratch (id, note) VALUES ($1, $2)",
                                   [(base + i, f"a{i}") for i in range(10)])
            async with conn.transaction():
                await conn.execute("UPDATE scratch SET note = $1 WHERE id = $2", "tx", base)
                try:
                    async with conn.transaction():  # a savepoint
                        await conn.execute("UPDATE scratch SET note = $1 WHERE id = $2", "sp", base)
                        raise RuntimeError("roll the savepoint back")
                except RuntimeError:
                    pass
                assert await conn.fetchval("SELECT note FROM scratch WHERE id = $1", base) == "tx"
                # a cursor (asyncpg needs a transaction for one)
                seen = [r["id"] async for r in conn.cursor("SELECT id FROM orders ORDER BY id LIMIT 120")]
                assert len(seen) == 120
                cur = await conn.cursor("SELECT id FROM orders ORDER BY id")
                assert len(await cur.fetch(7)) == 7
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                assert await conn.fetchval("SELECT count(*) FROM users") >= 50
            users = await conn.fetch("SELECT id, name, email, ssn, card_number FROM users WHERE id <= 3 ORDER BY id")
            out = []

            async def sink(chunk):
                out.append(bytes(chunk))

            await conn.copy_from_table("orders", columns=["id", "amount"], output=sink)
            assert b"".join(out).count(b"\n") >= 500
            heard = asyncio.get_running_loop().create_future()
            await conn.add_listener("ordinary_async", lambda *a: heard.done() or heard.set_result(a[3]))
            await direct_notify()
            # another session's payload, in a session with masked columns: withheld, and it says why
            assert await asyncio.wait_for(heard, 10) == NOTIFICATION_WITHHELD
            return [tuple(r) for r in users]
        finally:
            await conn.close()

    async def direct_notify():
        await asyncio.to_thread(direct.execute, "NOTIFY ordinary_async, 'ping'")

    users = asyncio.run(main())
    _check_masked(policy, ["id", "name", "email", "ssn", "card_number"], users, direct)
    assert direct.execute("SELECT note FROM scratch WHERE id = %s", (base,)).fetchone() == ("tx",)


# ---------------------------------------------------------------------- approvals of ordinary writes


def test_a_delete_with_where_is_held_then_approved(running, direct):
    """Under the typical policy a DELETE ... WHERE waits for a person, who approves it through the
    inbox API (as tests/e2e/test_approvals.py does); then it runs."""
    direct.execute("INSERT INTO scratch (id, note) VALUES (9001, 'to delete') ON CONFLICT (id) DO NOTHING")
    approver = ApiClient(f"http://127.0.0.1:{running.admin}/approvals/api",
                         running.token("ann", [APPROVERS]))

    def agent():
        with connect(running, "typical") as conn:
            return conn.execute("DELETE FROM scratch WHERE id = %s RETURNING id", (9001,)).fetchall()

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(agent)
        request = wait_until(20, approver.pending, "the DELETE held for approval",
                             until=lambda rs: any("DELETE FROM scratch" in r["sql"] for r in rs))
        (held,) = [r for r in request if "DELETE FROM scratch" in r["sql"]]
        assert held["rule"] == "deletes" and held["reason"] == "deletes need a human"
        assert direct.execute("SELECT count(*) FROM scratch WHERE id = 9001").fetchone() == (1,)
        approver.approve(held["id"], "fine")
        assert done.result(20) == [(9001,)]
    assert direct.execute("SELECT count(*) FROM scratch WHERE id = 9001").fetchone() == (0,)


def test_a_new_order_is_held_then_approved_under_the_demo_policy(running, direct):
    approver = ApiClient(f"http://127.0.0.1:{running.admin}/approvals/api",
                         running.token("ann", [APPROVERS]))
    before = direct.execute("SELECT count(*) FROM orders").fetchone()[0]

    def agent():
        with connect(running, "demo") as conn:
            return conn.execute("INSERT INTO orders (user_id, amount) VALUES (%s, %s) RETURNING user_id",
                                (1, decimal.Decimal("9.99"))).fetchall()

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(agent)
        pending = wait_until(20, approver.pending, "the INSERT held for approval",
                             until=lambda rs: any("INSERT INTO orders" in r["sql"] for r in rs))
        (held,) = [r for r in pending if "INSERT INTO orders" in r["sql"]]
        assert held["rule"] == "new-orders"
        approver.approve(held["id"], "fine")
        assert done.result(20) == [(1,)]
    assert direct.execute("SELECT count(*) FROM orders").fetchone()[0] == before + 1


def test_corpus_size():
    assert len(CORPUS) >= 110 and len(META) >= 20
    assert not [c for c in CORPUS if re.search(r"\bDROP\b|\bTRUNCATE\b", c.sql)]
