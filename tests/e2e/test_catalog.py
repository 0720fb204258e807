"""The catalog component against a real PostgreSQL: the queries, the snapshot generator, the live loads.

The timing of `LiveCatalog` (TTL, retries, expiry) runs on a `task.Clock`; its loads are
the real ones, run in the test's thread when the test says so (`Loads`), so a load can be
held "in flight" for as long as a test needs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg
import pytest
from twisted.internet import defer, task
from twisted.internet.threads import blockingCallFromThread

from pgwarden.catalog import queries, snapshot
from pgwarden.catalog.live import APPLICATION_NAME, LiveCatalog
from pgwarden.catalog.loader import InitdbRows, LoadMemory, ViewDependencies, build_catalog, read_rows
from pgwarden.catalog.model import Catalog
from pgwarden.config import Upstream, UpstreamTLS
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, SUPERUSER, SUPERUSER_PASSWORD, TempPostgres, _bin

DB = "catalogdb"
READER_PASSWORD = "r3ader-Catalog-Secret!"

SETUP = r"""
CREATE EXTENSION dblink;
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION file_fdw;
CREATE SCHEMA app;
CREATE TABLE app.t (id int);
CREATE TABLE app.parts (id int) PARTITION BY RANGE (id);
CREATE SEQUENCE app.s;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE app.ft (line text) SERVER files OPTIONS (filename '/dev/null');
CREATE INDEX t_id ON app.t (id);
CREATE FUNCTION app.touch(a int, b int DEFAULT 0) RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET work_mem = '1MB' AS $$ BEGIN RETURN a; END $$;
CREATE FUNCTION app.twice(a int) RETURNS int LANGUAGE sql IMMUTABLE RETURN a * 2;
CREATE FUNCTION app.many(VARIADIC xs int[]) RETURNS SETOF int LANGUAGE sql AS 'SELECT unnest(xs)';
CREATE FUNCTION app.secret() RETURNS int LANGUAGE sql AS 'SELECT 1';
REVOKE EXECUTE ON FUNCTION app.secret() FROM PUBLIC;
CREATE PROCEDURE app.proc() LANGUAGE sql BEGIN ATOMIC SELECT 1; END;
CREATE OPERATOR app.|>> (LEFTARG = int, RIGHTARG = int, FUNCTION = app.touch);
CREATE VIEW app.files AS SELECT pg_read_file('x') AS f, app.twice(id) AS d, id + 1 AS n,
    id OPERATOR(app.|>>) 2 AS o, nextval('app.s') AS v FROM app.t;
