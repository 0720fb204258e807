"""A statement's verdict: the core's own checks, the plugins', the approval wait, and its record.

Kept apart from the `Application` so that deciding sees only what a decision is made of:
the plugin host, the recorder (nothing takes effect before its record is on its way), the
statistics, the statement cache and the catalog. The session a statement belongs to is
the `ClientConnection` passed in with it (its limits, its SQL context, its relay).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from twisted.internet.defer import Deferred, gatherResults, succeed

from pgwarden import lexical
from pgwarden import limits as core_limits
from pgwarden.approvals import ApprovalWaits
from pgwarden.catalog.model import FIRST_NORMAL_OID
from pgwarden.config import Approvals
from pgwarden.plugin_call import ALLOWED, PluginFlags
from pgwarden.proxy.state import CatalogState, ConnectionState, catalog_unread_of
from pgwarden.recorder import RecordingFailed
from pgwarden.relay.counting import CountRows
from pgwarden.relay.engine import ALLOW, BIND_DECIDES, StatementRequest
from pgwarden.session import declare_types, went_unchecked
from pgwarden.sql.analysis import CHANGES_CATALOG, CHANGES_CONTEXT, COPIES_IN, MAY_CHANGE_SETTINGS_BIT, NAMES
from pgwarden.sql.context import shared
from pgwarden.sql.lineage import NAMING_KINDS
from pgwarden.verdict import Refusal, Verdict

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.client import ClientConnection
    from pgwarden.recorder import Recorder
    from pgwarden.sql.cache import StatementCache
    from pgwarden.sql.statement import Statement

_RECORDING_FAILED = Refusal(
    "58030",
    "pgwarden: statement refused: records cannot be written",
    "pgwarden records every statement before it runs; a record sink is failing.",
    "This is not caused by the statement. Retry later; an operator sees the reason on pgwarden's /readyz.",
)

# Final: compiled, a C variable; any other global is a dictionary lookup at each use.
_VERDICT: Final = Verdict
_ALLOWED: Final = ALLOWED  # (the checkers' answer when no plugin has one: frozen, "allow")
_NAMING_KINDS: Final = NAMING_KINDS
_CHANGES_CATALOG: Final = CHANGES_CATALOG
_RAN_TESTS: Final = CHANGES_CATALOG | CHANGES_CONTEXT  # (and NAMES with masks: `ran`'s three tests)
_NAMES: Final = NAMES
_MAY_CHANGE_SETTINGS: Final = MAY_CHANGE_SETTINGS_BIT
_COPIES_IN: Final = COPIES_IN


def _unchecked(conn: ClientConnection) -> Verdict:
    """Allowed, with no plugin asked: the session's plugins must know they missed it."""
    went_unchecked(conn.session)
    return Verdict.allow()


