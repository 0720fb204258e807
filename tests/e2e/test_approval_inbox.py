"""The approver inbox over real HTTP: who may read it, what it shows, and that what an agent wrote stays text.

The browser test (test_approval_browser.py) drives the same page in Chromium; this one reads the
bytes the server sends, where escaping and headers can be checked exactly.
"""

from __future__ import annotations

import html.parser
import urllib.error
import urllib.request

import pytest
from twisted.internet.threads import blockingCallFromThread
from twisted.web import server
from twisted.web.resource import Resource

from pgwarden.config import JwtAuth
from pgwarden.identity import TokenVerifier
from pgwarden.testing.endpoint import AUDIENCE, ISSUER
from pgwarden.tokens import mint
from pgwarden_plugins.approve.approvers import Approvers
from pgwarden_plugins.approve.inbox import CONTENT_SECURITY_POLICY, Inbox
from pgwarden_plugins.approve.memory import MemoryStore
from pgwarden_plugins.approve.store import Decision, Preview, StoredRequest

XSS_SQL = ("""update public.orders set note = '</code></pre><script>alert("x")</script>"""
           """<img src=x onerror=alert(1)>' where id = 1""")
NOW = 1_800_000_100.0


def stored(id_: str, sql: str, subject: str = "agent-1", **kw) -> StoredRequest:
    kw.setdefault("tables", ("public.orders",))
    return StoredRequest(id=id_, subject=subject, groups=("ai-agents",), session="s1", sql=sql, fingerprint="f",
                         params_hash="h", created=NOW - 90, expires=NOW + 210, kinds=("update",),
                         policy="agents", rule="prod-writes", reason="writes need a human", **kw)


@pytest.fixture
def inbox(reactor_thread, signing_keys):
    store = MemoryStore()
    jwt = JwtAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(signing_keys["jwks"]))
    approvers = Approvers(TokenVerifier(jwt).verify, lambda: ["db-approvers"])
    root = Resource()
    approvals = Resource()
    root.putChild(b"approvals", approvals)
    approvals.putChild(b"inbox", Inbox(lambda: store, approvers.approver, clock=lambda: NOW))

    def listen():
        return reactor_thread.listenTCP(0, server.Site(root), interface="127.0.0.1")

    port = blockingCallFromThread(reactor_thread, listen)

    class Running:
        base = f"http://127.0.0.1:{port.getHost().port}/approvals/inbox/"

        @staticmethod
        def put(request: StoredRequest) -> None:
            blockingCallFromThread(reactor_thread, store.submit, request)

        @staticmethod
        def decide(request_id: str, decision: Decision) -> None:
            from pgwarden_plugins.approve.store import ApprovalRules

            blockingCallFromThread(reactor_thread, store.decide, request_id, decision,
                                   ApprovalRules(approver_groups=("db-approvers",)))

        @staticmethod
        def token(subject: str, groups: list[str]) -> str:
            return mint(signing_keys["private"], subject=subject, issuer=ISSUER, audience=AUDIENCE, groups=groups)

    yield Running
    blockingCallFromThread(reactor_thread, port.stopListening)


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


