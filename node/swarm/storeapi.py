"""What the swarm engine needs from a store: `node.store.Store` provides it for a real node;
the simulator provides an in-memory store with the same methods (its "virtual disk")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from node.store.records import ContainerRecord, Held, WriteResult
from wire.container import Manifest


class SwarmStore(Protocol):
    def list_containers(self) -> list[ContainerRecord]: ...

    def get(self, container_id: bytes) -> ContainerRecord | None: ...

    def is_complete(self, container_id: bytes) -> bool: ...

    def manifest(self, container_id: bytes) -> Manifest: ...

    def piece_layer(self, root: bytes, piece_length: int | None = None) -> list[bytes]: ...

    def held(self, root: bytes, piece_length: int | None = None) -> Held: ...

    def read_piece(self, root: bytes, index: int, *, piece_length: int | None = None) -> bytes: ...

    def read_piece_nowait(
        self, root: bytes, index: int, *, piece_length: int | None = None
    ) -> bytes | bytearray:
        """As `read_piece`, or raise `WouldBlock` rather than wait (called on the loop)."""
        ...

    def write_pieces(
        self,
        pieces: Iterable[tuple[bytes, int, bytes | bytearray | memoryview]],
        *,
        piece_length: int | None = None,
    ) -> WriteResult: ...

    def add_container(
        self,
        manifest: Manifest,
        piece_layers: Mapping[bytes, Sequence[bytes]],
        location: Path | str,
        *,
        complete: bool,
        now: float,
    ) -> ContainerRecord: ...