class Decisions:
    """Turns a `StatementRequest` into ALLOW, a Refusal, CountRows or a Deferred of one of them.

    Every verdict goes through `recorded` before it takes effect.
    """

    def __init__(self, plugins: PluginHost, recorder: Recorder, stats: Stats,
                 statements: StatementCache, catalog, reactor: object = None,
                 approvals: Callable[[], Approvals] = Approvals) -> None:
        self.plugins = plugins
        #: the same host, by its native base: compiled, `follows` and `checks` read from its struct
        self._flags: PluginFlags = plugins
        self.recorder = recorder
        self.stats = stats
        # What the decision calls on every statement, compiled, taken once: a native call each
        # (`stats.statement` and `plugins.check` are the same methods, reached by a lookup)
        self._count = stats.counts
        self._checkers = plugins.checkers
        self.statements = statements
        #: a catalog source (`LiveCatalog`, or a fixed snapshot): `current`, `pending`, `fresh()`...
        self.catalog = catalog
        #: the same source by its native base (`current`, `pending`, `redefining`): compiled,
        #: read from its struct (a source without that base is refused here)
        self._live: CatalogState = catalog
        #: statements that need approval: their requests and waits
        self.approvals = ApprovalWaits(plugins, recorder, stats, reactor, approvals, catalog)

    def decide(self, conn: ClientConnection, request: StatementRequest) -> object:
        """ALLOW, a Refusal, or a Deferred of one of them; recorded before it takes effect."""
        # The session's state as its native base: compiled, each read below is a C struct's
        # field, where ``conn``'s own (a Python class's) would be a generic attribute lookup.
        state: ConnectionState = conn
        session = state.session
        policies = session.policies  # (read once: the checkers below are handed them)
        if not policies:  # a reload took the identity's last policy away
            return self.recorded(conn, request, None, Verdict.block("no policy for this identity"),
                                 Refusal("28000", "pgwarden: no policy for this identity"))
        if request.protocol == "function_call":
            # The relay refuses FunctionCall whatever the verdict (it escapes every statement rule).
            return self.recorded(conn, request, None,
                                 Verdict.block("the FunctionCall protocol message is not allowed"), ALLOW)
        if request.refusal is not None:  # the relay cannot read the text as the server would
            return self._refused(conn, request, None, request.refusal)
        recording = self.recorder.active
        flags = self._flags
        follows = flags.follows  # (a plugin checks, or a masker reads lineage)
        plain = not state.limits_any and state.shadow is None
        if not recording and not follows and plain:
            # Not even parsed: what it does to the session (a SET search_path, DDL, a PREPARE)
            # is not followed. Should a reload bring checks, `_untracked` assumes the worst.
            state.untracked = True
            self._count.count("allow", ("unanalysed",))
            return ALLOW
        if state.untracked:
            self._untracked(conn)
        catalog = self._live
        # `_context`'s three tests, inline (a Python call less per statement), on the copies of
        # the session's context's fields; `_context` rebuilds
        if (state.context_catalog is not catalog.current or request.lexer is not state.context_lexer
                or catalog_unread_of(state) is not state.context_stale):
            context = self._context(conn, request)
        else:
            context = state.context
        relay = state.relay
        if relay is not None and relay.context_unsettled and relay.answers_owed:
            # Sent behind a change of the search_path the server has not ended yet (pipelined):
            # an error or a ROLLBACK among what is in flight may undo it. Read as uncertain.
            context = shared(context.uncertain())
        statement = self.statements.get(request.sql, context)
        # Before any policy: nothing may change how later statements are read. (Parsed for it
        # only when the text could say SET, RESET, DISCARD or set_config, or when its record, a
        # check or a masker, which read the analysis, will parse it anyway.)
        analysis = statement.analysed
        if analysis is None and (recording or follows or lexical.may_change(request.sql)):
            analysis = statement.analyse()
        if analysis is not None:
            settings = analysis.settings
            if settings:
                refusal = lexical.refusal(settings, analysis.functions, request.encoding, request.lexer)
                if refusal is not None:
                    return self._refused(conn, request, statement, refusal)
        if plain and not flags.checks:  # (recorded or masked, so analysed: what it does to the session is followed)
            went_unchecked(session)
            return self._enforce(Verdict.allow(), statement, conn, request)
        if catalog.pending and (
                "unknown" in statement.kinds or not catalog.current.complete
                or self._after_change(conn, statement)):
            # It names what the catalog may not know yet (a function just created), the first
            # read of the live catalog has not ended (masking needs to know the tables' columns),
            # or it reads after committed DDL not read yet (a view replaced, by this session or
            # another): decide once the catalog has been read again.
            return self._once_fresh(conn, request)
        if plain and not request.param_types:  # `_check` for a session without limits or shadow rules, inline
            if request.protocol == "extended":  # (a Query's text has no parameters to type)
                declare_types(session, request.sql, request.declared_types)
            verdict = self._checkers.check_under(statement, session, policies)  # (`PluginHost.check`, compiled)
            if isinstance(verdict, _VERDICT):
                return self._enforce(verdict, statement, conn, request)
            return verdict.addCallback(self._enforce, statement, conn, request)
        return self._check(conn, request, statement)

    @staticmethod
    def _untracked(conn: ClientConnection) -> None:
        """``conn``'s earlier statements went upstream unread (no check, limit, shadow rule or
        record wanted them) and now one is wanted (a reload brought it): they may have moved
        the search_path, changed the catalog, prepared statements. Taken as the worst: the
        search_path uncertain (an unqualified name may be any schema's), the catalog changed by
        this session and read again before lineage goes through it. (SQL-level prepared
        statements this session made then are unknown to the masking: their rows are opaque.)"""
        state: ConnectionState = conn
        state.untracked = False
        went_unchecked(state.session)
        state.sql_context = shared(state.context.uncertain())
        state.catalog_changed = True
        state.catalog_redefined = True
        relay = state.relay
        if relay is not None:
            relay.policy_generation += 1

    def _once_fresh(self, conn: ClientConnection, request: StatementRequest) -> Deferred:
        """`_check` once the catalog has been read again. (A method of its own: a lambda in
        `decide` would make its arguments closure cells, made at every call.)"""
        return self.catalog.fresh().addCallback(lambda _: self._check(conn, request))

    def _after_change(self, conn: ClientConnection, statement: Statement) -> bool:
        """Whether ``statement`` comes after a change to the catalog that a load will show (this
        session's or another's, committed, not read yet), and may read or write rows: judged on
        the catalog before the change, a view replaced to return a masked column would pass
        unmasked. DDL, transaction control and the like read nothing and need not wait."""
        if conn.catalog_redefined:
            return False  # its own change is not committed: a load cannot see it yet (judged stale)
        if not conn.catalog_unread and not self._live.redefining:
            return False
        return any(lineage.outputs is not None or lineage.reads != frozenset() or lineage.defines
                   for lineage in statement.lineage)

    def _context(self, conn: ClientConnection, request: StatementRequest):
        """What ``request``'s text means in: the newest catalog, the session's search_path, the
        lexer settings it was read under. (Each ``with_`` only when it changes something: on
        every statement, and nearly always the session's own context.)"""
        state: ConnectionState = conn
        context = state.context
        catalog = self._live.current
        if catalog is not context.catalog:  # loaded again: the session's statements are read on it from now on
            if context.provisional and not self._live.pending:
                state.sql_context = context = shared(context.settled(catalog))
            else:
                state.sql_context = context = shared(context.with_catalog(catalog))
        lexer = request.lexer
        if lexer is not context.lexer:
            context = context.with_lexer(lexer)
        stale = catalog_unread_of(state)
        if stale is not context.stale:
            context = context.with_stale(stale)
        return context

    def _check(self, conn: ClientConnection, request: StatementRequest, statement: Statement | None = None):
        """The core's limits, then the plugins' verdict, enforced. (`decide` has this without
        limits and shadow rules inline: a change here belongs there too.)"""
        if statement is None:
            statement = self.statements.get(request.sql, self._context(conn, request))
        if request.param_types:
            refusal = self._declared_types(conn, request)
            if refusal is not None:
                return self._refused(conn, request, statement, refusal)
        declare_types(conn.session, request.sql, request.declared_types)
        if conn.shadow is not None:  # a path of its own: a session without shadow pays one test
            return self._check_shadowed(conn, request, statement)
        limits = conn.limits
        if limits.any:  # the core's own limits come first: no plugin, no approver, can lift them
            refused = core_limits.refusal(statement.analysis, limits)
            if refused is not None:
                return self.recorded(conn, request, statement, refused, Refusal.from_verdict(refused))
        verdict = self.plugins.check(statement, conn.session) if self._flags.checks else _unchecked(conn)
        if isinstance(verdict, Verdict):
            return self._enforce(verdict, statement, conn, request)
        return verdict.addCallback(self._enforce, statement, conn, request)

    def _check_shadowed(self, conn: ClientConnection, request: StatementRequest, statement: Statement):
        """`_check` for a session with shadow rules: the enforced verdict first, as `_check` makes
        it, then the shadow ones (`pgwarden.shadow`), which only go into its record."""
        shadow = conn.shadow
        assert shadow is not None
        limits = conn.limits
        if limits.any:
            refused = core_limits.refusal(statement.analysis, limits)
            if refused is not None:
                return self._shadowed(refused, shadow.evaluate(self.plugins, statement),
                                      lambda v, found: self.recorded(conn, request, statement, v,
                                                                     Refusal.from_verdict(v), found))
        verdict = self.plugins.check(statement, conn.session) if self._flags.checks else _unchecked(conn)
        return self._shadowed(verdict, shadow.evaluate(self.plugins, statement),
                              lambda v, found: self._enforce(v, statement, conn, request, found))

    @staticmethod
    def _shadowed(verdict, found, then: Callable[[Verdict, list | None], object]) -> object:
        """``then(verdict, shadow entries)`` once both are there (either may be a Deferred)."""
        if isinstance(verdict, Verdict) and not isinstance(found, Deferred):
            return then(verdict, found)
        return gatherResults([verdict if isinstance(verdict, Deferred) else succeed(verdict),
                              found if isinstance(found, Deferred) else succeed(found)]).addCallback(
            lambda both: then(both[0], both[1]))

    def _declared_types(self, conn: ClientConnection, request: StatementRequest) -> Refusal | None:
        """A Parse that declares its parameters' types has every value bound to them converted by
        the server before anything runs: a domain's CHECK, a row type's fields, an array's
        elements. Each type of the database's own is judged as the cast it is (``SELECT
        NULL::type``), by the session's policies; one the catalog does not know is refused."""
        context = self._context(conn, request)
        catalog = context.catalog
        for position, oid in enumerate(request.param_types, 1):
            if oid < FIRST_NORMAL_OID:
                continue
            facts = catalog.type(oid)
            if facts is None:
                return Refusal(
                    "42501", f"pgwarden: blocked: parameter ${position} is declared of a type pgwarden does not "
                             f"know (OID {oid})",
                    "The server converts each value bound to a parameter to its declared type, which may run "
                    "the type's own functions (a domain's CHECK, a row type's fields).",
                    "Leave the parameter's type to the server (OID 0), or cast it in the statement's text.")
            name = f"{_quoted(facts.schema)}.{_quoted(facts.name)}"
            verdict = self.plugins.check(self.statements.get(f"SELECT NULL::{name}", context), conn.session)
            if not isinstance(verdict, Verdict) or verdict.action != "allow":
                why = verdict.reason if isinstance(verdict, Verdict) and verdict.reason else "its conversion"
                return Refusal(
                    "42501", f"pgwarden: blocked: parameter ${position} is declared of type {facts.schema}."
                             f"{facts.name}, and converting a value to it is refused: {why}",
                    "The server converts each value bound to a parameter to its declared type before the "
                    "statement runs (a domain's CHECK, a row type's fields): judged as the cast it is.",
                    None)
        return None

    def _refused(self, conn: ClientConnection, request: StatementRequest, statement: Statement | None,
                 refusal: Refusal):
        """A refusal of the core's own (not a policy's), recorded like a blocked statement."""
        verdict = Verdict.block(refusal.message.removeprefix("pgwarden: blocked: "), refusal.hint)
        return self.recorded(conn, request, statement, verdict, refusal)

    def recorded(self, conn: ClientConnection, request: StatementRequest, statement: Statement | None,
                 verdict: Verdict, outcome: object,
                 shadow: list | None = None):
        """``outcome`` once the statement's record is on its way; a refusal if it cannot be.
        ``shadow``: the statement's shadow verdicts (`pgwarden.shadow`), recorded beside it."""
        return self._recorded(conn, request, statement, verdict, verdict.action, outcome, shadow)

    def _recorded(self, conn: ClientConnection, request: StatementRequest, statement: Statement | None,
                  verdict: Verdict, action: str, outcome: object, shadow: list | None):
        """`recorded`, ``verdict.action`` given (`_enforce` has read it: compiled, a read of a
        Python object's attribute less per statement)."""
        # Kinds only when something needs the analysis (a check, or the record, which carries
        # the kinds): parsing for a metric alone would cost more than relaying the statement.
        recorder = self.recorder
        active = recorder.active  # (read once: a compiled class's attribute, read from Python)
        if statement is None:
            analysis = None
        else:
            analysis = statement.analysed  # (read first: the property is a call)
            if analysis is None and active:
                analysis = statement.analysis
        self._count.count(action, analysis.kinds if analysis is not None else ("unanalysed",))
        if shadow:
            self.stats.shadow(shadow)
        if not active:
            return outcome
        if recorder.failure is not None and not recorder.retry():
            verdict, outcome = Verdict.block("records cannot be written"), _RECORDING_FAILED
        try:
            recorder.statement(conn, request, statement, verdict,
                               waits=outcome is ALLOW or outcome is BIND_DECIDES or isinstance(outcome, CountRows),
                               shadow=shadow)
        except RecordingFailed:
            return _RECORDING_FAILED
        return outcome

    def ran(self, conn: ClientConnection, statement: Statement | None) -> None:
        """``statement`` goes to the server: what it does to the session's search_path, and to
        the catalog (DDL), is taken into account for the statements after it. (`_enforce` calls
        it only when one of its three tests holds: a test added here needs one there.)"""
        if statement is None:
            return
        analysis = statement.analysed
        if analysis is None:
            return
        state: ConnectionState = conn
        masks = state.masks
        if masks is not None and not analysis.kinds.isdisjoint(_NAMING_KINDS):  # (the only ones it looks at)
            masks.ran(statement)
        if analysis.changes_context:
            before = state.context
            after = before.after(analysis)
            if after is not before:
                state.sql_context = shared(after)
                relay = state.relay
                if relay is not None:
                    # The server plans a named statement again under the new search_path at its
                    # next Bind: so is it decided again.
                    relay.policy_generation += 1
                    # ... and may undo the change (an error, a ROLLBACK): see `Relay.context_unsettled`
                    relay.context_unsettled = True
                    # A portal keeps the plan of its Bind, made under the path before: its rows
                    # would be read on the new one. Forgotten: an Execute of it is refused.
                    relay.state.portals.clear()
        if analysis.changes_catalog:
            state.catalog_changed = True
            if analysis.redefines:
                state.catalog_redefined = True
                if masks is not None:
                    # A cursor declared before runs its query later (a WITH HOLD one at COMMIT),
                    # with the definitions of then: its rows are not what its DECLARE traced
                    masks.redefined()
            relay = state.relay
            if relay is not None:
                # The server plans a named statement again after DDL (a view it reads replaced):
                # so is it decided again at its next Bind, on the catalog that shows the change.
                relay.policy_generation += 1

    def _runs_as(self, statement: Statement, conn: ClientConnection, request: StatementRequest):
        """How an allowed statement runs: ALLOW, CountRows (its rows written counted by the
        server), or a Verdict refusing it when its writes cannot be counted."""
        state: ConnectionState = conn
        if state.rows_written is None:
            return ALLOW
        limits = state.limits
        syntax = self.statements.syntax_for(statement.sql, statement.context.lexer)  # type: ignore[union-attr]  # the cache's have one
        return core_limits.counting(statement.analysis, syntax.statements, limits, request.protocol) or ALLOW

    def _enforce(self, verdict: Verdict, statement: Statement, conn: ClientConnection, request: StatementRequest,
                 shadow: list | None = None):
        runs: object = ALLOW  # (object: compiled, a variable of the marker's type refuses CountRows)
        state: ConnectionState = conn
        # (the checkers' shared answer when no plugin had one: its action known, not read)
        action = "allow" if verdict is _ALLOWED else verdict.action
        if action != "block" and state.rows_written is not None:
            runs = self._runs_as(statement, conn, request)
            if isinstance(runs, Verdict):
                verdict = runs
                action = verdict.action
        if action == "allow":
            analysis = statement.analysed
            # (one attribute for the four flags: `Analysis.effects`)
            effects = analysis.effects if analysis is not None else 0
            changes_catalog = (effects & _CHANGES_CATALOG) != 0
            if changes_catalog and request.protocol == "extended" and request.bind is None:
                # A Parse does not change the catalog: its Bind does, maybe after a Sync (asyncpg
                # Syncs after Parse and Describe) whose ReadyForQuery would set a reload off that
                # may end before the change runs. Each Bind is decided, and `ran` marks the change
                # then: the reload after its transaction shows it. (Not here: the Bind would be
                # decided in what the statement does to the session once it has run, a DO's
                # search_path unknown, say.)
                request.decide_binds = True
            elif analysis is not None and ((effects & _RAN_TESTS) != 0 or (
                    (effects & _NAMES) != 0 and state.masks is not None)):
                self.ran(conn, statement)  # `ran`'s own three tests first: a call less per statement
            if analysis is not None and (effects & _MAY_CHANGE_SETTINGS) == 0:
                request.may_change_settings = False  # later pipelined text is read as this one was
            if (effects & _COPIES_IN) != 0:
                request.copy_in = True  # the relay holds what follows until the server says (`Relay`)
            return self._recorded(conn, request, statement, verdict, action, runs, shadow)
        if action == "block":
            return self._recorded(conn, request, statement, verdict, action, Refusal.from_verdict(verdict), shadow)
        # approve: a human decides; an extended statement at each Bind, with its parameters.
        analysis = statement.analysed
        if analysis is not None and (analysis.effects & _COPIES_IN) != 0:
            request.copy_in = True  # (once approved, what follows waits for the server, as when allowed)
        if request.protocol == "extended" and request.bind is None:
            return self._recorded(conn, request, statement, verdict, action, BIND_DECIDES, shadow)
        return self._approval(verdict, statement, conn, request, shadow, runs)

    def _approval(self, verdict: Verdict, statement: Statement, conn: ClientConnection, request: StatementRequest,
                  shadow: list | None, runs: object):
        """A human decides. (A method of its own: a lambda in `_enforce` would make its arguments
        closure cells, made at every call.)"""
        recorded = self.recorded if not shadow else functools.partial(self.recorded, shadow=shadow)
        return self.approvals.begin(conn, request, statement, verdict, runs, recorded,
                                    lambda: self.ran(conn, statement))


def _quoted(name: str) -> str:
    """``name`` as an SQL identifier, quoted (the server's own quote_ident, always quoting)."""
    return '"' + name.replace('"', '""') + '"'
