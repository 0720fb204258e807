"""`Traffic`: the bytes pgwarden has read from clients and from upstream servers, as a class mypyc
compiles: the pump (`pgwarden.proxy.pump`) adds to it on every read, natively, where an
attribute of the interpreted `pgwarden.metrics.Stats` was a read and a write through the generic
API each time; the metrics read it (``Stats.bytes_from_clients``, ``bytes_from_upstream``).
"""

from __future__ import annotations


class Traffic:
    """Bytes read, all sessions together, since pgwarden started."""

    def __init__(self) -> None:
        self.from_clients = 0
        self.from_upstream = 0
