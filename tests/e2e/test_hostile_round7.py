"""Red team, round seven: rules that name tables, walked around by writes that name other tables.

A rule on (kind, table) missed:

* a foreign key's action: `DELETE FROM h_parent` whose ON DELETE SET NULL (SET DEFAULT) updates
  `h_child`, under `approve` or `block {statements: [update], tables: [public.h_child]}`;
* a partitioned table's or an inheritance parent's rows written through a partition or a child
  (`DELETE FROM h_p1` under a rule on `h_part`, `INSERT INTO h_heir` under one on `h_family`), and
  rows an UPDATE of the parent moves out of one partition into another (a DELETE there);
* DROP statements, which named no table (DROP TABLE, VIEW, INDEX, TRIGGER ... ON t, SCHEMA ...
  CASCADE, DOMAIN ... CASCADE, FUNCTION ... CASCADE, OWNED BY);
* `ALTER SCHEMA vault RENAME TO opened` (and OWNER TO): `vault.*` is `opened.*` afterwards.

Each case runs over both protocols, in a new pgwarden with the policy of the case, and the
server's state is read on a direct connection before and after: a refused (or held) statement
must have changed nothing; the controls (statements the rules do not concern) must have run.
"""

from __future__ import annotations

import pytest
import test_hostile
from test_hostile import DB, Agent, errors

from pgwarden.testing.matrix import thin
from pgwarden.wire import messages as m

# test_hostile's fixtures: its database, and a direct connection to it
hostile_db, server = test_hostile.hostile_db, test_hostile.server

PROTOCOLS = ["extended"] if thin() else ["simple", "extended"]  # (pgwarden.testing.matrix)


def _run(running, protocol: str, *sqls: str, group: str = "ai-agents") -> list[list]:
    agent = Agent(running, group, protocol)
    try:
        return [agent.run(sql) for sql in sqls]
    finally:
        agent.close()


def _one(conn, sql: str):
    return conn.execute(sql).fetchone()[0]


def _policy(*rules: dict, group: str = "ai-agents") -> list[dict]:
    return [{"name": group, "when": {"groups": [group]}, "rules": list(rules)}]


def _approve(name: str, statements: list[str], tables: list[str]) -> dict:
    return {"name": name, "approve": {"statements": statements, "tables": tables, "mode": "retry"}}


def _block(name: str, statements: list[str], tables: list[str]) -> dict:
    return {"name": name, "block": {"statements": statements, "tables": tables}}


# ---------------------------------------------------------------------- foreign keys' actions

KEYS = """
DROP TABLE IF EXISTS public.h_child, public.h_default_child, public.h_parent CASCADE;
CREATE TABLE public.h_parent (id int PRIMARY KEY);
CREATE TABLE public.h_child (id int, pid int REFERENCES public.h_parent ON DELETE SET NULL);
CREATE TABLE public.h_default_child (id int, pid int DEFAULT 2 REFERENCES public.h_parent ON DELETE SET DEFAULT);
INSERT INTO public.h_parent VALUES (1), (2), (3);
INSERT INTO public.h_child VALUES (10, 1), (11, 1), (12, 2);
INSERT INTO public.h_default_child VALUES (20, 1), (21, 3);
"""
KEYS_STATE = ("SELECT (SELECT count(*) FROM public.h_parent), "
              "(SELECT string_agg(id || ':' || coalesce(pid::text, '-'), ',' ORDER BY id) FROM public.h_child), "
              "(SELECT string_agg(id || ':' || coalesce(pid::text, '-'), ',' ORDER BY id) FROM public.h_default_child)")


@pytest.fixture
def keys(server):
    server.conn.execute(KEYS)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.h_child, public.h_default_child, public.h_parent CASCADE")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("rule", [
    _approve("child-updates", ["update"], ["public.h_child"]),
    _block("child-updates", ["update"], ["public.h_child"]),
], ids=["approve", "block"])
def test_on_delete_set_null_is_an_update_of_the_referencing_table(make_pgwarden, hostile_db, keys, protocol, rule):
    # the DELETE of h_parent sets h_child.pid to NULL in two rows: an UPDATE of h_child
    # (group "others": the DELETE is no UPDATE to a rule on the parent, nor to one naming no table)
    others = _policy(_block("parent-updates", ["update"], ["public.h_parent"]),
                     {"name": "updates", "block": {"statements": ["update"]}}, group="others")
    running = make_pgwarden(policies=_policy(rule) + others, upstream={"database": DB})
    before = keys.conn.execute(KEYS_STATE).fetchone()
    (answer,) = _run(running, protocol, "DELETE FROM h_parent WHERE id = 1")
    assert errors(answer), answer
    assert keys.conn.execute(KEYS_STATE).fetchone() == before
    (answer,) = _run(running, protocol, "DELETE FROM h_parent WHERE id = 1", group="others")
    assert not errors(answer), answer
    assert _one(keys.conn, "SELECT count(*) FROM public.h_child WHERE pid IS NULL") == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_on_delete_set_default_is_an_update_of_the_referencing_table(make_pgwarden, hostile_db, keys, protocol):
    running = make_pgwarden(policies=_policy(_block("child-updates", ["update"], ["public.h_default_child"])),
                            upstream={"database": DB})
    before = keys.conn.execute(KEYS_STATE).fetchone()
    (answer,) = _run(running, protocol, "DELETE FROM h_parent WHERE id = 3")
    assert errors(answer), answer
    assert keys.conn.execute(KEYS_STATE).fetchone() == before


