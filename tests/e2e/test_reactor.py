"""The end-to-end tests run on the reactor `pgwarden run` installs: PGWARDEN_REACTOR's choice.

`make test` runs the suite twice: on pgwarden's own reactor, and with
``PGWARDEN_REACTOR=default`` on Twisted's, where `pgwarden.turns.Turns` ends
its turns with ``callLater(0)`` instead of at the end of the poll.
"""

import subprocess
import sys

from pgwarden.proxy.reactor import PgwardenReactor, chosen
from pgwarden.turns import IEndOfPoll


def test_tests_run_on_the_reactor_pgwarden_reactor_names(reactor_thread):
    # If this fails, every other end-to-end test is checking a different event loop.
    if chosen() == "default":
        assert not isinstance(reactor_thread, PgwardenReactor)
        assert not IEndOfPoll.providedBy(reactor_thread)  # the turns end by callLater(0)
    else:
        assert isinstance(reactor_thread, PgwardenReactor)
        assert IEndOfPoll.providedBy(reactor_thread)


def test_an_unknown_reactor_stops_pgwarden_run_saying_which_exist(tmp_path):
    import os

    done = subprocess.run([sys.executable, "-m", "pgwarden", "run", "-c", str(tmp_path / "none.yaml")],
                          env={**os.environ, "PGWARDEN_REACTOR": "select"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "pgwarden: PGWARDEN_REACTOR='select': expected one of pgwarden, default"


def test_a_relaying_sessions_connections_are_read_and_written_directly_until_the_session_ends(make_pgwarden):
    # pgwarden's reactor: both connections of a relaying session registered (`DirectIO`), their
    # reads through it; withdrawn when the session ends (no entry, so no session, kept).
    import psycopg

    from pgwarden.proxy.loop import DirectIO

    running = make_pgwarden()

    def entries():
        table = getattr(running.reactor, "direct_reads", None)
        if table is None:  # Twisted's reactor: nothing is registered, every read is Twisted's
            return None
        return [(type(e).__name__, e.selectable) for e in table.values()]

    def session_transports():
        (conn,) = running.app.connections
        return conn.transport, conn.upstream.transport, conn.pump.client_out, conn.pump.upstream_out

    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 1 + 1").fetchone() == (2,)
        seen = running.call(entries)
        client, upstream, client_out, upstream_out = running.call(session_transports)
        if chosen() == "default":
            assert seen is None and (client_out, upstream_out) == (client, upstream)
        else:
            assert sorted(seen, key=lambda e: e[0]) == [("ClientRead", client), ("ServerRead", upstream)]
            assert all(isinstance(e, DirectIO) for e in running.call(lambda: list(running.reactor.direct_reads.values())))
            # and their sends (a statement's answer through `send_direct`)
            assert isinstance(client_out, DirectIO) and client_out.selectable is client
            assert isinstance(upstream_out, DirectIO) and upstream_out.selectable is upstream
        assert c.execute("select 'still relays'").fetchone() == ("still relays",)
    import time

    deadline = time.monotonic() + 30
    while running.call(lambda: len(running.app.connections)):  # the session's end, on the reactor
        assert time.monotonic() < deadline, "the session never ended"
    assert running.call(entries) in (None, [])
