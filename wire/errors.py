"""The one error family raised by every decoder and protocol core in `wire`.

A `ProtocolError` always means "the other side (or the bytes we were given) broke the rules";
the shell that owns the connection catches it, closes that one connection with the reason and
carries on. Its message is meant for a human reading a log, so it names what was wrong and,
where it helps, the limit that was exceeded.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Input violated the protocol. The connection it came from must be closed."""


class FrameError(ProtocolError):
    """A frame was oversize, truncated or otherwise malformed."""


class DecodeError(ProtocolError):
    """A message or record failed strict decoding: wrong type, length, range or encoding."""


class HandshakeError(ProtocolError):
    """The handshake failed: bad key, wrong capability key, tampered or replayed transcript."""


class ChannelError(ProtocolError):
    """A transport frame failed authentication, arrived out of order, or the stream was cut."""


class LocalProtocolError(Exception):
    """We (the local caller) misused a protocol core, e.g. sent before the handshake finished.

    This is a bug in our own code, never the remote's fault, so it is not a `ProtocolError`.
    """
