"""Keys from the issuer: JWKS URL, OIDC discovery, rotation, rate-limited refresh, an issuer that is down."""

from __future__ import annotations

import json

import psycopg
import pytest
from twisted.web import resource, server

from pgwarden.tokens import generate_key, mint

from rawclient import RawClient


class Issuer(resource.Resource):
    """A JWKS and OIDC discovery endpoint served in-process, counting its requests."""

    isLeaf = True

    def __init__(self, jwks_paths) -> None:
        super().__init__()
        self.jwks = {"keys": []}
        self.set_keys(jwks_paths)
        self.requests: list[str] = []
        self.down = False
        self.base = ""

    def set_keys(self, jwks_paths) -> None:
        self.jwks = {"keys": [k for p in jwks_paths for k in json.loads(p.read_text())["keys"]]}

    def render_GET(self, request):
        self.requests.append(request.path.decode())
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
