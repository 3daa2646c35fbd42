"""Moving a finished download into place, so that the index and the disk agree after a crash
at any instant.

A download lives in `<download dir>/.kinswarm-partial/<id hex>/<name>`, beside its
destination, so the move is one `rename` on one file system. The rename and the commit that
records the new location cannot be one atomic step, so the move is written down first:

1. pick the first free `<name>`, `<name> (2)`, ...; COMMIT it as the container's `moving_to`;
2. `mkdir` it (atomic and exclusive: the name is ours now, whoever else wants it); fsync the
   download dir;
3. rename the partial folder onto that empty folder (POSIX rename replaces an empty folder
   atomically); fsync the download dir and the partial folder's parent;
4. COMMIT the new location, `state = complete`, `moving_to = NULL`; remove the now empty
   partial folders.

`recover` (run when the store opens) looks at every download that has a `moving_to`:

* partial folder gone, destination holding the container's files → the rename happened and
  the crash came before step 4: redo step 4;
* partial folder still there → resume from step 2 (an empty destination is our reservation; a
  non-empty one means someone took the name meanwhile, so a new one is picked from step 1);
* neither → the user moved or deleted it: forget the intent, leave the download partial (and
  say so in the log; `verify` shows what is missing).

A download whose pieces are all held but that never reached step 1 is simply finished.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from node.store import disk
from node.store.index import Index
from wire.container import decode_manifest

log = logging.getLogger("kinswarm.store")

Phase = Callable[[str], None]


def finish(index: Index, container_id: bytes, phase: Phase) -> Path:
    """Move a complete download into place (steps 1-4); return its new folder."""
    name, source, target, destination = index.move_info(container_id)
    target.mkdir(parents=True, exist_ok=True)
    if destination is not None and not (
        disk.is_empty_folder(destination) or disk.reserve_folder(destination)
    ):
        destination = None  # someone took the name while we were down
    while destination is None:
        candidate = next(p for p in disk.destinations(target, name) if not os.path.lexists(p))
        with index.transaction():
            index.set_moving_to(container_id, candidate)
        phase("move-intent")
        if disk.reserve_folder(candidate):
            destination = candidate
    disk.fsync_dir(target)
    disk.move_onto_reserved(source, destination)
    disk.fsync_dir(target)
    disk.fsync_dir(source.parent)
    phase("moved")
    _commit_moved(index, container_id, source, destination)
    return destination


def recover(index: Index, phase: Phase) -> None:
    """Bring every interrupted move to an end (see the module docstring)."""
    for container_id, source, destination in index.downloads():
        try:
            if destination is not None:
                _recover_move(index, container_id, source, destination, phase)
            elif index.all_held(container_id):
                finish(index, container_id, phase)
        except OSError as exc:
            log.warning("could not finish download %s: %s", container_id.hex(), exc)


def _recover_move(
    index: Index, container_id: bytes, source: Path, destination: Path, phase: Phase
) -> None:
    if source.is_dir():
        finish(index, container_id, phase)
        return
    manifest = decode_manifest(index.manifest_bytes(container_id))
    if destination.is_dir() and disk.holds_files(
        destination, [(entry.path, entry.length) for entry in manifest.files]
    ):
        log.info("download %s was moved to %s before a crash", container_id.hex(), destination)
        disk.fsync_dir(destination.parent)
        _commit_moved(index, container_id, source, destination)
        return
    log.warning(
        "download %s: neither %s nor %s holds it; leaving it partial",
        container_id.hex(),
        source,
        destination,
    )
    with index.transaction():
        index.set_moving_to(container_id, None)


def _commit_moved(index: Index, container_id: bytes, source: Path, destination: Path) -> None:
    with index.transaction():
        index.set_moved(container_id, destination)
    disk.remove_empty_folders(source.parent, source.parent.parent)