CREATE VIEW app.ordered AS SELECT id FROM app.t ORDER BY id;
CREATE VIEW app.compared AS SELECT id FROM app.t WHERE (id, id) < (1, 2);
CREATE VIEW app.classes AS SELECT relname FROM pg_class;
CREATE VIEW app.settings_files AS SELECT * FROM pg_file_settings;
CREATE MATERIALIZED VIEW app.mv AS SELECT app.twice(id) AS d FROM app.t;
-- types whose conversions run functions: a domain's CHECKs (a call, a row comparison), a composite
-- with a field of the domain and an assignment cast, a range, a table with columns of them
CREATE FUNCTION app.positive(int) RETURNS boolean LANGUAGE sql IMMUTABLE RETURN $1 > 0;
CREATE DOMAIN app.pos AS int CHECK (app.positive(VALUE)) CHECK ((VALUE, VALUE) < (1000, 1000));
CREATE TYPE app.pair AS (a app.pos, b text);
CREATE FUNCTION app.to_pair(int) RETURNS app.pair LANGUAGE sql AS $$ SELECT ROW($1, 'x')::app.pair $$;
CREATE CAST (int AS app.pair) WITH FUNCTION app.to_pair(int) AS ASSIGNMENT;
CREATE TYPE app.span AS RANGE (subtype = int);
CREATE TABLE app.holds (p app.pos, q app.pair[], n int);
-- changed after initdb / after the extension's script: the initial privileges still decide
GRANT EXECUTE ON FUNCTION pg_read_file(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION dblink_connect_u(text) TO PUBLIC;
UPDATE pg_proc SET proacl = NULL WHERE oid = 'pg_stat_reset()'::regprocedure;  -- as if never changed
-- a control role with no privileges, whose search_path puts a forged aclexplode first
-- and who reads strings without standard_conforming_strings
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE FUNCTION evil.aclexplode(acl aclitem[], OUT grantor oid, OUT grantee oid, OUT privilege_type text,
    OUT is_grantable boolean) RETURNS SETOF record LANGUAGE sql
    AS $$ SELECT 10::oid, 0::oid, 'EXECUTE'::text, false $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog_reader') THEN
        CREATE ROLE catalog_reader LOGIN PASSWORD '""" + READER_PASSWORD + r"""';
    END IF;
END $$;
ALTER ROLE catalog_reader IN DATABASE catalogdb SET search_path = evil, pg_catalog;
ALTER ROLE catalog_reader IN DATABASE catalogdb SET standard_conforming_strings = off;
"""


@pytest.fixture(scope="module")
def catalogdb(pg_server) -> str:
    pg_server.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_server.psql(f"CREATE DATABASE {DB} OWNER {APP_USER}")
    pg_server.psql(SETUP, database=DB)
    yield DB
    pg_server.psql(f"DROP DATABASE {DB} WITH (FORCE)")


def read(pg_server, user=APP_USER, password=APP_PASSWORD, database=DB) -> Catalog:
    with psycopg.connect(pg_server.dsn(user, password, database), autocommit=True) as conn:
        return build_catalog(read_rows(conn), source="live", complete=True)


@pytest.fixture(scope="module")
def catalog(pg_server, catalogdb) -> Catalog:
    return read(pg_server)


def one(catalog: Catalog, name: str, schema: str | None = None):
    found = [f for f in catalog.functions_named(name) if schema is None or f.schema == schema]
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------- the queries


@pytest.mark.parametrize(
    "name, public",
    [
        ("pg_ls_logdir", False),  # initdb revokes it from PUBLIC (pg_monitor has it)
        ("pg_stat_reset", False),
        ("pg_terminate_backend", True),  # checked inside, not by EXECUTE
        ("now", True),
        ("pg_stat_statements_reset", False),  # the extension's script revokes it
        ("dblink_exec", True),
        ("secret", False),  # a user's function: its current ACL
        ("twice", True),
    ],
)
def test_public_execute_comes_from_the_initial_privileges(catalog, name, public):
    assert {f.public_execute for f in catalog.functions_named(name)} == {public}


def test_privileges_granted_later_do_not_change_what_is_an_admin_function(catalog):
    # both were GRANTed to PUBLIC after initdb / CREATE EXTENSION
    assert {f.public_execute for f in catalog.functions_named("pg_read_file")} == {False}
    assert {f.public_execute for f in catalog.functions_named("dblink_connect_u")} == {False}
    assert {f.public_execute for f in catalog.functions_named("lower")} == {True}
    assert {f.public_execute for f in catalog.functions_named("pg_stat_reset")} == {False}


def test_builtin_means_initdb_or_an_extension(catalog):
    assert one(catalog, "now").builtin and one(catalog, "now").extension is None
    assert {(f.builtin, f.extension) for f in catalog.functions_named("dblink_exec")} == {(True, "dblink")}
    assert one(catalog, "plpgsql_call_handler").extension == "plpgsql"
    assert not one(catalog, "touch").builtin and one(catalog, "touch").extension is None


def test_function_facts(catalog):
    touch = one(catalog, "touch", "app")
    assert (touch.nargs, touch.ndefaults, touch.variadic, touch.volatility) == (2, 1, False, "v")
    assert (touch.language, touch.trusted_language, touch.kind) == ("plpgsql", True, "f")
    assert touch.security_definer and not touch.returns_set
    assert touch.config == ("work_mem=1MB",) and "RETURN a" in touch.source and not touch.sql_body
    assert touch.accepts(1) and touch.accepts(2) and not touch.accepts(3)
    many = one(catalog, "many", "app")
    assert many.variadic and many.returns_set and many.source == "SELECT unnest(xs)"
    twice = one(catalog, "twice", "app")
    assert (twice.volatility, twice.sql_body, twice.source) == ("i", True, "RETURN (a * 2)")
    proc = one(catalog, "proc", "app")
    assert proc.kind == "p" and proc.sql_body and proc.source.startswith("BEGIN ATOMIC")
    read_file = catalog.functions_named("pg_read_file")[0]
    assert (read_file.language, read_file.source, read_file.trusted_language) == ("internal", None, False)
    assert {f.kind for f in catalog.functions_named("count")} == {"a"} and one(catalog, "row_number").kind == "w"


def test_relations_of_every_kind_a_statement_can_name(catalog):
    kinds = {r.name: r.kind for r in catalog.relations if r.schema == "app"}
    assert kinds == {"t": "r", "parts": "p", "s": "S", "ft": "f", "files": "v", "ordered": "v", "compared": "v",
                     "classes": "v", "settings_files": "v", "mv": "m", "holds": "r"}


def test_types_casts_and_the_types_of_columns(catalog):
    def typ(name):
        (found,) = [t for t in catalog.types_named(name) if t.schema == "app"]
        return found

    def names(oids):
        return {catalog.function(o).name for o in oids}

    int4, text = catalog.types_named("int4")[0].oid, catalog.types_named("text")[0].oid
    pos, pair, span = typ("pos"), typ("pair"), typ("span")
    # the CHECKs' functions come from their expression trees: a call, a row comparison's operators
    assert (pos.kind, pos.parts) == ("d", (int4,)) and names(pos.functions) == {"domain_in", "positive", "int4lt"}
    assert (pair.kind, pair.parts, names(pair.functions)) == ("c", (pos.oid, text), {"record_in"})
    assert typ("_pair").parts == (pair.oid,) and names(typ("_pair").functions) == {"array_in"}
    assert (span.kind, span.parts) == ("r", (int4,)) and typ("span_multirange").parts == (span.oid,)
    # tables' row types (and their arrays) are left out: one of each for every table
    assert not [t for t in catalog.types if t.schema == "app" and t.name in ("t", "_t", "holds", "_holds")]
    (to_pair,) = [c for c in catalog.casts if c.target == pair.oid]
    assert (to_pair.source, catalog.function(to_pair.function).name, to_pair.context) == (int4, "to_pair", "a")
    assert all(c.oid >= 16384 for c in catalog.casts)  # initdb's casts are not listed
    assert names(catalog.conversion(pair.oid)) >= {"to_pair", "record_in", "positive", "int4lt", "textin"}
    # the columns' types that are not pinned: a domain and an array of a composite, not int4
    (holds,) = catalog.relations_named("holds")
    assert set(holds.column_types) == {pos.oid, typ("_pair").oid}
    assert catalog.relations_named("t")[0].column_types == ()


def test_views_know_what_reading_them_calls_and_reads(catalog):
    def names(relation):
        return ({catalog.function(o).name for o in relation.functions},
                {catalog.relation(o).name for o in relation.relations})

    (files,) = catalog.relations_named("files")
    functions, relations = names(files)
    # pinned built-ins (pg_read_file, +) have no pg_depend row: they come from the query tree
    assert {"pg_read_file", "twice", "int4pl", "touch", "nextval"} <= functions
    assert relations == {"t", "s"}  # s: from nextval('app.s'), a constant recorded in pg_depend
    (ordered,) = catalog.relations_named("ordered")
    assert names(ordered) == ({"int4lt", "int4eq"}, {"t"})  # ORDER BY's sort and equality operators
    (compared,) = catalog.relations_named("compared")
    assert names(compared) == ({"int4lt"}, {"t"})  # the row comparison's operators
    (classes,) = catalog.relations_named("classes")
    assert names(classes) == (set(), {"pg_class"})  # pinned: not in pg_depend
    (settings_files,) = catalog.relations_named("settings_files")
    assert names(settings_files)[1] == {"pg_file_settings"}
    (file_settings,) = catalog.relations_named("pg_file_settings")
    assert names(file_settings)[0] == {"pg_show_all_file_settings"}
    (mv,) = catalog.relations_named("mv")
    assert names(mv) == ({"twice"}, {"t"})
    # a view's UPDATE rules are not what reading it does
    (pg_settings,) = catalog.relations_named("pg_settings")
    assert names(pg_settings)[0] == {"pg_show_all_settings"}


def test_operators_and_their_functions(catalog):
    (custom,) = [o for o in catalog.operators_named("|>>") if o.schema == "app"]
    assert catalog.function(custom.function).name == "touch"
    assert (custom.left, custom.right) == (23, 23)
    plus = [o for o in catalog.operators_named("+") if (o.left, o.right) == (23, 23)]
    assert [catalog.function(o.function).name for o in plus] == ["int4pl"]


def test_settings_schemas_and_version(catalog, pg_server):
    assert catalog.setting_context("log_min_messages") == "superuser"
    assert catalog.setting_context("track_activities") == "superuser"
    assert catalog.setting_context("search_path") == "user"
    assert catalog.setting_context("shared_buffers") == "postmaster"
    assert {"app", "evil", "public", "pg_catalog", "information_schema"} <= catalog.schemas
    assert catalog.server_version == int(pg_server.psql("SHOW server_version_num"))


def test_an_unprivileged_control_role_reads_the_same_facts(pg_server, catalog):
    """Its search_path puts a forged aclexplode before pg_catalog and its strings are not
    standard-conforming: the queries pin their search_path and string syntax."""
    reader = read(pg_server, "catalog_reader", READER_PASSWORD)
    assert reader.functions == catalog.functions
    assert reader.relations == catalog.relations
    assert reader.operators == catalog.operators
    assert reader.types == catalog.types and reader.casts == catalog.casts
    # pg_settings hides superuser-only settings from it; the snapshot fills them in
    assert reader.setting_context("dynamic_library_path") is None
    with psycopg.connect(pg_server.dsn("catalog_reader", READER_PASSWORD, DB), autocommit=True) as conn:
        merged = build_catalog(read_rows(conn), source="live", complete=True,
                               base_settings=snapshot.load_snapshot().settings)
    assert merged.setting_context("dynamic_library_path") == "superuser"
    assert merged.settings == {**snapshot.load_snapshot().settings, **reader.settings}


def test_the_queries_run_in_one_read_only_repeatable_read_transaction(pg_server, catalogdb, tmp_path):
    trace = tmp_path / "trace"
    with psycopg.connect(pg_server.dsn(database=DB), autocommit=True) as conn, open(trace, "w") as out:
        conn.pgconn.trace(out.fileno())  # libpq's own log of the messages it sends
        read_rows(conn)
        conn.pgconn.untrace()
    sent = [line for line in trace.read_text().splitlines() if "\tF\t" in line and ("Query" in line or "Parse" in line)]
    assert "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" in sent[0] and "COMMIT" in sent[-1]
    assert not any("BEGIN" in line or "COMMIT" in line for line in sent[1:-1])
    assert len(sent) > len(queries.COLUMNS)


def test_a_views_dependencies_are_read_again_only_when_it_changed(pg_server, catalogdb):
    views = ViewDependencies()
    with psycopg.connect(pg_server.dsn(database=DB), autocommit=True) as conn:
        first = read_rows(conn, views=views)
        everything = int(pg_server.psql(
            "SELECT count(*) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class"
            " WHERE c.relkind IN ('v', 'm') AND r.ev_type = '1'", database=DB))
        assert views.last_read == everything
        assert read_rows(conn, views=views) == first and views.last_read == 0
        pg_server.psql("CREATE VIEW app.later AS SELECT app.twice(1);"
                       "CREATE OR REPLACE VIEW app.classes AS SELECT relname, "
                       "(SELECT count(*) FROM pg_ls_logdir()) AS logs FROM pg_class",
                       database=DB)
        try:
            again = build_catalog(read_rows(conn, views=views), source="live", complete=True)
            assert views.last_read == 2
            assert [again.function(o).name for o in again.relations_named("later")[0].functions] == ["twice"]
            assert {again.function(o).name for o in again.relations_named("classes")[0].functions} == {
                "pg_ls_logdir", "count"}
        finally:
            pg_server.psql("DROP VIEW app.later, app.classes; CREATE VIEW app.classes AS SELECT relname FROM pg_class",
                           database=DB)
        cached = read_rows(conn, views=views)
        assert views.last_read == 1  # app.classes, created again; app.later forgotten
        # what the remembered dependencies give is what reading every view gives
        assert cached.dependencies == read_rows(conn).dependencies



# A superuser's change to each kind of row the rows of initdb's objects are made of, and its undoing.
INITDB_CHANGES = [
    # pg_proc: an ACL (public_execute) and a SET clause (config)
    ("REVOKE EXECUTE ON FUNCTION pg_catalog.pg_sleep(float8) FROM PUBLIC",
     "GRANT EXECUTE ON FUNCTION pg_catalog.pg_sleep(float8) TO PUBLIC"),
    ("ALTER FUNCTION pg_catalog.lower(text) SET work_mem = '1MB'", "ALTER FUNCTION pg_catalog.lower(text) RESET ALL"),
    # pg_constraint: a CHECK on one of information_schema's domains (a type's functions)
    ("ALTER DOMAIN information_schema.cardinal_number ADD CONSTRAINT pgw_positive CHECK (app.positive(VALUE + 1))",
     "ALTER DOMAIN information_schema.cardinal_number DROP CONSTRAINT pgw_positive"),
    # pg_attribute: a column of one of information_schema's views renamed
    ("ALTER VIEW information_schema.sql_features RENAME COLUMN comments TO remarks",
     "ALTER VIEW information_schema.sql_features RENAME COLUMN remarks TO comments"),
    # pg_type: one of information_schema's domains renamed
    ("ALTER DOMAIN information_schema.yes_or_no RENAME TO yes_or_no_2",
     "ALTER DOMAIN information_schema.yes_or_no_2 RENAME TO yes_or_no"),
]


def test_initdb_rows_are_read_again_only_when_a_superuser_changed_one(pg_server, catalogdb):
    """The rows of initdb's objects (most of a load's time) are kept from one load to the next;
    the database's own objects are read at every load, and a superuser's change to one of
    initdb's is read at the next: whatever it keeps, a load reads what a load keeping nothing does."""
    initdb = InitdbRows()
    with psycopg.connect(pg_server.dsn(database=DB), autocommit=True) as conn:

        def load():
            rows = read_rows(conn, initdb=initdb)
            assert rows == read_rows(conn), "a load keeping initdb's rows read other facts than one keeping none"
            return rows

        first = load()
        assert initdb.last_read
        assert load() == first and not initdb.last_read
        pg_server.psql("CREATE FUNCTION app.later() RETURNS int LANGUAGE sql AS 'SELECT 1';"
                       "CREATE TABLE app.later_t (a app.pos); CREATE DOMAIN app.later_d AS int", database=DB)
        try:
            rows = load()
            assert not initdb.last_read
            assert any(row[2] == "later" for row in rows.functions)
            assert any(row[2] == "later_d" for row in rows.types)
        finally:
            pg_server.psql("DROP FUNCTION app.later(); DROP TABLE app.later_t; DROP DOMAIN app.later_d", database=DB)
        load()
        for do, undo in INITDB_CHANGES:
            pg_server.psql(do, database=DB)
            try:
                changed = load()
                assert initdb.last_read and changed != first, do
            finally:
                pg_server.psql(undo, database=DB)
            load()
            assert initdb.last_read, undo
        pg_server.psql("VACUUM FREEZE pg_catalog.pg_proc", database=DB)  # a frozen row keeps its xmin
        assert load().functions == first.functions and not initdb.last_read
        # changed and frozen before the next load: seen all the same
        for do in ("ALTER FUNCTION pg_catalog.lower(text) SET work_mem = '1MB'",
                   "ALTER FUNCTION pg_catalog.lower(text) RESET ALL"):
            pg_server.psql(do, database=DB)
            pg_server.psql("VACUUM FREEZE pg_catalog.pg_proc", database=DB)
            load()
            assert initdb.last_read, do


