"""The store commands: `kinswarm add | info | verify | export | import`.

They work on the node's store (`<data dir>/index.sqlite3`) directly. Hashing runs on every
core with a progress bar (rich); everything else is quick. Errors are one line (`UserError`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from node.control import call_sync
from node.datadir import ensure_data_dir, resolve_data_dir, resolve_download_dir
from node.errors import UserError
from node.hashing import (
    ScanError,
    ScannedFile,
    build_container,
    choose_piece_length,
    hash_files,
    scan,
)
from node.store import AlreadyStored, ContainerRecord, Store, StoreError, StoreLocked
from wire.container import Manifest, Metadata
from wire.errors import DecodeError
from wire.magnet import magnet_uri, parse_magnet
from wire.merkle import check_piece_length
from wire.torrent import (
    Torrent,
    V1PieceHasher,
    export_hybrid_torrent,
    hybrid_v1_layout,
    manifest_from_torrent,
    manifest_from_v1_and_roots,
    parse_torrent,
)

READ_STEP_BYTES = 1024 * 1024


def register(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    add = commands.add_parser("add", help="hash a file or folder in place and share it")
    add_common(add)
    add.add_argument("path", type=Path, metavar="PATH")
    add.add_argument("--name", help="container name (default: the file or folder name)")
    add.add_argument("--url", action="append", default=[], help="a URL it is also found at")
    add.add_argument("--title")
    add.add_argument("--description")
    add.add_argument("--license")
    add.add_argument("--category", action="append", default=[])
    add.add_argument("--tag", action="append", default=[])
    add.add_argument("--replaces", metavar="NAME", help="the container this is a new version of")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(handler=command_add)

    info = commands.add_parser("info", help="show a container by any of its names")
    add_common(info)
    info.add_argument("name", metavar="NAME", help="id, file root, URL, btih:/btmh:, or magnet")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=command_info)

    verify = commands.add_parser("verify", help="re-hash a container's files on disk")
    add_common(verify)
    verify.add_argument("name", metavar="NAME")
    verify.set_defaults(handler=command_verify)

    export = commands.add_parser("export", help="write a container as a hybrid .torrent")
    add_common(export)
    export.add_argument("name", metavar="NAME")
    export.add_argument("--torrent", type=Path, required=True, metavar="OUT.torrent")
    export.add_argument("--tracker", action="append", default=[], help="announce URL to add")
    export.set_defaults(handler=command_export)

    import_ = commands.add_parser("import", help="import a .torrent (or look up a magnet)")
    add_common(import_)
    import_.add_argument("source", metavar="FILE.torrent|MAGNET")
    import_.add_argument(
        "--data", type=Path, metavar="PATH", help="the torrent's content already on disk"
    )
    import_.add_argument("--download-dir", type=Path, metavar="DIR")
    import_.set_defaults(handler=command_import)


# -- helpers --------------------------------------------------------------------------------


@contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Store]:
    data_dir = ensure_data_dir(resolve_data_dir(args.data_dir))
    try:
        store = Store(data_dir)
    except (StoreLocked, BlockingIOError) as exc:
        raise StoreBusy(
            f"the store in {data_dir} is in use by a running kinswarm node; "
            "`kinswarm add` goes through it, other store commands need it stopped"
        ) from exc
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    with store:
        yield store


class StoreBusy(UserError):
    """A running node holds the store (its lock file)."""


def resolve_one(store: Store, name: str) -> ContainerRecord:
    ids = resolve_all(store, name)
    if not ids:
        raise UserError(f"no container known by the name {name!r}")
    if len(ids) > 1:
        listed = ", ".join(container_id.hex()[:16] for container_id in ids)
        raise UserError(f"{name!r} names {len(ids)} containers ({listed}); use an id")
    record = store.get(ids[0])
    assert record is not None
    return record


def resolve_all(store: Store, name: str) -> list[bytes]:
    """Container ids known by `name`: an id, root, URL, infohash name, or a magnet link."""
    names = [name]
    if name.startswith("magnet:"):
        try:
            names = parse_magnet(name).names()
        except DecodeError as exc:
            raise UserError(f"bad magnet link: {exc}") from exc
    found: list[bytes] = []
    for candidate in names:
        try:
            ids = store.resolve(candidate)
        except (StoreError, ValueError):
            continue
        found.extend(i for i in ids if i not in found)
    if not found and not name.startswith("magnet:"):
        found = store.find_by_name(name)
    return found


def hashing_progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


def container_json(store: Store, record: ContainerRecord) -> dict[str, Any]:
    manifest = store.manifest(record.id)
    files = []
    for stored in store.files_of(record.id):
        entry: dict[str, Any] = {
            "path": "/".join(stored.path),
            "length": stored.length,
            "root": stored.root.hex() if stored.root else None,
        }
        if stored.root is not None:
            held = store.held(stored.root)
            entry["pieces"] = held.count
            entry["pieces_held"] = len(held)
        files.append(entry)
    names = [f"ks:{record.id.hex()}", *sorted(store.names_of(record.id))]
    return {
        "id": record.id.hex(),
        "name": record.name,
        "state": record.state,
        "location": str(record.location),
        "piece_length": record.piece_length,
        "total_length": record.total_length,
        "names": names,
        "files": files,
        "containers": [{"path": "/".join(c.path), "id": c.id.hex()} for c in manifest.containers],
        "replaces": manifest.replaces.hex() if manifest.replaces else None,
        "metadata": _metadata_json(record.metadata),
        "magnet": magnet_uri(kinswarm_id=record.id, display_name=record.name),
    }


def _metadata_json(metadata: Metadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("title", "description", "license"):
        value = getattr(metadata, key)
        if value is not None:
            out[key] = value
    if metadata.categories:
        out["categories"] = list(metadata.categories)
    if metadata.tags:
        out["tags"] = list(metadata.tags)
    return out


def print_container(console: Console, info: dict[str, Any]) -> None:
    console.print(f"[bold]{info['name']}[/bold]  ks:{info['id']}")
    table = Table(show_header=False, box=None)
    table.add_row("state", info["state"])
    table.add_row("location", info["location"])
    table.add_row("size", f"{info['total_length']:,} bytes in {len(info['files'])} files")
    table.add_row("piece length", f"{info['piece_length']:,}")
    for key, value in info["metadata"].items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    if info["replaces"]:
        table.add_row("replaces", info["replaces"])
    for name in info["names"][1:]:
        table.add_row("name", name)
    table.add_row("magnet", info["magnet"])
    console.print(table)
    files = Table("path", "length", "root", "held")
    for entry in info["files"][:200]:
        held = f"{entry.get('pieces_held', 0)}/{entry.get('pieces', 0)}" if entry["root"] else "-"
        files.add_row(entry["path"], f"{entry['length']:,}", (entry["root"] or "-")[:16], held)
    console.print(files)
    if len(info["files"]) > 200:
        console.print(f"… and {len(info['files']) - 200} more files (use --json)")


# -- add ----------------------------------------------------------------------------------


def command_add(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    path: Path = args.path.expanduser().resolve()
    metadata = Metadata(
        title=args.title,
        description=args.description,
        license=args.license,
        categories=tuple(args.category),
        tags=tuple(args.tag),
    )
    with contextlib.ExitStack() as stack:
        try:
            store = stack.enter_context(open_store(args))
        except StoreBusy:
            return _add_through_node(args, path, console)
        replaces = resolve_one(store, args.replaces).id if args.replaces else None
        with hashing_progress(console, args.json) as progress:
            task = progress.add_task("scanning", total=None)

            def scanned(files: list[ScannedFile]) -> None:
                progress.update(task, description="hashing", total=sum(f.length for f in files))

            try:
                manifest, layers, _ = trio.run(
                    lambda: build_container(
                        path,
                        run_blocking=trio.to_thread.run_sync,
                        name=args.name,
                        replaces=replaces,
                        progress=lambda done: progress.advance(task, done),
                        on_scanned=scanned,
                    )
                )
            except ScanError as exc:
                raise UserError(str(exc)) from exc
        location = path if path.is_dir() else path.parent
        try:
            record, new = store.share_in_place(
                manifest, layers, location, now=time.time(), metadata=metadata, urls=args.url
            )
            status = "added" if new else "already added"
        except StoreError as exc:
            raise UserError(str(exc)) from exc
        info = container_json(store, record)
    if args.json:
        print(json.dumps({"status": status, **info}, indent=2))
    else:
        console.print(f"{status}: [bold]{manifest.name}[/bold]")
        console.print(f"id      ks:{manifest.id.hex()}")
        console.print(f"files   {len(manifest.files)}, {manifest.total_length:,} bytes")
        console.print(f"magnet  {info['magnet']}")
    return 0


def _add_through_node(args: argparse.Namespace, path: Path, console: Console) -> int:
    """The running node holds the store: it hashes and adds the path, then seeds it."""
    if args.replaces:
        raise UserError("--replaces needs the node stopped (or use the node's id directly)")
    console.print("a node is running: it hashes and adds the path")
    result = call_sync(
        resolve_data_dir(args.data_dir),
        "swarm.add",
        {
            "path": str(path),
            "name": args.name,
            "title": args.title,
            "description": args.description,
            "license": args.license,
            "categories": args.category,
            "tags": args.tag,
            "urls": args.url,
        },
        timeout=24 * 3600,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"{result['status']}: [bold]{result['name']}[/bold]")
        console.print(f"id      ks:{result['id']}")
        console.print(f"files   {result['files']}, {result['bytes']:,} bytes")
    return 0


def _existing(store: Store, manifest: Manifest) -> ContainerRecord:
    record = store.get(manifest.id)
    if record is None:
        raise UserError("the store refused the container but does not have it")
    return record


# -- info, verify ---------------------------------------------------------------------------


def command_info(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        info = container_json(store, resolve_one(store, args.name))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_container(Console(), info)
    return 0


def command_verify(args: argparse.Namespace) -> int:
    console = Console()
    with open_store(args) as store:
        record = resolve_one(store, args.name)
        with hashing_progress(console, False) as progress:
            task = progress.add_task("verifying", total=record.total_length)
            report = store.verify(
                record.id,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    bad = sum(len(f.bad) for f in report.files)
    missing = sum(len(f.missing) for f in report.files)
    for file in report.files:
        if file.bad or file.missing:
            console.print(
                f"{'/'.join(file.path)}: {len(file.bad)} damaged, {len(file.missing)} missing "
                f"of {file.pieces} pieces"
            )
    if bad or missing:
        console.print(
            f"[red]{bad} damaged and {missing} missing pieces[/red]; they will be fetched again"
        )
        return 1
    console.print(f"[green]all {sum(f.pieces for f in report.files)} pieces verified[/green]")
    return 0


# -- export ---------------------------------------------------------------------------------


def command_export(args: argparse.Namespace) -> int:
    console = Console()
    with open_store(args) as store:
        record = resolve_one(store, args.name)
        if not store.is_complete(record.id):
            raise UserError("only a complete container can be exported (its data is needed)")
        manifest = store.manifest(record.id)
        disk_paths = {stored.path: stored.disk_path for stored in store.files_of(record.id)}
        layers = {
            entry.root: store.piece_layer(entry.root)
            for entry in manifest.files
            if entry.root is not None and entry.length > manifest.piece_length
        }
        try:
            layout = hybrid_v1_layout(manifest)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        with hashing_progress(console, False) as progress:
            task = progress.add_task("v1 piece hashes", total=manifest.total_length)
            pieces = _v1_pieces(
                layout, disk_paths, manifest.piece_length, lambda done: progress.advance(task, done)
            )
        urls = [name for name in store.names_of(record.id) if "://" in name]
        data = export_hybrid_torrent(
            manifest, layers, pieces, web_seeds=urls, trackers=args.tracker
        )
        torrent = parse_torrent(data)
        for name in torrent.names():
            if name.startswith(("btih:", "btmh:")):
                store.add_name(record.id, name)
    args.torrent.write_bytes(data)
    console.print(f"wrote {args.torrent}")
    for name in torrent.names():
        console.print(f"  {name}")
    return 0


def _v1_pieces(
    layout: Any,
    disk_paths: dict[tuple[str, ...], Path],
    piece_length: int,
    progress: Callable[[int], None],
) -> bytes:
    hasher = V1PieceHasher(piece_length)
    buffer = bytearray(READ_STEP_BYTES)
    view = memoryview(buffer)
    for entry in layout:
        if entry.pad:
            hasher.update_zeros(entry.length)
            continue
        with open(disk_paths[entry.path], "rb", buffering=0) as handle:
            remaining = entry.length
            while remaining:
                count = handle.readinto(view[: min(READ_STEP_BYTES, remaining)])
                if not count:
                    raise UserError(f"{disk_paths[entry.path]} is shorter than recorded")
                hasher.update(view[:count])
                remaining -= count
                progress(count)
    hasher.finish()
    return hasher.pieces()


# -- import ---------------------------------------------------------------------------------


def command_import(args: argparse.Namespace) -> int:
    console = Console()
    if args.source.startswith("magnet:"):
        return _import_magnet(args, console)
    try:
        torrent = parse_torrent(Path(args.source).expanduser().read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read {args.source}: {exc.strerror}") from exc
    except DecodeError as exc:
        raise UserError(f"{args.source} is not a valid .torrent: {exc}") from exc
    data: Path | None = args.data.expanduser().resolve() if args.data else None
    if data is not None:
        manifest = _manifest_checked_against_data(torrent, data, console)
    elif torrent.has_v2:
        manifest = manifest_from_torrent(torrent)
    else:
        raise UserError(
            "this is a v1-only torrent: its files' Merkle roots are unknown until the data is "
            "hashed. Give the data with --data PATH (downloading v1 torrents from their web "
            "seeds is not built yet)"
        )
    names = {name: None for name in torrent.names()}
    layers = {root: list(layer) for root, layer in torrent.piece_layers.items()}
    with open_store(args) as store:
        try:
            if data is not None:
                location = data if data.is_dir() else data.parent
                record = store.add_container(
                    manifest,
                    _layers_for(manifest, data, layers),
                    location,
                    complete=True,
                    now=time.time(),
                    names=names,
                )
            else:
                download_dir = resolve_download_dir(args.download_dir)
                record = store.add_container(
                    manifest, layers, download_dir, complete=False, now=time.time(), names=names
                )
        except AlreadyStored:
            record = _existing(store, manifest)
            for name in names:
                store.add_name(record.id, name)
        except StoreError as exc:
            raise UserError(str(exc)) from exc
        info = container_json(store, record)
    print_container(console, info)
    return 0


def _layers_for(
    manifest: Manifest, data: Path, known: dict[bytes, list[bytes]]
) -> dict[bytes, list[bytes]]:
    """Piece layers for every file longer than a piece: the torrent's, else hashed locally."""
    missing = [
        entry
        for entry in manifest.files
        if entry.root is not None
        and entry.length > manifest.piece_length
        and entry.root not in known
    ]
    if not missing:
        return known
    base = data if data.is_dir() else data.parent
    files = [ScannedFile(e.path, base.joinpath(*e.path), e.length) for e in missing]
    hashed = trio.run(
        lambda: hash_files(
            files, piece_length=manifest.piece_length, run_blocking=trio.to_thread.run_sync
        )
    )
    return {**known, **{h.root: h.piece_layer for h in hashed if h.root is not None}}


