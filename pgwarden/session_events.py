"""A session's life as the records, the plugins and the metrics see it, and the relay it gets.

What the `Application` used to do for each connection, kept apart so that a connection sees
only this (as `SessionObserver` and `RelayFactory`, see `pgwarden.proxy.client`): the
recorder (the session's records, its statements' results), the plugin host (the session
hooks, result masks) and the statistics. The relay a session gets is built here because
every listener it is given (masks, completions, the execute gate) is one of these three.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgwarden.completion import Completed, ExecuteGate
from pgwarden.recorder import RecordingFailed
from pgwarden.relay.engine import Decider, Relay, SessionState
from pgwarden.results import SessionMasks
from pgwarden.session import SessionSummary, protocol_took_name
from pgwarden.sql.context import shared

if TYPE_CHECKING:
    from pgwarden.metrics import Stats
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.client import CatalogSource, ClientConnection
    from pgwarden.recorder import Recorder
    from pgwarden.relay.engine import CompletionListener
    from pgwarden.sql.cache import StatementCache


class SessionEvents:
    """Records, hooks and metrics of sessions: opened, ended, refused at login."""

    def __init__(self, plugins: PluginHost, recorder: Recorder, stats: Stats, catalog: CatalogSource,
                 statements: StatementCache) -> None:
        self.plugins = plugins
        self.recorder = recorder
        self.stats = stats
        #: what masking resolves a result's columns with (`pgwarden.results.SessionMasks`)
        self.catalog = catalog
        self.statements = statements

    def session_started(self, conn: ClientConnection) -> None:
        if self.recorder.active:
            self.recorder.session_start(conn)  # a failure here refuses the session's statements
        self.plugins.notify("pgwarden_session_start", session=conn.session)

    def session_ended(self, conn: ClientConnection, reason: str) -> None:
        log_ = conn.log
        summary = SessionSummary(log_.statements, log_.refused, log_.rows, log_.bytes, reason)
        if self.recorder.active:
            try:
                self.recorder.session_end(conn, reason)
            except RecordingFailed:
                pass  # already logged; the session is over either way
        self.plugins.notify("pgwarden_session_end", session=conn.session, summary=summary)

    def auth_failed(self, conn: ClientConnection, reason: str, sqlstate: str) -> None:
        self.stats.auth_failure(reason)
        if self.recorder.active:
            try:
                self.recorder.auth_failure(conn, reason, sqlstate)
            except RecordingFailed:
                pass

    # ------------------------------------------------------------------ the relay

    def relay(self, conn: ClientConnection, decide: Decider, parameters: dict[str, str],
              max_message_size: int) -> Relay:
        """The relay of ``conn``'s session, opened with the server's ``parameters``; its masking
        listeners (``conn.masks``) when a plugin masks results."""
        conn.masks = masks = self.masks_for(conn)
        relay = Relay(
            decide,
            state=SessionState(parameters=parameters),
            max_message_size=max_message_size,
            on_shape=masks.shape if masks is not None and masks.wants_shapes() else None,
            on_copy=masks.copy if masks is not None else None,
            on_message=masks.message if masks is not None and self.plugins.masks_messages else None,
            on_complete=self.completion_listener(conn),
            sample_rows=self.recorder.sample_rows,
            sample_bytes=self.recorder.sample_bytes,
            execute_gate=self.execute_gate(),
        )
        relay.on_context_undone = functools.partial(_context_undone, conn)
        relay.on_name_taken = functools.partial(_name_taken, conn, masks)
        if masks is not None:
            relay.on_failed = masks.failed
        return relay

    def completion_listener(self, conn: ClientConnection) -> CompletionListener:
        """The relay's ``on_complete``: the overhead histogram, and a result record if anyone records."""
        return Completed(self.stats, self.recorder, conn)

    def execute_gate(self) -> Callable[[], str | None]:
        """For the relay: no Execute of an earlier Parse while records cannot be written."""
        return ExecuteGate(self.recorder)

    def masks_for(self, conn: ClientConnection) -> SessionMasks | None:
        """The relay's masking listeners for ``conn`` (`SessionMasks`: ``shape``, ``copy``,
        ``message``); None, and rows pass untouched, unless a plugin masks results."""
        if not self.plugins.masks:
            return None
        return SessionMasks(self.plugins, self.stats, self.catalog, self.statements, conn)


def _context_undone(conn: ClientConnection) -> None:
    """The server undid a change of ``conn``'s search_path (its transaction rolled back, an error,
    SET LOCAL's end): what the path is now pgwarden cannot tell, so it is taken as uncertain (an
    unqualified name may be any schema's it may have been), and named statements are decided again."""
    conn.sql_context = shared(conn.context.uncertain())
    if conn.relay is not None:
        conn.relay.policy_generation += 1


def _name_taken(conn: ClientConnection, masks, kind: str, name: str) -> None:
    """The relay's ``on_name_taken``: the session's plugins learn that the protocol took an
    SQL-level name (`pgwarden.session.protocol_took_name`), masking forgets what it knew of it."""
    protocol_took_name(conn.session, kind, name)
    if masks is not None:
        masks.forget(kind, name)
