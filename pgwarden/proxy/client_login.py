"""The client's side of the login, sans-IO: startup packets, TLS, the token, then ready.

`ClientLogin.receive(data)` takes what the client sent and returns what to do about it, as
actions: bytes to send, TLS to start, a cancel to forward, a token to check, the pod's
token to read, a refusal. The outcomes that need the world (the authenticators' answer,
the upstream's readiness) come back through `authenticated`, `auth_failed` and `ready`.
No sockets, no Twisted, no clock: `ClientConnection` moves the bytes and keeps the timers,
and the tests drive this with bytes alone (tests/unit/test_client_login.py).

Every state and every transition between them is in `TRANSITIONS`; a move that is not in it
is a bug of ours (`LocalProtocolError`), never the client's. What the client gets wrong is a
`Refuse` action with its SQLSTATE, and the state is then CLOSED: nothing more is read.
The token is held only in the `Authenticate` action, whose repr hides it.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from pgwarden.wire import messages as m
from pgwarden.wire.errors import LocalProtocolError, ProtocolError
from pgwarden.wire.framing import NEED_DATA, MessageFramer, StartupFramer

#: The bound on a PasswordMessage (a JWT) and on what a client may send before the session is
#: ready: a token is a few KiB; anything near this is not a token.
MAX_LOGIN_MESSAGE: Final = 64 * 1024


class State(enum.Enum):
    #: untyped packets: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage
    STARTUP = "startup"
    #: AuthenticationCleartextPassword sent; waiting for the PasswordMessage carrying the token
    PASSWORD = "password"
    #: the token (or the pod's) is with the authenticators
    AUTHENTICATING = "authenticating"
    #: the identity is known; the upstream session is being opened. Nothing is read.
    CONNECTING = "connecting"
    #: the login is over: the relay takes the connection
    READY = "ready"
    CLOSED = "closed"


#: Every transition the login makes, and what makes it. A state's own name in its set means it
#: may stay (SSLRequest and GSSENCRequest are answered and the startup goes on).
TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    # SSLRequest/GSSENCRequest → STARTUP; StartupMessage → PASSWORD (a token is asked) or
    # AUTHENTICATING (auth.mode pod); CancelRequest or a refusal → CLOSED
    State.STARTUP: frozenset({State.STARTUP, State.PASSWORD, State.AUTHENTICATING, State.CLOSED}),
    # PasswordMessage → AUTHENTICATING; Terminate or a malformed message → CLOSED
    State.PASSWORD: frozenset({State.AUTHENTICATING, State.CLOSED}),
    # `authenticated` → CONNECTING; `auth_failed` → CLOSED
    State.AUTHENTICATING: frozenset({State.CONNECTING, State.CLOSED}),
    # `ready` → READY; too much data from the client, or the upstream failed → CLOSED
    State.CONNECTING: frozenset({State.READY, State.CLOSED}),
    State.READY: frozenset({State.CLOSED}),
    State.CLOSED: frozenset({State.CLOSED}),
}


@attrs.frozen
class LoginSettings:
    """What the login needs to know of pgwarden and of the socket, fixed for the connection."""

    #: the one database pgwarden serves (``upstream.database``)
    database: str
    #: a certificate is configured (``listen.tls``): an SSLRequest is answered 'S'
    tls_available: bool = False
    #: ``auth.mode: pod``: the pod's own token, no password asked
    pod: bool = False
    #: the client connects over loopback (or a UNIX socket)
    loopback: bool = False
    #: ``listen.allow_cleartext_remote``: a token may cross the network without TLS
    allow_cleartext_remote: bool = False


# --------------------------------------------------------------------------- actions


@attrs.frozen
class Send:
    """Bytes for the client."""

    data: bytes


@attrs.frozen
class StartTLS:
    """Start TLS on the connection now ('S' was just sent): what follows arrives decrypted."""


@attrs.frozen
class ForwardCancel:
    """The client sent a CancelRequest: forward it, then close the connection."""

    process_id: int
    secret_key: int


@attrs.frozen
class Authenticate:
    """Ask the authenticators who ``token`` is; answer with `authenticated` or `auth_failed`."""

    token: str = attrs.field(repr=False)


@attrs.frozen
class ReadPodToken:
    """auth.mode pod: read the pod's token and answer with `Authenticate`'s path
    (`ClientLogin.pod_token`) or `auth_failed`."""


@attrs.frozen
class Refuse:
    """Send FATAL ``sqlstate`` ``message`` and close. ``auth_failure`` (a reason for the
    operator, never for the client) makes it a failed authentication, recorded and counted."""

    sqlstate: str
    message: str
    auth_failure: str | None = None


@attrs.frozen
class Close:
    """The client said Terminate: close without a word."""


Action = Send | StartTLS | ForwardCancel | Authenticate | ReadPodToken | Refuse | Close

AUTHENTICATION_FAILED: Final = "pgwarden: authentication failed"


@attrs.define
class ClientLogin:
    """One client's login, from its first byte to the session being ready."""

    settings: LoginSettings
    state: State = State.STARTUP
    #: the StartupMessage, once it has come
    startup: m.StartupMessage | None = None
    #: TLS was started on this connection
    tls_active: bool = False
    _startup_framer: StartupFramer = attrs.Factory(StartupFramer)
    _framer: MessageFramer = attrs.Factory(lambda: MessageFramer(MAX_LOGIN_MESSAGE, valid_types=frozenset(b"pX")))

    @property
    def startup_message(self) -> m.StartupMessage:
        """The StartupMessage, for what comes after it (there is none before)."""
        if self.startup is None:
            raise LocalProtocolError("client login: no StartupMessage yet")
        return self.startup

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes) -> list[Action]:
        """Takes bytes from the client; returns what to do, in order."""
        out: list[Action] = []
        try:
            if self.state is State.STARTUP:
                self._startup_framer.feed(data)
                self._read_startup(out)
            elif self.state is State.PASSWORD:
                self._framer.feed(data)
                self._read_password(out)
            elif self.state in (State.AUTHENTICATING, State.CONNECTING):
                # The client may not speak before AuthenticationOk/ReadyForQuery: its bytes wait
                # for the relay, up to a bound.
                self._framer.feed(data)
                if self._framer.buffered > MAX_LOGIN_MESSAGE:
                    self._refuse(out, "08P01", "pgwarden: client sent data before the session was ready")
            elif self.state is State.READY:
                raise LocalProtocolError("the login is over: the relay reads the client now")
        except ProtocolError as e:
            self._refuse(out, e.sqlstate, f"pgwarden: invalid message: {e}")
        return out

    def pod_token(self, token: str, source: str) -> list[Action]:
        """The pod's token, as read from the file ``source`` (after `ReadPodToken`)."""
        self._expect(State.AUTHENTICATING)
        token = token.strip()
        if not token:
            return self.auth_failed(f"pod identity: {source} is empty")
        return [Authenticate(token)]

    def authenticated(self) -> bool:
        """The authenticators accepted the token. False when the login ended meanwhile (the
        client left, or timed out): then there is nothing to go on with."""
        if self.state is not State.AUTHENTICATING:
            return False
        self._go(State.CONNECTING)
        return True

    def auth_failed(self, reason: str) -> list[Action]:
        """The token was refused, for ``reason`` (the operator's to read, never the client's)."""
        if self.state is State.CLOSED:
            return []
        out: list[Action] = []
        self._refuse(out, "28P01", AUTHENTICATION_FAILED, auth_failure=reason)
        return out

    def ready(self) -> bytes:
        """The upstream session is open: the login is over. Returns what the client sent early
        (pipelined after its password), for the relay."""
        self._go(State.READY)
        return self._framer.take_rest()

    def close(self) -> None:
        """The connection ends, for whatever reason: nothing more is read."""
        self.state = State.CLOSED

    # ------------------------------------------------------------------ the states

    def _go(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"client login: no transition from {self.state.value} to {new.value}")
        self.state = new

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"client login: expected {state.value}, in {self.state.value}")

    def _refuse(self, out: list[Action], sqlstate: str, message: str, auth_failure: str | None = None) -> None:
        self._go(State.CLOSED)
        out.append(Refuse(sqlstate, message, auth_failure))

    def _read_startup(self, out: list[Action]) -> None:
        while self.state is State.STARTUP:
            packet = self._startup_framer.next_packet()
            if packet is NEED_DATA:
                return
            if isinstance(packet, m.SSLRequest):
                if self.tls_active:
                    raise ProtocolError("SSLRequest inside TLS")
                if self._startup_framer.take_rest():
                    # What follows must wait for the answer (CVE-2021-23214): never read it.
                    raise ProtocolError("unencrypted data after SSLRequest")
                if self.settings.tls_available:
                    out += [Send(b"S"), StartTLS()]
                    self.tls_active = True
                else:
                    out.append(Send(b"N"))
            elif isinstance(packet, m.GSSENCRequest):
                out.append(Send(b"N"))
            elif isinstance(packet, m.CancelRequest):
                self._go(State.CLOSED)
                out.append(ForwardCancel(packet.process_id, packet.secret_key))
            elif isinstance(packet, m.StartupMessage):
                self._startup_message(packet, out)

    def _startup_message(self, startup: m.StartupMessage, out: list[Action]) -> None:
        self.startup = startup
        names = [k for k, _ in startup.parameters]
        if len(set(names)) != len(names):
            # The server takes a parameter's last value; pgwarden's reading of the session (its
            # search_path above all) must be the server's, and no client sends one twice.
            twice = next(k for i, k in enumerate(names) if k in names[:i])
            return self._refuse(out, "08P01", f'pgwarden: the startup packet names the parameter "{twice}" '
                                              "more than once")
        if startup.get("replication") not in (None, "false", "0", "off", "no"):
            return self._refuse(out, "08004", "pgwarden: replication connections are not allowed")
        if startup.get("database") is not None and startup.get("user") is None:
            return self._refuse(out, "28000", "pgwarden: no user name specified")
        served = self.settings.database
        wanted = startup.get("database") or startup.get("user")
        if wanted is not None and wanted != served:
            # Silently serving another database than the one asked for would surprise.
            return self._refuse(out, "3D000", f'pgwarden: database "{wanted}" is not served here; '
                                              f'connect to "{served}"')
        if startup.minor > 0:
            unknown = tuple(k for k, _ in startup.parameters if k.startswith("_pq_."))
            out.append(Send(m.NegotiateProtocolVersion(0, unknown).encode()))
        # Whatever came after the StartupMessage is the next phase's (a password, early queries).
        self._framer.feed(self._startup_framer.take_rest())
        if self.settings.pod:
            if not self.settings.loopback:
                return self._refuse(out, "28000",
                                    "pgwarden: only connections from inside the pod (loopback) are accepted",
                                    auth_failure="pod identity: connection not from loopback")
            self._go(State.AUTHENTICATING)
            out.append(ReadPodToken())
            return None
        if not (self.tls_active or self.settings.loopback or self.settings.allow_cleartext_remote):
            return self._refuse(out, "28000",
                                "pgwarden: a token is not accepted in clear text over the network; connect with TLS")
        self._go(State.PASSWORD)
        out.append(Send(m.Authentication(m.Authentication.CLEARTEXT).encode()))
        self._read_password(out)
        return None

    def _read_password(self, out: list[Action]) -> None:
        raw = self._framer.next_frame()
        if not isinstance(raw, bytes):  # NEED_DATA
            return
        if raw[:1] == b"X":
            self._go(State.CLOSED)
            out.append(Close())
            return
        token = m.PasswordMessage.decode(raw[5:]).password()
        self._go(State.AUTHENTICATING)
        out.append(Authenticate(token))


def greeting(
    server_parameters: list[m.ParameterStatus],
    notices: list[bytes],
    key: m.BackendKeyData,
    transaction_status: str,
    application_name: str,
) -> list[bytes]:
    """What the client gets once the upstream session is open: AuthenticationOk, the server's
    parameters (its application_name the client's own: the upstream's carries the identity, for
    pg_stat_activity and the server's logs), the server's notices, pgwarden's cancel key, and
    ReadyForQuery."""
    out = [m.Authentication(m.Authentication.OK).encode()]
    out += [
        (m.ParameterStatus(p.name, application_name) if p.name == "application_name" else p).encode()
        for p in server_parameters
    ]
    out += notices
    out.append(key.encode())
    out.append(m.ReadyForQuery(transaction_status).encode())
    return out
