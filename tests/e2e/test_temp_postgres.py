"""The test fixture's server when test sessions start side by side (make test's passes, each with
pytest-xdist's workers): a port found free and taken before the server binds it."""
from __future__ import annotations

import socket

import psycopg

from pgwarden.testing import postgres
from pgwarden.testing.postgres import SUPERUSER, TempPostgres


def test_a_port_taken_before_the_server_binds_it_is_traded_for_another(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        answers = iter([taken_port])
        real = postgres.free_port
        monkeypatch.setattr(postgres, "free_port", lambda: next(answers, None) or real())
        with TempPostgres() as server:
            assert server.port != taken_port
            with psycopg.connect(server.dsn(user=SUPERUSER, password=postgres.SUPERUSER_PASSWORD)) as conn:
                assert conn.execute("SHOW port").fetchone() == (str(server.port),)


def test_free_ports_come_from_outside_the_range_client_connections_draw_from():
    """Every client connection of every session beside this one takes a port from the ephemeral
    range: a port chosen there (bind to 0) could be taken before pgwarden or the server binds it."""
    ephemeral = postgres._ephemeral_ports()
    ports = {postgres.free_port() for _ in range(50)}
    assert not ports & set(ephemeral)
    assert len(ports) > 40  # chosen at random, not the same sequence in every session
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_not_offered(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        asked = []

        class Chooser:
            def randint(self, low, high):
                # the busy port twice, then ports free a moment ago (a neighbour of the busy one
                # may be taken on a loaded machine: CI, session 28)
                asked.append(low)
                if len(asked) <= 2:
                    return busy
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    return s.getsockname()[1]

        monkeypatch.setattr(postgres.random, "SystemRandom", Chooser)
        assert postgres.free_port() != busy
        assert len(asked) >= 3  # (the busy port was offered, and passed over)
