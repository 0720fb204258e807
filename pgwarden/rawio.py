"""``os.read`` and ``os.write`` for the relay's sockets, compiled by Cython without the GIL's release.

Why: ``os.read`` and ``os.write`` release the GIL and take it back around each call (a mutex and
a condition variable: ~600 instructions a call in a one-client profile, more than entering the
system call), and ``os.read`` allocates a ``bytes`` of the whole size asked (256 KiB for an
upstream connection: glibc's large-chunk path, then a shrinking ``realloc``) for the hundred
bytes a statement's messages often are. Four such calls a statement were ~4,000 of a
pass-through statement's ~35,000 instructions (docs/performance.md). The relay's descriptors
are non-blocking: a read or a write returns at once, so holding the GIL through it keeps
pgwarden's other thread (the live catalog's reader) waiting no longer than the call itself.

Compiled (Cython's pure-Python mode: the ``if cython.compiled`` branches), a read goes first into
a buffer on the stack and is copied into a ``bytes`` of its exact size. A read that fills that
buffer goes on, with a second read(2), into a ``bytes`` of the size asked; a caller that expects
large reads (the last one filled the buffer) says ``large`` and the read goes straight into a
``bytes`` of the size asked, as ``os.read``'s does, without the second call. Results and errors
are ``os.read``'s and ``os.write``'s: ``OSError`` made from ``errno`` (``BlockingIOError`` for
EAGAIN, ``BrokenPipeError`` for EPIPE), a retry on EINTR once the signal handlers have run (and
their exception, if one raises). Not compiled, these are the ``os`` calls themselves: the
pure-Python build (``PGWARDEN_PURE_PYTHON=1``, or no C compiler) runs exactly what it ran before.
"""

from __future__ import annotations

import os

try:
    import cython
except ImportError:  # Cython is needed to build only: without it, the os calls below
    from pgwarden import _no_cython as cython

if cython.compiled:
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
    from cython.cimports.cpython.exc import PyErr_CheckSignals
    from cython.cimports.cpython.list import PyList_New, PyList_SET_ITEM
    from cython.cimports.cpython.object import PyObject
    from cython.cimports.cpython.ref import Py_DECREF, Py_INCREF
    from cython.cimports.libc.errno import EINTR, EINVAL, errno
    from cython.cimports.libc.math import ceil
    from cython.cimports.libc.string import memcpy
    from cython.cimports.pgwarden._epoll import epoll_event
    from cython.cimports.pgwarden._epoll import epoll_wait as c_epoll_wait
    from cython.cimports.posix.uio import iovec
    from cython.cimports.posix.uio import writev as c_writev
    from cython.cimports.posix.unistd import read as c_read
    from cython.cimports.posix.unistd import write as c_write

#: the most buffers `writev` takes (a caller joins more first): far below the system's IOV_MAX
WRITEV_MAX = 64

#: the most events `epoll_wait` returns at once (the rest, still ready, at the next wait)
EPOLL_MAX = 256

#: the stack buffer's size: a read that returns less (most of a session's) is copied once; a read
#: of at least this much makes a caller pass ``large`` next time (`pgwarden.proxy.loop`)
STACK_READ = 8192


@cython.binding(False)
def read(fd: int, size: int, large: bool = False) -> bytes:
    """``os.read(fd, size)``; ``large``: the caller expects at least `STACK_READ` bytes."""
    if cython.compiled:
        buf = cython.declare(cython.char[8192])
        want = cython.declare(cython.Py_ssize_t, size)
        n = cython.declare(cython.Py_ssize_t, 0)
        got = cython.declare(cython.Py_ssize_t)
        if want < 0:
            raise OSError(EINVAL, os.strerror(EINVAL))
        if not large or want <= 8192:
            while True:
                got = c_read(fd, buf, want if want < 8192 else 8192)
                if got >= 0:
                    break
                if errno != EINTR:
                    raise OSError(errno, os.strerror(errno))
                PyErr_CheckSignals()
            if got < 8192 or want <= 8192:
                return PyBytes_FromStringAndSize(buf, got)
            n = got  # the stack buffer is full: more may be waiting
        whole = PyBytes_FromStringAndSize(cython.NULL, want)
        out = cython.declare(cython.p_char, PyBytes_AS_STRING(whole))
        if n:
            memcpy(out, buf, n)
        while True:
            got = c_read(fd, out + n, want - n)
            if got >= 0:
                break
            if errno == EINTR:
                PyErr_CheckSignals()
                continue
            if n == 0:  # nothing read yet: the error is this call's
                raise OSError(errno, os.strerror(errno))
            got = 0  # (EAGAIN, or an error the next read reports: what was read is returned)
            break
        n += got
        if n < want:
            # _PyBytes_Resize wants the only reference: the pointer's, while the name holds none
            ref = cython.declare(cython.pointer(PyObject), cython.cast(cython.pointer(PyObject), whole))
            Py_INCREF(whole)
            whole = None
            _PyBytes_Resize(cython.address(ref), n)
            whole = cython.cast(bytes, ref)
            Py_DECREF(whole)
        return whole
    return os.read(fd, size)


