"""A TCP tap: a forwarder between clients and a server that keeps every byte the server sent.

A leak test must judge what reached the client's socket, not what a driver chose to
decode: a value in a field the driver skips (an error's DETAIL, a notice, a row of a
result it discards, a binary cell it has no codec for) has reached the agent all the
same. The tap sits between the client and pgwarden; each connection through it is a
`TapSession` whose ``received`` holds the server-to-client stream, recorded before it
is forwarded, so whatever the client has read is already recorded when its call returns.

Plain blocking sockets, one thread per direction: the tap runs in the test's process
beside pgwarden's reactor thread and must not share (or wait on) that reactor.
Standard library only, like the rest of `pgwarden.testing` a plugin author imports.
"""

from __future__ import annotations

import socket
import threading
from typing import Self


class TapSession:
    """One client connection through the tap, and what each side sent on it."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self._client, self._server = client, server
        self._lock = threading.Lock()
        self._received = bytearray()  # server -> client
        self._sent = bytearray()  # client -> server
        self._open = 2
        self.closed = threading.Event()  # both directions have ended

    @property
    def received(self) -> bytes:
        """Every byte the server sent to the client so far."""
        with self._lock:
            return bytes(self._received)

    @property
    def sent(self) -> bytes:
        """Every byte the client sent to the server so far."""
        with self._lock:
            return bytes(self._sent)

    def wait_closed(self, timeout_s: float = 10.0) -> bytes:
        """Waits until the server has closed its side too; then ``received`` is all it will ever send."""
        if not self.closed.wait(timeout_s):
            raise TimeoutError(f"the tapped connection did not close within {timeout_s}s")
        return self.received

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        try:
            while chunk := source.recv(65536):
                with self._lock:
                    record += chunk  # recorded before the peer can see it
                sink.sendall(chunk)
        except OSError:
            pass  # a reset or the other pump's close: the direction is over either way
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._open -= 1
            done = self._open == 0
        if done:
            self._client.close()
            self._server.close()
            self.closed.set()

    def start(self) -> None:
        for source, sink, record in ((self._server, self._client, self._received),
                                     (self._client, self._server, self._sent)):
            threading.Thread(target=self._pump, args=(source, sink, record), daemon=True, name="tap-pump").start()


class Tap:
    """Listens on 127.0.0.1 (``port``) and forwards each connection to ``host``:``port``.

    ``sessions`` lists the connections in the order they were accepted; ``latest()`` is
    the one a client just opened (tests that open one connection at a time)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self.sessions: list[TapSession] = []
        self._accepted = threading.Condition()
        threading.Thread(target=self._accept, daemon=True, name="tap-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            session = TapSession(client, server)
            with self._accepted:  # listed before a byte flows: a client that has logged in finds it
                self.sessions.append(session)
                self._accepted.notify_all()
            session.start()

    def latest(self, timeout_s: float = 10.0) -> TapSession:
        """The most recently accepted connection (waits for the first one)."""
        with self._accepted:
            if not self._accepted.wait_for(lambda: self.sessions, timeout_s):
                raise TimeoutError("no connection reached the tap")
            return self.sessions[-1]

    def close(self) -> None:
        """Stops listening; connections still open are cut."""
        self._listener.close()
        for session in self.sessions:
            for s in (session._client, session._server):
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
