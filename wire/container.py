"""Containers: what kinswarm exchanges instead of torrents.

A container's **manifest** lists files (each with its BEP 52 Merkle root, so the same file is
the same file in every container) and other containers mounted at a path (a dataset made of
datasets). The manifest is canonical msgpack; its SHA-256 is the container's **id**. A manifest
made from a changed source names the id it `replaces`, so versions form a chain.

Everything that can change without changing the content lives beside the manifest, not in it
(`ContainerInfo`): the URLs the container is found at (with the Last-Modified, ETag and length
seen), the infohashes of the .torrent files it came from, and free metadata (title, license,
categories, tags...). A container therefore has many names, and one id.

Decoding is strict, because manifests come from strangers and become paths on our disk: every
path component must be safe on every OS (no `..`, no separators, no drive letters, no reserved
Windows names, no trailing dots or spaces, NFC-normalised), no two paths may collide even on a
case-insensitive file system, a file may not sit where another needs a folder, and counts,
lengths and depths are bounded.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import DecodeError
from wire.merkle import HASH_SIZE, check_piece_length
from wire.schema import (
    FixedBytes,
    ListOf,
    Nested,
    Optional,
    Record,
    Text,
    UInt,
    from_wire,
    spec,
    to_wire,
)

MANIFEST_VERSION: Final = 1
MAX_FILES: Final = 200_000
MAX_SUBCONTAINERS: Final = 10_000
MAX_PATH_DEPTH: Final = 32
MAX_COMPONENT_BYTES: Final = 255
MAX_PATH_BYTES: Final = 4096
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024
MAX_FILE_LENGTH: Final = 1 << 50  # 1 PiB: far beyond any file, still a bound
MAX_NESTING_DEPTH: Final = 8
"""How deep containers may mount containers when a download resolves them."""

_WINDOWS_RESERVED: Final = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{device}{digit}" for device in ("com", "lpt") for digit in "123456789\u00b9\u00b2\u00b3"]
)
_FORBIDDEN_CHARACTERS: Final = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def check_path_component(component: str) -> str:
    """Raise DecodeError unless `component` is a safe file or folder name on every OS."""
    if not component:
        raise DecodeError("empty path component")
    if component in (".", ".."):
        raise DecodeError(f"path component {component!r} would escape the folder")
    if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise DecodeError(f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    if _FORBIDDEN_CHARACTERS.search(component):
        raise DecodeError(f"path component {component!r} has a character not allowed in names")
    if component[-1] in ". ":
        raise DecodeError(f"path component {component!r} ends with a dot or space")
    if component.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_RESERVED:
        raise DecodeError(f"path component {component!r} is a reserved name on Windows")
    if unicodedata.normalize("NFC", component) != component:
        raise DecodeError(f"path component {component!r} is not NFC-normalised")
    return component


def check_path(path: Sequence[str]) -> tuple[str, ...]:
    if not path:
        raise DecodeError("empty path")
    if len(path) > MAX_PATH_DEPTH:
        raise DecodeError(f"path deeper than {MAX_PATH_DEPTH} levels")
    for component in path:
        check_path_component(component)
    if sum(len(part.encode("utf-8")) + 1 for part in path) > MAX_PATH_BYTES:
        raise DecodeError(f"path longer than {MAX_PATH_BYTES} bytes")
    return tuple(path)


@attrs.frozen
class PathKind:
    """Schema kind for a relative path: a list of safe components."""

    def check(self, value: Any, where: str) -> tuple[str, ...]:
        components = ListOf(Text(max_bytes=MAX_COMPONENT_BYTES), MAX_PATH_DEPTH).check(value, where)
        try:
            return check_path(components)
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from exc

    def to_wire(self, value: Any) -> Any:
        return list(value)


def path_sort_key(path: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in path)


@attrs.frozen
class FileEntry(Record):
    path: tuple[str, ...] = attrs.field(metadata=spec(PathKind()))
    length: int = attrs.field(metadata=spec(UInt(maximum=MAX_FILE_LENGTH)))
    root: bytes | None = attrs.field(default=None, metadata=spec(Optional(FixedBytes(32))))
    """The BEP 52 Merkle root; absent exactly when the file is empty."""


@attrs.frozen
class MountedContainer(Record):
    path: tuple[str, ...] = attrs.field(metadata=spec(PathKind()))
    id: bytes = attrs.field(metadata=spec(FixedBytes(32)))


@attrs.frozen
class Manifest(Record):
    """The hashed part of a container. Build with `Manifest.build` (it sorts and checks)."""

    version: int = attrs.field(metadata=spec(UInt(minimum=1, maximum=MANIFEST_VERSION)))
    name: str = attrs.field(metadata=spec(Text(max_bytes=MAX_COMPONENT_BYTES, min_bytes=1)))
    """The folder the container unpacks into (also its name when nothing better is known)."""
    piece_length: int = attrs.field(metadata=spec(UInt(maximum=1 << 26)))
    files: tuple[FileEntry, ...] = attrs.field(metadata=spec(ListOf(Nested(FileEntry), MAX_FILES)))
    containers: tuple[MountedContainer, ...] = attrs.field(
        metadata=spec(ListOf(Nested(MountedContainer), MAX_SUBCONTAINERS))
    )
    replaces: bytes | None = attrs.field(default=None, metadata=spec(Optional(FixedBytes(32))))

    @classmethod
    def build(
        cls,
        *,
        name: str,
        piece_length: int,
        files: Iterable[FileEntry],
        containers: Iterable[MountedContainer] = (),
        replaces: bytes | None = None,
    ) -> Manifest:
        """A manifest with entries in canonical order, checked as a decoder would."""
        manifest = cls(
            version=MANIFEST_VERSION,
            name=name,
            piece_length=piece_length,
            files=tuple(sorted(files, key=lambda f: path_sort_key(f.path))),
            containers=tuple(sorted(containers, key=lambda c: path_sort_key(c.path))),
            replaces=replaces,
        )
        manifest.check()
        return manifest

    def check(self) -> None:
        """The rules the schema cannot express (raises DecodeError)."""
        check_path_component(self.name)
        check_piece_length(self.piece_length)
        for kind, entries in (("files", self.files), ("containers", self.containers)):
            keys = [path_sort_key(entry.path) for entry in entries]
            if keys != sorted(keys):
                raise DecodeError(f"{kind} are not in canonical (sorted) order")
        for path in [entry.path for entry in self.files] + [c.path for c in self.containers]:
            check_path(path)
        for entry in self.files:
            if (entry.length == 0) != (entry.root is None):
                raise DecodeError(
                    f"file {'/'.join(entry.path)}: a root is required exactly for non-empty files"
                )
        check_no_collisions([e.path for e in self.files] + [c.path for c in self.containers])

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        # Encoding checks every field again (to_wire), which dominates adding many
        # containers; a frozen manifest's bytes never change, so compute them once.
        return pack_canonical(to_wire(self))

    @functools.cached_property
    def id(self) -> bytes:
        return container_id(self.encode())

    @property
    def total_length(self) -> int:
        return sum(entry.length for entry in self.files)


def container_id(manifest_bytes: bytes) -> bytes:
    return hashlib.sha256(manifest_bytes).digest()


def check_no_collisions(paths: Sequence[tuple[str, ...]]) -> None:
    """No two entries at the same place, even case-insensitively, and no entry inside a
    path another entry occupies as a file."""
    seen: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    for path in paths:
        folded = tuple(part.casefold() for part in path)
        if folded in seen:
            raise DecodeError(f"two entries at {'/'.join(path)} (names differing only in case?)")
        seen.add(folded)
        for depth in range(1, len(folded)):
            folders.add(folded[:depth])
    clash = seen & folders
    if clash:
        raise DecodeError(f"{'/'.join(sorted(clash)[0])} is both a file and a folder")


def decode_manifest(data: bytes) -> Manifest:
    """Strictly decode manifest bytes (check the id separately: it is their SHA-256)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise DecodeError(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
    manifest = from_wire(Manifest, unpack_canonical(data, max_container_items=MAX_FILES))
    manifest.check()
    return manifest


# -- names and metadata: beside the manifest, not hashed into the id ---------------------


@attrs.frozen
class UrlSource(Record):
    """A URL the container (or a file of it) is found at, with what the server said last."""

    url: str = attrs.field(metadata=spec(Text(max_bytes=4096, min_bytes=1)))
    last_modified: str | None = attrs.field(
        default=None, metadata=spec(Optional(Text(max_bytes=128)))
    )
    etag: str | None = attrs.field(default=None, metadata=spec(Optional(Text(max_bytes=1024))))
    length: int | None = attrs.field(default=None, metadata=spec(Optional(UInt())))


@attrs.frozen
class Metadata(Record):
    title: str | None = attrs.field(default=None, metadata=spec(Optional(Text(max_bytes=1024))))
    description: str | None = attrs.field(
        default=None, metadata=spec(Optional(Text(max_bytes=65536, multiline=True)))
    )
    license: str | None = attrs.field(default=None, metadata=spec(Optional(Text(max_bytes=256))))
    categories: tuple[str, ...] = attrs.field(
        default=(), metadata=spec(ListOf(Text(max_bytes=128, min_bytes=1), 64))
    )
    tags: tuple[str, ...] = attrs.field(
        default=(), metadata=spec(ListOf(Text(max_bytes=128, min_bytes=1), 256))
    )


def infohash_name(kind: str, digest: bytes) -> str:
    """`btih:<hex>` (v1, SHA-1) or `btmh:1220<hex>` (v2, a SHA-256 multihash, as magnets)."""
    if kind == "btih" and len(digest) == 20:
        return f"btih:{digest.hex()}"
    if kind == "btmh" and len(digest) == HASH_SIZE:
        return f"btmh:1220{digest.hex()}"
    raise ValueError(f"not a {kind} infohash")
