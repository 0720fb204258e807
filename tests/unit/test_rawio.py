"""`pgwarden.rawio`: ``os.read`` and ``os.write`` for the relay's sockets, the same results and errors.

The suite runs twice (`make test`): compiled, where rawio is Cython's build of its own calls to
read(2) and write(2), and pure Python, where it is the ``os`` calls. Each test compares it with
``os`` on the same kind of descriptor, so the compiled build is held to what ``os`` does.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden import compiled, rawio
from pgwarden.testing.matrix import examples


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected non-blocking stream sockets, as the relay's are."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _drain(fd: int) -> bytes:
    """Everything readable now from ``fd``."""
    chunks = []
    while True:
        try:
            chunk = rawio.read(fd, 262144)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_the_build_runs_what_the_pass_says() -> None:
    """Compiled, the module is the extension; pure Python, it is the ``.py`` and its os calls."""
    assert compiled.is_compiled(rawio) == (compiled.build() == compiled.COMPILED)


@pytest.mark.parametrize("size", [0, 1, 100, rawio.STACK_READ - 1, rawio.STACK_READ, rawio.STACK_READ + 1,
                                  50_000, 200_000])
@pytest.mark.parametrize("large", [False, True])
def test_one_read_returns_what_is_there_up_to_the_size_asked(pair, size: int, large: bool) -> None:
    a, b = pair
    data = os.urandom(size)
    sent = 0
    while sent < size:  # the kernel's buffer may take less than all of it
        sent += rawio.write(a.fileno(), data[sent:])
        if sent < size:
            break
    if sent == 0:
        return
    got = rawio.read(b.fileno(), 262144, large)
    assert got == data[:len(got)] and 0 < len(got) <= sent
    assert type(got) is bytes
    # The rest is there for the next reads, in order.
    assert got + _drain(b.fileno()) == data[:sent]


@pytest.mark.parametrize("want", [1, 5, rawio.STACK_READ - 1, rawio.STACK_READ, rawio.STACK_READ + 1, 30_000])
@pytest.mark.parametrize("large", [False, True])
def test_a_read_never_returns_more_than_asked(pair, want: int, large: bool) -> None:
    a, b = pair
    assert rawio.write(a.fileno(), b"x" * 40_000) == 40_000
    got = rawio.read(b.fileno(), want, large)
    assert got == b"x" * len(got) and 0 < len(got) <= want
    if want <= 40_000:
        assert len(got) == want  # a socketpair hands over what it holds


@given(st.lists(st.tuples(st.integers(0, 70_000), st.integers(1, 300_000), st.booleans()), max_size=12))
@settings(max_examples=examples(60), deadline=None)
def test_random_writes_and_reads_carry_every_byte_in_order(steps) -> None:
    """Whatever the sizes written, the sizes asked and the ``large`` hints, the reader gets the
    writer's bytes, whole and in order, each read at most what it asked for."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        written, read = bytearray(), bytearray()
        for n, want, large in steps:
            chunk = os.urandom(n)
            try:
                sent = rawio.write(a.fileno(), chunk)
            except BlockingIOError:
                sent = 0
            written += chunk[:sent]
            try:
                got = rawio.read(b.fileno(), want, large)
            except BlockingIOError:
                got = b""
            assert len(got) <= want
            read += got
        read += _drain(b.fileno())
        assert read == written
    finally:
        a.close()
        b.close()


def _error(call) -> tuple[type, int | None]:
    with pytest.raises(OSError) as info:
        call()
    return type(info.value), info.value.errno


def test_errors_are_the_os_calls_errors(pair) -> None:
    a, b = pair
    # Nothing to read: EAGAIN, as BlockingIOError (what the loop tests for)
    assert _error(lambda: rawio.read(b.fileno(), 100)) == _error(lambda: os.read(b.fileno(), 100)) \
        == (BlockingIOError, errno.EAGAIN)
    assert _error(lambda: rawio.read(b.fileno(), 100_000, True)) == (BlockingIOError, errno.EAGAIN)
    # A negative size
    assert _error(lambda: rawio.read(b.fileno(), -1)) == _error(lambda: os.read(b.fileno(), -1))
    # A descriptor that is not open
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    assert _error(lambda: rawio.read(fd, 10)) == _error(lambda: os.read(fd, 10)) == (OSError, errno.EBADF)
    assert _error(lambda: rawio.write(fd, b"x")) == _error(lambda: os.write(fd, b"x")) == (OSError, errno.EBADF)
    # A full buffer: EAGAIN on the write
    while True:
        try:
            rawio.write(a.fileno(), b"y" * 65536)
        except BlockingIOError:
            break
    assert _error(lambda: rawio.write(a.fileno(), b"y")) == _error(lambda: os.write(a.fileno(), b"y"))
    # The peer gone: EPIPE on a write (Python ignores SIGPIPE), end of file on a read
    b.close()
    assert _error(lambda: rawio.write(a.fileno(), b"z")) == (BrokenPipeError, errno.EPIPE)
    c, d = socket.socketpair()
    c.close()
    assert rawio.read(d.fileno(), 100) == os.read(d.fileno(), 100) == b""
    assert rawio.read(d.fileno(), 100_000, True) == b""
    d.close()


