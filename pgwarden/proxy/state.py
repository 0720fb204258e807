"""What each statement's decision and the pump read and write of a session and of the catalog
source, as native classes.

`ClientConnection` is a Twisted Protocol, a Python class, whose attributes a compiled module
reads through CPython's generic attribute lookup (~160 instructions a read: the type's MRO, the
descriptor, the instance's dictionary). `ConnectionState` is compiled by mypyc (this module is in
`pgwarden.compiled.MODULES`) and allows interpreted subclasses, so it can be `ClientConnection`'s
first base: the attributes below live in the object's C struct, a compiled function whose
variable is typed `ConnectionState` reads and writes them directly, and Python code reaches them
through the class's descriptors as it reached the slots they replace. Pure Python
(``PGWARDEN_PURE_PYTHON=1``), this is a plain class and the attributes are ordinary ones.

Compiled, an attribute of a builtin or native type (``str``, ``bool``, ``int``, `Relay`) refuses
a value of another type with a TypeError: each is declared as the values it takes. Attributes
of a Python class's type (`Session`, `SessionLimits`, `SqlContext`...) are not checked by mypyc.
Every one is set here, so none is ever missing (a compiled read of an unset one would raise).

Some fields are copies, for the decision, of what an object the session holds says: each is
written by the setter of the attribute that holds that object (`ConnectionState.limits`,
`ConnectionState.sql_context`), and the object is frozen, so a copy never differs from what it
copies; no other code writes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgwarden.native_bases import mypyc_attr
from pgwarden.relay.engine import Relay

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog
    from pgwarden.limits import SessionLimits
    from pgwarden.proxy.client import SessionServices
    from pgwarden.recorder import SessionLog
    from pgwarden.relay.counting import CountRows
    from pgwarden.results import SessionMasks
    from pgwarden.session import Session
    from pgwarden.shadow import Shadow
    from pgwarden.sql.context import LexerSettings, SqlContext


@mypyc_attr(allow_interpreted_subclasses=True)
class ConnectionState:
    """A session's state that its statements' decisions and its pump read (`ClientConnection`'s base)."""

    #: login (`ClientLogin` has its own states) → relay → closed
    phase: str
    #: the session's records' state (its id, sequence, totals), read by the recorder for every
    #: record; set by `ClientConnection` right after this class's ``__init__`` (never missing
    #: when read), a field here so that the compiled recorder reads it natively
    log: SessionLog
    #: everything the connection works with (`SessionServices`)
    services: SessionServices
    #: set once the login is over (None before it: only the relay phase reads it, and the life
    #: cycle, which checks it against None)
    session: Session
    #: this session's shadow rules and policies (`pgwarden.shadow`); None: it has none
    shadow: Shadow | None
    #: statements went upstream unread (nothing checked, limited or recorded them): what
    #: they did to the search_path and the catalog is unknown (`Decisions.decide`)
    untracked: bool
    # `limits` (a property): what the core enforces whatever the plugins say, and its copies
    _limits: SessionLimits
    #: ``limits.any``, copied by `limits`'s setter
    limits_any: bool
    #: ``limits.rows_written``, copied by `limits`'s setter
    rows_written: CountRows | None
    # `sql_context` (a property, which sets the four): what statements are analysed against
    #: ``sql_context`` itself, for compiled readers (a property's getter is a Python-level call
    #: from compiled code: an interpreted subclass could override it)
    context: SqlContext
    #: ``sql_context.catalog``, copied by `sql_context`'s setter
    context_catalog: Catalog
    #: ``sql_context.lexer``, copied by `sql_context`'s setter
    context_lexer: LexerSettings
    #: ``sql_context.stale``, copied by `sql_context`'s setter
    context_stale: bool
    #: masking of this session's results and messages (None: no plugin masks), set with its relay
    masks: SessionMasks | None
    #: a statement that may change the catalog went upstream; its transaction has not ended yet
    catalog_changed: bool
    #: ... and it may define again what lineage goes through (DDL, DO, CALL, unknown code)
    catalog_redefined: bool
    #: the catalog's ticket for this session's last such change (`CatalogSource.has_read`)
    catalog_ticket: int
    #: another session changed what lineage goes through while this session's transaction was
    #: open: until it ends, the server may run the definitions before the change (its cached
    #: plans and function bodies), so the session's statements are judged as after its own
    #: uncommitted DDL (`catalog_unread_of`; set by `Application._decide_binds_again`)
    catalog_behind: bool
    #: the session's relay, once it relays (None before, and once both connections are over)
    relay: Relay | None
    #: why the session ended, for its session_end record
    end_reason: str | None

    def __init__(self, services: SessionServices, limits: SessionLimits) -> None:
        self.phase = "login"
        self.services = services
        self.session = None  # type: ignore[assignment]  # (mypyc checks no Python class's type)
        self.limits = limits
        self.shadow = None
        self.untracked = False
        # no context before the relay phase (which sets one): none of its copies either
        self.context = None  # type: ignore[assignment]
        self.context_catalog = None  # type: ignore[assignment]
        self.context_lexer = None  # type: ignore[assignment]
        self.context_stale = False
        self.masks = None
        self.catalog_changed = False
        self.catalog_redefined = False
        self.catalog_ticket = 0
        self.catalog_behind = False
        self.relay = None
        self.end_reason = None

    @property
    def limits(self) -> SessionLimits:
        """What the core enforces in this session whatever the plugins say (see `pgwarden.limits`)."""
        return self._limits

    @limits.setter
    def limits(self, limits: SessionLimits) -> None:
        # (SessionLimits is frozen: the copies stay what it says until it is replaced, here)
        self._limits = limits
        self.limits_any = limits.any
        self.rows_written = limits.rows_written

    @property
    def sql_context(self) -> SqlContext:
        """What statements of this session are analysed against (catalog, search_path, lexer
        settings); set with the relay (None before: only the relay phase reads it)."""
        return self.context

    @sql_context.setter
    def sql_context(self, context: SqlContext) -> None:
        # (SqlContext is frozen: the copies stay what it says until it is replaced, here)
        self.context = context
        self.context_catalog = context.catalog
        self.context_lexer = context.lexer
        self.context_stale = context.stale


def catalog_unread_of(conn: ConnectionState) -> bool:
    """`ClientConnection.catalog_unread`'s getter, compiled: the decisions ask it of every statement."""
    if conn.catalog_redefined:
        return True
    if conn.catalog_behind:
        relay = conn.relay
        if relay is None or relay.state.transaction_status != "I":
            return True
        conn.catalog_behind = False  # (its transaction ended: the next one reads the change)
    ticket = conn.catalog_ticket  # 0: nothing to read (every source's has_read says so, without a call)
    return ticket > 0 and not conn.services.catalog.has_read(ticket)


@mypyc_attr(allow_interpreted_subclasses=True)
class CatalogState:
    """What each statement's decision reads of the catalog source (`LiveCatalog`'s first base,
    and the fixed source's), as fields a compiled caller reads directly."""

    #: the facts to decide with now
    current: Catalog
    #: whether a load is awaited: the first one, or one that catches up with a DDL seen
    pending: bool
    #: whether a change that may define again what lineage goes through (by any session, or
    #: seen by the change check) waits for a load to read it
    redefining: bool

    def __init__(self, current: Catalog) -> None:
        self.current = current
        self.pending = False
        self.redefining = False
