"""A tiny blocking protocol client for the tests that must send exactly chosen bytes."""

from __future__ import annotations

import socket

from pgwarden.wire import messages as m
from pgwarden.wire.framing import NEED_DATA, MessageFramer


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.framer = MessageFramer(64 * 1024 * 1024)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_message(self):
        """The next backend message, decoded; None when the server closed."""
        while True:
            raw = self.framer.next_frame()
            if raw is not NEED_DATA:
                return m.decode_backend(raw)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.framer.feed(chunk)

    def until_ready(self) -> list:
        """Messages up to and including ReadyForQuery (or until the server closes)."""
        out = []
        while True:
            msg = self.recv_message()
            if msg is None:
                return out
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    def login(self, token: str, database: str = "appdb", **params: str) -> list:
        startup = m.StartupMessage(
            m.PROTOCOL_3_0, (("user", "agent"), ("database", database), *params.items())
        )
        self.send(startup.encode())
        auth = self.recv_message()
        assert auth == m.Authentication(m.Authentication.CLEARTEXT), auth
        self.send(m.PasswordMessage.cleartext(token).encode())
        return self.until_ready()

    def closed(self) -> bool:
        """True when the peer has closed the connection (after draining what it sent)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.framer.feed(chunk)
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()
