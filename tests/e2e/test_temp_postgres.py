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
