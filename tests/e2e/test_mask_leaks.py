"""Leak attempts against masking, judged by every byte pgwarden sent (issue 18, item 7 and its acceptance).

An attacker's corpus: each case is what an agent would send to read a masked column
(``users.ssn`` redact, ``card_number`` partial keep_last 4, ``email`` keeping the
domain, ``salary`` hash, ``dob`` null) some other way: aliases, expressions, encodings,
whole rows, aggregates, views, functions, cursors, COPY, binary results, errors and
notices (every field, unquoted numbers, echoed input, failed writes), oracles, session state,
the catalog's statistics, code that runs out of lineage's sight (DO blocks, triggers, rules,
defaults and other stored expressions), state that keeps a value (settings, locks, large
objects, sequences, NOTIFY), and protocol paths no driver takes (`Raw`). Every case runs in a new
session through a TCP tap (`pgwarden.testing.tap`) over five clients (`leakclients`:
simple Query, a named statement in text, binary results, asyncpg, undescribed portals
fetched a row at a time), and is judged twice:

* **no leak**: the whole server-to-client stream of the session holds none of the
  run's random secrets in any form `pgwarden.testing.leaks` knows (case-folded,
  reversed, digits, hex, base64, digests, int/numeric/float/date binary encodings,
  substrings), nor, for a single statement, any value the same statement returns when
  run directly on a twin database whose masked columns hold other secrets (a value
  that differs between the two depends on the secrets: whatever encoding the
  attacker chose, it must not arrive);
* **its outcome**: plain reads are answered, masked (never refused: refusing
  ``SELECT * FROM users`` is a defect); oracles are refused with 42501 or answered
  without the value; statements that make the server quote a value fail without it.

`test_each_attempt_leaks_without_masks` runs the corpus through a policy without mask
rules and asserts the tap finds the leak: every attempt is a real one, and the finder sees it.

Cases the implementation does not handle yet are ``xfail(strict=True)`` with the reason:
never deleted. ``make fuzz-leaks`` runs the grammar property deep.
"""

from __future__ import annotations

import os
import random
import re
from decimal import Decimal

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leakclients import PROTOCOLS, Answer, Client, Copy, Pipeline, Raw, Step
from psycopg.pq import DiagnosticField

from pgwarden.testing.leaks import (
    LeakFinder,
    Secret,
    random_card,
    random_date,
    random_salary,
    random_ssn,
    random_word,
    searched,
)
from pgwarden.testing.matrix import examples, protocols_of
from pgwarden.testing.postgres import APP_USER
from pgwarden.testing.tap import Tap
from pgwarden.wire import messages as m

DB, TWIN = "leaks", "leaks_twin"

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, dept text, ssn text, card_number text, email text,
                    salary numeric(12, 2), dob date);
CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount int);
CREATE TABLE notes (id serial PRIMARY KEY, body text);
CREATE VIEW v_users AS SELECT * FROM users;
CREATE VIEW v_renamed AS SELECT id, name AS who, ssn AS tax_id, card_number AS pan, email AS contact FROM users;
CREATE VIEW v_nested AS SELECT id, who, upper(tax_id) AS tid, pan || '' AS pan2 FROM v_renamed;
CREATE VIEW v_deep AS SELECT n.id, n.tid, n.pan2, o.amount FROM v_nested n JOIN orders o ON o.user_id = n.id;
CREATE VIEW v_safe AS SELECT id, name, dept FROM users;
CREATE FUNCTION ident(t text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $1';
CREATE FUNCTION all_users() RETURNS SETOF users LANGUAGE sql STABLE AS 'SELECT * FROM users';
CREATE FUNCTION ssn_list() RETURNS TABLE (uid int, x text) LANGUAGE sql STABLE AS 'SELECT id, ssn FROM users';
CREATE FUNCTION user_ssn(uid int) RETURNS text LANGUAGE plpgsql STABLE
    AS $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = uid; RETURN s; END $$;
CREATE FUNCTION user_blob(uid int) RETURNS text LANGUAGE plpgsql STABLE
    AS $$ BEGIN RETURN (SELECT reverse(card_number) FROM users WHERE id = uid); END $$;
CREATE FUNCTION plpgsql_users() RETURNS SETOF users LANGUAGE plpgsql STABLE
    AS $$ BEGIN RETURN QUERY SELECT * FROM users; END $$;
CREATE FUNCTION noisy(uid int) RETURNS int LANGUAGE plpgsql STABLE
    AS $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = uid; RAISE NOTICE 'checking %', s;
          RETURN 1; END $$;
CREATE FUNCTION loud(uid int) RETURNS int LANGUAGE plpgsql STABLE
    AS $$ DECLARE s text; BEGIN SELECT email INTO s FROM users WHERE id = uid; RAISE EXCEPTION 'bad user %', reverse(s);
          END $$;
"""
AFTER_DATA = """
CREATE MATERIALIZED VIEW mv_users AS SELECT id, ssn, email, salary FROM users;
CREATE MATERIALIZED VIEW mv_derived AS SELECT id, reverse(ssn) AS r, md5(card_number) AS h, dob + 1 AS d FROM users;
CREATE STATISTICS users_mcv (mcv) ON dept, ssn FROM users;
CREATE STATISTICS users_expr ON (upper(email)) FROM users;
ANALYZE users;
"""
# Between cases, on a direct connection: what a case may have left behind.
RESET = """
DROP RULE IF EXISTS leak_r ON notes;
DROP FUNCTION IF EXISTS leak_fn() CASCADE;
DROP FUNCTION IF EXISTS leak_fn(int) CASCADE;
DROP PROCEDURE IF EXISTS leak_p(text);
ALTER TABLE notes ALTER body DROP DEFAULT;
DELETE FROM notes;
DROP VIEW IF EXISTS leak_view;
DROP MATERIALIZED VIEW IF EXISTS leak_mv;
DROP TABLE IF EXISTS leak_copy;
DROP DOMAIN IF EXISTS leak_dom CASCADE;  -- (a closed session's temp table may still use it: its backend exits after the close)
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
"""
USERS = 4  # user 4 shares user 1's SSN: equal values make most_common_vals and unique violations


# ---------------------------------------------------------------------- the secrets of a run


@attrs.frozen
class User:
    id: int
    name: str
    dept: str
    ssn: str
    card_number: str
    email: str
    salary: Decimal
    dob: object

    def row(self) -> tuple:
        return (self.id, self.name, self.dept, self.ssn, self.card_number, self.email, self.salary, self.dob)


def make_users(rng: random.Random) -> list[User]:
    users = []
    for i in range(1, USERS + 1):
        ssn = users[0].ssn if i == 4 else random_ssn(rng)
        users.append(User(i, f"{random_word(rng, 4)}name{i}", ["eng", "ops"][i % 2], ssn, random_card(rng),
                          f"{random_word(rng, 10)}@example.com", random_salary(rng), random_date(rng)))
    return users


def secrets_of(users: list[User]) -> list[Secret]:
    out = []
    for u in users:
        out += [Secret(f"user {u.id} ssn", u.ssn),
                Secret(f"user {u.id} card_number", u.card_number, hidden=u.card_number[:-4]),
                Secret(f"user {u.id} email", u.email, hidden=u.email.split("@")[0]),
                Secret(f"user {u.id} salary", u.salary),
                Secret(f"user {u.id} dob", u.dob)]
    return out


@attrs.frozen
class World:
    users: list[User]
    twin: list[User]
    finder: LeakFinder
    direct: dict[str, psycopg.Connection]  # to the real and the twin database, for the differential

    @property
    def canaries(self) -> list[bytes]:
        """Unmasked values (names) that a plain read of them must deliver."""
        return [u.name.encode() for u in self.users]


def _build(pg_server, database: str, users: list[User]) -> None:
    pg_server.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    pg_server.psql(f"CREATE DATABASE {database} OWNER {APP_USER}")
    with psycopg.connect(pg_server.dsn(database=database), autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [u.row() for u in users])
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s)", [(u.id, u.id, 10 * u.id) for u in users])
        conn.execute(AFTER_DATA)


#: the seed of this run's random world (users, secrets): ``PGWARDEN_LEAKS_SEED=<hex>`` runs a
#: failed run's world again; every failure message names it
SEED = os.environ.get("PGWARDEN_LEAKS_SEED") or os.urandom(16).hex()
REPLAY = f" [world: PGWARDEN_LEAKS_SEED={SEED}]"


def _unrelated_twin(rng: random.Random, finder: LeakFinder) -> list[User]:
    """Secrets for the twin database that the finder does not take for the real ones.

    The finder looks for six-character windows of a secret: ``53-23-`` of one SSN (reversed) is in
    another's ``853-23-5239``. Some window of a twin's secrets matched a real one in 36 of 3,000
    random worlds: every check that the twin's values raise no alarm would fail by chance then, so
    such a twin is drawn again."""
    while True:
        twin = make_users(rng)
        texts = [str(s.value) for s in secrets_of(twin)]
        if not any(finder.find(b"\x00\x00\x00" + t.encode() + b"\x00\x00\x00") for text in texts
                   for t in (text, text[::-1])):
            return twin


@pytest.fixture(scope="module")
def world(pg_server):
    rng = random.Random(bytes.fromhex(SEED))
    users = make_users(rng)
    finder = LeakFinder(secrets_of(users))
    twin = _unrelated_twin(rng, finder)
    # the twin differs only in what is masked: unmasked outputs are equal, so they are never flagged
    twin = [attrs.evolve(t, name=u.name, dept=u.dept) for u, t in zip(users, twin)]
    _build(pg_server, DB, users)
    _build(pg_server, TWIN, twin)
    direct = {db: psycopg.connect(pg_server.dsn(database=db), autocommit=True) for db in (DB, TWIN)}
    yield World(users, twin, finder, direct)
    for conn in direct.values():
        conn.close()


# ---------------------------------------------------------------------- pgwarden and the tap

HASH_KEY = "leak-corpus-hmac-key-0123456789abcdef"
MASKS = [
    {"name": "ssn", "mask": {"columns": ["public.users.ssn"], "with": "redact"}},
    {"name": "cards", "mask": {"columns": ["public.users.card_number"], "with": {"partial": {"keep_last": 4}}}},
    {"name": "contact", "mask": {"columns": ["public.users.email"], "with": "email"}},
    {"name": "pay", "mask": {"columns": ["public.users.salary"], "with": "hash"}},
    {"name": "birth", "mask": {"columns": ["public.users.dob"], "with": "null"}},
]
NO_ROLES = {"name": "no-roles", "block": {"statements": ["role", "system"]}}
POLICIES = [
    # masks only, everything else allowed: the widest door an agent could be given
    {"name": "mask", "when": {"groups": ["mask"]}, "default": "allow", "rules": [NO_ROLES, *MASKS]},
    # the same and detectors over every text column (values that no lineage reaches: the catalog's)
    {"name": "detect", "when": {"groups": ["detect"]}, "default": "allow",
     "rules": [NO_ROLES, *MASKS, {"name": "detect", "mask": {"detect": ["ssn", "credit_card", "email"]}}]},
    # nothing masked: every attempt must be seen to leak (the corpus and the finder checked)
    {"name": "open", "when": {"groups": ["open"]}, "default": "allow", "rules": [NO_ROLES]},
]


@attrs.define
class Warden:
    running: object
    tap: Tap
    tokens: dict[str, str] = attrs.field(factory=dict)

    def client(self, protocol: str, group: str) -> Client:
        if group not in self.tokens:
            self.tokens[group] = self.running.token(groups=[group])
        return Client(protocol, self.tap, self.tokens[group], DB)


@pytest.fixture(scope="module")
def warden(world, pg_server, signing_keys, reactor_thread, tmp_path_factory):
    """One pgwarden for the module (three policies) in front of the leaks database, and a tap in front of it."""
    from pgwarden.testing.pytest_plugin import base_config, module_pgwarden

    workdir = tmp_path_factory.mktemp("leaks")
    (workdir / "hash-key").write_text(HASH_KEY)
    doc = base_config(pg_server, signing_keys, workdir, policies=POLICIES, upstream={"database": DB},
                      plugins={"mask": {"key_file": str(workdir / "hash-key")}})
    with module_pgwarden(doc, signing_keys, reactor_thread) as running:
        tap = Tap(running.host, running.port)
        yield Warden(running, tap)
        tap.close()


@pytest.fixture(scope="module")
def direct(world, pg_server):
    conn = psycopg.connect(pg_server.dsn(database=DB), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def bystander(world, pg_server):
    """The application's own session, idle after a query that names a secret: pg_stat_activity shows it."""
    conn = psycopg.connect(pg_server.dsn(database=DB), autocommit=True)
    u = world.users[1]
    conn.execute(f"SELECT id FROM users WHERE ssn = '{u.ssn}' OR card_number = '{u.card_number}'")
    yield conn
    conn.close()


# ---------------------------------------------------------------------- the corpus

MASKED, REFUSED, EITHER, ERROR, PLAIN, ANY = "masked", "refused", "masked-or-refused", "error-or-refused", "plain", "any"


@attrs.frozen
class Case:
    technique: str
    steps: tuple[Step, ...]
    expect: str = MASKED
    policy: str = "mask"
    protocols: tuple[str, ...] = PROTOCOLS
    open_leaks: bool = True  # without masks, the attempt delivers a secret the finder sees
    canary: bool = True  # PLAIN: the unmasked names must arrive
    differential: bool = True  # compare with the twin database (a single statement without side effects)
    reveals: object = None  # users -> strings the attempt's own encoding turns a secret into
    xfail: str | None = None  # the reason, for every protocol
    xfail_on: tuple[str, ...] = ()  # ... or only these
    xfail_strict: bool = True  # False only for a race, which fails some of the time

    @property
    def label(self) -> str:
        texts = [step if isinstance(step, str) else step.sql for step in self.steps]
        return f"{self.technique}: {max(texts, key=len)}"[:110]  # the longest step is the attempt


def c(technique: str, *steps: Step, **kw) -> Case:
    return Case(technique, steps, **kw)


BEGIN, ROLLBACK, COMMIT = "BEGIN", "ROLLBACK", "COMMIT"
SIMPLE = ("simple",)
NO_ASYNCPG = ("simple", "ext-text", "ext-binary", "portal")
CODE = ("simple", "ext-text", "portal")  # what runs or stores code: judged by its later reads
LETTERS = str.maketrans("0123456789", "abcdefghij")
RECONSTRUCT_WHERE = ("SELECT string_agg(d::text, '' ORDER BY i) FROM users u, generate_series(1, 11) i, "
                     "generate_series(0, 9) d WHERE substr(u.ssn, i, 1) = d::text GROUP BY u.id")
RECONSTRUCT_CASE = ("SELECT (SELECT string_agg(CASE WHEN substr(u.ssn, i, 1) = d::text THEN d::text END, '' "
                    "ORDER BY i) FROM generate_series(1, 11) i, generate_series(0, 9) d) FROM users u")

# What the implementation does not handle yet is marked here (xfail, strict: a fix makes it fail until the mark
# goes). Nothing at present.

CASES = [
    # ------------------------------------------------------------ plain reads: masked, never refused
    c("plain", "SELECT * FROM users"),
    c("plain", "SELECT id, ssn FROM users"),
    c("plain", "SELECT ssn, card_number, email, salary, dob FROM users ORDER BY id"),
    c("plain", "TABLE users"),
    c("plain", "SELECT * FROM users WHERE id = 2"),
    c("plain", "SELECT u.* FROM users u ORDER BY u.id LIMIT 3 OFFSET 1"),
    c("plain", "SELECT * FROM ONLY users FOR SHARE"),
    c("plain", "SELECT ssn, email FROM users TABLESAMPLE SYSTEM (100) WHERE id = ANY('{1,2,3}')"),
    c("plain", "SELECT id, name, dept FROM users", expect=PLAIN, open_leaks=False),
    c("plain", "SELECT * FROM v_safe WHERE dept = 'eng'", expect=PLAIN, open_leaks=False),
    # ------------------------------------------------------------ aliases and quoting
    c("alias", "SELECT ssn AS name, name AS ssn FROM users"),
    c("alias", 'SELECT "ssn" AS "x y", U."card_number" AS "Email" FROM public.users AS U'),
    c("alias", 'SELECT "USERS".email FROM "users" "USERS"'),
    c("alias", "SELECT d, e FROM users AS x(a, b, c, d, e)"),
    # ------------------------------------------------------------ * and t.*
    c("star", "SELECT t.* FROM (SELECT * FROM users) t"),
    c("star", "SELECT * FROM users u JOIN orders o ON o.user_id = u.id"),
    c("star", "SELECT * FROM users JOIN users u2 USING (id)"),
    # ------------------------------------------------------------ sub-selects and CTEs
    c("subquery", "SELECT s FROM (SELECT ssn AS s FROM users) q"),
    c("cte", "WITH k AS (SELECT card_number AS k FROM users) SELECT k FROM k"),
    c("cte", "WITH m AS MATERIALIZED (SELECT * FROM users) SELECT email, salary FROM m"),
    c("cte", "WITH RECURSIVE r(n, v) AS (SELECT 1, ssn FROM users WHERE id = 1 "
             "UNION ALL SELECT n + 1, v FROM r WHERE n < 3) SELECT v FROM r"),
    c("cte", "WITH RECURSIVE r(i, acc) AS (SELECT 0, ''::text UNION ALL SELECT i + 1, acc || "
             "(SELECT substr(ssn, i + 1, 1) FROM users WHERE id = 2) FROM r WHERE i < 11) SELECT acc FROM r"),
    # ------------------------------------------------------------ set operations
    c("setop", "SELECT name FROM users UNION ALL SELECT ssn FROM users"),
    c("setop", "SELECT ssn FROM users UNION SELECT 'none'", expect=EITHER),
    c("setop", "SELECT email FROM users INTERSECT SELECT email FROM users", expect=EITHER),
    c("setop", "SELECT card_number FROM users EXCEPT SELECT 'none'", expect=EITHER),
    # ------------------------------------------------------------ views and materialized views
    c("view", "SELECT * FROM v_users"),
    c("view", "SELECT tax_id, pan, contact FROM v_renamed"),
    c("view", "SELECT * FROM v_nested"),
    c("view", "SELECT * FROM v_deep"),
    c("matview", "SELECT * FROM mv_users"),
    c("matview", "SELECT r, h, d FROM mv_derived"),
    # ------------------------------------------------------------ LATERAL and scalar sub-queries
    c("lateral", "SELECT l.x FROM users u, LATERAL (SELECT u.ssn AS x) l"),
    c("lateral", "SELECT l.* FROM users u CROSS JOIN LATERAL (SELECT reverse(u.email) AS r, u.salary * 2 AS s) l"),
    c("scalar", "SELECT (SELECT ssn FROM users WHERE id = 1)"),
    c("scalar", "SELECT id, (SELECT card_number FROM users v WHERE v.id = u.id) FROM users u"),
    c("scalar", "SELECT * FROM (VALUES ((SELECT email FROM users WHERE id = 2))) v(x)"),
    # ------------------------------------------------------------ expressions
    c("expression", "SELECT CASE WHEN id > 0 THEN ssn ELSE 'n/a' END FROM users"),
    c("expression", "SELECT coalesce(NULL, card_number), nullif(email, '') FROM users"),
    c("expression", "SELECT concat('<', email, '>'), 'x' || ssn || 'x' FROM users"),
    c("expression", "SELECT format('%s|%s|%s', ssn, card_number, email) FROM users"),
    c("expression", "SELECT substring(card_number FROM 1 FOR 12), left(ssn, 7), split_part(email, '@', 1) FROM users"),
    c("expression", "SELECT reverse(ssn), upper(email), lower(card_number) FROM users"),
    c("expression", "SELECT md5(ssn), md5(card_number), sha256(convert_to(email, 'UTF8')) FROM users"),
    c("expression", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64'), encode(email::bytea, 'hex') FROM users"),
    c("expression", "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM users"),
    c("expression", r"SELECT regexp_replace(card_number, '(\d)', '\1 ', 'g') FROM users"),
    c("expression", "SELECT to_hex(replace(ssn, '-', '')::bigint), to_hex(card_number::bigint) FROM users"),
    c("expression", "SELECT salary * 2 + 1, salary::money, to_char(salary, 'FM999G999G999D00') FROM users"),
    c("expression", "SELECT dob + 1, to_char(dob, 'DD Mon YYYY'), extract(epoch FROM dob) FROM users"),
    c("expression", "SELECT ident(ssn), overlay(card_number PLACING '-' FROM 5 FOR 0) FROM users"),
    c("expression", "SELECT array_to_string(string_to_array(ssn, NULL), ' '), quote_literal(email) FROM users"),
    # ------------------------------------------------------------ casts
    c("cast", "SELECT ssn::bytea, card_number::bytea FROM users"),
    c("cast", "SELECT to_json(ssn), to_jsonb(email), ('\"' || card_number || '\"')::json FROM users"),
    c("cast", "SELECT xmlelement(name s, ssn), xmlforest(card_number, email) FROM users"),
    c("cast", "SELECT replace(ssn, '-', '')::int, card_number::bigint, card_number::numeric FROM users"),
    c("cast", "SELECT salary::float8, salary::bigint, salary::text FROM users"),
    # values of other types: masked values must stay valid encodings of their type (clients decode by OID)
    c("type", "CREATE DOMAIN leak_dom AS text", "SELECT ssn::leak_dom, card_number::leak_dom FROM users"),
    c("type", "SELECT ROW(ssn, salary, dob)::text, (ssn, email) FROM users"),
    c("type", "SELECT int8range(replace(ssn, '-', '')::bigint, NULL), point(card_number::float8, 0) FROM users"),
    c("type", "SELECT make_interval(days => replace(ssn, '-', '')::int), replace(ssn, '-', '')::oid FROM users"),
    c("type", "SELECT to_tsvector('simple', email), ssn::char(20), ssn::name, ssn::varchar FROM users"),
    c("type", "SELECT salary::numeric(20, 4), dob::timestamptz, dob::date + 0, ARRAY[salary] FROM users"),
    c("type", "SELECT jsonb_build_array(ssn, salary, dob), to_json(ARRAY[card_number]) FROM users"),
    c("cast", "SELECT dob::timestamp, dob::text, ssn COLLATE \"C\", card_number::varchar(12) FROM users"),
    # ------------------------------------------------------------ whole rows and JSON
    c("whole-row", "SELECT u FROM users u"),
    c("whole-row", "SELECT users FROM users"),
    c("whole-row", "SELECT u::text FROM users u"),
    c("whole-row", "SELECT row_to_json(u) FROM users u"),
    c("whole-row", "SELECT to_jsonb(u) - 'name' FROM users u"),
    c("whole-row", "SELECT ROW(u.ssn, u.email), (u).card_number, (u.*).salary FROM users u"),
    c("whole-row", "SELECT json_build_object('s', ssn, 'c', card_number) FROM users"),
    # a set-returning function over masked values: 'rows' is an oracle (refused) or masked
    c("whole-row", "SELECT * FROM jsonb_each_text((SELECT to_jsonb(u) FROM users u WHERE id = 1))", expect=EITHER),
    c("whole-row", "SELECT (jsonb_populate_record(NULL::users, to_jsonb(u))).email FROM users u"),
    c("whole-row", "SELECT key, value FROM users u, json_each_text(row_to_json(u))", expect=EITHER),
    c("whole-row", "SELECT x.* FROM users u, jsonb_to_record(to_jsonb(u)) AS x(ssn text, card_number text)"),
    # a set-returning function over a structure the statement fixes: as many rows whatever the values
    c("whole-row", "SELECT u.id, e.* FROM users u, jsonb_each(jsonb_build_object('s', u.ssn, 'c', u.card_number)) e"),
    c("whole-row", "SELECT k FROM users u, jsonb_object_keys(to_jsonb(u)) k", open_leaks=False),
    # ------------------------------------------------------------ aggregates, arrays, windows
    c("aggregate", "SELECT json_agg(u) FROM users u", expect=EITHER),
    c("aggregate", "SELECT array_agg(ssn ORDER BY id) FROM users", expect=EITHER),
    c("aggregate", "SELECT string_agg(email, ',') FROM users", expect=EITHER),
    c("aggregate", "SELECT jsonb_object_agg(id, card_number) FROM users", expect=EITHER),
    c("aggregate", "SELECT min(ssn), max(card_number) FROM users", expect=EITHER),
    c("aggregate", "SELECT json_agg(salary), array_agg(dob) FROM users", expect=EITHER),
    c("array", "SELECT ARRAY[ssn, email] FROM users"),
    c("array", "SELECT ARRAY(SELECT card_number FROM users ORDER BY id)"),
    c("array", "SELECT (ARRAY[name, ssn])[2] FROM users"),
    c("array", "SELECT unnest(ARRAY[email, card_number]) FROM users"),
    c("array", "SELECT u.id, t.* FROM users u, unnest(ARRAY[u.ssn, u.email, u.salary::text]) WITH ORDINALITY t"),
    c("window", "SELECT lag(ssn) OVER (ORDER BY id), first_value(email) OVER (ORDER BY id) FROM users"),
    c("window", "SELECT nth_value(card_number, 2) OVER w FROM users "
                "WINDOW w AS (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"),
    # ------------------------------------------------------------ RETURNING (rolled back)
    c("returning", BEGIN, "UPDATE users SET ssn = ssn WHERE id = 1 RETURNING ssn", ROLLBACK, expect=ANY),
    c("returning", BEGIN, "UPDATE users SET name = name RETURNING *", ROLLBACK, expect=ANY),
    c("returning", BEGIN, "DELETE FROM users WHERE id = 2 RETURNING email, card_number", ROLLBACK, expect=ANY),
    c("returning", BEGIN, "INSERT INTO notes (body) SELECT ssn FROM users RETURNING body", ROLLBACK, expect=ANY),
    # ------------------------------------------------------------ writing a masked value where it is not masked
    c("launder", BEGIN, "UPDATE users SET name = ssn WHERE id = 1", "SELECT name FROM users WHERE id = 1",
      ROLLBACK, expect=ANY),
    c("launder", "INSERT INTO notes (body) SELECT card_number FROM users", "SELECT body FROM notes", expect=ANY),
    c("launder", "CREATE TEMP TABLE t AS SELECT ssn, email FROM users", "SELECT * FROM t", expect=ANY),
    c("launder", "CREATE TEMP VIEW tv AS SELECT email AS x FROM users", "SELECT x FROM tv", expect=EITHER),
    c("launder", "CREATE FUNCTION leak_fn() RETURNS text LANGUAGE sql STABLE "
                 "AS $$ SELECT string_agg(ssn, ',') FROM users $$", "SELECT leak_fn()", expect=EITHER),
    # a named statement (ext-text, asyncpg, portal: reused by its text) whose view changes under it
    c("launder", "CREATE VIEW leak_view AS SELECT name AS x FROM users", "SELECT x FROM leak_view",
      "CREATE OR REPLACE VIEW leak_view AS SELECT ssn AS x FROM users", "SELECT x FROM leak_view", expect=EITHER),
    # ... and the same with the change and the read sent together, before the change has run
    c("launder", "CREATE VIEW leak_view AS SELECT name AS x FROM users", "SELECT x FROM leak_view",
      Pipeline(("CREATE OR REPLACE VIEW leak_view AS SELECT ssn AS x FROM users", "SELECT x FROM leak_view")),
      expect=ANY, protocols=NO_ASYNCPG),
    # DDL on the masked table: the rules name schema.table.column, code on it sees the values (rolled back)
    c("ddl", BEGIN, "ALTER TABLE users ADD COLUMN g text GENERATED ALWAYS AS (reverse(ssn)) STORED",
      "SELECT g FROM users", ROLLBACK, expect=ANY),
    c("ddl", BEGIN, "ALTER TABLE users RENAME COLUMN card_number TO pan", "SELECT pan FROM users", ROLLBACK,
      expect=ANY),
    c("ddl", BEGIN, "ALTER TABLE users RENAME TO leak_users", "SELECT ssn FROM leak_users", ROLLBACK, expect=ANY),
    # (the function committed first: arming a trigger is judged as a call of its function, and one
    # made in the open transaction is not known yet)
    c("ddl", "CREATE FUNCTION leak_fn() RETURNS trigger LANGUAGE plpgsql "
             "AS $$ BEGIN NEW.name := reverse(NEW.ssn); RETURN NEW; END $$", BEGIN,
      "CREATE TRIGGER leak_t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION leak_fn()",
      "UPDATE users SET id = id", "SELECT name FROM users", ROLLBACK, expect=ANY),
    c("ddl", BEGIN, "CREATE UNIQUE INDEX ON users (reverse(ssn))", ROLLBACK, expect=ANY),
    # session state and side channels that carry a value out of the statement that read it
    c("launder", "SELECT set_config('leak.x', ssn, false) FROM users WHERE id = 1", "SELECT current_setting('leak.x')",
      expect=ANY),
    c("launder", "SELECT set_config('leak.x', reverse(card_number), false) FROM users WHERE id = 2", "SHOW leak.x",
      expect=ANY),
    c("launder", "SELECT lo_from_bytea(4242, convert_to(email, 'UTF8')) FROM users WHERE id = 3",
      "SELECT lo_get(4242)", expect=ANY),
    c("launder", "LISTEN leak", "SELECT pg_notify('leak', ssn) FROM users", "SELECT 1", expect=ANY),
    c("launder", "LISTEN leak", "SELECT pg_notify('leak', reverse(card_number)) FROM users", "SELECT 1", expect=ANY),
    # ------------------------------------------------------------ cursors
    c("cursor", BEGIN, "DECLARE k CURSOR FOR SELECT ssn, card_number FROM users", "FETCH ALL FROM k", COMMIT,
      expect=ANY),
    c("cursor", BEGIN, "DECLARE k BINARY CURSOR FOR SELECT ssn, salary, dob FROM users", "FETCH 2 FROM k",
      "FETCH ALL FROM k", COMMIT, expect=ANY),
    c("cursor", BEGIN, "DECLARE k SCROLL CURSOR FOR SELECT * FROM users", "MOVE LAST IN k", "FETCH BACKWARD 2 FROM k",
      COMMIT, expect=ANY),
    c("cursor", "DECLARE k CURSOR WITH HOLD FOR SELECT email FROM users", "FETCH ALL k", "CLOSE k", expect=ANY),
    # ------------------------------------------------------------ PREPARE / EXECUTE
    c("prepare", "PREPARE p AS SELECT ssn, email FROM users", "EXECUTE p", expect=EITHER),
    c("prepare", "PREPARE q(int) AS SELECT reverse(card_number) FROM users WHERE id = $1", "EXECUTE q(3)",
      expect=EITHER),
    c("prepare", "PREPARE p AS SELECT upper(ssn) FROM users; EXECUTE p", protocols=SIMPLE, expect=EITHER),
    # ------------------------------------------------------------ set-returning and other functions
    c("function", "SELECT * FROM all_users()"),
    c("function", "SELECT (all_users()).ssn"),
    c("function", "SELECT x FROM ssn_list()"),
    c("function", "SELECT * FROM plpgsql_users()"),
    c("function", "SELECT user_ssn(1), user_ssn(2)", expect=EITHER),
    c("function", "SELECT user_blob(3)", expect=EITHER),
    c("function", "SELECT * FROM json_populate_record(NULL::users, (SELECT row_to_json(u) FROM users u WHERE id = 3))"),
    c("function", "SELECT * FROM json_to_recordset((SELECT json_agg(u) FROM users u)) AS x(ssn text, email text)",
      expect=EITHER),
    # ------------------------------------------------------------ COPY
    c("copy", Copy("SELECT * FROM users"), protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("users", is_query=False), protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("users", "csv", is_query=False), protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("SELECT reverse(ssn), email, salary FROM users", "csv"), protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("users", "binary", is_query=False), expect=REFUSED, protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("SELECT ssn FROM users", "binary"), expect=REFUSED, protocols=("simple", "asyncpg", "portal")),
    c("copy", Copy("SELECT id, name FROM users", "binary"), expect=PLAIN, open_leaks=False,
      protocols=("simple", "asyncpg", "portal")),
    # the old COPY syntax, and options the masker does not parse: refused
    c("copy", "COPY users TO STDOUT WITH BINARY", expect=REFUSED, protocols=SIMPLE),
    c("copy", "COPY BINARY users TO STDOUT", expect=REFUSED, protocols=SIMPLE),
    c("copy", "COPY users TO STDOUT WITH DELIMITER '|' NULL 'z'", expect=REFUSED, protocols=SIMPLE),
    c("copy", "COPY users TO STDOUT CSV QUOTE '|' FORCE QUOTE ssn", expect=REFUSED, protocols=SIMPLE),
    c("copy", "COPY users TO STDOUT (FORMAT csv, ENCODING 'LATIN1')", expect=REFUSED, protocols=SIMPLE),
    c("copy", Copy("users (ssn, id)", "csv, HEADER", is_query=False), protocols=("simple", "portal")),
    c("copy", Copy("TABLE users"), protocols=("simple", "asyncpg", "portal")),
    # ------------------------------------------------------------ errors and notices that quote a value
    c("error", "SELECT ssn::int FROM users", expect=ERROR),
    c("error", "SELECT card_number::int4 FROM users", expect=ERROR),
    c("error", "SELECT card_number::date FROM users", expect=ERROR),
    c("error", "SELECT reverse(email)::int FROM users", expect=ERROR),
    c("error", "SELECT ('x' || translate(ssn, '0123456789', 'abcdefghij'))::numeric FROM users", expect=ERROR,
      reveals=lambda u: [u.ssn.translate(LETTERS)]),
    c("error", "SELECT ssn::regclass FROM users", expect=ERROR),
    c("error", "SELECT noisy(2)", expect=ANY),
    c("error", "SELECT loud(2)", expect=ERROR),
    c("error", "DO $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = 1; RAISE NOTICE '%', s; END $$",
      expect=ANY),
    c("error", "DO $$ BEGIN RAISE EXCEPTION 'x' USING DETAIL = (SELECT string_agg(card_number, ',') FROM users); "
               "END $$", expect=ERROR),
    # a write that names no masked column, failing: "Failing row contains (1, null, eng, <ssn>, <card>, ...)"
    c("error", "UPDATE users SET name = NULL WHERE id = 1", expect=ERROR),
    c("error", "INSERT INTO users (id, name) VALUES (2, 'x') ON CONFLICT (id) DO UPDATE SET name = NULL",
      expect=ERROR),
    c("error", "UPDATE v_users SET name = NULL WHERE id = 3", expect=ERROR),
    c("error", "MERGE INTO users u USING (VALUES (4)) v(i) ON u.id = v.i WHEN MATCHED THEN UPDATE SET name = NULL",
      expect=ERROR),
    c("error", "CREATE TEMP TABLE uq (v text UNIQUE)", "INSERT INTO uq SELECT ssn FROM users", expect=ERROR),
    c("error", "CREATE TEMP TABLE ck (v text CHECK (v = ''))", "INSERT INTO ck SELECT email FROM users", expect=ERROR),
    # ------------------------------------------------------------ oracles
    c("oracle", "SELECT id FROM users WHERE ssn LIKE '1%'", expect=REFUSED, open_leaks=False),
    c("oracle", RECONSTRUCT_WHERE, expect=REFUSED),
    c("oracle", "SELECT 1/0 FROM users WHERE ssn LIKE '1%'", expect=REFUSED, open_leaks=False),
    c("oracle", RECONSTRUCT_CASE, expect=EITHER),
    c("oracle", "SELECT id FROM users ORDER BY ssn", expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT count(*) FROM users GROUP BY card_number", expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT DISTINCT card_number FROM users", expect=EITHER),
    c("oracle", "SELECT u.id FROM users u JOIN users v ON u.ssn = v.ssn AND u.id <> v.id", expect=REFUSED,
      open_leaks=False),
    c("oracle", "SELECT id, rank() OVER (PARTITION BY email ORDER BY id) FROM users", expect=REFUSED,
      open_leaks=False),
    c("oracle", "SELECT count(DISTINCT ssn) FROM users", expect=REFUSED, open_leaks=False),
    # a set-returning function whose row count follows a masked value (its outputs aside)
    c("oracle", "SELECT u.id, count(*) FROM users u, generate_series(1, ascii(u.ssn)) GROUP BY u.id",
      expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT u.id, count(*) FROM users u, regexp_split_to_table(u.email, '') GROUP BY u.id",
      expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT count(*) FROM users u, unnest(string_to_array(u.email, NULL)) WHERE u.id = 1",
      expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT count(*) FROM users u, unnest(ARRAY[string_to_array(u.email, NULL)]) WHERE u.id = 1",
      expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT count(*) FROM users u, jsonb_array_elements(to_jsonb(regexp_split_to_array(u.email, ''))) "
                "WHERE u.id = 1", expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT count(*) FROM users u, jsonb_object_keys(jsonb_build_object(u.ssn, 1, u.card_number, 2))",
      expect=REFUSED, open_leaks=False),
    c("oracle", "SELECT id FROM users WHERE salary > 5000000 AND dob < '1970-01-01'", expect=REFUSED,
      open_leaks=False),
    c("oracle", "SELECT id, ssn LIKE '1%' AS bit FROM users", expect=EITHER, open_leaks=False),
    c("oracle", "SELECT CASE WHEN ssn LIKE '1%' THEN 1/0 ELSE 0 END FROM users", expect=ANY, open_leaks=False,
      differential=False),
    c("oracle", "EXPLAIN SELECT * FROM users WHERE ssn = '123-45-6789'", expect=REFUSED, open_leaks=False),
    c("oracle", "EXPLAIN (VERBOSE, ANALYZE) SELECT id FROM users WHERE email LIKE 'a%'", expect=REFUSED,
      open_leaks=False),
    # ... by position, through a whole row, a view, a function's output, a join's USING, a correlated count
    c("oracle", "SELECT id, ssn FROM users ORDER BY 2", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT ssn FROM users GROUP BY 1", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT DISTINCT ON (ssn) id FROM users", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users u WHERE u::text LIKE '%1%'", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users u WHERE (u.*).ssn LIKE '1%'", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT a.id FROM users a JOIN users b USING (ssn)", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users NATURAL JOIN (SELECT ssn FROM users WHERE id = 1) s", expect=REFUSED,
      open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM v_nested WHERE tid LIKE '1%'", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT uid FROM ssn_list() WHERE x LIKE '1%'", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users WHERE user_ssn(id) LIKE '1%'", expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT u.id FROM users u, LATERAL (SELECT 1 WHERE u.ssn LIKE '1%') x", expect=REFUSED,
      open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users OFFSET (SELECT ascii(ssn) FROM users LIMIT 1)", expect=REFUSED,
      open_leaks=False, protocols=CODE),
    c("oracle", "SELECT (SELECT count(*) FROM users v WHERE v.ssn < u.ssn) FROM users u", expect=REFUSED,
      open_leaks=False, protocols=CODE),  # (counts: too short for the finder in text)
    # an order a masked column sets inside an aggregate: the ids in the SSNs' order
    c("oracle", "SELECT string_agg(id::text, ',' ORDER BY ssn) FROM users", expect=REFUSED, open_leaks=False,
      protocols=CODE),
    c("oracle", "SELECT array_agg(id ORDER BY card_number DESC), json_agg(name ORDER BY email) FROM users",
      expect=REFUSED, open_leaks=False, protocols=CODE),
    c("oracle", "SELECT rank('5') WITHIN GROUP (ORDER BY ssn) FROM users", expect=EITHER, open_leaks=False,
      protocols=CODE),
    c("oracle", "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY salary), mode() WITHIN GROUP (ORDER BY dob) "
                "FROM users", expect=EITHER, protocols=CODE),  # (a median salary and the commonest date of birth)
    c("oracle", "SELECT u.id, count(*) FROM users u, string_to_table(u.email, NULL) GROUP BY u.id", expect=REFUSED,
      open_leaks=False, protocols=CODE),
    c("oracle", "SELECT u.id, count(*) FROM users u, regexp_matches(u.ssn, '1', 'g') GROUP BY u.id", expect=REFUSED,
      open_leaks=False, protocols=CODE),
    c("oracle", "SELECT id FROM users ORDER BY ssn IS NULL, reverse(card_number)", expect=REFUSED, open_leaks=False,
      protocols=CODE),
    # XMLTABLE: as many rows as the document has nodes
    c("oracle", "SELECT count(*) FROM users u, XMLTABLE('/r/c' PASSING xmlparse(document '<r>' || "
                "regexp_replace(u.ssn, '1', '<c/>', 'g') || '</r>') COLUMNS v text PATH '.') x GROUP BY u.id",
      expect=REFUSED, open_leaks=False, protocols=CODE),
    c("expression", "SELECT x.v FROM users u, XMLTABLE('/r' PASSING xmlelement(name r, u.ssn) COLUMNS v text PATH '.') x",
      expect=EITHER),
    c("expression", "SELECT (xpath('/r/text()', xmlelement(name r, ssn)))[1]::text FROM users"),
    # ------------------------------------------------------------ session state
    c("session", "CREATE TEMP VIEW users AS SELECT * FROM public.users", "SELECT ssn, email FROM users", expect=EITHER),
    c("session", "CREATE TEMP TABLE users AS SELECT * FROM public.users", "SELECT * FROM users", expect=ANY),
    c("session", "SET ROLE app", expect=REFUSED, open_leaks=False),
    c("session", "SELECT set_config('search_path', 'pg_catalog', false)", "SELECT ssn FROM public.users"),
    c("session", "SET search_path = pg_temp, public", "SELECT card_number FROM users"),
    c("session", "SET DateStyle = 'SQL, DMY'", "SELECT dob FROM users"),
    c("session", "SET bytea_output = 'escape'", "SELECT ssn::bytea FROM users"),
    c("session", "DISCARD ALL", "SELECT * FROM users"),
    # ------------------------------------------------------------ the catalog and server state
    c("catalog", "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats "
                 "WHERE tablename = 'users' AND attname IN ('ssn', 'card_number')", expect=EITHER),
    c("catalog", "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'users' AND attname = 'ssn'",
      policy="detect", expect=EITHER),
    c("catalog", "SELECT query FROM pg_stat_activity WHERE query LIKE '%card_number%'", policy="detect",
      expect=EITHER, differential=False),  # other sessions differ between the two databases
    c("catalog", "SELECT reverse(query) FROM pg_stat_activity WHERE query LIKE '%card_number%'", policy="detect",
      expect=EITHER, differential=False),
    # (pg_statistic and pg_statistic_ext_data: relations PUBLIC may not read, whose reading is
    # `system` since red team ten: refused by the open policy's rule on system too, open_leaks=False)
    c("catalog", "SELECT stavalues1::text, stavalues2::text, reverse(stavalues3::text) FROM pg_statistic "
                 "WHERE starelid = 'users'::regclass", expect=EITHER, open_leaks=False),
    c("catalog", "SELECT most_common_vals::text FROM pg_stats_ext WHERE tablename = 'users'", expect=EITHER),
    c("catalog", "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats_ext_exprs "
                 "WHERE tablename = 'users'", expect=EITHER),
    c("catalog", "SELECT m.values::text FROM pg_statistic_ext_data d, pg_mcv_list_items(d.stxdmcv) m", expect=EITHER,
      open_leaks=False),
    c("catalog", "SELECT tablename, attname FROM pg_stats WHERE most_common_vals::text LIKE '%-%'", expect=EITHER,
      open_leaks=False),  # an oracle: refused, or answered without the values
    c("catalog", "SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() b", expect=EITHER,
      differential=False),
    c("catalog", "SELECT string_agg(reverse(query), ',') FROM pg_stat_activity", expect=EITHER, differential=False),
    c("catalog", "SELECT current_query()", expect=PLAIN, open_leaks=False, canary=False),
    c("catalog", "SELECT query FROM pg_stat_get_activity(NULL) WHERE query LIKE '%card_number%'", expect=EITHER,
      differential=False, protocols=CODE),
    c("catalog", "CREATE VIEW leak_view AS SELECT reverse(query) AS x FROM pg_stat_activity",
      "SELECT x FROM leak_view", expect=EITHER, protocols=CODE),
    c("catalog", "CREATE VIEW leak_view AS SELECT most_common_vals::text AS x FROM pg_stats WHERE tablename = 'users'",
      "SELECT x FROM leak_view", expect=EITHER, protocols=CODE),
    c("catalog", "CREATE FUNCTION leak_fn() RETURNS SETOF text LANGUAGE sql STABLE "
                 "AS $$ SELECT stavalues1::text FROM pg_statistic WHERE starelid = 'users'::regclass $$",
      "SELECT leak_fn()", expect=EITHER, protocols=CODE, open_leaks=False),
    c("catalog", "CREATE FUNCTION leak_fn() RETURNS SETOF text LANGUAGE plpgsql STABLE "
                 "AS $$ BEGIN RETURN QUERY SELECT reverse(query) FROM pg_stat_activity; END $$",
      "SELECT leak_fn()", expect=EITHER, protocols=CODE),
    c("catalog", "PREPARE p AS SELECT ssn FROM users WHERE id = 1", "SELECT statement FROM pg_prepared_statements",
      expect=EITHER, open_leaks=False, protocols=CODE),
    # ------------------------------------------------------------ protocol paths no driver takes
    # result formats per column (text, binary, ...), the portal described, then run two rows at a time
    c("protocol", Raw("per-column formats, Describe portal, Execute 2 + 2", (
        m.Parse("", "SELECT id, ssn, card_number, email, salary, dob FROM users ORDER BY id"),
        m.Bind("", "", result_formats=(0, 1, 0, 1, 0, 1)), m.Describe("P", ""), m.Execute("", 2), m.Execute("", 2),
        m.Sync())), protocols=("portal",), open_leaks=False),
    c("protocol", Raw("per-column formats, a derived column in binary", (
        m.Parse("", "SELECT reverse(ssn), salary * 1, dob + 0, name FROM users"),
        m.Bind("", "", result_formats=(1, 0, 1, 0)), m.Execute("", 0), m.Sync())), protocols=("portal",),
      open_leaks=False),
    # COPY through the extended protocol (Parse, Bind, Execute with a row limit)
    c("protocol", Raw("COPY users TO STDOUT, extended", (
        m.Parse("", "COPY users TO STDOUT"), m.Bind("", ""), m.Execute("", 1), m.Sync())), protocols=("portal",),
      open_leaks=False),
    c("protocol", Raw("COPY (SELECT reverse(ssn), salary, dob FROM users) TO STDOUT (FORMAT csv), extended", (
        m.Parse("", "COPY (SELECT reverse(ssn), salary, dob FROM users) TO STDOUT (FORMAT csv)"), m.Bind("", ""),
        m.Describe("P", ""), m.Execute("", 0), m.Sync())), protocols=("portal",), open_leaks=False),
    c("protocol", Raw("COPY users TO STDOUT (FORMAT binary), extended", (
        m.Parse("", "COPY users TO STDOUT (FORMAT binary)"), m.Bind("", ""), m.Execute("", 0), m.Sync())),
      protocols=("portal",), expect=REFUSED, open_leaks=False),
    # the function call protocol: no statement to judge, so never let through
    c("protocol", Raw("FunctionCall of lo_get", (m.FunctionCall(3458, (0,), (b"4242",), 0),)),
      protocols=("portal",), expect=REFUSED, open_leaks=False),
    # ------------------------------------------------------------ message fields besides the message, unquoted values
    c("error", "DO $$ BEGIN RAISE EXCEPTION 'x' USING HINT = (SELECT string_agg(reverse(email), ',') FROM users); "
               "END $$", expect=ERROR, protocols=CODE),
    c("error", "DO $$ BEGIN RAISE EXCEPTION 'x' USING COLUMN = (SELECT string_agg(ssn, ',') FROM users), "
               "TABLE = (SELECT string_agg(email, ',') FROM users); END $$", expect=ERROR, protocols=CODE),
    c("error", "DO $$ BEGIN RAISE EXCEPTION 'x' USING CONSTRAINT = (SELECT string_agg(ssn, ',') FROM users), "
               "DATATYPE = (SELECT string_agg(email, ',') FROM users), "
               "SCHEMA = (SELECT string_agg(card_number, ',') FROM users); END $$", expect=ERROR, protocols=CODE),
    c("error", "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '22023', "
               "MESSAGE = (SELECT string_agg(reverse(ssn), ',') FROM users); END $$", expect=ERROR, protocols=CODE),
    c("error", "DO $$ BEGIN ASSERT false, (SELECT string_agg(card_number, ',') FROM users); END $$", expect=ERROR, protocols=CODE),
    c("error", "DO $$ BEGIN RAISE NOTICE 'n' USING HINT = (SELECT string_agg(email, ',') FROM users); END $$",
      expect=ANY, protocols=CODE),
    # ... the same from a function a plain SELECT calls (a DO block near masked tables is refused)
    c("error", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN RAISE EXCEPTION USING "
               "ERRCODE = '22023', MESSAGE = (SELECT string_agg(reverse(email), ',') FROM users); END $$",
      "SELECT leak_fn()", expect=ERROR, protocols=CODE),
    c("error", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN RAISE EXCEPTION 'x' USING "
               "HINT = (SELECT string_agg(reverse(email), ',') FROM users), "
               "COLUMN = (SELECT string_agg(ssn, ',') FROM users), "
               "SCHEMA = (SELECT string_agg(card_number, ',') FROM users); END $$", "SELECT leak_fn()", expect=ERROR, protocols=CODE),
    c("error", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN "
               "ASSERT false, (SELECT string_agg(reverse(email), ',') FROM users); RETURN 1; END $$", "SELECT leak_fn()",
      expect=ERROR, protocols=CODE),
    c("error", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN RAISE WARNING 'w' USING "
               "DETAIL = (SELECT string_agg(ssn, ',') FROM users), HINT = (SELECT string_agg(email, ',') FROM users); "
               "RETURN 1; END $$", "SELECT leak_fn()", expect=ANY, protocols=CODE),
    c("error", "SELECT ssn::json FROM users", expect=ERROR, protocols=CODE),  # CONTEXT:  JSON data, line 1: <the value>
    c("error", "SELECT email::jsonb FROM users", expect=ERROR, protocols=CODE),
    c("error", "SELECT xmlparse(document ssn) FROM users", expect=ERROR, protocols=CODE),  # the parser's DETAIL echoes the input
    c("error", "SELECT ('<' || email)::xml FROM users", expect=ERROR, protocols=CODE),
    c("error", "SELECT chr(replace(ssn, '-', '')::int) FROM users", expect=ERROR, protocols=CODE),  # numbers come unquoted
    c("error", "SELECT make_date(replace(ssn, '-', '')::int, 1, 1) FROM users", expect=ERROR, protocols=CODE),
    c("error", "SELECT set_bit('\\x00'::bytea, replace(ssn, '-', '')::int, 1) FROM users", expect=ERROR, protocols=CODE),
    c("error", "SELECT setseed(replace(ssn, '-', '')::int) FROM users", expect=ERROR, protocols=CODE),  # 8.16762e+08: differential
    # ------------------------------------------------------------ code that runs out of lineage's sight
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT ssn FROM users; END $$", "SELECT body FROM notes",
      expect=ANY, protocols=CODE),
    c("code", "DO $$ BEGIN PERFORM set_config('leak.x', (SELECT email FROM users WHERE id = 1), false); END $$",
      "SELECT current_setting('leak.x')", expect=ANY, protocols=CODE),
    c("code", "LISTEN leak", "DO $$ BEGIN PERFORM pg_notify('leak', (SELECT ssn FROM users WHERE id = 1)); END $$",
      "SELECT 1", expect=ANY, protocols=CODE),
    # ParameterStatus carries the new application_name to the client (refused by the core since round
    # eight, masks or not: application_name names the identity, docs/analysis.md)
    c("code", "DO $$ BEGIN PERFORM set_config('application_name', (SELECT ssn FROM users WHERE id = 1), false); "
              "END $$", "SELECT 1", expect=ANY, protocols=CODE, open_leaks=False),
    c("code", BEGIN, "DO $$ DECLARE c refcursor := (SELECT ssn FROM users WHERE id = 1); BEGIN OPEN c FOR SELECT 1; "
                     "END $$", "SELECT name FROM pg_cursors", COMMIT, expect=ANY, protocols=CODE),
    c("code", "CREATE PROCEDURE leak_p(INOUT x text) LANGUAGE sql AS $$ SELECT reverse(ssn) FROM users WHERE id = 1 $$",
      "CALL leak_p(NULL)", expect=ANY, protocols=CODE),
    # ... through a function, a view, a materialized view, the statistics, other sessions' statements
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT user_ssn(1); END $$", "SELECT body FROM notes",
      expect=ANY, protocols=CODE),
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT tax_id FROM v_renamed; END $$", "SELECT body FROM notes",
      expect=ANY, protocols=CODE),
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT ssn FROM mv_users; END $$", "SELECT body FROM notes",
      expect=ANY, protocols=CODE),
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT most_common_vals::text FROM pg_stats "
              "WHERE tablename = 'users'; END $$", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "DO $$ BEGIN INSERT INTO notes (body) SELECT query FROM pg_stat_activity; END $$",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("launder", "INSERT INTO notes (body) SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'users'",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("launder", "INSERT INTO notes (body) SELECT query FROM pg_stat_activity", "SELECT body FROM notes",
      expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql AS $$ BEGIN INSERT INTO notes (body) "
              "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'users'; RETURN 1; END $$",
      "SELECT leak_fn()", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN PERFORM set_config("
              "'leak.x', (SELECT string_agg(query, ',') FROM pg_stat_activity), false); RETURN 1; END $$",
      "SELECT leak_fn()", "SHOW leak.x", expect=ANY, protocols=CODE),
    c("code", "LISTEN leak", "SELECT pg_notify('leak', user_ssn(1))", "SELECT 1", expect=ANY, protocols=CODE),
    c("code", "SELECT set_config('leak.x', user_ssn(1), false)", "SHOW leak.x", expect=ANY, protocols=CODE),
    c("code", "INSERT INTO notes (body) SELECT user_ssn(2)", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN "
              "PERFORM set_config('leak.x', (SELECT ssn FROM users WHERE id = 1), false); RETURN 1; END $$",
      "SELECT leak_fn()", "SHOW leak.x", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
              "INSERT INTO notes (body) SELECT reverse(email) FROM users; RETURN 1; END $$",
      "SELECT leak_fn()", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN "
              "PERFORM pg_notify('leak', (SELECT ssn FROM users WHERE id = 1)); RETURN 1; END $$",
      "LISTEN leak", "SELECT leak_fn()", "SELECT 1", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS refcursor LANGUAGE plpgsql AS $$ DECLARE c refcursor := 'kk'; "
              "BEGIN OPEN c FOR SELECT reverse(ssn) FROM users; RETURN c; END $$",
      BEGIN, "SELECT leak_fn()", "FETCH ALL FROM kk", COMMIT, expect=ANY, protocols=CODE),
    # ... stored with a table and run under a statement that names none of it
    c("code", "CREATE TEMP TABLE t (v text DEFAULT user_ssn(1))", "INSERT INTO t DEFAULT VALUES", "SELECT v FROM t",
      expect=ANY, protocols=CODE),
    c("code", "ALTER TABLE notes ALTER body SET DEFAULT user_ssn(3)", "INSERT INTO notes DEFAULT VALUES",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "INSERT INTO notes (body) VALUES ('x')", "ALTER TABLE notes ALTER body TYPE text USING user_ssn(1)",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "CREATE DOMAIN leak_dom AS text DEFAULT user_ssn(2)", "CREATE TEMP TABLE t (v leak_dom)",
      "INSERT INTO t DEFAULT VALUES", "SELECT v FROM t", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "NEW.body := (SELECT ssn FROM users WHERE id = 1); RETURN NEW; END $$",
      "CREATE TRIGGER leak_t BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION leak_fn()",
      "INSERT INTO notes (body) VALUES ('x')", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("code", "CREATE TABLE leak_copy (v text)",
      "CREATE RULE leak_r AS ON INSERT TO notes DO ALSO INSERT INTO leak_copy SELECT ssn FROM users",
      "INSERT INTO notes (body) VALUES ('x')", "SELECT v FROM leak_copy", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn(int) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ssn FROM users WHERE id = $1'",
      "CREATE TEMP TABLE g (id int, v text GENERATED ALWAYS AS (leak_fn(id)) STORED)",
      "INSERT INTO g (id) VALUES (1)", "SELECT v FROM g", expect=ANY, protocols=CODE),
    c("code", "CREATE FUNCTION leak_fn(int) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ssn FROM users WHERE id = $1'",
      "CREATE TEMP TABLE g (id int)", "INSERT INTO g VALUES (1), (4)", "CREATE UNIQUE INDEX ON g (leak_fn(id))",
      expect=ANY, protocols=CODE),  # Key (leak_fn(id))=(<the SSN>) is duplicated
    # ... and state a statement keeps
    c("launder", "CREATE TEMP SEQUENCE leak_seq",
      "SELECT setval('leak_seq', replace(ssn, '-', '')::bigint) FROM users WHERE id = 1",
      "SELECT last_value FROM leak_seq", expect=ANY, protocols=CODE),
    c("launder", "SELECT pg_advisory_lock(replace(ssn, '-', '')::bigint) FROM users WHERE id = 1",
      "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory'", expect=ANY, protocols=CODE),
    c("launder", "SELECT set_config('application_name', ssn, false) FROM users WHERE id = 1", "SELECT 1", expect=ANY,
      protocols=CODE, open_leaks=False),  # (refused by the core since round eight, as above)
    c("launder", "SELECT lo_create(4243)", "SELECT lo_put(4243, 0, convert_to(ssn, 'UTF8')) FROM users WHERE id = 1",
      "SELECT lo_get(4243)", expect=ANY, protocols=CODE),
    c("launder", "SELECT ssn, email INTO TEMP leak_t FROM users", "SELECT * FROM leak_t", expect=ANY, protocols=CODE),
    c("launder", "WITH w AS (INSERT INTO notes (body) SELECT reverse(ssn) FROM users RETURNING 1) "
                 "SELECT count(*) FROM w", "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("launder", "MERGE INTO notes n USING users u ON false WHEN NOT MATCHED THEN INSERT (body) VALUES (u.ssn)",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("launder", "INSERT INTO notes (body) VALUES ('x')", "UPDATE notes SET body = (SELECT ssn FROM users WHERE id = 1)",
      "SELECT body FROM notes", expect=ANY, protocols=CODE),
    c("launder", "CREATE MATERIALIZED VIEW leak_mv AS SELECT reverse(ssn) AS r FROM users", "SELECT r FROM leak_mv",
      expect=ANY, protocols=CODE),
    c("launder", "CREATE TEMP TABLE t AS SELECT user_ssn(1) AS v", "SELECT v FROM t", expect=ANY, protocols=CODE),
    c("launder", "CREATE TEMP TABLE t AS SELECT * FROM plpgsql_users()", "SELECT * FROM t", expect=ANY,
      protocols=CODE),
    c("copy", Copy("SELECT user_ssn(1)"), expect=ANY, protocols=("simple", "asyncpg", "portal")),
    # ------------------------------------------------------------ built-ins that run SQL given as text
    c("dynamic", "SELECT query_to_xml('SELECT ssn, card_number FROM users', true, false, '')", expect=EITHER, protocols=CODE),
    c("dynamic", "SELECT table_to_xml('users', true, false, '')", expect=EITHER, protocols=CODE),
    c("dynamic", "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', email) FROM users')", expect=EITHER, protocols=CODE),
    c("dynamic", BEGIN, "DECLARE k CURSOR FOR SELECT reverse(ssn) FROM users",
      "SELECT cursor_to_xml('k', 10, false, false, '')", COMMIT, expect=ANY, protocols=CODE),
    # ------------------------------------------------------------ names resolved elsewhere than pgwarden thinks
    c("alias", 'SELECT reverse(U&"\\0073sn"), U&"\\0065mail" FROM users'),
    # the masked table made a partition or a child of another: its rows read through the parent
    c("ddl", BEGIN, "CREATE TABLE leak_copy (LIKE users) PARTITION BY RANGE (id)",
      "ALTER TABLE leak_copy ATTACH PARTITION users FOR VALUES FROM (0) TO (100)", "SELECT reverse(ssn) FROM leak_copy",
      ROLLBACK, expect=ANY, protocols=CODE),
    c("ddl", BEGIN, "CREATE TABLE leak_copy (LIKE users)", "ALTER TABLE users INHERIT leak_copy",
      "SELECT reverse(ssn) FROM leak_copy", ROLLBACK, expect=ANY, protocols=CODE),
    c("ddl", BEGIN, "CREATE TABLE leak_copy () INHERITS (users)", "SELECT reverse(ssn) FROM users", ROLLBACK,
      expect=ANY, protocols=CODE),
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)",
      "CREATE FUNCTION leak_fn() RETURNS SETOF text LANGUAGE sql SET search_path = public, pg_temp "
      "AS $$ SELECT reverse(ssn) FROM users $$", "SELECT leak_fn()", expect=ANY, protocols=CODE),
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)", BEGIN,
      "SET LOCAL search_path = public, pg_temp", "SELECT reverse(ssn) FROM users", COMMIT, expect=ANY, protocols=CODE),
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)",
      "SELECT set_config('search_path', 'public, pg_temp', false)", "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    c("session", "SET search_path = public, pg_temp", "CREATE TEMP TABLE users (id int, ssn text, email text)", BEGIN,
      "SAVEPOINT a", "SET LOCAL search_path = pg_temp, public", "ROLLBACK TO a", "SELECT reverse(ssn) FROM users",
      COMMIT, expect=ANY, protocols=CODE),
    c("session", "SET search_path = public, pg_temp", "CREATE TEMP TABLE users (id int, ssn text, email text)", BEGIN,
      "SET search_path = pg_temp, public", ROLLBACK, "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    # ... the search_path moved by a function's body (a STABLE one: no side effect to see)
    c("session", "CREATE FUNCTION leak_fn() RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN "
                 "PERFORM set_config('search_path', 'public, pg_temp', false); RETURN 'x'; END $$",
      "CREATE TEMP TABLE users (id int, ssn text, email text)", "SELECT leak_fn()", "SELECT reverse(ssn) FROM users",
      expect=ANY, protocols=CODE),
    c("session", "CREATE FUNCTION leak_fn() RETURNS text LANGUAGE sql STABLE AS $$ "
                 "SELECT set_config('search_path', 'public, pg_temp', false) $$",
      "CREATE TEMP TABLE users (id int, ssn text, email text)", "SELECT leak_fn()", "SELECT reverse(ssn) FROM users",
      expect=ANY, protocols=CODE),
    # the shadowing temp table gone: the name is public.users again
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)", "DISCARD TEMP",
      "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)", "DROP TABLE users",
      "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    c("session", BEGIN, "CREATE TEMP TABLE users (id int, ssn text, email text)", ROLLBACK,
      "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    c("session", BEGIN, "CREATE TEMP TABLE users (id int, ssn text, email text) ON COMMIT DROP",
      "SELECT reverse(ssn) FROM users", COMMIT, "SELECT reverse(ssn) FROM users", expect=ANY, protocols=CODE),
    c("session", "CREATE TEMP TABLE users (id int, ssn text, email text)",
      Pipeline(("DROP TABLE pg_temp.users", "SELECT reverse(ssn) FROM users")), expect=ANY, protocols=NO_ASYNCPG),
    c("session", "CREATE TEMP VIEW v_safe AS SELECT id, ssn AS name, dept FROM public.users",
      "SELECT reverse(name) FROM v_safe", expect=ANY, protocols=CODE),
    # ------------------------------------------------------------ definitions changed in the transaction that reads
    c("launder", BEGIN, "CREATE VIEW leak_view AS SELECT name AS x FROM users", "SELECT reverse(x) FROM leak_view",
      "CREATE OR REPLACE VIEW leak_view AS SELECT ssn AS x FROM users", "SELECT reverse(x) FROM leak_view", COMMIT,
      expect=ANY, protocols=CODE),
    c("launder", "CREATE VIEW leak_view AS SELECT name AS a, ssn AS b FROM users", BEGIN,
      "ALTER VIEW leak_view RENAME COLUMN a TO tmp", "ALTER VIEW leak_view RENAME COLUMN b TO a",
      "SELECT reverse(a) FROM leak_view", COMMIT, expect=ANY, protocols=CODE),
    # ------------------------------------------------------------ whole rows of every kind of relation
    c("whole-row", "SELECT textin(record_out(u)) FROM users u"),
    c("whole-row", "SELECT array_agg(u) FROM users u", expect=EITHER),
    c("whole-row", "SELECT format('%s', u), concat(u, '') FROM users u"),
    c("whole-row", "SELECT to_jsonb(u) ->> 'ssn', jsonb_path_query_first(to_jsonb(u), '$.email') FROM users u"),
    c("whole-row", "SELECT * FROM users*"),
    c("whole-row", "SELECT (u).* FROM users u"),
    c("whole-row", "SELECT l FROM users u, LATERAL (SELECT u.ssn, u.email) l"),
    c("whole-row", "SELECT t FROM (SELECT ssn, email FROM users) t"),
    c("whole-row", "WITH c AS (SELECT ssn FROM users) SELECT c FROM c"),
    c("whole-row", "SELECT v FROM v_renamed v"),
    c("whole-row", "SELECT f FROM all_users() f"),
    c("whole-row", "SELECT t::text FROM users AS t(a, b, c, d)"),
    c("whole-row", "SELECT * FROM unnest((SELECT array_agg(u) FROM users u))", expect=EITHER),
    c("whole-row", "CREATE EXTENSION IF NOT EXISTS hstore", "SELECT hstore(u) FROM users u"),
]


