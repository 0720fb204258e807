"""The relay's listeners for masking: each result, COPY TO STDOUT and error message of a session,
with the statement it belongs to, resolved and handed to the masking plugins.

The relay says which statement a result answers (its text and its index in a multi-statement
Query, a portal's prepared statement); this module finds that statement's lineage (through the
session's SQL-level prepared statements and cursors for EXECUTE and FETCH), resolves the
columns (`masking.resolve_shape`), asks the plugins, and gives the relay a transform of raw rows,
or None so that the rows go out as they came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from pgwarden.masking import COPY_REFUSAL, ResultShape, copy_options, copy_transform, resolve_shape, row_transform
from pgwarden.plugins import MaskingFailed
from pgwarden.session import cursor_renewed, cursors_stale
from pgwarden.sql.context import shared
from pgwarden.sql.lineage import NAMING_KINDS, Lineage, NamedLineage
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m
from pgwarden.wire.errors import ProtocolError

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.client import CatalogSource, ClientConnection
    from pgwarden.session import Session
    from pgwarden.sql.cache import StatementCache
    from pgwarden.sql.context import SqlContext
    from pgwarden.sql.lexer import LexerSettings
    from pgwarden.sql.statement import Statement

Origin = tuple[str | None, int]


class CopyRefused(Exception):
    """A COPY TO STDOUT whose masked columns pgwarden cannot rewrite (binary, custom delimiters)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class SessionMasks:
    """Masking for one session: the relay's ``on_shape``, ``on_copy`` and ``on_message``."""

    def __init__(self, plugins: PluginHost, stats: Stats, catalog: CatalogSource, statements: StatementCache,
                 conn: ClientConnection) -> None:
        self.plugins = plugins
        self.stats = stats
        self.catalog = catalog
        self.statements = statements
        self.conn = conn
        # Made once the session is logged in: it has these for as long as it relays.
        assert conn.session is not None
        self.session: Session = conn.session
        #: the session's SQL-level prepared statements and cursors (EXECUTE, FETCH), fed by `ran`
        self.named = NamedLineage()
        #: each SQL-level prepared statement's text, its index in it, and the context it was traced in
        self._prepared: dict[str, tuple[str, int, SqlContext]] = {}

    def ran(self, statement: Statement) -> None:
        """``statement`` goes to the server: what it prepares, declares or forgets is remembered.

        Only a statement of a kind that can name or forget something has its lineage traced
        here: with no masking rule asking for it, tracing every other statement (a new text
        for each constant) cost about a sixth of pgwarden's CPU per statement at one client."""
        analysis = statement.analysed
        if analysis is not None and not analysis.kinds & NAMING_KINDS:
            return
        for index, lineage in enumerate(statement.lineage):
            self.named.after(lineage)
            for kind, name, _ in lineage.defines:
                if kind == "cursor":
                    cursor_renewed(self.session, name)
            for kind, name in lineage.forgets:
                if kind == "cursor":
                    cursor_renewed(self.session, name)
                if kind == "prepared":
                    if name == "*":
                        self._prepared.clear()
                    else:
                        self._prepared.pop(name, None)
            if statement.context is not None:
                for kind, name, _ in lineage.defines:
                    if kind == "prepared":
                        self._prepared[name] = (statement.sql, index, statement.context)

    def redefined(self) -> None:
        """The session runs a statement that may define again what lineage goes through (DDL, DO,
        CALL, code pgwarden cannot see into): every SQL-level cursor declared before is opaque
        from now on (masked whole). The server runs a cursor's query when its rows are fetched,
        and a WITH HOLD cursor's whole at the COMMIT of its transaction, on the definitions of
        then: ``BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT f(i) ...`` with ``f()`` returning
        the name, ``f()`` replaced to return the SSN, ``COMMIT``, then ``FETCH ALL FROM c``
        returned the SSNs in clear, traced as its DECLARE saw them (red team three's open
        limit, closed in fifteen). Over-masks a WITH HOLD cursor an earlier transaction
        materialized (its rows are fixed already). Their names are stale (`STALE_CURSORS`): a
        FETCH or MOVE of one is refused where the query's conditions may test masked columns."""
        cursors_stale(self.session, self.named.names("cursor"))
        self.named.forget_all("cursor")
        relay = self.conn.relay
        if relay is not None and self.masking():
            # ... and its portals: one bound before runs its Bind's plan, and the bodies of the
            # functions it calls as they are at its Execute (``SELECT id FROM orders WHERE f(1)
            # LIKE '8%'`` bound with ``f`` harmless, ``f`` replaced in the same transaction to
            # return the SSN: the Execute answered the guess by its rows). Forgotten: an Execute
            # of one is refused; and SQL's FETCH of one by its name (``FETCH ALL FROM "P"``) is
            # a FETCH of a stale cursor.
            cursors_stale(self.session, [name for name in relay.state.portals if name])
            relay.state.portals.clear()

    def _retrace(self, name: str) -> None:
        """A prepared statement traced on another catalog than the one in use is traced again:
        the server plans it again after DDL (a view it reads replaced to return a masked column),
        and its old lineage would miss that. (A cursor's rows are planned once, at DECLARE.)"""
        known = self._prepared.get(name)
        catalog = self.catalog.current
        now = self.conn.sql_context
        if known is None or known[2].catalog is catalog and not known[2].stale and \
                (known[2].search_path, known[2].possible) == (now.search_path, now.possible):
            return
        sql, index, context = known
        context = context.with_catalog(catalog).with_stale(False)
        if (context.search_path, context.possible) != (now.search_path, now.possible):
            # the server plans it again under the session's search_path of now, not the PREPARE's
            context = shared(attrs.evolve(context, search_path=now.search_path, possible=now.possible))
        lineages = self.statements.lineage_for(sql, context)
        body = next((b for kind, n, b in (lineages[index].defines if index < len(lineages) else ())
                     if kind == "prepared" and n == name), None)
        if body is not None:
            self.named.define("prepared", name, body)
            self._prepared[name] = (sql, index, context)

    def failed(self, sql: str) -> None:
        """The relay's ``on_failed``: the server answered ``sql`` with an error, so what it and the
        statements after it in its string (skipped) were to name or forget did not happen, while
        `ran` took it as done: each such name is opaque from now on."""
        statement = self._statement(sql)
        if statement is None:
            return
        analysis = statement.analysed
        if analysis is not None and not analysis.kinds & NAMING_KINDS:
            return
        for lineage in statement.lineage:
            for kind, name, _ in lineage.defines:
                self.forget(kind, name)
                if kind == "cursor":  # (the name's cursor, if any, is the one before: judged as stale)
                    cursors_stale(self.session, [name])
            for kind, name in lineage.forgets:
                if name == "*":
                    self.named.forget_all(kind)
                    if kind == "prepared":
                        self._prepared.clear()
                else:
                    self.forget(kind, name)

    def forget(self, kind: str, name: str) -> None:
        """The relay's ``on_name_taken``: a protocol message took an SQL-level name over."""
        self.named.forget(kind, name)
        if kind == "prepared":
            self._prepared.pop(name, None)

    def _lexer(self) -> LexerSettings | None:
        relay = self.conn.relay
        return relay.lexer if relay is not None else None

    def _statement(self, sql: str | None) -> Statement | None:
        if sql is None:
            return None
        conn = self.conn
        context = conn.sql_context.with_catalog(self.catalog.current).with_lexer(self._lexer())
        return self.statements.get(sql, context)

    def _lineage(self, statement: Statement | None, index: int) -> Lineage | None:
        if statement is None:
            return None
        if self.conn.catalog_unread or getattr(self.catalog, "sessions_redefining", False):
            # This session changed the catalog (a view replaced, say) and the change is not read
            # yet (its transaction is open, or no load since succeeded): lineage from the catalog
            # as it was could miss a masked column. Unknown instead (masked whole) until it is read.
            # Likewise after another session's change through pgwarden: a statement decided before
            # it may run after it. Not after a change the catalog's check saw (another client's):
            # it committed up to check_s before it was seen, and a statement decided before that
            # is judged on the facts before it (the documented bound), its rows too; a named
            # statement run again after it is decided again at its Bind and waits for the load
            # (`Application._decide_binds_again`). (Masked whole, a driver's own query of the
            # catalog returned NULL type OIDs: asyncpg failed with "an integer is required".)
            return None
        lineages = statement.lineage
        if index >= len(lineages):
            return None
        lineage = lineages[index]
        if lineage.refers is not None and lineage.refers[0] == "prepared":
            self._retrace(lineage.refers[1])
        return self.named.resolve(lineage)

    def _masks(self, shape: ResultShape, statement: Statement | None) -> dict:
        try:
            return self.plugins.result_masks(shape, statement, self.session)
        except MaskingFailed as e:
            stats = self.stats.results_refused
            stats[e.plugin] = stats.get(e.plugin, 0) + 1
            raise

    def masking(self) -> bool:
        """Whether a plugin masks results under the session's policies as they are now."""
        return bool(self.plugins.maskers(self.session.policies).results)

    def wants_shapes(self) -> bool:
        """Whether `shape` can have anything to do in this session as its policies are now: a
        plugin masks under them, or shadow rules count what they would mask. (Asked again when
        a reload changes them; the relay asks `shape` of no result while it is False.)"""
        return self.masking() or self.conn.shadow is not None

    def shape(self, description: m.RowDescription, origin: Origin) -> Callable[[bytes], bytes] | None:
        if not self.wants_shapes():
            return None  # no plugin masks under these policies: nothing to resolve
        sql, index = origin
        statement = self._statement(sql)
        shape = resolve_shape(description, lambda: self._lineage(statement, index), self.catalog.current)
        masks = self._masks(shape, statement)
        transform = row_transform(description, masks) if masks else None
        shadow = self.conn.shadow
        if shadow is not None:  # what shadow mask rules would mask: counted, never applied
            return shadow.masked_rows(self.plugins, shape, statement, transform)
        return transform

    def copy(self, response: m.CopyOutResponse, origin: Origin) -> Callable[[bytes], bytes] | None:
        if not self.plugins.maskers(self.session.policies).results:
            return None
        sql, index = origin
        statement = self._statement(sql)
        lineage = self._lineage(statement, index)
        names = [o.name for o in lineage.outputs] if lineage is not None and lineage.outputs is not None \
            and len(lineage.outputs) == len(response.column_formats) else [f"column{i + 1}" for i in
                                                                   range(len(response.column_formats))]
        description = m.RowDescription(tuple(m.Column(name) for name in names))
        shape = resolve_shape(description, lambda: lineage, self.catalog.current, kind="copy")
        masks = self._masks(shape, statement)
        if not masks:
            return None
        options = copy_options(sql, index, self._lexer()) if sql is not None else None
        if response.format != 0 or options is None or options["format"] == "binary" or options["custom"]:
            raise CopyRefused(COPY_REFUSAL)
        transform = copy_transform(description, masks, csv=options["format"] == "csv")
        if not options["header"]:
            return transform
        first = [True]

        def after_header(raw: bytes) -> bytes:
            if first[0]:
                first[0] = False
                return raw
            return transform(raw)

        after_header.plan = transform.plan  # type: ignore[attr-defined]
        return after_header

    def message(self, raw: bytes, origin: Origin) -> bytes:
        """An ErrorResponse, NoticeResponse or NotificationResponse as the client may see it."""
        if not self.plugins.maskers(self.session.policies).messages:
            return raw
        statement = self._statement(origin[0])
        rewrites = self.plugins.message_masks(statement, self.session)
        if not rewrites:
            return raw
        if raw[0] == ord("A"):  # a notification: its payload, as a notice's message
            try:
                note = m.NotificationResponse.decode(raw[5:])
            except ProtocolError:
                return m.NotificationResponse(0, "", "").encode()
            fields: tuple[tuple[str, str], ...] = (("S", "NOTIFY"), ("V", "NOTIFY"), ("M", note.payload))
            for rewrite in rewrites:
                fields = rewrite(fields)
            payload = next((text for code, text in fields if code == "M"), "")
            return m.NotificationResponse(note.process_id, note.channel, payload).encode()
        cls = m.ErrorResponse if raw[0] == ord("E") else m.NoticeResponse
        try:
            message = cls.decode(raw[5:])
        except ProtocolError:
            return cls.build("ERROR" if cls is m.ErrorResponse else "NOTICE", "XX000",
                             "pgwarden: an unreadable message from the server was withheld").encode()
        fields = message.fields
        for rewrite in rewrites:
            fields = rewrite(fields)
        return cls(tuple(fields)).encode()
