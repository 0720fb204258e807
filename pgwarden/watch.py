"""Notices when the config file changes, including the symlink swap of a Kubernetes ConfigMap.

A ConfigMap volume updates by pointing the ``..data`` symlink at a new
directory: the path stays the same while the file behind it changes. So the
watcher compares the resolved path, inode, size and modification time, polled
(inotify does not follow a symlink swap above the watched file).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.task import LoopingCall


def signature(path: str) -> tuple | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None  # missing for a moment during a swap: wait for it to come back
    return (real, st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigWatcher:
    def __init__(self, path: str, clock, on_change: Callable[[], object], interval_s: float = 2.0) -> None:
        self._path = path
        self._on_change = on_change
        self._last = signature(path)
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._interval = interval_s

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        current = signature(self._path)
        if current is not None and current != self._last:
            self._last = current
            self._on_change()


def watch_config(app, reactor, path: str, interval_s: float) -> ConfigWatcher | None:
    """Reloads ``app`` on SIGHUP and when its config file changes (a ConfigMap update included),
    as `pgwarden run` and `pgwarden demo` do. Call it from the main thread (signals)."""
    import signal

    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(app.reload))
    if interval_s <= 0:
        return None
    watcher = ConfigWatcher(path, reactor, app.reload, interval_s)
    watcher.start()
    return watcher
