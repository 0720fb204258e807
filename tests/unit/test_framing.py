"""Framers: any split of the byte stream gives the same messages; bounds hold before allocation.

Property tests carry "property" or "fuzz" in their names so that
``make fuzz`` (``-k "property or fuzz"``, profile ``deep``) picks them up.
"""

from __future__ import annotations

import struct
import tracemalloc
import unittest.mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.testing.matrix import examples
from pgwarden.wire import framing
from pgwarden.wire import messages as m
from pgwarden.wire.errors import MessageTooLarge, ProtocolError
from pgwarden.wire.framing import NEED_DATA, Fragment, MessageFramer, StartupFramer

FRONTEND_TYPES = frozenset(t[0] for t in m.FRONTEND)
BACKEND_TYPES = frozenset(t[0] for t in m.BACKEND)
TYPES = {"frontend": FRONTEND_TYPES, "backend": BACKEND_TYPES}
REGISTRIES = {"frontend": m.FRONTEND, "backend": m.BACKEND}
D = ord("D")


def header(type_byte: bytes, length: int) -> bytes:
    return type_byte + struct.pack("!i", length)


# --------------------------------------------------------------------------- strategies
#
# The framer only looks at the type byte and the length, so a message here is a
# registered type byte with an arbitrary body, framed by hand (not by the encoder).


def typed_frames(direction: str, max_body: int = 40):
    types = sorted(REGISTRIES[direction])
    return st.builds(lambda t, body: header(t, len(body) + 4) + body, st.sampled_from(types),
                     st.binary(max_size=max_body))


NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
STARTUP_PACKETS = st.one_of(
    st.just(m.SSLRequest()),
    st.just(m.GSSENCRequest()),
    st.builds(m.CancelRequest, st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1)),
    st.builds(
        m.StartupMessage,
        st.integers(0, 0xFFFF).map(lambda minor: m.PROTOCOL_3_0 | minor),
        st.lists(st.tuples(NAME, TEXT), max_size=4).map(tuple),
    ),
)


