"""The startup phase, bad input and authentication, byte by byte, against the real proxy."""

from __future__ import annotations

import json
import struct

import jwt
import psycopg
import pytest
from rawclient import RawClient

from pgwarden.testing import wait_until
from pgwarden.testing.postgres import APP_PASSWORD
from pgwarden.wire import messages as m


def fatal(msg) -> bool:
    return isinstance(msg, m.ErrorResponse) and msg.get("S") == "FATAL"


def other_session_still_works(running) -> None:
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------------------- startup packets


def test_ssl_request_without_tls_gets_n_then_login_works(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.send(m.SSLRequest().encode())
    assert rc.sock.recv(1) == b"N"
    ready = rc.login(pgwarden.token())
    assert isinstance(ready[-1], m.ReadyForQuery)
    rc.close()


def test_gssenc_request_gets_n(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.send(m.GSSENCRequest().encode())
    assert rc.sock.recv(1) == b"N"
    assert isinstance(rc.login(pgwarden.token())[-1], m.ReadyForQuery)
    rc.close()


def test_newer_minor_version_gets_negotiate_protocol_version(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    startup = m.StartupMessage((3 << 16) | 2, (("user", "agent"), ("database", "appdb"), ("_pq_.fancy", "1")))
    rc.send(startup.encode())
    assert rc.recv_message() == m.NegotiateProtocolVersion(0, ("_pq_.fancy",))
    assert rc.recv_message() == m.Authentication(m.Authentication.CLEARTEXT)
    rc.send(m.PasswordMessage.cleartext(pgwarden.token()).encode())
    assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)
    rc.close()


def test_protocol_2_is_refused(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    body = struct.pack("!i", 2 << 16) + b"user\0agent\0\0"
    rc.send(struct.pack("!i", len(body) + 4) + body)
    msg = rc.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"
    assert rc.closed()


def test_replication_connection_is_refused(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.send(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("replication", "database"))).encode())
    msg = rc.recv_message()
    assert fatal(msg) and msg.sqlstate == "08004"
    assert "replication" in msg.message
    assert rc.closed()


def test_startup_packet_with_absurd_length(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.send(struct.pack("!i", 0x7FFFFFF0) + b"\0\3\0\0")
    msg = rc.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"
    assert rc.closed()
    other_session_still_works(pgwarden)


def test_silent_client_times_out(make_pgwarden):
    running = make_pgwarden(auth={"startup_timeout_s": 0.3})
    rc = RawClient(running.host, running.port)
    msg = rc.recv_message()  # nothing sent: the proxy gives up on its own
    assert fatal(msg) and "timed out" in msg.message
    assert rc.closed()


def test_client_that_stops_mid_password_times_out(make_pgwarden):
    running = make_pgwarden(auth={"startup_timeout_s": 0.3})
    rc = RawClient(running.host, running.port)
    rc.send(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", "appdb"))).encode())
    assert rc.recv_message() == m.Authentication(m.Authentication.CLEARTEXT)
    rc.send(b"p\0\0\1\0abc")  # a password message that never ends
    msg = rc.recv_message()
    assert fatal(msg) and "timed out" in msg.message


# ---------------------------------------------------------------------------- bad input after login


@pytest.fixture
def logged_in(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    assert isinstance(rc.login(pgwarden.token())[-1], m.ReadyForQuery)
    yield rc
    rc.close()


def test_oversized_message_is_refused_before_it_arrives(pgwarden, logged_in):
    logged_in.send(b"Q" + struct.pack("!i", 0x7FFFFFFF))
    msg = logged_in.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"
    assert "limit" in msg.message
    assert logged_in.closed()
    other_session_still_works(pgwarden)


def test_unknown_message_type(pgwarden, logged_in):
    logged_in.send(b"?" + struct.pack("!i", 4))
    msg = logged_in.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"
    assert logged_in.closed()
    other_session_still_works(pgwarden)


def test_malformed_query_body(pgwarden, logged_in):
    logged_in.send(b"Q" + struct.pack("!i", 7) + b"abc")  # no terminating NUL
    msg = logged_in.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"
    assert logged_in.closed()


def test_length_below_minimum(pgwarden, logged_in):
    logged_in.send(b"Q" + struct.pack("!i", 2))
    msg = logged_in.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"


def test_password_message_after_login(pgwarden, logged_in):
    logged_in.send(m.PasswordMessage.cleartext("again").encode())
    msg = logged_in.recv_message()
    assert fatal(msg) and msg.sqlstate == "08P01"


def test_client_gone_mid_message_closes_the_upstream(pgwarden, pg_server, logged_in):
    logged_in.send(m.Query("select pg_backend_pid()").encode())
    rows = logged_in.until_ready()
    pid = int([r for r in rows if isinstance(r, m.DataRow)][0].values[0])
    logged_in.send(b"Q\0\0\0\x50select")  # half a message, then the client vanishes
    logged_in.close()
    wait_until(20, lambda: pg_server.psql(f"select count(*) from pg_stat_activity where pid = {pid}"),
               "the upstream backend to end with its client", until=lambda n: n == "0")


# ---------------------------------------------------------------------------- tokens


def _login_fails(running, token: str) -> None:
    rc = RawClient(running.host, running.port)
    answer = rc.login(token)
    assert len(answer) == 1 and fatal(answer[0])
    assert answer[0].sqlstate == "28P01"
    assert answer[0].message == "pgwarden: authentication failed"
    assert answer[0].get("D") is None and answer[0].get("H") is None
    assert rc.closed()


def test_garbage_token(pgwarden):
    _login_fails(pgwarden, "garbage")


def test_expired_token(pgwarden):
    _login_fails(pgwarden, pgwarden.token(ttl_s=-3600))


def test_wrong_audience(pgwarden):
    _login_fails(pgwarden, pgwarden.token(extra={"aud": "someone-else"}))


def test_wrong_issuer(pgwarden):
    _login_fails(pgwarden, pgwarden.token(extra={"iss": "https://evil.example"}))


def test_unknown_kid(pgwarden):
    _login_fails(pgwarden, pgwarden.token(kid="other-key"))


def test_alg_none(pgwarden):
    claims = jwt.decode(pgwarden.token(), options={"verify_signature": False})
    header = {"alg": "none", "typ": "JWT", "kid": "pgwarden-local"}
    unsigned = ".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode()).decode() for part in (header, claims)
    ) + "."
    _login_fails(pgwarden, unsigned)


def test_hmac_keyed_with_the_public_key(pgwarden):
    claims = jwt.decode(pgwarden.token(), options={"verify_signature": False})
    public = json.loads(pgwarden.keys["jwks"].read_text())["keys"][0]
    secret = json.dumps(public).encode()
    header = {"kid": "pgwarden-local"}
    import hashlib
    import hmac

    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
    body = jwt.utils.base64url_encode(json.dumps(claims).encode())
    sig = jwt.utils.base64url_encode(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    _login_fails(pgwarden, (head + b"." + body + b"." + sig).decode())


def test_token_signed_by_another_key(pgwarden, tmp_path):
    from pgwarden.tokens import generate_key, mint

    other_private, _ = generate_key(tmp_path / "other")
    token = mint(other_private, subject="x", issuer="https://issuer.pgwarden.test", audience="pgwarden")
    _login_fails(pgwarden, token)


# ---------------------------------------------------------------------------- upstream authentication and TLS


@pytest.mark.parametrize("user", ["app", "md5_user", "clear_user", "trust_user"])
def test_upstream_auth_methods(make_pgwarden, user):
    running = make_pgwarden(upstream={"user": user})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select current_user").fetchone() == (user,)


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_upstream_tls(make_pgwarden, pg_server, mode):
    tls = {"mode": mode}
    if mode != "require":
        tls["ca_file"] = str(pg_server.certs["ca"])
    running = make_pgwarden(upstream={"user": "tls_only", "host": "127.0.0.1", "tls": tls})
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)


def test_upstream_tls_verify_full_rejects_a_wrong_name(make_pgwarden, pg_server, tmp_path):
    from pgwarden.testing.certs import make_ca_and_server

    other_ca = make_ca_and_server(tmp_path / "other-ca")["ca"]
    running = make_pgwarden(
        upstream={"user": "tls_only", "tls": {"mode": "verify-full", "ca_file": str(other_ca)}}
    )
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect(running.dsn())
    assert "cannot connect to the database" in str(excinfo.value)


def test_wrong_upstream_password_never_leaks(make_pgwarden, tmp_path):
    secret = "Sup3r-secret-upstream-pw"
    pwfile = tmp_path / "wrong"
    pwfile.write_text(secret)
    running = make_pgwarden(upstream={"password_file": str(pwfile)})
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect(running.dsn())
    assert "cannot connect to the database" in str(excinfo.value)
    assert secret not in str(excinfo.value)
    assert secret not in repr(running.app.config)


def test_unreachable_upstream_is_an_error_not_a_hang(make_pgwarden):
    from pgwarden.testing.postgres import free_port

    running = make_pgwarden(upstream={"port": free_port()})
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect(running.dsn())
    assert "cannot connect to the database" in str(excinfo.value)


def test_upstream_loss_reaches_the_client(pgwarden, pg_server):
    with psycopg.connect(pgwarden.dsn(), autocommit=True) as c:
        pid = c.info.backend_pid
        pg_server.psql(f"select pg_terminate_backend({pid})")
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
    other_session_still_works(pgwarden)


def test_client_tls_termination(make_pgwarden, pg_server):
    certs = pg_server.certs
    running = make_pgwarden(listen={"tls": {"cert_file": str(certs["cert"]), "key_file": str(certs["key"])}})
    dsn = running.dsn().replace("sslmode=disable", f"sslmode=verify-full sslrootcert={certs['ca']}")
    with psycopg.connect(dsn.replace("host=127.0.0.1", "host=localhost"), autocommit=True) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("select 1").fetchone() == (1,)


def test_cleartext_token_rule_only_trusts_loopback():
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from pgwarden.proxy.client import is_loopback

    assert is_loopback(IPv4Address("TCP", "127.0.0.1", 1))
    assert is_loopback(IPv6Address("TCP", "::1", 1, 0, 0))
    assert is_loopback(UNIXAddress(b"/tmp/s"))
    assert not is_loopback(IPv4Address("TCP", "10.0.0.5", 1))
    assert not is_loopback(IPv6Address("TCP", "fe80::1", 1, 0, 0))


def test_upstream_password_file_in_config_not_password(pgwarden):
    # The config holds a path, never the secret itself.
    assert APP_PASSWORD not in repr(pgwarden.app.config)


def test_another_database_is_refused_clearly(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.send(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", "postgres"))).encode())
    msg = rc.recv_message()
    assert fatal(msg) and msg.sqlstate == "3D000"
    assert msg.message == 'pgwarden: database "postgres" is not served here; connect to "appdb"'


def test_server_fatal_reaches_the_client_unhidden(pgwarden, pg_server):
    rc = RawClient(pgwarden.host, pgwarden.port)
    rc.login(pgwarden.token())
    rc.send(m.Query("select pg_backend_pid()").encode())
    pid = int(next(x for x in rc.until_ready() if isinstance(x, m.DataRow)).values[0])
    pg_server.psql(f"select pg_terminate_backend({pid})")
    got = []
    while (msg := rc.recv_message()) is not None:
        got.append(msg)
    # Exactly the server's own reason, and nothing of pgwarden's after it.
    assert [(x.get("V"), x.sqlstate) for x in got] == [("FATAL", "57P01")]


def test_client_sees_its_own_application_name(pgwarden):
    with psycopg.connect(pgwarden.dsn(application_name="my-agent"), autocommit=True) as c:
        assert c.info.parameter_status("application_name") == "my-agent"
        # ... while the server knows who it really is
        tagged = c.execute("select application_name from pg_stat_activity where pid = pg_backend_pid()").fetchone()
        assert tagged == ("pgwarden:agent-1 (my-agent)",)


def test_cancel_connection_closes_only_after_the_server_took_it(pgwarden):
    """A client waits for its cancel connection to close, then sends its next statement:
    that statement must never be the one cancelled."""
    rc = RawClient(pgwarden.host, pgwarden.port)
    ready = rc.login(pgwarden.token())
    key = next(x for x in ready if isinstance(x, m.BackendKeyData))
    for _ in range(10):
        cancel = RawClient(pgwarden.host, pgwarden.port)
        cancel.send(m.CancelRequest(key.process_id, key.secret_key).encode())
        assert cancel.closed()
        rc.send(m.Query("select pg_sleep(0.05)").encode())
        answer = rc.until_ready()
        assert not any(isinstance(x, m.ErrorResponse) for x in answer), answer
    rc.close()


def test_identity_without_a_policy_is_refused(make_pgwarden):
    running = make_pgwarden(policies=[{"name": "agents", "when": {"groups": ["ai-agents"]}},
                                      {"name": "ci", "when": {"subject": "ci-*"}}])
    rc = RawClient(running.host, running.port)
    answer = rc.login(running.token("intruder", groups=["humans"]))
    assert len(answer) == 1 and fatal(answer[0])
    assert (answer[0].sqlstate, answer[0].message) == ("28000", "pgwarden: no policy for this identity")
    # a subject glob or a group is enough
    for token in (running.token("ci-7", groups=[]), running.token("x", groups=["ai-agents"])):
        ok = RawClient(running.host, running.port).login(token)
        assert isinstance(ok[-1], m.ReadyForQuery)


def test_token_not_yet_valid(pgwarden):
    import time as _time

    _login_fails(pgwarden, pgwarden.token(extra={"nbf": int(_time.time()) + 3600}))


def test_token_without_exp_or_iat(pgwarden):
    import time as _time

    claims = {"iss": "https://issuer.pgwarden.test", "aud": "pgwarden", "sub": "x", "iat": int(_time.time())}
    no_exp = jwt.encode(claims, pgwarden.keys["private"].read_bytes(), algorithm="RS256",
                        headers={"kid": "pgwarden-local"})
    _login_fails(pgwarden, no_exp)


def test_startup_options_and_role_never_reach_the_upstream(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port)
    startup = m.StartupMessage(m.PROTOCOL_3_0, (
        ("user", "agent"), ("database", "appdb"), ("options", "-c statement_timeout=1234 -c role=pg_monitor"),
        ("role", "pg_monitor"), ("session_authorization", "postgres"), ("search_path", "pg_catalog"),
    ))
    rc.send(startup.encode())
    rc.recv_message()
    rc.send(m.PasswordMessage.cleartext(pgwarden.token()).encode())
    assert isinstance(rc.until_ready()[-1], m.ReadyForQuery)
    rc.send(m.Query("select current_setting('statement_timeout'), current_user, "
                    "current_setting('search_path')").encode())
    row = next(x for x in rc.until_ready() if isinstance(x, m.DataRow))
    # options and role were dropped; search_path is on the allow-list
    assert row.values == (b"0", b"app", b"pg_catalog")
    rc.close()


def test_listen_change_needs_a_restart(make_pgwarden, pg_server, signing_keys, tmp_path):
    from pgwarden.config import _CONVERTER, Config
    from pgwarden.testing.postgres import free_port
    from pgwarden.testing.pytest_plugin import base_config

    running = make_pgwarden()
    before = running.app.config.listen
    doc = base_config(pg_server, signing_keys, tmp_path, listen={"port": free_port()})
    assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
    assert running.app.config.listen == before
    assert isinstance(RawClient(running.host, running.port).login(running.token())[-1], m.ReadyForQuery)
