"""Where a node keeps its state, and the identity key file inside it.

Every command resolves the data directory the same way: the `--data-dir` flag, else the
`KINSWARM_DATA_DIR` environment variable, else the platform's per-user data directory
(platformdirs: `~/.local/share/kinswarm` on Linux). The directory is created owner-only.

The identity key file holds the node's 32-byte secret seed. It is created owner-readable only
(0600), written atomically (temporary file, fsync, rename) so a crash never leaves half a key,
and refused on load if others can read it, as ssh does with private keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

import platformdirs

from wire.identity import SEED_LEN, LocalIdentity

DATA_DIR_ENV: Final = "KINSWARM_DATA_DIR"
DOWNLOAD_DIR_ENV: Final = "KINSWARM_DOWNLOAD_DIR"
IDENTITY_FILE: Final = "identity.key"
_IDENTITY_HEADER: Final = "kinswarm-identity-seed-v1"


class DataDirError(Exception):
    """The data directory or a file in it is unusable; the message says how to fix it."""


def resolve_data_dir(flag: str | os.PathLike[str] | None) -> Path:
    """The data directory chosen by flag, environment or platform default (not created)."""
    if flag is not None:
        return Path(flag).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_data_dir("kinswarm", appauthor=False))


def resolve_download_dir(flag: str | os.PathLike[str] | None) -> Path:
    """Where downloads go: the flag, else `KINSWARM_DOWNLOAD_DIR`, else the user's Downloads."""
    if flag is not None:
        return Path(flag).expanduser()
    from_env = os.environ.get(DOWNLOAD_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_downloads_dir())


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory (owner-only) if missing and return it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise DataDirError(f"data directory {path} exists but is not a directory")
    return path


def _write_private_file_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_identity(data_dir: Path) -> LocalIdentity:
    """Load the node identity from `data_dir`. Raises DataDirError if missing or unsafe."""
    path = data_dir / IDENTITY_FILE
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise DataDirError(f"no identity in {data_dir}; run `kinswarm id` to create one") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataDirError(f"cannot read identity file {path}: {exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DataDirError(
            f"identity file {path} is accessible by other users; run `chmod 600 {path}`"
        )
    lines = text.split()
    if len(lines) != 2 or lines[0] != _IDENTITY_HEADER:
        raise DataDirError(f"identity file {path} is not a kinswarm identity")
    try:
        seed = bytes.fromhex(lines[1])
    except ValueError as exc:
        raise DataDirError(f"identity file {path} is corrupt: {exc}") from exc
    if len(seed) != SEED_LEN:
        raise DataDirError(f"identity file {path} is corrupt: wrong seed length")
    return LocalIdentity(seed)


def load_or_create_identity(data_dir: Path, *, new_seed: bytes | None = None) -> LocalIdentity:
    """Load the identity, creating it (from `new_seed`, else os.urandom) on first use."""
    ensure_data_dir(data_dir)
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        seed = new_seed if new_seed is not None else os.urandom(SEED_LEN)
        content = f"{_IDENTITY_HEADER}\n{seed.hex()}\n".encode("ascii")
        try:
            _write_private_file_atomically(path, content)
        except FileExistsError:
            pass  # another process created it between our check and our write: use theirs
        except OSError as exc:
            raise DataDirError(f"cannot write identity file {path}: {exc.strerror}") from exc
    return load_identity(data_dir)


def read_capability_key(path: Path) -> bytes:
    """Read a network capability key file: 64 hex digits (whitespace ignored)."""
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataDirError(f"cannot read network key file {path}: {exc}") from exc
    if len(key) != 32:
        raise DataDirError(f"network key file {path} must hold 32 bytes as 64 hex digits")
    return key