@st.composite
def split(draw, data: bytes):
    """``data`` cut into chunks at hypothesis-chosen points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def feed_frames(framer: MessageFramer, chunks) -> list:
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        out += framer.frames()
    return out


def feed_next_frame(framer: MessageFramer, chunks) -> list:
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        while (raw := framer.next_frame()) is not NEED_DATA:
            out.append(raw)
    return out


def feed_packets(framer: StartupFramer, chunks) -> list:
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        while (packet := framer.next_packet()) is not NEED_DATA:
            out.append(packet)
    return out


# --------------------------------------------------------------------------- splits: MessageFramer


@pytest.mark.parametrize("direction", ["frontend", "backend"])
@given(data=st.data())
def test_split_property_frames(direction, data):
    frames = data.draw(st.lists(typed_frames(direction), max_size=10))
    stream = b"".join(frames)
    chunks = data.draw(split(stream))
    framer = MessageFramer(valid_types=TYPES[direction])
    assert feed_frames(framer, chunks) == frames
    assert framer.buffered == 0


@pytest.mark.parametrize("direction", ["frontend", "backend"])
@given(data=st.data())
def test_split_property_frames_byte_by_byte_and_whole(direction, data):
    frames = data.draw(st.lists(typed_frames(direction), min_size=1, max_size=6))
    stream = b"".join(frames)
    framer = MessageFramer(valid_types=TYPES[direction])
    assert feed_frames(framer, byte_by_byte(stream)) == frames
    assert framer.buffered == 0
    framer = MessageFramer(valid_types=TYPES[direction])
    assert feed_frames(framer, [stream]) == frames
    assert framer.buffered == 0


@given(data=st.data())
def test_split_property_real_messages(data):
    """The same with messages from the real encoder, decoded again after framing."""
    msgs = data.draw(
        st.lists(
            st.one_of(
                st.builds(m.Query, TEXT),
                st.builds(m.Parse, TEXT, TEXT, st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple)),
                st.builds(m.Bind, TEXT, TEXT, st.just((1,)),
                          st.lists(st.none() | st.binary(max_size=8), max_size=3).map(tuple)),
                st.builds(m.Execute, TEXT, st.integers(0, 100)),
                st.just(m.Sync()),
                st.builds(m.CopyData, st.binary(max_size=30)),
            ),
            max_size=8,
        )
    )
    encoded = [msg.encode() for msg in msgs]
    chunks = data.draw(split(b"".join(encoded)))
    framer = MessageFramer(valid_types=FRONTEND_TYPES)
    frames = feed_frames(framer, chunks)
    assert frames == encoded
    assert [m.decode(m.FRONTEND, raw[:1], raw[5:]) for raw in frames] == msgs


@given(data=st.data())
def test_split_property_next_frame(data):
    frames = data.draw(st.lists(typed_frames("frontend"), max_size=8))
    stream = b"".join(frames)
    chunks = data.draw(split(stream))
    framer = MessageFramer(valid_types=FRONTEND_TYPES)
    assert feed_next_frame(framer, chunks) == frames
    assert framer.buffered == 0


@given(data=st.data())
def test_split_property_frames_keep_a_partial_tail(data):
    """An incomplete last message stays buffered and is not handed out."""
    frames = data.draw(st.lists(typed_frames("backend"), max_size=5))
    last = data.draw(typed_frames("backend"))
    cut = data.draw(st.integers(0, len(last) - 1))
    stream = b"".join(frames) + last[:cut]
    framer = MessageFramer(valid_types=BACKEND_TYPES)
    assert feed_frames(framer, data.draw(split(stream))) == frames
    assert framer.buffered == cut
    framer.feed(last[cut:])
    assert framer.frames() == [last]
    assert framer.buffered == 0


def test_take_rest_returns_what_is_buffered():
    framer = MessageFramer()
    framer.feed(m.Sync().encode() + b"Q\x00\x00")
    assert framer.frames() == [m.Sync().encode()]
    assert framer.take_rest() == b"Q\x00\x00"
    assert framer.buffered == 0


# --------------------------------------------------------------------------- splits: StartupFramer


@given(data=st.data())
def test_split_property_startup(data):
    packets = data.draw(st.lists(STARTUP_PACKETS, max_size=5))
    stream = b"".join(p.encode() for p in packets)
    framer = StartupFramer()
    assert feed_packets(framer, data.draw(split(stream))) == packets
    assert framer.take_rest() == b""


@given(data=st.data())
def test_split_property_startup_ssl_then_startup_message(data):
    """The usual opening: SSLRequest, then (say, after a refusal 'N') a StartupMessage."""
    startup = data.draw(STARTUP_PACKETS.filter(lambda p: isinstance(p, m.StartupMessage)))
    stream = m.SSLRequest().encode() + startup.encode()
    for chunks in (data.draw(split(stream)), byte_by_byte(stream), [stream]):
        framer = StartupFramer()
        assert feed_packets(framer, chunks) == [m.SSLRequest(), startup]
        assert framer.take_rest() == b""


@given(data=st.data())
def test_split_property_startup_take_rest(data):
    """After an SSLRequest, whatever follows (a TLS ClientHello) is handed back untouched."""
    tail = data.draw(st.binary(max_size=64))
    stream = m.SSLRequest().encode() + tail
    framer = StartupFramer()
    chunks = data.draw(split(stream))
    got = []
    for chunk in chunks:
        framer.feed(chunk)
        if not got and (packet := framer.next_packet()) is not NEED_DATA:
            got.append(packet)
    assert got == [m.SSLRequest()]
    assert framer.take_rest() == tail


# --------------------------------------------------------------------------- fuzz: only ProtocolError


def frames_until_error(framer: MessageFramer, chunks):
    """Every frame handed out, and the error that stopped the stream (or None)."""
    out = []
    try:
        for chunk in chunks:
            framer.feed(chunk)
            out += framer.frames()
    except ProtocolError as e:
        return out, e
    return out, None


def check_frames(frames, valid_types, maximum):
    for raw in frames:
        if isinstance(raw, Fragment):
            continue
        assert isinstance(raw, bytes)
        assert raw[0] in valid_types
        (length,) = struct.unpack("!i", raw[1:5])
        assert length == len(raw) - 1
        assert 4 <= length <= maximum


# A stream of mostly well-formed frames with garbage mixed in reaches further
# into the decoders than uniformly random bytes, which die at the first byte.
NOISY_STREAM = st.lists(typed_frames("frontend") | st.binary(min_size=1, max_size=12), max_size=8).map(b"".join)


@given(data=st.data())
def test_fuzz_message_framer_and_frontend_decoders(data):
    stream = data.draw(st.binary(max_size=300) | NOISY_STREAM)
    maximum = data.draw(st.integers(4, 64) | st.just(framing.DEFAULT_MAX_MESSAGE))
    framer = MessageFramer(max_size=maximum, valid_types=FRONTEND_TYPES)
    frames, error = frames_until_error(framer, data.draw(split(stream)))
    check_frames(frames, FRONTEND_TYPES, maximum)
    assert b"".join(frames) == stream[: sum(map(len, frames))]
    for raw in frames:
        try:
            msg = m.decode(m.FRONTEND, raw[:1], raw[5:])
        except ProtocolError:
            continue
        assert type(msg) is m.FRONTEND[raw[:1]]


@given(data=st.data())
def test_fuzz_split_does_not_change_the_outcome(data):
    """Fed whole, byte by byte or in random chunks, a stream gives the same frames and error."""
    stream = data.draw(st.binary(max_size=200) | NOISY_STREAM)
    maximum = data.draw(st.sampled_from([16, framing.DEFAULT_MAX_MESSAGE]))
    outcomes = []
    for chunks in ([stream], byte_by_byte(stream), data.draw(split(stream))):
        framer = MessageFramer(max_size=maximum, valid_types=FRONTEND_TYPES)
        frames, error = frames_until_error(framer, chunks)
        outcomes.append((frames, type(error)))
    whole, *others = outcomes
    for frames, error in others:
        assert error is whole[1]
        if whole[1] is None:
            assert frames == whole[0]
        else:
            # frames() raising drops what it framed in that call: the whole feed
            # may show fewer frames, never different ones.
            assert frames[: len(whole[0])] == whole[0]


def outcome_per_chunk(framer: MessageFramer, chunks, through_take: bool) -> list:
    """What each chunk gave, then what is left buffered; or, if the stream broke, the error's type
    (the session ends there: what is buffered no longer matters)."""
    out = []
    for chunk in chunks:
        try:
            if through_take:
                out.append(framer.take(chunk))
            else:
                framer.feed(chunk)
                out.append(framer.frames())
        except ProtocolError as e:
            return out + [type(e)]
    return out + [framer.buffered]


def _rows_apart(outcome: list, run_type: int | None) -> list:
    """A chunk-by-chunk outcome with each run of rows as its rows (`take` may cut a run where
    `frames` does not: see `test_take_completes_a_buffered_row_from_the_next_read`)."""
    if run_type is None:
        return outcome
    apart: list = []
    for item in outcome:
        if isinstance(item, list):
            item = [row for f in item for row in
                    (framing.split_run(f) if isinstance(f, bytes) and f[:1] == bytes([run_type]) else [f])]
        apart.append(item)
    return apart


@given(data=st.data())
def test_fuzz_take_is_feed_then_frames(data):
    """`take` (the relay's path, which skips the buffer when it is empty) hands out exactly what
    `feed` then `frames` would, chunk by chunk: the same messages (runs of rows possibly cut
    elsewhere), fragments of large rows, errors."""
    stream = data.draw(st.binary(max_size=200) | NOISY_STREAM | st.lists(
        typed_frames("backend", max_body=24), max_size=10).map(b"".join))
    maximum = data.draw(st.sampled_from([16, 40, framing.DEFAULT_MAX_MESSAGE]))
    types = data.draw(st.sampled_from([FRONTEND_TYPES, BACKEND_TYPES, None]))
    run_type = data.draw(st.sampled_from([None, D]))
    streamable = data.draw(st.sampled_from([frozenset(), frozenset({D, ord("d")})]))
    chunks = data.draw(split(stream))
    outcomes = []
    # A low streaming threshold, so that fragments show up in streams this small.
    with unittest.mock.patch.object(framing, "STREAM_THRESHOLD", 12):
        for through_take in (False, True):
            framer = MessageFramer(max_size=maximum, valid_types=types, run_type=run_type)
            framer.streamable = streamable
            outcomes.append(_rows_apart(outcome_per_chunk(framer, chunks, through_take), run_type))
    assert outcomes[1] == outcomes[0]


@settings(max_examples=examples(300))
@given(data=st.data())
def test_take_completes_a_buffered_row_from_the_next_read(data):
    """A read that ends inside a row (a large result's reads nearly all do) leaves that row's
    start buffered; the next read completes it from its first bytes and frames the rest where
    it lies, without copying it into the buffer: the same messages in the same order, whatever
    the cuts, the rows' sizes and what follows them; nothing left buffered at the end."""
    sizes = data.draw(st.lists(st.integers(0, 300), min_size=1, max_size=40))
    rows = [m.DataRow((bytes([65 + i % 26]) * n,)).encode() for i, n in enumerate(sizes)]
    messages = [m.RowDescription((m.Column("x"),)).encode(), *rows, m.CommandComplete("SELECT 1").encode(),
                m.ReadyForQuery("I").encode()]
    stream = b"".join(messages)
    chunks = data.draw(split(stream))
    framer = MessageFramer(valid_types=BACKEND_TYPES, run_type=D)
    got = [row for chunk in chunks for f in framer.take(chunk)
           for row in (framing.split_run(f) if f[:1] == b"D" else [f])]
    assert got == messages
    assert framer.buffered == 0
    # A cut inside the row's header, then one that completes it exactly, then the rest
    framer = MessageFramer(run_type=D)
    head = len(messages[0])
    first = framer.take(stream[:head + 3])
    second = framer.take(stream[head + 3:head + len(rows[0])])
    assert first == [messages[0]] and second == [rows[0]] and framer.buffered == 0


def test_take_keeps_a_partial_message_for_the_next_read():
    framer = MessageFramer()
    sync, query = m.Sync().encode(), m.Query("SELECT 1").encode()
    assert framer.take(sync + query[:7]) == [sync]
    assert framer.buffered == 7
    assert framer.take(query[7:]) == [query]
    assert framer.buffered == 0


@given(data=st.data())
def test_fuzz_message_framer_without_valid_types(data):
    """With no type filter, unknown types reach the decoder, which refuses them."""
    stream = data.draw(st.binary(max_size=300) | NOISY_STREAM)
    framer = MessageFramer(max_size=1024)
    frames, _ = frames_until_error(framer, data.draw(split(stream)))
    for raw in frames:
        try:
            m.decode(m.BACKEND, raw[:1], raw[5:])
        except ProtocolError:
            pass


NOISY_STARTUP = st.lists(
    STARTUP_PACKETS.map(lambda p: p.encode()) | st.binary(min_size=1, max_size=12), max_size=5
).map(b"".join)


@given(data=st.data())
def test_fuzz_startup_framer(data):
    stream = data.draw(st.binary(max_size=200) | NOISY_STARTUP)
    framer = StartupFramer()
    try:
        for chunk in data.draw(split(stream)):
            framer.feed(chunk)
            while (packet := framer.next_packet()) is not NEED_DATA:
                assert isinstance(packet, (m.StartupMessage, m.SSLRequest, m.GSSENCRequest, m.CancelRequest))
    except ProtocolError:
        pass


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("length", [0x7FFFFFFF, framing.DEFAULT_MAX_MESSAGE + 1])
def test_huge_length_is_refused_after_the_header(length):
    framer = MessageFramer()
    framer.feed(header(b"Q", length)[:4])
    assert framer.frames() == []  # the length is not known yet
    framer.feed(header(b"Q", length)[4:])
    assert framer.buffered == 5
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooLarge):
            framer.frames()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak} bytes allocated to refuse a header"


