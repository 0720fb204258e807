"""Built-in plugin ``approve``: interprets ``approve`` rules and keeps their requests until people decide.

What it does, and what the core does (`pgwarden.approvals`): this plugin says which
statements need approval (``pgwarden_check``: `Verdict.approve`), keeps each request in an
`ApprovalStore` with its impact preview (`preview`) and answers the core's
``pgwarden_await_approval`` — in hold mode when the request is decided, in retry mode at once
(an earlier approval's grant covers the statement, or the request now waits). It serves the
approvals API (`api`) on the admin port and says on /readyz when its store is down. The core
owns the request id, the time limit, cancellation, the records and the client's errors.

Stores: ``memory`` here, ``postgres`` in `postgres_store` (a fleet's shared queue); others
register a factory in `STORES` (``approvals.store``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError as _Cancelled
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden.api import (
    APPROVALS,
    APPROVE,
    AUTH_JWT,
    UPSTREAM,
    ApprovalRequest,
    Approvals,
    ConfigProblem,
    Policy,
    Reactor,
    Sections,
    Session,
    Statement,
    StoredApproval,
    StoreKey,
    Verdict,
    hookimpl,
)
from pgwarden.identity import Identity, TokenVerifier
from pgwarden.session import PROTOCOL_PREPARED
from pgwarden.sql.analysis import Analysis
from pgwarden.sql.resolve import resolve
from pgwarden.verdict import ApprovalAnswer
from pgwarden_plugins.approve.grant_key import bound, definitions, grant_key
from pgwarden_plugins.approve.memory import MemoryStore
from pgwarden_plugins.approve.store import ApprovalRules, ApprovalStore, Preview, StoredRequest
from pgwarden_plugins.block import PREPARED, SURE, VerdictMemo, judged, matches

if TYPE_CHECKING:
    from twisted.web.resource import Resource

    # The approval API (twisted.web's server, the inbox's pages) and the notifiers (its HTTP
    # client) are imported when the admin port or a notifier is made: `pgwarden check` and
    # `explain`, which make neither, started ~0.5 s sooner without them.
    from pgwarden_plugins.approve.api import ApprovalsRoot
    from pgwarden_plugins.approve.notify import Notifiers

log = Logger(namespace="pgwarden.approvals")

#: requests whose stored form waits for their notification, at most (the oldest are forgotten)
KEEP_FOR_NOTIFYING = 1000

#: ``approvals.store`` -> a factory of the store: (approvals, sections, reactor) -> ApprovalStore.
#: A store that keeps connections implements ``close()``.
StoreFactory = Callable[[Approvals, Sections, Reactor], ApprovalStore]

#: The session's SQL-level PREPAREs as this plugin saw them: name -> the digests of the texts of
#: every statement that PREPAREd it (none forgotten, as the block plugin's `PREPARED`). A retry
#: grant of an EXECUTE is bound to them (`meaning`). Absent once a client prepared without end.
PREPARED_TEXTS = StoreKey["dict[str, set[str]] | None"]("approve.prepared_texts")


def _keep_prepares(statement: Statement, session: Session) -> None:
    """Keeps the text of a statement that PREPAREs, under each name it prepares."""
    store = session.store
    texts = store.setdefault(PREPARED_TEXTS, {})
    if texts is None:
        return
    digest = hashlib.sha256(statement.sql.encode("utf-8", "surrogatepass")).hexdigest()
    for name, _body, _syntax in statement.analysis.prepares:
        kept = texts.setdefault(name, set())
        kept.add(digest)
        if len(kept) > 100 or len(texts) > 10_000:
            store[PREPARED_TEXTS] = None  # every name unknown from here on
            return


def meaning(statement: Statement, session: Session) -> list[object]:
    """What the statement's text means in its session, beyond its analysis (`grant_key.bound`):
    its search_path and, for an EXECUTE, the texts of every statement that PREPAREd each name it
    runs, and the definitions of the database's own objects it reaches (`grant_key.definitions`,
    the prepared bodies' too). A name whose statement this plugin may not have seen (prepared unseen, by a protocol
    Parse, by a function's body, before the session had approve rules) binds to a value of its own
    each time: no retry grant covers that EXECUTE (fail closed; hold mode approves it each time)."""
    analysis = statement.analysis
    executed: list[object] | None = None
    bodies: list[Analysis] = []
    if analysis.executes:
        store = session.store
        texts = store.get(PREPARED_TEXTS, None)
        prepared = store.get(PREPARED, None) or {}
        sure = store.get(SURE, None)
        taken = store.get(PROTOCOL_PREPARED, None) or set()
        executed = []
        for name in sorted(set(analysis.executes)):
            if texts is None or name not in texts or not prepared.get(name) or name in taken or (
                    sure is not None and name not in sure):
                executed.append([name, "unseen", secrets.token_hex(16)])
            else:
                executed.append([name, sorted(texts[name])])
                if statement.context is not None:
                    bodies += [resolve(syntax, statement.context) for syntax in prepared[name]]
    context = statement.context
    return bound(context, executed, definitions(analysis, context.catalog if context is not None else None, bodies))


def key_of(statement: Statement, session: Session) -> str:
    """The statement's grant key in its session (`grant_key.grant_key`)."""
    return grant_key(statement.fingerprint, statement.analysis, meaning(statement, session))
