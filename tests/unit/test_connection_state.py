"""`ConnectionState`, `CatalogState` and `PluginFlags` (`pgwarden.proxy.state`,
`pgwarden.plugin_call`): the native bases whose fields each statement's decision reads
directly, compiled. What must hold, compiled or not: every field is set from the start (a
compiled read of an unset one raises), the copies of the session's limits and SQL context are
what those objects say after every write (a reload replaces the limits, a SET or a catalog load
the context), and the Python classes built on them behave as before."""

from __future__ import annotations

import pytest

from pgwarden.catalog import builtin_catalog
from pgwarden.limits import SessionLimits
from pgwarden.proxy.client import ClientConnection, SessionServices
from pgwarden.proxy.state import CatalogState, ConnectionState
from pgwarden.relay.counting import CountRows
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lexer import LexerSettings

#: every field `ConnectionState` declares (compiled, reading one never set raises AttributeError)
FIELDS = ("phase", "services", "session", "shadow", "untracked", "masks", "catalog_changed",
          "catalog_redefined", "catalog_ticket", "catalog_behind", "relay", "end_reason", "limits", "limits_any",
          "rows_written", "sql_context", "context", "context_catalog", "context_lexer", "context_stale")


def connection() -> ClientConnection:
    nothing = object()  # (the constructor keeps its collaborators; these tests reach none)
    return ClientConnection(SessionServices(
        host=nothing, reactor=nothing, authenticator=nothing, decider=nothing, events=nothing,  # type: ignore[arg-type]
        relays=nothing, catalog=nothing, canceller=nothing, turns=nothing, stats=nothing))  # type: ignore[arg-type]


def test_a_new_connection_has_every_field_of_its_state():
    conn = connection()
    assert isinstance(conn, ConnectionState)
    values = {name: getattr(conn, name) for name in FIELDS}
    assert values["phase"] == "login" and values["session"] is None and values["relay"] is None
    assert values["limits"] == SessionLimits() and not values["limits_any"] and values["rows_written"] is None
    assert values["context"] is None and values["context_stale"] is False
    assert (values["untracked"], values["catalog_changed"], values["catalog_redefined"],
            values["catalog_ticket"], values["catalog_behind"]) == (False, False, False, 0, False)


def test_the_copies_of_the_limits_follow_every_write():
    conn = connection()
    capped = SessionLimits(rows_written=CountRows(5, "p", "cap"))
    conn.limits = capped  # (what a login, and a reload's `policies_replaced`, do)
    assert conn.limits is capped and conn.limits_any and conn.rows_written is capped.rows_written
    timed = SessionLimits(timeout_ms=1000)
    conn.limits = timed
    assert conn.limits is timed and conn.limits_any and conn.rows_written is None
    conn.limits = SessionLimits()
    assert not conn.limits_any and conn.rows_written is None


def test_the_copies_of_the_sql_context_follow_every_write():
    conn = connection()
    context = SqlContext(builtin_catalog())
    conn.sql_context = context
    assert conn.sql_context is context and conn.context is context
    assert conn.context_catalog is context.catalog and conn.context_lexer is context.lexer
    assert conn.context_stale is False
    other = SqlContext(builtin_catalog(), lexer=LexerSettings(standard_conforming_strings=False), stale=True)
    conn.sql_context = other
    assert conn.context is other and conn.context_lexer is other.lexer and conn.context_stale is True
    assert conn.context_lexer is not context.lexer


def test_a_catalog_source_has_its_decision_fields_from_the_start():
    catalog = builtin_catalog()
    source = CatalogState(catalog)
    assert source.current is catalog and source.pending is False and source.redefining is False


@pytest.mark.parametrize("name", ["pending", "redefining"])
def test_the_fixed_catalog_source_says_nothing_is_pending(name):
    from pgwarden.app import _Fixed

    fixed = _Fixed(builtin_catalog())
    assert isinstance(fixed, CatalogState) and getattr(fixed, name) is False


def test_pgwarden_imports_without_mypy_extensions():
    # (a build requirement, not a run-time one: the native bases' decorator must not need it,
    # compiled or pure: the environment says which this process, and so the child, runs)
    import subprocess
    import sys

    code = ("import sys; sys.modules['mypy_extensions'] = None\n"
            "import pgwarden.app, pgwarden.proxy.client\n"
            "from pgwarden.proxy.client import ClientConnection\n"
            "from pgwarden.proxy.state import ConnectionState\n"
            "assert issubclass(ClientConnection, ConnectionState)\n"
            "from pgwarden.proxy.loop import LoopState\n"
            "from pgwarden.proxy.reactor import PgwardenReactor\n"
            "assert issubclass(PgwardenReactor, LoopState)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
