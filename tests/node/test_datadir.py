"""The data directory and the identity key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.datadir import (
    DATA_DIR_ENV,
    IDENTITY_FILE,
    DataDirError,
    load_identity,
    load_or_create_identity,
    read_capability_key,
    resolve_data_dir,
)


def test_identity_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path / "node")
    second = load_or_create_identity(tmp_path / "node")
    assert first.node_id == second.node_id
    mode = stat.S_IMODE((tmp_path / "node" / IDENTITY_FILE).stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "node").stat().st_mode) == 0o700
    assert not [p for p in (tmp_path / "node").iterdir() if p.name.endswith(".tmp")]


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    os.chmod(tmp_path / IDENTITY_FILE, 0o644)
    with pytest.raises(DataDirError, match="chmod 600"):
        load_identity(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["", "hello\n", "kinswarm-identity-seed-v1\nzz\n", "kinswarm-identity-seed-v1\nabcd\n"],
)
def test_corrupt_key_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / IDENTITY_FILE
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(DataDirError, match="identity"):
        load_identity(tmp_path)


def test_missing_identity_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="no identity"):
        load_identity(tmp_path)


def test_data_dir_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None).name == "kinswarm"


def test_capability_key_file(tmp_path: Path) -> None:
    good = tmp_path / "good.key"
    good.write_text("ab" * 32 + "\n")
    assert read_capability_key(good) == bytes([0xAB]) * 32
    bad = tmp_path / "bad.key"
    bad.write_text("ab" * 16)
    with pytest.raises(DataDirError, match="32 bytes"):
        read_capability_key(bad)
