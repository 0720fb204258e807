"""What each statement's decision and the pump read and write of a session, as a native class.

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from pgwarden.relay.engine import Relay

if TYPE_CHECKING:
    from pgwarden.limits import SessionLimits
    from pgwarden.proxy.client import SessionServices
    from pgwarden.results import SessionMasks
    from pgwarden.session import Session
    from pgwarden.shadow import Shadow
    from pgwarden.sql.context import SqlContext


@mypyc_attr(allow_interpreted_subclasses=True)
class ConnectionState:
    """A session's state that its statements' decisions and its pump read (`ClientConnection`'s base)."""

    #: login (`ClientLogin` has its own states) → relay → closed
    phase: str
    #: everything the connection works with (`SessionServices`)
    services: SessionServices
    #: set once the login is over (None before it: only the relay phase reads it, and the life
    #: cycle, which checks it against None)
    session: Session
    #: what the core enforces in this session whatever the plugins say (see `pgwarden.limits`)
    limits: SessionLimits
    #: this session's shadow rules and policies (`pgwarden.shadow`); None: it has none
    shadow: Shadow | None
    #: statements went upstream unread (nothing checked, limited or recorded them): what
    #: they did to the search_path and the catalog is unknown (`Decisions.decide`)
    untracked: bool
    #: what statements of this session are analysed against (catalog, search_path); set with the
    #: relay (None before: only the relay phase reads it)
    sql_context: SqlContext
    #: masking of this session's results and messages (None: no plugin masks), set with its relay
    masks: SessionMasks | None
    #: a statement that may change the catalog went upstream; its transaction has not ended yet
    catalog_changed: bool
    #: ... and it may define again what lineage goes through (DDL, DO, CALL, unknown code)
    catalog_redefined: bool
    #: the catalog's ticket for this session's last such change (`CatalogSource.has_read`)
    catalog_ticket: int
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
        self.sql_context = None  # type: ignore[assignment]
        self.masks = None
        self.catalog_changed = False
        self.catalog_redefined = False
        self.catalog_ticket = 0
        self.relay = None
        self.end_reason = None
