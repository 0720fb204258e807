"""What plugins see of one agent session, and a typed place for their own state.

Plugins keep per-session state in `Session.store` under a `StoreKey` they own
(the idea of pytest's stash): no attributes stuck onto the session, no clashes
between plugins, and a type checker knows what each key holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import attrs

from pgwarden.identity import Identity

if TYPE_CHECKING:
    from pgwarden.catalog.planner import ServerPlans
    from pgwarden.policy.model import Policy

T = TypeVar("T")
D = TypeVar("D")


class StoreKey(Generic[T]):
    """A key of `Store`; create one per kind of state, at module level."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StoreKey({self.name!r})"


class Store:
    """A mapping from `StoreKey[T]` to values of type T."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StoreKey[Any], object] = {}

    def __setitem__(self, key: StoreKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StoreKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StoreKey[T], default: D) -> T | D:
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: StoreKey[T], default: T) -> T:
        if key not in self._data:
            self._data[key] = default
        return self[key]

    def __contains__(self, key: StoreKey[Any]) -> bool:
        return key in self._data

    def __delitem__(self, key: StoreKey[Any]) -> None:
        del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


@attrs.frozen(eq=False)
class Session:
    """One agent connection as plugins see it: who, to which database, under which policies.

    Frozen: a plugin keeps its own state in ``store``. The core replaces ``policies``
    when a reload changes them (`replace_policies`), so a plugin reads them afresh
    at each statement.
    """

    id: str
    identity: Identity
    database: str
    application_name: str | None = None
    client_address: str | None = None
    #: the policies that apply to this identity (kept current across reloads)
    policies: tuple[Policy, ...] = ()
    #: per-plugin state, keyed by each plugin's own StoreKey
    store: Store = attrs.field(factory=Store, repr=False)


#: Set by the core when one of the session's statements went to the server with no plugin's
#: ``pgwarden_check`` called on it (nothing checked the session then, or not even parsed it):
#: a plugin that remembers what the session did (the SQL-level statements it PREPAREd, say)
#: has missed something, and takes it (and clears it) at its next check.
UNCHECKED = StoreKey[bool]("core.unchecked")


def went_unchecked(session: Session) -> None:
    """One of ``session``'s statements goes to the server unseen by the plugins' checks."""
    session.store[UNCHECKED] = True


#: The names the session's protocol-level Parses took (for the session's life: a ``DEALLOCATE``
#: pgwarden judged may not have run). SQL's ``EXECUTE name`` runs a statement the protocol
#: prepared under that name as well as one SQL ``PREPARE``d, and the plugins judged that Parse as
#: a statement, not as the body of a name: a plugin that judges an ``EXECUTE`` by the bodies it
#: saw ``PREPARE``d takes such a name as unknown.
PROTOCOL_PREPARED = StoreKey["set[str]"]("core.protocol_prepared")


#: The server's plans of statements (`pgwarden.catalog.planner.ServerPlans`), set by the core at
#: the session's start when pgwarden reads the live catalog: ``plan(sql, search_path,
#: standard_strings)`` gives a Deferred of `PlanUses` (the base columns the server's plan reads
#: and tests), `PlanRefused` or `PlanUnavailable`. Masking checks lineage against it.
SERVER_PLANS: StoreKey[ServerPlans] = StoreKey("core.server_plans")


#: The parameter types the client declared in the Parse of the statement being checked:
#: ``(its text, the type OIDs)``, 0 for a type left to the server. Set by the core before it asks
#: the plugins about an extended-protocol statement that declares types, removed before one that
#: does not; a plugin reads it while it is asked, for the statement whose text it names (the
#: server types ``$n`` by them: ``WHERE id = $1 OR $2 IS NULL`` has no plan without them).
DECLARED_TYPES = StoreKey["tuple[str, tuple[int, ...]]"]("core.declared_types")


def declare_types(session: Session, sql: str, types: tuple[int, ...]) -> None:
    """Keeps `DECLARED_TYPES` true for the statement about to be checked (a Parse with types, or
    anything else: then none)."""
    store = session.store
    if types:
        store[DECLARED_TYPES] = (sql, types)
    elif DECLARED_TYPES in store:
        del store[DECLARED_TYPES]


def declared_types(session: Session, sql: str) -> tuple[int, ...]:
    """The types the client declared for ``sql``'s parameters in the Parse being checked, or ()."""
    found = session.store.get(DECLARED_TYPES, None)
    return found[1] if found is not None and found[0] == sql else ()


def protocol_took_name(session: Session, kind: str, name: str) -> None:
    """The relay's ``on_name_taken``: a protocol message took an SQL-level name ("prepared", or
    "cursor" for a portal). Only prepared statements' names are kept (`PROTOCOL_PREPARED`)."""
    if kind == "prepared":
        taken = session.store.get(PROTOCOL_PREPARED, None)
        if taken is None:
            taken = session.store[PROTOCOL_PREPARED] = set()
        if len(taken) < 10_000:
            taken.add(name)
        else:  # a client that names ever more statements: every name is in doubt
            session.store[UNCHECKED] = True


#: The SQL cursors of the session declared before a change of what lineage goes through (the
#: session's DDL, DO or CALL, or another session's change through pgwarden, or another client's the
#: catalog's check saw), or whose later DECLARE failed: the server runs a cursor's query when it is
#: fetched (a WITH HOLD one's at its COMMIT), on the definitions of then, while the plugins judged
#: it at its DECLARE. Kept by the core (`pgwarden.results.SessionMasks`); a plugin that judges a
#: cursor's query at its DECLARE takes a FETCH or MOVE of such a name as of a query it does not
#: know (red team fifteen: ``DECLARE c ... WHERE f(1) LIKE '8%'`` with ``f`` harmless, ``f``
#: replaced to return the SSN, then ``FETCH ALL FROM c`` answered the guess by its rows).
STALE_CURSORS = StoreKey["set[str]"]("core.stale_cursors")


def cursors_stale(session: Session, names: list[str]) -> None:
    """The cursors ``names`` may run other definitions than their DECLARE was judged on."""
    if names:
        stale = session.store.get(STALE_CURSORS, None)
        if stale is None:
            stale = session.store[STALE_CURSORS] = set()
        stale.update(names)


def cursor_renewed(session: Session, name: str) -> None:
    """``name`` was declared again, or closed (``*``: every cursor was)."""
    stale = session.store.get(STALE_CURSORS, None)
    if stale:
        if name == "*":
            stale.clear()
        else:
            stale.discard(name)


def cursor_stale(session: Session, name: str) -> bool:
    stale = session.store.get(STALE_CURSORS, None)
    return bool(stale) and name in stale  # type: ignore[operator]


def replace_policies(session: Session, policies: tuple[Policy, ...]) -> None:
    """A reload changed what applies to ``session``: the core's one change to a live session."""
    object.__setattr__(session, "policies", policies)


@attrs.frozen
class SessionSummary:
    """What one session did, handed to ``pgwarden_session_end``."""

    statements: int
    refused: int
    rows: int
    bytes: int
    #: why it ended: ``client`` (Terminate or the client went away), ``shutdown``, ...
    reason: str
