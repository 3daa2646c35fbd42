"""Length-prefixed frames, decoded incrementally from arbitrary chunks.

A frame is a big-endian unsigned length (2 or 4 bytes) followed by that many bytes. The decoder
is sans-IO: feed it whatever the socket produced (one byte at a time works) and pull complete
frames out. It never buffers more than one frame beyond what the caller has fed: a length above
`max_frame_size` is rejected as soon as its header is complete, before any body arrives, so a
hostile peer cannot make us allocate more than the limit.
"""

from __future__ import annotations

from wire.errors import FrameError

# Compact the buffer once this many consumed bytes sit at its front: cheap amortised O(1)
# per byte without moving memory on every frame.
_COMPACT_THRESHOLD_BYTES = 256 * 1024


def encode_frame(payload: bytes, *, header_size: int = 4, max_frame_size: int) -> bytes:
    """Return `payload` with its length prefix. Refuses payloads over `max_frame_size`."""
    if len(payload) > max_frame_size:
        raise FrameError(f"frame of {len(payload)} bytes exceeds the limit of {max_frame_size}")
    return len(payload).to_bytes(header_size, "big") + payload


class FrameDecoder:
    """Turns a byte stream into frames.

    Call `feed()` with received bytes, then `next_frame()` until it returns None. Call
    `check_clean_end()` when the stream ends: leftover bytes mean the stream was truncated.
    """

    __slots__ = ("_buffer", "_header_size", "_max_frame_size", "_position")

    def __init__(self, *, max_frame_size: int, header_size: int = 4) -> None:
        if header_size not in (2, 3, 4):
            raise ValueError("header_size must be 2, 3 or 4 bytes")
        if max_frame_size >= 1 << (8 * header_size):
            raise ValueError("max_frame_size does not fit in the header")
        self._buffer = bytearray()
        self._position = 0
        self._header_size = header_size
        self._max_frame_size = max_frame_size

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as frames."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. Raises FrameError early if a pending header is oversize."""
        if self._position >= _COMPACT_THRESHOLD_BYTES and self._position * 2 >= len(self._buffer):
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data
        self._check_pending_header()

    def _check_pending_header(self) -> None:
        start = self._position
        if len(self._buffer) - start >= self._header_size:
            length = int.from_bytes(self._buffer[start : start + self._header_size], "big")
            if length > self._max_frame_size:
                raise FrameError(
                    f"peer announced a frame of {length} bytes; the limit is {self._max_frame_size}"
                )

    def next_frame(self) -> bytearray | None:
        """Return the next complete frame's payload, or None if more bytes are needed.

        The payload is a fresh bytearray the caller owns (the channel decrypts it in place)."""
        start = self._position
        header_end = start + self._header_size
        if len(self._buffer) < header_end:
            return None
        length = int.from_bytes(self._buffer[start:header_end], "big")
        if length > self._max_frame_size:
            raise FrameError(
                f"peer announced a frame of {length} bytes; the limit is {self._max_frame_size}"
            )
        end = header_end + length
        if len(self._buffer) < end:
            return None
        frame = self._buffer[header_end:end]
        self._position = end
        if end == len(self._buffer):
            self._buffer.clear()
            self._position = 0
        return frame

    def take_remaining(self) -> bytes:
        """Remove and return every buffered byte (to hand over to a different decoder)."""
        rest = bytes(self._buffer[self._position :])
        self._buffer.clear()
        self._position = 0
        return rest

    def check_clean_end(self) -> None:
        """Call at end of stream: raises FrameError if a partial frame was left behind."""
        if self.buffered_bytes:
            raise FrameError(
                f"stream ended inside a frame ({self.buffered_bytes} bytes of it received)"
            )
