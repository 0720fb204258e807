"""The control connection: pgwarden's own session to the upstream, reading the live catalog.

One `LiveCatalog` per pgwarden. It reads the catalog with pgwarden's upstream
credential over psycopg 3 (libpq: SCRAM, MD5, TLS exactly as any client), in a
worker thread so the reactor never waits on the database, and keeps the newest
`Catalog` in `current`:

- until the first load succeeds, and whenever the live facts are older than
  ``max_stale_s``, `current` is the shipped snapshot of the built-in catalog: a
  database's own functions, views and tables are then unknown, and what depends
  on them fails closed;
- a load runs at `start`, every ``ttl_s`` after the last one, and soon after
  `invalidate` (a DDL statement was seen); invalidations while a load is pending
  or running are coalesced into one more load;
- every ``check_s`` a cheap query asks whether the catalog tables that lineage and the
  analysis depend on have new row versions (`queries.CHANGES`): DDL by a client that
  does not go through pgwarden (a migration, an operator's psql) is read within about
  ``check_s`` plus a load's time instead of at the next TTL load;
- a failed load keeps the previous live facts (they stay in use until they are
  ``max_stale_s`` old) and is retried sooner than the TTL, backing off.

The password is read from ``upstream.password_file`` at each connection (so a
rotated Secret is used without a restart) and never appears in a status, a log
line or an exception this module lets out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from pgwarden.catalog import queries
from pgwarden.catalog.loader import LoadMemory, build_catalog, read_rows
from pgwarden.catalog.model import Catalog
from pgwarden.catalog.snapshot import stand_in_snapshot
from pgwarden.config import Upstream
from pgwarden.proxy.state import CatalogState

if TYPE_CHECKING:
    import psycopg


def _firing(done: defer.Deferred[None]) -> Callable[[object], object]:
    """A callback that fires ``done``, then passes the result on."""

    def fire(result: object) -> object:
        done.callback(None)
        return result

    return fire

log = Logger()

APPLICATION_NAME = "pgwarden catalog"


@attrs.frozen
class CatalogStatus:
    """Where `LiveCatalog.current` comes from and how the loads go, for /readyz and the logs.

    ``state``: loading (no load has finished yet), ok (the last load succeeded), failed
    (the last load failed: ``error`` says why, ``since`` when the failures began) or
    stopped. ``since`` and ``loaded_at`` are reactor times (seconds since the epoch);
    ``loaded_at`` is when the live facts in use were read, None while on the snapshot.
    """

    state: Literal["loading", "ok", "failed", "stopped"]
    since: float
    source: str
    error: str | None = None
    loaded_at: float | None = None

    def describe(self, now: float) -> str:
        """One line for a human: what is in use and why."""
        if self.loaded_at is not None:
            using = f"the live catalog read {now - self.loaded_at:.0f}s ago"
        else:
            using = f"the {self.source} (the database's own objects are unknown)"
        if self.state == "failed":
            return f"catalog: loads failing for {now - self.since:.0f}s ({self.error}); using {using}"
        return f"catalog: {self.state}; using {using}"


def connection_parameters(upstream: Upstream, timeout_s: float = 30.0) -> dict[str, Any]:
    """libpq parameters for pgwarden's own connection to ``upstream``, the password left out.

    Everything that decides where and how to connect is given, so that nothing of
    the environment (PGSSLMODE, ~/.pgpass, a GSSAPI ticket) changes it: the control
    connection goes where the sessions go, the way they go.
    """
    tls = upstream.tls
    if tls.mode in ("verify-ca", "verify-full") and not tls.ca_file:
        raise ValueError(f"upstream.tls.mode {tls.mode} needs upstream.tls.ca_file")
    params: dict[str, Any] = {
        "host": upstream.host,
        "port": upstream.port,
        "dbname": upstream.database,
        "user": upstream.user,
        "sslmode": tls.mode,
        "gssencmode": "disable",
        "passfile": os.devnull,
        # libpq counts whole seconds and takes less than 2 as 2.
        "connect_timeout": max(2, math.ceil(upstream.connect_timeout_s)),
        "application_name": APPLICATION_NAME,
        # A server gone silent is noticed instead of waited on forever.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout_s * 1000),
    }
    for name, value in (("sslrootcert", tls.ca_file), ("sslcert", tls.cert_file), ("sslkey", tls.key_file)):
        if value:
            params[name] = value
    return params


def _scrub(text: str, password: str | None) -> str:
    return text.replace(password, "[password]") if password else text


@attrs.frozen
class _Failed:
    """A load's failure, as text already free of the password (never an exception with frames)."""

    error: str


