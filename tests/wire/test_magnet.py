"""Magnet links: every topic kind, repeated hints, malformed input, and libtorrent's view."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import DecodeError
from wire.magnet import Magnet, magnet_uri, parse_magnet

BTIH = hashlib.sha1(b"v1").digest()
BTMH = hashlib.sha256(b"v2").digest()
CONTAINER = hashlib.sha256(b"manifest").digest()


def test_btih_hex_in_either_case() -> None:
    lower = parse_magnet(f"magnet:?xt=urn:btih:{BTIH.hex()}")
    upper = parse_magnet(f"magnet:?xt=urn:btih:{BTIH.hex().upper()}")
    assert lower == upper == Magnet(btih=BTIH)
    assert lower.names() == [f"btih:{BTIH.hex()}"]


def test_btih_base32() -> None:
    encoded = base64.b32encode(BTIH).decode()
    assert len(encoded) == 32
    assert parse_magnet(f"magnet:?xt=urn:btih:{encoded}").btih == BTIH
    assert parse_magnet(f"magnet:?xt=urn:btih:{encoded.lower()}").btih == BTIH


def test_btmh_keeps_the_digest_without_the_multihash_prefix() -> None:
    magnet = parse_magnet(f"magnet:?xt=urn:btmh:1220{BTMH.hex()}")
    assert magnet.btmh == BTMH
    assert magnet.names() == [f"btmh:1220{BTMH.hex()}"]


def test_kinswarm_container_id() -> None:
    magnet = parse_magnet(f"magnet:?xt=urn:kinswarm:{CONTAINER.hex()}&dn=photos")
    assert magnet.kinswarm_id == CONTAINER
    assert magnet.display_name == "photos"
    assert magnet.names() == [f"ks:{CONTAINER.hex()}"]


def test_hybrid_with_every_hint() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{BTIH.hex()}"
        f"&xt=urn:btmh:1220{BTMH.hex()}"
        f"&xt.1=urn:kinswarm:{CONTAINER.hex()}"
        "&dn=My+Data%20set"
        "&xl=12345"
        "&tr=udp%3A%2F%2Ftracker.example%3A6969%2Fannounce"
        "&tr=http://t2.example/announce"
        "&tr.1=udp%3A%2F%2Ftracker.example%3A6969%2Fannounce"  # a duplicate
        "&ws=https%3A%2F%2Fmirror.example%2Fdata%2F"
        "&ws=http://m2.example/d%20x"
        "&x.pe=127.0.0.1:6881"  # a hint we do not use
    )
    magnet = parse_magnet(uri)
    assert magnet.btih == BTIH
    assert magnet.btmh == BTMH
    assert magnet.kinswarm_id == CONTAINER
    assert magnet.display_name == "My Data set"
    assert magnet.exact_length == 12345
    assert magnet.trackers == (
        "udp://tracker.example:6969/announce",
        "http://t2.example/announce",
    )
    assert magnet.web_seeds == ("https://mirror.example/data/", "http://m2.example/d x")
    assert magnet.names() == [
        f"btih:{BTIH.hex()}",
        f"btmh:1220{BTMH.hex()}",
        f"ks:{CONTAINER.hex()}",
        "https://mirror.example/data/",
        "http://m2.example/d x",
    ]
    assert parse_magnet(magnet.uri()) == magnet


def test_unknown_topics_are_kept_as_text() -> None:
    magnet = parse_magnet(
        "magnet:?xt=urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C"
        f"&xt=urn:ed2k:354B15E68FB8F36D7CD88FF94116CDC1&xt=urn:btih:{BTIH.hex()}"
    )
    assert magnet.btih == BTIH
    assert magnet.other_xt == (
        "urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C",
        "urn:ed2k:354B15E68FB8F36D7CD88FF94116CDC1",
    )
    assert parse_magnet(magnet.uri()) == magnet
    only_unknown = parse_magnet("magnet:?xt=urn:tree:tiger:ABC")
    assert only_unknown.other_xt == ("urn:tree:tiger:ABC",)
    assert only_unknown.names() == []


def test_the_same_topic_twice_is_fine() -> None:
    uri = f"magnet:?xt=urn:btih:{BTIH.hex()}&xt=urn:btih:{base64.b32encode(BTIH).decode()}"
    assert parse_magnet(uri).btih == BTIH


def test_container_magnet_built_and_parsed() -> None:
    uri = magnet_uri(
        kinswarm_id=CONTAINER,
        display_name="a & b = c?",
        web_seeds=["https://example.org/a b/", "https://example.org/a b/"],
    )
    assert uri.startswith(f"magnet:?xt=urn:kinswarm:{CONTAINER.hex()}&dn=")
    magnet = parse_magnet(uri)
    assert magnet == Magnet(
        kinswarm_id=CONTAINER,
        display_name="a & b = c?",
        web_seeds=("https://example.org/a b/",),
    )


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://example.com/?xt=urn:btih:" + "a" * 40, "does not start"),
        ("magnet:?dn=nothing", "no exact topic"),
        ("magnet:?", "no exact topic"),
        ("magnet:?xt=urn:btih:" + "a" * 39, "40 hex"),
        ("magnet:?xt=urn:btih:" + "a" * 41, "40 hex"),
        ("magnet:?xt=urn:btih:" + "g" * 40, "40 hex"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "base32"),  # '1' is not in the base32 alphabet
        ("magnet:?xt=urn:btih:", "no value"),
        ("magnet:?xt=urn:btih", "no value"),
        ("magnet:?xt=urn:btmh:1220" + "a" * 63, "multihash in hex"),
        ("magnet:?xt=urn:btmh:1220" + "a" * 62, "SHA2-256"),
        ("magnet:?xt=urn:btmh:1114" + "a" * 40, "SHA2-256"),
        ("magnet:?xt=urn:btmh:" + "a" * 64, "SHA2-256"),
        ("magnet:?xt=urn:kinswarm:" + "a" * 63, "64 hex"),
        ("magnet:?xt=urn:kinswarm:" + "z" * 64, "64 hex"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&xt=urn:btih:{'0' * 40}", "two different btih"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&dn=a&dn=b", "more than one dn"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&xl=12a", "xl"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&xl=-5", "xl"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&xl=1&xl=1", "more than one xl"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&xl=99999999999999999999", "xl"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&dn=%ff%fe", "UTF-8"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&dn=a%0Ab", "control"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&tr=", "empty tr"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&tr=not-a-url", "not a URL"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&ws=example.com", "not a URL"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}&dn", "no value"),
        (f"magnet:?xt=urn:btih:{BTIH.hex()}#frag", "fragment"),
        ("magnet:?xt=urn:btih:" + "a" * 40 + "&tr=" + "x" * 70000, "longer than"),
    ],
)
def test_malformed_magnets_are_rejected(uri: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_magnet(uri)


def test_building_refuses_wrong_digest_sizes() -> None:
    with pytest.raises(ValueError):
        magnet_uri(btih=b"\x00" * 32)
    with pytest.raises(ValueError):
        magnet_uri(btmh=b"\x00" * 20)
    with pytest.raises(ValueError):
        magnet_uri(kinswarm_id=b"\x00" * 20)
    with pytest.raises(ValueError):
        magnet_uri(display_name="no topic")


_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"),
    min_size=1,
    max_size=20,
)
_urls = st.builds(
    lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(["http", "udp"]), _text
)


@given(
    st.none() | st.binary(min_size=20, max_size=20),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | st.binary(min_size=32, max_size=32),
    st.none() | _text,
    st.lists(_urls, max_size=3, unique=True),
    st.lists(_urls, max_size=3, unique=True),
    st.none() | st.integers(0, (1 << 63) - 1),
)
def test_build_then_parse_round_trips(
    btih: bytes | None,
    btmh: bytes | None,
    container: bytes | None,
    name: str | None,
    trackers: list[str],
    seeds: list[str],
    length: int | None,
) -> None:
    if btih is None and btmh is None and container is None:
        btih = BTIH
    expected = Magnet(
        btih=btih,
        btmh=btmh,
        kinswarm_id=container,
        display_name=name,
        trackers=tuple(trackers),
        web_seeds=tuple(seeds),
        exact_length=length,
    )
    assert parse_magnet(expected.uri()) == expected


@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_decode_error(text: str) -> None:
    for candidate in (text, "magnet:?" + text, f"magnet:?xt=urn:btih:{BTIH.hex()}&" + text):
        try:
            parse_magnet(candidate)
        except DecodeError:
            pass


def _hybrid_torrent(tmp_path: Path) -> bytes:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a" * 40000)
    (folder / "b.bin").write_bytes(b"b" * 100)
    creator = lt.create_torrent(lt.list_files(str(folder)), 16384)
    creator.add_tracker("udp://tracker.example:6969/announce", 0)
    creator.add_url_seed("http://mirror.example/pub/")
    lt.set_piece_hashes(creator, str(tmp_path))
    return lt.bencode(creator.generate())


def test_libtorrent_magnets_parse(tmp_path: Path) -> None:
    info = lt.torrent_info(_hybrid_torrent(tmp_path))
    hashes = info.info_hashes()
    magnet = parse_magnet(lt.make_magnet_uri(info))
    assert magnet.btih == hashes.v1.to_bytes()
    assert magnet.btmh == hashes.v2.to_bytes()
    assert magnet.display_name == "data"
    assert magnet.trackers == ("udp://tracker.example:6969/announce",)
    assert magnet.web_seeds == ("http://mirror.example/pub/",)
    assert magnet.names()[:2] == [
        f"btih:{hashes.v1.to_bytes().hex()}",
        f"btmh:1220{hashes.v2.to_bytes().hex()}",
    ]


def test_libtorrent_parses_our_magnets() -> None:
    uri = magnet_uri(
        btih=BTIH,
        btmh=BTMH,
        kinswarm_id=CONTAINER,
        display_name="my data & more",
        trackers=["udp://tracker.example:6969/announce"],
        web_seeds=["https://mirror.example/a b/"],
    )
    params = lt.parse_magnet_uri(uri)
    assert params.info_hashes.v1.to_bytes() == BTIH
    assert params.info_hashes.v2.to_bytes() == BTMH
    assert params.name == "my data & more"
    assert list(params.trackers) == ["udp://tracker.example:6969/announce"]
    assert list(params.url_seeds) == ["https://mirror.example/a b/"]
