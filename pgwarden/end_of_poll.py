"""`IEndOfPoll`: a reactor that can run a function once the events of its current poll are handled.

Why a module of its own: `pgwarden.turns` runs compiled (mypyc), and a zope interface,
whose methods take no ``self``, is not something mypyc compiles; the turns and the
reactor (`pgwarden.proxy.reactor`) both need it.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import Interface


class IEndOfPoll(Interface):
    """A reactor that can call a function once the events of the current poll are handled."""

    def call_at_end_of_poll(f: Callable[[], None]) -> None:  # noqa: N805 (a zope interface: no self)
        """``f()`` runs once, after the events of this poll (before the next poll when asked
        for outside event handling, by a timed call or a thread's callback)."""