def test_huge_length_is_refused_by_next_frame():
    framer = MessageFramer()
    framer.feed(header(b"Q", 0x7FFFFFFF))
    with pytest.raises(MessageTooLarge):
        framer.next_frame()


def test_huge_length_is_refused_after_complete_messages():
    framer = MessageFramer()
    framer.feed(m.Sync().encode() + header(b"d", 0x7FFFFFFF))
    with pytest.raises(MessageTooLarge):
        framer.frames()


@given(data=st.data())
def test_split_property_max_size(data):
    """Oversized messages are refused however they arrive: header alone or whole."""
    frames = data.draw(st.lists(typed_frames("frontend"), min_size=1, max_size=6))
    maximum = data.draw(st.integers(4, 48))
    framer = MessageFramer(max_size=maximum, valid_types=FRONTEND_TYPES)
    got, error = frames_until_error(framer, data.draw(split(b"".join(frames))))
    lengths = [len(raw) - 1 for raw in frames]
    if max(lengths) <= maximum:
        assert error is None and got == frames
    else:
        assert isinstance(error, MessageTooLarge)
        first_too_large = next(i for i, n in enumerate(lengths) if n > maximum)
        assert got == frames[: len(got)] and len(got) <= first_too_large


@pytest.mark.parametrize("maximum", [64, 1000])
def test_whole_oversized_message_is_refused(maximum):
    """Even when the whole message is already buffered, it is not handed out."""
    too_big = m.Query("x" * (maximum - 4)).encode()  # length word == maximum + 1
    framer = MessageFramer(max_size=maximum)
    framer.feed(m.Sync().encode() + too_big)
    with pytest.raises(MessageTooLarge):
        framer.frames()
    framer = MessageFramer(max_size=maximum)
    framer.feed(too_big)
    with pytest.raises(MessageTooLarge):
        framer.next_frame()


