"""Logging in to the upstream server, sans-IO: SCRAM-SHA-256, MD5, password or trust.

`UpstreamLogin.start()` gives the StartupMessage; each `receive(data)` returns
the bytes to send next. When `done` is true the session is ready: the server's
ParameterStatus values, its BackendKeyData and any bytes that followed
ReadyForQuery are there for the relay. The password is held only here and never
appears in an error (`LoginFailed` carries the server's message, which never
contains it).
"""

from __future__ import annotations

import hashlib

import attrs
from scramp import ScramClient, ScramException

from pgwarden.wire import messages as m
from pgwarden.wire.errors import ProtocolError
from pgwarden.wire.framing import MessageFramer


class LoginFailed(Exception):
    """The upstream refused the login, or spoke nonsense during it."""

    def __init__(self, message: str, sqlstate: str = "08006") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@attrs.define
class UpstreamLogin:
    user: str
    database: str
    password: str | None = attrs.field(repr=False)
    parameters: tuple[tuple[str, str], ...] = ()

    done: bool = False
    key: m.BackendKeyData | None = None
    server_parameters: list[m.ParameterStatus] = attrs.Factory(list)
    notices: list[bytes] = attrs.Factory(list)
    transaction_status: str = "I"
    _framer: MessageFramer = attrs.Factory(lambda: MessageFramer(1024 * 1024))
    _scram: ScramClient | None = attrs.field(default=None, repr=False)

    def start(self) -> bytes:
        params = (("user", self.user), ("database", self.database)) + tuple(self.parameters)
        return m.StartupMessage(m.PROTOCOL_3_0, params).encode()

    def leftover(self) -> bytes:
        return self._framer.take_rest()

    def receive(self, data: bytes) -> bytes:
        """Consumes server bytes; returns what to send back (possibly nothing)."""
        self._framer.feed(data)
        out = []
        while not self.done:
            try:
                raw = self._framer.next_frame()
            except ProtocolError as e:
                raise LoginFailed(f"the database sent an invalid message: {e}") from None
            if not isinstance(raw, bytes):
                break
            try:
                reply = self._handle(raw[:1], raw[5:], raw)
            except ProtocolError as e:
                raise LoginFailed(f"the database sent an invalid message: {e}") from None
            if reply:
                out.append(reply)
        return b"".join(out)

    def _need_password(self) -> str:
        if self.password is None:
            raise LoginFailed("the database asks for a password and none is configured (upstream.password_file)")
        return self.password

    def _handle(self, t: bytes, body: bytes, raw: bytes) -> bytes | None:
        if t == b"R":
            return self._auth(m.Authentication.decode(body))
        if t == b"S":
            self.server_parameters.append(m.ParameterStatus.decode(body))
        elif t == b"K":
            self.key = m.BackendKeyData.decode(body)
        elif t == b"Z":
            self.transaction_status = m.ReadyForQuery.decode(body).status
            self.done = True
        elif t == b"E":
            err = m.ErrorResponse.decode(body)
            raise LoginFailed(err.message or "the database refused the connection", err.sqlstate or "08006")
        elif t == b"N":
            self.notices.append(raw)
        elif t == b"v":
            # The server speaks an older minor version or ignores _pq_ options: fine.
            pass
        else:
            raise LoginFailed(f"unexpected message {t!r} while logging in to the database")
        return None

    def _auth(self, a: m.Authentication) -> bytes | None:
        if a.code == m.Authentication.OK:
            return None
        if a.code == m.Authentication.CLEARTEXT:
            return m.PasswordMessage.cleartext(self._need_password()).encode()
        if a.code == m.Authentication.MD5:
            pw = self._need_password()
            inner = hashlib.md5((pw + self.user).encode()).hexdigest()
            digest = "md5" + hashlib.md5(inner.encode() + a.data[:4]).hexdigest()
            return m.PasswordMessage.cleartext(digest).encode()
        if a.code == m.Authentication.SASL:
            mechanisms = a.sasl_mechanisms()
            if "SCRAM-SHA-256" not in mechanisms:
                raise LoginFailed(f"the database offers no supported SASL mechanism ({', '.join(mechanisms)})")
            self._scram = ScramClient(["SCRAM-SHA-256"], self.user, self._need_password())
            first = self._scram.get_client_first().encode()
            return m.PasswordMessage.sasl_initial("SCRAM-SHA-256", first).encode()
        if a.code == m.Authentication.SASL_CONTINUE and self._scram is not None:
            try:
                self._scram.set_server_first(a.data.decode())
                return m.PasswordMessage(self._scram.get_client_final().encode()).encode()
            except ScramException as e:
                raise LoginFailed(f"SCRAM exchange with the database failed: {e}") from None
        if a.code == m.Authentication.SASL_FINAL and self._scram is not None:
            try:
                self._scram.set_server_final(a.data.decode())
            except ScramException as e:
                raise LoginFailed(f"the database's SCRAM signature is invalid: {e}") from None
            return None
        raise LoginFailed(f"the database asks for an unsupported authentication method ({a.code})")
