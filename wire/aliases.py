"""Short numbers for file roots on one connection, so a Have costs ~20 bytes instead of ~70.

Haves are most of a swarm's messages (up to one per piece and peer that lacks it), and a
Have's 32-byte root with its piece length was most of each one. A sender declares
`FileAlias(number, root, piece_length)` once per connection and then names the file by
`number` in `HaveByAlias`. Each direction of a connection has its own numbers: the sender
picks them (`OutgoingAliases`), the receiver looks them up (`IncomingAliases`).

Rules (docs/protocol.md 5.5): numbers start at 0; a declaration gives the next unused number
or rebinds one already given; there are at most MAX_FILE_ALIASES at once. A sender with more
files in play rebinds its least recently used number, so the table stays bounded on both
sides whatever the traffic. A declaration out of that order, or a Have naming a number never
declared, is a protocol violation: the connection closes with the reason.

Sans-IO: plain tables, no clock, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from wire.errors import DecodeError
from wire.swarm import MAX_FILE_ALIASES, FileAlias, HaveByAlias

FileKey = tuple[bytes, int]
"""A file root and the piece length its pieces are counted in."""


def _checked_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_FILE_ALIASES:
        raise ValueError(f"the alias limit is 1 to {MAX_FILE_ALIASES}")
    return limit


class OutgoingAliases:
    """The numbers we gave on this connection, least recently used first."""

    __slots__ = ("_limit", "_numbers")

    def __init__(self, limit: int = MAX_FILE_ALIASES) -> None:
        self._limit = _checked_limit(limit)
        self._numbers: OrderedDict[FileKey, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._numbers)

    def number_for(self, root: bytes, piece_length: int) -> tuple[int, FileAlias | None]:
        """The number to name this file by, and the declaration to send first if it is new
        (or rebound: the least recently used file's number, once all are given)."""
        key = (root, piece_length)
        number = self._numbers.get(key)
        if number is not None:
            self._numbers.move_to_end(key)
            return number, None
        if len(self._numbers) < self._limit:
            number = len(self._numbers)
        else:
            _, number = self._numbers.popitem(last=False)
        self._numbers[key] = number
        return number, FileAlias(number, root, piece_length)


class IncomingAliases:
    """The numbers the peer gave us on this connection."""

    __slots__ = ("_files", "_limit")

    def __init__(self, limit: int = MAX_FILE_ALIASES) -> None:
        self._limit = _checked_limit(limit)
        self._files: list[FileKey] = []

    def __len__(self) -> int:
        return len(self._files)

    def declare(self, alias: FileAlias) -> None:
        """Record a declaration. Raises DecodeError if it skips a number or exceeds the limit."""
        number = alias.number
        if number < len(self._files):
            self._files[number] = (alias.root, alias.piece_length)
        elif number == len(self._files) and number < self._limit:
            self._files.append((alias.root, alias.piece_length))
        else:
            raise DecodeError(
                f"FileAlias {number}: the next new number is {len(self._files)}"
                f" (at most {self._limit})"
            )

    def resolve(self, have: HaveByAlias) -> FileKey:
        """The root and piece length `have` is about. Raises DecodeError for a number the
        peer never declared."""
        if have.file >= len(self._files):
            raise DecodeError(f"HaveByAlias names file alias {have.file}, never declared")
        return self._files[have.file]