def test_a_write_returns_what_the_kernel_took(pair) -> None:
    a, b = pair
    data = os.urandom(4_000_000)
    sent = rawio.write(a.fileno(), data)
    assert 0 < sent < len(data)
    assert _drain(b.fileno()) == data[:sent]
    assert rawio.write(a.fileno(), b"") == 0


def _during_a_signal(call, check) -> None:
    """``call(r)`` blocked on a pipe's read end ``r`` while SIGALRM comes (the kernel's timer sends
    it: compiled, the calls hold the GIL, no Python thread could), twice: its handler writing to
    the pipe (``check(result, r)`` then judges what the call returned; the outcome is the same
    whether the signal comes before the call or during it), then a handler that raises, whose
    exception must come out of the call."""
    r, w = os.pipe()
    seen = []

    def handler(*_):
        seen.append(1)
        os.write(w, b"after the signal")

    def fail(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        check(call(r), r)
        assert seen == [1]
        signal.signal(signal.SIGALRM, fail)
        with pytest.raises(KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            call(r)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)


def test_a_signal_during_a_blocking_read_runs_its_handler_and_the_read_goes_on() -> None:
    """EINTR: the handler runs and the call is made again, as ``os.read`` does (PEP 475); an
    exception from the handler comes out of the read. A blocking descriptor (the relay's never
    block), so that the signal can come during the call."""

    def check(got: bytes, _r: int) -> None:
        assert got == b"after the signal"

    _during_a_signal(lambda r: rawio.read(r, 100), check)


def test_without_cython_installed_the_module_is_the_os_calls() -> None:
    """Cython is needed to build only: an install without it (no C compiler) runs the ``.py``,
    whose ``cython`` is then `pgwarden._no_cython` (the framer's scan's too)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['cython'] = None\n"
            "import os\nfrom pgwarden import rawio\n"
            "r, w = os.pipe(); assert rawio.write(w, b'abc') == 3 and rawio.read(r, 10, True) == b'abc'\n"
            "from pgwarden.wire import scanning\n"
            "out = []; plan = scanning.plan(b'\\1' * 256, 10, -1)\n"
            "assert scanning.complete_messages(b'Q\\0\\0\\0\\4D', 0, out, plan) == 5 and out == [b'Q\\0\\0\\0\\4']\n"
            "print(rawio.__file__, rawio.cython.__name__)")
    env = {**os.environ, compiled.PURE_ENV: "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path, shim = done.stdout.split()
    assert path.endswith("rawio.py") and shim == "pgwarden._no_cython"


@pytest.mark.parametrize("sizes", [[], [0], [1, 2, 3], [100, 0, 8192, 1], [70_000, 70_000, 70_000, 70_000]])
def test_writev_writes_the_chunks_in_order_without_joining_them(pair, sizes) -> None:
    a, b = pair
    chunks = [os.urandom(n) for n in sizes]
    sent = rawio.writev(a.fileno(), chunks)
    whole = b"".join(chunks)
    assert 0 <= sent <= len(whole) and (sent == len(whole) or len(whole) > 100_000)
    assert _drain(b.fileno()) == whole[:sent]


def test_writev_refuses_what_it_cannot_take_as_os_writev_would(pair) -> None:
    a, b = pair
    with pytest.raises(ValueError):
        rawio.writev(a.fileno(), [b"x"] * (rawio.WRITEV_MAX + 1))
    with pytest.raises(TypeError):
        rawio.writev(a.fileno(), [b"x", bytearray(b"y")])
    assert rawio.writev(a.fileno(), [b"x"] * rawio.WRITEV_MAX) == rawio.WRITEV_MAX
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    assert _error(lambda: rawio.writev(fd, [b"x", b"y"])) == _error(lambda: os.writev(fd, [b"x", b"y"]))
    b.close()
    assert _error(lambda: rawio.writev(a.fileno(), [b"x", b"y"])) == (BrokenPipeError, errno.EPIPE)


@pytest.fixture
def poller() -> Iterator[tuple[object, list[tuple[int, int]]]]:
    """An epoll with three pipes registered; the write ends, to make their read ends ready."""
    import select

    ep = select.epoll()
    pipes = [os.pipe() for _ in range(3)]
    for r, _ in pipes:
        ep.register(r, select.EPOLLIN)
    try:
        yield ep, pipes
    finally:
        ep.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)


@pytest.mark.parametrize("ready", [[], [0], [2], [0, 1, 2]])
@pytest.mark.parametrize("timeout", [0.0, 0.001, 5.0, -1.0])
def test_epoll_wait_returns_what_epoll_poll_returns(poller, ready: list[int], timeout: float) -> None:
    import select

    ep, pipes = poller
    if not ready and timeout in (5.0, -1.0):
        return  # (nothing would end the wait)
    for i in ready:
        os.write(pipes[i][1], b"x")
    got = rawio.epoll_wait(ep, ep.fileno(), timeout, 3)
    assert sorted(got) == sorted(ep.poll(0, 3)) == sorted((pipes[i][0], select.EPOLLIN) for i in ready)
    assert all(type(pair) is tuple and len(pair) == 2 for pair in got)


def test_epoll_wait_returns_at_most_maxevents_and_the_rest_at_the_next_wait(poller) -> None:
    ep, pipes = poller
    for _, w in pipes:
        os.write(w, b"x")
    first = rawio.epoll_wait(ep, ep.fileno(), 0.0, 2)
    assert len(first) == 2
    # level-triggered: the three are still ready; epoll hands out the one not yet given first
    everything = rawio.epoll_wait(ep, ep.fileno(), 0.0, 10)
    assert {fd for fd, _ in everything} == {r for r, _ in pipes}
    with pytest.raises(ValueError, match="maxevents"):
        rawio.epoll_wait(ep, ep.fileno(), 0.0, 0)


def test_epoll_wait_waits_at_least_its_timeout_rounded_up_to_a_millisecond(poller) -> None:
    # A lower bound only (the kernel never ends a wait early): 0.2 ms waits a whole millisecond,
    # as epoll.poll rounds it (rounding down would make a busy loop of a short timer's wait).
    import time

    ep, _ = poller
    start = time.monotonic()
    assert rawio.epoll_wait(ep, ep.fileno(), 0.0002, 3) == []
    assert time.monotonic() - start >= 0.001


def test_epoll_wait_refuses_what_epoll_poll_refuses(poller) -> None:
    ep, _ = poller
    with pytest.raises(ValueError):
        rawio.epoll_wait(ep, ep.fileno(), float("nan"), 3)
    if not compiled.is_compiled(rawio):
        return  # (the .py waits on the poller itself: the descriptor is the compiled build's)
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(OSError) as raised:  # not an epoll descriptor: epoll_wait(2)'s error
            rawio.epoll_wait(ep, r, 0.0, 3)
        assert raised.value.errno == errno.EINVAL
    finally:
        os.close(r)


def test_epoll_wait_of_a_stand_in_calls_its_poll() -> None:
    # epfd -1: what the reactor's loop passes for a poller that is not a select.epoll (a test's)
    class StandIn:
        def __init__(self) -> None:
            self.asked: list[tuple[float, int]] = []

        def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
            self.asked.append((timeout, maxevents))
            return [(7, 1)]

    stand_in = StandIn()
    assert rawio.epoll_wait(stand_in, -1, 0.5, 4) == [(7, 1)]
    assert stand_in.asked == [(0.5, 4)]


def test_a_signal_during_a_wait_runs_its_handler_and_the_wait_ends() -> None:
    """EINTR: the handler runs; compiled, the wait returns no events (the reactor's loop waits
    again, its timeout computed again), where epoll.poll waits on and returns the event the
    handler made ready; a handler's exception comes out of the wait either way."""
    import select

    ep = select.epoll()

    def wait(r: int) -> list:
        if r not in registered:
            ep.register(r, select.EPOLLIN)
            registered.append(r)
        return rawio.epoll_wait(ep, ep.fileno(), -1.0, 3)

    def check(got: list, r: int) -> None:
        assert got in ([], [(r, select.EPOLLIN)])
        os.read(r, 100)  # (the next wait blocks again)

    registered: list[int] = []
    with ep:
        _during_a_signal(wait, check)
