"""`Analysis`: what one SQL string does in one context — the facts policies match on.

Built in two steps: `syntax.syntax_of` reads the parse tree (no catalog, cached by
text), `resolve.resolve` decides what the names in it are and do, against the
catalog and the session's search_path (`context.SqlContext`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pgwarden.sql.context import SqlContext

# Statement kinds after which the search_path may have changed in ways the text does not show.
UNCERTAIN_AFTER = frozenset({"side_effect", "do", "call", "unknown", "role"})
# Statement kinds that may change run-time settings (client_encoding, standard_conforming_strings)
# without naming them: what runs code, and what the analysis cannot see into.
MAY_CHANGE_SETTINGS = frozenset({"side_effect", "do", "call", "unknown", "set", "role", "system"})
# The settings the core guards whatever changes them (`pgwarden.lexical`, `pgwarden.limits`):
# a change a function makes while it runs (its SET clause, a set_config in its body), or will make
# (one created or altered here), is the statement's in `Analysis.settings`.
GUARDED_SETTINGS = frozenset({
    "application_name", "track_counts", "statement_timeout", "transaction_read_only", "default_transaction_read_only",
})
# Statement kinds after which catalog facts may be stale.
CATALOG_CHANGES = frozenset({"ddl", "do", "call", "side_effect", "unknown", "role", "grant"})
# ... and those that may define again what lineage goes through (a view, a function's body, a
# column's name): what the session reads after them waits for the catalog to show it. (Not a
# sequence's nextval, a side effect that changes no definition.)
REDEFINES = frozenset({"ddl", "do", "call", "unknown"})
# Statement kinds whose statements masking follows after they ran (`pgwarden.results`): what
# names prepared statements, cursors, settings and roles. (`pgwarden.sql.lineage.NAMING_KINDS`)
NAMING_KINDS = frozenset({"prepare", "cursor", "set", "role", "unknown"})

#: The planner's statistics: sampled values of every analysed column of every table (most common
#: values, histogram bounds), named by schema, table and column in the rows, not by the statement.
#: Reading them reads every table (a table rule's concern), and may show any column (masking's).
STATISTICS_RELATIONS = frozenset({
    "pg_catalog.pg_statistic", "pg_catalog.pg_statistic_ext_data", "pg_catalog.pg_stats", "pg_catalog.pg_stats_ext",
    "pg_catalog.pg_stats_ext_exprs"})

# `Analysis.effects`' bits: what the decision tests of every allowed statement, read at once.
#: `Analysis.changes_catalog`
CHANGES_CATALOG = 1
#: `Analysis.changes_context`
CHANGES_CONTEXT = 2
#: `Analysis.may_change_settings`
MAY_CHANGE_SETTINGS_BIT = 4
#: a kind of `NAMING_KINDS`
NAMES = 8
#: COPY ... FROM STDIN: the server may enter copy-in mode, where it ignores Sync and Flush
COPIES_IN = 16


@attrs.frozen
class Analysis:
    kinds: frozenset[str]
    tables: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    # Writes of another kind than the statement's own, to tables it does not name as their target,
    # as (kind, schema.table): the rows a foreign key's ON DELETE SET NULL / SET DEFAULT or ON
    # UPDATE CASCADE action updates, the rows an UPDATE of a partitioned table moves between its
    # partitions (a DELETE from one, an INSERT into another). A rule naming both statements and
    # tables matches such a pair too (`plugins.block.matches`); the kinds are not in ``kinds``
    # (a DELETE that nulls a reference is no UPDATE to a rule that names no table).
    indirect_writes: frozenset[tuple[str, str]] = frozenset()
    has_where: bool | None = None  # for UPDATE/DELETE: a WHERE that filters rows; None otherwise
    # The tables read by code the statement runs without naming it: the functions of the triggers
    # its writes fire, of its tables' defaults, CHECKs, policies and index expressions, of the
    # conversions the server makes (a domain's CHECK). Lineage follows none of the triggers, so
    # what they read may reach the agent in their messages (masking: `plugins/mask`).
    fired_tables: frozenset[str] = frozenset()
    # Of those, the tables read by code that may put what it reads into rows (red team eleven): a
    # BEFORE row trigger's function (the row it returns is stored), a trigger's function that
    # writes tables (an audit table); and (``returned_tables``) an INSTEAD OF row trigger's (the
    # row it returns is what RETURNING shows).
    carried_tables: frozenset[str] = frozenset()
    returned_tables: frozenset[str] = frozenset()
    # The tables read by the bodies of the database's own functions the statement runs (called or
    # not named): their queries are planned apart from the statement's plan (the planner inlines
    # only an SQL function that is a single SELECT), out of masking's plan check's sight.
    body_tables: frozenset[str] = frozenset()
    # SQL-level PREPAREs: (name, what the body does here, its Syntax — the server plans the body
    # again under the search_path of each EXECUTE, so it is resolved again then).
    prepares: tuple[tuple[str, Analysis, object], ...] = ()
    executes: tuple[str, ...] = ()  # names of prepared statements EXECUTEd
    # True when no constant's value mattered: every string with the same normalized
    # text (constants replaced, names kept) has this same analysis in the same context.
    constant_free: bool = True
    # Run-time settings the string changes: (name in lower case, the literal value as the
    # server receives it, or None for RESET / DEFAULT / a value computed at run time).
    # The name is "*" when it is not known before the statement runs (set_config with a
    # computed name, RESET ALL, DISCARD ALL). Also, for the guards, the `GUARDED_SETTINGS` (and
    # computed names) that the functions it runs change while they run: their SET clauses
    # (pg_proc.proconfig), the set_config calls and SETs of their bodies; and those the
    # functions it creates or alters will change (`Syntax.function_settings`).
    settings: tuple[tuple[str, str | None], ...] = ()
    # Names of SQL-level prepared statements DEALLOCATEd ("*": all, also by DISCARD ALL).
    deallocates: tuple[str, ...] = ()
    # True when the string asks for a read-write transaction (BEGIN / START TRANSACTION /
    # SET TRANSACTION / SET SESSION CHARACTERISTICS ... READ WRITE).
    read_write: bool = False
    # True when a function it runs PREPAREs or DEALLOCATEs by its body (`EXECUTE 'PREPARE p AS
    # ...'`), or it is `unknown`: which statement each SQL-level name holds afterwards is not known.
    prepares_unseen: bool = False
    # True when it destroys or rewrites rows the server's statistics do not count
    # (`Syntax.uncounted`: TRUNCATE, ALTER TABLE ... TYPE / DROP COLUMN, DROP TABLE, ...).
    uncounted: bool = False
    # True when it may leave work the server does after pgwarden's count of the rows it wrote:
    # its own (`Syntax.after_count`) or a function body's it runs, at any depth (an SQL function's
    # DECLARE ... WITH HOLD); a write of a table whose DEFERRABLE constraint trigger runs a
    # function that may write. (SQL built at run time, `unknown`, may do any of these: under a
    # cap `limits.counting` refuses it as it refuses these.)
    after_count: bool = False
    # True when it may run a cursor's query (which may write): its own FETCH or MOVE
    # (`Syntax.runs_cursors`), a function that fetches (`cursor_to_xml`) or whose body's kinds
    # hold "cursor". False for a "cursor" that only DECLAREs or CLOSEs: `limits.counting` counts
    # no write there (asyncpg's pool sends `CLOSE ALL` among its reset statements).
    runs_cursors: bool = False
    # The foreign tables it reads or writes, through views and function bodies too: the server
    # counts no row written to one (the foreign server does, if anything).
    foreign: frozenset[str] = frozenset()
    # What the decision asks of every statement, set once per analysis (an analysis is shared by
    # every text that differs only in constants; nearly every answer is no):
    #: the session's SQL context may be another after this string ran (`SqlContext.after`): it
    #: changes a setting, runs what may, or EXECUTEs a prepared body
    changes_context: bool = attrs.field(init=False, eq=False, hash=False, repr=False)
    #: it may change run-time settings, named or not (`MAY_CHANGE_SETTINGS`)
    may_change_settings: bool = attrs.field(init=False, eq=False, hash=False, repr=False)
    #: the catalog's facts may be stale after it (`CATALOG_CHANGES`)
    changes_catalog: bool = attrs.field(init=False, eq=False, hash=False, repr=False)
    #: it may define again what lineage goes through (`REDEFINES`)
    redefines: bool = attrs.field(init=False, eq=False, hash=False, repr=False)
    #: it PREPAREs, EXECUTEs or DEALLOCATEs SQL-level prepared statements, or may by a function's
    #: body: what it does depends on the session's prepared statements, not on its text alone
    #: (the block plugin judges it each time, `plugin_call.Precheck`)
    uses_prepared: bool = attrs.field(init=False, eq=False, hash=False, repr=False)
    #: `CHANGES_CATALOG`, `CHANGES_CONTEXT`, `MAY_CHANGE_SETTINGS_BIT` and `NAMES`, each set when
    #: it holds: the decision reads one attribute for the four (an interpreted object's attribute
    #: read from compiled code is ~150 instructions); after the flags above (their defaults)
    effects: int = attrs.field(init=False, eq=False, hash=False, repr=False)

    @changes_context.default
    def _changes_context(self) -> bool:
        return bool(self.settings or self.executes or self.kinds & UNCERTAIN_AFTER)

    @may_change_settings.default
    def _may_change_settings(self) -> bool:
        return bool(self.settings or self.kinds & MAY_CHANGE_SETTINGS)

    @changes_catalog.default
    def _changes_catalog(self) -> bool:
        return bool(self.kinds & CATALOG_CHANGES)

    @redefines.default
    def _redefines(self) -> bool:
        return bool(self.kinds & REDEFINES)

    @effects.default
    def _effects(self) -> int:
        return ((CHANGES_CATALOG if self.changes_catalog else 0) | (CHANGES_CONTEXT if self.changes_context else 0)
                | (MAY_CHANGE_SETTINGS_BIT if self.may_change_settings else 0)
                | (NAMES if self.kinds & NAMING_KINDS else 0)
                | (COPIES_IN if "copy_from" in self.kinds else 0))

    @uses_prepared.default
    def _uses_prepared(self) -> bool:
        return bool(self.prepares or self.executes or self.deallocates or self.prepares_unseen)


def analyze_sql(sql: str, context: SqlContext | None = None) -> Analysis:
    """The analysis of ``sql`` in ``context`` (by default: the shipped catalog snapshot,
    the default search_path)."""
    from pgwarden.sql.context import default_context
    from pgwarden.sql.resolve import resolve
    from pgwarden.sql.syntax import syntax_of

    ctx = context if context is not None else default_context()
    return resolve(syntax_of(sql, ctx.lexer), ctx)
