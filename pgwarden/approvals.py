"""A statement whose verdict is ``approve``: the request, the wait for its answer, and what the client sees.

The core owns everything about an approval that must hold whatever store a plugin brings
(docs/approvals.md, docs/plugins.md): the request's id and expiry, the record of every state
change, the time limit (``approvals.timeout_s``: a store that never answers cannot hold a
statement longer), the end of the wait when the statement is cancelled or its session ends
(the plugin's Deferred is cancelled and the request ends ``withdrawn``: never ``approved`` for a
statement that did not run), and the errors and notices of each mode:

* ``hold``: the client gets a NoticeResponse at once naming the request; approval runs the
  statement, denial or expiry raises 42501 in its place (`pgwarden.relay.refusal`: the server
  raises it, so transactions and pipelines behave as for any error).
* ``retry``: the store answers at once. ``required``: 42501 ``pgwarden: approval required:
  request <id>`` with a HINT to have it approved and send the same statement again;
  ``approved``: an earlier approval's grant covers this statement, which runs.

Extended-protocol statements are approved at their Bind, with the parameters that will run
(the Parse is `BIND_DECIDES`): each execution of a prepared statement is its own request.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import struct
import uuid
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden import marks
from pgwarden.hookspecs import PgwardenDeprecationWarning
from pgwarden.policy.kinds import APPROVE
from pgwarden.recorder import RecordingFailed
from pgwarden.relay.execution import _bind_parameters
from pgwarden.sql.reached import definitions, everything
from pgwarden.verdict import ApprovalAnswer, ApprovalRequest, Refusal, Verdict

if TYPE_CHECKING:
    from pgwarden.config import Approvals
    from pgwarden.metrics import Stats
    from pgwarden.plugins import PluginHost
    from pgwarden.policy.model import ApproveMatch, Policy
    from pgwarden.proxy.client import ClientConnection
    from pgwarden.recorder import Recorder
    from pgwarden.relay.engine import StatementRequest

log = Logger(namespace="pgwarden.approvals")

#: Parameter values longer than this are cut in the request (as in records); the whole value
#: still decides which statement an approval covers (`exact`).
SHOWN_PARAMETER_BYTES = marks.SHOWN_PARAMETER_BYTES

_RECORDING_FAILED = Refusal(
    "58030",
    "pgwarden: statement refused: records cannot be written",
    "pgwarden records every statement before it runs; a record sink is failing.",
    "This is not caused by the statement. Retry later; an operator sees the reason on pgwarden's /readyz.",
)


def new_request_id() -> str:
    """Short enough to read out and type, long enough never to be guessed or to collide."""
    return secrets.token_hex(5)


def approve_rule(policies: tuple[Policy, ...], verdict: Verdict) -> ApproveMatch | None:
    """The approve rule the verdict names (policy and rule, as the approve plugin names them)."""
    for policy in policies:
        if policy.name != verdict.policy:
            continue
        for i, rule in enumerate(policy.rules):
            spec = APPROVE.of(rule)
            if spec is not None and (rule.name or f"rules[{i}]") == verdict.rule:
                return spec
    return None


def policy_mode(policies: tuple[Policy, ...], verdict: Verdict) -> str | None:
    """The ``approval_mode`` of the policy the verdict names: between a rule's ``mode`` and
    ``approvals.mode`` (a policy for agents may say ``retry`` for all its approve rules)."""
    for policy in policies:
        if policy.name == verdict.policy:
            return policy.approval_mode
    return None


def parameter_sizes(bind: bytes | None) -> tuple[int | None, ...] | None:
    """The size in bytes of each parameter value of ``bind`` (None for NULL): what the request
    shows of a value longer than `SHOWN_PARAMETER_BYTES` is its beginning, and the approver is
    told how much more runs (red team thirteen)."""
    if bind is None:
        return None
    try:
        i = bind.index(b"\0", bind.index(b"\0", 5) + 1) + 1  # after the portal and statement names
        (nformats,) = struct.unpack_from("!H", bind, i)
        i += 2 + 2 * nformats
        (count,) = struct.unpack_from("!H", bind, i)
        i += 2
        sizes: list[int | None] = []
        for _ in range(count):
            (size,) = struct.unpack_from("!i", bind, i)
            i += 4
            if size < 0:
                sizes.append(None)
            else:
                sizes.append(size)
                i += size
        return tuple(sizes)
    except (ValueError, struct.error, IndexError):
        return None


def _numeric(raw: bytes) -> str:
    """A numeric's binary form (`numeric_send`): digits of base 10,000, weight, sign, scale."""
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", raw)
    if len(raw) != 8 + 2 * ndigits:
        raise ValueError("numeric of the wrong length")
    specials = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
    if sign in specials:
        return specials[sign]
    digits = struct.unpack_from(f"!{ndigits}h", raw, 8)
    whole = "".join(f"{d:04d}" for d in digits[:max(0, weight + 1)]) + "0000" * max(0, weight + 1 - ndigits)
    frac = "0000" * max(0, -weight - 1) + "".join(f"{d:04d}" for d in digits[max(0, weight + 1):])
    whole = whole.lstrip("0") or "0"
    text = whole + ("." + (frac + "0" * dscale)[:dscale] if dscale > 0 else "")
    return ("-" if sign == 0x4000 else "") + text