# ---------------------------------------------------------------------------- the snapshot


def test_the_generator_gives_the_same_bytes_twice_and_the_shipped_snapshot(pg_server):
    dsn = pg_server.dsn(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
    first = snapshot.generate(dsn)
    assert snapshot.generate(dsn) == first
    assert first[4:8] == bytes(4)  # gzip's MTIME: none, so a later run writes the same bytes
    document = json.loads(gzip.decompress(first))
    release = document["postgresql"]
    if release not in snapshot.available():
        pytest.skip(f"pgwarden ships no snapshot of PostgreSQL {release} to compare with")
    shipped = json.loads(gzip.decompress(snapshot.available()[release].read_bytes()))
    # a minor release does not change the catalog: all but the exact version is the same
    assert {**document, "server_version": 0} == {**shipped, "server_version": 0}


def test_the_generator_command(pg_server, tmp_path):
    from pgwarden.catalog.snapshot import main

    out = tmp_path / "postgresql-15.json.gz"
    assert main(["generate", "--dsn", pg_server.dsn(SUPERUSER, SUPERUSER_PASSWORD, "postgres"), "-o", str(out)]) == 0
    catalog = build_catalog(snapshot.rows_of(json.loads(gzip.decompress(out.read_bytes()))),
                            source="x", complete=False)
    assert catalog.functions == snapshot.load_snapshot().functions


# ---------------------------------------------------------------------------- live loading


class Loads:
    """Runs the LiveCatalog's loads (the real ones) in the test's thread when the test says so."""

    def __init__(self, immediately: bool = False) -> None:
        self.immediately = immediately
        self.held: list[tuple] = []
        self.count = 0

    def __call__(self, f) -> defer.Deferred:
        self.count += 1
        if self.immediately:
            return defer.maybeDeferred(f)
        d: defer.Deferred = defer.Deferred()
        self.held.append((f, d))
        return d

    def finish(self) -> None:
        f, d = self.held.pop(0)
        d.callback(f())


def upstream_of(server: TempPostgres, tmp_path: Path, password: str = APP_PASSWORD, **kw) -> Upstream:
    pwfile = tmp_path / "catalog-password"
    pwfile.write_text(password + "\n")
    kw.setdefault("user", APP_USER)
    kw.setdefault("database", DB)
    return Upstream(host=server.host, port=server.port, password_file=str(pwfile), **kw)


def live_on_clock(upstream: Upstream, loads: Loads, **kw) -> tuple[LiveCatalog, task.Clock]:
    clock = task.Clock()
    clock.advance(1_000_000)
    return LiveCatalog(upstream, clock, run_in_thread=loads, **kw), clock


def test_catalogs_sharing_one_memory_read_and_build_what_each_would_alone(pg_server, catalogdb, tmp_path):
    """`LiveCatalog.share_memory` (what the test suite's pgwardens do): the second catalog reads
    no view the first one read and builds no part whose rows did not change, and its facts are
    those of a catalog of its own; a view replaced after the first one loaded is read again by
    the next one that loads, in its own snapshot, and the parts it changed are built again."""
    shared = LoadMemory()
    one, _ = live_on_clock(upstream_of(pg_server, tmp_path), Loads(immediately=True))
    one.share_memory(shared)
    one.start()
    assert shared.views.last_read > 100  # the server's own views and the database's
    two, _ = live_on_clock(upstream_of(pg_server, tmp_path), Loads(immediately=True))
    two.share_memory(shared)
    two.start()
    assert shared.views.last_read == 0
    assert two.current.functions is one.current.functions and two.current.relations is one.current.relations
    assert two.current.generation != one.current.generation
    alone, _ = live_on_clock(upstream_of(pg_server, tmp_path), Loads(immediately=True))
    alone.start()
    assert two.current.relations == alone.current.relations == one.current.relations
    assert two.current.functions == alone.current.functions and alone.current.functions is not one.current.functions
    pg_server.psql("CREATE OR REPLACE VIEW app.classes AS SELECT relname, "
                   "(SELECT count(*) FROM pg_ls_logdir()) AS logs FROM pg_class", database=DB)
    try:
        three, _ = live_on_clock(upstream_of(pg_server, tmp_path), Loads(immediately=True))
        three.share_memory(shared)
        three.start()
        assert shared.views.last_read == 1
        assert "pg_ls_logdir" in {three.current.function(o).name
                                   for o in three.current.relations_named("classes")[0].functions}
        assert "pg_ls_logdir" not in {one.current.function(o).name
                                       for o in one.current.relations_named("classes")[0].functions}
        assert three.current.functions is one.current.functions  # no function changed
        assert three.current.columns_of(three.current.relations_named("classes")[0].oid)[1].name == "logs"
    finally:
        pg_server.psql("DROP VIEW app.classes; CREATE VIEW app.classes AS SELECT relname FROM pg_class",
                       database=DB)
    with pytest.raises(RuntimeError, match="started loading"):
        one.share_memory(LoadMemory())
    for live in (one, two, alone, three):
        live.stop()


def test_start_loads_and_the_ttl_reloads(pg_server, catalogdb, tmp_path):
    loads = Loads(immediately=True)
    live, clock = live_on_clock(upstream_of(pg_server, tmp_path), loads, ttl_s=60, max_stale_s=300)
    assert live.current.source == snapshot.stand_in_snapshot().source and live.status.state == "loading"
    live.start()
    first = live.current
    assert first.source == "live" and first.complete and one(first, "touch", "app")
    assert live.status.state == "ok" and live.status.loaded_at == clock.seconds()
    clock.advance(59)
    assert live.current is first and loads.count == 1
    clock.advance(1)
    # nothing changed: the same facts, the same generation (verdicts cached by it stay valid)
    assert loads.count == 2 and live.current is first and live.status.loaded_at == clock.seconds()
    clock.pump([60] * 10)  # reloaded all along: never stale
    assert live.current is first and loads.count == 12
    pg_server.psql("CREATE FUNCTION app.ttl_made() RETURNS int LANGUAGE sql AS 'SELECT 1'", database=DB)
    try:
        clock.advance(60)
        assert live.current.generation > first.generation and one(live.current, "ttl_made")
    finally:
        pg_server.psql("DROP FUNCTION app.ttl_made()", database=DB)
    live.stop()


def test_invalidations_coalesce_into_one_load(pg_server, catalogdb, tmp_path):
    loads = Loads()
    live, clock = live_on_clock(upstream_of(pg_server, tmp_path), loads, settle_s=0.05)
    live.start()
    assert loads.count == 1
    for n in range(3):  # during the first load: one more after it
        live.invalidate(f"ddl {n}")
    assert loads.count == 1 and live.pending
    waiting = live.fresh()
    loads.finish()
    assert loads.count == 2 and not waiting.called  # the second load covers the invalidations
    loads.finish()
    assert waiting.result is live.current and live.current.source == "live" and not live.pending
    for n in range(3):  # while idle: one load, settle_s after the first (the others do not postpone it)
        if n:
            clock.advance(0.02)
        live.invalidate(f"ddl {n}")
    assert loads.count == 2
    clock.advance(0.01)
    assert loads.count == 3
    loads.finish()
    clock.advance(59.99)  # the TTL counts from the last load
    assert loads.count == 3
    clock.advance(0.01)
    assert loads.count == 4
    loads.finish()
    stopped = live.stop()
    loads.finish()  # closing the connection runs in the thread too
    assert stopped.called


def test_the_change_check_reads_another_clients_ddl_and_tickets_say_what_was_read(pg_server, catalogdb, tmp_path):
    loads = Loads(immediately=True)
    live, clock = live_on_clock(upstream_of(pg_server, tmp_path), loads, settle_s=0.05, check_s=2)
    live.start()
    first = live.current
    ticket = live.invalidate("a session's DDL")
    assert ticket and not live.has_read(ticket) and live.has_read(0)
    clock.advance(0.05)
    assert live.has_read(ticket) and live.current is first and loads.count == 2  # nothing new: same facts
    clock.advance(2)  # a check (it runs in the thread too), which finds nothing: no load
    assert loads.count == 3
    clock.advance(0.05)
    assert loads.count == 3 and not live.pending
    pg_server.psql("CREATE FUNCTION app.checked_in() RETURNS int LANGUAGE sql AS 'SELECT 1'", database=DB)
    try:
        clock.advance(2)  # the check sees it and invalidates; the load follows settle_s later
        assert loads.count == 4 and live.pending
        clock.advance(0.05)
        assert loads.count == 5 and live.current.generation > first.generation and one(live.current, "checked_in")
        clock.advance(2)  # the answer read before that load is the one compared with: no load again
        clock.advance(0.05)
        assert loads.count == 6 and not live.pending
    finally:
        pg_server.psql("DROP FUNCTION app.checked_in()", database=DB)
    live.stop()


def test_facts_age_from_when_they_were_read_and_a_hung_load_does_not_renew_them(pg_server, catalogdb, tmp_path):
    loads = Loads()
    live, clock = live_on_clock(upstream_of(pg_server, tmp_path), loads, ttl_s=60, max_stale_s=300)
    read_at = clock.seconds()
    live.start()
    clock.advance(10)  # the load takes 10 s
    loads.finish()
    assert live.current.source == "live" and live.status.loaded_at == read_at
    clock.advance(60)
    assert loads.count == 2  # and this one never finishes
    clock.advance(read_at + 300 - clock.seconds() - 0.001)
    assert live.current.source == "live"
    clock.advance(0.001)
    assert live.current is snapshot.stand_in_snapshot() and live.status.loaded_at is None
    stopped = live.stop()
    loads.finish()  # the hung load ends at last: its result is dropped, the connection closed
    assert live.current is snapshot.stand_in_snapshot() and not stopped.called
    loads.finish()
    assert stopped.called


def test_a_function_created_is_known_after_invalidate(pg_server, catalogdb, tmp_path, reactor_thread):
    """On the real reactor and its thread pool."""
    live = blockingCallFromThread(
        reactor_thread, lambda: LiveCatalog(upstream_of(pg_server, tmp_path), reactor_thread, settle_s=0.01)
    )
    reactor_thread.callFromThread(live.start)
    catalog = blockingCallFromThread(reactor_thread, live.fresh)
    assert catalog.source == "live" and not catalog.functions_named("made_just_now")
    pg_server.psql("CREATE FUNCTION app.made_just_now() RETURNS int LANGUAGE sql AS 'SELECT 7'", database=DB)
    try:
        reactor_thread.callFromThread(live.invalidate, "CREATE FUNCTION")
        catalog = blockingCallFromThread(reactor_thread, live.fresh)
        assert one(catalog, "made_just_now", "app").source == "SELECT 7"
        assert live.current is catalog and live.status.state == "ok"
        threads = {row[0] for row in psycopg.connect(pg_server.dsn(database=DB), autocommit=True).execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME])}
        assert threads == {APPLICATION_NAME}  # one control connection, kept between loads
    finally:
        blockingCallFromThread(reactor_thread, live.stop)
        pg_server.psql("DROP FUNCTION app.made_just_now()", database=DB)