def _params(cases: list[Case]):
    out = []
    for index, case in enumerate(cases):
        for protocol in protocols_of(index, case.protocols, default_thin=True):  # (make fuzz-leaks: all)
            reason = case.xfail if case.xfail and (not case.xfail_on or protocol in case.xfail_on) else None
            marks = [pytest.mark.xfail(strict=case.xfail_strict, reason=reason)] if reason else []
            out.append(pytest.param(case, protocol, id=f"{protocol}-{case.label}", marks=marks))
    return out


# ---------------------------------------------------------------------- running and judging


def _differential(world: World, sql: str) -> list[tuple[str, bytes]]:
    """What ``sql`` returns run directly on the real and on the twin database, in text and in
    binary, that differs between the two: cells, or the quoted values and texts of an error.
    Those depend on masked data, in whatever encoding the attacker chose: none may arrive."""
    results = {database: _direct_results(conn, sql) for database, conn in world.direct.items()}
    twin = dict(results[TWIN])
    return [(label, value) for label, value in results[DB] if value is not None and value != twin.get(label)]


def _direct_results(conn: psycopg.Connection, sql: str) -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    pgconn = conn.pgconn
    for fmt in (0, 1):
        pgconn.exec_(b"BEGIN")  # whatever it does is rolled back
        try:
            res = pgconn.exec_params(sql.encode(), [], result_format=fmt)
        finally:
            pgconn.exec_(b"ROLLBACK")
        if res.status == psycopg.pq.ExecStatus.TUPLES_OK:
            kind = "binary" if fmt else "text"
            out += [(f"unmasked result ({kind}) row {r} column {f}", res.get_value(r, f))
                    for r in range(res.ntuples) for f in range(res.nfields)]
        elif res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            for code in (DiagnosticField.MESSAGE_PRIMARY, DiagnosticField.MESSAGE_DETAIL):
                text = res.error_field(code)
                out.append((f"unmasked error {code.name}", text))
                quoted = re.findall(r'"([^"]*)"|\(([^)]*)\)', (text or b"").decode())
                out += [(f"unmasked error {code.name} quoted value", "".join(q).encode()) for q in quoted]
    return out