class LiveCatalog(CatalogState):
    """The newest catalog facts of the upstream database, kept fresh (see the module's docstring).

    ``reactor`` provides the time (``callLater``, ``seconds``) and, unless
    ``run_in_thread`` is given, the thread pool loads run in. ``snapshot`` is what
    `current` falls back to (default: the shipped snapshot of the server's release,
    the newest one until the server's release is known).

    What each statement's decision reads of it (`pgwarden.decisions`, compiled), ``current``,
    ``pending`` and ``redefining``, are fields of its native base `CatalogState`: a compiled
    caller reads them from the object's struct, where this Python class's attributes are a
    generic lookup.
    """

    def __init__(
        self,
        upstream: Upstream,
        reactor: Any,
        *,
        ttl_s: float = 60.0,
        max_stale_s: float = 300.0,
        retry_s: float = 5.0,
        settle_s: float = 0.05,
        load_timeout_s: float = 30.0,
        check_s: float | None = None,
        snapshot: Catalog | None = None,
        run_in_thread: Callable[[Callable[[], Any]], defer.Deferred] | None = None,
    ) -> None:
        for name, value in (("ttl_s", ttl_s), ("max_stale_s", max_stale_s), ("retry_s", retry_s),
                            ("load_timeout_s", load_timeout_s)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if check_s is not None and check_s <= 0:
            raise ValueError(f"check_s must be positive (or None: no change checks), got {check_s}")
        if max_stale_s <= ttl_s:
            # Else the live facts would expire before the next load could renew them.
            raise ValueError(f"max_stale_s ({max_stale_s}) must be longer than ttl_s ({ttl_s})")
        self._upstream = upstream
        self._reactor = reactor
        self._params = connection_parameters(upstream, load_timeout_s)
        self.ttl_s = ttl_s
        self.max_stale_s = max_stale_s
        self.retry_s = retry_s
        self.settle_s = settle_s
        self.load_timeout_s = load_timeout_s
        self.check_s = check_s
        self._fixed_snapshot = snapshot is not None
        self._fallback = snapshot if snapshot is not None else stand_in_snapshot()
        self._run_in_thread = run_in_thread or (
            lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)
        )
        #: the facts to decide with now: live if fresh enough, else the snapshot (and
        #: `pending`, `redefining` False: set again by `_update_flags`)
        CatalogState.__init__(self, self._fallback)
        self._status = CatalogStatus("loading", reactor.seconds(), self._fallback.source)
        self._started = False
        self._stopped = False
        self._conn: psycopg.Connection[Any] | None = None  # touched only by the one load running
        self._memory = LoadMemory()  # likewise: what the last load read and built, for the next
        self._last: tuple | None = None  # likewise: the rows, settings and Catalog of its own last load
        self._in_flight = False
        self._again = False  # an invalidation came while a load ran: load once more after it
        self._timer = None  # the next load
        self._expiry = None  # when the live facts in use become too old
        self._failures = 0
        self._invalidations = 0  # invalidations seen so far
        self._covered = 0  # invalidations the last finished load began after
        self._read_through = 0  # invalidations the last successful load began after
        self._redefined = 0  # the last invalidation that may define lineage's ways again
        self._session_redefined = 0  # ... of those, the last one a session made (not the change check's)
        self._changes: tuple | None = None  # the change check's answer before the last successful load
        self._checker = None  # the next change check
        self._checking = False  # a change check runs (on the connection: never beside a load)
        self._pending_changes: tuple | None = None  # likewise: the answer read before the running load
        self._load_after_check = False  # a load was due while a check ran
        self._check_took = 0.0  # seconds the last change check took
        self._finished_loads = 0
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self._closed: defer.Deferred | None = None
        self._first: list[defer.Deferred] | None = []  # waiting for the first load; None once it ended
        #: whether a load is awaited: the first one, or one that catches up with a DDL seen
        self.pending = False
        #: whether a change that may define again what lineage goes through (by any session, or
        #: seen by the change check) waits for a load to read it
        self.redefining = False
        #: whether such a change made by a session through pgwarden (not one the change check saw)
        #: waits for a load: rows of a statement decided before it are not traced on the catalog
        #: before it (`pgwarden.results`). A change the check saw is within the bound of another
        #: client's DDL: a statement decided before the check saw it is judged on the facts before it.
        self.sessions_redefining = False
        #: called (no arguments) when a change that redefines is made by a session through
        #: pgwarden (once its transaction ended) or seen by the change check: sessions decide
        #: their named statements again at their next Bind, and forget the portals bound before
        #: (`Application`), so that a statement run after it waits for the load like a statement
        #: decided after it (red team fifteen: another session's change had neither)
        #: Each is told whether the change may have replaced a function's body (False: the
        #: check saw pg_proc as it was, `_replaces_functions`).
        self.on_change_seen: list[Callable[[bool], object]] = []
        #: the connection of `confirm` (its own: never beside a load or a check), and its turn
        self._confirm_conn: psycopg.Connection[Any] | None = None
        self._confirm_lock = defer.DeferredLock()

    def __repr__(self) -> str:
        u = self._upstream
        return f"<LiveCatalog {u.user}@{u.host}:{u.port}/{u.database} {self._status.state}: {self.current!r}>"

    def share_memory(self, memory: LoadMemory) -> None:
        """Keeps what its loads read and build in ``memory``, shared with other pgwardens of this
        process in front of the same database, instead of a memory of its own: a first load
        otherwise reads every view's rule (the server's own ~140 among them, ~0.1 s of the
        server's time) and builds every fact (~30 ms for the functions alone); a pgwarden that
        shares reads only the views made or replaced since one of them last did, and builds only
        the parts whose rows changed. What the test suite's pgwardens do
        (`pgwarden.testing.pytest_plugin.make_pgwarden`: one for each test). Before `start` only."""
        if self._started:
            raise RuntimeError("share_memory: the catalog has started loading with a memory of its own")
        self._memory = memory

    @property
    def status(self) -> CatalogStatus:
        return self._status

    def _update_flags(self) -> None:
        """`pending` and `redefining` again, after what they are made of changed (attributes, not
        properties: every statement's decision reads ``pending``)."""
        running = self._started and not self._stopped
        self.pending = running and (self._finished_loads == 0 or self._covered < self._invalidations)
        self.redefining = running and self._covered < self._redefined
        self.sessions_redefining = running and self._covered < self._session_redefined

    def start(self) -> None:
        """Loads now, then every ``ttl_s``."""
        if self._started:
            return
        self._started = True
        self._update_flags()
        self._load()

    def invalidate(self, reason: str, redefines: bool = True, seen: bool = False, functions: bool = True) -> int:
        """A DDL statement committed: load again soon (several calls make one load).

        Call it once the statement's transaction has ended: a load that starts before
        the commit does not see the change. Returns a ticket for `has_read`.
        ``redefines``: the change may define again what lineage goes through (a view, a
        function's body), so `redefining` is true until a load has read it; false for a
        side effect such as a sequence's nextval. ``seen``: the change check saw it (another
        client's change): `sessions_redefining` stays as it was. `on_change_seen` is called for
        every change that redefines, a session's or one the check saw, with ``functions``: the
        change may have replaced a function's body (what a portal bound before runs, unlike the
        views and types its plan fixed at its Bind).
        """
        if not self._started or self._stopped:
            return 0
        self._invalidations += 1
        ticket = self._invalidations
        # a change the check sees while a session's own is not read yet is, most likely, that one
        # (the check ran between its commit and the load): told once (the listeners would take
        # the sessions whose transactions began since for ones open across it)
        told = seen and self._covered < self._session_redefined
        if redefines:
            self._redefined = ticket
            if not seen:
                self._session_redefined = ticket
        self._update_flags()
        if redefines and not told:
            for listener in list(self.on_change_seen):
                listener(functions)
        log.debug("catalog: reload requested ({reason})", reason=reason)
        if self._in_flight:
            self._again = True
            return ticket
        now = self._reactor.seconds()
        if self._timer is not None and self._timer.active() and self._timer.getTime() <= now + self.settle_s:
            return ticket
        self._cancel_timer()
        self._timer = self._reactor.callLater(self.settle_s, self._load)
        return ticket

    def has_read(self, ticket: int) -> bool:
        """Whether `current` holds what was committed before invalidation ``ticket``: a load
        that began after it succeeded (and its facts are still in use, not the snapshot's)."""
        if ticket <= 0:
            return True
        return self._read_through >= ticket and self._status.loaded_at is not None

    def fresh(self) -> defer.Deferred:
        """Fires with `current` once a load has finished after every invalidation so far
        (and after `start`, the first load).

        Fires with whatever `current` is then, also if that load failed: the caller
        decides what stale facts mean for it.
        """
        if not self.pending:
            return defer.succeed(self.current)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append((self._invalidations, waiter))
        return waiter

    def confirm(self, backend_pid: int = 0, own_rows: bool = False, writers: bool = False) -> defer.Deferred:
        """For a statement about to run because people approved it (`pgwarden.approvals`): asks the
        server now, not within ``check_s``, whether its catalog changed since the last load (another
        client's DDL: another pgwarden's session, an operator's) and whether another backend than
        ``backend_pid`` has a transaction open that redefines objects (`queries.OPEN_REDEFINITIONS`).
        Fires with ``(catalog, open)``: the catalog read again first if it changed (`fresh`), and
        whether such a transaction is open; ``open`` is None when the server could not be asked,
        and the catalog then is `current` (fail closed: the caller refuses). ``own_rows``: the
        catalog rows ``backend_pid``'s own transaction rewrote do not count either. ``writers``:
        the statement may be parsed after a wait (red team fourteen): any open transaction of
        another backend that has written counts (it may have made objects nobody else sees)."""

        def ask() -> tuple | _Failed:
            password = None
            if self._stopped:
                return _Failed("the catalog has stopped")
            try:
                import psycopg

                password = self._upstream.read_password()
                for attempt in range(2):
                    conn = self._confirm_conn
                    if conn is None or conn.closed:
                        conn = self._confirm_conn = psycopg.connect(
                            **self._params, password=password or "", autocommit=True, prepare_threshold=None)
                    try:
                        with conn.cursor() as cur:
                            cur.execute(queries.CHANGES)
                            changes = cur.fetchone()
                            cur.execute(queries.OPEN_REDEFINITIONS,
                                        (int(backend_pid), int(backend_pid) if own_rows else 0,
                                         bool(writers), int(backend_pid)))
                            row = cur.fetchone()
                        return (tuple(changes) if changes is not None else (), bool(row[0]) if row else True)
                    except psycopg.Error:
                        self._confirm_conn = None
                        conn.close()
                        if attempt:
                            raise
                raise AssertionError("unreachable")
            except Exception as e:  # noqa: BLE001 - the caller refuses: its text is all we keep
                return _Failed(_scrub(f"{type(e).__name__}: {e}".strip(), password))

        def asked(answer: tuple | _Failed) -> defer.Deferred:
            if self._stopped:
                return defer.succeed((self.current, None))
            if isinstance(answer, _Failed):
                log.warn("catalog: an approved statement's check failed ({error})", error=answer.error)
                return defer.succeed((self.current, None))
            changes, open_ = answer
            if self._changes is not None and changes == self._changes:
                return self.fresh().addCallback(lambda catalog: (catalog, open_))
            ticket = self.invalidate("the catalog changed (checked for an approved statement)", seen=True,
                                     functions=self._replaces_functions(changes))
            # (a load that failed has not read the change: the caller refuses)
            return self.fresh().addCallback(lambda catalog: (catalog, open_ if self.has_read(ticket) else None))

        def released(answer: object) -> object:
            self._confirm_lock.release()
            return answer

        def run(_: object) -> defer.Deferred:
            return self._run_in_thread(ask).addBoth(released)

        if self._stopped:
            return defer.succeed((self.current, None))
        return self._confirm_lock.acquire().addCallback(run).addCallback(asked)

    def first_load(self) -> defer.Deferred:
        """Fires with `current` once the first load has ended, whether it succeeded or not."""
        if self._first is None or self._stopped:
            return defer.succeed(self.current)
        waiter: defer.Deferred = defer.Deferred()
        self._first.append(waiter)
        return waiter

    def stop(self) -> defer.Deferred:
        """Stops loading and closes the connection; fires once it is closed (each call its own Deferred)."""
        done: defer.Deferred = defer.Deferred()
        if self._closed is not None:
            self._closed.addBoth(_firing(done))
            return done
        self._stopped = True
        self._update_flags()
        self._cancel_timer()
        if self._checker is not None and self._checker.active():
            self._checker.cancel()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._status = attrs.evolve(self._status, state="stopped", since=self._reactor.seconds())
        self._release_waiters(self._invalidations)
        self._closed = defer.Deferred()
        self._closed.addBoth(_firing(done))
        if not self._in_flight and not self._checking:
            self._close()
        return done

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._stopped:
            return
        if self._in_flight:
            self._again = True
            return
        if self._checking:  # it has the connection: the load begins when it ends
            self._load_after_check = True
            return
        self._cancel_timer()
        self._in_flight = True
        covers = self._invalidations
        began = self._reactor.seconds()
        loading = self._run_in_thread(self._read)
        loading.addCallback(self._finished, began, covers)
        loading.addErrback(lambda failure: log.failure("catalog: a load went wrong", failure))

    def _read(self) -> Catalog | _Failed:
        """In a worker thread: the live catalog, or what went wrong (free of the password)."""
        password = None
        try:
            password = self._upstream.read_password()
            # The change check's answer first, out of the load's snapshot: a change committed
            # between the two is in the load and makes the next check load once more; a change
            # is never in neither.
            self._pending_changes = self._read_changes(password) if self.check_s is not None else None
            rows = self._read_rows(password)
            base = self._fallback.settings
            # (the indexes are no facts of the catalog, but the server plans with them: a new one
            # is a new generation, so that what was cached by it, the server's plans above all
            # (masking reads the order of indexes on masked columns off them: red team twelve), is
            # asked again)
            indexes = _indexes_version(self._pending_changes)
            if self._last is not None and self._last[0] == rows and self._last[1] is base \
                    and self._last[3] == indexes:
                # Nothing changed: the same Catalog, the same generation, so what was
                # cached by generation (verdicts) stays valid across a TTL reload.
                return self._last[2]
            # What did not change since the last load is taken from it (most loads follow one
            # statement's DDL: a table made, a function replaced).
            catalog = build_catalog(rows, source="live", complete=True, base_settings=base,
                                    previous=self._memory.last)
            self._last = (rows, base, catalog, indexes)
            self._memory.last = (rows, catalog)
            return catalog
        except Exception as e:  # noqa: BLE001 - any failure keeps the previous facts; its text is all we keep
            return _Failed(_scrub(f"{type(e).__name__}: {e}".strip(), password))

    def _connection(self, password: str | None) -> tuple[Any, bool]:
        """The connection kept between loads, or a new one; and whether it is new."""
        import psycopg

        conn = self._conn
        new = conn is None or conn.closed
        if new:
            self._conn = None
            conn = psycopg.connect(**self._params, password=password or "", autocommit=True,
                                   prepare_threshold=None)
            self._conn = conn
        return conn, new

    def _replaces_functions(self, answer: tuple) -> bool:
        """Whether a change the check saw (its ``answer``, `queries.CHANGES`) may have replaced a
        function's body: pg_proc's rows are not as the last load read them (or that is not known).
        An operator's new table or column leaves them as they were."""
        index = queries.CHANGED_TABLES.index("pg_proc")
        known = self._changes
        return known is None or len(known) != len(answer) or len(answer) <= index or known[index] != answer[index]

    def _read_changes(self, password: str | None) -> tuple:
        """In a worker thread: the change check's answer (`queries.CHANGES`)."""
        import psycopg

        for _ in range(2):
            conn, new = self._connection(password)
            try:
                with conn.cursor() as cur:
                    cur.execute(queries.CHANGES)
                    row = cur.fetchone()
                return tuple(row) if row is not None else ()
            except psycopg.Error:
                self._conn = None
                conn.close()
                if new:
                    raise
        raise AssertionError("unreachable")

    def _read_rows(self, password: str | None):
        import psycopg

        for _ in range(2):
            conn, fresh = self._connection(password)
            try:
                return read_rows(conn, self.load_timeout_s, self._memory.views, self._memory.initdb)
            except psycopg.Error:
                self._conn = None
                conn.close()
                if fresh:
                    raise
                # A connection kept since the last load may have been cut (a restart, an idle
                # timeout): one more try on a new one before calling the load failed.
        raise AssertionError("unreachable")

    def _finished(self, result: Catalog | _Failed, began: float, covers: int) -> None:
        self._in_flight = False
        if self._stopped:
            self._close()
            return
        now = self._reactor.seconds()
        if isinstance(result, Catalog):
            self._loaded(result, began, now)
            self._read_through = covers
            self._changes = self._pending_changes
        else:
            self._failed(result.error, now)
        self._finished_loads += 1
        self._covered = covers
        self._update_flags()
        self._release_waiters(covers)
        first, self._first = self._first, None
        for waiter in first or ():
            waiter.callback(self.current)
        if self._again:
            self._again = False
            self._load()
        else:
            self._schedule_next()
        self._schedule_check()

    def _loaded(self, catalog: Catalog, began: float, now: float) -> None:
        if not self._fixed_snapshot:
            fallback = stand_in_snapshot(catalog.server_version)
            if fallback is not self._fallback:
                self._fallback = fallback
        if self._status.state == "failed":
            log.info("catalog: loading again after {seconds:.0f}s of failures", seconds=now - self._status.since)
        since = self._status.since if self._status.state == "ok" else now
        self.current = catalog
        self._failures = 0
        self._status = CatalogStatus("ok", since, catalog.source, loaded_at=began)
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = self._reactor.callLater(max(0.0, began + self.max_stale_s - now), self._expire)

    def _failed(self, error: str, now: float) -> None:
        self._failures += 1
        since = self._status.since if self._status.state == "failed" else now
        self._status = attrs.evolve(self._status, state="failed", since=since, error=error)
        log.warn("catalog: load failed ({error}); {using}", error=error,
                 using="keeping the live facts read before" if self._status.loaded_at is not None
                 else f"using the {self.current.source}")

    def _expire(self) -> None:
        """The live facts are too old to decide with: fail closed on the database's own objects."""
        log.warn("catalog: the live catalog is more than {max}s old; using the {snapshot} until a load succeeds",
                 max=self.max_stale_s, snapshot=self._fallback.source)
        self.current = self._fallback
        self._status = attrs.evolve(self._status, source=self._fallback.source, loaded_at=None)

    def _schedule_next(self) -> None:
        if self._status.state == "ok":
            delay = self.ttl_s
        else:
            delay = min(self.ttl_s, self.retry_s * 2 ** min(self._failures - 1, 30))
        self._cancel_timer()
        self._timer = self._reactor.callLater(delay, self._load)

    # ------------------------------------------------------------------ the change check

    def _schedule_check(self) -> None:
        if self.check_s is None or self._stopped or self._checking:
            return
        if self._checker is not None and self._checker.active():
            return
        # At most a tenth of the time on the server's side: a large catalog is checked less often.
        self._checker = self._reactor.callLater(max(self.check_s, 10 * self._check_took), self._check)

    def _check(self) -> None:
        """Whether the catalog changed since the last load, by a query far cheaper than a load."""
        if self._stopped or self._in_flight or self._changes is None:
            return  # a load runs (it reschedules the check when it ends), or none succeeded yet
        self._checking = True

        def read() -> tuple | _Failed:
            password = None
            try:
                password = self._upstream.read_password()
                began = self._reactor.seconds()  # (the reactor's clock: a test's is its own)
                answer = self._read_changes(password)
                self._check_took = max(0.0, self._reactor.seconds() - began)
                return answer
            except Exception as e:  # noqa: BLE001 - a failed check waits for the next one (or the TTL)
                return _Failed(_scrub(f"{type(e).__name__}: {e}".strip(), password))

        def checked(answer: tuple | _Failed) -> None:
            self._checking = False
            if self._stopped:
                if self._closed is not None and not self._in_flight:
                    self._close()
                return
            if isinstance(answer, _Failed):
                log.debug("catalog: the change check failed ({error})", error=answer.error)
            elif answer != self._changes:
                self.invalidate("the catalog changed (another client's DDL)", seen=True,
                                functions=self._replaces_functions(answer))
            if self._load_after_check:
                self._load_after_check = False
                self._load()  # (it schedules the next check when it ends)
            else:
                self._schedule_check()

        done = self._run_in_thread(read)
        done.addCallback(checked)
        done.addErrback(lambda failure: log.failure("catalog: a change check went wrong", failure))

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _release_waiters(self, covered: int) -> None:
        ready = [d for needed, d in self._waiters if needed <= covered]
        self._waiters = [(needed, d) for needed, d in self._waiters if needed > covered]
        for waiter in ready:
            waiter.callback(self.current)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        confirming, self._confirm_conn = self._confirm_conn, None
        closed = self._closed

        def close() -> None:
            for c in (conn, confirming):
                if c is not None:
                    c.close()

        def closed_now(_: object) -> None:  # whatever close() did: the connection is gone
            if closed is not None:
                closed.callback(None)

        self._run_in_thread(close).addBoth(closed_now)


def _indexes_version(changes: tuple | None) -> object:
    """The change check's answer for pg_index (`queries.CHANGES`), None without one."""
    try:
        return changes[queries.CHANGED_TABLES.index("pg_index")] if changes else None
    except (ValueError, IndexError):
        return None