def test_a_wrong_password_fails_without_showing_it(pg_server, catalogdb, tmp_path):
    wrong = "Wr0ng-and-Secret-Catalog-Pass"
    loads = Loads(immediately=True)
    upstream = upstream_of(pg_server, tmp_path, password=wrong)
    live, clock = live_on_clock(upstream, loads, ttl_s=60, max_stale_s=300, retry_s=5)
    live.start()
    status = live.status
    assert status.state == "failed" and status.since == clock.seconds()
    assert "password authentication failed" in status.error
    assert live.current is snapshot.stand_in_snapshot()  # nothing live yet: user objects unknown
    for text in (status.error, repr(status), repr(live), status.describe(clock.seconds())):
        assert wrong not in text
    # retried sooner than the TTL, backing off; the password file is read at each attempt
    clock.advance(5)
    assert loads.count == 2
    clock.advance(9.9)
    assert loads.count == 2
    Path(upstream.password_file).write_text(APP_PASSWORD + "\n")  # rotated
    clock.advance(0.1)
    assert loads.count == 3 and live.status.state == "ok" and live.current.source == "live"
    live.stop()


@pytest.mark.parametrize(
    "user, tls",
    [
        ("md5_user", UpstreamTLS()),
        ("tls_only", UpstreamTLS(mode="require")),
        ("tls_only", "verify-full"),
    ],
)
def test_the_control_connection_speaks_what_the_sessions_speak(pg_server, catalogdb, tmp_path, user, tls):
    if tls == "verify-full":
        tls = UpstreamTLS(mode="verify-full", ca_file=str(pg_server.certs["ca"]))
    loads = Loads(immediately=True)
    live, _ = live_on_clock(upstream_of(pg_server, tmp_path, user=user, tls=tls), loads)
    live.start()
    assert live.status.state == "ok", live.status.error
    live.stop()


