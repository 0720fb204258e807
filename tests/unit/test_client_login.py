"""The client's login, sans-IO: bytes in, actions out, as a conversation.

Each test reads as the exchange it checks: what the client sends (`ClientLogin.receive`) and
what pgwarden does about it (the actions). No sockets: the end-to-end tests (test_protocol.py,
test_pod_identity.py, test_identity.py) check the same through real clients.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgwarden.proxy.client_login import (
    MAX_LOGIN_MESSAGE,
    TRANSITIONS,
    Authenticate,
    ClientLogin,
    Close,
    ForwardCancel,
    LoginSettings,
    ReadPodToken,
    Refuse,
    Send,
    StartTLS,
    State,
    greeting,
)
from pgwarden.wire import messages as m
from pgwarden.wire.errors import LocalProtocolError

LOCAL = LoginSettings(database="appdb", loopback=True)
REMOTE = LoginSettings(database="appdb")
TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
CLEARTEXT = Send(m.Authentication(m.Authentication.CLEARTEXT).encode())


def startup(*params: tuple[str, str], version: int = m.PROTOCOL_3_0) -> bytes:
    return m.StartupMessage(version, params or (("user", "agent"), ("database", "appdb"))).encode()


def password(token: str = TOKEN) -> bytes:
    return m.PasswordMessage.cleartext(token).encode()


def refused(actions: list) -> Refuse:
    (action,) = [a for a in actions if isinstance(a, Refuse)]
    assert actions[-1] is action, "nothing follows a refusal"
    return action


def test_startup_then_password_asks_for_the_token_then_hands_it_over():
    login = ClientLogin(LOCAL)
    assert login.receive(startup()) == [CLEARTEXT]
    assert login.state is State.PASSWORD
    assert login.receive(password()) == [Authenticate(TOKEN)]
    assert login.state is State.AUTHENTICATING
    assert login.startup is not None and login.startup.get("user") == "agent"
    assert login.authenticated() is True
    assert login.state is State.CONNECTING
    assert login.ready() == b""
    assert login.state is State.READY


def test_the_token_never_shows_in_a_repr():
    login = ClientLogin(LOCAL)
    action = login.receive(startup() + password())[-1]
    assert action == Authenticate(TOKEN)
    assert TOKEN not in repr(action) and TOKEN not in repr(login)


def test_queries_pipelined_after_the_password_wait_for_the_relay():
    login = ClientLogin(LOCAL)
    early = m.Query("select 1").encode() + m.Sync().encode()
    assert login.receive(startup() + password() + early) == [CLEARTEXT, Authenticate(TOKEN)]
    assert login.receive(b"more") == []
    login.authenticated()
    assert login.ready() == early + b"more"


def test_too_much_data_before_the_session_is_ready_is_refused():
    login = ClientLogin(LOCAL)
    login.receive(startup() + password())
    assert login.receive(b"x" * MAX_LOGIN_MESSAGE) == []
    assert refused(login.receive(b"x")).sqlstate == "08P01"
    assert login.state is State.CLOSED
    assert login.authenticated() is False  # the authenticators' late answer finds nothing to go on with


@given(st.data())
def test_any_split_of_the_login_gives_the_same_actions(data):
    stream = (m.GSSENCRequest().encode() + startup(("user", "appdb"), ("application_name", "a b"))
              + password() + m.Query("select 1").encode())
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    login = ClientLogin(LOCAL)
    actions = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        actions += login.receive(stream[a:b])
    assert actions == [Send(b"N"), CLEARTEXT, Authenticate(TOKEN)]
    login.authenticated()
    assert login.ready() == m.Query("select 1").encode()


def test_byte_by_byte():
    login = ClientLogin(LOCAL)
    actions = []
    for byte in startup() + password():
        actions += login.receive(bytes([byte]))
    assert actions == [CLEARTEXT, Authenticate(TOKEN)]


# ---------------------------------------------------------------------- TLS and GSS


def test_ssl_request_is_answered_s_and_tls_started_when_a_certificate_is_configured():
    login = ClientLogin(LoginSettings(database="appdb", tls_available=True))
    assert login.receive(m.SSLRequest().encode()) == [Send(b"S"), StartTLS()]
    assert login.tls_active
    # Over TLS a token may cross the network.
    assert login.receive(startup() + password()) == [CLEARTEXT, Authenticate(TOKEN)]


def test_ssl_request_is_answered_n_without_a_certificate():
    login = ClientLogin(LOCAL)
    assert login.receive(m.SSLRequest().encode()) == [Send(b"N")]
    assert not login.tls_active
    assert login.receive(startup()) == [CLEARTEXT]


def test_a_second_ssl_request_inside_tls_is_refused():
    login = ClientLogin(LoginSettings(database="appdb", tls_available=True))
    login.receive(m.SSLRequest().encode())
    assert refused(login.receive(m.SSLRequest().encode())) == Refuse(
        "08P01", "pgwarden: invalid message: SSLRequest inside TLS")


def test_bytes_after_an_ssl_request_before_its_answer_are_refused():
    """CVE-2021-23214: what came in clear text before TLS must not be read as if it came through it."""
    login = ClientLogin(LoginSettings(database="appdb", tls_available=True))
    action = refused(login.receive(m.SSLRequest().encode() + startup()))
    assert action.sqlstate == "08P01" and "unencrypted data after SSLRequest" in action.message
    assert StartTLS() not in login.receive(b"")


def test_gssenc_request_is_answered_n():
    login = ClientLogin(LOCAL)
    assert login.receive(m.GSSENCRequest().encode()) == [Send(b"N")]
    assert login.state is State.STARTUP


# ---------------------------------------------------------------------- startup


def test_cancel_request_is_forwarded_and_ends_the_login():
    login = ClientLogin(LOCAL)
    assert login.receive(m.CancelRequest(42, 0xFFFFFFFF).encode()) == [ForwardCancel(42, 0xFFFFFFFF)]
    assert login.state is State.CLOSED
    assert login.receive(startup()) == []


@pytest.mark.parametrize(
    ("params", "sqlstate", "message"),
    [
        ((("user", "agent"), ("replication", "database")), "08004",
         "pgwarden: replication connections are not allowed"),
        ((("database", "appdb"),), "28000", "pgwarden: no user name specified"),
        ((("user", "agent"), ("database", "other")), "3D000",
         'pgwarden: database "other" is not served here; connect to "appdb"'),
        # Without a database, libpq's default is the user name.
        ((("user", "agent"),), "3D000", 'pgwarden: database "agent" is not served here; connect to "appdb"'),
        # The server takes the last of two values, pgwarden would read the first: no client sends two.
        ((("user", "agent"), ("database", "appdb"), ("search_path", "public"), ("search_path", "secret")),
         "08P01", 'pgwarden: the startup packet names the parameter "search_path" more than once'),
        ((("user", "agent"), ("database", "appdb"), ("database", "other")),
         "08P01", 'pgwarden: the startup packet names the parameter "database" more than once'),
    ],
)
def test_startups_pgwarden_does_not_serve(params, sqlstate, message):
    login = ClientLogin(LOCAL)
    assert login.receive(startup(*params)) == [Refuse(sqlstate, message)]
    assert login.state is State.CLOSED


@pytest.mark.parametrize("value", ["false", "0", "off", "no"])
def test_replication_off_is_an_ordinary_connection(value):
    assert ClientLogin(LOCAL).receive(startup(("user", "appdb"), ("replication", value))) == [CLEARTEXT]


def test_a_newer_minor_version_is_answered_with_the_one_pgwarden_speaks():
    login = ClientLogin(LOCAL)
    actions = login.receive(startup(("user", "agent"), ("database", "appdb"), ("_pq_.compress", "on"),
                                    version=(3 << 16) | 2))
    assert actions == [Send(m.NegotiateProtocolVersion(0, ("_pq_.compress",)).encode()), CLEARTEXT]


def test_an_older_protocol_is_refused():
    action = refused(ClientLogin(LOCAL).receive(startup(version=2 << 16)))
    assert action.sqlstate == "08P01" and "pgwarden speaks protocol 3" in action.message


def test_a_token_is_not_taken_in_clear_text_over_the_network():
    assert ClientLogin(REMOTE).receive(startup()) == [Refuse(
        "28000", "pgwarden: a token is not accepted in clear text over the network; connect with TLS")]


def test_unless_configured():
    login = ClientLogin(LoginSettings(database="appdb", allow_cleartext_remote=True))
    assert login.receive(startup()) == [CLEARTEXT]


def test_terminate_instead_of_a_password_closes_quietly():
    login = ClientLogin(LOCAL)
    login.receive(startup())
    assert login.receive(m.Terminate().encode()) == [Close()]
    assert login.state is State.CLOSED


# ---------------------------------------------------------------------- the pod's identity


def test_pod_mode_reads_the_pods_token_instead_of_asking():
    login = ClientLogin(LoginSettings(database="appdb", pod=True, loopback=True))
    assert login.receive(startup()) == [ReadPodToken()]
    assert login.state is State.AUTHENTICATING
    assert login.pod_token(f"  {TOKEN}\n", "/token") == [Authenticate(TOKEN)]


def test_pod_mode_with_an_empty_token_file_fails_authentication():
    login = ClientLogin(LoginSettings(database="appdb", pod=True, loopback=True))
    login.receive(startup())
    assert login.pod_token("\n", "/token") == [Refuse("28P01", "pgwarden: authentication failed",
                                                      "pod identity: /token is empty")]


def test_pod_mode_refuses_a_connection_from_outside_the_pod():
    login = ClientLogin(LoginSettings(database="appdb", pod=True))
    assert login.receive(startup()) == [Refuse(
        "28000", "pgwarden: only connections from inside the pod (loopback) are accepted",
        "pod identity: connection not from loopback")]


def test_a_refused_token_fails_authentication_without_saying_why():
    login = ClientLogin(LOCAL)
    login.receive(startup() + password())
    assert login.auth_failed("signature expired") == [
        Refuse("28P01", "pgwarden: authentication failed", "signature expired")]
    assert login.auth_failed("again") == []  # once closed, nothing more


# ---------------------------------------------------------------------- malformed and oversized


@pytest.mark.parametrize(
    ("after_startup", "says"),
    [
        (b"p\x00\x00\x00\x08abcd", "unterminated string"),  # a password without its NUL
        (b"p\x00\x00\x00\x09ab\x00cd", "PasswordMessage"),  # bytes after it
        (m.Query("select 1").encode(), "unknown message type 'Q'"),  # not a password at all
        (b"p" + (MAX_LOGIN_MESSAGE + 1).to_bytes(4, "big"), ""),  # a length above the bound
        (b"p\x00\x00\x00\x02", ""),  # a length shorter than itself
    ],
)
def test_a_malformed_password_message_is_refused_with_08p01(after_startup, says):
    login = ClientLogin(LOCAL)
    login.receive(startup())
    action = refused(login.receive(after_startup))
    assert action.sqlstate == "08P01" and action.message.startswith("pgwarden: invalid message: ")
    assert says in action.message
    assert login.state is State.CLOSED


@pytest.mark.parametrize("length", [0, 7, 10001, 2**31 - 1, -1])
def test_a_startup_packet_of_an_impossible_length_is_refused(length):
    action = refused(ClientLogin(LOCAL).receive(length.to_bytes(4, "big", signed=True) + b"\x00" * 8))
    assert action == Refuse("08P01", f"pgwarden: invalid message: invalid startup packet length {length}")


@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans(), st.booleans())
def test_any_bytes_give_actions_or_a_refusal_never_a_crash(chunks, after_startup, tls):
    login = ClientLogin(LoginSettings(database="appdb", loopback=True, tls_available=tls))
    if after_startup:
        login.receive(startup())
    for chunk in chunks:
        actions = login.receive(chunk)
        if any(isinstance(a, Refuse | Close | ForwardCancel) for a in actions):
            assert login.state is State.CLOSED
        if login.state is State.CLOSED:
            assert login.receive(chunk) == []


# ---------------------------------------------------------------------- the state table


def test_every_state_can_end():
    for state, following in TRANSITIONS.items():
        assert State.CLOSED in following, state
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize("state", [State.STARTUP, State.PASSWORD, State.READY, State.CLOSED])
def test_a_move_outside_the_table_is_our_bug_not_the_clients(state):
    login = ClientLogin(LOCAL, state=state)
    if state is not State.READY:
        with pytest.raises(LocalProtocolError):
            login.ready()
    else:
        with pytest.raises(LocalProtocolError):
            login.receive(b"Q")


def test_the_greeting_tells_the_client_its_own_application_name():
    params = [m.ParameterStatus("application_name", "pgwarden:agent (psql)"), m.ParameterStatus("TimeZone", "UTC")]
    notice = m.NoticeResponse.build("NOTICE", "00000", "hello").encode()
    out = greeting(params, [notice], m.BackendKeyData(7, 99), "I", "psql")
    assert out == [
        m.Authentication(m.Authentication.OK).encode(),
        m.ParameterStatus("application_name", "psql").encode(),
        m.ParameterStatus("TimeZone", "UTC").encode(),
        notice,
        m.BackendKeyData(7, 99).encode(),
        m.ReadyForQuery("I").encode(),
    ]
