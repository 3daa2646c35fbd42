"""Re-hashing a container's files on disk and making the held bits the truth.

Users edit, truncate, restore and delete files behind our back, and disks rot. `verify` reads
every piece of every file of one container and hashes it against the piece layer:

* a piece intact in this container's copies is held. If it was not held before (a download's
  bytes that landed without their commit, or a file the user put back), it is first copied
  into the root's other copies, re-verified on the way, so the invariant "every held piece is
  intact in every copy" still holds when it is marked;
* a piece not intact here is held no more, whatever the other copies hold (the invariant is
  about every copy), so the swarm fetches it again and it is written into every copy.

The new bits are committed in one transaction after every write is fsynced.
"""

from __future__ import annotations

from node.store.copies import Copy, OpenFiles, RootRow, copy_pieces
from node.store.index import Index
from node.store.pieces import bit_indices, empty_bits, has_bit, piece_matches, piece_size, set_bits
from node.store.records import FileReport, Progress, StoredFile, VerifyReport


def verify_container(
    index: Index, container_id: bytes, progress: Progress | None
) -> tuple[VerifyReport, list[bytes]]:
    """Verify one container; return the report and the roots whose held bits were rewritten."""
    files = index.files_of(container_id)
    total = sum(entry.length for entry in files)
    done = 0
    reports: list[FileReport] = []
    updates: dict[bytes, tuple[RootRow, bytes]] = {}
    unheld = newly_held = 0
    by_root: dict[bytes, list[StoredFile]] = {}
    for entry in files:
        if entry.root is not None:
            by_root.setdefault(entry.root, []).append(entry)
    with OpenFiles() as handles:
        for root, entries in by_root.items():
            row = index.require_root(root)
            good = set(range(row.count))
            for entry in entries:
                intact: set[int] = set()
                for number in range(row.count):
                    size = piece_size(row.length, row.piece_length, number)
                    data = handles.read(entry.disk_path, size, number * row.piece_length)
                    if data is not None and piece_matches(
                        data, number, row.length, row.piece_length, row.layer
                    ):
                        intact.add(number)
                    done += size
                    if progress is not None:
                        progress(done, total)
                lost = sorted(set(range(row.count)) - intact)
                good &= intact
                reports.append(
                    FileReport(
                        entry.index,
                        entry.path,
                        root,
                        row.piece_length,
                        row.count,
                        bad=tuple(i for i in lost if has_bit(row.held, i)),
                        missing=tuple(i for i in lost if not has_bit(row.held, i)),
                    )
                )
            was = set(bit_indices(row.held, row.count))
            gained = sorted(good - was)
            others = [copy for copy in index.copies(root) if copy.container_id != container_id]
            if gained and others:
                own = [Copy(container_id, entries[0].disk_path, partial=False)]
                gained = copy_pieces(handles, row, own, others, gained)
            now_held = (good & was) | set(gained)
            unheld += len(was - now_held)
            newly_held += len(now_held - was)
            updates[root] = (row, set_bits(empty_bits(row.count), now_held))
        handles.sync()
    with index.transaction():
        for row, bits in updates.values():
            index.update_held(row, bits)
    reports.sort(key=lambda report: report.index)
    return VerifyReport(container_id, tuple(reports), unheld, newly_held), list(updates)