def _float(value: float) -> str:
    return "Infinity" if value == float("inf") else "-Infinity" if value == float("-inf") else repr(value)


_ORDINAL_2000 = datetime.date(2000, 1, 1).toordinal()  # PostgreSQL's epoch
#: The binary forms of the built-in types a driver sends in binary, read as the server reads them:
#: oid -> (the type's name, a reader of the value's bytes)
_BINARY_READERS: dict[int, tuple[str, Callable[[bytes], str]]] = {
    16: ("boolean", lambda b: {b"\x01": "true", b"\x00": "false"}[b]),
    20: ("bigint", lambda b: str(struct.unpack("!q", b)[0])),
    21: ("smallint", lambda b: str(struct.unpack("!h", b)[0])),
    23: ("integer", lambda b: str(struct.unpack("!i", b)[0])),
    26: ("oid", lambda b: str(struct.unpack("!I", b)[0])),
    700: ("real", lambda b: _float(struct.unpack("!f", b)[0])),
    701: ("double precision", lambda b: _float(struct.unpack("!d", b)[0])),
    1700: ("numeric", _numeric),
    25: ("text", lambda b: b.decode("utf-8")),
    1043: ("character varying", lambda b: b.decode("utf-8")),
    19: ("name", lambda b: b.decode("utf-8")),
    114: ("json", lambda b: b.decode("utf-8")),
    3802: ("jsonb", lambda b: b[1:].decode("utf-8") if b[:1] == b"\x01" else _unreadable()),
    2950: ("uuid", lambda b: str(uuid.UUID(bytes=b))),
    1082: ("date", lambda b: datetime.date.fromordinal(
        _ORDINAL_2000 + struct.unpack("!i", b)[0]).isoformat()),
    1114: ("timestamp", lambda b: _timestamp(struct.unpack("!q", b)[0])),
    1184: ("timestamptz", lambda b: _timestamp(struct.unpack("!q", b)[0]) + "+00"),
    17: ("bytea", lambda b: f"{len(b):,} bytes (the hex above)"),
}


def _unreadable() -> str:
    raise ValueError("unreadable")


def _timestamp(micros: int) -> str:
    if micros in (2**63 - 1, -(2**63)):
        return "infinity" if micros > 0 else "-infinity"
    when = datetime.datetime(2000, 1, 1) + datetime.timedelta(microseconds=micros)
    return when.isoformat(sep=" ")


