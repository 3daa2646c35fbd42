"""Write tokens: proof that a requester can receive datagrams at the address it writes from.

As in BEP 5, a node answering `get_providers`/`get` hands out a token, and a later announce or
put must bring it back from the same address. A spoofed source address never sees the token,
so it cannot make us store providers or records in someone else's name (or charge someone
else's quota).

**The token** is the first `TOKEN_LEN` (8) bytes of::

    HMAC-SHA256(secret, packed_address || port)

`packed_address` is the requester's IP address in network byte order (4 bytes for IPv4, 16 for
IPv6; any IPv6 scope id is ignored) and `port` its UDP port as two big-endian bytes. The port is
included because our announces take the port from the datagram source: a token must vouch for
the whole address that will be stored, not only the host. The length of the address tells the
families apart, so the input is unambiguous. Only the issuer ever checks its tokens, so this
encoding is local; it is written down so that it can be reviewed.

**Rotation.** Time is cut into epochs of `ROTATION_PERIOD` (5 min), counted from the first
call. Each epoch has a secret, drawn from `secret_source` (the node passes its seeded
`crypto_random`, so the simulator stays deterministic) when the first call in that epoch comes.
Tokens of the current epoch's secret and of the previous epoch's are accepted, anything else is
refused: a token is good for at least one period and less than two after it was issued (BEP 5
accepts tokens up to 10 minutes old). After an idle gap of two epochs or more, no old secret is
kept at all.

Sans-IO: `now` comes from the caller; nothing here reads a clock or draws randomness itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Callable
from typing import Final

ROTATION_PERIOD: Final = 5 * 60.0
TOKEN_LEN: Final = 8
MIN_SECRET_LEN: Final = 16


Address = tuple[str, int]
"""(numeric host, port): a datagram's source address as the Network seam reports it."""


def _address_bytes(address: Address) -> bytes:
    host, port = address
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return ipaddress.ip_address(host.split("%", 1)[0]).packed + port.to_bytes(2, "big")


class TokenIssuer:
    """Issues and checks write tokens bound to (host, port), with rotating secrets."""

    def __init__(
        self, secret_source: Callable[[], bytes], *, rotation_period: float = ROTATION_PERIOD
    ) -> None:
        if not rotation_period > 0:
            raise ValueError("the rotation period must be positive")
        self._secret_source = secret_source
        self._period = rotation_period
        self._origin: float | None = None
        self._epoch = 0
        self._current = b""
        self._previous: bytes | None = None

    def _draw(self) -> bytes:
        secret = self._secret_source()
        if type(secret) is not bytes or len(secret) < MIN_SECRET_LEN:
            raise ValueError(f"secret_source must return at least {MIN_SECRET_LEN} bytes")
        return secret

    def _rotate(self, now: float) -> None:
        if self._origin is None:
            self._origin = now
            self._current = self._draw()
            return
        epoch = math.floor((now - self._origin) / self._period)
        if epoch <= self._epoch:
            return  # the same epoch (or time ran backwards: keep what we have)
        self._previous = self._current if epoch == self._epoch + 1 else None
        self._current = self._draw()
        self._epoch = epoch

    @staticmethod
    def _token(secret: bytes, message: bytes) -> bytes:
        return hmac.new(secret, message, hashlib.sha256).digest()[:TOKEN_LEN]

    def issue(self, address: Address, now: float) -> bytes:
        """The token for a requester at `address` = (numeric host, port); ValueError for a
        host that is not a numeric address."""
        self._rotate(now)
        return self._token(self._current, _address_bytes(address))

    def check(self, token: bytes, address: Address, now: float) -> bool:
        """Whether `token` was issued to `address` under the current or the previous secret."""
        self._rotate(now)
        if type(token) is not bytes or len(token) != TOKEN_LEN:
            return False
        message = _address_bytes(address)
        if hmac.compare_digest(token, self._token(self._current, message)):
            return True
        return self._previous is not None and hmac.compare_digest(
            token, self._token(self._previous, message)
        )