def run_case(warden: Warden, world: World, direct, pg_server, case: Case, protocol: str, group: str):
    """Runs the case in a new session; its final step's answer, the leaks of the whole session."""
    direct.execute(RESET)
    client = warden.client(protocol, group)
    try:
        for step in case.steps:
            answer = client.run(step)
    finally:
        stream = client.close()
    last = case.steps[-1]
    single = len(case.steps) == 1 and isinstance(last, str) and case.differential
    extra = _differential(world, last) if single else []
    if case.reveals is not None:
        extra += [("the attempt's own encoding", text.encode()) for u in world.users for text in case.reveals(u)]
    return answer, world.finder.find(stream, extra), stream, client.problems


def judge(case: Case, answer: Answer, stream: bytes, world: World) -> str | None:
    """What is wrong with the outcome, or None."""
    refused = answer.refused()
    if answer.raised and not answer.errors and answer.rows:
        return f"the client could not read the rows it was sent (an invalid value?): {answer.raised}"
    if case.expect in (MASKED, PLAIN) and (answer.errors or not answer.rows):
        kind = "refused" if refused else "failed" if answer.errors else "returned nothing"
        return f"a read that must be answered {kind}: {answer.summary()}"
    if case.expect == PLAIN and case.canary and not any(name in stream for name in world.canaries):
        return "the unmasked values of a plain read did not arrive"
    if case.expect == REFUSED and not refused:
        return f"not refused by pgwarden: {answer.summary()}"
    if case.expect == EITHER and not refused and (answer.errors or not answer.rows):
        return f"neither masked nor refused: {answer.summary()}"
    if case.expect == ERROR and not answer.errors:
        return f"no error: {answer.summary()}"
    return None