def parameter_readings(bind: bytes | None, types: tuple[int, ...] = ()) -> tuple[str | None, ...] | None:
    """How each parameter of ``bind`` is read, for the approver (red team fifteen; round twelve
    left it open): a binary value is shown as hex, as in the records, which is the value only to
    whoever decodes it (`\\x7ff0000000000000` is a double precision Infinity: `n < $1`, every row)
    and the same characters as a text value that reads otherwise. Each reading says the format;
    for a binary value of a type the Parse declared and this knows, the value as the server reads
    it; else that it is not read here. None for NULL; None without parameters."""
    if bind is None:
        return None
    try:
        i = bind.index(b"\0", bind.index(b"\0", 5) + 1) + 1  # after the portal and statement names
        (nformats,) = struct.unpack_from("!H", bind, i)
        formats = struct.unpack_from(f"!{nformats}H", bind, i + 2)
        i += 2 + 2 * nformats
        (count,) = struct.unpack_from("!H", bind, i)
        i += 2
        out: list[str | None] = []
        for k in range(count):
            (size,) = struct.unpack_from("!i", bind, i)
            i += 4
            if size < 0:
                out.append(None)
                continue
            value = bind[i:i + size]
            i += size
            fmt = formats[k] if nformats > 1 else formats[0] if nformats == 1 else 0
            out.append(_reading(value, fmt, types[k] if k < len(types) else 0))
        return tuple(out)
    except (ValueError, struct.error, IndexError):
        return None


def _reading(value: bytes, fmt: int, oid: int) -> str:
    if fmt == 0:
        return "text format: the characters shown, as the statement reads them"
    if not oid:
        return ("binary format, its type left to the server (the Parse declared none): not read here; the hex "
                "shown is its bytes")
    known = _BINARY_READERS.get(oid)
    if known is None:
        return f"binary format, type oid {oid}: not read here; the hex shown is its bytes"
    name, read = known
    try:
        return f"binary {name}: {read(value)}"
    except (ValueError, struct.error, KeyError, UnicodeDecodeError, OverflowError):
        return f"binary {name}, malformed ({len(value)} bytes): the server refuses it"


def parameters_of(bind: bytes | None) -> tuple[tuple[str | None, ...] | None, bytes]:
    """The parameters as records show them, and the bytes that identify their values exactly."""
    if bind is None:
        return None, b""
    try:
        shown = tuple(_bind_parameters(bind, SHOWN_PARAMETER_BYTES))
    except (ValueError, struct.error, IndexError):
        shown = ("<malformed Bind>",)
    start = bind.index(b"\0", bind.index(b"\0", 5) + 1) + 1  # after the portal and statement names
    return shown, bind[start:]