@pytest.mark.parametrize("maximum", [64, 1000])
def test_max_size_boundary(maximum):
    at_limit = m.Query("x" * (maximum - 5)).encode()  # length word == maximum
    assert struct.unpack("!i", at_limit[1:5])[0] == maximum
    framer = MessageFramer(max_size=maximum)
    framer.feed(at_limit)
    assert framer.frames() == [at_limit]
    framer.feed(header(b"Q", maximum + 1))
    with pytest.raises(MessageTooLarge):
        framer.frames()
    framer = MessageFramer(max_size=maximum)
    framer.feed(header(b"Q", maximum + 1))
    with pytest.raises(MessageTooLarge):
        framer.next_frame()


@pytest.mark.parametrize("length", [3, 2, 1, 0, -1, -(2**31)])
@pytest.mark.parametrize("streamable", [False, True])
def test_length_below_four_is_a_protocol_error(length, streamable):
    framer = MessageFramer()
    if streamable:
        framer.streamable = frozenset({D})
    framer.feed(header(b"D", length))
    with pytest.raises(ProtocolError) as info:
        framer.frames()
    assert type(info.value) is ProtocolError
    framer = MessageFramer()
    framer.feed(header(b"D", length))
    with pytest.raises(ProtocolError):
        framer.next_frame()