@pytest.mark.parametrize("case, protocol", _params(CASES))
def test_leak_attempt(warden, world, direct, bystander, pg_server, case: Case, protocol: str):
    answer, leaks, stream, problems = run_case(warden, world, direct, pg_server, case, protocol, case.policy)
    assert not leaks, f"{len(leaks)} leaks: " + "; ".join(map(str, leaks[:5])) + f" (client: {problems[:2]})" + REPLAY
    wrong = judge(case, answer, stream, world)
    assert wrong is None, f"{wrong} (client: {problems[:2]})" + REPLAY


def test_corpus_size():
    """About the size the issue's acceptance corpus has (sixty), and larger."""
    assert len(CASES) >= 80


# ---------------------------------------------------------------------- the corpus and the finder, checked

OPEN_PROTOCOLS = ("simple", "ext-binary")  # text, and binary encodings (asyncpg's are the same)


@pytest.mark.parametrize("case, protocol", [
    pytest.param(case, protocol, id=f"{protocol}-{case.label}")
    for case in CASES if case.open_leaks for protocol in OPEN_PROTOCOLS if protocol in case.protocols])
def test_each_attempt_leaks_without_masks(warden, world, direct, bystander, pg_server, case: Case, protocol: str):
    """Through a policy without mask rules, the tap finds each attempt's secret: the attempt is a real
    one, and the finder sees the encoding it uses (or the differential result does)."""
    _, leaks, _, problems = run_case(warden, world, direct, pg_server, case, protocol, "open")
    assert leaks, f"no leak seen without masks (client: {problems[:2]})"


