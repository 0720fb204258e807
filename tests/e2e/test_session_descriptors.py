"""The real `pgwarden run` raises its descriptor limit, and gives back every descriptor a session held.

Each session holds two descriptors (the client's socket and the upstream's); a
process that keeps one of them after the session ends runs out after enough
sessions, however much memory it has. `make load` checks this at 500 sessions for
a minute (bench/load.py); this is the quick form: 50 sessions ended every way a
session ends, and the count of /proc/PID/fd back where it was.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys

import asyncpg
import psutil
from session_ends import end_every_way, leave_during_login, open_sessions

from pgwarden.testing import wait_until

SESSIONS = 50
#: the soft limit pgwarden starts with: fewer than the sessions need, so it must raise it
SOFT = 64


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connected(pid: int) -> list[str]:
    """pgwarden's TCP sockets with a peer (its listeners have none): a session's two, while it lasts."""
    proc = psutil.Process(pid)
    listing = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 names it connections
    return [f"{c.laddr} -> {c.raddr} {c.status}" for c in listing(kind="tcp") if c.raddr]


def held(pid: int) -> str:
    """What each descriptor is (socket:[inode], a file, ...), for the failure message."""
    found = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            found.append(f"{fd}: {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            continue
    return ", ".join(found)


def test_sessions_give_back_their_descriptors_however_they_end(pgwarden_process):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    # The live catalog off: its own connection (and thread pool) would open on its own schedule.
    running = pgwarden_process(command=("prlimit", f"--nofile={SOFT}:{hard_text}", "--",
                                        sys.executable, "-m", "pgwarden"), catalog={"live": False})
    if hard != resource.RLIM_INFINITY and hard > SOFT:
        running.wait_for_log(f"soft limit raised from {SOFT} to {hard}")
    # Once it has served a session its reactor is running: what start-up opens (the signal
    # waker's pipe, after the ready file) is open by then.
    assert asyncio.run(still_serves(running.url())) == 1
    # That session's sockets close once pgwarden has read the client's Terminate: counted before
    # then, they would inflate the baseline (and the check that 50 sessions hold 100 more).
    wait_until(15, lambda: connected(running.pid), "the first session's sockets closed", until=lambda c: not c)
    before, before_held = fds(running.pid), held(running.pid)

    async def scenario() -> None:
        sessions = await open_sessions(running.url(), SESSIONS)
        assert fds(running.pid) >= before + 2 * SESSIONS > SOFT
        for _ in range(5):  # clients that connect and leave before saying anything
            socket.create_connection((running.host, running.port)).close()
        for _ in range(10):  # and clients that leave while pgwarden logs in upstream for them
            leave_during_login(running.host, running.port, running.token())
        await end_every_way(sessions)

    asyncio.run(scenario())
    wait_until(15, lambda: fds(running.pid), f"pgwarden back to {before} descriptors ({before_held})",
               until=lambda n: n <= before, detail=lambda: held(running.pid))
    assert asyncio.run(still_serves(running.url())) == 1


async def still_serves(url: str) -> int:
    conn = await asyncpg.connect(url, ssl=False)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
