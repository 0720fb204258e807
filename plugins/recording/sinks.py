"""Where records go: standard output or a rotated file, each with its own hash chain.

A sink buffers the lines of a reactor turn and writes them with one call at
the barrier (`flush`), before the sends of that turn reach the network. A write
that fails keeps the unwritten bytes (up to `MAX_PENDING_BYTES`) for the next
flush, so the chain stays whole while, say, a full disk is being freed.

While a write has nothing else to do (no rotation due, no fsync to make before
the statement goes, no failure, nothing left from a failed write), a sink lets
its chain write its lines natively (`pgwarden.chain.Chain.write`: ``fd``,
``room``), and takes what was written into its accounts (`_absorb`) before any
work of its own; `_direct` says again after each such work whether the chain may.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

import orjson
from twisted.logger import Logger

from pgwarden.chain import GENESIS, Chain

log = Logger(namespace="pgwarden.recording")

#: Unwritten bytes kept for a retry; beyond this the oldest are dropped (the chain shows the gap).
MAX_PENDING_BYTES = 64 * 1024 * 1024


class SinkFailed(Exception):
    """A sink could not write; the message names the sink and the reason."""


class Sink:
    """One destination: a chain, a buffer, and a way to write bytes."""

    def __init__(self, name: str, on_error: str) -> None:
        self.name = name
        self.on_error = on_error
        #: the chain and the lines sealed into it, not yet written (`pgwarden.chain.seal_into`)
        self.chain = Chain()
        self._fd = -1  # where the chain may write directly (`_direct`); a subclass's own
        self._pending = b""  # bytes a failed write left behind, written first next time
        self.failure: str | None = None
        self.errors = 0  # failed writes since start, for /metrics
        self._sync_failed = False  # a periodic fsync failed: the next flush must try again

    @property
    def prev(self) -> str:
        """The hash of the last record sealed into this sink's chain."""
        return self.chain.prev

    @property
    def written_head(self) -> str:
        """The hash of the last record known to be written."""
        return self.chain.written_head

    @written_head.setter
    def written_head(self, head: str) -> None:
        self.chain.written_head = head

    def _room(self) -> int:
        """How many bytes the chain may write itself now (`pgwarden.chain.Chain.write`); 0: none."""
        return 0

    #: whether this sink's chain may ever write directly (`_direct`)
    _can_direct = False

    def _direct(self) -> None:
        """Lets the chain write directly while nothing else is to be done at a write, or not."""
        room = 0 if self.failure is not None or self._pending or self._sync_failed else self._room()
        chain = self.chain
        chain.room = room
        chain.fd = self._fd if room > 0 else -1

    def _absorb(self) -> None:
        """What the chain wrote directly, into this sink's accounts."""
        written = self.chain.written
        if written:
            self.chain.written = 0
            self._wrote(written)

    def _wrote(self, n: int) -> None:
        """``n`` bytes were written by the chain."""

    def add(self, bodies: list[bytes]) -> None:
        """Chains records serialised once for every sink (`pgwarden.chain.lines_for`)."""
        self.chain.add(bodies)

    def flush(self) -> None:
        """Writes what is buffered; raises SinkFailed if this sink fails closed and could not."""
        if self.chain.written:
            self._absorb()
        if self._sync_failed:
            try:
                self._sync()
                self._sync_failed = False
            except OSError as e:
                self._failed(f"{self.name}: fsync: {e.strerror or e}")  # raises when failing closed
                # failing open: the records are still written (not held without bound)
        chain = self.chain
        if not chain.lines and not self._pending:
            return
        data = chain.take()
        head = chain.prev
        if self._pending:
            data = self._pending + data
            self._pending = b""
        try:
            written = self._write(data)
        except OSError as e:
            written = getattr(e, "written", 0)
            if written >= len(data):  # written, but fsync failed
                self.written_head = head
            self._pending = data[written:]
            if len(self._pending) > MAX_PENDING_BYTES:
                log.error("{sink}: dropping {n} bytes of records that could not be written",
                          sink=self.name, n=len(self._pending))
                self._pending = b""
            self._failed(f"{self.name}: {e.strerror or e}")
            return
        self.written_head = head
        if self.failure is not None:
            log.info("{sink} writes again", sink=self.name)
        self.failure = None
        if self._can_direct:
            self._direct()  # (its room changed with what this wrote)

    def _failed(self, why: str) -> None:
        self.chain.fd = -1
        self.errors += 1
        first = self.failure is None
        self.failure = why
        if self.on_error == "closed":
            raise SinkFailed(why)
        if first:  # once per episode: a failing sink must not flood the log
            log.error("records not written (on_error: open, statements go on): {why}", why=why)

    def _write(self, data: bytes) -> int:
        raise NotImplementedError

    def _sync(self) -> None:
        """Makes what was written durable; nothing to do for a stream."""

    def tick(self) -> None:
        """Periodic work (fsync); default none."""

    def discard(self) -> None:
        """Lets go of a sink that never took a record (a config refused after it was opened)."""

    def close(self) -> None:
        """Final flush; failures are logged (nothing is left to refuse)."""
        try:
            self.flush()
        except SinkFailed as e:
            log.error("records lost at shutdown: {why}", why=e)
        log.info("{sink} closed; chain head {head}", sink=self.name, head=self.written_head)


