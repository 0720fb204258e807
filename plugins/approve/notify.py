"""Telling people that a statement waits for them: a JSON webhook, or a Slack-compatible message.

A notification is a courtesy, never a control: it is sent after the request is stored, nothing
waits for it, and its outcome decides nothing. A receiver that is down, slow (past the target's
``timeout_s``, body included) or answers other than 2xx is logged with its reason, and the send's
Deferred fails naming it, which the plugin host counts (``pgwarden_notifier_failures``); the
request waits for its approvers all the same.

The targets' URLs are secrets (a Slack incoming-webhook URL *is* its credential): they never
appear in a log line or a repr; a target is named by its place in ``approvals.notify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pgwarden.api import Reactor
from pgwarden.config import Notify, SlackNotify
from pgwarden.jwks import _CappedBody
from pgwarden.marks import copy_in_note, marked
from pgwarden_plugins.approve.store import Preview, StoredRequest, to_json

log = Logger(namespace="pgwarden.approvals.notify")

#: Block Kit limits: a section's text (3000 characters), a field's (2000), a header's (150).
SECTION_CHARS = 3000
FIELD_CHARS = 2000
HEADER_CHARS = 150
#: What is read of a receiver's answer before it is dropped: nothing of it is used.
ANSWER_BYTES = 64 * 1024


def request_link(inbox_url: str | None, request_id: str) -> str | None:
    """Where the inbox shows this request (its element has the id ``request-<id>``)."""
    if not inbox_url:
        return None
    return f"{inbox_url.split('#', 1)[0]}#request-{request_id}"


def describe_preview(preview: Preview | None) -> str:
    """The impact preview in one line, for people: the planner's estimate, or why there is none."""
    if preview is None:
        return "no preview"
    if not preview.ok:
        return f"preview failed: {preview.error or 'unknown error'}"
    parts = []
    if preview.rows is not None:
        parts.append(f"~{preview.rows:,.0f} rows")
    if preview.cost is not None:
        parts.append(f"cost {preview.cost:,.2f}")
    if preview.writes:
        parts.append("writes " + ", ".join(preview.writes))
    if preview.generic:
        parts.append("generic plan")
    return "; ".join(parts) or "no estimate"


def webhook_payload(request: StoredRequest, inbox_url: str | None) -> dict[str, object]:
    """The generic webhook's body: the request as the JSON API shows it, and where to decide it."""
    return {
        "type": "approval_requested",
        "request": to_json(request),
        "preview": describe_preview(request.preview),
        "inbox_url": request_link(inbox_url, request.id),
    }


def _mrkdwn(text: str) -> str:
    """Text that Slack shows as written: ``<``, ``>`` and ``&`` are its control characters
    (``<!channel>`` pings everyone, ``<url|label>`` makes a link), so they are escaped; and the
    characters that hide or disguise text are marks naming them, as in the inbox (`pgwarden.marks`)."""
    return marked(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code_block(sql: str, limit: int) -> str:
    """``sql`` in a mrkdwn code block that its own backticks cannot close."""
    body = _mrkdwn(sql).replace("```", "`\u200b`\u200b`")
    return "```" + _cut(body, limit - 6) + "```"


def _when(seconds: float) -> str:
    """A time Slack shows in the reader's own time zone, with UTC as the fallback text."""
    iso = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(seconds)}^{{date_short_pretty}} {{time_secs}}|{iso}>"


def slack_payload(request: StoredRequest, inbox_url: str | None) -> dict[str, object]:
    """A Block Kit message: who, what (the SQL in a code block), why, the preview, and a button
    to the inbox. Everything the agent controls (SQL, reason texts, names) is escaped."""
    where = " / ".join(p for p in (request.policy, request.rule) if p) or "-"
    fields = [
        ("Requested by", request.subject),
        ("Rule", where),
        ("Reason", request.reason or "-"),
        ("Impact preview", describe_preview(request.preview)),
        ("Tables", ", ".join(request.tables) or "-"),
        ("Mode", request.mode),
    ]
    copying = copy_in_note(request.kinds, request.tables)  # its rows come after the approval (red team fifteen)
    blocks: list[dict[str, object]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _cut(f"Approval requested: {request.id}", HEADER_CHARS)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _code_block(request.sql, SECTION_CHARS)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_mrkdwn(value)}", FIELD_CHARS)} for label, value in fields
        ]},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"Expires {_when(request.expires)}"},
        ]},
    ]
    if copying:
        blocks.insert(2, {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_mrkdwn(copying), SECTION_CHARS)}})
    link = request_link(inbox_url, request.id)
    if link is not None:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "style": "primary", "action_id": "open-inbox",
             "text": {"type": "plain_text", "text": "Review in the inbox"}, "url": link},
        ]})
    return {
        # Shown in notifications and by clients that render no blocks.
        "text": _mrkdwn(f"pgwarden: approval requested: {request.id} by {request.subject}"),
        "blocks": blocks,
    }