@pytest.mark.parametrize("type_byte", [b"?", b"Z", b"q", b"\x00", b"\xff"])
def test_unknown_type_is_refused_with_valid_types(type_byte):
    # Refused as soon as the header is in, before the body arrives ...
    framer = MessageFramer(valid_types=FRONTEND_TYPES)
    framer.feed(header(type_byte, 100))
    with pytest.raises(ProtocolError):
        framer.frames()
    # ... and when the whole message is there.
    framer = MessageFramer(valid_types=FRONTEND_TYPES)
    framer.feed(header(type_byte, 4))
    with pytest.raises(ProtocolError):
        framer.frames()
    framer = MessageFramer(valid_types=FRONTEND_TYPES)
    framer.feed(header(type_byte, 4))
    with pytest.raises(ProtocolError):
        framer.next_frame()
    # Without valid_types the framer does not judge types.
    framer = MessageFramer()
    framer.feed(header(type_byte, 4))
    assert framer.frames() == [header(type_byte, 4)]


@pytest.mark.parametrize("length", [7, 4, 0, -1, -(2**31), framing.MAX_STARTUP_PACKET + 1, 0x7FFFFFFF])
def test_startup_framer_refuses_bad_lengths(length):
    framer = StartupFramer()
    framer.feed(struct.pack("!i", length)[:3])
    assert framer.next_packet() is NEED_DATA
    framer.feed(struct.pack("!i", length)[3:])
    with pytest.raises(ProtocolError):
        framer.next_packet()


