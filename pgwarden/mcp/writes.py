"""Writes through approval for MCP callers: request_write, approval_status, execute_approved.

The statement goes through the caller's own pgwarden session like any other, so the approve
rule, its mode, the approvers, self-approval, expiry and the records are the wire path's. What is
added is only what an agent whose tool calls return in seconds needs:

* ``request_write(sql, params, reason)`` runs the statement on a session of its own. Allowed, it
  is ``executed``; refused, ``denied`` (with the wire path's error). Needing approval it is
  ``pending_approval`` with pgwarden's request id: in hold mode the statement goes on waiting on
  its session (the NOTICE naming the request arrives at once); in retry mode it was refused at
  once and the request waits in the store. The id is remembered with the caller's subject and a
  hash of the exact statement (text and parameters): only that caller may ask about it or run it.
* ``approval_status(id, wait_seconds)``: where it stands (the held statement's end, or the store's
  answer through ``pgwarden_approval_status``), waiting up to ``wait_seconds``.
* ``execute_approved(id)``: the stored statement, once, with no SQL from the agent. In retry mode
  its one run is first claimed in the store (``pgwarden_approval_claim``: atomically, so that of
  two pgwarden processes racing on the same id one runs it), then it is sent again on the
  caller's session, where the approval's grant lets it through; in hold mode it already ran when
  it was approved, and this answers its result.

An id this process does not remember (another pgwarden sharing the store answered
``request_write``, or this one before a restart) is looked up in the store
(``pgwarden_approval_request``): the caller must be the request's subject, and the statement is
the store's row (text and parameters), sent again only if it gives the row's ``exact`` hash.
With ``approvals.store: memory`` another process's ids are unknown here, and the error says so.

Nobody approves their own request: the store refuses a decision by the requester's subject.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from pgwarden.approvals import exact_key, parameters_of
from pgwarden.mcp.protocol import CallContext, ToolError, UrlElicitationRequired
from pgwarden.mcp.sessions import Outcome, SessionUnavailable, WireClient, text_param
from pgwarden.verdict import ApprovalAnswer, StoredApproval
from pgwarden.wire import messages as m

if TYPE_CHECKING:
    from pgwarden.app import Application
    from pgwarden.identity import Identity
    from pgwarden.mcp.tools import DatabaseTools

_WAITING = re.compile(r"^pgwarden: waiting for approval: request (\S+)")
_REQUIRED = re.compile(r"^pgwarden: approval required: request (\S+)")
#: requests remembered for their callers (the oldest forgotten first)
MAX_PENDING = 1000


def statement_hash(sql: str, params: list[object]) -> str:
    return hashlib.sha256(json.dumps([sql, params], sort_keys=True, default=str).encode()).hexdigest()


def with_reason(sql: str, reason: str | None) -> str:
    """The agent's reason in a leading comment, for the approver (and the records) to read. Comment
    delimiters in it are broken up, so it stays one comment whatever it says."""
    if not reason:
        return sql
    text = " ".join(reason.split())[:500].replace("*/", "* /").replace("/*", "/ *")
    return f"/* reason: {text} */ {sql}"


@attrs.define
class PendingWrite:
    id: str
    subject: str
    sql: str
    params: list[object]
    hash: str
    mode: str  # hold | retry
    audit_id: str
    #: hold: the statement's outcome once it ended (approved and run, or refused), or why its
    #: session ended first
    finished: Outcome | None = None
    lost: SessionUnavailable | None = None
    executed: bool = False
    #: approval_status calls waiting for the held statement's end
    waiters: list[Deferred[None]] = attrs.Factory(list)
    #: known from the store, not from this process's request_write (another pgwarden's, or
    #: this one's before a restart): hold mode's result is not here
    from_store: bool = False

    def ended(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)


def _asked(app: Application, hook: str, **kwargs: str) -> Deferred[Any] | None:
    """A firstresult hook's answer as a Deferred; None when no plugin answers (no store). A
    plugin that raises fails the Deferred."""
    try:
        answer = getattr(app.plugins.pm.hook, hook)(**kwargs)
    except Exception:
        return fail()
    if answer is None:
        return None
    if isinstance(answer, Deferred):
        return answer
    if hasattr(answer, "__await__"):
        return Deferred.fromCoroutine(answer)
    return succeed(answer)


def approval_status(app: Application, request_id: str) -> Deferred[ApprovalAnswer | None]:
    """The store's answer about ``request_id`` (`pgwarden_approval_status`), None without one."""
    asked = _asked(app, "pgwarden_approval_status", request_id=request_id)
    if asked is None:
        return succeed(None)
    return asked.addErrback(lambda _f: None)