# ---------------------------------------------------------------------- partitions and inheritance

FAMILY = """
DROP TABLE IF EXISTS public.h_part, public.h_family CASCADE;
CREATE TABLE public.h_part (k int, v int) PARTITION BY LIST (k);
CREATE TABLE public.h_p1 PARTITION OF public.h_part FOR VALUES IN (1);
CREATE TABLE public.h_p2 PARTITION OF public.h_part FOR VALUES IN (2);
INSERT INTO public.h_part VALUES (1, 1), (1, 2), (2, 3);
CREATE TABLE public.h_family (v int);
CREATE TABLE public.h_heir () INHERITS (public.h_family);
INSERT INTO public.h_family VALUES (1);
INSERT INTO public.h_heir VALUES (2);
"""
FAMILY_STATE = ("SELECT (SELECT string_agg(tableoid::regclass || ':' || k || ':' || v, ',' ORDER BY k, v) "
                "FROM public.h_part), "
                "(SELECT string_agg(tableoid::regclass || ':' || v, ',' ORDER BY v) FROM public.h_family)")


@pytest.fixture
def family(server):
    server.conn.execute(FAMILY)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.h_part, public.h_family CASCADE")


PARENT_RULES = _policy(
    _approve("part-deletes", ["delete"], ["public.h_part"]),
    _block("part-updates", ["update"], ["public.h_part"]),
    _approve("new-rows", ["insert"], ["public.h_part", "public.h_family"]),
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DELETE FROM h_p1 WHERE v = 1",  # approve delete on the partitioned table
    "UPDATE h_p1 SET v = 9 WHERE v = 1",  # block update on it
    "INSERT INTO h_p1 VALUES (1, 7)",  # approve insert on it
    "INSERT INTO h_heir VALUES (7)",  # approve insert on the inheritance parent
    "DELETE FROM public.h_p2 WHERE v = 3",
], ids=["delete-partition", "update-partition", "insert-partition", "insert-child", "qualified"])
def test_a_rule_on_a_parent_covers_writes_through_its_partitions_and_children(make_pgwarden, hostile_db, family,
                                                                            protocol, sql):
    running = make_pgwarden(policies=PARENT_RULES, upstream={"database": DB})
    before = family.conn.execute(FAMILY_STATE).fetchone()
    (answer,) = _run(running, protocol, sql)
    assert errors(answer), answer
    assert family.conn.execute(FAMILY_STATE).fetchone() == before


