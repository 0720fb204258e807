"""From what a statement says (`Syntax`) to what it does (`Analysis`), by the catalog.

A function's effect is decided from pg_proc, not from a list of names:

* ``system`` — an administrator's function: a built-in (or extension) function
  whose initial privileges do not grant EXECUTE to PUBLIC (pg_read_file,
  pg_stat_reset, pg_terminate_backend, replication slot functions, ...).
* ``side_effect`` — a function that may change state: volatile and not on the
  short list of volatile built-ins that change nothing (`HARMLESS_VOLATILE`),
  or user code in an untrusted language.
* ``server_files`` — a function or view that reads or lists server files.
* ``unknown`` — a name the catalog does not know (or an operator or a type it
  cannot place): pgwarden cannot tell what runs, so the statement is judged the worst.

Casts are calls too: converting a value to a type runs the cast's function, the
type's input function and a domain's CHECK constraints (`Catalog.conversion`),
each judged as if it were called; the server's own conversions count where it
makes them: a stored row's values to its columns' types, assignment and implicit
casts wherever they may apply.

A setting's effect comes from pg_settings: one a plain user cannot set
(context other than ``user``) is ``system``; settings that lift read-only
transactions are ``system`` too.

Bodies are followed: SQL and PL/pgSQL functions are judged by what their
statements do as well; views by the functions and relations their definitions
use.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from pgwarden.catalog.model import FIRST_NORMAL_OID, CastFacts, Catalog, FunctionFacts, RelationFacts, TypeFacts
from pgwarden.sql.analysis import GUARDED_SETTINGS, REDEFINES, STATISTICS_RELATIONS, Analysis
from pgwarden.sql.context import SqlContext, parse_path
from pgwarden.sql.syntax import COMPUTED, UNPARSABLE, Call, Syntax, WhereCheck, syntax_of

# Volatile built-ins that change nothing a policy cares about: clocks, randomness,
# sleeping, reading sequences' current values, identifiers of the running transaction.
HARMLESS_VOLATILE = frozenset({
    "random", "random_normal", "setseed", "clock_timestamp", "timeofday", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
    "currval", "lastval", "txid_current", "txid_current_if_assigned", "pg_current_xact_id",
    "pg_current_xact_id_if_assigned", "pg_stat_clear_snapshot", "pg_trigger_depth",
    "set_config",  # judged by the setting it changes (see `_settings`)
    "now", "statement_timestamp", "transaction_timestamp",
    # sizes, positions and states the server reports (behind views such as pg_locks,
    # pg_sequences, pg_prepared_xacts and pg_stat_xact_*)
    "pg_database_size", "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_total_relation_size",
    "pg_tablespace_size", "pg_is_in_recovery", "pg_current_wal_lsn", "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_lock_status", "pg_blocking_pids", "pg_safe_snapshot_blocking_pids",
    "pg_notification_queue_usage", "pg_partition_tree", "pg_partition_ancestors", "pg_sequence_last_value",
    "pg_prepared_xact", "pg_jit_available", "pg_stat_have_stats", "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin", "pg_xact_status", "txid_status", "pg_collation_actual_version",
    "pg_database_collation_actual_version", "pg_get_wal_resource_managers", "pg_get_multixact_members",
    "current_query", "pg_isolation_test_session_is_blocked",
    "currtid2", "pg_stat_force_next_flush", "pg_stat_get_recovery_prefetch",
    "pg_stat_get_xact_blocks_fetched", "pg_stat_get_xact_blocks_hit", "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time", "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans", "pg_stat_get_xact_tuples_deleted", "pg_stat_get_xact_tuples_fetched",
    "pg_stat_get_xact_tuples_hot_updated", "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_returned", "pg_stat_get_xact_tuples_updated", "pg_get_replication_slots",
    "pg_last_committed_xact", "pg_get_wal_replay_pause_state", "pg_is_wal_replay_paused",
    # trigger functions, access-method and language handlers: not callable from a query
    "bernoulli", "system", "amvalidate", "unique_key_recheck", "suppress_redundant_updates_trigger",
    "tsvector_update_trigger", "tsvector_update_trigger_column", "plpgsql_call_handler",
    "plpgsql_inline_handler", "plpgsql_validator", "dsnowball_init", "dsnowball_lexize",
    "brinhandler", "bthandler", "ginhandler", "gisthandler", "hashhandler", "heap_tableam_handler",
    "spghandler",
})
# Volatile built-ins whose effect has a kind of its own.
VOLATILE_KINDS = {
    "pg_advisory_lock": "lock", "pg_advisory_lock_shared": "lock", "pg_advisory_unlock": "lock",
    "pg_advisory_unlock_all": "lock", "pg_advisory_unlock_shared": "lock", "pg_advisory_xact_lock": "lock",
    "pg_advisory_xact_lock_shared": "lock", "pg_try_advisory_lock": "lock", "pg_try_advisory_lock_shared": "lock",
    "pg_try_advisory_xact_lock": "lock", "pg_try_advisory_xact_lock_shared": "lock",
    # they FETCH from a cursor (any portal, the protocol's too): its query runs, as in FETCH
    "cursor_to_xml": "cursor", "cursor_to_xmlschema": "cursor",
}
# ... and those that have it besides changing state: a notification reaches other sessions (their
# LISTENers act on it), as NOTIFY's does (`syntax`).
VOLATILE_ALSO = {"pg_notify": "listen"}
# Functions that read or list files of the server.
SERVER_FILE_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
    "pg_ls_replslotdir", "pg_current_logfile", "lo_import", "lo_export", "pg_file_write", "pg_file_rename",
    "pg_file_unlink", "pg_file_sync", "pg_logdir_ls", "pg_show_all_file_settings", "pg_hba_file_rules",
    "pg_ident_file_mappings", "pg_file_read", "pg_file_length",
    # (pg_read_file(text, bigint, bigint) under its C name, PUBLIC's: it checks for a superuser itself)
    "pg_read_file_old",
})
# Functions that signal other backends: administration, whatever their privileges say.
SIGNAL_FUNCTIONS = frozenset({"pg_terminate_backend", "pg_cancel_backend", "pg_signal_backend"})
# Built-ins PUBLIC may call whose code checks for a superuser or the REPLICATION attribute itself (so
# their ACL, `FunctionFacts.public_execute`, does not tell): a superuser upstream runs them all (red team
# fourteen: under a policy allowing volatile functions and refusing `system`, a physical replication slot
# made, keeping the server's WAL from then on, every system collation imported, and `pg_read_file_old`,
# pg_read_file's C function under a name of its own, read a server file). Administration,
# as those whose ACL says so; and the WAL message every logical decoding consumer reads.
ADMIN_CHECKED_FUNCTIONS = frozenset({
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
    "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes", "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes", "pg_sync_replication_slots", "pg_import_system_collations",
    "pg_nextoid", "pg_logical_emit_message", "pg_read_file_old", "pg_rotate_logfile_old",
    "pg_stop_making_pinned_objects",
})
# Built-ins that run SQL they are given as text: the literal is analysed as what it is.
SQL_TEXT_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "ts_stat", "ts_rewrite",
    "dblink", "dblink_exec", "dblink_send_query", "dblink_open", "crosstab", "crosstab2", "crosstab3",
    "crosstab4", "connectby",
    # ... or build from the name of a relation they read (`syntax._RELATION_READERS`)
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema", "pg_sequence_last_value",
    "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
    "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
})
_UNKNOWN_KIND = frozenset({"unknown"})
# What reads or writes server files, any relation's among them (`_Resolver._analysis`).
_FILE_KINDS = frozenset({"server_files", "copy_file"})
# The volatilities of the functions planning runs (a plain EXPLAIN): IMMUTABLE ones folded,
# STABLE ones computed for the estimates (eval_const_expressions' estimate mode).
_PLANNED = frozenset({"i", "s"})
# Settings that give a transaction the right to write.
READ_ONLY_SETTINGS = frozenset({"transaction_read_only", "default_transaction_read_only"})
ROLE_SETTINGS = frozenset({"role", "session_authorization"})
_OFF = frozenset({"off", "false", "0", "no", "f", "n", "of"})
# Statements that convert values to types the text does not show (a procedure's or prepared
# statement's arguments, PL/pgSQL), besides any with a call, a cast or a relation.
_CONVERTING = frozenset({"do", "call", "execute"})
# Statements that store values in columns (with assignment casts; COPY FROM reads text).
_ASSIGNING = frozenset({"insert", "update", "merge"})
# What a body may do and still write nothing (`_may_write`).
_READING = frozenset({"select", "show", "set", "server_files"})
# The kinds of statement that fire event triggers (ddl_command_start / end, sql_drop, table_rewrite):
# CREATE, ALTER, DROP, COMMENT, SELECT INTO, ...; GRANT and REVOKE on objects.
_FIRES_EVENT_TRIGGERS = frozenset({"ddl", "grant"})
_STORING = _ASSIGNING | {"copy_from"}
# Statements whose writes reach the tables a foreign key's ON DELETE / ON UPDATE action writes.
_CASCADING = frozenset({"delete", "update", "merge"})
_DELETING = frozenset({"delete", "merge"})
_UPDATING = frozenset({"update", "merge"})
# Statements whose writes of a partitioned table may move rows between its partitions.
_MOVING = frozenset({"update", "merge"})
# What a relation renamed is to a rule naming statements and it (`_Resolver._as_written`): each statement of
# it, under the new name, no longer names it
_RENAMED_AS = ("select", "insert", "update", "delete", "merge", "truncate", "copy_to", "copy_from", "lock",
               "maintenance", "cursor")
# The trigger events (`RelationFacts.effects` 'I', 'U', 'D', 'Y') of each kind of write (an
# upsert is "insert" and "update"; a MERGE may do any of the three).
_EVENTS = {"insert": "I", "copy_from": "I", "update": "U", "delete": "D", "merge": "IUD", "truncate": "Y"}


def resolve(syntax: Syntax, ctx: SqlContext) -> Analysis:
    return _Resolver(ctx).analysis(syntax)


class _Resolver:
    def __init__(self, ctx: SqlContext) -> None:
        self.ctx = ctx
        self.catalog: Catalog = ctx.catalog
        self.schemas = ctx.schemas()
        self.uncertain = ctx.search_path is None  # an unqualified name may be in any schema
        #: the catalog may not show what runs: the session changed it in a transaction still
        #: open, or an earlier statement of the same string may (DDL, DO, CALL)
        self.stale = ctx.stale
        self._body_kinds: dict[int, frozenset[str]] = {}
        self._body_tables: dict[int, frozenset[str]] = {}
        # (the relations a body writes: the statement writes them, for what counts its writes)
        self._body_writes: dict[int, frozenset[str]] = {}
        # (the functions a body calls, its own functions' bodies' too: a statement that runs it
        # runs them, whatever volatility it declares: an IMMUTABLE function's `PERFORM
        # pg_advisory_lock(<a masked value>)` keeps that value in pg_locks, red team eight)
        self._body_functions: dict[int, frozenset[str]] = {}
        # (the writes of another kind than the body's own it does, `Analysis.indirect_writes`)
        self._body_indirect: dict[int, frozenset[tuple[str, str]]] = {}
        # (a body's writes' WHERE, `Analysis.has_where`: a call of a function whose body deletes
        # every row is a DELETE without WHERE to a `where: absent` rule)
        self._body_wheres: dict[int, bool] = {}
        #: the statement being resolved runs maintenance (its relations' index expressions run)
        self._maintaining = False
        #: the kinds of write the statement being resolved does to what it names (`_CASCADING`):
        #: which foreign key actions it sets off
        self._write_kinds: frozenset[str] = frozenset()
        #: the trigger events (`_EVENTS`) of the writes being followed; None: any (a foreign key's
        #: cascading action, a row moved between partitions)
        self._events: frozenset[str] | None = None
        # what each body does, without its function's own volatility (a trigger's, see `_fires`)
        self._body_only: dict[int, frozenset[str]] = {}
        # a function of the database's own that runs prepares or deallocates (`Analysis.prepares_unseen`)
        self._body_prepares = False
        # a function of the database's own whose body destroys rows uncounted (`Analysis.uncounted`)
        self._body_uncounted = False
        self._uncounted_bodies: set[int] = set()
        # a function of the database's own whose body leaves work after the count, at any depth (an
        # SQL function's DECLARE ... WITH HOLD, red team nine), and a write of a table whose
        # deferrable constraint trigger may write (`Analysis.after_count`)
        self._body_after_count = False
        self._after_count_bodies: set[int] = set()
        # the statement whose relations are being resolved (`_reads_public_columns`)
        self._naming: Syntax | None = None
        # a function it runs fetches from a cursor, or its body's kinds hold "cursor" (`Analysis.runs_cursors`)
        self._fn_runs_cursors = False
        self._deferred_writes = False
        self._in_progress: set[int] = set()
        #: the guarded settings (`GUARDED_SETTINGS`) the functions reached so far change while they
        #: run (their SET clauses, their bodies' set_config and SET), in the order met
        self._reached: list[tuple[str, str | None]] = []
        # ... and those of each function whose kinds are known (`function_kinds`' cache)
        self._fn_reached: dict[int, tuple[tuple[str, str | None], ...]] = {}
        # casts to types whose conversion runs nothing a policy cares about (see `_inert_cast`)
        self._inert_casts: dict = self.catalog.derived.setdefault("inert casts", {})

    def analysis(self, syntax: Syntax) -> Analysis:
        saved = self.schemas, self.uncertain, self.stale
        if syntax.statements > 1 and syntax.kinds & REDEFINES:
            # `CREATE CAST ...; SELECT 5::t` runs the new cast: the string's statements are
            # judged as a transaction's after its DDL are (`SqlContext.stale`)
            self.stale = True
        if syntax.settings and (syntax.statements != 1 or "do" in syntax.kinds) or syntax.executes:
            # A statement of the string may move the search_path for the statements after it in the
            # same string: names are matched in the schemas of both paths. So may a statement of a
            # DO block or of a function's body (statements 0) for the body's later statements
            # (red team ten: `DO $$ ... SET LOCAL search_path = secret; SELECT ... INTO r FROM
            # things ... $$` read secret.things).
            later = self.ctx.after(syntax)
            if later is not self.ctx:
                self.schemas = tuple(dict.fromkeys(self.schemas + later.schemas()))
                self.uncertain = self.uncertain or later.search_path is None
        try:
            return self._analysis(syntax)
        finally:
            self.schemas, self.uncertain, self.stale = saved

    def _analysis(self, syntax: Syntax) -> Analysis:
        reached_from = len(self._reached)
        kinds = set(syntax.kinds)
        if syntax.grammar_words and self.catalog.keywords and not syntax.grammar_words <= self.catalog.keywords:
            # Syntax of pgwarden's grammar (a newer release's) that this server does not have: it
            # reads a call of a function on the search_path there (`json_value(...)` before 17)
            kinds.add("unknown")
        functions: set[str] = set()
        defined = {name: (schema, volatility, body) for schema, name, volatility, body in syntax.defines}
        nested: list[Analysis] = []
        for call in syntax.calls:
            self._call(call, kinds, functions, defined, nested)
        if any(name == "search_path" for name, _value in self._reached[reached_from:]):
            # a function it calls moves the search_path: the names of the statement (of a DO
            # block's or a body's later statements) may be in any schema
            self.uncertain = True
        if self.stale and syntax.calls and self._reads_own_types(syntax):
            # A cast from a type of the database's own made in the transaction still open (CREATE
            # CAST ... AS IMPLICIT, or to text) may convert its columns' values where the text
            # shows no cast, or a cast the catalog does not show: what runs is unknown.
            kinds.add("unknown")
        if syntax.changes_functions:
            self._changed_functions(syntax, kinds, functions, nested)
        if self.catalog.ambient_casts:
            self._ambient_casts(syntax, kinds, functions, nested)
        tables, writes, indirect = self._relations(syntax, kinds, functions, nested)
        # (DDL runs the event triggers of the database: a function of one that may write leaves
        # writes no count sees)
        event_writes = bool(syntax.kinds & _FIRES_EVENT_TRIGGERS) and self._event_triggers(kinds, functions, nested)
        for schema, name in syntax.operator_classes:
            self._operator_class(schema, name, kinds, functions, nested)
        wheres = [] if syntax.has_where is None else [syntax.has_where]
        wheres += [self._filters(check) for check in syntax.where_checks]
        fired: set[str] = set()
        carried: set[str] = set()
        returned: set[str] = set()
        bodies: set[str] = set()
        for inner in nested:  # SQL handed to a function as text, which it runs
            tables |= inner.tables
            bodies |= inner.body_tables
            fired |= inner.fired_tables
            carried |= inner.carried_tables
            returned |= inner.returned_tables
            writes |= inner.writes
            indirect |= inner.indirect_writes
            if inner.has_where is not None:
                wheres.append(inner.has_where)
        if any(_system_schema(name.partition(".")[0]) for name in writes):
            # a write of a system catalog (a superuser's: `UPDATE pg_proc SET prosrc = ...`
            # replaces a function's body, `DELETE FROM pg_trigger ...` drops a trigger; through
            # an updatable view over one too) is a schema change the text does not spell as DDL,
            # and an administrator's act
            kinds |= {"ddl", "system"}
        if kinds & _FILE_KINDS:
            # A server file may be any relation's: `pg_read_binary_file(pg_relation_filepath(
            # 'secret.things'))`, or COPY ... FROM the file, reads its rows; `lo_export` or COPY ... TO
            # over it writes them (red team fifteen, under a policy allowing server files and
            # refusing secret.*). Every relation with storage is read, for the rules that name
            # tables, as the planner's statistics are.
            tables |= self._relations_of_kinds("r", "p", "m", "S")
        ancestry = self._ancestry()
        if ancestry:
            # A partition's or an inheritance child's rows are its parents' rows: what reads or
            # writes them reads or writes the parents' (a rule naming a partitioned table covers
            # `DELETE FROM` its partition, and `INSERT INTO` an inheritance child)
            tables |= {up for t in tables for up in ancestry.get(t, ())}
            writes |= {up for t in writes for up in ancestry.get(t, ())}
        settings = syntax.settings + tuple(x for inner in nested for x in inner.settings)
        # What the functions it runs, creates or alters change while they run counts as its own
        # change for the guards (a SET clause is undone when its function returns, but the
        # writes made meanwhile went uncounted, the timeout lifted, the session misnamed)
        reached = tuple(x for x in syntax.function_settings if self._guarded(x)) + tuple(self._reached[reached_from:])
        if reached:
            settings += tuple(x for x in dict.fromkeys(reached) if x not in settings)
        self._settings(syntax, kinds)
        # (the statement's own reads run as the session's role; a function body's may not: a
        # SECURITY DEFINER's owner may read what the session's role does not)
        self._read_settings(syntax.read_settings, kinds, own=not self._in_progress)
        if syntax.read_write:
            kinds.add("system")
        prepares = tuple((name, self.analysis(body), body) for name, body in syntax.prepares)
        return Analysis(
            kinds=frozenset(kinds),
            tables=frozenset(tables),
            writes=frozenset(writes),
            functions=frozenset(functions),
            indirect_writes=frozenset(indirect),
            has_where=all(wheres) if wheres else None,
            prepares=prepares,
            executes=syntax.executes,
            constant_free=syntax.constant_free,
            settings=settings,
            deallocates=syntax.deallocates,
            read_write=syntax.read_write or any(inner.read_write for inner in nested),
            prepares_unseen=self._body_prepares or "unknown" in kinds,
            uncounted=syntax.uncounted or self._body_uncounted or any(inner.uncounted for inner in nested)
            or self._rewrites(syntax),
            after_count=syntax.after_count or self._body_after_count or self._deferred_writes or event_writes
            or any(inner.after_count for inner in nested),
            runs_cursors="cursor" in kinds and (syntax.runs_cursors or self._fn_runs_cursors
                                                or any(inner.runs_cursors for inner in nested)),
            foreign=self._foreign(tables),
            fired_tables=frozenset(fired),
            carried_tables=frozenset(carried),
            returned_tables=frozenset(returned),
            body_tables=frozenset(bodies),
        )

    def _event_triggers(self, kinds: set[str], functions: set[str], nested: list) -> bool:
        """DDL (and GRANT) runs the functions of the database's enabled event triggers
        (`Catalog.event_triggers`): judged as a table's triggers are, by what their bodies do (red
        team eleven: the owner's event trigger deleted secret.things at the agent's `CREATE TABLE`
        under a policy refusing secret.*). Whether one may write: the server counts none of it
        (`limits.counting` counts no DDL; `Analysis.after_count`, round nine's known limit); a
        write the body does not name (C, SQL built at run time) makes the statement `unknown`."""
        found = False
        for oid in self.catalog.event_triggers:
            if oid in self._in_progress:
                continue
            self._fires(oid, False, kinds, functions, nested)
            if self._may_write(oid):
                found = True
                if not self._body_writes.get(oid):
                    kinds.add("unknown")
        return found

    def _operator_class(self, schema: str | None, name: str, kinds: set[str], functions: set[str],
                        nested: list) -> None:
        """An index built with operator class ``name`` runs the functions of the database's own its
        family holds over every row (`Catalog.operator_classes`), judged by their bodies as an
        index's expressions are (red team eleven: `CREATE INDEX ... (a public.rt11_ops)`, whose
        comparison function deleted secret.things). One made in the transaction still open (or
        earlier in the string) is not in the catalog yet: `unknown`, unless it is pg_catalog's."""
        found = [function for s, function in self.catalog.operator_classes.get(name, ())
                 if (s == schema if schema is not None else self.uncertain or s in self.schemas)]
        for function in found:
            self._fires(function, True, kinds, functions, nested)
        if not found and self.stale and schema != "pg_catalog":
            kinds.add("unknown")

    def _rewrites(self, syntax: Syntax) -> bool:
        """Whether a column ADD COLUMN adds has a default the server computes again for every row
        (a volatile function, by the catalog's pg_proc.provolatile; one it does not know, or an
        operator's, counts as volatile), or is of a domain: the table is rewritten, every row
        written uncounted."""
        for call in syntax.rewrite_calls:
            if call.how == "domain":
                # the added column's type: a domain (its default may be volatile; its constraints
                # are checked on every row: PostgreSQL rewrites the table), or one the catalog
                # does not know (made in the transaction still open)
                types = self._types(call.schema, call.name)
                if not types or any(t.kind == "d" for t in types):
                    return True
                continue
            if call.how == "operator":
                operators = [o for o in self.catalog.operators_named(call.name)
                             if (o.schema == call.schema if call.schema is not None
                                 else self.uncertain or o.schema in self.schemas)]
                fns = [self.catalog.function(o.function) for o in operators]
            else:
                fns = list(self._candidates(call))
            if not fns or any(fn is None or fn.volatility == "v" for fn in fns):
                if call.how == "attribute" and not fns:
                    continue  # a column reference, not a call
                return True
        return False

    def _foreign(self, tables: set[str]) -> frozenset[str]:
        """The foreign tables (relkind f) among ``tables``."""
        found = []
        for qualified in tables:
            schema, _, name = qualified.partition(".")
            if any(facts.kind == "f" and _schema(facts.schema) == schema
                   for facts in self.catalog.relations_named(name)):
                found.append(qualified)
        return frozenset(found)

    def _changed_functions(self, syntax: Syntax, kinds: set[str], functions: set[str], nested: list) -> None:
        """A function replaced in place counts what its new body does: whatever calls it already
        (a trigger, a default, a rule, a policy, a view) runs that body from now on, as arming a
        trigger counts its function. Above all a trigger armed in the transaction still open is
        in no catalog pgwarden has read: replaced after it was judged, the function would run
        unjudged at the next write. ``ALTER FUNCTION ... SET`` moves what its body's names mean:
        `unknown` after DDL in a transaction still open (a stale context); elsewhere what calls
        it is judged on the catalog that shows the setting. (A plain CREATE FUNCTION makes a new
        function, which nothing made before can call.)"""
        for how, body in syntax.changes_functions:
            if how == "alter":
                if self.stale:
                    kinds.add("unknown")
                continue
            if body is None:  # a language pgwarden cannot read
                kinds.add("unknown")
                continue
            ran = self.analysis(body)
            kinds |= ran.kinds - {"select"}
            functions |= ran.functions
            nested.append(ran)

    # ------------------------------------------------------------------ functions

    def _candidates(self, call: Call) -> list[FunctionFacts]:
        if call.name == "unnest" and call.nargs > 1 and call.schema in (None, "pg_catalog"):
            # ``unnest(a, b, ...)`` is the server's ``ROWS FROM (unnest(a), unnest(b), ...)`` of the
            # built-in (Django's bulk insert sends it; no function of several arrays exists)
            return [fn for fn in self.catalog.functions_named("unnest") if fn.builtin and fn.accepts(1)]
        found = []
        for fn in self.catalog.functions_named(call.name):
            if call.schema is not None:
                if fn.schema != call.schema:
                    continue
            elif not self.uncertain and fn.schema not in self.schemas \
                    and not fn.schema.startswith("pg_temp"):
                continue  # (an uncertain search_path may reach any schema)
            if fn.accepts(call.nargs) or (call.how == "call" and fn.kind == "p"):
                found.append(fn)
        return found

    def _call(self, call: Call, kinds: set[str], functions: set[str], defined: dict, nested: list) -> None:
        if call.how == "operator":
            self._operator(call, kinds, functions, nested)
            return
        if call.how == "cast":
            self._cast(call, kinds, functions, nested)
            return
        candidates = self._candidates(call)
        local = defined.get(call.name)
        if call.planned and (candidates or local is not None):
            # Under a plain EXPLAIN nothing runs but what planning computes: IMMUTABLE calls it
            # folds, and STABLE ones it computes to estimate (`WHERE id = f()`, `LIMIT f()`).
            candidates = [fn for fn in candidates if fn.volatility in _PLANNED]
            if local is not None and local[1] not in _PLANNED:
                local = None
            if not candidates and local is None:
                return
        if not candidates and local is None:
            if call.how == "attribute":
                return  # a column or a field, not a function
            if call.how == "call" and call.nargs == 1 and self._types(call.schema, call.name):
                # ticket(5), with no function of that name: the server reads it as a cast
                self._cast(attrs.evolve(call, how="cast"), kinds, functions, nested)
                return
            kinds.add("unknown")  # pgwarden cannot tell what runs
            functions.add(call.name)
            return
        found: set[str] = set()
        for fn in candidates:
            found |= self.function_kinds(fn)
            functions |= self._body_functions.get(fn.oid, frozenset())
            body_tables = self._body_tables.get(fn.oid)
            if body_tables:  # what its body reads counts as read here (a SECURITY DEFINER reader)
                nested.append(self._body_effects(fn.oid, body_tables))
        if local is not None:
            _schema, volatility, body = local
            if body is None:
                found.add("unknown")
            else:
                ran = self.analysis(body)
                found |= set(ran.kinds) - {"select"}
                nested.append(Analysis(frozenset(), tables=ran.tables, has_where=ran.has_where,
                                       indirect_writes=ran.indirect_writes, body_tables=ran.tables))
            if volatility == "v":
                found.add("side_effect")
        if call.how == "attribute" and not found:
            return  # a harmless function, or (more likely) a column: nothing to add
        functions.add(call.name)
        kinds |= found
        runs_sql = call.name in SQL_TEXT_FUNCTIONS or any(
            fn.volatility == "v" and not (fn.builtin and fn.name in HARMLESS_VOLATILE) or not fn.builtin
            for fn in candidates) \
            or (local is not None and local[1] == "v")
        if runs_sql:
            for inner in call.literal_sql:
                ran = self.analysis(inner)
                kinds |= ran.kinds
                functions |= ran.functions
                nested.append(ran)
        if call.name in SQL_TEXT_FUNCTIONS and call.computed_text:
            # SQL built at run time, or text pgwarden's parser refuses, cannot be checked (even
            # beside another argument that could: crosstab's two queries)
            kinds.add("unknown")

    def _operator(self, call: Call, kinds: set[str], functions: set[str], nested: list) -> None:
        """An operator is a call of its function: its kinds, and the tables its body reads and writes
        (red team fifteen: `WHERE id = 1` under `SET search_path = public, pg_catalog`, where a
        `public.=` of the session's own deletes secret.things, passed a rule naming secret.*: the
        body's kinds counted, its tables did not)."""
        operators = [o for o in self.catalog.operators_named(call.name)
                     if (o.schema == call.schema if call.schema is not None
                         else self.uncertain or o.schema in self.schemas)]
        if not operators:
            if self.catalog.complete or call.schema not in (None, "pg_catalog"):
                kinds.add("unknown")
            elif not self.catalog.operators:
                return  # no operator facts at all (an empty catalog): nothing to judge by
            else:
                kinds.add("unknown")  # not a built-in operator, and the live catalog is not at hand
            return
        for op in operators:
            fn = self.catalog.function(op.function)
            if fn is None:
                if op.function >= 16384 or not self.catalog.complete:
                    kinds.add("unknown")
                continue
            found = self.function_kinds(fn) | self._hidden_text_kinds(fn)
            if found:
                kinds |= found
                functions.add(fn.name)
            functions |= self._body_functions.get(fn.oid, frozenset())
            body_tables = self._body_tables.get(fn.oid)
            if body_tables:
                nested.append(self._body_effects(fn.oid, body_tables))

    # ------------------------------------------------------------------ casts

    def _types(self, schema: str | None, name: str) -> list[TypeFacts]:
        """The types ``schema.name`` (or ``name`` on the search_path) may be."""
        found = []
        for t in self.catalog.types_named(name):
            if schema is not None:
                if _schema(t.schema) != _schema(schema):
                    continue
            elif not self.uncertain and _schema(t.schema) not in self.schemas:
                continue
            found.append(t)
        return found

    def _cast(self, call: Call, kinds: set[str], functions: set[str], nested: list) -> None:
        if self.stale and (call.name == "*" or any(
                t.oid >= FIRST_NORMAL_OID for t in self._types(call.schema, call.name))):
            # The session changed the catalog in the transaction still open: a cast, a domain's
            # CHECK, a type made or replaced there runs what the catalog does not show yet.
            kinds.add("unknown")
        if call.name == "*" and call.schema is None:  # a PL/pgSQL variable of a type not known
            for type_oid in self._converting_types():
                self._convert(type_oid, False, kinds, functions, nested)
            return
        key = (call.schema, call.name)
        inert = self._inert_casts.get(key)
        if inert is None:
            inert = self._inert_casts[key] = self._inert_cast(call.schema, call.name)
        if inert:
            return
        types = self._types(call.schema, call.name)
        if not types:
            named = [rel for rel in self.catalog.relations_named(call.name)
                     if call.schema is None or _schema(call.schema) == _schema(rel.schema)]
            rows = [rel for rel in named
                    if call.schema is not None or self.uncertain or _schema(rel.schema) in self.schemas]
            if rows:
                # A table's (or view's) row type: a value read into it converts each field to its
                # column's type (`'(5)'::t`, `ROW(5)::t`, `json_populate_record(NULL::t, ...)`):
                # a domain's CHECK runs. Built-in column types read their fields harmlessly.
                for rel in rows:
                    for type_oid in rel.column_types:
                        self._convert(type_oid, False, kinds, functions, nested)
                return
            if named:
                return  # a row type of a table not on the search_path: the server will not find it
            if self.catalog.types:  # (an empty catalog has nothing to judge by)
                kinds.add("unknown")  # a type of the database's own that these facts do not know
            return
        for t in types:
            self._convert(t.oid, True, kinds, functions, nested)

    def _convert(self, type_oid: int, explicit: bool, kinds: set[str], functions: set[str], nested: list) -> None:
        """A value is converted to type ``type_oid`` (see `Catalog.conversion`)."""
        if self.stale and type_oid >= FIRST_NORMAL_OID:
            kinds.add("unknown")  # (as in `_cast`: the type's casts and CHECKs may be new)
        if not self._inert_type(type_oid, explicit):
            for oid in self.catalog.conversion(type_oid, explicit):
                self._runs(oid, kinds, functions, nested, named=explicit)

    def _ambient_casts(self, syntax: Syntax, kinds: set[str], functions: set[str], nested: list) -> None:
        """Casts the server applies where the text shows none.

        An implicit cast may convert any value to fit a function's, an operator's or a
        column's type: it counts wherever values are computed. An assignment cast converts
        a value stored in a column (INSERT, UPDATE, MERGE) or a PL/pgSQL variable: to a type
        of the database's own it counts through the columns of that type (see `_relations`)
        and the variables (their types are casts of the body); to a built-in type, which any
        column may have, it counts for every statement that writes rows. (A prepared
        statement's parameters are converted to its declared types, casts of its body.)
        """
        computing = bool(syntax.calls or syntax.kinds & _CONVERTING
                         or any(not r.dropped for r in syntax.relations))  # (a DROP computes nothing)
        assigning = bool(syntax.kinds & _ASSIGNING)
        for cast in self._ambient():
            if cast.context == "i" and computing or \
                    cast.context == "a" and assigning and cast.target < FIRST_NORMAL_OID:
                self._runs(cast.function, kinds, functions, nested, named=False)

    def _reads_own_types(self, syntax: Syntax) -> bool:
        """Whether ``syntax`` names a relation the catalog knows with columns of a type of the
        database's own. (One it does not know, made in the open transaction, is not counted: a
        `CREATE TEMP TABLE t ...; INSERT INTO t ...; SELECT sum(x) FROM t` string is common.)"""
        for rel in syntax.relations:
            if any(r.column_types for r in self.catalog.relations_named(rel.name)
                   if rel.schema is None or _schema(r.schema) == _schema(rel.schema)):
                return True
        return False

    def _ambient(self) -> tuple[CastFacts, ...]:
        """The catalog's assignment and implicit casts, less those whose function is a built-in
        that does nothing (an extension's casts are usually such): computed once per catalog."""
        known = self.catalog.derived.get("ambient casts")
        if known is None:
            known = self.catalog.derived["ambient casts"] = tuple(
                cast for cast in self.catalog.ambient_casts
                if (fn := self.catalog.function(cast.function)) is None or not fn.builtin or self.function_kinds(fn))
        return known

    def _converting_types(self) -> tuple[int, ...]:
        """Every type a value assigned to it may run something for: computed once per catalog."""
        known = self.catalog.derived.get("converting types")
        if known is None:
            known = self.catalog.derived["converting types"] = tuple(
                t.oid for t in self.catalog.types if not self._inert_type(t.oid, False))
        return known

    def _inert_cast(self, schema: str | None, name: str) -> bool:
        """Whether a cast to ``schema.name`` runs nothing a policy cares about, whatever the
        search_path: every type it may name is known, one is always on the path (pg_catalog's,
        or the one named with its schema), and each is `_inert_type`."""
        types = [t for t in self.catalog.types_named(name) if schema is None or _schema(t.schema) == _schema(schema)]
        if not types or (schema is None and not any(t.schema == "pg_catalog" for t in types)):
            return False
        return all(self._inert_type(t.oid, True) for t in types)

    def _inert_type(self, type_oid: int, explicit: bool) -> bool:
        """Whether converting a value to the type runs only built-in functions that do nothing a
        policy cares about (judged by their facts alone, the same in every context): computed
        once per catalog. Most conversions are such: to int4, text, numeric, ..."""
        inert = self.catalog.derived.setdefault("inert types", {})
        key = (type_oid, explicit)
        known = inert.get(key)
        if known is None:
            known = inert[key] = all(
                (fn := self.catalog.function(oid)) is not None and fn.builtin and not self.function_kinds(fn)
                for oid in self.catalog.conversion(type_oid, explicit))
        return bool(known)

    def _runs(self, oid: int, kinds: set[str], functions: set[str], nested: list, named: bool) -> None:
        """Function ``oid`` runs where the text does not call it (a cast): judged as a call.

        ``named``: its name is among the statement's functions when it is not a built-in
        (a cast the text shows); else only when it does something a policy cares about.
        """
        fn = self.catalog.function(oid)
        if fn is None:
            kinds.add("unknown")
            return
        self._unseen_settings(fn)
        if fn.builtin and fn.name == "pg_sequence_last_value" and fn.schema == "pg_catalog":
            # (a view's call, pg_sequences' own: of a sequence named at run time) it reads a
            # sequence's value, and may read any sequence's: every sequence is read
            if not self.catalog.complete:
                kinds.add("unknown")
            nested.append(Analysis(frozenset(), tables=frozenset(self._relations_of_kinds("S"))))
            return
        found = self.function_kinds(fn) | self._hidden_text_kinds(fn)
        if found:
            kinds |= found
        if found or (named and not fn.builtin):
            functions.add(fn.name)
        body_tables = self._body_tables.get(fn.oid)
        if body_tables:
            effects = self._body_effects(fn.oid, body_tables)
            nested.append(effects if named else attrs.evolve(effects, fired_tables=body_tables))

    # ------------------------------------------------------------------ function kinds

    @staticmethod
    def _hidden_text_kinds(fn: FunctionFacts) -> frozenset[str]:
        """A built-in that runs SQL given as text (or reads a relation by name), reached where the
        text does not call it by name (an operator's or a cast's function, an aggregate's state
        function): its text argument is not the literal a call's is analysed as, so what it runs
        is unknown (red team thirteen: `CREATE OPERATOR ### (FUNCTION = ts_rewrite, ...)`)."""
        return _UNKNOWN_KIND if fn.builtin and fn.name in SQL_TEXT_FUNCTIONS else frozenset()

    def function_kinds(self, fn: FunctionFacts) -> frozenset[str]:
        """What calling ``fn`` may do, as statement kinds (empty: nothing a policy cares about)."""
        cached = self._body_kinds.get(fn.oid)
        if cached is not None:
            if "prepare" in cached:
                self._body_prepares = True
            if "cursor" in cached:
                self._fn_runs_cursors = True
            if fn.oid in self._uncounted_bodies:
                self._body_uncounted = True
            if fn.oid in self._after_count_bodies:
                self._body_after_count = True
            if fn.oid in self._fn_reached:
                self._reached += self._fn_reached[fn.oid]
            return cached
        reached_from = len(self._reached)
        found: set[str] = set()
        for item in fn.config:  # its SET clauses (proconfig), in force while it runs
            name, _, value = item.partition("=")
            setting = (name.lower(), value)
            found |= self._setting_kinds(*setting)
            if self._guarded(setting):
                self._reached.append(setting)
        if fn.name in SERVER_FILE_FUNCTIONS and fn.builtin:
            found.add("server_files")
        if fn.builtin and (fn.name in SIGNAL_FUNCTIONS or fn.name in ADMIN_CHECKED_FUNCTIONS):
            found.add("system")
        if fn.builtin and not fn.public_execute and not fn.name.startswith(("RI_FKey", "binary_upgrade")):
            found.add("system")
        if fn.volatility == "v" and not (fn.builtin and fn.name in HARMLESS_VOLATILE):
            found.add(VOLATILE_KINDS.get(fn.name, "side_effect") if fn.builtin else "side_effect")
            if fn.builtin and fn.name in VOLATILE_ALSO:
                found.add(VOLATILE_ALSO[fn.name])
        if not fn.builtin and fn.language not in ("sql", "plpgsql"):
            if not fn.trusted_language:
                found.add("side_effect")  # C or an untrusted language: anything may happen
            # Code pgwarden does not read: what it does is not known (red team thirteen: a function
            # of the database's own `LANGUAGE internal AS 'pg_read_file_all'` read a server file, one
            # `AS 'set_config_by_name'` turned track_counts off around a DELETE, one `LANGUAGE c AS
            # '$libdir/adminpack', 'pg_file_write_v1_1'` wrote a server file, each as `side_effect`)
            found.add("unknown")
        if not fn.builtin and self.stale:
            # The session changed the catalog in a transaction still open (or not read since):
            # the function may have been replaced there (CREATE OR REPLACE, then a call of it,
            # or an EXECUTE of a statement prepared before), and the body the catalog shows is
            # the old one. What runs is unknown until the change is read.
            found.add("unknown")
        if not fn.builtin and fn.source is not None and fn.oid not in self._in_progress:
            self._in_progress.add(fn.oid)
            try:
                body = self._body(fn)
            finally:
                self._in_progress.discard(fn.oid)
            if body is None:
                found.add("unknown")
            else:
                does = frozenset(body.kinds) - {"select"}
                if body.settings:  # set_config in the body: a setting changed (a value kept there)
                    does |= {"set"}
                    self._reached += [x for x in body.settings if self._guarded(x)]
                    if any(name in ("search_path", "*") for name, _value in body.settings):
                        # the body moves the search_path (a set_config that outlives the call,
                        # maybe): where unqualified names resolve, from the call on, is not known
                        # (red team ten: a STABLE function's `set_config('search_path', 'secret',
                        # false)`, then `SELECT ... FROM things` read secret.things)
                        self._reached.append(("search_path", COMPUTED))
                found |= does
                if body.uncounted:
                    self._uncounted_bodies.add(fn.oid)
                    self._body_uncounted = True
                if body.after_count:
                    self._after_count_bodies.add(fn.oid)
                    self._body_after_count = True
                self._body_only[fn.oid] = does
                self._body_tables[fn.oid] = body.tables
                if body.writes:
                    self._body_writes[fn.oid] = body.writes
                self._body_functions[fn.oid] = body.functions
                if body.indirect_writes:
                    self._body_indirect[fn.oid] = body.indirect_writes
                if body.has_where is not None:
                    self._body_wheres[fn.oid] = body.has_where
        if fn.builtin and fn.extension is not None and fn.extension not in self.catalog.trusted_extensions \
                and fn.name not in SQL_TEXT_FUNCTIONS:
            # Code of an extension the server does not say is trusted (its script ran as a
            # superuser): its C functions, and the SQL ones calling them (an extension's bodies are
            # not read), may reach any relation by a name, a regclass or an OID they are given, or
            # that a trigger's arguments hold, reading and writing its pages or running SQL on it
            # (red team fifteen: pageinspect's `get_raw_page('secret.things', 0)` and xml2's
            # `xpath_table(..., 'secret.things', ...)` returned its rows, pg_surgery's
            # `heap_force_kill('secret.things', ...)` killed them, refint's `check_foreign_key(1,
            # 'cascade', 'id', 'secret.things', 'id')` trigger deleted them, each under a rule naming
            # secret.*). Every relation of the database's own is read; if it may change state,
            # written; and one only an administrator may call that may change state writes pages
            # the server's count does not see (pg_surgery's).
            every = frozenset(self._relations_of_kinds("r", "p", "v", "m", "f", "S"))
            self._body_tables[fn.oid] = every
            if fn.volatility == "v":
                self._body_writes[fn.oid] = every
                if not fn.public_execute:
                    self._uncounted_bodies.add(fn.oid)
                    self._body_uncounted = True
        if fn.support and fn.oid not in self._in_progress:
            # an aggregate runs its transition and final functions (`SELECT agg(id) FROM t` calls
            # its state function once a row), and a call computes the DEFAULT expressions of the
            # arguments it leaves out (red team fifteen: `CALL p()`, `p(a int DEFAULT wipe())`):
            # what they do is what calling it does
            self._in_progress.add(fn.oid)
            try:
                # (a function's body, judged above, keeps what it does: the parts add to it)
                tables: set[str] = set(self._body_tables.get(fn.oid, ()))
                writes: set[str] = set(self._body_writes.get(fn.oid, ()))
                names: set[str] = set(self._body_functions.get(fn.oid, ()))
                wheres: list[bool] = [self._body_wheres[fn.oid]] if fn.oid in self._body_wheres else []
                parts: set[str] = set()
                for oid in fn.support:
                    part = self.catalog.function(oid)
                    if part is None:
                        parts.add("unknown")
                        continue
                    self._unseen_settings(part)
                    does = self.function_kinds(part) | self._hidden_text_kinds(part)
                    parts |= does
                    if does or not part.builtin:
                        names.add(part.name)
                    names |= self._body_functions.get(oid, frozenset())
                    tables |= self._body_tables.get(oid, frozenset())
                    writes |= self._body_writes.get(oid, frozenset())
                    if oid in self._body_wheres:
                        wheres.append(self._body_wheres[oid])
                found |= parts
                if fn.oid in self._body_only:  # (what a trigger or a default running it does: `_fires`)
                    self._body_only[fn.oid] = self._body_only[fn.oid] | parts
                if tables:
                    self._body_tables[fn.oid] = frozenset(tables)
                if writes:
                    self._body_writes[fn.oid] = frozenset(writes)
                if names:
                    self._body_functions[fn.oid] = frozenset(names)
                if wheres:
                    self._body_wheres[fn.oid] = all(wheres)
            finally:
                self._in_progress.discard(fn.oid)
        result = frozenset(found)
        self._body_kinds[fn.oid] = result
        if len(self._reached) > reached_from:
            self._fn_reached[fn.oid] = tuple(self._reached[reached_from:])
        if "prepare" in result:
            self._body_prepares = True
        if "cursor" in result:
            self._fn_runs_cursors = True
        return result

    def _unseen_settings(self, fn: FunctionFacts) -> None:
        """``set_config`` run where the text shows neither its name nor its value: a view's
        definition, a column's default, a CHECK, a policy's expression, a trigger's WHEN, an
        aggregate's transition function. Which setting it changes is not known: any, to a value
        known at run time, for the guards (red team eleven: a view computing `set_config(
        'track_counts', 'off', false), f(), set_config('track_counts', 'on', false)` wrote f()'s
        rows uncounted under `rows_written`; one renaming the session and naming it back in one
        row escaped the relay's ParameterStatus check) and for the search_path."""
        if fn.builtin and fn.name == "set_config":
            self._reached += [("*", COMPUTED), ("search_path", COMPUTED)]

    def _body_effects(self, oid: int, tables: frozenset[str]) -> Analysis:
        """What a function's body reads and does to tables, counted for the statement that runs it."""
        return Analysis(frozenset(), tables=tables, writes=self._body_writes.get(oid, frozenset()),
                        has_where=self._body_wheres.get(oid), body_tables=tables,
                        indirect_writes=self._body_indirect.get(oid, frozenset()))

    # What each function judged so far does (`function_kinds`' caches): kept apart while a body
    # runs under a search_path of its own, where the same names may be other functions and tables.
    _PER_FUNCTION = ("_body_kinds", "_body_tables", "_body_writes", "_body_functions", "_body_indirect",
                     "_body_wheres", "_body_only", "_uncounted_bodies", "_after_count_bodies", "_fn_reached")

    def _body(self, fn: FunctionFacts) -> Analysis | None:
        """What ``fn``'s body does; None when it cannot be read. A function with a ``SET
        search_path`` clause runs its body under that path (red team ten: `SET search_path =
        secret` and `SELECT ... FROM things` read secret.things while the session's path said
        public.things); its names are matched in that path's schemas and in the session's."""
        path = None
        for item in fn.config:
            name, _, value = item.partition("=")
            if name.lower() == "search_path":
                path = parse_path(value)
                if path is None:  # a value the server may read otherwise: any schema
                    path = ()
                    uncertain = True
                else:
                    uncertain = False
        if path is None:
            return self._read_body(fn)
        saved = self.schemas, self.uncertain, [getattr(self, name) for name in self._PER_FUNCTION]
        own = attrs.evolve(self.ctx, search_path=path, possible=frozenset()).schemas()
        self.schemas = tuple(dict.fromkeys(own + self.schemas))
        self.uncertain = self.uncertain or uncertain
        for name, value in zip(self._PER_FUNCTION, saved[2]):
            setattr(self, name, type(value)())
        try:
            return self._read_body(fn)
        finally:
            self.schemas, self.uncertain = saved[0], saved[1]
            for name, value in zip(self._PER_FUNCTION, saved[2]):
                setattr(self, name, value)

    def _read_body(self, fn: FunctionFacts) -> Analysis | None:
        from pgwarden.sql.syntax import plpgsql_body, syntax_of

        if fn.language == "sql" and fn.sql_body:  # RETURN expr / BEGIN ATOMIC ... END
            wrapper = syntax_of(f"CREATE FUNCTION pg_temp.pgwarden_f() RETURNS void LANGUAGE sql {fn.source}",
                                self.ctx.lexer)
            if not wrapper.defines or wrapper.defines[0][3] is None:
                return None
            body = wrapper.defines[0][3]
        elif fn.language == "sql":
            body = syntax_of(fn.source or "", self.ctx.lexer)
        else:
            body = plpgsql_body(fn.source or "", self.ctx.lexer)
        if "unknown" in body.kinds and body.statements == 0 and fn.language == "sql":
            return None
        return self.analysis(body)

    # ------------------------------------------------------------------ relations

    def _relations(self, syntax: Syntax, kinds: set[str], functions: set[str],
                   nested: list) -> tuple[set[str], set[str], set[tuple[str, str]]]:
        # (a body judged on the way resolves its own)
        saved = self._maintaining, self._write_kinds, self._events, self._naming
        try:
            self._naming = syntax
            return self._relations_of(syntax, kinds, functions, nested)
        finally:
            self._maintaining, self._write_kinds, self._events, self._naming = saved

    def _relations_of(self, syntax: Syntax, kinds: set[str], functions: set[str],
                      nested: list) -> tuple[set[str], set[str], set[tuple[str, str]]]:
        tables: set[str] = set()
        writes: set[str] = set()
        indirect: set[tuple[str, str]] = set()
        seen_views: set[int] = set()
        seen_effects: set[int] = set()
        # A row stored converts each value to its column's type (a COPY FROM reads it as text):
        # the columns of types that may run the database's own functions count.
        storing = bool(syntax.kinds & _STORING)
        cascading = bool(syntax.kinds & _CASCADING)
        self._write_kinds = syntax.kinds & _CASCADING
        # the trigger events its writes are (`_fires_on`)
        self._events = frozenset(event for kind, events in _EVENTS.items() if kind in syntax.kinds for event in events)
        # an UPDATE (or a MERGE's) of a partitioned table moves a row whose partition key changes
        # to another partition: deleted from one, inserted into another
        moving = bool(syntax.kinds & _MOVING)
        truncating = "truncate" in syntax.kinds  # (TRUNCATE ... CASCADE: every referencing table)
        cascading = cascading or truncating
        # ANALYZE, REINDEX, VACUUM FULL and CLUSTER compute the indexes' expressions and
        # predicates of what they name; named nothing, of every table
        self._maintaining = "maintenance" in syntax.kinds
        if self._maintaining and not syntax.relations:
            for facts in self.catalog.relations:
                if any(kind == "x" for kind, _ in facts.effects):
                    self._effects(facts, False, False, False, kinds, functions, nested, seen_effects)
        for rel in syntax.relations:
            names = self._qualified(rel.schema, rel.name)
            tables |= names
            if rel.written:
                writes |= names
            if self.catalog.stand_in and not any(
                    _schema(facts.schema) == schema_name.partition(".")[0]
                    for schema_name in names for facts in self.catalog.relations_named(rel.name)):
                # the live catalog is not loaded: a relation of the database's own may be a view
                # over anything, with triggers, defaults and policies no one can see
                kinds.add("unknown")
            for schema_name in names:
                schema, _, name = schema_name.partition(".")
                if schema_name in self.catalog.index_tables:
                    # an index (DROP INDEX, ALTER INDEX, REINDEX INDEX name it): its table's (red
                    # team twelve: a rule naming secret.things saw no `DROP INDEX secret.things_n`)
                    tables |= self._names((self.catalog.index_tables[schema_name],))
                for facts in self.catalog.relations_named(name):
                    if _schema(facts.schema) != schema:
                        continue
                    if rel.dropped == "relation":  # nothing of it runs; its partitions and the views over it go too
                        tables |= self._names(self.catalog.descendants(facts.oid) + self._dependents(facts.oid))
                    if rel.dropped:
                        continue
                    if rel.written and moving and facts.kind == "p" and self._moves(facts, [
                            columns for s, n, columns in syntax.updates if (s, n) == (rel.schema, rel.name)]):
                        for below in self._names(self.catalog.descendants(facts.oid)):
                            indirect |= {("delete", below), ("insert", below)}
                    if facts.kind in ("v", "m"):
                        self._view(facts, tables, kinds, functions, seen_views, nested)
                    if facts.kind == "t":  # a TOAST relation: its chunks are its owner's values
                        tables |= self._names(target for kind, target in facts.effects if kind == "o")
                    if rel.written and storing:
                        for type_oid in facts.column_types:
                            self._convert(type_oid, False, kinds, functions, nested)
                    if facts.effects or facts.rules:
                        self._effects(facts, rel.written, storing, cascading, kinds, functions, nested, seen_effects,
                                      truncating, named=True)
                    if rel.planned_write:
                        self._planned_defaults(facts, kinds, functions, nested)
                    if rel.written and facts.kind == "v":  # an updatable view writes what it reads
                        self._through_view(facts, storing, cascading, kinds, functions, nested, seen_effects,
                                           truncating)
            if rel.name in ("pg_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings") and \
                    rel.schema in (None, "pg_catalog"):
                kinds.add("server_files")
        if tables & STATISTICS_RELATIONS:
            # the statistics hold sampled values of every table's columns (after an ANALYZE any
            # session may run): reading them reads every table, for the rules that name tables
            tables |= self._relations_of_kinds("r", "p", "m", "f")
        if "pg_catalog.pg_sequences" in tables:  # every sequence's last value
            tables |= self._relations_of_kinds("S")
        for what, parts in syntax.ddl_objects:
            if what in ("renamed", "renamed column", "inherited"):
                self._as_written(parts, what, kinds, functions, nested)
                continue
            if what == "validated":
                self._validated(parts, kinds, functions, nested)
                continue
            if what == "typed from":
                # CREATE TABLE AS / SELECT INTO: the new table's columns are of the types of what the
                # query reads (a domain's, whose default runs at an INSERT that leaves it out; its
                # CHECKs, a type's casts): converted to as a write of a table of them would, and the
                # read relations' `d` effects run (a domain's default among them; their own columns'
                # defaults and CHECKs, which the new table does not take, count as well)
                for rel in syntax.relations:
                    for facts in self._facts_named(rel.schema, rel.name):
                        for type_oid in facts.column_types:
                            self._convert(type_oid, False, kinds, functions, nested)
                        for kind, target in facts.effects:
                            if kind == "d":
                                self._fires(target, True, kinds, functions, nested)
                continue
            if what == "sequences":  # every sequence's value may be read
                if not self.catalog.complete:
                    kinds.add("unknown")  # (the snapshot knows no sequence of the database's)
                tables |= self._relations_of_kinds("S")
                continue
            if what == "extension":
                if parts[0] not in self.catalog.trusted_extensions:
                    kinds.add("system")  # its script runs as a superuser, and only a superuser may run it
                continue
            if what in ("routine", "replaced", "operator"):
                if self._built_in(what, parts):
                    # the server's own (initdb's, an extension's): owned by a superuser (`system`);
                    # renamed, replaced, moved, it escapes what pgwarden knows of it by name and
                    # never reads the body of (red team thirteen: set_config renamed, then called
                    # under another name around a DELETE, under `rows_written`): what later
                    # statements calling it do is not known (`unknown`)
                    kinds |= {"system", "unknown"}
                continue
            tables |= self._ddl_reach(what, parts, kinds)
        return tables, writes, indirect

    def _as_written(self, parts: tuple[str, ...], what: str, kinds: set[str], functions: set[str],
                    nested: list) -> None:
        """A relation renamed, moved to another schema, or a column of it renamed (`Syntax.ddl_objects`):
        until the change is read, the catalog knows its triggers, rules, policies, defaults and
        partitions by the old name, and a statement naming the new one (later in the string, or in
        the transaction still open) runs them unseen (red team fourteen: `ALTER TABLE public.audited
        RENAME TO a; INSERT INTO public.a VALUES (1)`, whose trigger emptied secret.things, passed a
        rule naming secret.*). The rename is judged as a write of every kind of the relation, of
        every column: what any statement under the new name may run. And for a rule naming both
        statements and the relation (`block {statements: [delete], tables: [public.a]}`), as each of
        those statements of it (`Analysis.indirect_writes`), unless only a column is renamed (``what``
        "renamed column"; a view's column renamed counts for nothing): `ALTER TABLE public.a RENAME TO
        b`, then `DELETE FROM b`, deletes its rows under another name. A parent (INHERITS, PARTITION
        OF, ATTACH PARTITION), a LIKE source, or the one relation a view made reads (a write of the
        view writes it, if it is updatable) likewise (``what`` "inherited"): the table made or
        attached takes on its defaults, CHECKs, indexes and row triggers under a name the catalog
        does not know until the change is read (red team fourteen:
        `CREATE TABLE x (LIKE public.defaulted INCLUDING DEFAULTS); INSERT INTO x ...`)."""
        schema, name = parts
        for schema_name in self._qualified(schema or None, name):
            if what == "renamed":
                renamed = frozenset((kind, schema_name) for kind in _RENAMED_AS)
                nested.append(Analysis(frozenset(), indirect_writes=renamed))
            s, _, n = schema_name.partition(".")
            if s in ("pg_catalog", "information_schema"):
                continue  # (the server's own: no code of the database's own on them; DDL of them is `system`)
            for facts in self.catalog.relations_named(n):
                if _schema(facts.schema) != s or not (
                        facts.effects or facts.rules or facts.column_types or facts.kind == "v"):
                    continue
                if facts.kind == "v" and what == "renamed column":
                    continue  # (a view's column renamed: a write of it reaches what it did)
                saved = self._events, self._write_kinds
                self._events, self._write_kinds = None, _CASCADING  # (every event, every action)
                try:
                    for type_oid in facts.column_types:
                        self._convert(type_oid, False, kinds, functions, nested)
                    self._effects(facts, True, True, True, kinds, functions, nested, set(), True)
                    if facts.kind == "v":  # (an updatable view writes what it reads)
                        self._through_view(facts, True, True, kinds, functions, nested, set(), True)
                finally:
                    self._events, self._write_kinds = saved

    def _validated(self, parts: tuple[str, ...], kinds: set[str], functions: set[str], nested: list) -> None:
        """`ALTER TABLE ... VALIDATE CONSTRAINT`: a CHECK's expression runs over every row of the table
        and of its partitions and children (the catalog's 'd' effects: its CHECKs' functions, and its
        defaults', which count as well)."""
        schema, name = parts
        for facts in self._facts_named(schema or None, name):
            for oid in (facts.oid,) + self.catalog.descendants(facts.oid):
                table = self.catalog.relation(oid)
                for kind, target in table.effects if table is not None else ():
                    if kind == "d":
                        self._fires(target, True, kinds, functions, nested)

    def _moves(self, facts: RelationFacts, sets: list[frozenset[str]]) -> bool:
        """Whether UPDATEs of partitioned table ``facts`` setting the columns ``sets`` (one set per
        UPDATE) may move rows between its partitions: when one sets a column of the partition key
        of the table or of a partitioned partition under it ('k' effects, by attnum; an expression
        in the key, or a key the catalog does not give, counts as any column)."""
        named = frozenset().union(*sets)
        for oid in (facts.oid,) + self.catalog.descendants(facts.oid):
            table = self.catalog.relation(oid)
            if table is None or table.kind != "p":
                continue
            keys = [attnum for kind, attnum in table.effects if kind == "k"]
            if not keys:
                return True
            for attnum in keys:
                column = self.catalog.column(oid, attnum) if attnum else None
                if column is None or column.name in named:
                    return True
        return False

    def _names(self, oids: Iterable[int]) -> set[str]:
        """schema.name of each relation (by OID) the catalog knows."""
        return {f"{_schema(r.schema)}.{r.name}" for oid in oids if (r := self.catalog.relation(oid)) is not None}

    def _ancestry(self) -> dict[str, frozenset[str]]:
        """Each partition's and inheritance child's name -> its ancestors' names (`Catalog.ancestors`),
        built once per catalog; empty when no table has a parent."""
        known = self.catalog.derived.get("ancestor names")
        if known is None:
            known = {}
            for oid in self.catalog.parents():
                facts = self.catalog.relation(oid)
                if facts is not None:
                    known.setdefault(f"{_schema(facts.schema)}.{facts.name}", set()).update(
                        self._names(self.catalog.ancestors(oid)))
            known = self.catalog.derived["ancestor names"] = {k: frozenset(v) for k, v in known.items()}
        return known

    def _dependents(self, oid: int) -> tuple[int, ...]:
        """The views and materialized views over relation ``oid``, at any depth (what DROP ...
        CASCADE of it drops with it)."""
        over: dict[int, list[int]] | None = self.catalog.derived.get("views over")
        if over is None:
            over = {}
            for facts in self.catalog.relations:
                for base in facts.relations:
                    over.setdefault(base, []).append(facts.oid)
            self.catalog.derived["views over"] = over
        seen: dict[int, None] = {}
        todo = list(over.get(oid, ()))
        while todo:
            view = todo.pop()
            if view not in seen and view != oid:
                seen[view] = None
                todo += over.get(view, ())
        return tuple(seen)

    def _built_in(self, what: str, parts: tuple[str, ...]) -> bool:
        """Whether the function (``what`` "routine") or operator DDL names by ``parts`` may be one of
        the server's own: initdb's or an extension's (`FunctionFacts.builtin`; an operator of
        pg_catalog), in the schema named, else in any on the path (pg_catalog first)."""
        schema, name = (parts[-2] if len(parts) > 1 else None), parts[-1]
        if what == "replaced" and schema is None:  # made in the first schema of the path it can be
            return not self.uncertain and any(
                fn.builtin and fn.schema in self.schemas and fn.schema not in ("pg_catalog", "pg_temp")
                for fn in self.catalog.functions_named(name)) or self.uncertain and any(
                fn.builtin and fn.schema != "pg_catalog" for fn in self.catalog.functions_named(name))
        if what != "operator":
            candidates = [(fn.schema, fn.builtin) for fn in self.catalog.functions_named(name)]
        else:
            candidates = [(op.schema, op.schema == "pg_catalog") for op in self.catalog.operators_named(name)]
        for where, builtin in candidates:
            if builtin and (where == schema if schema is not None else
                            self.uncertain or where == "pg_catalog" or where in self.schemas):
                return True
        return False

    def _ddl_reach(self, what: str, parts: tuple[str, ...], kinds: set[str]) -> set[str]:
        """The relations DDL touches beyond those it names (`Syntax.ddl_objects`), from the catalog:
        every relation of a schema renamed, given away, granted or published (and dropped, with the
        views over its relations elsewhere), every table with a column of a type dropped
        (with CASCADE: the column goes), every relation whose trigger, default, policy, index or
        view calls a function dropped with CASCADE, and every relation of the database for what
        cannot be followed (DROP OWNED, DROP EXTENSION ... CASCADE). A catalog that does not know
        every object (the snapshot) cannot list them: `unknown`."""
        if not self.catalog.complete:
            kinds.add("unknown")
        found: set[int] = set()
        if what in ("schema", "dropped schema"):
            found = {r.oid for r in self.catalog.relations if _schema(r.schema) == _schema(parts[0])}
            if what == "schema":  # (renamed, given away, granted, published: the views over them stay as they are)
                return self._names(found)
        elif what == "type" and parts:
            schema = parts[-2] if len(parts) > 1 else None
            dropped = {t.oid for t in self._types(schema, parts[-1])}
            if not dropped:
                kinds.add("unknown")
            grown = True
            while grown:  # arrays of it, domains over it, composites holding it
                more = {t.oid for t in self.catalog.types if t.oid not in dropped and dropped.intersection(t.parts)}
                grown = bool(more)
                dropped |= more
            found = {r.oid for r in self.catalog.relations if dropped.intersection(r.column_types)}
        elif what == "function" and parts:
            schema = parts[-2] if len(parts) > 1 else None
            fns = {fn.oid for fn in self.catalog.functions_named(parts[-1])
                   if (fn.schema == schema if schema is not None else self.uncertain or fn.schema in self.schemas)}
            if not fns:
                kinds.add("unknown")
            found = {r.oid for r in self.catalog.relations
                     if fns.intersection(r.functions) or any(t in fns for k, t in r.effects if k in "tdpx")}
        else:
            return self._relations_of_kinds("r", "p", "v", "m", "f", "S")
        for oid in tuple(found):
            found.update(self.catalog.descendants(oid), self._dependents(oid))
        return self._names(found)

    def _reads_public_columns(self, facts: RelationFacts) -> bool:
        """Whether the statement naming ``facts`` (a built-in relation PUBLIC may not read as a
        whole, 'A') reads only the columns PUBLIC may ('a'): pg_dump's `SELECT count(*) FROM
        pg_subscription WHERE subdbid = ...` (run when the upstream role is no superuser), not
        `subconninfo`, a subscription's connection string and password.

        Read from the text, strictly: a plain SELECT (no write, no COPY, nothing else), no star, no
        NATURAL join or USING, and every name its expressions use a column of a relation it names
        (so no whole-row reference `s`, `to_json(s)`, no `(s).f` of another field, no output alias),
        none of them one PUBLIC may not read."""
        syntax = self._naming
        if syntax is None or not syntax.kinds <= {"select"} or "*" in syntax.column_refs:
            return False
        public = {attnum for kind, attnum in facts.effects if kind == "a"}
        columns = self.catalog.columns_of(facts.oid)
        if not public or columns is None:
            return False
        if any(c.name in syntax.column_refs for c in columns if c.attnum not in public):
            return False
        named = {c.name for rel in syntax.relations for other in self._facts_named(rel.schema, rel.name)
                 for c in self.catalog.columns_of(other.oid) or ()}
        return syntax.column_refs <= named

    def _facts_named(self, schema: str | None, name: str) -> list[RelationFacts]:
        """The relations a name may be: of its schema, or unqualified, of each schema the
        search_path may find it in (`_qualified`)."""
        found: list[RelationFacts] = []
        for schema_name in self._qualified(schema, name):
            s, _, n = schema_name.partition(".")
            found += [facts for facts in self.catalog.relations_named(n) if _schema(facts.schema) == s]
        return found

    def _relations_of_kinds(self, *relkinds: str) -> set[str]:
        """Every relation of the database's own of these kinds (what a catalog view shows of all)."""
        key = ("relations of kinds", relkinds)
        known = self.catalog.derived.get(key)
        if known is None:
            known = self.catalog.derived[key] = frozenset(
                f"{_schema(r.schema)}.{r.name}" for r in self.catalog.relations
                if r.kind in relkinds and r.schema not in ("pg_catalog", "information_schema", "pg_toast"))
        return set(known)

    def _effects(self, facts: RelationFacts, written: bool, storing: bool, cascading: bool, kinds: set[str],
                 functions: set[str], nested: list, seen: set[int], truncating: bool = False,
                 named: bool = False) -> None:
        """What a statement runs on relation ``facts`` without naming it (`RelationFacts.effects`):
        a write fires its triggers and rules, cascades to the tables its foreign keys reach (with
        their own triggers), stores its columns' defaults; any use runs its RLS policies.
        ``named``: the statement names ``facts`` itself (not through a view, a child, a key)."""
        if facts.oid in seen:
            return
        seen.add(facts.oid)
        for kind, target in facts.effects:
            if kind in ("F", "X"):  # file_fdw: any use reads its file or runs its program
                kinds.add("server_files" if kind == "F" else "copy_program")
            elif kind == "A":  # a built-in relation PUBLIC may not read (pg_authid, pg_shadow, ...)
                if not (named and self._reads_public_columns(facts)):
                    kinds.add("system")
            elif kind == "p" or written and (kind == "t" or kind == "d" and storing) or kind == "x":
                # (an index's expressions and predicate: planning any statement on the table folds
                # them, IMMUTABLE as they are declared, whatever their functions do; a write stores
                # them; maintenance computes them and the statistics' expressions)
                self._fires(target, kind != "t", kinds, functions, nested)
                if kind == "t" and self._may_write(target) and self._fires_on(facts, target):
                    # (a trigger writing tables may write there what its body reads: an audit
                    # table filled from `users`, red team eleven)
                    nested.append(Analysis(frozenset(), carried_tables=self._fired_reads(target)))
            elif kind in ("B", "J") and written and storing and self._fires_on(facts, target):
                # a row trigger whose returned row is stored (BEFORE) or returned (INSTEAD OF):
                # `NEW.memo := (SELECT ssn FROM users ...)` (red team eleven)
                found = self._fired_reads(target)
                if kind == "B":
                    nested.append(Analysis(frozenset(), carried_tables=found))
                else:
                    nested.append(Analysis(frozenset(), returned_tables=found))
            elif kind == "T" and written and self._may_write(target):
                # (its 't' row fires it: this one says it may run at the commit, after the count)
                self._deferred_writes = True
            elif kind == "i":  # (`ONLY t` reaches no child: counted all the same)
                child = self.catalog.relation(target)
                if child is None:
                    kinds.add("unknown")
                    continue
                name = f"{_schema(child.schema)}.{child.name}"
                nested.append(Analysis(frozenset(), tables=frozenset({name}),
                                       writes=frozenset({name}) if written else frozenset()))
                events, self._events = self._events, (None if self._write_kinds & _MOVING else self._events)
                try:  # (an UPDATE moving a row between partitions deletes it from one, inserts it in another)
                    self._effects(child, written, storing, cascading, kinds, functions, nested, seen, truncating)
                finally:
                    self._events = events
            elif kind == "L":
                # a foreign table whose remote table's name is this relation's: over a server that
                # loops back here, reading or writing it reads or writes that relation (red team
                # twelve); the server's own options cannot say where it connects for sure
                local = self.catalog.relation(target)
                if local is None:
                    kinds.add("unknown")
                    continue
                name = f"{_schema(local.schema)}.{local.name}"
                nested.append(Analysis(frozenset(), tables=frozenset({name}),
                                       writes=frozenset({name}) if written else frozenset()))
            elif kind in ("n", "u") and written and cascading:
                # the referencing rows an ON DELETE SET NULL / SET DEFAULT action (a DELETE's) or
                # an ON UPDATE action (an UPDATE's) updates: an UPDATE of that table (and of its
                # parents: a partition's rows are theirs); the table itself comes with its 'c' row
                if self._updates_rows(facts, target):
                    names = self._names((target,) + self.catalog.ancestors(target))
                    if not names:
                        kinds.add("unknown")
                    nested.append(Analysis(frozenset(), indirect_writes=frozenset(("update", n) for n in names)))
            elif (kind == "c" and cascading or kind == "r" and truncating) and written:
                child = self.catalog.relation(target)
                if child is None:
                    kinds.add("unknown")
                    continue
                name = f"{_schema(child.schema)}.{child.name}"
                nested.append(Analysis(frozenset(), tables=frozenset({name}), writes=frozenset({name})))
                events, self._events = self._events, None  # (its own events: a DELETE or an UPDATE)
                # an action that updates the referencing rows (SET NULL, SET DEFAULT, ON UPDATE
                # CASCADE) stores them: their defaults (SET DEFAULT computes them), CHECK
                # constraints and columns' domains run, as an UPDATE's do
                stores = kind == "c" and self._updates_rows(facts, target)
                if stores:
                    for type_oid in child.column_types:
                        self._convert(type_oid, False, kinds, functions, nested)
                try:
                    self._effects(child, True, stores, True, kinds, functions, nested, seen, truncating)
                finally:
                    self._events = events
        if written:
            from pgwarden.sql.syntax import syntax_of

            for definition in facts.rules:  # CREATE RULE ... DO ALSO / INSTEAD <actions>
                ran = self.analysis(syntax_of(definition, self.ctx.lexer))
                kinds |= ran.kinds - {"ddl", "select"}
                functions |= ran.functions
                nested.append(ran)

    def _updates_rows(self, facts: RelationFacts, child: int) -> bool:
        """Whether the statement's writes of ``facts`` set off a foreign key action that updates the
        rows of table ``child`` (its 'n' and 'u' effects, `RelationFacts.effects`)."""
        return any(target == child and (kind == "n" and bool(self._write_kinds & _DELETING)
                                        or kind == "u" and bool(self._write_kinds & _UPDATING))
                   for kind, target in facts.effects)

    def _planned_defaults(self, facts: RelationFacts, kinds: set[str], functions: set[str], nested: list,
                          seen: set[int] | None = None) -> None:
        """A plain EXPLAIN of a write plans it: the rewriter puts the target's column defaults in,
        and planning folds their calls of functions declared IMMUTABLE (with constant arguments),
        which then run, whatever their bodies do (a lie: a function so declared that writes). An
        updatable view's write is its base relation's, with that one's defaults."""
        seen = set() if seen is None else seen
        if facts.oid in seen:
            return
        seen.add(facts.oid)
        if facts.kind == "v":
            for oid in facts.relations:
                base = self.catalog.relation(oid)
                if base is not None:
                    self._planned_defaults(base, kinds, functions, nested, seen)
        for kind, target in facts.effects:
            if kind != "d":
                continue
            fn = self.catalog.function(target)
            if fn is None:
                kinds.add("unknown")
            elif fn.volatility == "i":
                self._fires(target, True, kinds, functions, nested)

    def _through_view(self, view: RelationFacts, storing: bool, cascading: bool, kinds: set[str],
                      functions: set[str], nested: list, seen: set[int], truncating: bool = False) -> None:
        """A write of an auto-updatable view writes the relations it reads, with their effects."""
        for oid in view.relations:
            base = self.catalog.relation(oid)
            if base is None or base.oid == view.oid:
                continue
            name = f"{_schema(base.schema)}.{base.name}"
            moved: frozenset[tuple[str, str]] = frozenset()
            if base.kind == "p" and self._write_kinds & _MOVING:  # (the columns set are the view's)
                moved = frozenset((how, below) for below in self._names(self.catalog.descendants(base.oid))
                                  for how in ("delete", "insert"))
            nested.append(Analysis(frozenset(), tables=frozenset({name}), writes=frozenset({name}),
                                   indirect_writes=moved))
            self._effects(base, True, storing, cascading, kinds, functions, nested, seen, truncating)
            if base.kind == "v":
                self._through_view(base, storing, cascading, kinds, functions, nested, seen, truncating)

    def _fired_reads(self, oid: int) -> frozenset[str]:
        """The tables trigger function ``oid``'s body reads (with what it calls); every table of
        the database's own when the body cannot be read (it may read any)."""
        fn = self.catalog.function(oid)
        if fn is None:
            return frozenset(self._relations_of_kinds("r", "p", "v", "m", "f"))
        found = self.function_kinds(fn)
        if "unknown" in found or fn.oid not in self._body_only and not fn.builtin:
            return frozenset(self._relations_of_kinds("r", "p", "v", "m", "f"))
        return self._body_tables.get(fn.oid, frozenset())

    def _may_write(self, oid: int) -> bool:
        """Whether trigger function ``oid``'s body may write (what `_fires` judges it by)."""
        fn = self.catalog.function(oid)
        if fn is None:
            return True
        found = self.function_kinds(fn)
        return not _READING.issuperset(self._body_only.get(fn.oid, found))

    def _fires(self, oid: int, value: bool, kinds: set[str], functions: set[str], nested: list) -> None:
        """Function ``oid`` runs as a trigger, or (``value``) computes a default or a policy's test:
        judged by what its body does. Its own volatility says nothing here (a trigger's function
        is volatile by nature): a body's kinds are what it does; other languages as calls, but a
        built-in or an extension's function computing a value (`uuid_generate_v4()`) is judged
        without its volatility (an extension's trigger function in C may write anything)."""
        fn = self.catalog.function(oid)
        if fn is None:
            kinds.add("unknown")
            return
        self._unseen_settings(fn)
        found = self.function_kinds(fn)
        if fn.builtin and value:
            found = found - {"side_effect"}
        elif fn.oid in self._body_only:
            found = self._body_only[fn.oid] | (found & {"unknown"})
        if found:
            kinds |= found
            functions.add(fn.name)
        functions |= self._body_functions.get(fn.oid, frozenset())
        body_tables = self._body_tables.get(fn.oid)
        if body_tables:
            nested.append(attrs.evolve(self._body_effects(fn.oid, body_tables), fired_tables=body_tables))

    def _view(self, view: RelationFacts, tables: set[str], kinds: set[str], functions: set[str],
              seen: set[int], nested: list) -> None:
        if view.oid in seen:
            return
        seen.add(view.oid)
        read: list[Analysis] = []
        for oid in view.functions:  # what reading the view runs, judged as calls
            self._runs(oid, kinds, functions, read, named=False)
        for inner in read:  # and what those functions' bodies read
            tables |= inner.tables
            if inner.body_tables:  # (planned apart from the statement's plan)
                nested.append(Analysis(frozenset(), body_tables=inner.body_tables))
            # ... and write: the statement writes it, for `rows_written` (a system catalog the
            # count does not see) and for `where: absent` (red team eleven: `SELECT * FROM v`
            # over a function whose body deletes every row passed a rule refusing `SELECT f()`)
            if inner.writes or inner.has_where is not None or inner.indirect_writes:
                nested.append(attrs.evolve(inner, tables=frozenset(), fired_tables=frozenset()))
        if view.oid >= FIRST_NORMAL_OID:
            self._view_settings(view, kinds)
        for oid in view.relations:
            rel = self.catalog.relation(oid)
            if rel is None or rel.oid == view.oid:
                continue
            tables.add(f"{_schema(rel.schema)}.{rel.name}")
            if ("A", 0) in rel.effects and (view.oid >= FIRST_NORMAL_OID or rel.name == "pg_user_mapping"):
                # a view of the database's own over a relation PUBLIC may not read (pg_authid):
                # its owner's privileges read it for the agent (the built-in views PUBLIC may
                # read over one, pg_roles and pg_stats, show what PUBLIC may see); and any view
                # over pg_user_mapping: the built-in ones (pg_user_mappings,
                # information_schema.user_mapping_options) show a mapping's options, passwords of
                # foreign servers, to a superuser, as the upstream role may be (red team eleven)
                kinds.add("system")
            if rel.kind in ("v", "m"):
                self._view(rel, tables, kinds, functions, seen, nested)

    def _view_settings(self, view: RelationFacts, kinds: set[str]) -> None:
        """The settings a view of the database's own reads (`Syntax.read_settings` of its
        definition: `current_setting('hba_file')`, pg_settings' values), judged as the statement's
        own reads; any, when its definition is not known and it calls current_setting or
        pg_show_all_settings (red team twelve)."""
        calls = [fn for fn in (self.catalog.function(oid) for oid in view.functions) if fn is not None]
        read = [rel for rel in (self.catalog.relation(oid) for oid in view.relations) if rel is not None]
        if not any(fn.builtin and fn.name in ("current_setting", "pg_show_all_settings") for fn in calls) \
                and not any(rel.schema == "pg_catalog" and rel.name == "pg_settings" for rel in read):
            return
        body = syntax_of(view.definition, self.ctx.lexer) if view.definition else None
        if body is None or body is UNPARSABLE:
            self._read_settings(("*",), kinds)
        else:
            self._read_settings(body.read_settings, kinds)

    def _filters(self, check: WhereCheck) -> bool:
        """A write's condition judged with its table's columns (`WhereCheck`): it filters only if
        it does for every table the name may be; the text's reading when the catalog knows none."""
        verdicts = []
        for facts in self._facts_named(check.relation.schema, check.relation.name):
            columns = self.catalog.columns_of(facts.oid)
            if columns is None:
                verdicts.append(check.unresolved)
            else:
                verdicts.append(check.filters(frozenset(c.name for c in columns)))
        return all(verdicts) if verdicts else check.unresolved

    def _qualified(self, schema: str | None, name: str) -> set[str]:
        """schema.name for a qualified name; for an unqualified one, every schema it may be in."""
        if schema is not None:
            return {f"{_schema(schema)}.{name}"}
        known = {_schema(r.schema) for r in self.catalog.relations_named(name)}
        if self.uncertain:  # any schema holding such a relation
            candidates = set(known) | {s for s in self.schemas if s not in ("pg_temp", "pg_catalog")}
        else:
            candidates = set(self.schemas)
            if known:
                candidates &= known
            else:  # nothing of that name yet: the first schema it would be created in
                candidates = {s for s in self.schemas if s not in ("pg_temp", "pg_catalog")}
        if self.catalog.complete and self.catalog.schemas:  # a schema that does not exist holds nothing
            candidates &= set(self.catalog.schemas) | {"pg_temp"}
        if not candidates:
            candidates = {s for s in self.schemas if s not in ("pg_temp", "pg_catalog")} or {"public"}
        return {f"{s}.{name}" for s in candidates}

    # ------------------------------------------------------------------ settings

    def _settings(self, syntax: Syntax, kinds: set[str]) -> None:
        for name, value in syntax.settings + syntax.stored_settings:
            kinds |= self._setting_kinds(name, value)
        if syntax.settings_from_catalog and (
                self._qualified(None, "pg_settings") != {"pg_catalog.pg_settings"}
                or any(_schema(op.schema) != "pg_catalog" for op in self.catalog.operators_named("="))):
            # set_config(name, ...) of a pg_settings whose `name = '...'` fixed the name: only where
            # both are the server's own (no relation of that name, no `=` of the database's own,
            # on the path); else the name is any
            kinds.add("unknown")

    def _fires_on(self, facts: RelationFacts, function: int) -> bool:
        """Whether a trigger of ``facts`` running ``function`` fires on the events of the writes
        being followed: any when they are not known (None), or the catalog says no event of it."""
        events = [kind for kind, target in facts.effects if target == function and kind in "IUDY"]
        return self._events is None or not events or any(e in self._events for e in events)

    def _read_settings(self, names: tuple[str, ...], kinds: set[str], own: bool = False) -> None:
        """Reading a setting the server shows only to a role with pg_read_all_settings (`Catalog.
        hidden_settings`: hba_file, data_directory, primary_conninfo's replication password) is an
        administrator's act: the upstream role may be a superuser (red team twelve). So is reading
        any setting, or one named at run time, while such settings exist, unless the reading is
        the statement's ``own`` (not a function body's) and the upstream role neither reads them
        nor may become a role that does (`Catalog.upstream_reads_hidden`): the server then leaves
        them out of what it shows the session (psql's \\dconfig: ``current_setting(s.name) FROM
        pg_settings s``)."""
        hidden = self.catalog.hidden_settings
        if not hidden:
            return
        if own and not self.catalog.upstream_reads_hidden:
            names = tuple(name for name in names if name != "*")
        if any(name.startswith("=") for name in names) and any(
                o.schema != "pg_catalog" for o in self.catalog.operators_named("=")):
            # (`WHERE name = 'work_mem'` keeps one row with pg_catalog's `=`; one of the
            # database's own earlier on the search_path may keep every row)
            kinds.add("system")
        if any(name == "*" or name.lstrip("=") in hidden for name in names):
            kinds.add("system")

    def _guarded(self, setting: tuple[str, str | None]) -> bool:
        return _guarded(setting, self.catalog.tuning)

    def _setting_kinds(self, name: str, value: str | None) -> set[str]:
        """What changing setting ``name`` to ``value`` is, as statement kinds (a function's SET
        clause too: `session_replication_role` is the superuser's while the function runs)."""
        if name == "*":
            return set()
        if name in ROLE_SETTINGS:
            return {"role"}
        if name in READ_ONLY_SETTINGS:
            # off, or a value computed at run time; RESET returns to the session's own value
            if value is not None and (value == COMPUTED or value.strip().lower() in _OFF):
                return {"system"}
            return set()
        return self.setting_kinds(name)

    def setting_kinds(self, name: str) -> set[str]:
        context = self.catalog.setting_context(name)
        if context is None:
            if not self.catalog.settings:
                return set()  # no settings facts at all
            if "." in name:
                prefix = name.split(".", 1)[0] + "."
                if any(s.startswith(prefix) for s in self.catalog.settings):
                    return {"unknown"}  # an extension's setting that the server does not have
                return set()  # a custom placeholder: anyone may set it, nothing reads it
            return {"unknown"}
        if context != "user":
            return {"system"}
        return set()


def _guarded(setting: tuple[str, str | None], tuning: frozenset[str] = frozenset()) -> bool:
    """Whether a function's change of ``setting`` is the statement's for the guards: a guarded
    name, a planner setting of the server's (``tuning``: `Catalog.tuning`, which masking guards:
    the plan decides the rows' order), or one known only at run time (set_config with a computed
    name) given a value."""
    name, value = setting
    return name in GUARDED_SETTINGS or name in tuning or (name == "*" and value is not None)


def _system_schema(schema: str) -> bool:
    """Whether ``schema`` holds the system catalogs (or their TOAST tables): only a superuser
    writes there, and what is written is the database's schema."""
    return schema == "pg_catalog" or schema.startswith("pg_toast")


def _schema(name: str) -> str:
    return "pg_temp" if name.startswith("pg_temp") else name