# ---------------------------------------------------------------------- the grammar property

MASKED_COLUMNS = ("ssn", "card_number", "email", "salary", "dob")
PLAIN_COLUMNS = ("id", "name", "dept")
TEXT_FUNCTIONS = ("upper({})", "lower({})", "reverse({})", "md5({})", "btrim({})", "left({}, 9)",
                  "substring({} FROM 2)", "replace({}, '-', '')", "translate({}, '0123456789', 'jihgfedcba')",
                  "encode(convert_to({}, 'UTF8'), 'hex')", "encode(convert_to({}, 'UTF8'), 'base64')",
                  "concat({}, '|')", "({} || '')", "format('<%s>', {})", "quote_literal({})", "to_json({})::text",
                  "coalesce({}, '')", "nullif({}, 'x')", "ident({})", "(SELECT {})", "array_to_string(ARRAY[{}], ',')",
                  "lpad({}, 20, '*')", "regexp_replace({}, '(.)', '\\1.', 'g')", "split_part({}, '@', 1)")


def _column() -> st.SearchStrategy[str]:
    return st.sampled_from(MASKED_COLUMNS + PLAIN_COLUMNS).flatmap(
        lambda col: st.sampled_from([f"u.{col}::text", f"{col}::text", f'"{col}"::text']))