def test_startup_framer_length_bounds_are_inclusive():
    assert framing.MAX_STARTUP_PACKET == 10000
    framer = StartupFramer()
    framer.feed(m.SSLRequest().encode())  # length 8
    assert framer.next_packet() == m.SSLRequest()
    # A StartupMessage of exactly 10000 bytes: 4 + 4 + "user\0" + value + "\0" + "\0".
    value = "v" * (10000 - 4 - 4 - 5 - 1 - 1)
    biggest = m.StartupMessage(m.PROTOCOL_3_0, (("user", value),))
    assert len(biggest.encode()) == 10000
    framer.feed(biggest.encode())
    assert framer.next_packet() == biggest


def test_startup_framer_custom_bound():
    framer = StartupFramer(max_size=100)
    framer.feed(struct.pack("!i", 101))
    with pytest.raises(ProtocolError):
        framer.next_packet()


def test_startup_framer_invalid_packet_is_a_protocol_error():
    framer = StartupFramer()
    framer.feed(struct.pack("!ii", 8, 2 << 16))  # protocol 2.0
    with pytest.raises(ProtocolError):
        framer.next_packet()


# --------------------------------------------------------------------------- streaming


def big_row(size: int) -> bytes:
    return m.DataRow((b"x" * size, None, b"tail")).encode()


def reassemble(items, streamable, threshold=framing.STREAM_THRESHOLD):
    """Whole messages from frames() output, checking the Fragment bookkeeping on the way."""
    messages = []
    current = None  # pieces of the message being streamed
    for item in items:
        if isinstance(item, Fragment):
            assert item.type in streamable
            if current is None:
                assert item.first and not item.last, item
                assert item.data[0] == item.type
                assert struct.unpack("!i", item.data[1:5])[0] > threshold
                current = [item]
            else:
                assert not item.first
                assert item.type == current[0].type
                current.append(item)
            if item.last:
                messages.append(b"".join(f.data for f in current))
                current = None
        else:
            assert current is None, "a whole message in the middle of a streamed one"
            assert isinstance(item, bytes)
            messages.append(item)
    assert current is None, "a streamed message never ended"
    return messages