PARTITION_RULES = _policy(
    _approve("p1-deletes", ["delete"], ["public.h_p1"]),
    _approve("p2-inserts", ["insert"], ["public.h_p2"]),
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_update_of_the_partitioned_table_moving_rows_deletes_from_a_partition(make_pgwarden, hostile_db, family,
                                                                               protocol):
    # the server deletes the row from h_p1 and inserts it into h_p2
    # (group "others": moving rows inside the partitioned table is no DELETE of it)
    others = _policy(_approve("part-deletes", ["delete"], ["public.h_part"]), group="others")
    running = make_pgwarden(policies=PARTITION_RULES + others, upstream={"database": DB})
    before = family.conn.execute(FAMILY_STATE).fetchone()
    (answer,) = _run(running, protocol, "UPDATE h_part SET k = 2 WHERE v = 1")
    assert errors(answer), answer
    assert family.conn.execute(FAMILY_STATE).fetchone() == before
    # an UPDATE that sets no column of the partition key moves nothing: no rule on a partition's
    # deletes or inserts concerns it
    (answer,) = _run(running, protocol, "UPDATE h_part SET v = 9 WHERE v = 2")
    assert not errors(answer), answer
    (answer,) = _run(running, protocol, "UPDATE h_part SET k = 2 WHERE v = 1", group="others")
    assert not errors(answer), answer
    assert _one(family.conn, "SELECT count(*) FROM public.h_p2") == 2
    assert _one(family.conn, "SELECT count(*) FROM public.h_p1 WHERE v = 9") == 1


# ---------------------------------------------------------------------- DROP, and schemas renamed

VAULT_SETUP = """
DROP SCHEMA IF EXISTS vault CASCADE; DROP SCHEMA IF EXISTS opened CASCADE;
DROP SCHEMA IF EXISTS hunt_free CASCADE; DROP SCHEMA IF EXISTS hunt_freed CASCADE;
DROP TABLE IF EXISTS public.hunt_free_t; DROP PUBLICATION IF EXISTS hunt_pub;
DROP DOMAIN IF EXISTS public.hunt_code CASCADE;
DROP FUNCTION IF EXISTS public.hunt_default() CASCADE; DROP FUNCTION IF EXISTS public.hunt_trig() CASCADE;
DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hunt_owner') THEN DROP OWNED BY hunt_owner; DROP ROLE hunt_owner; END IF;
END $$;
CREATE ROLE hunt_owner;
CREATE DOMAIN public.hunt_code AS text;
CREATE FUNCTION public.hunt_default() RETURNS int LANGUAGE sql STABLE AS 'SELECT 7';
CREATE FUNCTION public.hunt_trig() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE SCHEMA vault;
CREATE TABLE vault.t (id int PRIMARY KEY, code public.hunt_code, d int DEFAULT public.hunt_default());
CREATE INDEX t_code ON vault.t (code);
CREATE TRIGGER t_trig BEFORE INSERT ON vault.t FOR EACH ROW EXECUTE FUNCTION public.hunt_trig();
CREATE POLICY t_pol ON vault.t USING (true);
CREATE RULE t_rule AS ON DELETE TO vault.t DO ALSO NOTHING;
CREATE VIEW vault.v AS SELECT id FROM vault.t;
CREATE MATERIALIZED VIEW vault.mv AS SELECT id FROM vault.t;
CREATE SEQUENCE vault.s;
CREATE TABLE vault.owned (id int);
ALTER TABLE vault.owned OWNER TO hunt_owner;
INSERT INTO vault.t VALUES (1, 'a'), (2, 'b');
CREATE SCHEMA hunt_free;
CREATE TABLE hunt_free.x (id int);
CREATE TABLE public.hunt_free_t (id int);
"""
VAULT_TEARDOWN = """
DROP SCHEMA IF EXISTS vault CASCADE; DROP SCHEMA IF EXISTS opened CASCADE;
DROP SCHEMA IF EXISTS hunt_free CASCADE; DROP SCHEMA IF EXISTS hunt_freed CASCADE;
DROP TABLE IF EXISTS public.hunt_free_t; DROP PUBLICATION IF EXISTS hunt_pub;
DROP DOMAIN IF EXISTS public.hunt_code CASCADE;
DROP FUNCTION IF EXISTS public.hunt_default() CASCADE; DROP FUNCTION IF EXISTS public.hunt_trig() CASCADE;
DROP OWNED BY hunt_owner; DROP ROLE hunt_owner;
"""
# everything of the vault schema, as the catalog shows it
VAULT_STATE = """
SELECT (SELECT string_agg(nspname || ':' || pg_get_userbyid(nspowner), ',') FROM pg_namespace
        WHERE nspname IN ('vault', 'opened')),
       (SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = 'vault'),
       (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
        WHERE attrelid = to_regclass('vault.t') AND attnum > 0 AND NOT attisdropped),
       (SELECT count(*) FROM pg_attrdef WHERE adrelid = to_regclass('vault.t')),
       (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('vault.t') AND NOT tgisinternal),
       (SELECT count(*) FROM pg_policy WHERE polrelid = to_regclass('vault.t')),
       (SELECT count(*) FROM pg_rewrite WHERE ev_class = to_regclass('vault.t')),
       (SELECT count(*) FROM vault.t),
       (SELECT count(*) FROM pg_publication WHERE pubname = 'hunt_pub')
"""
VAULT = _policy(
    {"name": "vault", "block": {"tables": ["vault.*"]}},
    {"name": "no-admin", "block": {"statements": ["truncate", "grant", "role", "system", "unknown"]}},
)


@pytest.fixture
def vault(server):
    server.conn.execute(VAULT_SETUP)
    yield server
    server.conn.execute(VAULT_TEARDOWN)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DROP TABLE vault.t CASCADE",
    "DROP VIEW vault.v",
    "DROP MATERIALIZED VIEW vault.mv",
    "DROP SEQUENCE vault.s",
    "DROP INDEX vault.t_code",
    "DROP TRIGGER t_trig ON vault.t",
    "DROP POLICY t_pol ON vault.t",
    "DROP RULE t_rule ON vault.t",
    "DROP SCHEMA vault CASCADE",
    "DROP DOMAIN public.hunt_code CASCADE",  # drops vault.t.code
    "DROP FUNCTION public.hunt_default() CASCADE",  # drops vault.t.d's default
    "DROP FUNCTION public.hunt_trig() CASCADE",  # drops vault.t's trigger
    "DROP OWNED BY hunt_owner",  # drops vault.owned
    "ALTER SCHEMA vault RENAME TO opened",  # vault.* is opened.* afterwards
    "ALTER SCHEMA vault OWNER TO hunt_owner",
    "CREATE PUBLICATION hunt_pub FOR TABLES IN SCHEMA vault",  # logical replication sends its rows out
], ids=lambda sql: sql.split(" (")[0].replace(" ", "-").lower())
def test_ddl_that_drops_or_moves_a_blocked_tables_parts_is_refused(make_pgwarden, hostile_db, vault, protocol, sql):
    running = make_pgwarden(policies=VAULT, upstream={"database": DB})
    before = vault.conn.execute(VAULT_STATE).fetchone()
    answer, _then = _run(running, protocol, sql, "DELETE FROM opened.t WHERE id > 0")
    assert errors(answer), answer
    assert vault.conn.execute(VAULT_STATE).fetchone() == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ddl_of_other_tables_and_schemas_still_runs(make_pgwarden, hostile_db, vault, protocol):
    # (and the ALTER TABLE statements that name a vault table were refused already)
    running = make_pgwarden(policies=VAULT, upstream={"database": DB})
    before = vault.conn.execute(VAULT_STATE).fetchone()
    answers = _run(running, protocol, "DROP TABLE public.hunt_free_t", "ALTER SCHEMA hunt_free RENAME TO hunt_freed",
                   "DROP SCHEMA hunt_freed CASCADE", "ALTER TABLE vault.t RENAME TO u",
                   "ALTER TABLE vault.t SET SCHEMA public", "DROP SCHEMA vault CASCADE")
    assert [bool(errors(a)) for a in answers] == [False, False, False, True, True, True], answers
    assert _one(vault.conn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'hunt_free%'") == 0
    assert _one(vault.conn, "SELECT to_regclass('public.hunt_free_t') IS NULL")
    assert vault.conn.execute(VAULT_STATE).fetchone() == before
    assert all(isinstance(a[-1], m.ReadyForQuery) for a in answers)


# ---------------------------------------------------------------------- what a cascade stores

CASCADES = """
DROP TABLE IF EXISTS public.hunt_sd_child, public.hunt_sn_child, public.hunt_parent CASCADE;
CREATE OR REPLACE FUNCTION public.hunt_null_wipe() RETURNS int LANGUAGE sql VOLATILE
    AS $$ WITH d AS (DELETE FROM secret.things RETURNING 1) SELECT NULL::int $$;
CREATE TABLE public.hunt_parent (id int PRIMARY KEY);
INSERT INTO public.hunt_parent VALUES (1), (2);
CREATE TABLE public.hunt_sd_child (id int, pid int DEFAULT public.hunt_null_wipe()
    REFERENCES public.hunt_parent ON DELETE SET DEFAULT);
CREATE TABLE public.hunt_sn_child (id int, pid int REFERENCES public.hunt_parent ON DELETE SET NULL ON UPDATE CASCADE,
    CHECK (public.wipe_if_armed()));
INSERT INTO public.hunt_sd_child VALUES (10, 1);
INSERT INTO public.hunt_sn_child VALUES (10, 2);
DELETE FROM secret.things; INSERT INTO secret.things SELECT g, 1000 + g FROM generate_series(1, 3) g;
"""
SECRETS = _policy({"name": "secrets", "block": {"tables": ["secret.*"]}})


@pytest.fixture
def cascades(server):
    server.conn.execute(CASCADES)
    yield server
    server.conn.execute("DROP TABLE IF EXISTS public.hunt_sd_child, public.hunt_sn_child, public.hunt_parent CASCADE; "
                        "DROP FUNCTION IF EXISTS public.hunt_null_wipe()")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sql", [
    "DELETE FROM public.hunt_parent WHERE id = 1",  # SET DEFAULT computes hunt_null_wipe()
    "DELETE FROM public.hunt_parent WHERE id = 2",  # SET NULL: the child's CHECK runs
    "UPDATE public.hunt_parent SET id = 3 WHERE id = 2",  # ON UPDATE CASCADE: the CHECK runs
], ids=["set-default", "set-null-check", "update-cascade-check"])
def test_what_a_cascaded_update_stores_runs(make_pgwarden, hostile_db, cascades, protocol, sql):
    running = make_pgwarden(policies=SECRETS, upstream={"database": DB})
    agent = Agent(running, "ai-agents", protocol)
    try:
        assert not errors(agent.run("SET hostile.armed = on"))
        answer = agent.run(sql)
    finally:
        agent.close()
    assert errors(answer), answer
    assert _one(cascades.conn, "SELECT count(*) FROM secret.things") == 3
    assert _one(cascades.conn, "SELECT count(*) FROM public.hunt_parent") == 2