def _expression() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(st.sampled_from(TEXT_FUNCTIONS), inner).map(lambda t: t[0].format(t[1])),
            st.tuples(inner, inner).map(lambda t: f"({t[0]} || ' ' || {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"CASE WHEN u.id % 2 = 0 THEN {t[0]} ELSE {t[1]} END"),
            inner.map(lambda e: f"(SELECT {e.replace('u.', 'w.')} FROM users w WHERE w.id = u.id)"
                      if "SELECT" not in e else e),
        )

    return st.recursive(_column() | st.just("'k'"), extend, max_leaves=4)


def _statement() -> st.SearchStrategy[str]:
    exprs = st.lists(_expression(), min_size=1, max_size=3).map(", ".join)
    return st.one_of(
        exprs.map(lambda e: f"SELECT {e} FROM users u"),
        exprs.map(lambda e: f"SELECT * FROM (SELECT {e} FROM users u) s"),
        exprs.map(lambda e: f"WITH c AS (SELECT {e} FROM users u) SELECT * FROM c"),
        _expression().map(lambda e: f"SELECT string_agg({e}, ',') FROM users u"),
        _expression().map(lambda e: f"SELECT {e} FROM users u WHERE u.id IN (1, 3) ORDER BY u.id"),
    )


DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"


@pytest.fixture(scope="module")
def property_clients(warden):
    clients: dict[str, Client] = {}
    yield lambda protocol: clients.setdefault(protocol, warden.client(protocol, "mask"))
    for client in clients.values():
        client.close()