def exact_of(sql: str, params: list[object]) -> str:
    """`ApprovalRequest.exact` of ``sql`` sent with ``params`` as the internal session sends
    them (one Bind, text values): what a retry-mode grant is matched by."""
    bind = m.Bind("", "", (), tuple(text_param(p) for p in params), ()).encode()
    return exact_key(sql, parameters_of(bind)[1])


def offers_url_elicitation(context: CallContext) -> bool:
    """A 2025-11-25 client that declared URL-mode elicitation (2026-07-28 retired the -32042 error)."""
    elicitation = context.capabilities.get("elicitation")
    return context.version == "2025-11-25" and isinstance(elicitation, dict) and "url" in elicitation


class Writes:
    """The three write tools of one endpoint."""

    def __init__(self, app: Application, tools: DatabaseTools, result: Callable[..., dict[str, Any]]) -> None:
        self.app = app
        self.tools = tools
        self.sessions = tools.sessions
        self.pending: dict[str, PendingWrite] = {}
        self._result = result

    def _remember(self, pending: PendingWrite) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.pop(next(iter(self.pending)))
        self.pending[pending.id] = pending

    def _mine(self, arguments: Mapping[str, Any], identity: Identity) -> Deferred[PendingWrite]:
        """The caller's request ``id``: remembered here, else as the store keeps it."""
        request_id = arguments.get("id")
        if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
            raise ToolError("id: expected the request id request_write answered")
        pending = self.pending.get(request_id)
        if pending is not None:
            if pending.subject != identity.subject:
                raise ToolError(f"no approval request {request_id} of yours (ids are those request_write answered)")
            return succeed(pending)
        asked = _asked(self.app, "pgwarden_approval_request", request_id=request_id)
        if asked is None:
            raise ToolError(self._unknown(request_id))

        def found(stored: StoredApproval | None) -> PendingWrite:
            # Another subject's request is answered as an unknown one: its existence is not theirs to learn.
            if stored is None or stored.subject != identity.subject:
                raise ToolError(self._unknown(request_id))
            params: list[object] = list(stored.parameters or ())
            return PendingWrite(stored.id, stored.subject, stored.sql, params, stored.exact,
                                stored.mode, "", from_store=True)

        return asked.addCallback(found)

    def _unknown(self, request_id: str) -> str:
        if self.app.config.approvals.store == "memory":
            return (f"approval request {request_id} is unknown to this pgwarden process: with approvals.store: "
                    "memory an id lives only in the process that answered request_write (not on another replica, "
                    "not after a restart); a shared store (approvals.store: postgres) resolves it on any of them")
        return f"no approval request {request_id} of yours (ids are those request_write answered)"

    def _ended(self, pending: PendingWrite, outcome: Outcome) -> dict[str, Any]:
        """What a statement's outcome means to the caller."""
        fields = self.tools.outcome_fields(outcome)
        if outcome.error is None:
            return self._result({"status": "executed", "id": pending.id, **fields})
        status = "denied"
        if outcome.error.message.startswith("pgwarden: approval expired") or outcome.error.sqlstate == "57014":
            status = "expired"
        return self._result({"status": status, "id": pending.id, **fields}, error=True)

    # ------------------------------------------------------------------ request_write

    def request_write(self, arguments: Mapping[str, Any], context: CallContext) -> Deferred[dict[str, Any]]:
        identity = context.identity
        if not self.tools.may_write(identity):
            return succeed(self._result({"status": "denied", "error": {
                "sqlstate": "42501", "message": "pgwarden: blocked: your policies let no write through"}},
                error=True))
        sql, params = self.tools.sql_arguments(arguments)
        reason = arguments.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ToolError("reason: expected a sentence for the approver")
        text = with_reason(sql, reason)
        first: Deferred[dict[str, Any]] = Deferred()
        held: list[PendingWrite] = []

        def opened(client: WireClient) -> None:
            def noticed(message: str) -> None:
                found = _WAITING.match(message)
                if found is None or first.called:
                    return
                pending = PendingWrite(found[1], identity.subject, text, params, statement_hash(text, params),
                                       "hold", f"{client.session_id}:{client.statements}")
                held.append(pending)
                self._remember(pending)
                first.callback(self._pending(pending, context))

            def ended(outcome: Outcome) -> None:
                client.on_notice = None
                client.close()  # a session of its own: never pooled
                for pending in held:
                    pending.finished = outcome
                    pending.ended()
                if not first.called:
                    try:
                        answer = self._first_outcome(outcome, identity, text, params, context)
                    except Exception:  # UrlElicitationRequired, or a fault: the call's answer
                        first.errback(Failure())
                    else:
                        first.callback(answer)

            def lost(failure: Failure) -> None:
                client.close()
                for pending in held:
                    error = failure.value
                    pending.lost = error if isinstance(error, SessionUnavailable) else SessionUnavailable(
                        "08006", "pgwarden: the session ended")
                    pending.ended()
                if not first.called:
                    first.errback(failure)

            client.on_notice = noticed
            client.run(text, params, self.tools.settings().max_rows).addCallbacks(ended, lost)

        self.sessions.dedicated(identity).addCallbacks(opened, first.errback)
        return first

    def _first_outcome(self, outcome: Outcome, identity: Identity, text: str, params: list[object],
                       context: CallContext) -> dict[str, Any]:
        error = outcome.error
        required = _REQUIRED.match(error.message) if error is not None else None
        if required is not None:
            pending = PendingWrite(required[1], identity.subject, text, params, statement_hash(text, params),
                                   "retry", outcome.audit_id)
            self._remember(pending)
            return self._pending(pending, context)
        pending = PendingWrite("", identity.subject, text, params, "", "none", outcome.audit_id)
        answer = self._ended(pending, outcome)
        answer["structuredContent"].pop("id", None)
        return answer

    def _pending(self, pending: PendingWrite, context: CallContext) -> dict[str, Any]:
        structured: dict[str, Any] = {
            "status": "pending_approval", "id": pending.id, "mode": pending.mode, "audit_id": pending.audit_id,
            "next": ("call approval_status(id, wait_seconds) until it is decided; then execute_approved(id)"
                     if pending.mode == "retry" else
                     "the statement waits on pgwarden until a person decides: approval_status(id, wait_seconds) "
                     "answers its result"),
        }
        inbox = self.app.config.approvals.inbox_url
        if inbox:
            structured["inbox"] = inbox
            if pending.mode == "retry" and offers_url_elicitation(context):
                # The person at the client's side is shown the inbox; the client then sends the
                # same call again, which the approval's grant lets through once.
                raise UrlElicitationRequired(
                    f"pgwarden: request {pending.id} needs a person's approval", [{
                        "mode": "url", "elicitationId": pending.id, "url": inbox,
                        "message": f"pgwarden: the statement of request {pending.id} needs an approver's yes "
                                   f"(not the requester's). Once approved, the same call runs it once."}])
        return self._result(structured)

    # ------------------------------------------------------------------ approval_status

    def approval_status(self, arguments: Mapping[str, Any], context: CallContext) -> Deferred[dict[str, Any]]:
        wait = arguments.get("wait_seconds", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 60:
            raise ToolError("wait_seconds: expected a number from 0 to 60")

        def status(pending: PendingWrite) -> Deferred[dict[str, Any]]:
            if pending.mode == "hold" and not pending.from_store:
                return self._held(pending, float(wait))
            return self._polled(pending, float(wait))

        return self._mine(arguments, context.identity).addCallback(status)

    def _held(self, pending: PendingWrite, wait: float) -> Deferred[dict[str, Any]]:
        if pending.finished is not None or pending.lost is not None or wait <= 0:
            return succeed(self._held_answer(pending))
        waiter: Deferred[None] = Deferred()
        pending.waiters.append(waiter)
        timer = self.app.reactor.callLater(wait, lambda: None if waiter.called else waiter.callback(None))

        def answer(_: None) -> dict[str, Any]:
            if timer.active():
                timer.cancel()
            return self._held_answer(pending)

        return waiter.addCallback(answer)

    def _held_answer(self, pending: PendingWrite) -> dict[str, Any]:
        if pending.lost is not None:
            return self._result({"status": "expired", "id": pending.id, "error": {
                "sqlstate": pending.lost.sqlstate, "message": pending.lost.message}}, error=True)
        if pending.finished is None:
            return self._result({"status": "pending_approval", "id": pending.id, "mode": "hold"})
        return self._ended(pending, pending.finished)

    def _polled(self, pending: PendingWrite, wait: float) -> Deferred[dict[str, Any]]:
        deadline = self.app.reactor.seconds() + wait

        def asked(answer: ApprovalAnswer | None) -> Deferred[dict[str, Any]] | dict[str, Any]:
            if answer is None:
                return self._result({"status": "unknown", "id": pending.id, "error": {
                    "message": "pgwarden: the approval store has no such request"}}, error=True)
            if answer.state == "required" and self.app.reactor.seconds() < deadline:
                later: Deferred[None] = Deferred()
                self.app.reactor.callLater(min(0.25, max(0.0, deadline - self.app.reactor.seconds())),
                                           later.callback, None)
                return later.addCallback(lambda _: approval_status(self.app, pending.id)).addCallback(asked)
            status = {"required": "pending_approval"}.get(answer.state, answer.state)
            structured: dict[str, Any] = {"status": status, "id": pending.id, "mode": pending.mode}
            if answer.approver:
                structured["decided_by"] = answer.approver
            if answer.reason:
                structured["reason"] = answer.reason
            if status == "approved":
                structured["next"] = ("execute_approved(id) runs the statement once" if pending.mode == "retry" else
                                      "the held statement ran on the pgwarden process whose session held it; its "
                                      "result went there (and to the records)")
            return self._result(structured, error=status in ("denied", "expired"))

        return approval_status(self.app, pending.id).addCallback(asked)

    # ------------------------------------------------------------------ execute_approved

    def execute_approved(self, arguments: Mapping[str, Any], context: CallContext) -> Deferred[dict[str, Any]]:
        return self._mine(arguments, context.identity).addCallback(self._execute, context)

    def _execute(self, pending: PendingWrite, context: CallContext) -> Deferred[dict[str, Any]]:
        if pending.mode == "hold":  # it ran (or not) when people decided: its result, or where it stands
            return self._polled(pending, 0.0) if pending.from_store else self._held(pending, 0.0)
        if pending.executed:
            return succeed(self._ran_already(pending))
        # The statement that will be sent must be the one approved: for an id of this process,
        # the one request_write sent; for one from the store, the row's text and parameters.
        exact = exact_of(pending.sql, pending.params)
        if pending.from_store and exact != pending.hash:
            return succeed(self._result({"status": "denied", "id": pending.id, "error": {
                "message": f"pgwarden: request {pending.id}'s statement cannot be sent again from the approval store "
                           "exactly as it was approved (a parameter longer than the store keeps, or not sent "
                           "through MCP): run it with execute_approved on the pgwarden that answered request_write"}},
                error=True))
        claim = _asked(self.app, "pgwarden_approval_claim", request_id=pending.id, subject=context.identity.subject)
        if claim is None:  # no store plugin with claims: once per this process, as the store says now
            return approval_status(self.app, pending.id).addCallback(self._approved_here, pending, context)

        def claimed(stored: StoredApproval | None) -> Deferred[dict[str, Any]] | dict[str, Any]:
            if stored is None:
                return self._not_claimed(pending)
            pending.executed = True
            if stored.exact != exact:  # pragma: no cover - the store's row is the one request_write made
                return self._result({"status": "denied", "id": pending.id, "error": {
                    "message": f"pgwarden: request {pending.id}'s stored statement is not the one approved"}},
                    error=True)
            return self._run(pending, context)

        return claim.addCallback(claimed)

    def _ran_already(self, pending: PendingWrite) -> dict[str, Any]:
        return self._result({"status": "denied", "id": pending.id, "error": {
            "message": "pgwarden: this request's statement has run already (once per approval)"}}, error=True)

    def _not_claimed(self, pending: PendingWrite) -> Deferred[dict[str, Any]]:
        """Why the store would not give the run: claimed already, or not approved (yet)."""

        def why(stored: StoredApproval | None) -> dict[str, Any]:
            if stored is not None and stored.executed:
                pending.executed = True
                return self._ran_already(pending)
            return self._not_approved(pending, stored.answer if stored is not None else None)

        asked = _asked(self.app, "pgwarden_approval_request", request_id=pending.id)
        return (asked if asked is not None else succeed(None)).addCallback(why)

    def _not_approved(self, pending: PendingWrite, answer: ApprovalAnswer | None) -> dict[str, Any]:
        state = "unknown" if answer is None else {"required": "pending_approval"}.get(answer.state, answer.state)
        return self._result({"status": state, "id": pending.id, "error": {
            "message": f"pgwarden: request {pending.id} is not approved ({state})"}}, error=True)

    def _approved_here(self, answer: ApprovalAnswer | None, pending: PendingWrite,
                       context: CallContext) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if answer is None or answer.state != "approved":
            return self._not_approved(pending, answer)
        if pending.executed:
            return self._ran_already(pending)
        pending.executed = True  # once, whatever happens next
        return self._run(pending, context)

    def _run(self, pending: PendingWrite, context: CallContext) -> Deferred[dict[str, Any]]:
        settings = self.tools.settings()
        return self.tools.run(context.identity, pending.sql, pending.params, settings.max_rows,
                              settings.max_timeout_ms).addCallback(lambda ran: self._ended(pending, ran[1]))
