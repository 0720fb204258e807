"""Approval notifications to real local HTTP receivers: what they get, and that failures decide nothing."""

from __future__ import annotations

import json
import socket

import pytest
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import globalLogPublisher
from twisted.web import resource, server

from pgwarden.config import ConfigError, SlackNotify, WebhookNotify, parse_config
from pgwarden_plugins.approve.notify import Notifiers, NotifyFailed
from pgwarden_plugins.approve.store import Preview, StoredRequest

HOSTILE_SQL = "update public.orders set note = '<script>alert(\"x\")</script> ``` <!channel> & co' where id = 1"


class Receiver(resource.Resource):
    """Takes POSTs and keeps them; ``modes`` by path: ok (the default), fail (500), hang (never answers)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, dict[str, list[str]], dict]] = []
        self.modes: dict[str, str] = {}
        self.hanging: list[server.Request] = []

    def render_POST(self, request):
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        self.posts.append((request.path.decode(), headers, json.loads(request.content.read())))
        mode = self.modes.get(request.path.decode(), "ok")
        if mode == "hang":
            self.hanging.append(request)
            return server.NOT_DONE_YET
        if mode == "fail":
            request.setResponseCode(500)
            return b"no"
        return b"ok"


@pytest.fixture
def receiver(reactor_thread):
    site = Receiver()
    port = blockingCallFromThread(reactor_thread, reactor_thread.listenTCP, 0, server.Site(site),
                                  interface="127.0.0.1")
    site.base = f"http://127.0.0.1:{port.getHost().port}"
    yield site

    def close():
        for r in site.hanging:
            if r.channel is not None:  # else pgwarden already hung up, as it should after timeout_s
                r.channel.transport.abortConnection()
        return port.stopListening()

    blockingCallFromThread(reactor_thread, close)


@pytest.fixture
def warnings():
    seen: list[dict] = []

    def observe(event):
        if event.get("log_namespace", "").startswith("pgwarden.approvals"):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def request(sql: str = HOSTILE_SQL, preview: Preview | None = None) -> StoredRequest:
    return StoredRequest(
        id="r7k2m9", subject="agent-1", groups=("ai-agents",), session="s1", sql=sql, fingerprint="f",
        params_hash="h", created=1_800_000_000.0, expires=1_800_000_300.0, kinds=("update",),
        tables=("public.orders",), policy="agents", rule="prod-writes", reason="writes need a human",
        preview=preview or Preview(ok=True, rows=42.0, cost=12.5, writes=("public.orders",)),
    )


def send(reactor, notifiers: Notifiers, req: StoredRequest) -> None:
    """Sends and waits until every POST is over (the caller never waits: `send` returns at once)."""
    blockingCallFromThread(reactor, notifiers.send, req)


def test_webhook_and_slack_receive_the_request_with_a_link_to_the_inbox(reactor_thread, receiver):
    targets = [WebhookNotify(webhook=receiver.base + "/hook"), SlackNotify(slack=receiver.base + "/slack")]
    notifiers = Notifiers(reactor_thread, targets, "https://approvals.example/inbox")
    send(reactor_thread, notifiers, request())

    by_path = {path: (headers, body) for path, headers, body in receiver.posts}
    headers, hook = by_path["/hook"]
    assert headers["content-type"] == ["application/json; charset=UTF-8"]
    assert hook["type"] == "approval_requested"
    assert hook["request"]["id"] == "r7k2m9" and hook["request"]["sql"] == HOSTILE_SQL
    assert hook["request"]["preview"]["rows"] == 42.0
    assert hook["preview"] == "~42 rows; cost 12.50; writes public.orders"
    assert hook["inbox_url"] == "https://approvals.example/inbox#request-r7k2m9"

    _, slack = by_path["/slack"]
    blocks = slack["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "actions"]
    code = blocks[1]["text"]["text"]
    assert code.startswith("```") and code.endswith("```")
    # Slack's control characters escaped: no <!channel> ping, no link markup; backticks cannot end the block.
    assert "<" not in code and ">" not in code and "&lt;script&gt;" in code and "&lt;!channel&gt;" in code
    assert code.count("```") == 2
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[2]["fields"]}
    assert fields["*Requested by*"] == "agent-1"
    assert fields["*Rule*"] == "agents / prod-writes"
    assert fields["*Impact preview*"] == "~42 rows; cost 12.50; writes public.orders"
    button = blocks[4]["elements"][0]
    assert button["type"] == "button" and button["url"] == "https://approvals.example/inbox#request-r7k2m9"


def test_a_failed_preview_is_said_and_no_inbox_url_means_no_button(reactor_thread, receiver):
    notifiers = Notifiers(reactor_thread, [SlackNotify(slack=receiver.base + "/slack")], None)
    send(reactor_thread, notifiers, request("delete from t where id = 1", Preview(ok=False, error="relation gone")))
    blocks = receiver.posts[0][2]["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    assert "*Impact preview*\npreview failed: relation gone" in [f["text"] for f in blocks[2]["fields"]]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("how", ["fail", "hang", "down"])
def test_a_failing_receiver_is_logged_and_counted_and_decides_nothing(reactor_thread, receiver, warnings, how):
    secret = "/services/T000/B000/very-secret-token"
    receiver.modes[secret] = how
    base = f"http://127.0.0.1:{_closed_port()}" if how == "down" else receiver.base
    targets = [SlackNotify(slack=base + secret, timeout_s=0.5), WebhookNotify(webhook=receiver.base + "/ok")]
    notifiers = Notifiers(reactor_thread, targets, None)

    def start():
        d = notifiers.send(request())
        assert not d.called  # send() returned before any answer: nothing waits on a receiver
        return d.addTimeout(10, reactor_thread)  # the test's own bound, well past timeout_s

    with pytest.raises(NotifyFailed) as failed:  # the plugin host counts it (pgwarden_notifier_failures)
        blockingCallFromThread(reactor_thread, start)
    if how != "down":
        assert secret in [p for p, _h, _b in receiver.posts]
    why = {"fail": "answered 500", "hang": "no answer within timeout_s (0.5 s)", "down": "refused"}[how]
    assert str(failed.value).startswith("request r7k2m9: notify[0]:slack: ")
    assert why in str(failed.value) and "notify[1]" not in str(failed.value)  # the webhook's went through
    assert "/ok" in [p for p, _h, _b in receiver.posts]

    assert [(e["notifier"], e["request"]) for e in warnings] == [("notify[0]:slack", "r7k2m9")]
    assert why in warnings[0]["why"]
    everything = repr(warnings) + str(failed.value) + repr(targets)
    assert "very-secret-token" not in everything  # the URL is the credential


CONFIG = """
upstream: {host: db, database: appdb, user: app}
auth:
  jwt: {issuer: https://i, audience: pgwarden, jwks_file: /etc/jwks.json}
approvals:
  inbox_url: https://approvals.example/inbox
  notify:
"""


def test_notify_targets_are_typed_and_checked():
    good = parse_config(CONFIG + "    - {webhook: https://hooks.example/pgwarden}\n"
                                 "    - {slack: https://hooks.slack.com/services/X, timeout_s: 2}\n", "f.yaml")
    assert good.approvals.notify == (WebhookNotify("https://hooks.example/pgwarden"),
                                     SlackNotify("https://hooks.slack.com/services/X", 2.0))
    assert "hooks.slack.com" not in repr(good)
    with pytest.raises(ConfigError) as bad:
        parse_config(CONFIG + "    - {webhook: 'file:///etc/passwd'}\n"
                              "    - {slak: https://x}\n"
                              "    - {slack: https://x, timeout_s: 0}\n", "f.yaml")
    assert bad.value.problems == [
        ("line 8: approvals.notify[0].webhook: expected an http:// or https:// URL with a host, "
         "got 'file:///etc/passwd'"),
        ("line 9: approvals.notify[1]: expected {webhook: URL} or {slack: URL} (each may add timeout_s), "
         "got {'slak': 'https://x'}"),
        "line 10: approvals.notify[2]: invalid value: timeout_s must be positive, got 0.0",
    ]


def test_a_held_statement_is_announced_with_its_preview_and_a_failing_target_changes_nothing(
        make_pgwarden, pg_server, receiver):
    """Through the whole pgwarden: the webhook gets the request as kept (the preview included);
    the Slack target answers 500, which is logged and counted on /metrics, and the statement
    still waits for, and runs after, an approver's yes."""
    import threading
    import urllib.request

    import psycopg

    from pgwarden.testing.waiting import wait_until

    pg_server.psql("drop table if exists orders; create table orders (id int primary key, note text);"
                   "insert into orders select g, 'n' from generate_series(1, 100) g", "appdb")
    receiver.modes["/slack"] = "fail"
    running = make_pgwarden(
        policies=[{"name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow",
                   "rules": [{"name": "order-writes",
                              "approve": {"statements": ["update"], "tables": ["public.orders"]}}]}],
        approvals={"approver_groups": ["db-approvers"], "inbox_url": "https://approvals.example/approvals/inbox/",
                   "notify": [{"webhook": receiver.base + "/hook"}, {"slack": receiver.base + "/slack"}]},
    )
    admin = f"http://127.0.0.1:{running.call(running.app.listen_admin).getHost().port}"
    outcome: list[object] = []

    def client() -> None:
        with psycopg.connect(running.dsn(), autocommit=True) as conn:
            outcome.append(conn.execute("update orders set note = 'x' where id < 11 returning id").fetchall())

    thread = threading.Thread(target=client, daemon=True)
    thread.start()

    def posts() -> dict[str, dict]:
        return {path: body for path, _h, body in receiver.posts}

    got = wait_until(30, posts, "both notifications", until=lambda p: {"/hook", "/slack"} <= set(p))
    hook = got["/hook"]
    request_id = hook["request"]["id"]
    assert hook["request"]["sql"] == "update orders set note = 'x' where id < 11 returning id"
    assert hook["request"]["preview"]["ok"] is True, hook["request"]["preview"]
    assert hook["request"]["preview"]["writes"] == ["public.orders"]
    assert hook["preview"].startswith("~") and "writes public.orders" in hook["preview"], hook["preview"]
    assert hook["inbox_url"] == f"https://approvals.example/approvals/inbox/#request-{request_id}"
    assert "Impact preview" in json.dumps(got["/slack"])

    def failures() -> str:
        text = urllib.request.urlopen(admin + "/metrics", timeout=10).read().decode()
        return next((line for line in text.splitlines() if line.startswith("pgwarden_notifier_failures_total")), "")

    assert wait_until(10, failures, "the failed notification counted", until=lambda line: line.endswith(" 1.0"))
    assert thread.is_alive() and outcome == []  # the failure neither refused nor let it through

    token = running.token("alice", ["db-approvers"])
    answer = urllib.request.urlopen(urllib.request.Request(
        f"{admin}/approvals/api/requests/{request_id}/approve", data=b'{"reason": "ok"}', method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"}), timeout=10)
    assert json.loads(answer.read())["state"] == "approved"
    thread.join(30)
    assert outcome and sorted(outcome[0]) == [(i,) for i in range(1, 11)]
