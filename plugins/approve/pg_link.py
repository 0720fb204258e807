"""The postgres approval store's two connections: one for queries, one that LISTENs.

psycopg 3 (libpq: SCRAM, TLS, every DSN form an operator may write), each connection in a
thread of its own, as the catalog's control connection does: the reactor never waits on the
store's database, and nothing here depends on which reactor runs (pgwarden's epoll reactor
and Twisted's default both only see `callFromThread`). docs/approvals.md says why this and
not txpostgres.

- Queries run one at a time in the query thread (`Link.run`); at each (re)connection the
  schema is migrated (`pg_schema.migrate`), so a newer pgwarden's schema is noticed there.
- The listen thread LISTENs on the schema's channel and hands each payload to
  ``on_notify``; each time its LISTEN is (re)established it calls ``on_listening``, so the
  store can catch up on what changed while it was not listening.
- A lost connection marks the link down (`problem`): `run` then fails at once with
  `StoreUnavailable` (a new approval request is refused without waiting for a timeout) until
  a reconnection, tried with exponential backoff, succeeds.

The credential (``password_file``, or a password inside the DSN) is read at each connection
and scrubbed from every message this module lets out.
"""

from __future__ import annotations

import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.api import ConfigProblem, Reactor
from pgwarden.config import ApprovalsPostgres
from pgwarden_plugins.approve import pg_schema
from pgwarden_plugins.approve.store import StoreUnavailable

log = Logger(namespace="pgwarden.approvals")

T = TypeVar("T")

APPLICATION_NAME = "pgwarden approvals"
#: The listen connection asks the server something after this long without traffic, so a
#: server gone silent is noticed (besides TCP keepalives).
PING_S = 5.0
#: How often the listen thread looks at whether it should stop.
TICK_S = 0.5


class ThreadedReactor(Reactor, Protocol):
    """The reactor as this module uses it: time, and a way in from the store's threads."""

    def callFromThread(self, callable: Callable[..., object], *args: object,  # noqa: N802
                       **kwargs: object) -> None: ...


class Credentials:
    """Where to connect and as whom, read afresh at each connection; and what must never be shown."""

    def __init__(self, settings: ApprovalsPostgres) -> None:
        self._settings = settings
        self._secrets: set[str] = set()

    def __repr__(self) -> str:
        return f"<Credentials schema={self._settings.schema}>"

    def parameters(self) -> dict[str, str | int]:
        """libpq parameters; raises StoreUnavailable (scrubbed) when the DSN or a file cannot be read."""
        s = self._settings
        try:
            if s.dsn is not None:
                dsn = s.dsn
            else:
                assert s.dsn_file is not None  # one of the two, by the config's validation
                dsn = Path(s.dsn_file).read_text().strip()
            self._secrets.add(dsn)
            try:
                params: dict[str, str | int] = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
            except psycopg.Error:
                # Its message may quote the DSN: only say where it came from.
                raise StoreUnavailable(f"the approval store's DSN ({'dsn_file' if s.dsn is None else 'dsn'}) "
                                       "is not a valid connection string") from None
            if "password" in params:
                self._secrets.add(str(params["password"]))
            if s.password_file is not None:
                password = Path(s.password_file).read_text().rstrip("\r\n")
                self._secrets.add(password)
                params["password"] = password
        except OSError as e:
            raise StoreUnavailable(f"cannot read {e.filename}: {e.strerror}") from None
        params.setdefault("application_name", APPLICATION_NAME)
        # libpq counts whole seconds and takes less than 2 as 2.
        params["connect_timeout"] = max(2, math.ceil(s.connect_timeout_s))
        for name, value in (("keepalives", 1), ("keepalives_idle", 10), ("keepalives_interval", 5),
                            ("keepalives_count", 3), ("tcp_user_timeout", int(s.statement_timeout_s * 2000))):
            params.setdefault(name, value)
        return params

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "[secret]")
        return text

    def connect(self) -> psycopg.Connection:
        """A new autocommit connection with the store's timeouts; raises StoreUnavailable, scrubbed."""
        params = self.parameters()
        try:
            conn = psycopg.connect(**params, autocommit=True, prepare_threshold=None)  # type: ignore[arg-type]
        except psycopg.Error as e:
            raise StoreUnavailable(self.describe(e)) from None
        try:
            ms = int(self._settings.statement_timeout_s * 1000)
            conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false), "
                         "pg_catalog.set_config('lock_timeout', %s, false), "
                         "pg_catalog.set_config('idle_in_transaction_session_timeout', %s, false)",
                         [str(ms), str(ms), str(ms * 2)])
        except psycopg.Error as e:
            conn.close()
            raise StoreUnavailable(self.describe(e)) from None
        return conn

    def describe(self, error: BaseException) -> str:
        """What went wrong, in one line free of the credential (never the exception with its frames)."""
        text = " ".join(str(error).split()) or type(error).__name__
        return "approval store: " + self.scrub(text)