def test_tls_mode_disable_is_not_upgraded(pg_server, catalogdb, tmp_path):
    """tls_only may only log in over TLS: the control connection does not try TLS unasked."""
    live, _ = live_on_clock(upstream_of(pg_server, tmp_path, user="tls_only"), Loads(immediately=True))
    live.start()
    assert live.status.state == "failed" and "no encryption" in live.status.error
    live.stop()


def test_a_cut_control_connection_is_replaced_within_the_load(pg_server, catalogdb, tmp_path):
    loads = Loads(immediately=True)
    live, clock = live_on_clock(upstream_of(pg_server, tmp_path), loads, ttl_s=60)
    live.start()
    assert live.status.state == "ok"
    killed = pg_server.psql(
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
    )
    assert killed == "1"
    clock.advance(60)
    assert live.status.state == "ok" and live.status.loaded_at == clock.seconds() and live.status.error is None
    live.stop()


def test_a_stopped_server_keeps_the_last_facts_until_they_are_too_old(tmp_path):
    with TempPostgres() as server:
        server.psql("CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'", database="appdb")
        loads = Loads(immediately=True)
        live, clock = live_on_clock(upstream_of(server, tmp_path, database="appdb"), loads,
                                    ttl_s=60, max_stale_s=300, retry_s=5)
        live.start()
        facts = live.current
        assert one(facts, "mine").source == "SELECT 1"
        loaded_at = clock.seconds()
        ctl = [_bin("pg_ctl"), "-D", str(server.data), "-w"]
        server._run(ctl + ["-m", "fast", "stop"])
        clock.advance(60)
        assert live.status.state == "failed" and live.status.since == clock.seconds()
        assert live.current is facts  # the previous facts, for now
        clock.advance(loaded_at + 300 - clock.seconds() - 0.001)
        assert live.current is facts and live.status.state == "failed"
        clock.advance(0.001)
        assert live.current is snapshot.stand_in_snapshot() and not live.current.functions_named("mine")
        assert live.status.loaded_at is None and live.status.source == snapshot.stand_in_snapshot().source
        assert "the database's own objects are unknown" in live.status.describe(clock.seconds())
        server._run(ctl + ["-l", str(server.base / "server.log"), "start"])
        clock.advance(60)  # retries back off to at most the TTL
        assert live.status.state == "ok" and one(live.current, "mine").source == "SELECT 1"
        live.stop()
