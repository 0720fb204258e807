"""The approver inbox: one server-rendered HTML page, a little script, and the JSON API for actions.

Why it is built this way:

* **Escaped by construction.** An agent writes the SQL, its parameters and (through its token)
  its subject: all of it is text an attacker controls. The page is built with
  `twisted.web.template` tags, which escape every string put in an element or attribute; no
  string is ever concatenated into HTML. The Content-Security-Policy allows scripts and styles
  from this server's own files only (no inline script, no ``eval``, no other origin), so even a
  mistake in escaping could not run a script.
* **Tokens, not cookies.** The approver's JWT (verified like an agent's: `approvers.Approvers`)
  is either injected by an authenticating proxy in front (oauth2-proxy) as a header of every
  request, or pasted into the page, kept in ``sessionStorage`` (this tab only) and sent by the
  script as ``Authorization: Bearer``. A browser never attaches either by itself to a request
  another site makes, so there is no cross-site request forgery to defend against.
* **The page reads, the API acts.** ``GET <inbox>/`` is the page (with the requests when the
  request carries a token, else a form for one); ``GET <inbox>/requests`` is the list alone,
  which the script fetches with the token and refreshes; approve and deny are ``POST``s of the
  JSON API (``<api>/<id>/approve``, ``/deny``), the same ones `pgwarden approvals` uses.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.template import Tag, flattenString, tags

from pgwarden.identity import Identity
from pgwarden.marks import (
    BLANK_RUN,
    SUSPECT,
    char_name,
    copy_in_note,
    cut_note,
    foreign,
    hidden,
    longest_blank,
    longest_unbroken,
    mark,
)
from pgwarden_plugins.approve.approvers import Approvers, NotAllowed, bearer_token
from pgwarden_plugins.approve.notify import describe_preview
from pgwarden_plugins.approve.store import ApprovalStore, StoredRequest

if TYPE_CHECKING:
    from pgwarden_plugins.approve.api import ApiContext

log = Logger(namespace="pgwarden.approvals.inbox")

#: What the inbox's responses allow the browser: this server's own script and style files, and
#: requests to this server; nothing inline, no frames, no forms posted anywhere, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
#: Ended requests shown under History.
HISTORY = 50
#: Statements longer than this are shown as written: pretty-printing is for reading, not for megabytes.
PRETTY_MAX_CHARS = 20_000
STATIC = {
    b"inbox.js": "text/javascript; charset=utf-8",
    b"inbox.css": "text/css; charset=utf-8",
}


class Authenticate(Protocol):
    """`approvers.Approvers.approver`: the approver of a request, or a failure with `NotAllowed`."""

    def __call__(self, request: server.Request) -> Deferred[Identity]: ...


def pretty_sql(sql: str) -> str:
    """The statement laid out by pglast's prettifier (the real PostgreSQL parser), or as written
    when it does not parse or is too long: what is shown is always what the agent sent."""
    if len(sql) > PRETTY_MAX_CHARS:
        return sql
    try:
        from pglast import prettify

        return prettify(sql, safety_belt=True)
    except Exception:  # noqa: BLE001 - any failure: show the text as written
        return sql


def visible(text: str) -> list[str | Tag]:
    """``text`` with every hidden character (`pgwarden.marks`: controls, format characters,
    separators, spaces other than U+0020, ...) replaced by a mark naming it (``<U+202E>`` in a
    span of class ``invisible``, its Unicode name as the title). A CR before a newline stays: a
    line end as Windows clients send it. Any other character outside ASCII is itself, in a span
    of class ``foreign`` titled with its code point and name (a Cyrillic ``і`` is not ``i``)."""
    parts: list[str | Tag] = []
    last = 0
    for found in SUSPECT.finditer(text):
        at = found.start()
        char = text[at]
        if hidden(text, at):
            parts.append(text[last:at])
            parts.append(tags.span(mark(char), class_="invisible", title=char_name(char)))
            last = at + 1
        elif ord(char) > 0x7F:  # shown as itself, highlighted and named: it may look like another
            parts.append(text[last:at])
            parts.append(tags.span(char, class_="foreign", title=f"{mark(char)[1:-1]} {char_name(char)}"))
            last = at + 1
    parts.append(text[last:])
    return parts


def statement(sql: str) -> list[Tag]:
    """The statement as the agent sent it (its comments too: a ``/* reason: ... */`` from MCP's
    request_write), hidden characters marked (`visible`); then pglast's layout of it, easier to
    read but without comments, folded unless the text as sent is one long line."""
    sent: list[Tag] = [tags.pre(tags.code(*visible(sql)), class_="sql sent", dir="ltr")]
    named = foreign(sql)
    if named:  # which characters outside ASCII it holds: names that look alike may be others
        sent.append(tags.p("Characters outside ASCII (highlighted above; they may look like others): ",
                           tags.code(*visible("; ".join(named))), class_="foreign-note"))
    blank = longest_blank(sql)
    pretty = pretty_sql(sql)
    if blank >= BLANK_RUN:  # text far below (or right of) what the page shows first
        also = " (the formatted form below shows it without them)" if pretty != sql else ""
        sent.insert(0, tags.p(f"This statement holds {blank} blank characters in a row: read it to its end{also}.",
                              class_="foreign-note"))
    unbroken = longest_unbroken(sql)
    if unbroken:  # a line no browser breaks at a blank: its end may be far right of the page
        also = " (the formatted form below shows it without comments)" if pretty != sql else ""
        sent.insert(0, tags.p(f"This statement holds {unbroken} characters without a blank in a row: read it to "
                              f"its end{also}.", class_="foreign-note"))
    if pretty == sql:
        return sent
    folded = tags.details(tags.summary("Formatted (comments left out)"),
                          tags.pre(tags.code(*visible(pretty)), class_="sql pretty", dir="ltr"), class_="pretty")
    if ("\n" not in sql.strip() and len(sql) > 100) or blank >= BLANK_RUN or unbroken:
        folded.attributes["open"] = ""
    return [*sent, folded]



def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 3 h 5 min."""
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _at(seconds: float | None, now: float) -> Tag:
    if seconds is None:
        return tags.span("-")
    when = f"{_span(now - seconds)} ago" if seconds <= now else f"in {_span(seconds - now)}"
    return tags.time(when, datetime=_iso(seconds), title=_iso(seconds))


