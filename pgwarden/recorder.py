"""Records of what happened (docs/records.md), built by the core, written by plugins.

The core builds each record once and keeps it until the recorder's barrier
(`flush`, run by the Application's `pgwarden.turns.Turns`, the same way on every
reactor), which runs before the bytes of a reactor turn leave for the database:
it passes the records kept to every sink in one call (``pgwarden_records``),
then makes every sink write (``pgwarden_records_flush``), so a statement allowed
in that turn reaches the server only after its record reached the operating
system. One hook call per sink and turn, not one per record: each call through
pluggy has a cost of its own (docs/performance.md), and a simple-protocol
statement makes two records. When a sink that fails closed cannot take or write the records, the
sessions whose statements were waiting on them are ended before the statements
leave, and every later statement is refused until a write succeeds again.
Plugins still on the per-record ``pgwarden_record`` (deprecated) get each
record as it is built, as before.

Records that carry no verdict (``result``, ``session_start``, ``session_end``)
gate nothing, so a turn with only such records does not make the sinks write:
they are written with the next record that carries a verdict, or once
LAZY_RECORDS of them wait, or ``recording.results_delay_ms`` (default 10) after
the first, whichever comes first. Under load that saves most writes (a prepared
statement's executions make only ``result`` records); the price is that a crash
of pgwarden loses at most those few milliseconds of results, never a verdict.
With a delay of 0 every record is written at the end of its own turn.

A statement at one client is two turns: the Query's, whose barrier writes the
statement's record before the Query leaves, and the ReadyForQuery's, whose reply
leaves first; the ``result`` record is built after that turn's sends
(`after_sends`), and so, for sinks that take records early (`TAKES_EARLY`, the
built-in ``recording`` plugin), handed over there: serialised and sealed in the
same poll iteration, after the reply, not at the next statement's barrier. That
barrier then seals only the statement's own record and writes both with one
call. Neither the order of a sink's chain nor what fails closed changes: a write
that fails, at a barrier or at the lazy timer, refuses the statements after it.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from pluggy._callers import _multicall
from twisted.logger import Logger

from pgwarden import stamp
from pgwarden.chain import seal_bodies, write_all
from pgwarden.proxy.peer import peer_text
from pgwarden.sql.lexer import DEFAULT_LEXER
from pgwarden.turns import TurnWork

if TYPE_CHECKING:
    from pgwarden.api import Record
    from pgwarden.config import Config
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.client import ClientConnection
    from pgwarden.proxy.state import ConnectionState
    from pgwarden.relay.engine import StatementRequest
    from pgwarden.relay.execution import Execution
    from pgwarden.sql.statement import Statement
    from pgwarden.turns import Turns

log = Logger(namespace="pgwarden.recording")

#: The record format, in each ``session_start`` (``format``). 2: ``session_start`` carries
#: ``claims`` and ``search_path``, a ``statement`` its ``search_path`` when not the session's
#: start. Records without it are format 1. `pgwarden replay` reads the formats it knows and
#: refuses others (pgwarden/replay.py).
RECORD_FORMAT = 2

#: Records without a verdict wait at most for this many of them before a write.
LAZY_RECORDS: Final = 64

#: A sink plugin whose `pgwarden_records` only buffers (it writes nothing before its flush)
#: sets this attribute to True: records that carry no verdict are then handed to it once the
#: turn's sends have left, before the barrier that writes them, so it can serialise and seal
#: them off the latency path. Records are handed over early only when every plugin that takes
#: records says so; otherwise each gets them in one call just before its flush, as always.
TAKES_EARLY = "pgwarden_takes_records_early"

#: A sink plugin whose `pgwarden_records` is exactly `pgwarden.chain.seal_into` its chains, and
#: whose `pgwarden_records_flush` has nothing to do when `pgwarden.chain.write_all` writes them
#: all, names those chains with this attribute (the built-in ``recording`` plugin). When it alone
#: takes records, with no hook wrapper and pluggy's own executor (no tracing), the recorder does
#: both itself, natively, and calls the flush hook only when a sink has work of its own: two
#: interpreted hook calls fewer between a statement's arrival and its bytes leaving.
CHAINS = "pgwarden_chains"

_MULTICALL: Final = _multicall
_dumps: Final = orjson.dumps
_loads: Final = orjson.loads
_FINGERPRINT: Final = b',"fingerprint":'


def _json_or_none(value: object) -> bytes | None:
    """``value`` as orjson writes it; None if orjson refuses it (the record is then built as a
    mapping, on which the hand-over fails as it always did)."""
    try:
        return _dumps(value)
    except Exception:
        return None


class RecordingFailed(Exception):
    """Records cannot be written: what would depend on them must not happen."""


#: Final: compiled, a C variable (module globals are a dictionary lookup at each use)
_now: Final = stamp.now


def timestamp(now: float | None = None) -> str:
    """RFC 3339, microseconds, UTC (``2026-11-25T15:16:50.123456Z``): of now, or of ``now``
    seconds since the epoch. Two per statement: `pgwarden.stamp`, compiled by Cython."""
    if now is None:
        return _now()
    second = int(now)
    return stamp.format_at(second, int((now - second) * 1e6))


def masked_fields(plans) -> dict[str, object]:
    """What a result's masks did, for its record: ``masked`` (the sources masked, by their
    schema.table.column), ``masks`` (each output masked: column, source, rule, strategy, values),
    ``detected`` (detector hits by type and column, never the values)."""
    masks: dict[tuple, int] = {}
    detected: dict[tuple[str, str], int] = {}
    for plan in plans:
        for (index, mask), output in zip(plan.masks, plan.outputs, strict=True):
            key = (output.column, output.source, output.rule, output.strategy)
            masks[key] = masks.get(key, 0) + plan.values.get(index, 0)
            for name, count in (mask.hits or {}).items():
                detected[name, output.column] = detected.get((name, output.column), 0) + count
    fields: dict[str, object] = {
        "masked": list(dict.fromkeys(source for _, source, _, _ in masks)),
        "masks": [{"column": c, "source": s, "rule": r, "strategy": k, "values": n}
                  for (c, s, r, k), n in masks.items()],
    }
    if detected:
        fields["detected"] = [{"detector": d, "column": c, "count": n} for (d, c), n in detected.items()]
    return fields


def _ms(seconds: float) -> float:
    return int(seconds * 1e6) / 1000  # microsecond resolution, in ms


class SessionLog:
    """The record-keeping of one connection: its id, who it is, and running totals."""

    __slots__ = ("id", "identity", "seq", "statements", "refused", "rows", "bytes", "started", "search_path",
                 "heads_of", "statement_head", "result_head", "identity_json")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.identity: dict[str, object] = {"subject": None, "groups": []}
        self.seq = 0
        self.statements = 0
        self.refused = 0
        self.rows = 0
        self.bytes = 0
        self.started = time.monotonic()
        #: the search_path the session started with: a statement analysed under another says so
        self.search_path: tuple[str, ...] | None = None
        # The serialised parts of this session's statement and result records that are the same
        # in each (`Recorder` in `direct` mode, `heads`): made of ``identity``, which
        # ``session_start`` sets (a new dictionary, never changed in place), and of ``id``.
        #: the ``identity`` the heads were made of (None: not made yet)
        self.heads_of: object = None
        #: ``","type":"statement","session":"<id>","seq":``: after a record's ``ts``
        self.statement_head = b""
        #: the same for ``result`` records
        self.result_head = b""
        #: ``,"identity":{...},"statement":``: after a statement or result record's ``seq``
        self.identity_json = b""


def heads(slog: SessionLog) -> None:
    """``slog``'s heads for its identity now (see `SessionLog`): what orjson writes of those keys."""
    session = _dumps(slog.id)
    slog.statement_head = b'","type":"statement","session":%s,"seq":' % session
    slog.result_head = b'","type":"result","session":%s,"seq":' % session
    slog.identity_json = b',"identity":%s,"statement":' % _dumps(slog.identity)
    slog.heads_of = slog.identity


