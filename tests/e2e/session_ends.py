"""Sessions through pgwarden, ended every way a session ends: for the tests that check what an
ended session leaves behind (descriptors: test_session_descriptors; objects: test_session_memory)."""

from __future__ import annotations

import asyncio

import asyncpg
from rawclient import RawClient

from pgwarden.wire import messages as m


async def open_sessions(url: str, n: int) -> list[asyncpg.Connection]:
    async def one() -> asyncpg.Connection:
        conn = await asyncpg.connect(url, ssl=False)
        assert await conn.fetchval("SELECT 1") == 1
        return conn

    return list(await asyncio.gather(*(one() for _ in range(n))))


def leave_during_login(host: str, port: int, token: str) -> None:
    """Sends the token and closes at once: pgwarden is then logging in upstream, or about to."""
    client = RawClient(host, port)
    client.send(m.StartupMessage(m.PROTOCOL_3_0, (("user", "agent"), ("database", "appdb"))).encode())
    assert client.recv_message() == m.Authentication(m.Authentication.CLEARTEXT)
    client.send(m.PasswordMessage.cleartext(token).encode())
    client.close()


async def end_every_way(sessions: list[asyncpg.Connection]) -> None:
    """A third end cleanly (Terminate), a third vanish (no Terminate), a third vanish mid-statement."""
    third = len(sessions) // 3
    clean, vanish, mid = sessions[:third], sessions[third:2 * third], sessions[2 * third:]
    busy = [asyncio.ensure_future(c.execute("SELECT pg_sleep(30)")) for c in mid]
    await asyncio.sleep(0.3)  # the statements have left for the server
    for conn in vanish + mid:
        conn.terminate()
    await asyncio.gather(*(c.close() for c in clean))
    await asyncio.gather(*busy, return_exceptions=True)
