"""`kinswarm add | info | verify | export | import`, as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from wire.merkle import MerkleTree


def kinswarm(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def info(name: str, data_dir: Path) -> dict[str, Any]:
    result = json.loads(kinswarm("info", name, "--json", data_dir=data_dir).stdout)
    assert isinstance(result, dict)
    return result


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "field recordings"
    (folder / "day 1").mkdir(parents=True)
    (folder / "day 1" / "dawn.wav").write_bytes(os.urandom(700_000))
    (folder / "notes.txt").write_bytes(b"birds at dawn\n")
    (folder / "empty.txt").write_bytes(b"")
    return folder


def test_add_info_verify_and_every_kind_of_name(tmp_path: Path, dataset: Path) -> None:
    data_dir = tmp_path / "node"
    added = json.loads(
        kinswarm(
            "add",
            str(dataset),
            "--title",
            "Dawn chorus",
            "--tag",
            "birds",
            "--url",
            "https://example.org/dawn.tar",
            "--json",
            data_dir=data_dir,
        ).stdout
    )
    assert added["status"] == "added"
    container_id = added["id"]
    shown = info(container_id, data_dir)
    assert shown["id"] == container_id
    assert shown["state"] == "complete"
    assert shown["metadata"] == {"title": "Dawn chorus", "tags": ["birds"]}
    assert "https://example.org/dawn.tar" in shown["names"]
    assert f"ks:{container_id}" in shown["names"]
    files = {f["path"]: f for f in shown["files"]}
    wav = (dataset / "day 1" / "dawn.wav").read_bytes()
    assert files["day 1/dawn.wav"]["root"] == MerkleTree.from_data(wav).root.hex()
    assert files["day 1/dawn.wav"]["length"] == len(wav)
    assert files["empty.txt"]["root"] is None
    # Every name finds it: id, ks:, file root, URL, container name, magnet.
    for name in (
        f"ks:{container_id}",
        files["notes.txt"]["root"],
        "https://example.org/dawn.tar",
        "field recordings",
        shown["magnet"],
    ):
        assert info(name, data_dir)["id"] == container_id, name
    assert "all" in kinswarm("verify", container_id, data_dir=data_dir).stdout
    again = json.loads(kinswarm("add", str(dataset), "--json", data_dir=data_dir).stdout)
    assert again["status"] == "already added" and again["id"] == container_id


def test_verify_finds_damage_done_behind_our_back(tmp_path: Path, dataset: Path) -> None:
    data_dir = tmp_path / "node"
    kinswarm("add", str(dataset), data_dir=data_dir)
    wav = dataset / "day 1" / "dawn.wav"
    data = bytearray(wav.read_bytes())
    data[300_000] ^= 0xFF
    wav.write_bytes(bytes(data))
    result = kinswarm("verify", "field recordings", data_dir=data_dir, check=False)
    assert result.returncode == 1
    assert "1 damaged" in result.stdout
    held = {f["path"]: f for f in info("field recordings", data_dir)["files"]}
    wav_entry = held["day 1/dawn.wav"]
    assert wav_entry["pieces_held"] == wav_entry["pieces"] - 1  # never served again


def test_export_is_a_hybrid_torrent_libtorrent_agrees_with(tmp_path: Path, dataset: Path) -> None:
    data_dir = tmp_path / "node"
    kinswarm("add", str(dataset), "--url", "https://example.org/dawn.tar", data_dir=data_dir)
    out = tmp_path / "dawn.torrent"
    kinswarm("export", "field recordings", "--torrent", str(out), data_dir=data_dir)
    torrent = lt.torrent_info(out.read_bytes())
    hashes = torrent.info_hashes()
    names = info("field recordings", data_dir)["names"]
    assert f"btih:{hashes.v1}" in names
    assert f"btmh:1220{hashes.v2}" in names
    # BEP 19: a multi-file torrent's web seed is a folder URL; libtorrent adds the slash.
    seeds = [seed.rstrip("/") for seed in _web_seeds(torrent)]
    assert seeds == ["https://example.org/dawn.tar"]
    # The infohashes are now names of the container.
    assert info(f"btih:{hashes.v1}", data_dir)["name"] == "field recordings"


def _web_seeds(torrent: Any) -> list[str]:
    with pytest.warns(DeprecationWarning):
        return [str(seed["url"]) for seed in torrent.web_seeds()]


def make_torrent(folder: Path, flags: int) -> bytes:
    storage = lt.file_storage()
    lt.add_files(storage, str(folder))
    creator = lt.create_torrent(storage, 32768, flags=flags)
    lt.set_piece_hashes(creator, str(folder.parent))
    return bytes(lt.bencode(creator.generate()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_import_a_hybrid_torrent_without_data_starts_a_download(
    tmp_path: Path, dataset: Path
) -> None:
    torrent = tmp_path / "hybrid.torrent"
    torrent.write_bytes(make_torrent(dataset, 0))
    downloads = tmp_path / "downloads"
    data_dir = tmp_path / "node"
    kinswarm("import", str(torrent), "--download-dir", str(downloads), data_dir=data_dir)
    hashes = lt.torrent_info(torrent.read_bytes()).info_hashes()
    shown = info(f"btih:{hashes.v1}", data_dir)
    assert shown["state"] == "partial"
    assert f"btmh:1220{hashes.v2}" in shown["names"]
    assert str(downloads) in shown["location"]
    # Same files, same roots as adding the real folder gives (the container ids differ:
    # libtorrent chose 32 KiB pieces, we choose 16 KiB for this size).
    local = tmp_path / "local"
    kinswarm("add", str(dataset), data_dir=local)
    ours = {f["path"]: f["root"] for f in info("field recordings", local)["files"]}
    assert {f["path"]: f["root"] for f in shown["files"]} == ours


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_import_a_v1_torrent_with_its_data(tmp_path: Path, dataset: Path) -> None:
    torrent = tmp_path / "v1.torrent"
    torrent.write_bytes(make_torrent(dataset, lt.create_torrent.v1_only))
    data_dir = tmp_path / "node"
    without = kinswarm("import", str(torrent), data_dir=data_dir, check=False)
    assert without.returncode == 1 and "v1-only" in without.stderr
    kinswarm("import", str(torrent), "--data", str(dataset), data_dir=data_dir)
    v1 = lt.torrent_info(torrent.read_bytes()).info_hashes().v1
    shown = info(f"btih:{v1}", data_dir)
    assert shown["state"] == "complete"
    wav = (dataset / "day 1" / "dawn.wav").read_bytes()
    roots = {f["path"]: f["root"] for f in shown["files"]}
    assert roots["day 1/dawn.wav"] == MerkleTree.from_data(wav).root.hex()
    # Data that is not the torrent's content is refused.
    (dataset / "notes.txt").write_bytes(b"birds at dusk\n")
    other = tmp_path / "node2"
    wrong = kinswarm("import", str(torrent), "--data", str(dataset), data_dir=other, check=False)
    assert wrong.returncode == 1 and "does not match" in wrong.stderr


def test_unknown_names_and_bad_input_are_one_line_errors(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    for args in (
        ("info", "nothing-by-this-name"),
        ("info", "magnet:?xt=urn:btih:zzzz"),
        ("import", str(tmp_path / "missing.torrent")),
        ("add", str(tmp_path / "missing")),
    ):
        result = kinswarm(*args, data_dir=data_dir, check=False)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"kinswarm {args[0]}:"), result.stderr
    garbage = tmp_path / "garbage.torrent"
    garbage.write_bytes(b"d4:infoi1ee")
    result = kinswarm("import", str(garbage), data_dir=data_dir, check=False)
    assert result.returncode == 1 and "not a valid .torrent" in result.stderr
