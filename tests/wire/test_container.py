"""Container manifests: canonical, strict, and safe to unpack on any OS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.canonical import pack_canonical
from wire.container import (
    FileEntry,
    Manifest,
    Metadata,
    MountedContainer,
    UrlSource,
    check_path_component,
    decode_manifest,
    infohash_name,
)
from wire.errors import DecodeError, ProtocolError
from wire.merkle import MerkleTree
from wire.schema import from_wire, to_wire

ROOT = MerkleTree.from_data(b"content").root


def _is_safe(name: str) -> bool:
    try:
        check_path_component(name)
    except DecodeError:
        return False
    return True


safe_names = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), max_codepoint=0x2FF),
    min_size=1,
    max_size=12,
).filter(_is_safe)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    paths = draw(st.lists(st.lists(safe_names, min_size=1, max_size=3), max_size=8))
    files: dict[tuple[str, ...], FileEntry] = {}
    folded: set[tuple[str, ...]] = set()
    for path in map(tuple, paths):
        key = tuple(p.casefold() for p in path)
        prefixes = {key[:i] for i in range(1, len(key))}
        if key in folded or prefixes & folded or any(f[: len(key)] == key for f in folded):
            continue
        folded.add(key)
        length = draw(st.integers(0, 10**12))
        files[path] = FileEntry(path, length, ROOT if length else None)
    return Manifest.build(
        name=draw(safe_names),
        piece_length=draw(st.sampled_from([16384, 1 << 20, 1 << 24])),
        files=files.values(),
        replaces=draw(st.none() | st.binary(min_size=32, max_size=32)),
    )


@settings(max_examples=60)
@given(manifests())
def test_manifest_round_trips_and_the_id_is_stable(manifest: Manifest) -> None:
    data = manifest.encode()
    decoded = decode_manifest(data)
    assert decoded == manifest
    assert decoded.id == manifest.id


@settings(max_examples=60)
@given(manifests(), st.data())
def test_mutated_manifests_only_raise_protocol_errors(
    manifest: Manifest, data: st.DataObject
) -> None:
    encoded = bytearray(manifest.encode())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_manifest(bytes(encoded))
    except ProtocolError:
        pass


@given(st.binary(max_size=300))
def test_garbage_only_raises_protocol_errors(data: bytes) -> None:
    try:
        decode_manifest(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        (".", "escape"),
        ("..", "escape"),
        ("a/b", "character"),
        ("a\\b", "character"),
        ("C:", "character"),
        ("x\x00y", "character"),
        ("tab\there", "character"),
        ("what?", "character"),
        ("trailing.", "dot or space"),
        ("trailing ", "dot or space"),
        ("CON", "reserved"),
        ("nul.txt", "reserved"),
        ("Com1.log", "reserved"),
        ("lpt9", "reserved"),
        ("e\u0301", "NFC"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_unsafe_path_components_are_refused(name: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        check_path_component(name)


@pytest.mark.parametrize("name", ["normal.txt", "Ünïcødé", "conference.pdf", ".hidden", "a b"])
def test_ordinary_names_are_fine(name: str) -> None:
    assert check_path_component(name) == name


def raw_manifest(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "version": 1,
        "name": "set",
        "piece_length": 16384,
        "files": [{"path": ["a"], "length": 7, "root": ROOT}],
        "containers": [],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"files": [{"path": ["..", "etc"], "length": 1, "root": ROOT}]}, "escape"),
        ({"files": [{"path": [], "length": 1, "root": ROOT}]}, "empty path"),
        ({"files": [{"path": ["a"], "length": 1}]}, "root is required"),
        ({"files": [{"path": ["a"], "length": 0, "root": ROOT}]}, "root is required"),
        ({"files": [{"path": ["b"], "length": 0}, {"path": ["a"], "length": 0}]}, "sorted"),
        ({"files": [{"path": ["A"], "length": 0}, {"path": ["a"], "length": 0}]}, "case"),
        ({"files": [{"path": ["a"], "length": 0}, {"path": ["a", "b"], "length": 0}]}, "folder"),
        ({"piece_length": 20000}, "power of two"),
        ({"version": 2}, "outside"),
        ({"name": "../x"}, "character"),
        ({"files": [{"path": ["x"] * 33, "length": 0}]}, "items|deeper"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_bad_manifests_are_refused_with_a_reason(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_manifest(pack_canonical(raw_manifest(**overrides)))


def test_nested_containers_and_replaces() -> None:
    child = Manifest.build(name="child", piece_length=16384, files=[FileEntry(("c",), 0)])
    parent = Manifest.build(
        name="parent",
        piece_length=16384,
        files=[FileEntry(("readme",), 7, ROOT)],
        containers=[MountedContainer(("data", "child"), child.id)],
        replaces=bytes(32),
    )
    assert decode_manifest(parent.encode()) == parent
    with pytest.raises(DecodeError, match="both a file and a folder"):
        Manifest.build(
            name="p",
            piece_length=16384,
            files=[FileEntry(("data",), 0)],
            containers=[MountedContainer(("data", "child"), child.id)],
        )


def test_names_and_metadata_round_trip() -> None:
    source = UrlSource(
        "https://example.org/set.tar", last_modified="Tue, 24 Nov 2026", etag='"x"', length=9
    )
    assert from_wire(UrlSource, to_wire(source)) == source
    meta = Metadata(title="Field recordings", description="Line one\nLine two", tags=("birds",))
    assert from_wire(Metadata, to_wire(meta)) == meta
    assert infohash_name("btih", bytes(20)) == "btih:" + "00" * 20
    assert infohash_name("btmh", bytes(32)) == "btmh:1220" + "00" * 32
    with pytest.raises(ValueError):
        infohash_name("btih", bytes(32))