@cython.binding(False)
def write(fd: int, data: bytes) -> int:
    """``os.write(fd, data)`` (``data`` a ``bytes``)."""
    if cython.compiled:
        sent = cython.declare(cython.Py_ssize_t)
        while True:
            sent = c_write(fd, PyBytes_AS_STRING(data), len(data))
            if sent >= 0:
                return sent
            if errno != EINTR:
                raise OSError(errno, os.strerror(errno))
            PyErr_CheckSignals()
    return os.write(fd, data)


@cython.binding(False)
def writev(fd: int, chunks: list[bytes]) -> int:
    """``os.writev(fd, chunks)``: at most `WRITEV_MAX` ``bytes``, written in one call without
    joining them (a join copies them all into a new object: a large result's run of rows too)."""
    if len(chunks) > WRITEV_MAX:
        raise ValueError(f"writev: {len(chunks)} buffers, at most {WRITEV_MAX}")
    for chunk in chunks:
        if type(chunk) is not bytes:
            raise TypeError(f"writev: a bytes object is required, not {type(chunk).__name__}")
    if cython.compiled:
        vec = cython.declare(iovec[64])
        count = cython.declare(cython.Py_ssize_t, len(chunks))
        i = cython.declare(cython.Py_ssize_t)
        sent = cython.declare(cython.Py_ssize_t)
        for i in range(count):  # (at most 64: WRITEV_MAX, checked above; an array's size is a literal)
            chunk = chunks[i]
            vec[i].iov_base = PyBytes_AS_STRING(chunk)
            vec[i].iov_len = len(chunk)
        while True:
            sent = c_writev(fd, vec, count)
            if sent >= 0:
                return sent
            if errno != EINTR:
                raise OSError(errno, os.strerror(errno))
            PyErr_CheckSignals()
    return os.writev(fd, chunks)


@cython.binding(False)
def epoll_wait(poller: object, epfd: cython.int, timeout: cython.double, maxevents: cython.int) -> list:
    """``poller.poll(timeout, maxevents)`` (``poller``: a ``select.epoll``, ``epfd`` its
    descriptor, kept by the caller: the reactor's poller is never closed while its loop runs;
    ``epfd`` -1: anything else with a ``poll``, a test's stand-in, called as such).

    Why: ``epoll.poll`` converts its timeout through CPython's clock type, reads the monotonic
    clock for a deadline, allocates and frees its events array and builds each pair with
    ``Py_BuildValue`` (~1,400 instructions a call, two calls a statement at one client).
    Compiled, the events go onto the stack, the wait is the system call with the GIL released
    (as ``epoll.poll`` does: it blocks), the timeout is rounded up to milliseconds as
    ``epoll.poll`` rounds it. Differences, none of which the reactor's loop can tell: at most
    `EPOLL_MAX` events at once (epoll keeps the others ready for the next wait); a wait a signal
    interrupts returns no events once the handlers have run (the loop waits again, with the
    timeout it computes again), where ``epoll.poll`` waited on itself; a timeout beyond what
    epoll_wait(2) takes (~24 days) waits that long.
    """
    if cython.compiled and epfd >= 0:
        events = cython.declare(epoll_event[256])
        ms = cython.declare(cython.int)
        count = cython.declare(cython.int)
        i = cython.declare(cython.int)
        seconds = cython.declare(cython.double, timeout)
        if seconds != seconds:
            raise ValueError("Invalid value NaN (not a number)")
        if seconds < 0:
            ms = -1
        elif seconds * 1000.0 >= 2147483647.0:
            ms = 2147483647
        else:
            ms = cython.cast(cython.int, ceil(seconds * 1000.0))
        if maxevents < 1:
            raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
        if maxevents > 256:
            maxevents = 256
        with cython.nogil:
            count = c_epoll_wait(epfd, events, maxevents, ms)
        if count < 0:
            if errno != EINTR:
                raise OSError(errno, os.strerror(errno))
            PyErr_CheckSignals()
            return []
        found = PyList_New(count)
        for i in range(count):
            pair = (events[i].data.fd, events[i].events)
            Py_INCREF(pair)  # (PyList_SET_ITEM steals the reference the name holds too)
            PyList_SET_ITEM(found, i, pair)
        return found
    return poller.poll(timeout, maxevents)  # type: ignore[attr-defined]