def test_streaming_large_data_row():
    size = framing.STREAM_THRESHOLD + 54321
    row = big_row(size)
    before = m.RowDescription((m.Column("big"),)).encode()
    after = [m.DataRow((b"small",)).encode(), m.CommandComplete("SELECT 2").encode(), m.ReadyForQuery("I").encode()]
    stream = before + row + b"".join(after)
    framer = MessageFramer(valid_types=BACKEND_TYPES)
    framer.streamable = frozenset({D})
    out = []
    step = 40000
    for i in range(0, len(stream), step):
        framer.feed(stream[i : i + step])
        out += framer.frames()
        # Bounded memory: the big row never sits in the buffer.
        assert framer.buffered < step
    assert framer.buffered == 0
    assert out[0] == before
    fragments = [x for x in out if isinstance(x, Fragment)]
    assert len(fragments) >= 2
    assert b"".join(f.data for f in fragments) == row
    assert fragments[0].first and not fragments[0].last
    assert fragments[-1].last and not fragments[-1].first
    assert all(not f.first and not f.last for f in fragments[1:-1])
    assert all(f.type == D for f in fragments)
    assert out[-3:] == after
    assert reassemble(out, {D}) == [before, row, *after]
    assert m.decode_backend(row) == m.DataRow((b"x" * size, None, b"tail"))


def test_streamable_message_may_exceed_max_size_but_others_may_not():
    maximum = 1024
    row = big_row(framing.STREAM_THRESHOLD + 100)
    framer = MessageFramer(max_size=maximum, valid_types=BACKEND_TYPES)
    framer.streamable = frozenset({D})
    out = feed_frames(framer, [row[i : i + 8192] for i in range(0, len(row), 8192)])
    assert all(isinstance(x, Fragment) for x in out)
    assert reassemble(out, {D}) == [row]

    # The same size in a type that is not streamable is refused at its header.
    copy = m.CopyData(b"x" * (framing.STREAM_THRESHOLD + 100)).encode()
    framer = MessageFramer(max_size=maximum, valid_types=BACKEND_TYPES)
    framer.streamable = frozenset({D})
    framer.feed(copy[:5])
    with pytest.raises(MessageTooLarge):
        framer.frames()

    # And DataRow itself when it is not declared streamable.
    framer = MessageFramer(max_size=maximum, valid_types=BACKEND_TYPES)
    framer.feed(row[:5])
    with pytest.raises(MessageTooLarge):
        framer.frames()


def test_small_streamable_messages_are_not_fragmented():
    rows = [m.DataRow((b"v" * n,)).encode() for n in (0, 10, 1000)]
    stream = b"".join(rows)
    framer = MessageFramer(valid_types=BACKEND_TYPES)
    framer.streamable = frozenset({D})
    assert feed_frames(framer, byte_by_byte(stream)) == rows