def exact_key(sql: str, values: bytes, types: tuple[int, ...] = ()) -> str:
    """What identifies one exact statement for a retry grant: its text, its parameter values and
    the types its Parse declared for them (red team twelve: the same four bytes are 1.0 as a
    float4 and 1065353216 as an int4). Types left to the server (0), trailing, are no types."""
    h = hashlib.sha256(sql.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(values)
    n = len(types)
    while n and not types[n - 1]:
        n -= 1
    if n:
        h.update(b"\0types:" + ",".join(str(t) for t in types[:n]).encode())
    return h.hexdigest()


def as_answer(answer: object) -> ApprovalAnswer:
    """A store's answer as an `ApprovalAnswer`; a `Verdict` (plugin contract 1.0) still works."""
    if isinstance(answer, ApprovalAnswer):
        return answer
    if isinstance(answer, Verdict):
        warnings.warn("pgwarden_await_approval answering a Verdict is deprecated: answer an ApprovalAnswer",
                      PgwardenDeprecationWarning, stacklevel=2)
        if answer.action == "allow":
            return ApprovalAnswer.approved(answer.approver, answer.reason)
        return ApprovalAnswer.denied(answer.reason, answer.approver)
    return ApprovalAnswer.denied(f"the approval store answered {type(answer).__name__}, not an ApprovalAnswer")


class Wait:
    """One statement waiting for its approval: what ends it early (`withdraw`)."""

    def __init__(self, request: ApprovalRequest, waiting: Deferred[object]) -> None:
        self.request = request
        self.waiting = waiting
        #: why the statement stopped waiting (set by `withdraw`)
        self.withdrawn: str | None = None

    def withdraw(self, why: str) -> None:
        """The statement is cancelled or its session ended: the store's Deferred is cancelled."""
        if self.withdrawn is None and not self.waiting.called:
            self.withdrawn = why
            self.waiting.cancel()


class ApprovalWaits:
    """Starts approval waits for `pgwarden.decisions.Decisions` and turns their answers into outcomes."""

    def __init__(self, plugins: PluginHost, recorder: Recorder, stats: Stats, reactor: object,
                 approvals: Callable[[], Approvals], catalog: object = None) -> None:
        self.plugins = plugins
        #: the catalog source (`LiveCatalog`: ``fresh()``): a held statement approved is run only if
        #: what it reaches is still defined as when it was held (`_unchanged`)
        self.catalog = catalog
        #: the running sessions (`Application.connections`): none runs an approved statement while
        #: another's open transaction redefines objects (`_redefining_elsewhere`)
        self.connections: Callable[[], Iterable[ClientConnection]] = tuple
        self.recorder = recorder
        self.stats = stats
        self.reactor = reactor
        #: the running ``approvals:`` section (a reload may change it)
        self.approvals = approvals

    def begin(self, conn: ClientConnection, request: StatementRequest, statement, verdict: Verdict,
              runs: object, recorded: Callable[..., object], ran: Callable[[], None]) -> object:
        """The outcome of a statement that needs approval: a Refusal now, or a Deferred of its outcome."""
        cfg = self.approvals()
        now = self.reactor.seconds()  # type: ignore[attr-defined]
        spec = approve_rule(conn.session.policies, verdict)
        mode = (spec.mode if spec is not None else None) or policy_mode(conn.session.policies, verdict) or cfg.mode
        shown, values = parameters_of(request.bind)
        approval = ApprovalRequest(
            statement, verdict, conn.session, id=new_request_id(), parameters=shown, created=now,
            expires=now + cfg.timeout_s, mode=mode, exact=exact_key(request.sql, values, request.declared_types),
            approvers=spec.approvers if spec is not None else 1, session_id=conn.log.id,
            parameter_sizes=parameter_sizes(request.bind),
            parameter_readings=parameter_readings(request.bind, request.declared_types),
        )
        try:
            waiting = self.plugins.approval(approval, conn.session)
        except Exception:  # noqa: BLE001 - a store that raises holds nothing: refused
            log.failure("the approval store failed")
            return recorded(conn, request, statement, Verdict.block("the approval store failed"),
                            _store_failed(approval.id))
        if waiting is None:
            return recorded(conn, request, statement, verdict, Refusal(
                "42501",
                f"pgwarden: approval required: {verdict.reason or 'this statement needs a human'}",
                "No approval store is configured, so it cannot be approved here.",
                None,
            ))
        from pgwarden.relay.engine import PENDING

        held = recorded(conn, request, statement, verdict, PENDING)
        if held is not PENDING or not self._record(conn, approval, "requested", request, reason=verdict.reason):
            waiting.cancel()
            waiting.addErrback(lambda _f: None)
            return held if held is not PENDING else _RECORDING_FAILED
        self.stats.approval("requested")
        self.stats.approvals_pending += 1
        wait = Wait(approval, waiting)
        conn.approval_wait = wait
        waiting.addTimeout(cfg.timeout_s, self.reactor)  # type: ignore[arg-type]
        if mode == "hold" and not waiting.called:
            self._notify(approval)
            relay = conn.relay
            if relay is not None:
                relay.notice(*self._held_notice(approval, cfg))
                conn.flush_soon()

        def answered(answer: object) -> object:
            self._done(conn, wait)
            answer = as_answer(answer)
            if answer.state != "approved":
                return decided(answer)
            fixed = runs_no_definitions(statement)
            if conn.catalog_redefined and not fixed:
                return approved_if(OWN_OPEN, answer)
            if self._redefining_elsewhere(conn):
                return approved_if(OPEN, answer)
            if self.catalog is not None and hasattr(self.catalog, "confirm"):
                relay = conn.relay
                waits = relay is None or relay.runs_in_flight or after_others(statement.sql)
                return self._confirmed(statement, relay.backend_pid if relay is not None else 0, fixed,
                                       waits).addCallback(approved_if, answer)
            if mode == "hold" and self.catalog is not None:
                return self._unchanged(statement).addCallback(
                    lambda unchanged: approved_if(UNCHANGED if unchanged else CHANGED, answer))
            return decided(answer)

        def approved_if(found: str, answer: ApprovalAnswer) -> object:
            if found == UNCHANGED and getattr(conn, "phase", "relay") != "relay":
                found = GONE  # the session ended while the database was asked: it will not run
            if found == UNCHANGED:
                return decided(answer)
            conn.log.refused += 1
            if not self._record(conn, approval, "withdrawn", request, approver=answer.approver,
                                reason=f"approved, but {_NOT_RUN[found]}"):
                return _RECORDING_FAILED
            self.stats.approval("withdrawn")
            return _redefined(approval) if found == CHANGED else _redefining(approval, found)

        def decided(answer: ApprovalAnswer) -> object:
            if answer.state == "approved":
                if not self._record(conn, approval, "approved", request, approver=answer.approver,
                                    reason=_with_grant(answer), waits=True):
                    return _RECORDING_FAILED
                request.approved = True  # (a Bind's portal: run in its own pipeline only, `Portal.approved`)
                self.stats.approval("approved", self.reactor.seconds() - approval.created)  # type: ignore[attr-defined]
                ran()
                return runs
            conn.log.refused += 1
            if answer.state == "required":
                # Retry mode: the request stays pending for the approvers; this statement ends here.
                self._notify(approval)
                return self._required(approval, verdict, cfg)
            state = "denied" if answer.state == "denied" else "expired"
            if not self._record(conn, approval, state, request, approver=answer.approver, reason=answer.reason):
                return _RECORDING_FAILED
            if state == "denied":
                self.stats.approval("denied", self.reactor.seconds() - approval.created)  # type: ignore[attr-defined]
                return _denied(approval, answer)
            self.stats.approval("expired")
            return _expired(approval, cfg)

        def failed(failure: Failure) -> object:
            self._done(conn, wait)
            conn.log.refused += 1
            if wait.withdrawn is not None:
                state, reason = "withdrawn", wait.withdrawn
                refusal = Refusal("57014", "canceling statement due to user request")
            elif failure.check(DeferredTimeout, TimeoutError, CancelledError) is not None:
                state, reason = "expired", f"no decision within {cfg.timeout_s:g}s"
                refusal = _expired(approval, cfg)
            else:
                log.failure("the approval store failed", failure)
                state, reason = "withdrawn", f"the approval store failed: {failure.getErrorMessage()}"
                refusal = _store_failed(approval.id)
            self.stats.approval(state)
            if not self._record(conn, approval, state, request, reason=reason):
                return _RECORDING_FAILED
            return refusal

        return waiting.addCallbacks(answered, failed)

    # ------------------------------------------------------------------ helpers

    def _redefining_elsewhere(self, conn: ClientConnection) -> bool:
        """Whether another session has a transaction open in which it redefined objects (a view,
        a function, a trigger replaced: `catalog_redefined`, until its transaction ends). The
        catalog shows none of it until it commits, and an approved statement that reaches such an
        object waits for its lock and then runs on the new definition (red team twelve: `BEGIN;
        CREATE OR REPLACE VIEW ...` in a second session, the approved DELETE sent, then COMMIT).
        Fail closed: the approved statement does not run while any is open."""
        for other in self.connections():
            if other is not conn and other.catalog_redefined:
                return True
        return False

    def _confirmed(self, statement, backend_pid: int, own_rows: bool = False, waits: bool = False) -> Deferred[str]:
        """What the server says now, for a statement about to run on its approval (red team
        thirteen: what the sessions of this pgwarden show is not all): `UNCHANGED`; `CHANGED`
        when what it reaches is defined otherwise than when it was read for its request or grant
        key (another client's DDL, committed, that the change check had not seen yet: another
        pgwarden's session, an operator's); `OPEN` when another backend's open transaction
        redefines objects (another pgwarden's session, `BEGIN; CREATE OR REPLACE VIEW ...`);
        `UNCHECKED` when the server could not be asked (fail closed). ``own_rows``: the catalog
        rows ``backend_pid``'s own transaction rewrote do not count (`runs_no_definitions`).
        ``waits``: the statement goes to the server behind others (its text's, or its session's
        still running: `Relay.runs_in_flight`), which may wait for a row lock of another transaction; it is parsed
        after that, and so sees what that transaction made once it commits: any other open
        transaction that has written counts as `OPEN` (red team fourteen)."""
        context = getattr(statement, "context", None)
        before = context.catalog if context is not None else None
        analysis = statement.analysis

        def compare(answer: tuple) -> str:
            now, open_ = answer
            if open_ is None:
                return UNCHECKED
            if open_:
                return OPEN
            if before is None or now is before:
                return UNCHANGED
            if analysis.executes or "unknown" in analysis.kinds:
                same = everything(before) == everything(now)
            else:
                same = definitions(analysis, before) == definitions(analysis, now)
            return UNCHANGED if same else CHANGED

        def failed(_f: Failure) -> str:
            log.failure("the catalog could not be checked for an approved statement", _f)
            return UNCHECKED

        return self.catalog.confirm(backend_pid, own_rows, waits).addCallback(  # type: ignore[attr-defined]
            compare).addErrback(failed)

    def _unchanged(self, statement) -> Deferred[bool]:
        """Whether the views, functions, triggers, rules and policies of the database's own that
        ``statement`` reaches are defined now (once the catalog has read every change made so
        far) as they were when it was held (red team twelve: a view replaced by another session
        of the agent while a person read the request and its preview). An EXECUTE, whose prepared
        body the core does not keep: every definition of the database's own."""
        context = getattr(statement, "context", None)
        if context is None:
            return succeed(True)
        before = context.catalog
        analysis = statement.analysis

        def compare(now: object) -> bool:
            if now is before:
                return True
            if analysis.executes or "unknown" in analysis.kinds:
                return everything(before) == everything(now)  # type: ignore[arg-type]
            return definitions(analysis, before) == definitions(analysis, now)  # type: ignore[arg-type]

        def failed(_f: Failure) -> bool:
            log.failure("the catalog could not be read again for an approved statement", _f)
            return False  # fail closed

        return self.catalog.fresh().addCallback(compare).addErrback(failed)  # type: ignore[attr-defined]

    def _done(self, conn: ClientConnection, wait: Wait) -> None:
        self.stats.approvals_pending -= 1
        if conn.approval_wait is wait:
            conn.approval_wait = None

    def _record(self, conn: ClientConnection, approval: ApprovalRequest, state: str, request: StatementRequest,
                **fields: object) -> bool:
        if not self.recorder.active:
            return True
        try:
            self.recorder.approval(conn, approval.id, state, request, **fields)  # type: ignore[arg-type]
        except RecordingFailed:
            return False
        return True

    def _notify(self, approval: ApprovalRequest) -> None:
        def failed(_plugin: str) -> None:
            self.stats.notifier_failures += 1

        self.plugins.notify("pgwarden_approval_requested", on_failure=failed, request=approval)

    @staticmethod
    def _held_notice(approval: ApprovalRequest, cfg: Approvals) -> tuple[str, str | None, str]:
        verdict = approval.verdict
        return (
            f"pgwarden: waiting for approval: request {approval.id}",
            _why(verdict),
            (f"An approver decides it with `pgwarden approvals approve {approval.id}` (or deny){_inbox(cfg)}; "
             f"the statement runs once approved, or fails if denied or not decided within {cfg.timeout_s:g}s."),
        )

    @staticmethod
    def _required(approval: ApprovalRequest, verdict: Verdict, cfg: Approvals) -> Refusal:
        return Refusal(
            "42501",
            f"pgwarden: approval required: request {approval.id}",
            _why(verdict),
            f"Ask an approver to approve request {approval.id} (`pgwarden approvals approve {approval.id}`"
            f"{_inbox(cfg)}), then send the same statement again: once approved it runs. The request "
            f"expires in {cfg.timeout_s:g}s.",
        )


def _why(verdict: Verdict) -> str | None:
    where = [f"policy {verdict.policy!r}"] if verdict.policy else []
    if verdict.rule:
        where.append(f"rule {verdict.rule!r}")
    why = verdict.reason or "this statement needs a human's approval"
    return f"{why} ({', '.join(where)})." if where else f"{why}."


def _inbox(cfg: Approvals) -> str:
    return f", or the inbox at {cfg.inbox_url}" if cfg.inbox_url else ""


def _with_grant(answer: ApprovalAnswer) -> str | None:
    if answer.request is None:
        return answer.reason
    grant = f"covered by the approval of request {answer.request}"
    return f"{grant}: {answer.reason}" if answer.reason else grant


def _denied(approval: ApprovalRequest, answer: ApprovalAnswer) -> Refusal:
    by = f" by {answer.approver}" if answer.approver else ""
    return Refusal("42501", f"pgwarden: approval denied: {answer.reason or 'no reason given'}",
                   f"Request {approval.id} was denied{by}.",
                   "Do not send this statement again as it is; ask the approver what would be acceptable.")


def _expired(approval: ApprovalRequest, cfg: Approvals) -> Refusal:
    return Refusal("42501", "pgwarden: approval expired",
                   f"Request {approval.id} was not decided within {cfg.timeout_s:g}s.",
                   "Ask an approver to be ready, then send the statement again (a new request).")


#: What `ApprovalWaits._confirmed` (and the sessions' own flags) found before an approved statement runs.
UNCHANGED, CHANGED, OPEN, OWN_OPEN, UNCHECKED = "unchanged", "changed", "open", "own_open", "unchecked"
#: ... and the session ended meanwhile (the statement never runs: no `approved` record)
GONE = "gone"
#: ... as the withdrawn record's reason says it
_NOT_RUN = {
    CHANGED: "what the statement reaches was defined again while it waited",
    OPEN: "another session's open transaction redefines objects",
    OWN_OPEN: "this session's open transaction redefined objects before it",
    UNCHECKED: "the database could not be asked whether objects are being redefined",
    GONE: "the session ended before it ran",
}


def after_others(sql: str) -> bool:
    """Whether ``sql`` holds a statement after another that may wait at the server (anything but
    transaction control: BEGIN, COMMIT, SAVEPOINT, ...): the server parses each statement of a
    text when its turn comes, after those before it ran (red team fourteen: `UPDATE things ...
    WHERE id = 1; DELETE ... WHERE id > f(4)`, the UPDATE waiting for another transaction's row
    lock, the DELETE then calling the overload of `f` that transaction made). Unreadable: True."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        parsed = parse_sql(sql)
    except (ParseError, ValueError, RecursionError):
        return True
    return sum(1 for raw in parsed if not isinstance(raw.stmt, ast.TransactionStmt)) > 1


def _redefining(approval: ApprovalRequest, found: str = OPEN) -> Refusal:
    if found == GONE:
        return Refusal("57014", "canceling statement: the session ended", f"Request {approval.id}: nothing ran.")
    if found == OWN_OPEN:
        return Refusal(
            "55006", "pgwarden: approved statement not run: this session's transaction redefined objects",
            f"Request {approval.id} is approved, but this session's open transaction replaced a view, function, "
            "trigger, rule or policy before it, which neither the approvers nor pgwarden can see (not committed): "
            "the statement could do something else than what was approved. Nothing ran.",
            "End the transaction (COMMIT or ROLLBACK), then send the statement again.")
    if found == UNCHECKED:
        return Refusal(
            "55006", "pgwarden: approved statement not run: the database could not be asked whether objects are "
                     "being redefined",
            f"Request {approval.id} is approved, but pgwarden could not confirm with the database that what the "
            "statement reaches is still what was approved. Nothing ran.",
            "Send the statement again later; an operator sees the reason in pgwarden's log.")
    return Refusal("55006", "pgwarden: approved statement not run: another session is redefining objects",
                   f"Request {approval.id} is approved, but another session has a transaction open in which it "
                   "replaced a view, function, trigger, rule or policy, or holds a lock the statement would wait "
                   "for while objects made in that transaction, which nobody else sees yet, become visible: "
                   "once it commits, the statement could do something else than what was approved. Nothing ran.",
                   "Send the statement again once the other session's transaction has ended.")


def _redefined(approval: ApprovalRequest) -> Refusal:
    return Refusal("42501", "pgwarden: approval void: what the statement reaches was defined again while it waited",
                   f"Request {approval.id} was approved, but a view, function, trigger, rule or policy the "
                   "statement reaches was replaced since it was held: what it would do now is not what was "
                   "approved. Nothing ran.",
                   "Send the statement again: a new request shows what it does now.")


def _store_failed(request_id: str) -> Refusal:
    return Refusal("42501", "pgwarden: approval failed: the approval store did not answer",
                   f"Request {request_id} could not be kept or decided; nothing ran.",
                   "This is not caused by the statement: retry later, or ask an operator (see /readyz).")


#: DDL whose effect its text fixes: it runs no code of the database's own (`runs_no_definitions`)
_TEXT_FIXED = frozenset({"CreateStmt", "IndexStmt", "CreateSeqStmt", "AlterSeqStmt", "DropStmt", "RenameStmt",
                         "CommentStmt", "AlterTableStmt"})
#: ... of ALTER TABLE's subcommands, those that evaluate no expression over the table's rows (an
#: added column's DEFAULT, a CHECK validated, a type changed USING a cast run per row do)
_FIXED_ALTERS = frozenset({"AT_AddColumn", "AT_AddConstraint", "AT_DropColumn", "AT_DropConstraint",
                           "AT_SetNotNull", "AT_DropNotNull", "AT_ColumnDefault", "AT_AddIndex"})
_FIXED_CONSTRAINTS = frozenset({"CONSTR_PRIMARY", "CONSTR_UNIQUE", "CONSTR_FOREIGN", "CONSTR_NOTNULL",
                                "CONSTR_NULL"})


def runs_no_definitions(statement: Any) -> bool:
    """Whether ``statement`` is DDL whose effect its text alone fixes, whatever the views,
    functions, triggers, casts and domains of the database say: no row read or written, no
    function named, no type pgwarden does not know (`unknown`), and only statements that evaluate
    nothing over rows (CREATE TABLE without AS, CREATE INDEX of plain columns, ALTER TABLE adding a
    column of a built-in type without a DEFAULT, a key, dropping). Its session's own open
    transaction redefining objects cannot make it do something else than what was approved: a
    migration's DDL, each held and approved in one transaction (Alembic's), runs (the false
    refusal red team thirteen's check brought, found by tests/e2e/test_ordinary_tools.py)."""
    analysis = getattr(statement, "analysis", None)
    if analysis is None or analysis.kinds != frozenset({"ddl"}) or analysis.functions or analysis.writes \
            or analysis.fired_tables or analysis.indirect_writes or analysis.executes:
        return False
    try:
        from pglast import ast, parse_sql

        parsed = parse_sql(statement.sql)
    except Exception:  # noqa: BLE001 - what pglast cannot read is not known to run nothing
        return False
    for raw in parsed:
        node = raw.stmt
        if type(node).__name__ not in _TEXT_FIXED:
            return False
        if isinstance(node, ast.IndexStmt) and (node.whereClause is not None or any(
                getattr(e, "expr", None) is not None for e in node.indexParams or ())):
            return False
        if isinstance(node, ast.AlterTableStmt) and not all(_fixed_alter(cmd) for cmd in node.cmds or ()):
            return False
        if getattr(getattr(node, "behavior", None), "name", None) == "DROP_CASCADE":
            return False  # (what depends on it is the catalog's: a view replaced to read it goes too)
    return True


def _fixed_alter(cmd: Any) -> bool:
    from pglast import ast

    subtype = getattr(getattr(cmd, "subtype", None), "name", None)
    if subtype not in _FIXED_ALTERS:
        return False
    d = cmd.def_
    if subtype == "AT_AddColumn":
        names = [getattr(n, "sval", None) for n in (d.typeName.names or ())] if isinstance(d, ast.ColumnDef) \
            and d.typeName is not None else []
        return isinstance(d, ast.ColumnDef) and d.raw_default is None and names[:1] == ["pg_catalog"] and all(
            getattr(getattr(c, "contype", None), "name", None) in _FIXED_CONSTRAINTS for c in d.constraints or ())
    if subtype == "AT_AddConstraint":
        return getattr(getattr(d, "contype", None), "name", None) in _FIXED_CONSTRAINTS
    return True