def _postgres_store(approvals: Approvals, _sections: Sections, reactor: Reactor) -> ApprovalStore:
    from pgwarden_plugins.approve.postgres_store import PostgresStore

    assert approvals.postgres is not None  # required with store: postgres, by the config's validation
    return PostgresStore.opened(approvals.postgres, reactor)


STORES: dict[str, StoreFactory] = {"memory": lambda _a, _s, _r: MemoryStore(), "postgres": _postgres_store}


def rules_of(approvals: Approvals) -> ApprovalRules:
    return ApprovalRules(tuple(approvals.approver_groups), reason_on_deny=True,
                         reason_on_approve=approvals.reason_on_approve,
                         max_grant_minutes=approvals.max_grant_minutes)


def stored_request(request: ApprovalRequest, preview: Preview | None) -> StoredRequest:
    """The store's form of the core's request."""
    statement, verdict, session = request.statement, request.verdict, request.session
    identity = session.identity
    return StoredRequest(
        id=request.id, subject=identity.subject, groups=tuple(sorted(identity.groups)),
        session=request.session_id, sql=statement.sql, fingerprint=statement.fingerprint,
        params_hash=request.exact, created=request.created, expires=request.expires,
        parameters=request.parameters, kinds=tuple(sorted(statement.kinds)),
        tables=tuple(sorted(statement.tables)), policy=verdict.policy, rule=verdict.rule,
        reason=verdict.reason, mode="retry" if request.mode == "retry" else "hold",
        approvals_needed=request.approvers, preview=preview,
        grant_key=key_of(statement, session), parameter_sizes=request.parameter_sizes,
        parameter_readings=request.parameter_readings,
    )


def approval_of(stored: StoredRequest) -> StoredApproval:
    """The core's view of a stored request (for the MCP endpoint, on any pgwarden of the store)."""
    answer = ApprovalAnswer.required() if stored.state == "pending" else answer_of(stored)
    return StoredApproval(stored.id, stored.subject, stored.mode, stored.sql, stored.parameters, stored.params_hash,
                          answer, stored.executed)


def answer_of(stored: StoredRequest) -> ApprovalAnswer:
    """What the core is told once a request has ended."""
    approvers = ", ".join(stored.approvers) or None
    if stored.state == "approved":
        reasons = "; ".join(d.reason for d in stored.decisions if d.approved and d.reason) or None
        return ApprovalAnswer.approved(approvers, reasons)
    if stored.state == "denied":
        denier = next((d.approver for d in stored.decisions if not d.approved), None)
        return ApprovalAnswer.denied(stored.closed_reason, denier)
    return ApprovalAnswer.expired(stored.closed_reason)