_STREAM_EXAMPLES = max(5, settings().max_examples // 10)


@settings(max_examples=_STREAM_EXAMPLES)
@given(data=st.data())
def test_split_property_streaming(data):
    """Random splits of a stream holding large rows: the messages come back intact."""
    threshold = framing.STREAM_THRESHOLD
    sizes = data.draw(
        st.lists(st.sampled_from([0, 100, threshold - 20, threshold + 1, threshold + 5000]), min_size=1, max_size=4)
    )
    messages = []
    for size in sizes:
        messages.append(m.DataRow((b"r" * size,)).encode())
        messages.append(data.draw(typed_frames("backend", max_body=16)))
    stream = b"".join(messages)
    maximum = data.draw(st.sampled_from([1024, framing.DEFAULT_MAX_MESSAGE]))
    framer = MessageFramer(max_size=maximum, valid_types=BACKEND_TYPES)
    framer.streamable = frozenset({D})
    chunks = data.draw(split(stream))
    out = []
    for chunk in chunks:
        framer.feed(chunk)
        out += framer.frames()
        # What stays buffered is at most one message short enough to be held whole.
        assert framer.buffered <= max(threshold, maximum) + 5
    assert framer.buffered == 0
    assert reassemble(out, {D}) == messages


def test_runs_of_rows_come_out_as_one_object_and_split_back():
    from pgwarden.wire import messages as m
    from pgwarden.wire.framing import MessageFramer, split_run

    rows = [m.DataRow((str(i).encode(),)).encode() for i in range(50)]
    stream = m.RowDescription((m.Column("x"),)).encode() + b"".join(rows) + m.CommandComplete("SELECT 50").encode()
    framer = MessageFramer(run_type=ord("D"))
    got = []
    for i in range(0, len(stream), 7):  # runs may be cut anywhere
        framer.feed(stream[i:i + 7])
        got += framer.frames()
    assert b"".join(got) == stream
    runs = [g for g in got if g[:1] == b"D"]
    assert [row for run in runs for row in split_run(run)] == rows
    whole = MessageFramer(run_type=ord("D"))
    whole.feed(stream)
    assert [len(split_run(f)) for f in whole.frames()] == [1, 50, 1]


@given(data=st.binary(min_size=4, max_size=12), pos=st.integers(0, 8))
def test_int32_at_is_structs_signed_big_endian_int32_property(data, pos):
    # Framing's lengths and the relay's Execute row limit are read with it (compiled: no struct call).
    if pos + 4 <= len(data):
        assert framing.int32_at(data, pos) == struct.unpack_from("!i", data, pos)[0]


@given(st.lists(st.tuples(st.sampled_from(b"QDZTq"), st.integers(-3, 40), st.booleans()), max_size=8),
       st.integers(0, 3), st.sampled_from([ord("D"), -1]), st.integers(4, 30))
def test_complete_messages_stops_at_the_first_message_it_is_not_to_judge(specs, cut, run_type, maximum):
    # The compiled scan's contract (`pgwarden.wire.scanning`), against a model written from it: every
    # message before the stop is complete, of a valid type ('q' is not) and 4 <= length <= maximum;
    # it stops at the first other message (a length negative as an int32 included) or where fewer
    # than 5 bytes are left; consecutive messages of the run type come as one bytes, others alone.
    from pgwarden.wire import scanning

    data = b"".join(bytes([t]) + struct.pack("!i", length) + (b"x" * max(0, length - 4) if whole else b"")
                    for t, length, whole in specs)
    data = data[:len(data) - cut] if cut < len(data) else data
    valid = bytes(0 if t == ord("q") else 1 for t in range(256))
    expected: list[bytes] = []
    pos = 0
    while len(data) - pos >= 5:
        t, length = data[pos], struct.unpack_from("!i", data, pos + 1)[0]
        end = pos + 1 + length
        if end > len(data) or length < 4 or length > maximum or not valid[t]:
            break
        expected.append(data[pos:end])
        pos = end
    out: list[object] = []
    stop = scanning.complete_messages(data, 0, out, scanning.plan(valid, maximum, run_type))
    assert stop == pos
    assert all(type(chunk) is bytes for chunk in out)
    assert [message for chunk in out for message in framing.split_run(chunk)] == expected
    for chunk in out:  # a chunk of several messages is a run of the run type
        assert len(framing.split_run(chunk)) == 1 or set(chunk[i] for i in _starts(chunk)) == {run_type}
    for before, after in zip(out, out[1:], strict=False):  # runs as long as they go
        assert not (before[0] == after[0] == run_type)


def _starts(chunk: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(chunk):
        starts.append(pos)
        pos += 1 + struct.unpack_from("!i", chunk, pos + 1)[0]
    return starts


def test_a_scan_plan_has_a_byte_for_each_type_byte_value():
    from pgwarden.wire import scanning

    with pytest.raises(ValueError):
        scanning.plan(b"\x01" * 255, 100, -1)
    assert len(scanning.plan(b"\x01" * 256, 100, ord("D"))) == 266


@given(st.binary(max_size=40), st.integers(0, 45))
def test_nul_at_is_finds_answer(data, pos):
    # The wire reader's NUL search (compiled: memchr), side by side with bytes.find from 0 on.
    from pgwarden.wire import scanning

    assert scanning.nul_at(data, pos) == data.find(b"\0", pos)


def test_nul_at_takes_positions_from_zero_on():
    from pgwarden.wire import scanning

    with pytest.raises(ValueError):
        scanning.nul_at(b"a\0", -1)