class NotifyFailed(Exception):
    """A receiver answered, but not with a 2xx."""


class Notifiers:
    """Sends each new request to every target of ``approvals.notify``, in the background."""

    def __init__(self, reactor: Reactor, targets: Sequence[Notify], inbox_url: str | None) -> None:
        self._reactor = reactor
        self._targets = tuple(targets)
        self._inbox_url = inbox_url
        self._sending: set[Deferred[str | None]] = set()

    def send(self, request: StoredRequest) -> Deferred[None]:
        """Starts one POST per target and returns at once. The Deferred fires when every POST
        is over: None, or `NotifyFailed` naming each target that failed (the plugin host logs
        it and counts it in ``pgwarden_notifier_failures``); each failure is logged here too,
        with its reason."""
        posts: list[Deferred[str | None]] = []
        for i, target in enumerate(self._targets):
            name = f"notify[{i}]:{target.name}"
            try:
                posting = self._post(target, request)
            except Exception:  # noqa: BLE001 - a payload that cannot be built fails like any other
                posting = Deferred()
                posting.errback(Failure())
            settled = self._settle(posting, name, request.id)
            self._sending.add(settled)
            settled.addBoth(self._done, settled)
            posts.append(settled)

        def judge(outcomes: list[str | None]) -> None:
            failed = [why for why in outcomes if why is not None]
            if failed:
                raise NotifyFailed(f"request {request.id}: " + "; ".join(failed))

        done: Deferred[None] = gatherResults(posts).addCallback(judge)
        return done

    def stop(self) -> None:
        """Abandons the POSTs still going (pgwarden is stopping)."""
        for d in list(self._sending):
            d.cancel()

    def _post(self, target: Notify, request: StoredRequest) -> Deferred[None]:
        if isinstance(target, SlackNotify):
            url, body = target.slack, slack_payload(request, self._inbox_url)
        else:
            url, body = target.webhook, webhook_payload(request, self._inbox_url)
        from treq.client import HTTPClient  # here: only a pgwarden that notifies needs treq

        client = HTTPClient(Agent(self._reactor, connectTimeout=target.timeout_s))
        d: Deferred[None] = client.post(url, json=body, headers=Headers({b"User-Agent": [b"pgwarden"]})).addCallback(
            self._drain)
        # One deadline for the whole exchange, the answer's body included: a receiver that
        # accepts and then stalls costs a connection for timeout_s at most.
        late: list[bool] = []

        def give_up() -> None:
            late.append(True)
            d.cancel()

        timer = self._reactor.callLater(target.timeout_s, give_up)

        def disarm(result: object) -> object:
            if timer.active():
                timer.cancel()
            if late and isinstance(result, Failure):
                # Whatever the cancel surfaced as (CancelledError, ResponseNeverReceived, ...)
                raise NotifyFailed(f"no answer within timeout_s ({target.timeout_s:g} s)")
            return result

        return d.addBoth(disarm)

    @staticmethod
    def _drain(response: IResponse) -> Deferred[None]:
        body = _CappedBody(ANSWER_BYTES)
        response.deliverBody(body)
        finished = body.finished
        assert finished is not None

        def judge(_body: bytes) -> None:
            if not 200 <= response.code < 300:
                raise NotifyFailed(f"answered {response.code} {response.phrase.decode('latin-1', 'replace')}")

        return finished.addCallback(judge)

    def _settle(self, d: Deferred[None], name: str, request_id: str) -> Deferred[str | None]:
        """Fires with None (sent) or why ``name`` failed; never fails."""
        def failed(failure: Failure) -> str:
            why = failure.getErrorMessage() or str(failure.type)
            log.warn("approval request {request}: notification {notifier} failed ({why}); the request "
                     "waits for its approvers all the same", request=request_id, notifier=name, why=why)
            return f"{name}: {why}"

        return d.addCallbacks(lambda _: None, failed)

    def _done(self, result: object, d: Deferred[str | None]) -> object:
        self._sending.discard(d)
        return result
