"""Keys from the issuer: JWKS URL, OIDC discovery, rotation, rate-limited refresh, an issuer that is down."""

from __future__ import annotations

import json
import socket
import time

import psycopg
import pytest
from rawclient import RawClient
from twisted.internet import protocol, task
from twisted.web import resource, server

from pgwarden.testing.pytest_plugin import ISSUER
from pgwarden.tokens import generate_key, mint


class Issuer(resource.Resource):
    """A JWKS and OIDC discovery endpoint served in-process, counting its requests."""

    isLeaf = True

    def __init__(self, jwks_paths) -> None:
        super().__init__()
        self.jwks = {"keys": []}
        self.set_keys(jwks_paths)
        self.requests: list[str] = []
        self.down = False
        self.hang = False  # takes the request, never answers
        self.base = ""

    def set_keys(self, jwks_paths) -> None:
        self.jwks = {"keys": [k for p in jwks_paths for k in json.loads(p.read_text())["keys"]]}

    def render_GET(self, request):
        self.requests.append(request.path.decode())
        if self.hang:
            return server.NOT_DONE_YET
        if self.down:
            request.setResponseCode(503)
            return b"down"
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/.well-known/openid-configuration":
            return json.dumps({"issuer": self.base, "jwks_uri": self.base + "/keys"}).encode()
        if request.path == b"/keys":
            return json.dumps(self.jwks).encode()
        request.setResponseCode(404)
        return b"{}"


@pytest.fixture
def issuer(reactor_thread, tmp_path):
    from twisted.internet.threads import blockingCallFromThread

    key_a = generate_key(tmp_path / "a", kid="key-a")
    key_b = generate_key(tmp_path / "b", kid="key-b")
    site = Issuer([key_a[1]])
    port = blockingCallFromThread(reactor_thread, reactor_thread.listenTCP, 0, server.Site(site), interface="127.0.0.1")
    site.base = f"http://127.0.0.1:{port.getHost().port}"
    site.keys = {"a": key_a, "b": key_b}
    yield site
    blockingCallFromThread(reactor_thread, port.stopListening)


def token(site, which, **kw):
    return mint(site.keys[which][0], subject="agent-1", issuer=site.base, audience="pgwarden",
                groups=["ai-agents"], kid=f"key-{which}", **kw)


def login(running, tok) -> str:
    rc = RawClient(running.host, running.port)
    answer = rc.login(tok)
    rc.close()
    return "ok" if type(answer[-1]).__name__ == "ReadyForQuery" else answer[0].sqlstate


@pytest.mark.parametrize("how", ["jwks_url", "discovery"])
def test_keys_from_the_issuer(make_pgwarden, issuer, how):
    jwt_cfg = {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None}
    jwt_cfg.update({"jwks_url": issuer.base + "/keys"} if how == "jwks_url" else {"discovery": True})
    running = make_pgwarden(auth={"jwt": jwt_cfg})
    assert login(running, token(issuer, "a")) == "ok"
    assert login(running, token(issuer, "a")) == "ok"
    fetched = [p for p in issuer.requests if p == "/keys"]
    assert len(fetched) == 1  # cached
    if how == "discovery":
        assert issuer.requests[0] == "/.well-known/openid-configuration"
    with psycopg.connect(running.dsn(token(issuer, "a")), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)


def test_rotation_unknown_kid_refresh_is_rate_limited_and_issuer_down(make_pgwarden, issuer):
    running = make_pgwarden(auth={"jwt": {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None,
                                          "jwks_url": issuer.base + "/keys", "keys_refresh_interval_s": 3600}})
    assert login(running, token(issuer, "a")) == "ok"
    # Tokens signed by a key the issuer does not publish: refused; within the
    # refresh interval, unknown kids do not make pgwarden hammer the issuer.
    for _ in range(5):
        assert login(running, token(issuer, "b")) == "28P01"
    assert issuer.requests.count("/keys") == 1
    # The issuer is down: the last good keys still serve.
    issuer.down = True
    assert login(running, token(issuer, "a")) == "ok"


def test_rotated_key_is_picked_up(make_pgwarden, issuer):
    running = make_pgwarden(auth={"jwt": {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None,
                                          "jwks_url": issuer.base + "/keys", "keys_refresh_interval_s": 0.001}})
    assert login(running, token(issuer, "a")) == "ok"
    issuer.set_keys([issuer.keys["a"][1], issuer.keys["b"][1]])  # the issuer rotates
    assert login(running, token(issuer, "b")) == "ok"


def test_no_keys_at_all_fails_closed(make_pgwarden, issuer):
    issuer.down = True
    running = make_pgwarden(auth={"jwt": {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None,
                                          "jwks_url": issuer.base + "/keys"}})
    assert login(running, token(issuer, "a")) == "28P01"


# An issuer that misbehaves on the wire: each is a real server on a local socket.
# A fetch has a connect timeout, a deadline and a body cap (auth.jwt.keys_*); the
# login that waits for keys fails closed (28P01) when they end it, and says why in the log.


class Silent(protocol.Protocol):
    """Accepts, reads the request, never answers."""


