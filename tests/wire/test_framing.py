"""Framing: any chunking yields the same frames; oversize and truncated input are errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import FrameError
from wire.framing import FrameDecoder, encode_frame

MAX = 1000


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(
    frames=st.lists(st.binary(max_size=MAX), max_size=20),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
    header_size=st.sampled_from([2, 3, 4]),
)
def test_any_chunking_gives_back_the_same_frames(
    frames: list[bytes], cuts: list[int], header_size: int
) -> None:
    stream = b"".join(encode_frame(f, header_size=header_size, max_frame_size=MAX) for f in frames)
    decoder = FrameDecoder(max_frame_size=MAX, header_size=header_size)
    out = []
    for chunk in chunked(stream, cuts):
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == frames
    decoder.check_clean_end()


def test_one_byte_at_a_time() -> None:
    frames = [b"", b"a", b"hello" * 50]
    stream = b"".join(encode_frame(f, max_frame_size=MAX) for f in frames)
    decoder = FrameDecoder(max_frame_size=MAX)
    out = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == frames


def test_oversize_header_is_rejected_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=MAX)
    with pytest.raises(FrameError, match="limit is 1000"):
        decoder.feed((MAX + 1).to_bytes(4, "big"))
    # The decoder never buffered a body it was not going to accept.
    assert decoder.buffered_bytes == 4


def test_oversize_frame_behind_a_good_one_is_rejected() -> None:
    decoder = FrameDecoder(max_frame_size=MAX)
    good = encode_frame(b"ok", max_frame_size=MAX)
    decoder.feed(good + (10**6).to_bytes(4, "big"))
    assert decoder.next_frame() == b"ok"
    with pytest.raises(FrameError):
        decoder.next_frame()


@given(st.binary(min_size=1, max_size=50))
def test_truncated_stream_is_an_error(data: bytes) -> None:
    stream = encode_frame(data, max_frame_size=MAX)
    decoder = FrameDecoder(max_frame_size=MAX)
    decoder.feed(stream[:-1])
    assert decoder.next_frame() is None
    with pytest.raises(FrameError, match="stream ended inside a frame"):
        decoder.check_clean_end()


def test_encoder_refuses_oversize_payload() -> None:
    with pytest.raises(FrameError):
        encode_frame(b"x" * (MAX + 1), max_frame_size=MAX)


def test_take_remaining_hands_over_unread_bytes() -> None:
    decoder = FrameDecoder(max_frame_size=MAX, header_size=2)
    decoder.feed(encode_frame(b"a", header_size=2, max_frame_size=MAX) + b"rest")
    assert decoder.next_frame() == b"a"
    assert decoder.take_remaining() == b"rest"
    assert decoder.buffered_bytes == 0


def test_large_streams_do_not_grow_the_buffer_without_bound() -> None:
    decoder = FrameDecoder(max_frame_size=MAX)
    frame = encode_frame(b"x" * MAX, max_frame_size=MAX)
    for _ in range(2000):
        decoder.feed(frame[:500])
        decoder.feed(frame[500:])
        assert decoder.next_frame() == b"x" * MAX
    assert decoder.buffered_bytes == 0