@settings(max_examples=2000 if DEEP else examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(sql=_statement(), protocol=st.sampled_from(PROTOCOLS))
def test_property_no_generated_select_delivers_a_masked_value(warden, world, pg_server, property_clients,
                                                             sql: str, protocol: str):
    client = property_clients(protocol)
    answer = client.run(sql)
    leaks = world.finder.find(answer.raw, _differential(world, sql))
    assert not leaks, f"{sql!r} over {protocol}: " + "; ".join(map(str, leaks[:3])) + REPLAY
    if not any(col in sql for col in MASKED_COLUMNS):
        assert not answer.refused(), f"a read of unmasked columns refused: {answer.summary()}"


# ---------------------------------------------------------------------- the finder against the server's own encodings

# What the server sends for each, in binary and in text: the finder must know every one. Not here: what
# keeps fewer than eight digits or six characters of a secret (salary::float4 as text, dob - a date), which
# the finder does not look for (too short to tell from chance); a single statement's differential still
# flags such values when they are six bytes or longer.
ENCODINGS = [
    "ssn", "reverse(ssn)", "upper(email)", "replace(ssn, '-', '')::int", "replace(ssn, '-', '')::bigint",
    "replace(ssn, '-', '')::numeric", "card_number::bigint", "card_number::numeric", "substring(card_number, 1, 12)",
    "encode(convert_to(ssn, 'UTF8'), 'hex')", "encode(convert_to(email, 'UTF8'), 'base64')", "ssn::bytea",
    "decode(md5(ssn), 'hex')", "md5(ssn)", "sha256(convert_to(ssn, 'UTF8'))", "to_json(email)", "to_jsonb(ssn)",
    "split_part(email, '@', 1)", "salary", "salary::float8", "salary::text", "salary::money",
    "(salary * 100)::bigint", "to_char(salary, 'FM999G999G999D00')", "dob", "dob::timestamp", "to_char(dob, 'J')",
    "extract(epoch FROM dob)::bigint", "to_char(dob, 'MM/DD/YYYY')", "to_char(dob, 'DD.MM.YYYY')", "dob::text",
    "to_hex(replace(ssn, '-', '')::bigint)", "to_hex(card_number::bigint)",
]


@pytest.mark.parametrize("expression", ENCODINGS)
def test_the_finder_knows_the_servers_encodings(world, expression: str):
    """Every encoding the server gives of a secret is found, unless the finder does not look for one
    so short (the world's dates come within a day of the epoch about once in 2,500 runs); the same
    expression over the twin's secrets (other random values) is not: no false alarm."""
    for database, should_find in ((DB, True), (TWIN, False)):
        pgconn = world.direct[database].pgconn
        for fmt in (0, 1):
            res = pgconn.exec_params(f"SELECT {expression} FROM users ORDER BY id".encode(), [], result_format=fmt)
            assert res.status == psycopg.pq.ExecStatus.TUPLES_OK, res.error_message
            for r in range(res.ntuples):
                value = res.get_value(r, 0)
                # (an encoding the finder does not look for: a date a day after the epoch in seconds,
                # ``86400``, or the epoch's own int4, ``00000000``)
                if should_find and not searched(value, "text" if fmt == 0 else "binary"):
                    continue
                # (a binary value longer than the finder's shortest binary forms, 4 bytes, holds
                # windows of them: another random date's int4 inside an int8's bytes matched by
                # chance, about once in 10,000 worlds: not a false alarm of the finder's making)
                if not should_find and fmt == 1 and len(value) > 4:
                    continue
                leaks = world.finder.find(b"\x00\x00\x00" + value + b"\x00\x00\x00")
                assert bool(leaks) == should_find, (database, fmt, r, value, leaks[:2], REPLAY)