def new_session_id() -> str:
    return secrets.token_hex(8)


class RecorderHost(Protocol):
    """What the recorder uses of the running pgwarden (an `Application`): the reactor (its
    barriers, timers), the plugin host (who writes records) and the config, read again at
    each `Recorder.configure` (``recording``: after a reload)."""

    @property
    def reactor(self) -> Any: ...

    @property
    def plugins(self) -> PluginHost: ...

    @property
    def turns(self) -> Turns: ...

    @property
    def config(self) -> Config: ...


class Recorder(TurnWork):
    def __init__(self, app: RecorderHost) -> None:
        self.app = app
        #: why statements are refused now (a sink failing closed could not write), or None
        self.failure: str | None = None
        #: problems of sinks that fail open
        self.warnings: list[str] = []
        self.sink_errors = 0
        self._held: list[ClientConnection] = []
        # built since the last barrier that wrote, for pgwarden_records (bytes: `_serialised`)
        self._kept: list[Record | bytes] = []
        self._dirty = False
        self._urgent = False  # a record carrying a verdict is buffered: the next barrier writes
        self._lazy = 0  # records without a verdict buffered since the last write
        self._lazy_first = 0.0  # when the first of them was buffered (reactor seconds)
        # The reactor's DelayedCall, or None. Typed Any: compiled (mypyc), an attribute inferred
        # as None would refuse the DelayedCall at run time, and the reactors' timer classes differ.
        self._lazy_timer: Any = None
        # executions whose result records are built after the turn's sends
        self._results: list[tuple[ClientConnection, Execution]] = []
        self._by_analysis: dict[int, tuple[object, tuple[list, list, list, list], bytes | None]] = {}
        self._by_verdict: dict[int, tuple[object, dict[str, object], bytes | None, bool]] = {}
        self._by_context: dict[int, tuple[object, dict[str, object], bytes | None, tuple | None, bool]] = {}
        #: strings a record holds that repeat (protocol, name, fingerprint, sqlstate), serialised
        self._strings: dict[str, bytes] = {}
        # The entries of the three dictionaries above asked for last: consecutive statements
        # mostly share them (an identity test instead of a lookup by id).
        self._last_analysis: tuple[object, tuple[list, list, list, list], bytes | None] = (None, ([], [], [], []), None)
        self._last_verdict: tuple[object, dict[str, object], bytes | None, bool] = (None, {}, None, False)
        self._last_context: tuple[object, dict[str, object], bytes | None, tuple | None, bool] = (
            None, {}, None, None, False)
        self._turns = app.turns
        self._seconds = app.reactor.seconds  # the reactor's clock, read for each result at one client
        self._turns.attach(self)  # `barrier` and `after_sends` at every turn's end, called natively
        self.configure()

    def configure(self) -> None:
        plugins = self.app.plugins
        rec = self.app.config.recording
        # Through pluggy, one caller per plugin that wants records now (pgwarden_records_wanted).
        self._takers = plugins.record_takers()
        self._writers = plugins.record_writers()  # pgwarden_record, deprecated: called per record
        self._flushers = plugins.record_flushers()
        self.active = bool(self._takers or self._writers)
        #: every taker buffers what it is handed (`TAKES_EARLY`): records without a verdict are
        #: handed over after the sends that precede them, not at the barrier that writes them
        self._early = bool(self._takers) and all(
            getattr(plugins.pm.get_plugin(name), TAKES_EARLY, False) is True for name, _ in self._takers)
        self._pm = plugins.pm
        #: the chains the recorder seals into and writes itself (`CHAINS`), or None
        self._chains: list | None = None
        if len(self._takers) == 1 and not self._writers and len(self._flushers) == 1:
            name = self._takers[0][0]
            calls = [call for hook in ("pgwarden_records", "pgwarden_records_flush")
                     for owner, call in plugins._each(hook) if owner == name]
            chains = getattr(plugins.pm.get_plugin(name), CHAINS, None)
            if (self._flushers[0][0] == name and isinstance(chains, list) and len(calls) == 2
                    and all(len(call.impls) == 1 for call in calls)):
                self._chains = chains
        #: statement and result records are built serialised (`_statement_body`, `_result_body`):
        #: only the recorder's own sealing (`CHAINS`) will see them, and no plugin on the
        #: per-record hook. Should they be handed to the plugin's hook after all (its hooks traced
        #: since), they are read back into mappings first (`_hand_over`).
        self._serialised = self._chains is not None
        self.sample_rows = rec.results.max_rows
        self.sample_bytes = rec.results.max_bytes
        self.parameter_bytes = rec.max_parameter_bytes
        #: how long records without a verdict may wait for a write; 0: they do not wait
        self.lazy_s = rec.results_delay_ms / 1000

    # ------------------------------------------------------------------ writing

    def emit(self, record: dict | bytes, waiting: ClientConnection | None = None, *, lazy: bool = False) -> None:
        """Passes ``record`` to every sink; ``waiting``: a session whose next bytes depend on it.

        ``lazy``: the record carries no verdict, so its write may wait (see the module's doc).
        ``record`` as bytes: already serialised (`Recorder._serialised`: only without per-record writers).
        """
        if self._takers:
            self._kept.append(record)
        if self._writers:
            self._write_each(record)  # type: ignore[arg-type]  # a mapping (`_serialised`: never with writers)
        self._dirty = True
        if waiting is not None:
            self._held.append(waiting)
        if lazy and self.lazy_s and waiting is None:
            # It may wait: no barrier is needed for it until LAZY_RECORDS of them wait, and the
            # timer that writes it in time is armed once, not once per record (`_lazy_due`).
            if not self._lazy:
                self._lazy_first = self._seconds()
            self._lazy += 1
            if self._lazy_timer is None:
                self._lazy_timer = self.app.reactor.callLater(self.lazy_s, self._lazy_due)
            if self._lazy >= LAZY_RECORDS:
                self._turns.wake()
        else:
            self._urgent = True
            self._turns.wake()  # the barrier at the end of this turn writes it

    def _write_each(self, record: dict) -> None:
        """``record`` to the plugins on the per-record hook: a raise refuses what it is about."""
        try:
            for name, write in self._writers:  # noqa: B007 (the except names the sink that raised)
                write(record=record)
        except Exception as e:  # a sink plugin that raised: nothing depending on it may happen
            self._fail(f"{name}: {e}")
            self._to_the_others(record, name)
            raise RecordingFailed(self.failure) from None

    def _to_the_others(self, record: dict, failed: str) -> None:
        """The sinks after one that raised still get the record (no gap in their chains)."""
        after = False
        for name, write in self._writers:
            if after:
                try:
                    write(record=record)
                except Exception as e:
                    self._fail(f"{name}: {e}")
            after = after or name == failed

    def _direct(self) -> list | None:
        """The chains the recorder seals into and writes itself now (`CHAINS`), or None: not
        while hooks are traced or monitored (pluggy's executor replaced), as `PluginCall`."""
        chains = self._chains
        return chains if chains is not None and self._pm._inner_hookexec is _MULTICALL else None

    def _hand_over(self, chains: list | None) -> str | None:
        """The records kept, to every plugin on `pgwarden_records` in one call each (or sealed
        into ``chains``, `_direct`); why one could not take them (the others still get them: no
        gap in their chains), or None."""
        if not self._kept:
            return None
        records, self._kept = self._kept, []
        if chains is not None:
            try:
                # what the plugin's pgwarden_records does (`CHAINS`: `seal_into`), each record
                # serialised unless it was built so (`_serialised`)
                seal_bodies([r if isinstance(r, bytes) else _dumps(r) for r in records], chains)
            except Exception as e:
                return f"{self._takers[0][0]}: {e}"
            return None
        # Records built serialised go to the hook as the mappings they serialise (in order, the
        # same bytes again: JSON arrays come back as lists).
        records = [_loads(r) if isinstance(r, bytes) else r for r in records]
        failed = None
        for name, take in self._takers:
            try:
                take(records=records)
            except Exception as e:
                failed = failed or f"{name}: {e}"
        return failed

    def barrier(self) -> None:
        """The turns' barrier (`TurnWork`): `flush`."""
        self.flush(False)

    def flush(self, force: bool = False) -> None:
        """The barrier: every sink writes what it holds. Runs before each turn's sends.

        Unless ``force``, only records without a verdict buffered, and few and recent
        enough: they wait (a timer writes them at the latest ``lazy_s`` after the first).
        """
        if not self._dirty:
            return
        if not (force or self._urgent or self._lazy >= LAZY_RECORDS):
            if self._lazy_timer is None:
                self._lazy_timer = self.app.reactor.callLater(self.lazy_s, self._lazy_due)
            return
        # The lazy timer, if armed, stays: when it fires it finds nothing waiting, or arms itself
        # again for records buffered since. Cancelling and arming it again for every statement's
        # `result` record cost a timer (a heap push and a cancel) per statement at one client.
        self._urgent = False
        self._lazy = 0
        self._dirty = False
        held, self._held = self._held, []
        chains = self._direct()
        failed = self._hand_over(chains)
        warnings: list[str] = []
        if chains is not None and write_all(chains):
            flushers = []  # every chain written: what the plugin's flush would have done (`CHAINS`)
        else:
            flushers = self._flushers
        for name, flush in flushers:
            try:
                problems = flush()
            except Exception as e:
                failed = failed or f"{name}: {e}"
                continue
            if problems:
                warnings.extend(problems)
        self.sink_errors += len(warnings)  # sinks failing open: every failed write
        self.warnings = warnings
        if failed is not None:
            self._fail(failed)
            for conn in held:
                conn.recording_failed()
        elif self.failure is not None:
            log.info("records are written again; statements are accepted")
            self.failure = None

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        if not self._lazy:
            return  # what it was armed for was written with a record that could not wait
        left = self._lazy_first + self.lazy_s - self._seconds()
        if left > 0:  # armed for earlier records: these were buffered later
            self._lazy_timer = self.app.reactor.callLater(left, self._lazy_due)
            return
        self.flush(force=True)

    def retry(self) -> bool:
        """After a failure: whether the sinks can write again now (what they hold is written)."""
        # Sessions waiting on records still in the sinks are settled by this write too.
        self._dirty = True
        self.flush(force=True)
        return self.failure is None

    def _fail(self, why: str) -> None:
        self.sink_errors += 1
        if self.failure is None:
            log.error("records cannot be written, statements are refused: {why}", why=why)
        self.failure = why

    def close(self) -> None:
        """Writes what is left and leaves the turns' barriers."""
        self.build_results()
        self._dirty = True
        self.flush(force=True)
        if self._lazy_timer is not None:
            if self._lazy_timer.active():
                self._lazy_timer.cancel()
            self._lazy_timer = None
        self._turns.detach(self)

    # ------------------------------------------------------------------ records

    def _base(self, kind: str, slog: SessionLog) -> dict:
        if self._results:  # a session's records stay in order
            self.build_results()
        slog.seq += 1
        return {"ts": timestamp(), "type": kind, "session": slog.id, "seq": slog.seq, "identity": slog.identity}

    def session_start(self, conn: ClientConnection) -> None:
        slog = conn.log
        session = conn.session
        identity = session.identity
        slog.identity = {"subject": identity.subject, "groups": sorted(identity.groups)}
        record = self._base("session_start", slog)
        record["client"] = session.client_address
        record["database"] = session.database
        record["application_name"] = session.application_name
        record["tls"] = conn.tls_active
        record["policies"] = [p.name for p in session.policies]
        # What `pgwarden replay` needs to decide this session's statements again: the claims
        # (`when: claims`), the search_path the session started with. Once per session.
        record["claims"] = dict(identity.claims)
        context = conn.sql_context
        slog.search_path = context.search_path
        record["search_path"] = list(context.search_path or ())
        record["format"] = RECORD_FORMAT
        self.emit(record, lazy=True)

    def auth_failure(self, conn: ClientConnection, reason: str, sqlstate: str) -> None:
        record = self._base("auth_failure", conn.log)
        startup = conn.startup
        record["client"] = peer_text(conn.transport.getPeer())
        record["user"] = startup.get("user") if startup is not None else None
        record["database"] = startup.get("database") if startup is not None else None
        record["reason"] = reason
        record["sqlstate"] = sqlstate
        self.emit(record)

    def mcp_auth_failure(self, slog: SessionLog, client: str, reason: str, sqlstate: str) -> None:
        """A bearer token the MCP endpoint refused: an ``auth_failure`` with ``door: mcp`` and no
        user or database (no StartupMessage asked for any)."""
        record = self._base("auth_failure", slog)
        record["client"] = client
        record["user"] = None
        record["database"] = None
        record["reason"] = reason
        record["sqlstate"] = sqlstate
        record["door"] = "mcp"
        self.emit(record)

    def statement(self, conn: ClientConnection, request: StatementRequest, statement: Statement | None, verdict,
                  waits: bool, shadow: list | None = None) -> None:
        # ``request`` and ``statement`` typed: compiled, both are native classes whose fields are
        # read from their structs (untyped, each of the ~10 reads was a generic getattr); the
        # connection by its native base (`ConnectionState`), whose ``log`` is a field.
        state: ConnectionState = conn
        slog = state.log
        slog.statements += 1
        verdict_entry = self._verdict_entry(verdict)
        if verdict_entry[3]:  # (blocks)
            slog.refused += 1
        if self._results:  # a session's records stay in order (as `_base`)
            self.build_results()
        slog.seq += 1
        name = request.statement_name
        # (the entries' parts as locals: compiled, an optional tuple is one made for it)
        analysis: bytes | None = b""
        context_json: bytes | None = b""
        context_fields: dict[str, object] | None = None
        if statement is not None:
            analysis = self._analysis_entry(statement.analysis)[2]
            # The session state the text was read in, when not the session's start (a SET
            # search_path ran): identity tests first, ~0.1 µs per statement record; what the
            # context says read once per context (`_context_entry`: its fields are attributes of
            # a Python class, a generic lookup each from compiled code).
            context = statement.context
            if context is not None:
                entry = self._context_entry(context)
                path = entry[3]
                if (path is not slog.search_path and path != slog.search_path) or entry[4]:
                    context_json = entry[2]
                    context_fields = entry[1]
        if self._serialised:
            try:
                body = self._statement_body(slog, request, statement, name, analysis, context_json,
                                            verdict_entry[2], shadow)
            except Exception:  # a value orjson refuses: the mapping, on which the hand-over fails as always
                body = None
            if body is not None:
                self.emit(body, conn if waits else None)
                return
        # Built in one display, the keys in the order `_base` and the fields after it give them
        # (the order is the record's bytes, and so its hash): between a statement's arrival and
        # its bytes leaving, one dictionary built at once costs less than one filled key by key.
        if statement is not None:
            a = self._analysis_entry(statement.analysis)[1]
            if name:
                record = {"ts": timestamp(), "type": "statement", "session": slog.id, "seq": slog.seq,
                          "identity": slog.identity, "statement": request.seq, "protocol": request.protocol,
                          "name": name, "sql": statement.sql, "fingerprint": statement.fingerprint,
                          "kinds": a[0], "tables": a[1], "writes": a[2], "functions": a[3]}
            else:
                record = {"ts": timestamp(), "type": "statement", "session": slog.id, "seq": slog.seq,
                          "identity": slog.identity, "statement": request.seq, "protocol": request.protocol,
                          "sql": statement.sql, "fingerprint": statement.fingerprint,
                          "kinds": a[0], "tables": a[1], "writes": a[2], "functions": a[3]}
            if context_fields is not None:
                record.update(context_fields)
        else:
            record = {"ts": timestamp(), "type": "statement", "session": slog.id, "seq": slog.seq,
                      "identity": slog.identity, "statement": request.seq, "protocol": request.protocol}
            if name:
                record["name"] = name
            record["sql"] = request.sql
        record["verdict"] = verdict_entry[1]
        if shadow:
            record["shadow"] = shadow
        self.emit(record, conn if waits else None)

    def _statement_body(self, slog: SessionLog, request: StatementRequest, statement: Statement | None,
                        name: str | None, analysis: bytes | None, context: bytes | None,
                        verdict: bytes | None, shadow: list | None) -> bytes | None:
        """The statement record `statement` builds, serialised: the bytes orjson makes of it.

        Its parts that repeat are serialised once: the session's (`heads`), the analysis's, the
        context's and the verdict's (`_analysis_entry` ...), strings that recur (`_string`);
        only the text (and a shadow) is serialised per record. A JSON object's bytes are its
        ``"key":value`` pairs in order, joined by commas, in braces (orjson: compact, UTF-8).
        None if orjson refuses a part (raises if it refuses the text or a shadow).
        """
        if analysis is None or context is None or verdict is None:
            return None
        if slog.heads_of is not slog.identity:
            heads(slog)
        named = b',"name":%s' % self._string(name) if name else b""
        if statement is not None:
            fingerprint = statement.fingerprint
            read = _FINGERPRINT  # (then the analysis's fields, and the context's)
            fingerprinted = b"null" if fingerprint is None else self._string(fingerprint)
            sql = statement.sql
        else:
            read = fingerprinted = b""  # (and analysis and context are b"")
            sql = request.sql
        shadowed = b',"shadow":%s' % _dumps(shadow) if shadow else b""
        # (``ts``: digits and ``-:.TZ``, which JSON writes as they are)
        return b'{"ts":"%s%s%d%s%d,"protocol":%s%s,"sql":%s%s%s%s%s,"verdict":%s%s}' % (
            timestamp().encode(), slog.statement_head, slog.seq, slog.identity_json, request.seq,
            self._string(request.protocol), named, _dumps(sql), read, fingerprinted, analysis, context, verdict,
            shadowed)

    def _string(self, text: str) -> bytes:
        """``text`` serialised (a string that recurs: kept, up to 4096 of them)."""
        known = self._strings.get(text)
        if known is None:
            if len(self._strings) >= 4096:
                self._strings.clear()
            known = self._strings[text] = _dumps(text)
        return known

    # Statements that differ only in constants share one analysis, and verdicts are memoised:
    # their parts of a record are built once, and serialised once (the objects are kept, so their
    # ids stay theirs).

    def _analysis_entry(self, a) -> tuple[object, tuple[list, list, list, list], bytes | None]:
        """A statement record's ``kinds``, ``tables``, ``writes`` and ``functions``, and their
        ``,"kinds":[...],...,"functions":[...]``."""
        last = self._last_analysis
        if last[0] is a:
            return last
        known = self._by_analysis.get(id(a))
        if known is None:
            if len(self._by_analysis) >= 4096:
                self._by_analysis.clear()
            fields = (sorted(a.kinds), sorted(a.tables), sorted(a.writes), sorted(a.functions))
            both = _json_or_none({"kinds": fields[0], "tables": fields[1], "writes": fields[2],
                                "functions": fields[3]})
            known = self._by_analysis[id(a)] = (a, fields, None if both is None else b"," + both[1:-1])
        self._last_analysis = known
        return known

    def _context_entry(self, c) -> tuple[object, dict[str, object], bytes | None, tuple | None, bool]:
        """The session state a statement was read in, for when it is not the session's start,
        and its ``,"search_path":...``; and the context's search_path, and whether the record
        gives the state whatever the session's start (other possible schemas, or lexer settings
        not the default): built once per context (a session's context changes only with a SET
        and the like)."""
        last = self._last_context
        if last[0] is c:
            return last
        known = self._by_context.get(id(c))
        if known is None:
            if len(self._by_context) >= 4096:
                self._by_context.clear()
            fields: dict[str, object] = {"search_path": None if c.search_path is None else list(c.search_path)}
            if c.possible:
                fields["search_path_possible"] = sorted(c.possible)
            if not c.lexer.default:
                fields["lexer"] = {"standard_conforming_strings": c.lexer.standard_conforming_strings,
                                   "backslash_quote": c.lexer.backslash_quote}
            both = _json_or_none(fields)  # (never empty: search_path)
            known = self._by_context[id(c)] = (
                c, fields, None if both is None else b"," + both[1:-1], c.search_path,
                bool(c.possible) or (c.lexer is not DEFAULT_LEXER and not c.lexer.default))
        self._last_context = known
        return known

    def _verdict_entry(self, v) -> tuple[object, dict[str, object], bytes | None, bool]:
        """A statement record's ``verdict``, its serialised object, and whether it blocks."""
        last = self._last_verdict
        if last[0] is v:
            return last
        known = self._by_verdict.get(id(v))
        if known is None:
            if len(self._by_verdict) >= 4096:
                self._by_verdict.clear()
            fields: dict[str, object] = {"action": v.action, "policy": v.policy, "rule": v.rule, "reason": v.reason}
            known = self._by_verdict[id(v)] = (v, fields, _json_or_none(fields), fields["action"] == "block")
        self._last_verdict = known
        return known

    def approval(self, conn: ClientConnection, request_id: str, state: str, request, *,
                 approver: str | None = None, reason: str | None = None, waits: bool = False) -> None:
        record = self._base("approval", conn.log)
        record["request"] = request_id
        record["state"] = state
        record["statement"] = request.seq
        record["approver"] = approver
        record["reason"] = reason
        self.emit(record, conn if waits else None)

    def result(self, conn: ClientConnection, ex: Execution) -> None:
        """A result record for ``ex``: built once the turn's bytes have gone to the clients.

        Nothing waits on a result record, so building it can wait until the rows are on their
        way; it is written by the next barrier, before any later statement of the session leaves.
        """
        self._results.append((conn, ex))
        self._turns.wake()

    def after_sends(self) -> None:
        """Once a turn's sends have left: its result records built and, for sinks that take
        records early, handed over (serialised and sealed there), to be written by a later
        barrier or the lazy timer. A sink that cannot take them refuses the statements after."""
        if self._results:
            self.build_results()
        if self._early and self._kept:
            failed = self._hand_over(self._direct())
            if failed is not None:
                self._fail(failed)

    def build_results(self) -> None:
        results, self._results = self._results, []
        for conn, ex in results:
            try:
                self._result(conn, ex)
            except RecordingFailed:
                pass  # the recorder now refuses statements and says why

    def _result(self, conn: ClientConnection, ex: Execution) -> None:
        # One record per execution, on the hot path of prepared statements: built in one go.
        state: ConnectionState = conn
        slog = state.log
        rows, size = ex.rows, ex.bytes
        slog.rows += rows
        slog.bytes += size
        slog.seq += 1
        ex.record_seq = slog.seq
        upstream, own = ex.upstream_s, ex.pgwarden_s
        if self._serialised:
            # Built serialised (as `_statement_body`). The three floats are orjson's to write, each
            # (cheaper than one list split at its commas: bytes.split is a generic method call).
            durations = (_dumps(_ms(upstream + own)), _dumps(_ms(upstream)), _dumps(_ms(own)))
            tail: dict[str, object] = {}
            self._result_tail(conn, ex, rows, tail)
            body = self._result_body(slog, ex, rows, size, durations, tail)
            if body is not None:
                self.emit(body, lazy=True)
                return
            # orjson refuses a field: the mapping, on which the hand-over fails as it always did
            record = {"ts": timestamp(), "type": "result", "session": slog.id, "seq": slog.seq,
                      "identity": slog.identity, "statement": ex.seq, "rows": rows, "bytes": size,
                      "duration_ms": _ms(upstream + own), "upstream_ms": _ms(upstream),
                      "pgwarden_ms": _ms(own), "sqlstate": ex.sqlstate}
            record.update(tail)
        else:
            record = {"ts": timestamp(), "type": "result", "session": slog.id, "seq": slog.seq,
                      "identity": slog.identity, "statement": ex.seq, "rows": rows, "bytes": size,
                      "duration_ms": _ms(upstream + own), "upstream_ms": _ms(upstream),
                      "pgwarden_ms": _ms(own), "sqlstate": ex.sqlstate}
            self._result_tail(conn, ex, rows, record)
        self.emit(record, lazy=True)

    def _result_body(self, slog: SessionLog, ex: Execution, rows: int, size: int, durations: tuple[bytes, bytes, bytes],
                     tail: dict[str, object]) -> bytes | None:
        """The result record `_result` builds, serialised (as `_statement_body`): ``durations``
        the serialised ``duration_ms``, ``upstream_ms`` and ``pgwarden_ms``, ``tail`` the fields
        after ``sqlstate``; None if orjson refuses one of them."""
        sqlstate = ex.sqlstate
        try:
            state = b"null" if sqlstate is None else self._string(sqlstate)
            if slog.heads_of is not slog.identity:
                heads(slog)  # (an identity orjson refuses: a claim's lone surrogate, say)
        except Exception:
            return None
        if tail:
            rest = _json_or_none(tail)
            if rest is None:
                return None
            rest = b",%s" % rest[1:-1]
        else:
            rest = b""
        return b'{"ts":"%s%s%d%s%d,"rows":%d,"bytes":%d,"duration_ms":%s,"upstream_ms":%s,"pgwarden_ms":%s,' \
               b'"sqlstate":%s%s}' % (timestamp().encode(), slog.result_head, slog.seq, slog.identity_json, ex.seq,
                                     rows, size, durations[0], durations[1], durations[2], state, rest)

    def _result_tail(self, conn: ClientConnection, ex: Execution, rows: int, record: dict[str, object]) -> None:
        """A result record's fields after ``sqlstate``, those it has, added to ``record`` in order."""
        if ex.message is not None:
            record["error"] = ex.message
        if ex.bind is not None and self.parameter_bytes:
            record["parameters"] = ex.parameters(self.parameter_bytes)
        if ex.truncated:
            record["truncated"] = True
        if ex.suspended:
            record["suspended"] = True
        undone = ex.rolled_back_from
        if undone is not None:
            # the transaction ended here without committing: the results from that one's to this
            # one's tell what the agent was told, and none of it stays (red team fifteen)
            record["rolled_back_from"] = undone.record_seq or ex.record_seq
        if ex.masked:
            record.update(masked_fields(ex.masked))
        state: ConnectionState = conn
        if state.shadow is not None:
            from pgwarden.shadow import result_entries

            shadow = result_entries(state.shadow, rows, ex.shadow_masked)
            if shadow:
                record["shadow"] = shadow
        if ex.sample is not None:
            record["rows_sample"] = ex.sample
            if ex.sample_clipped:
                record["rows_sample_clipped"] = True

    def session_end(self, conn: ClientConnection, reason: str) -> None:
        slog = conn.log
        record = self._base("session_end", slog)
        record["reason"] = reason
        record["statements"] = slog.statements
        record["refused"] = slog.refused
        record["rows"] = slog.rows
        record["bytes"] = slog.bytes
        record["duration_ms"] = _ms(time.monotonic() - slog.started)
        self.emit(record, lazy=True)