def _row(label: str, *value: str | Tag) -> list[Tag]:
    return [tags.dt(label), tags.dd(*value)]


def _parameters(parameters: Sequence[str | None] | None, sizes: Sequence[int | None] | None,
                readings: Sequence[str | None] | None = None) -> str | Tag:
    if parameters is None:
        return "none"
    items = []
    for i, p in enumerate(parameters):
        note = cut_note(p, sizes[i] if sizes is not None and i < len(sizes) else None)
        reading = readings[i] if readings is not None and i < len(readings) else None
        value = tags.code("NULL" if p is None else visible(p))
        below = ([tags.p(*visible(reading), class_="reading")] if reading else []) + \
            ([tags.p(note, class_="cut")] if note else [])
        items.append(tags.li(value, *below))
    return tags.ol(*items, class_="parameters")


def _pending(r: StoredRequest, me: Identity, now: float, max_grant_minutes: int) -> Tag:
    """One pending request, with the approve / deny form unless the reader may not decide it."""
    where = " / ".join(p for p in (r.policy, r.rule) if p) or "-"
    approvals = f"{len(r.approvers)} of {r.approvals_needed}"
    if r.approvers:
        approvals += " (" + ", ".join(r.approvers) + ")"
    details = tags.dl(
        *_row("Requested by", r.subject, " ", tags.span("(" + ", ".join(r.groups) + ")" if r.groups else "",
                                                        class_="groups")),
        *_row("Rule", where),
        *_row("Reason", r.reason or "-"),
        *_row("Kinds", ", ".join(r.kinds) or "-"),
        *_row("Tables", *visible(", ".join(r.tables) or "-")),
        *_row("Parameters", _parameters(r.parameters, r.parameter_sizes, r.parameter_readings)),
        *_row("Impact preview", tags.span(describe_preview(r.preview),
                                          class_="preview" + ("" if r.preview is None or r.preview.ok else " failed"))),
        *_row("Requested", _at(r.created, now)),
        *_row("Expires", _at(r.expires, now)),
        *_row("Mode", r.mode),
        *_row("Approvals", approvals),
    )
    if me.subject == r.subject:
        action: Tag = tags.p("Your own request: another approver decides it.", class_="note")
    elif me.subject in {d.approver for d in r.decisions}:
        action = tags.p("You have approved it; it waits for another approver.", class_="note")
    else:
        grant: list[Tag] = []
        if r.mode == "retry":
            grant = [tags.label("Grant ",
                                tags.select(tags.option("once", value="once"),
                                            tags.option("for minutes:", value="window"), name="grant")),
                     tags.input(type="number", name="minutes", min="1", max=str(max_grant_minutes),
                                value=str(min(10, max_grant_minutes)), **{"aria-label": "minutes"})]
        action = tags.form(
            tags.label("Reason", tags.textarea(name="reason", rows="2", placeholder="required to deny")),
            *grant,
            tags.button("Approve", type="submit", value="approve", class_="approve"),
            tags.button("Deny", type="submit", value="deny", class_="deny"),
            tags.output(class_="outcome", role="status"),
            class_="decide",
        )
    copying = copy_in_note(r.kinds, r.tables)
    return tags.article(
        tags.h3("Request ", tags.code(r.id)),
        *([tags.p(copying, class_="foreign-note copy-note")] if copying else []),
        *statement(r.sql),
        details,
        action,
        class_="request", id=f"request-{r.id}", **{"data-id": r.id},
    )