class Elements(html.parser.HTMLParser):
    """Every element of a page with its attributes, and the text of each, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def tags(self) -> list[str]:
        return [t for t, _a in self.elements]


def test_the_page_without_a_token_shows_nothing_but_the_form(inbox):
    inbox.put(stored("r1", "update public.orders set paid = true where id = 7"))
    status, headers, body = get(inbox.base)
    assert status == 200 and body.startswith("<!DOCTYPE html>")
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    assert "set-cookie" not in headers
    assert "paid" not in body and "r1" not in body
    assert ("form", {"id": "signin"}) in Elements(body).elements

    status, headers, body = get(inbox.base + "requests")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert "paid" not in body


def test_only_an_approver_reads_the_requests(inbox):
    inbox.put(stored("r1", "update public.orders set paid = true where id = 7"))
    bad = get(inbox.base + "requests", Authorization="Bearer not-a-jwt")
    assert bad[0] == 401 and "paid" not in bad[2]
    agent = get(inbox.base + "requests", Authorization="Bearer " + inbox.token("agent-1", ["ai-agents"]))
    assert agent[0] == 403 and "not an approver" in agent[2] and "paid" not in agent[2]
    alice = get(inbox.base + "requests", Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert alice[0] == 200 and "paid" in alice[2]


@pytest.mark.parametrize("header", ["Authorization", "X-Forwarded-Access-Token"])
def test_behind_an_authenticating_proxy_the_page_comes_with_the_requests(inbox, header):
    inbox.put(stored("r1", "update public.orders set paid = true where id = 7"))
    token = inbox.token("alice", ["db-approvers"])
    value = "Bearer " + token if header == "Authorization" else token
    status, _headers, body = get(inbox.base, **{header: value})
    assert status == 200
    page = Elements(body)
    assert ("article", {"class": "request", "id": "request-r1", "data-id": "r1"}) in page.elements
    assert ("form", {"id": "signin", "hidden": ""}) in page.elements
    # formatted by pglast's prettifier, one clause a line
    assert "UPDATE public.orders\nSET paid = TRUE\nWHERE id = 7" in "".join(page.text)


def test_what_an_agent_wrote_is_text_never_markup(inbox):
    inbox.put(stored("r1", XSS_SQL, subject='agent-"><script>alert(2)</script>',
                     parameters=("<img src=x onerror=alert(3)>", None),
                     preview=Preview(ok=False, error="<b>relation</b> does not exist")))
    inbox.put(stored("r2", XSS_SQL + " -- ended"))
    inbox.decide("r2", Decision(approved=False, approver="bob", groups=("db-approvers",),
                                reason="<script>alert(4)</script>", at=NOW))
    status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    page = Elements(body)
    # The only script is the inbox's own file; no element has an event handler.
    assert [a for t, a in page.elements if t == "script"] == [{"src": "inbox.js", "defer": ""}]
    assert "img" not in page.tags() and "b" not in page.tags()
    assert not [a for _t, attrs in page.elements for a in attrs if a.startswith("on")]
    text = "".join(page.text)
    assert "<script>alert(\"x\")</script><img src=x onerror=alert(1)>" in text  # shown, as text
    assert 'agent-"><script>alert(2)</script>' in text
    assert "<img src=x onerror=alert(3)>" in text
    assert "preview failed: <b>relation</b> does not exist" in text
    assert "<script>alert(4)</script>" in text  # the denial's reason, in the history
    assert body.count("<script") == 1


def test_the_statement_is_shown_as_the_agent_sent_it_with_its_reason(inbox):
    """Red team eight (8c F3): the page showed pglast's layout alone, which drops comments: the
    ``/* reason: ... */`` an agent gives through MCP's request_write never reached the approver."""
    from pgwarden.mcp.writes import with_reason

    sql = with_reason("UPDATE public.orders SET paid = true WHERE id = 7", "customer 7 paid by wire transfer")
    inbox.put(stored("r1", sql))
    status, _h, body = get(inbox.base + "requests", Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    page = Elements(body)
    text = "".join(page.text)
    assert sql in text  # as sent, the reason's comment included
    assert "UPDATE public.orders\nSET paid = TRUE\nWHERE id = 7" in text  # and laid out, for reading
    assert ("pre", {"class": "sql sent", "dir": "ltr"}) in page.elements


def test_characters_that_hide_or_reorder_text_are_shown_as_marks(inbox):
    """Trojan Source: a right-to-left override, isolates and zero-width characters make the text
    read one way on the page and run another. Each is shown as a mark naming it, in the
    statement as sent, its layout, the parameters, the tables and the history; a CRLF line end
    is a line end."""
    trojan = ("UPDATE public.orders SET note = 'ok' /*\u202e } \u2066 WHERE id = 1 \u2069 \u2066*/\r\n"
              "WHERE note\u200b = 'x\x07\rx\u2028'")
    inbox.put(stored("r1", trojan, parameters=("a\u202eb", None), tables=("public.ord\u200dTers",)))
    inbox.put(stored("r2", trojan))
    inbox.decide("r2", Decision(approved=False, approver="bob", groups=("db-approvers",), reason="no", at=NOW))
    status, _h, body = get(inbox.base, Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    assert status == 200
    for hidden in "\u202e\u2066\u2069\u200b\u200d\x07\u2028":
        assert hidden not in body, repr(hidden)
    page = Elements(body)
    titles = {a.get("title") for t, a in page.elements if t == "span" and a.get("class") == "invisible"}
    assert {"RIGHT-TO-LEFT OVERRIDE", "LEFT-TO-RIGHT ISOLATE", "POP DIRECTIONAL ISOLATE", "ZERO WIDTH SPACE",
            "ZERO WIDTH JOINER", "LINE SEPARATOR", "control or unassigned character"} == titles
    # in the statement as sent, the parameter and the history (the layout drops the comment)
    assert page.text.count("<U+202E>") == 3
    assert page.text.count("<U+2028>") == 3  # the statement as sent, its layout (a literal) and the history
    text = "".join(page.text)
    assert "<U+2066> WHERE id = 1 <U+2069> <U+2066>*/\r\nWHERE note<U+200B> = 'x<U+0007><U+000D>x<U+2028>'" in text
    assert "a<U+202E>b" in text and "public.ord<U+200D>Ters" in text  # the parameter, the tables
    assert "<U+000D>\n" not in text  # a CRLF line end is not marked


def test_the_reader_cannot_decide_their_own_request_nor_twice(inbox):
    inbox.put(stored("mine", "update public.orders set paid = true where id = 1", subject="alice"))
    inbox.put(stored("twice", "update public.orders set paid = true where id = 2", approvals_needed=2))
    inbox.decide("twice", Decision(approved=True, approver="alice", groups=("db-approvers",), at=NOW))
    inbox.put(stored("other", "update public.orders set paid = true where id = 3"))
    _s, _h, body = get(inbox.base + "requests", Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    page = Elements(body)
    articles = [a["data-id"] for t, a in page.elements if t == "article"]
    assert articles == ["mine", "twice", "other"]
    forms = [a for t, a in page.elements if t == "form"]
    assert len(forms) == 1  # only for "other"
    text = "".join(page.text)
    assert "Your own request: another approver decides it." in text
    assert "1 of 2 (alice)" in text


def test_static_files_and_unknown_paths(inbox):
    status, headers, body = get(inbox.base + "inbox.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert "textContent" in body and "innerHTML" not in body
    assert get(inbox.base + "inbox.css")[0] == 200
    assert get(inbox.base + "nope")[0] == 404
    redirected = urllib.request.urlopen(inbox.base.rstrip("/"), timeout=10)
    assert redirected.url == inbox.base


def test_on_the_admin_port_beside_the_api(make_pgwarden):
    """A sidecar (memory store) serves the inbox at /approvals/inbox/ beside the JSON API, and
    both take the token an authenticating proxy passes (X-Forwarded-Access-Token)."""
    running = make_pgwarden(approvals={"approver_groups": ["db-approvers"]})
    admin = f"http://127.0.0.1:{running.call(running.app.listen_admin).getHost().port}"
    assert urllib.request.urlopen(admin + "/approvals/", timeout=10).url == admin + "/approvals/inbox/"
    assert urllib.request.urlopen(admin + "/approvals", timeout=10).url == admin + "/approvals/inbox/"
    token = running.token("alice", ["db-approvers"])
    status, headers, body = get(admin + "/approvals/inbox/", **{"X-Forwarded-Access-Token": token})
    assert status == 200 and "Signed in as" in body and headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    status, _h, body = get(admin + "/approvals/api/requests", **{"X-Forwarded-Access-Token": token})
    assert status == 200 and '"requests": []' in body
    assert get(admin + "/approvals/api/requests")[0] == 401


def test_a_retry_mode_request_offers_a_grant_window_up_to_the_maximum(inbox):
    inbox.put(stored("held", "update public.orders set paid = true where id = 1"))
    inbox.put(stored("later", "update public.orders set paid = true where id = 2", mode="retry"))
    _s, _h, body = get(inbox.base + "requests", Authorization="Bearer " + inbox.token("alice", ["db-approvers"]))
    page = Elements(body)
    selects = [a for t, a in page.elements if t == "select"]
    assert selects == [{"name": "grant"}]  # the retry-mode request's form only
    assert body.index('id="request-held"') < body.index('id="request-later"') < body.index('name="grant"')
    minutes = next(a for t, a in page.elements if t == "input" and a.get("name") == "minutes")
    assert minutes["max"] == "60" and minutes["min"] == "1"