def still_granted(stored: StoredRequest, approvers: int, approvals: Approvals, now: float) -> bool:
    """Whether ``stored``'s grant still covers a statement whose rule needs ``approvers`` under the
    running ``approvals:`` section (a reload may have made either stricter since the approval).

    * approved by fewer people than the rule that holds the statement now needs (a reload made
      it stricter, or another policy of the subject's holds it): no grant (red team twelve);
    * approved by people of whom fewer than that are approvers now (`approver_groups` no longer
      holds any group their tokens had when they decided): no grant (red team thirteen);
    * a window longer than `max_grant_minutes` now allows ends where that many minutes after the
      approval end (red team thirteen: a 60-minute window went on after a reload to 5).
    """
    if stored.approvals_needed < approvers:
        return False
    groups = set(approvals.approver_groups)
    if len({d.approver for d in stored.decisions if d.approved and groups & set(d.groups)}) < approvers:
        return False
    if stored.grant_until is not None:
        approved_at = stored.closed_at if stored.closed_at is not None else stored.created
        if now >= approved_at + approvals.max_grant_minutes * 60:
            return False
    return True


class Approving:
    """The ``approve`` plugin: one store, one previewer, one API for this pgwarden."""

    #: its check only reads approve rules: not called for sessions without any (no cost to them)
    pgwarden_checks_only_its_rules = True

    def __init__(self) -> None:
        self.store: ApprovalStore | None = None
        self._store_kind: str | None = None
        self.approvals = Approvals()
        self.reactor: Reactor | None = None
        self.previewer: object | None = None
        self._verifier: TokenVerifier | None = None
        self._having: dict[int, tuple[tuple[Policy, ...], bool]] = {}
        self._verdicts: VerdictMemo = {}
        self._root: ApprovalsRoot | None = None
        self.notifiers: Notifiers | None = None
        #: each request's stored form (with its preview) once kept, for its notification
        self._kept: OrderedDict[str, Deferred[StoredRequest | None]] = OrderedDict()

    # ------------------------------------------------------------------ declarations

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [APPROVE]

    @hookimpl
    def pgwarden_config_sections(self):
        return [APPROVALS, AUTH_JWT, UPSTREAM]

    @hookimpl
    def pgwarden_validate(self, sections: Sections) -> Sequence[ConfigProblem] | None:
        approvals = sections[APPROVALS]
        if approvals is not None and approvals.store == "postgres" and approvals.postgres is not None:
            from pgwarden_plugins.approve.pg_link import config_problems

            return config_problems(approvals.postgres)
        return None

    @hookimpl
    def pgwarden_configure(self, sections: Sections, reactor: Reactor) -> None:
        approvals = sections[APPROVALS] or Approvals()
        kind = approvals.store  # a reload keeps the store, and the requests pending in it
        if self.store is None or kind != self._store_kind:
            factory = STORES.get(approvals.store)
            if factory is None:
                from pgwarden.api import ConfigProblem

                raise ConfigProblem(("approvals", "store"), f"no approval store {approvals.store!r} is loaded "
                                                            f"(known: {', '.join(sorted(STORES))})")
            self._close_store()
            self.store, self._store_kind = factory(approvals, sections, reactor), kind
        self.approvals, self.reactor = approvals, reactor
        if self.notifiers is not None:
            self.notifiers.stop()
        self.notifiers = None
        if approvals.notify:
            from pgwarden_plugins.approve.notify import Notifiers

            self.notifiers = Notifiers(reactor, approvals.notify, approvals.inbox_url)
        jwt = sections[AUTH_JWT]
        try:
            self._verifier = TokenVerifier(jwt, reactor) if jwt is not None else None
        except (OSError, ValueError) as e:
            log.error("approver tokens cannot be verified: {err}", err=e)
            self._verifier = None
        upstream = sections[UPSTREAM]
        self.previewer = None
        if approvals.preview and upstream is not None and hasattr(reactor, "getThreadPool"):
            from pgwarden_plugins.approve.preview import Previewer

            self.previewer = Previewer(upstream, reactor, approvals.preview_timeout_s)

    @hookimpl
    def pgwarden_stop(self) -> None:
        self._close_store()
        if self.notifiers is not None:
            self.notifiers.stop()

    def _close_store(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        if self.previewer is not None:
            self.previewer.close()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ decisions

    @hookimpl
    def pgwarden_check(self, statement: Statement, session: Session) -> Verdict | None:
        policies = session.policies
        known = self._having.get(id(policies))
        if known is None or known[0] is not policies:
            having = any(APPROVE.of(rule) is not None for p in policies for rule in p.rules)
            if len(self._having) > 1000:
                self._having.clear()
            self._having[id(policies)] = known = (policies, having)
        if not known[1]:
            return None
        if (statement.analysed or statement.analysis).prepares:  # (the attribute first: the property is a call)
            _keep_prepares(statement, session)
        return judged(self._verdicts, self._judge, statement, session, policies)

    @staticmethod
    def _judge(statement: object, policies: tuple[Policy, ...]) -> Verdict | None:
        for policy in policies:
            for i, rule in enumerate(policy.rules):
                spec = APPROVE.of(rule)
                if spec is None:
                    continue
                hit = matches(spec, statement)
                if not hit and "unknown" in statement.kinds:  # type: ignore[attr-defined]
                    # What pgwarden cannot analyse may be what the rule names (a DELETE built at
                    # run time, an EXECUTE of a statement prepared unseen): it waits too. (The
                    # block plugin refuses it first, unless disabled or an allow rule names it.)
                    hit = ["unknown"]
                if hit:
                    reason = rule.reason or (
                        "statements pgwarden cannot analyse need approval" if hit == ["unknown"]
                        else f"{', '.join(h.upper() if h.isalpha() else h for h in hit)} needs approval")
                    return Verdict.approve(reason, policy=policy.name, rule=rule.name or f"rules[{i}]")
        return None

    @hookimpl
    def pgwarden_await_approval(self, request: ApprovalRequest, session: Session) -> Deferred[ApprovalAnswer] | None:
        store = self.store
        if store is None:
            return None
        if request.mode == "retry":
            return self._retry(store, request)
        return self._hold(store, request)

    @hookimpl
    def pgwarden_approval_status(self, request_id: str) -> Deferred[ApprovalAnswer | None] | None:
        store = self.store
        if store is None:
            return None

        def status(stored: StoredRequest | None) -> ApprovalAnswer | None:
            if stored is None:
                return None
            return ApprovalAnswer.required() if stored.state == "pending" else answer_of(stored)

        return store.get(request_id).addCallback(status)

    @hookimpl
    def pgwarden_approval_request(self, request_id: str) -> Deferred[StoredApproval | None] | None:
        store = self.store
        if store is None:
            return None
        return store.get(request_id).addCallback(lambda stored: None if stored is None else approval_of(stored))

    @hookimpl
    def pgwarden_approval_claim(self, request_id: str, subject: str) -> Deferred[StoredApproval | None] | None:
        store = self.store
        if store is None:
            return None
        return store.claim_execution(request_id, subject).addCallback(
            lambda stored: None if stored is None else approval_of(stored))

    def _retry(self, store: ApprovalStore, request: ApprovalRequest) -> Deferred[ApprovalAnswer]:
        identity = request.session.identity
        statement = request.statement

        def granted(stored: StoredRequest | None) -> Deferred[ApprovalAnswer] | ApprovalAnswer:
            if stored is not None and not still_granted(stored, request.approvers, self.approvals, request.created):
                # A once grant taken here is spent: fail closed.
                stored = None
            if stored is not None:
                answer = answer_of(stored)
                return ApprovalAnswer.approved(answer.approver, answer.reason, request=stored.id)
            return self._submit(store, request).addCallback(lambda _: ApprovalAnswer.required())

        return store.take_grant(identity.subject, key_of(statement, request.session), request.exact,
                                request.created).addCallback(granted)

    def _hold(self, store: ApprovalStore, request: ApprovalRequest) -> Deferred[ApprovalAnswer]:
        """Fires when the request ends; cancelled by the core (a cancel, the session's end, the time
        limit), it ends the request in the store: expired at its expiry, else withdrawn."""
        inner: list[Deferred] = []  # what the request waits on now: submitting, then watching

        def cancelled(_d: Deferred[ApprovalAnswer]) -> None:
            for d in inner:
                d.cancel()
            now = self.reactor.seconds() if self.reactor is not None else 0.0
            end = store.expire(request.id) if now >= request.expires else \
                store.withdraw(request.id, "the statement no longer waits (cancelled, or its session ended)")
            end.addErrback(lambda f: log.failure("could not end approval request {id}", f, id=request.id))

        outer: Deferred[ApprovalAnswer] = Deferred(cancelled)

        def failed(f: Failure) -> None:
            if not f.check(_Cancelled) and not outer.called:
                outer.errback(f)

        def answered(stored: StoredRequest) -> None:
            if not outer.called:
                outer.callback(answer_of(stored))

        def watch(_: object) -> None:
            watching = store.watch(request.id)
            inner[:] = [watching]
            watching.addCallbacks(answered, failed)

        submitted = self._submit(store, request)
        inner[:] = [submitted]
        submitted.addCallbacks(watch, failed)
        return outer

    def _submit(self, store: ApprovalStore, request: ApprovalRequest) -> Deferred[None]:
        kept: Deferred[StoredRequest | None] = Deferred()
        self._kept[request.id] = kept
        while len(self._kept) > KEEP_FOR_NOTIFYING:  # requests nobody announced (their wait ended at once)
            self._kept.popitem(last=False)

        def submit(preview: Preview | None) -> Deferred[None]:
            stored = stored_request(request, preview)
            return store.submit(stored).addCallback(lambda _: kept.callback(stored))

        def not_kept(failure: Failure) -> Failure:
            if not kept.called:
                kept.callback(None)  # nothing kept, nothing to announce
            return failure

        return self._preview(request).addCallback(submit).addErrback(not_kept)

    def _preview(self, request: ApprovalRequest) -> Deferred[Preview | None]:
        if self.previewer is None:
            return succeed(None)
        context = request.statement.context
        path: str | None = None
        if context is not None:
            if context.search_path is None:  # uncertain: what the names mean is not known here
                return succeed(Preview(False, error="the session's search_path is not known, so neither is "
                                                    "what the statement's names are: no preview"))
            path = ", ".join('"' + schema.replace('"', '""') + '"' for schema in context.search_path)
        return self.previewer.preview(request.statement.sql, request.parameters, path)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ notifications

    @hookimpl
    def pgwarden_approval_requested(self, request: ApprovalRequest) -> Deferred[None] | None:
        """Sends the request as kept (its preview included) to ``approvals.notify``. Nothing
        waits for it; a failure reaches the plugin host, which logs and counts it."""
        notifiers, kept = self.notifiers, self._kept.pop(request.id, None)
        if notifiers is None or kept is None:
            return None
        return kept.addCallback(lambda stored: None if stored is None else notifiers.send(stored))

    # ------------------------------------------------------------------ the admin port

    @hookimpl
    def pgwarden_admin_resources(self) -> Mapping[str, Resource] | None:
        if self._root is None:
            from pgwarden_plugins.approve.api import ApiContext, ApprovalsRoot

            self._root = ApprovalsRoot(ApiContext(
                store=lambda: self.store, rules=lambda: rules_of(self.approvals), verify=self._verify,
                seconds=lambda: self.reactor.seconds() if self.reactor is not None else 0.0,
            ))
        return {"approvals": self._root}

    @hookimpl
    def pgwarden_readiness(self) -> Sequence[str] | None:
        if self.store is None:
            return None
        problem = self.store.health()
        return [f"approval store ({self.approvals.store}): {problem}; new approval requests are refused"] \
            if problem else None

    def _verify(self, token: str) -> Identity | Deferred[Identity]:
        from pgwarden.identity import AuthenticationFailed

        if self._verifier is None:
            raise AuthenticationFailed("approver tokens cannot be verified: auth.jwt has no usable keys")
        return self._verifier.verify(token)

