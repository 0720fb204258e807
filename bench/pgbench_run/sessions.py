"""Sessions held open through one pgwarden, and what they cost it: memory and descriptors.

A sidecar's memory is paid per pod, so the figures that matter are its resident set
idle and with many sessions open, and whether the descriptors of closed sessions
come back. The sessions are asyncpg connections of this process, opened a few at a
time (each logs in through pgwarden: a token checked, an upstream login), each
having run one statement so that it is relayed, not only accepted.

Used by `bench/load.py` (`make load`) and by whoever wants the memory line of a run
(`measure_idle_sessions`).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import asyncpg

from pgbench_run.pgwardens import read_status_kib
from pgbench_run.settings import DATABASE
from pgbench_run.workloads import Target

#: connections opened at once: enough to be quick, few enough not to queue logins for long
CONCURRENCY = 20


def count_fds(pid: int) -> int | None:
    """The descriptors the process holds now (/proc/PID/fd), or None if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def rss_kib(pid: int) -> int | None:
    return read_status_kib(pid, "VmRSS")


async def open_session(target: Target, timeout_s: float = 60.0) -> asyncpg.Connection:
    """One session through ``target`` that has run ``SELECT 1``."""
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user, password=target.password,
                                 database=DATABASE, ssl=False, timeout=timeout_s, statement_cache_size=0)
    try:
        await conn.fetchval("SELECT 1", timeout=timeout_s)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def open_sessions(target: Target, n: int, concurrency: int = CONCURRENCY
                        ) -> tuple[list[asyncpg.Connection], list[str]]:
    """``n`` sessions, ``concurrency`` logins at a time; those opened and the errors of the others."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> asyncpg.Connection:
        async with gate:
            return await open_session(target)

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, asyncpg.Connection)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return opened, errors


async def close_sessions(sessions: list[asyncpg.Connection], timeout_s: float = 30.0) -> None:
    """Terminate messages sent, sockets closed: what a client that ends cleanly does."""
    results = await asyncio.gather(*(s.close(timeout=timeout_s) for s in sessions), return_exceptions=True)
    for s, r in zip(sessions, results, strict=True):
        if isinstance(r, BaseException):
            s.terminate()


def wait_for_fds(pid: int, at_most: int, timeout_s: float = 15.0) -> int | None:
    """The process's descriptor count once it is ``at_most`` or less, or the last count at the deadline.

    Closing is asynchronous (pgwarden sees the client's close, then closes upstream),
    so the count is polled rather than read once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        now = count_fds(pid)
        if now is None or now <= at_most or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


@dataclass
class SessionsMemory:
    """pgwarden's resident set and descriptors idle, with ``sessions`` open, and after they closed."""

    sessions: int
    idle_rss_kib: int | None
    idle_fds: int | None
    rss_kib: int | None = None
    fds: int | None = None
    after_rss_kib: int | None = None
    after_fds: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def per_session_kib(self) -> float | None:
        if self.rss_kib is None or self.idle_rss_kib is None or not self.sessions:
            return None
        return (self.rss_kib - self.idle_rss_kib) / self.sessions

    def lines(self) -> list[str]:
        per = self.per_session_kib
        return [
            f"idle: RSS {mib(self.idle_rss_kib)}, {self.idle_fds} descriptors",
            f"{self.sessions} idle sessions: RSS {mib(self.rss_kib)}"
            + (f" ({per:.0f} KiB per session)" if per is not None else "") + f", {self.fds} descriptors",
            f"after they closed: RSS {mib(self.after_rss_kib)}, {self.after_fds} descriptors",
        ] + [f"error: {e}" for e in self.errors[:5]]


def mib(kib: int | float | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def measure_idle_sessions(target: Target, pid: int, n: int = 500, settle_s: float = 1.0) -> SessionsMemory:
    """pgwarden's RSS and descriptors idle, with ``n`` idle sessions open, and after they closed.

    ``pid`` is the pgwarden process behind ``target``; it should have served nothing
    yet for the idle figure to be the idle one.
    """
    found = SessionsMemory(n, rss_kib(pid), count_fds(pid))

    async def run() -> None:
        sessions, found.errors = await open_sessions(target, n)
        found.sessions = len(sessions)
        await asyncio.sleep(settle_s)
        found.rss_kib, found.fds = rss_kib(pid), count_fds(pid)
        await close_sessions(sessions)

    asyncio.run(run())
    found.after_fds = wait_for_fds(pid, found.idle_fds or 0)
    found.after_rss_kib = rss_kib(pid)
    return found
