"""The ``memory`` approval store: one sidecar's requests in a dict, decided through its own admin port.

Nothing survives a restart, and another process cannot see the queue: for one sidecar, a demo,
or tests. A fleet uses the ``postgres`` store (same contract, `ApprovalStore`).
"""

from __future__ import annotations

from collections import OrderedDict

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from pgwarden_plugins.approve.store import (
    ApprovalRules,
    Decision,
    DecisionRefused,
    StoredRequest,
    apply_decision,
    claimable,
    covers,
)

#: Ended requests kept for `history` (the newest; the records keep everything).
KEEP_ENDED = 1000


class MemoryStore:
    """An `ApprovalStore` in this process's memory."""

    def __init__(self) -> None:
        self._requests: OrderedDict[str, StoredRequest] = OrderedDict()
        self._watchers: dict[str, list[Deferred[StoredRequest]]] = {}

    def health(self) -> str | None:
        return None

    def submit(self, request: StoredRequest) -> Deferred[None]:
        if request.id in self._requests:
            return fail(ValueError(f"request {request.id} exists"))
        self._requests[request.id] = request
        return succeed(None)

    def get(self, request_id: str) -> Deferred[StoredRequest | None]:
        return succeed(self._requests.get(request_id))

    def pending(self) -> Deferred[list[StoredRequest]]:
        return succeed([r for r in self._requests.values() if r.state == "pending"])

    def history(self, limit: int) -> Deferred[list[StoredRequest]]:
        ended = [r for r in self._requests.values() if r.final]
        ended.sort(key=lambda r: r.closed_at or r.created, reverse=True)
        return succeed(ended[:limit])

    def decide(self, request_id: str, decision: Decision, rules: ApprovalRules) -> Deferred[StoredRequest]:
        request = self._requests.get(request_id)
        if request is None:
            return fail(DecisionRefused(f"no request {request_id}", 404))
        try:
            after = apply_decision(request, decision, rules)
        except DecisionRefused as e:
            return fail(e)
        self._put(after)
        return succeed(after)

    def withdraw(self, request_id: str, why: str) -> Deferred[StoredRequest | None]:
        return succeed(self._end(request_id, "withdrawn", why))

    def expire(self, request_id: str) -> Deferred[StoredRequest | None]:
        return succeed(self._end(request_id, "expired", "no decision before the request expired"))

    def watch(self, request_id: str) -> Deferred[StoredRequest]:
        request = self._requests.get(request_id)
        if request is None:
            return fail(KeyError(request_id))
        if request.final:
            return succeed(request)
        watchers = self._watchers.setdefault(request_id, [])

        def stop(d: Deferred[StoredRequest]) -> None:
            if d in watchers:
                watchers.remove(d)

        d: Deferred[StoredRequest] = Deferred(stop)
        watchers.append(d)
        return d

    def take_grant(self, subject: str, fingerprint: str | None, exact: str,
                   now: float) -> Deferred[StoredRequest | None]:
        for request in reversed(self._requests.values()):
            if covers(request, subject, fingerprint, exact, now):
                if request.grant_until is None:
                    self._requests[request.id] = request = attrs.evolve(request, used=True)
                return succeed(request)
        return succeed(None)

    def claim_execution(self, request_id: str, subject: str) -> Deferred[StoredRequest | None]:
        request = self._requests.get(request_id)
        if request is None or not claimable(request, subject):
            return succeed(None)
        self._requests[request_id] = request = attrs.evolve(request, executed=True)
        return succeed(request)

    # ------------------------------------------------------------------ internals

    def _end(self, request_id: str, state: str, why: str) -> StoredRequest | None:
        request = self._requests.get(request_id)
        if request is None or request.final:
            return request
        at = request.expires if state == "expired" else request.closed_at
        self._put(attrs.evolve(request, state=state, closed_reason=why, closed_at=at))
        return self._requests[request_id]

    def _put(self, request: StoredRequest) -> None:
        self._requests[request.id] = request
        self._requests.move_to_end(request.id)
        if request.final:
            for d in self._watchers.pop(request.id, []):
                d.callback(request)
            ended = [k for k, r in self._requests.items() if r.final]
            for k in ended[: max(0, len(ended) - KEEP_ENDED)]:
                del self._requests[k]