def _last_lines(f, size: int) -> tuple[int, bytes]:
    """Where the file's last whole line starts (or the start), and the bytes from there on.

    Reads backwards in growing steps: a record can be far longer than any fixed window
    (a statement's SQL may be megabytes).
    """
    window = 64 * 1024
    while True:
        start = max(0, size - window)
        f.seek(start)
        tail = f.read(size - start)
        # a newline before the last line's own end: the last line (whole or cut) is inside
        if start == 0 or tail.rfind(b"\n", 0, len(tail) - 1) >= 0:
            return start, tail
        window *= 4


def _write_rest(fd: int, data: bytes, done: int) -> int:
    """os.write until all of ``data`` is written, ``done`` bytes of it already (a first write
    wrote part of it: the usual case, one call that wrote it all, is the caller's, without this
    frame); an error carries how much was written in all, as ``.written``."""
    view = memoryview(data)
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
        except OSError as e:
            e.written = done  # type: ignore[attr-defined]
            raise
    return done


class StdoutSink(Sink):
    """JSON lines on fd 1. The write blocks when the reader lags: records never outrun their reader."""

    def __init__(self, on_error: str, fd: int = 1) -> None:
        super().__init__("stdout", on_error)
        self._fd = fd
        self._direct()

    _can_direct = True

    def _room(self) -> int:
        return 1 << 62  # a stream: no rotation, no fsync

    def _write(self, data: bytes) -> int:
        done = os.write(self._fd, data)  # (an error: nothing written, as the flush takes it)
        return done if done == len(data) else _write_rest(self._fd, data, done)