def _ended(r: StoredRequest) -> Tag:
    by = ", ".join(d.approver for d in r.decisions) or "-"
    # A denial's reason ends the request; approvals give theirs with each decision.
    reason = r.closed_reason or "; ".join(d.reason for d in r.decisions if d.reason) or "-"
    sql = r.sql if len(r.sql) <= 200 else r.sql[:199] + "…"
    return tags.tr(
        tags.td(tags.code(r.id)), tags.td(r.subject), tags.td(tags.code(*visible(sql)), class_="sql"),
        tags.td(r.state, class_=f"state {r.state}"), tags.td(by), tags.td(reason),
        tags.td(tags.time(_iso(r.closed_at), datetime=_iso(r.closed_at)) if r.closed_at else "-"),
        id=f"request-{r.id}",
    )


def requests_fragment(pending: Sequence[StoredRequest], ended: Sequence[StoredRequest], me: Identity,
                      now: float, max_grant_minutes: int) -> Tag:
    """The requests part of the page: pending (oldest first) and history (newest first)."""
    waiting = [_pending(r, me, now, max_grant_minutes) for r in pending] or [tags.p("Nothing waits.", class_="empty")]
    history: Tag = tags.p("Nothing decided yet.", class_="empty")
    if ended:
        history = tags.table(
            tags.thead(tags.tr(*[tags.th(h) for h in ("Request", "By", "Statement", "State", "Decided by",
                                                       "Reason", "Ended")])),
            tags.tbody(*[_ended(r) for r in ended]),
        )
    return tags.div(
        tags.p("Signed in as ", tags.strong(me.subject, class_="me"), class_="who"),
        tags.section(tags.h2(f"Pending ({len(pending)})"), *waiting, id="pending"),
        tags.section(tags.h2("History"), history, id="history"),
        id="requests",
    )


def page(body: Tag | None, api: str) -> Tag:
    """The whole page; ``body`` the requests when the request carried a token (from a proxy):
    then the form for pasting a token starts hidden (the script shows it if a fetch is refused)."""
    signin = tags.form(
        tags.label("Approver token (JWT) ",
                   tags.input(type="password", name="token", autocomplete="off", spellcheck="false")),
        tags.button("Use this token", type="submit"),
        tags.button("Forget it", type="button", class_="forget"),
        id="signin",
    )
    if body is not None:
        signin.attributes["hidden"] = ""
    main = body if body is not None else tags.div(
        tags.p("Paste an approver's token, or open this page through the authenticating proxy.", class_="empty"),
        id="requests")
    return tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title("pgwarden approvals"),
            tags.link(rel="stylesheet", href="inbox.css"),
            tags.script(src="inbox.js", defer=""),
        ),
        tags.body(
            tags.header(tags.h1("pgwarden approvals"), signin),
            tags.p(id="status", role="status"),
            Tag("main")(main),  # not among twisted.web.template.tags
            **{"data-api": api},
        ),
        lang="en",
    )