def config_problems(settings: ApprovalsPostgres) -> list[ConfigProblem]:
    """What `pgwarden check` can tell about ``approvals.postgres`` without connecting: whether the
    DSN parses. Never the DSN itself in the message (it may hold a password); a ``dsn_file`` that
    is not there is left alone, as a missing ``password_file`` is (check runs where secrets are not)."""
    if settings.dsn is not None:
        where, text = "dsn", settings.dsn
    else:
        assert settings.dsn_file is not None
        try:
            where, text = "dsn_file", Path(settings.dsn_file).read_text().strip()
        except OSError:
            return []
    try:
        conninfo_to_dict(text)
    except psycopg.Error:
        return [ConfigProblem(("approvals", "postgres", where),
                              "expected a libpq connection string (host=... dbname=... user=...) or a URI "
                              "(postgresql://...); this one does not parse (it is not shown: it may hold a password)")]
    return []


def _down(error: BaseException) -> bool:
    """Whether ``error`` means the store cannot be used (rather than this one query failed)."""
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError, pg_schema.SchemaTooNew,
                              StoreUnavailable))


class Link:
    """The store's connections, their health, and reconnection (see the module's docstring)."""

    def __init__(self, settings: ApprovalsPostgres, reactor: ThreadedReactor, *,
                 on_notify: Callable[[str], None], on_listening: Callable[[], None]) -> None:
        self.settings = settings
        self.credentials = Credentials(settings)
        self._reactor = reactor
        self._on_notify = on_notify
        self._on_listening = on_listening
        self._by = f"pgwarden on {socket.gethostname()} pid {os.getpid()}"
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Deferred[object]] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._conn: psycopg.Connection | None = None  # touched only in the query thread
        self._last_used = 0.0  # likewise (monotonic)
        self._suspect = False  # the query connection is checked before its next use
        self.query_problem: str | None = None
        self.listen_problem: str | None = "not listening yet"
        self._started = False
        self._first: Deferred[None] | None = None  # the first connection's attempt, while it runs
        self._listen_first: Deferred[None] | None = None  # the first LISTEN's outcome, until known
        self._retry: Any = None  # the IDelayedCall of the next reconnection attempt of the query connection
        self._failures = 0
        self._threads: list[threading.Thread] = []
        self._when_working: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._running = 0  # threads not yet ended
        self._stopped: list[Deferred[None]] = []

    @property
    def problem(self) -> str | None:
        """None when both connections work; else why not."""
        if self.query_problem is not None:
            return self.query_problem
        if self.listen_problem is not None:
            return f"approval store: not listening for decisions ({self.listen_problem})"
        return None

    # ------------------------------------------------------------------ life

    def start(self) -> Deferred[None]:
        """Connects (migrating the schema) and starts listening; fires after the first attempt,
        successful or not (`problem` says)."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        for name, target in (("pgwarden approvals query", self._query_loop),
                             ("pgwarden approvals listen", self._listen_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
        self._running = len(self._threads)
        for thread in self._threads:
            thread.start()
        first = self._attempt()
        self._first = first
        listening: Deferred[None] = Deferred()
        self._listen_first = listening
        return DeferredList([first, listening]).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Stops both threads (closing the connections); fires once they ended."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._stopping.set()
        self._jobs.put(None)
        done: Deferred[None] = Deferred()
        with self._lock:
            running = self._running
        if not running:
            done.callback(None)
        else:
            self._stopped.append(done)
        return done

    def _thread_ended(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self._reactor.callFromThread(self._all_stopped)

    def _all_stopped(self) -> None:
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)

    # ------------------------------------------------------------------ queries

    def run(self, work: Callable[[psycopg.Connection], T], *, idempotent: bool = False) -> Deferred[T]:
        """``work(conn)`` in the query thread; fails with StoreUnavailable at once while the store is
        down, or when the connection fails under it (the link is then down, and reconnects).

        ``idempotent``: running ``work`` twice does what running it once does (a read, an expiry),
        so when a connection kept from before turns out to be cut (a restart, a terminated
        backend) it runs once more on a new one.
        """
        if self._stopping.is_set():
            return _failed(StoreUnavailable("approval store: stopped"))
        if self.query_problem is not None and self._first is None:
            return _failed(StoreUnavailable(self.query_problem))
        return self._submit(lambda: self._use(work, idempotent))

    def _submit(self, job: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._jobs.put((job, d))  # type: ignore[arg-type]
        return d

    def _attempt(self) -> Deferred[None]:
        """One (re)connection of the query connection, migrating the schema; updates `problem`."""
        d = self._submit(lambda: self._use(lambda conn: None))

        def ok(_: None) -> None:
            self._first = None

        def failed(failure: Failure) -> None:
            self._first = None
            if not failure.check(StoreUnavailable):
                log.failure("approval store: reconnection failed", failure)

        return d.addCallbacks(ok, failed)

    def _use(self, work: Callable[[psycopg.Connection], T], again: bool = False) -> T:
        """In the query thread: the connection (made, or checked after idling), then ``work``."""
        try:
            kept = self._conn is not None and not self._conn.closed
            conn = self._connection()
            try:
                result = work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if not (again and kept):
                    raise
                self._close()
                result = work(self._connection())
            self._last_used = time.monotonic()
        except Exception as e:
            if not _down(e):
                if isinstance(e, psycopg.Error):
                    raise RuntimeError(self.credentials.describe(e)) from None
                raise
            message = str(e) if isinstance(e, (StoreUnavailable, pg_schema.SchemaTooNew)) \
                else self.credentials.describe(e)
            self._close()
            self._reactor.callFromThread(self._lost, message)
            raise StoreUnavailable(message) from None
        self._reactor.callFromThread(self._working)
        return result

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and not conn.closed and (self._suspect or time.monotonic() - self._last_used > PING_S):
            self._suspect = False
            try:  # idle for a while: a restart or an idle timeout may have cut it; cheaper than a failed decision
                conn.execute("SELECT 1")
            except psycopg.Error:
                self._close()
                conn = None
        if conn is None or conn.closed:
            conn = self.credentials.connect()
            try:
                before, after = pg_schema.migrate(conn, self.settings.schema, self._by)
            except Exception:
                conn.close()
                raise
            if before != after:
                log.info("approval store: schema {schema} migrated from version {before} to {after}",
                         schema=self.settings.schema, before=before, after=after)
            self._conn = conn
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass

    def _query_loop(self) -> None:
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                job, d = item
                try:
                    result = job()
                except BaseException:
                    failure = Failure()
                    self._reactor.callFromThread(d.errback, failure)
                else:
                    self._reactor.callFromThread(d.callback, result)
        finally:
            self._close()
            self._thread_ended()

    def on_working_once(self, f: Callable[[], None]) -> None:
        """``f()`` once the query connection works again (the same ``f`` once, however often asked)."""
        if f not in self._when_working:
            self._when_working.append(f)

    def _working(self) -> None:
        if self.query_problem is not None:
            log.info("approval store: connected")
        self.query_problem = None
        self._failures = 0
        waiting, self._when_working = self._when_working, []
        for f in waiting:
            f()

    def _lost(self, message: str) -> None:
        if self.query_problem is None:
            log.warn("{message}; new approval requests are refused until it is back", message=message)
        self.query_problem = message
        self._failures += 1
        if self._stopping.is_set() or (self._retry is not None and self._retry.active()):
            return
        delay = min(self.settings.max_retry_s, self.settings.retry_s * 2 ** min(self._failures - 1, 30))
        self._retry = self._reactor.callLater(delay, self._attempt)

    # ------------------------------------------------------------------ listening

    def _listen_loop(self) -> None:
        delay = self.settings.retry_s
        try:
            while not self._stopping.is_set():
                conn = None
                try:
                    conn = self.credentials.connect()
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.settings.schema)))
                    self._reactor.callFromThread(self._listening)
                    delay = self.settings.retry_s
                    self._receive(conn)
                except Exception as e:  # noqa: BLE001 - any failure: say why (scrubbed), wait, try again
                    if self._stopping.is_set():
                        return
                    message = str(e) if isinstance(e, StoreUnavailable) else self.credentials.describe(e)
                    self._reactor.callFromThread(self._not_listening, message)
                finally:
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001 - as in _close
                            pass
                self._stopping.wait(delay)
                delay = min(self.settings.max_retry_s, delay * 2)
        finally:
            self._thread_ended()

    def _receive(self, conn: psycopg.Connection) -> None:
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=TICK_S):
                quiet_since = time.monotonic()
                self._reactor.callFromThread(self._on_notify, notify.payload)
            if time.monotonic() - quiet_since > PING_S:
                conn.execute("SELECT 1")
                quiet_since = time.monotonic()

    def _listening(self) -> None:
        if self.listen_problem is not None and self.listen_problem != "not listening yet":
            log.info("approval store: listening again")
        self.listen_problem = None
        self._listen_known()
        self._on_listening()

    def _not_listening(self, message: str) -> None:
        self._suspect = True  # what cut the listen connection has likely cut the other one too
        if self.listen_problem is None:
            log.warn("approval store: stopped listening for decisions ({message}); reconnecting", message=message)
        self.listen_problem = message
        self._listen_known()

    def _listen_known(self) -> None:
        first, self._listen_first = self._listen_first, None
        if first is not None:
            first.callback(None)


def _failed(error: Exception) -> Deferred[T]:
    d: Deferred[T] = Deferred()
    d.errback(Failure(error))
    return d