def why_not_a_sink_file(path: str) -> str | None:
    """Why ``path`` cannot be a file sink, or None if it is a regular file or can be created as one.

    A device, a pipe or a directory would take pgwarden's start-up (or a reload) and only fail
    later, at the first write or fsync, refusing every statement from then on.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            return f"cannot create {path}: no directory {parent}"
        return None
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if not stat.S_ISREG(mode):
        return (f"{path} is not a regular file: a file sink appends to, rotates and fsyncs a file of its "
                "own (for standard output, use the stdout sink)")
    return None


def _writer_lock(path: str) -> int:
    """An exclusive lock on ``path``'s writing, held while the sink is open: a second pgwarden
    appending to the same file (the same config started twice, a shared volume) would interleave
    two hash chains in it, and every record after would fail `pgwarden verify`. The lock is a
    file of its own (the records' file is renamed at each rotation), hidden beside it
    (``.NAME.lock``: out of the way of a log shipper's ``NAME*``), and flock's: the kernel lets
    it go with the process, however it ends."""
    folder, name = os.path.split(path)
    lock_path = os.path.join(folder, f".{name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as e:
        raise SinkFailed(f"cannot open the lock file {lock_path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SinkFailed(f"another process is writing records to {path} (it holds {lock_path}): two "
                             "writers would interleave two hash chains in one file; give each pgwarden "
                             "a file of its own") from None
        raise SinkFailed(f"cannot lock {lock_path}: {e.strerror or e}") from None
    return fd


class FileSink(Sink):
    """Appends to ``path``; rotates to path.1 .. path.N by size; fsyncs every ``fsync_s``."""

    def __init__(self, path: str, *, max_bytes: int, keep: int, fsync_s: float, on_error: str,
                 clock=time.monotonic, in_thread=None) -> None:
        super().__init__(f"file:{path}", on_error)
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync_s = fsync_s
        self._clock = clock
        # Runs a blocking call off the reactor thread, returning a Deferred (None: run it inline).
        # A periodic fsync can take tens of milliseconds; inline, every session would wait.
        self._in_thread = in_thread
        self._syncing = False
        self._unsynced = False
        self._last_sync = clock()
        unusable = why_not_a_sink_file(path)
        if unusable is not None:
            raise SinkFailed(unusable)
        self._lock = _writer_lock(path)
        try:
            self.chain.prev = self.written_head = self._resume()
            self._open()
        except OSError as e:
            os.close(self._lock)
            raise SinkFailed(f"cannot append to {path}: {e.strerror or e}") from None
        self.configured()

    def _room(self) -> int:
        if not self._can_direct:
            return 0
        return self.max_bytes - self.size if self.size > 0 else max(self.max_bytes, 1)

    def _wrote(self, n: int) -> None:
        self.size += n
        self._unsynced = True

    def configured(self) -> None:
        """After ``max_bytes``, ``keep`` or ``fsync_s`` changed (a reload)."""
        # Only while a periodic fsync runs in a thread: otherwise a write may have to sync first.
        self._can_direct = self.fsync_s > 0 and self._in_thread is not None
        self._absorb()
        self._direct()

    def _resume(self) -> str:
        """The chain goes on from the file's last record; an incomplete last line is set aside."""
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return GENESIS
                tail_at, tail = _last_lines(f, size)
                if not tail.endswith(b"\n"):
                    # pgwarden stopped while writing it: kept aside as evidence, then cut so the
                    # chain can go on from the last whole record.
                    cut = tail.rfind(b"\n") + 1
                    aside = f"{self.path}.incomplete-{int(time.time())}"
                    with open(aside, "wb") as evidence:
                        evidence.write(tail[cut:])
                    f.truncate(tail_at + cut)
                    log.warn("{path}: an incomplete last record ({n} bytes) moved to {aside}",
                             path=self.path, n=len(tail) - cut, aside=aside)
                    tail = tail[:cut]
                lines = tail.splitlines()
                if not lines:
                    return GENESIS
                last = orjson.loads(lines[-1])
                return last["hash"] if isinstance(last.get("hash"), str) else GENESIS
        except FileNotFoundError:
            return GENESIS
        except (ValueError, KeyError, AttributeError):
            log.warn("{path}: the last line is not a chained record; a new chain starts", path=self.path)
            return GENESIS

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self._fd).st_size

    def _write(self, data: bytes) -> int:
        if self.size > 0 and self.size + len(data) > self.max_bytes:
            self._rotate()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                written = _write_rest(self._fd, data, written)
        except OSError as e:
            self.size += getattr(e, "written", 0)
            if e.errno == errno.ENOSPC and getattr(e, "written", 0):  # type: ignore[arg-type]
                self._unsynced = True
            raise
        self.size += written
        self._unsynced = True
        # fsync_s 0: durable before the statement goes. Otherwise the ticker syncs, in a thread.
        if self.fsync_s == 0 or (self._in_thread is None and self._clock() - self._last_sync >= self.fsync_s):
            try:
                self._sync()
            except OSError as e:
                e.written = written  # type: ignore[attr-defined]  # written, just not known durable: never written twice
                self._sync_failed = True
                raise
        return written

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = False
        self._last_sync = self._clock()

    def tick(self) -> None:
        self._absorb()
        if not self._unsynced or self._syncing or self._clock() - self._last_sync < self.fsync_s:
            return
        if self._in_thread is not None:
            self._sync_in_background()
            return
        try:
            self._sync()
        except OSError as e:
            self._sync_error(e)

    def _sync_error(self, e: OSError) -> None:
        """Reported (and refused, failing closed) by the next flush, which syncs again first."""
        self.chain.fd = -1
        if not self._sync_failed:
            log.error("{sink}: fsync: {err}", sink=self.name, err=getattr(e, "strerror", None) or e)
        self._sync_failed = True
        self._unsynced = True

    def _sync_in_background(self) -> None:
        started = self._clock()
        try:
            fd = os.dup(self._fd)  # its own descriptor: a rotation may close ours meanwhile
        except OSError as e:
            self._sync_error(e)
            return
        self._syncing = True
        self._unsynced = False  # what is written after this point waits for the next sync

        def sync() -> None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        def synced(_) -> None:
            self._syncing = False
            self._last_sync = started

        def failed(failure) -> None:
            self._syncing = False
            self._sync_error(failure.value)

        self._in_thread(sync).addCallbacks(synced, failed)

    def _rotate(self) -> None:
        self._sync()
        os.close(self._fd)
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for k in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{k}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{k + 1}")
            os.replace(self.path, f"{self.path}.1")
        log.info("{path} rotated; chain head {head}", path=self.path, head=self.written_head)
        self._open()

    def discard(self) -> None:
        self.chain.fd = -1
        os.close(self._fd)
        os.close(self._lock)

    def close(self) -> None:
        super().close()
        self.chain.fd = -1
        self._absorb()
        try:
            if self._unsynced:
                self._sync()
            os.close(self._fd)
        except OSError as e:
            log.error("{path}: {err}", path=self.path, err=e.strerror)
        finally:
            os.close(self._lock)
