"""The process's file descriptor limit, raised to what it may be at start-up.

Each session holds two descriptors (the client's socket and the upstream's), so the
limit bounds the sessions one pgwarden can hold: a soft limit of 1024 (a common
default, systemd's and many container runtimes') stops it near 500 sessions with
``EMFILE`` on accept while the hard limit would allow far more. Raising the soft limit
up to the hard one needs no privilege; pgwarden does it once, before it listens, and
says so in its log, so the figure an operator reads there is the one that holds.
"""

from __future__ import annotations

import resource

import attrs

#: descriptors a session holds: the client's socket and the upstream's
PER_SESSION = 2
#: what the process keeps open besides sessions (listening ports, log, record files, epoll)
RESERVED = 64


@attrs.frozen
class DescriptorLimit:
    """The soft limit before and after start-up, and the hard limit."""

    before: int
    soft: int
    hard: int

    @property
    def raised(self) -> bool:
        return self.soft > self.before

    @property
    def sessions(self) -> int:
        """About how many sessions the soft limit leaves room for."""
        return max(0, (self.soft - RESERVED) // PER_SESSION)

    def describe(self) -> str:
        hard = "unlimited" if self.hard == resource.RLIM_INFINITY else str(self.hard)
        head = (f"file descriptors: soft limit raised from {self.before} to {self.soft} (hard limit {hard})"
                if self.raised else f"file descriptors: soft limit {self.soft} (hard limit {hard})")
        return f"{head}; room for about {self.sessions} sessions (two descriptors each)"


def raise_soft_limit() -> DescriptorLimit:
    """Raises RLIMIT_NOFILE's soft limit to the hard one when lower.

    An unlimited hard limit is left alone (the kernel refuses a soft limit above
    fs.nr_open), as is a refusal: pgwarden then runs with the limit it was given.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return DescriptorLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return DescriptorLimit(soft, soft, hard)
    return DescriptorLimit(soft, hard, hard)