def _manifest_checked_against_data(torrent: Torrent, data: Path, console: Console) -> Manifest:
    """Hash the local data; accept it only if it is the torrent's content."""
    try:
        scanned = {f.path: f for f in scan(data)}
    except ScanError as exc:
        raise UserError(str(exc)) from exc
    if data.is_file() and data.name != torrent.name:
        raise UserError(f"the torrent's file is named {torrent.name!r}, not {data.name!r}")
    wanted = list(torrent.files)
    for file in wanted:
        found = scanned.get(file.path)
        if found is None or found.length != file.length:
            raise UserError(f"{data} does not hold {'/'.join(file.path)} ({file.length} bytes)")
    if torrent.has_v1 and not torrent.has_v2:
        _check_v1_pieces(torrent, data, scanned, console)
    piece_length = torrent.piece_length
    try:
        check_piece_length(piece_length)
    except DecodeError:  # v1 allows piece lengths v2 does not; pick a valid one
        piece_length = choose_piece_length(torrent.total_length)
    ordered = [scanned[f.path] for f in wanted]
    with hashing_progress(console, False) as progress:
        task = progress.add_task("hashing", total=torrent.total_length)
        hashed = trio.run(
            lambda: hash_files(
                ordered,
                piece_length=piece_length,
                run_blocking=trio.to_thread.run_sync,
                progress=lambda done: progress.advance(task, done),
            )
        )
    roots = {h.path: h.root for h in hashed if h.root is not None}
    try:
        return manifest_from_v1_and_roots(torrent, roots, piece_length=piece_length)
    except ValueError as exc:
        raise UserError(f"the data at {data} is not this torrent's content: {exc}") from exc