class Dribble(protocol.Protocol):
    """Promises a huge body and sends it a byte at a time, forever."""

    def dataReceived(self, data: bytes) -> None:
        if getattr(self, "loop", None) is None:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 1000000000\r\n\r\n[")
            self.loop = task.LoopingCall(self.transport.write, b" ")
            self.loop.clock = self.factory.reactor
            self.loop.start(0.01)

    def connectionLost(self, reason) -> None:
        if getattr(self, "loop", None) is not None and self.loop.running:
            self.loop.stop()


class Huge(protocol.Protocol):
    """Answers with 8 MiB, ended by closing the connection: above the default 1 MiB cap."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        self.transport.write(b"[" + b" " * (8 * 1024 * 1024) + b"]")
        self.transport.loseConnection()


class Http10(protocol.Protocol):
    """HTTP/1.0, no Content-Length: the body ends when the connection closes (legal)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        self.transport.write(json.dumps(self.factory.jwks).encode())
        self.transport.loseConnection()


@pytest.fixture
def serve(reactor_thread):
    """Starts a server of a protocol class on a local port; its connections are cut after the test."""
    from twisted.internet.threads import blockingCallFromThread

    ports, connections = [], []

    def start(proto, **attributes) -> str:
        class Factory(protocol.Factory):
            protocol = proto

            def buildProtocol(self, addr):
                p = super().buildProtocol(addr)
                connections.append(p)
                return p

        factory = Factory()
        factory.reactor = reactor_thread
        for name, value in attributes.items():
            setattr(factory, name, value)
        port = blockingCallFromThread(reactor_thread, reactor_thread.listenTCP, 0, factory, interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}/keys"

    yield start

    def stop():
        for p in connections:
            if p.transport is not None:
                p.transport.abortConnection()
        for port in ports:
            port.stopListening()

    blockingCallFromThread(reactor_thread, stop)


@pytest.fixture
def jwks_log():
    """What pgwarden.jwks logs during the test."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event) -> None:
        if event.get("log_namespace") == "pgwarden.jwks":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def remote(url, **jwt_options) -> dict:
    return {"jwt": {"issuer": ISSUER, "audience": "pgwarden", "jwks_file": None, "jwks_url": url, **jwt_options}}


def test_an_issuer_that_never_answers_fails_the_login_at_the_deadline(make_pgwarden, serve, jwks_log):
    url = serve(Silent)
    running = make_pgwarden(auth=remote(url, keys_timeout_s=0.3))
    assert login(running, running.token()) == "28P01"
    assert any("no complete answer within 0.3 s" in line for line in jwks_log), jwks_log


def test_an_issuer_that_dribbles_forever_fails_the_login_at_the_deadline(make_pgwarden, serve, jwks_log):
    url = serve(Dribble)
    running = make_pgwarden(auth=remote(url, keys_timeout_s=0.3))
    assert login(running, running.token()) == "28P01"
    assert any("no complete answer within 0.3 s" in line for line in jwks_log), jwks_log


def test_a_body_over_the_cap_is_refused(make_pgwarden, serve, jwks_log):
    url = serve(Huge)
    running = make_pgwarden(auth=remote(url, keys_timeout_s=30))
    assert login(running, running.token()) == "28P01"
    assert any(f"larger than {1024 * 1024} bytes" in line for line in jwks_log), jwks_log


def test_the_body_cap_is_configured(make_pgwarden, serve, signing_keys, jwks_log):
    jwks = json.loads(signing_keys["jwks"].read_text())
    url = serve(Http10, jwks=jwks)
    running = make_pgwarden(auth=remote(url, keys_max_bytes=len(json.dumps(jwks)) - 1))
    assert login(running, running.token()) == "28P01"
    assert any("larger than" in line for line in jwks_log), jwks_log


def test_no_connection_within_the_connect_timeout(make_pgwarden, jwks_log):
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/keys"
        running = make_pgwarden(auth=remote(url, keys_connect_timeout_s=0.3, keys_timeout_s=30))
        assert login(running, running.token()) == "28P01"
        assert any("no connection within 0.3 s" in line for line in jwks_log), jwks_log
    finally:
        for s in [*fillers, listener]:
            s.close()


def test_keys_served_over_http10_ended_by_close(make_pgwarden, serve, signing_keys):
    url = serve(Http10, jwks=json.loads(signing_keys["jwks"].read_text()))
    running = make_pgwarden(auth=remote(url))
    assert login(running, running.token()) == "ok"


def test_a_hung_issuer_does_not_stall_logins_while_keys_are_cached(make_pgwarden, issuer, jwks_log):
    # The cache goes stale at once; the issuer then hangs. A login signed by a key held
    # is verified at once (the refresh runs behind it); its deadline ends the refresh.
    running = make_pgwarden(auth={"jwt": {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None,
                                          "jwks_url": issuer.base + "/keys", "keys_cache_s": 0.001,
                                          "keys_refresh_interval_s": 0.001, "keys_timeout_s": 60}})
    assert login(running, token(issuer, "a")) == "ok"
    issuer.hang = True
    started = time.monotonic()
    assert login(running, token(issuer, "a")) == "ok"
    assert login(running, token(issuer, "a")) == "ok"
    assert time.monotonic() - started < 30  # not held until the 60 s deadline
    assert issuer.requests.count("/keys") >= 2  # the refresh did go out


def test_a_hung_issuer_fails_closed_when_no_key_is_held(make_pgwarden, issuer, jwks_log):
    issuer.hang = True
    running = make_pgwarden(auth={"jwt": {"issuer": issuer.base, "audience": "pgwarden", "jwks_file": None,
                                          "jwks_url": issuer.base + "/keys", "keys_timeout_s": 0.3}})
    assert login(running, token(issuer, "a")) == "28P01"
    assert any("no complete answer within 0.3 s" in line for line in jwks_log), jwks_log
