"""An ended session is freed at once, by reference counting, however it ended.

`pgwarden run` collects cyclic garbage rarely (`pgwarden.cli.tune_gc`), so a session
whose objects form a reference cycle stays in memory long after it ended: sessions
that come and go then make the process grow (docs/performance.md, "memory and scale").
Here the cyclic collector is off while sessions open and end every way a session ends,
and the session objects alive must come back to what they were before: whatever is
left is held by a cycle (or by something that should not hold it at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections import Counter
from collections.abc import Iterator

import asyncpg
import pytest
from session_ends import end_every_way, leave_during_login, open_sessions
from twisted.internet import tcp

from pgwarden.proxy.client import ClientConnection
from pgwarden.proxy.upstream import UpstreamProtocol
from pgwarden.relay.engine import Relay
from pgwarden.results import SessionMasks
from pgwarden.session import Session
from pgwarden.testing import wait_until
from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

SESSIONS = 30
#: a session's objects, and Twisted's for its upstream connection (a connector and its transport)
KINDS = (ClientConnection, UpstreamProtocol, Relay, SessionMasks, Session, tcp.Client, tcp.Connector)


def alive() -> Counter[str]:
    """The session objects alive now, by type (what the cyclic collector has not freed)."""
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, KINDS))


@contextlib.contextmanager
def no_cyclic_collector() -> Iterator[None]:
    gc.collect()  # what earlier tests left
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def ended_by_the_server(pw, pg_server, n: int) -> None:
    """Sessions whose upstream the server ends (pg_terminate_backend): pgwarden's upstream goes
    first, then pgwarden closes the client's connection."""
    sessions = await open_sessions(pw.url(), n)
    pg_server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name LIKE 'pgwarden:%'", database="appdb")
    await asyncio.to_thread(wait_until, 15, lambda: pw.call(lambda: len(pw.app.connections)),
                            "pgwarden to end the sessions the server ended", until=lambda n: n == 0)
    for conn in sessions:
        conn.terminate()


def test_ended_sessions_are_freed_without_the_cyclic_collector(make_pgwarden, pg_server):
    pw = make_pgwarden(only=BUILTIN_PLUGINS, catalog={"live": False})
    url = pw.url()

    async def scenario() -> None:
        await ended_by_the_server(pw, pg_server, 5)
        for _ in range(5):  # clients that connect and leave before saying anything
            socket.create_connection((pw.host, pw.port)).close()
        for _ in range(5):  # and clients that leave while pgwarden logs in upstream for them
            leave_during_login(pw.host, pw.port, pw.token())
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):  # refused at login
            await asyncpg.connect(pw.url(token="not a token"), ssl=False)
        await end_every_way(await open_sessions(url, SESSIONS))

    with no_cyclic_collector():
        before = alive()
        asyncio.run(scenario())
        # no more than before (fewer if objects of an earlier test's pgwarden went meanwhile)
        wait_until(15, alive, f"the session objects of ended sessions freed (before: {dict(before)})",
                   until=lambda now: not now - before and not pw.call(lambda: len(pw.app.connections)))