def _check_v1_pieces(
    torrent: Torrent, data: Path, scanned: dict[tuple[str, ...], ScannedFile], console: Console
) -> None:
    expected = torrent.v1_piece_hashes or b""
    with hashing_progress(console, False) as progress:
        task = progress.add_task("checking v1 pieces", total=torrent.total_length)
        disk_paths = {path: found.source for path, found in scanned.items()}
        pieces = _v1_pieces(
            torrent.v1_layout(),
            disk_paths,
            torrent.piece_length,
            lambda done: progress.advance(task, done),
        )
    if pieces != expected:
        bad = sum(pieces[i : i + 20] != expected[i : i + 20] for i in range(0, len(expected), 20))
        raise UserError(f"the data at {data} does not match the torrent ({bad} pieces differ)")


def _import_magnet(args: argparse.Namespace, console: Console) -> int:
    try:
        magnet = parse_magnet(args.source)
    except DecodeError as exc:
        raise UserError(f"bad magnet link: {exc}") from exc
    with open_store(args) as store:
        ids = resolve_all(store, args.source)
        if not ids:
            raise UserError(
                "no container with these names is known yet: "
                + ", ".join(magnet.names())
                + ". Its manifest comes from peers (`kinswarm get`, not built yet)"
            )
        for container_id in ids:
            record = store.get(container_id)
            assert record is not None
            for name in magnet.names():
                if "://" in name:
                    store.add_name(container_id, name)
            print_container(console, container_json(store, record))
    return 0