class Inbox(Resource):
    """``<inbox>/`` (the page), ``<inbox>/requests`` (the list), ``inbox.js``, ``inbox.css``.

    :param store: where requests are read, asked at each request (a reload may replace it);
        decisions go through the JSON API
    :param authenticate: the approver of a request (`approvers.Approvers.approver`)
    :param api: the JSON API's base, as the page's script should reach it from the page's URL
    :param clock: seconds since the epoch, for ages and expiries (the reactor's)
    :param max_grant_minutes: the longest grant window offered (``approvals.max_grant_minutes``)
    """

    def __init__(self, store: Callable[[], ApprovalStore | None], authenticate: Authenticate, *,
                 api: str = "../api/requests/",
                 clock: Callable[[], float] = _time.time, max_grant_minutes: Callable[[], int] = lambda: 60) -> None:
        super().__init__()
        self.store = store
        self.authenticate = authenticate
        self.api = api
        self.clock = clock
        self.max_grant_minutes = max_grant_minutes
        self._static = {name: (resources.files("pgwarden_plugins.approve").joinpath("static", name.decode())
                               .read_bytes(), kind) for name, kind in STATIC.items()}

    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802 - twisted.web's name
        if path == b"":
            return _Leaf(self._page)
        if path == b"requests":
            return _Leaf(self._requests)
        if path in self._static:
            body, kind = self._static[path]
            return _Leaf(lambda req: _static(req, body, kind))
        return _Leaf(lambda req: _text(req, 404, "not found"))

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 - twisted.web's name
        # /approvals/inbox without the slash: the page's relative links need it. A relative
        # Location, so that no path a client sends can make it point to another host.
        request.redirect(request.uri.split(b"?", 1)[0].rsplit(b"/", 1)[-1] + b"/")
        _secure(request)
        return b""

    # ------------------------------------------------------------------ pages

    def _page(self, request: server.Request) -> object:
        if not _has_token(request):
            return self._send(request, 200, flattenString(None, page(None, self.api)), doctype=True)
        rendered: Deferred[bytes] = self._listing(request).addCallback(
            lambda body: flattenString(None, page(body, self.api)))
        return self._send(request, 200, rendered, doctype=True)

    def _requests(self, request: server.Request) -> object:
        rendered: Deferred[bytes] = self._listing(request).addCallback(lambda body: flattenString(None, body))
        return self._send(request, 200, rendered)

    def _listing(self, request: server.Request) -> Deferred[Tag]:
        def read(me: Identity) -> Deferred[Tag]:
            store = self.store()
            if store is None:
                raise NotAllowed("no approval store is configured", 503)
            reads = gatherResults([store.pending(), store.history(HISTORY)], consumeErrors=True)
            return reads.addCallback(lambda got: requests_fragment(got[0], got[1], me, self.clock(),
                                                                   self.max_grant_minutes()))

        return self.authenticate(request).addCallback(read)

    def _send(self, request: server.Request, code: int, body: Deferred[bytes], doctype: bool = False) -> object:
        def ok(html: bytes) -> None:
            if request.finished or getattr(request, "_disconnected", False):
                return
            _secure(request)
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.write((b"<!DOCTYPE html>\n" if doctype else b"") + html)
            request.finish()

        def failed(failure: Failure) -> None:
            if request.finished or getattr(request, "_disconnected", False):
                return
            if failure.check(NotAllowed):
                error: NotAllowed = failure.value
                if error.status == 401:
                    request.setHeader(b"www-authenticate", b'Bearer realm="pgwarden approvals"')
                body = _text(request, error.status, str(error))
            else:
                log.failure("inbox: reading the requests failed", failure)
                body = _text(request, 503, "the approval store cannot be read now")
            request.write(body)
            request.finish()

        body.addCallbacks(ok, failed)
        return server.NOT_DONE_YET


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, render: Callable[[server.Request], object]) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: server.Request) -> object:  # noqa: N802 - twisted.web's name
        return self._render(request)


def inbox_for(context: ApiContext) -> Inbox:
    """The inbox of an API: the same store, keys, approver groups and clock, read at each request."""
    approvers = Approvers(context.verify, lambda: context.rules().approver_groups)
    return Inbox(context.store, approvers.approver, clock=context.seconds,
                 max_grant_minutes=lambda: context.rules().max_grant_minutes)


def _has_token(request: server.Request) -> bool:
    return bearer_token(request) is not None


def _secure(request: server.Request) -> None:
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)


def _text(request: server.Request, code: int, text: str) -> bytes:
    """A plain-text answer's headers set; its body."""
    _secure(request)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (text + "\n").encode()


def _static(request: server.Request, body: bytes, kind: str) -> bytes:
    _secure(request)
    request.setHeader(b"content-type", kind.encode())
    request.setHeader(b"cache-control", b"no-cache")
    return body
