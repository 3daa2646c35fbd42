"""How fast does kinswarm move a file between two nodes, next to libtorrent and plain TCP?

In one run this moves the same random file (1 GiB by default) over loopback three ways, each
between two processes, and checks every received copy byte for byte (SHA-256) afterwards:

(a) plain TCP on 127.0.0.1: the sender `sendfile()`s the file, the receiver writes what it
    reads to a new file. The ceiling: no protocol, no hashing, no encryption. Timed by the
    receiver, from `connect` to the last byte written.
(b) libtorrent (the PyPI bindings), one `lt.session` per process: a single-file torrent of
    the file (libtorrent's default: hybrid v1+v2, libtorrent's piece size for that length),
    made before the clock starts; the seeder adds it over the file in `seed_mode` (no
    up-front check: each piece is hashed when first asked for, as kinswarm's seeder does),
    the leecher adds it with an empty save path and `connect_peer`s the seeder. Both listen
    on 127.0.0.1 only; DHT, LSD, UPnP, NAT-PMP and uTP are off, nothing is rate-limited,
    several connections per IP are allowed. Timed by the leecher, from `add_torrent` to the
    torrent finishing (every piece hashed and written); session start-up is not timed.
    (libtorrent takes some hundreds of milliseconds from `add` to the first payload byte:
    the rate from that byte on is printed too.)
    Encryption is left at libtorrent's default: the handshake may be obfuscated, but the
    payload then goes in plaintext (RC4 "encryption", when a peer insists on it, is
    obfuscation, not authenticated encryption). The run prints what the connection used.
(c) kinswarm, as a user runs it: `kinswarm add FILE` into a seed data dir (hashing, not
    timed), `kinswarm run` on it, then `kinswarm get ID --peer ... --no-seed` into a fresh
    data dir, timed as a whole process from spawn to exit 0: Python start-up, imports, store,
    the Noise handshake, metadata, the transfer (authenticated and encrypted, each block
    checked against the Merkle root) and shutdown. The same `get` of a 1 KiB container, run
    first, measures that fixed overhead; "transfer only" is size / (t_big - t_tiny).
    Like an installed package, the processes load compiled bytecode: our sources are
    compiled first (untimed, to a cache in the bench's temporary directory), even where the
    environment sets PYTHONDONTWRITEBYTECODE; installed libraries have theirs already.

CPU is user+sys seconds per GiB moved, summed over both processes, in two columns:
"whole" is the processes' whole lives (`getrusage(RUSAGE_CHILDREN)` once reaped: Python
start-up and imports included, and for (c) the seeder serving the tiny container too);
"busy" leaves start-up out: for (a) and (b) each process reports its own
`getrusage(RUSAGE_SELF)` over the transfer; for (c), the tiny `get`'s CPU is taken off the
big one's and the seeder's CPU until it listened (read from /proc) off the seeder's.
Hashing at `kinswarm add` and at torrent creation is in neither.

The last line is `ratio: c / b`, with (c) the whole `get` process time. Goal: >= 0.5.

    .venv/bin/python bench/bench_transfer.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import attrs
import libtorrent as lt

PAYLOAD = "payload.bin"
TINY = "tiny.bin"
TINY_BYTES = 1024
KINSWARM = [sys.executable, "-m", "node.cli"]
PYCACHE = "pycache"
SOURCES = ["node", "wire", "dht"]
GiB = 1 << 30


@attrs.frozen
class Result:
    seconds: float
    """Wall time of the transfer."""
    cpu: float
    """User+sys CPU of both processes, whole lives."""
    busy_cpu: float
    """The same without start-up (and, for the libtorrent and TCP pairs, shutdown)."""

    def mb_per_s(self, total: int) -> float:
        return total / self.seconds / 1e6


def per_gib(cpu: float, total: int) -> float:
    return cpu / (total / GiB)


def children_cpu() -> float:
    """User+sys seconds of every child reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """User+sys seconds of this process so far, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def live_cpu(pid: int) -> float:
    """User+sys seconds of a running process (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_random(path: Path, size: int) -> bytes:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.digest()


def sha256_of(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(16 << 20):
            digest.update(chunk)
    return digest.digest()


def check_copy(path: Path, digest: bytes, what: str) -> None:
    if sha256_of(path) != digest:
        raise RuntimeError(f"{what}: {path} differs from the source")


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    return path


def run_pair(
    server: Callable[..., None],
    server_args: tuple[Any, ...],
    client: Callable[..., None],
    client_args: Callable[[int], tuple[Any, ...]],
    timeout: float,
) -> tuple[Result, Any]:
    """Run `server` and `client` in two processes.

    The server reports its port, serves, and on "stop" reports the CPU it used since it was
    ready. The client gets the port, transfers, and reports (seconds, its CPU over those
    seconds, anything else). Returns the Result and the client's anything else."""
    context = multiprocessing.get_context("spawn")
    server_end, server_child = context.Pipe()
    client_end, client_child = context.Pipe()
    cpu_before = children_cpu()
    serving = context.Process(target=server, args=(*server_args, server_child))
    serving.start()
    fetching: multiprocessing.process.BaseProcess | None = None
    try:
        if not server_end.poll(60):
            raise RuntimeError(f"{server.__name__} did not start")
        port = server_end.recv()
        fetching = context.Process(target=client, args=(*client_args(port), client_child))
        fetching.start()
        if not client_end.poll(timeout):
            raise RuntimeError(f"{client.__name__} did not finish in {timeout:.0f} s")
        seconds, client_cpu, extra = client_end.recv()
        server_end.send("stop")
        server_cpu = server_end.recv()
        fetching.join(60)
        serving.join(60)
    finally:
        for process in (serving, fetching):
            if process is not None and process.is_alive():
                process.kill()
                process.join()
    for process in (serving, fetching):
        if process is not None and process.exitcode != 0:
            raise RuntimeError(f"{process.name} exited with {process.exitcode}")
    cpu = children_cpu() - cpu_before
    return Result(seconds, cpu, server_cpu + client_cpu), extra


# -- (a) plain TCP --------------------------------------------------------------------------


def tcp_sender(source: str, report: Connection) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        ready = own_cpu()
        report.send(server.getsockname()[1])
        connection, _ = server.accept()
        with connection, open(source, "rb") as f:
            connection.sendfile(f)
    report.recv()
    report.send(own_cpu() - ready)


def tcp_receiver(out_path: str, port: int, report: Connection) -> None:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    cpu = own_cpu()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as connection, open(out_path, "wb") as out:
        while received := connection.recv_into(buffer):
            out.write(view[:received])
    report.send((time.perf_counter() - started, own_cpu() - cpu, None))


def run_tcp(work: Path, source: Path, digest: bytes, total: int) -> Result:
    received = work / "tcp.bin"
    result, _ = run_pair(
        tcp_sender,
        (str(source),),
        tcp_receiver,
        lambda port: (str(received), port),
        timeout_for(total),
    )
    check_copy(received, digest, "plain TCP")
    received.unlink()
    return result


# -- (b) libtorrent -------------------------------------------------------------------------


def lt_session() -> Any:
    return lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            "upload_rate_limit": 0,
            "download_rate_limit": 0,
            "alert_mask": lt.alert_category.status | lt.alert_category.error,
        }
    )


def lt_params(torrent: bytes, save_path: str, *, seed: bool) -> Any:
    params = lt.load_torrent_buffer(torrent)
    params.save_path = save_path
    params.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    return params


def lt_seeder(torrent: bytes, save_path: str, report: Connection) -> None:
    session = lt_session()
    deadline = time.monotonic() + 30
    while not session.listen_port() and time.monotonic() < deadline:
        session.wait_for_alert(50)
        session.pop_alerts()
    handle = session.add_torrent(lt_params(torrent, save_path, seed=True))
    while not handle.status().is_seeding and time.monotonic() < deadline:
        session.wait_for_alert(50)
        session.pop_alerts()
    ready = own_cpu()
    report.send(session.listen_port())
    while not report.poll(0.1):  # keep the alert queue drained while serving
        session.pop_alerts()
    report.recv()
    report.send(own_cpu() - ready)
    uploaded = handle.status().total_payload_upload
    del handle, session
    if uploaded <= 0:
        raise SystemExit(f"the libtorrent seeder uploaded {uploaded} bytes")


def lt_leecher(
    torrent: bytes, save_path: str, port: int, timeout: float, report: Connection
) -> None:
    session = lt_session()
    cpu = own_cpu()
    started = time.perf_counter()
    handle = session.add_torrent(lt_params(torrent, save_path, seed=False))
    handle.connect_peer(("127.0.0.1", port))
    deadline = time.monotonic() + timeout
    encryption = "?"
    first_byte = 0.0
    finished = False
    while not finished:
        if time.monotonic() > deadline:
            raise SystemExit(f"libtorrent leecher timed out: {handle.status().state}")
        session.wait_for_alert(100 if first_byte else 2)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_finished_alert):
                finished = True
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                raise SystemExit(f"libtorrent: {alert.message()}")
        if not first_byte and handle.status().total_payload_download:
            first_byte = time.perf_counter() - started
            for peer in handle.get_peer_info():
                if peer.flags & peer.rc4_encrypted:
                    encryption = "RC4-obfuscated"
                elif peer.flags & peer.plaintext_encrypted:
                    encryption = "plaintext, obfuscated handshake"
                else:
                    encryption = "plaintext"
    seconds = time.perf_counter() - started
    busy = own_cpu() - cpu
    status = handle.status()
    if not status.is_finished or status.total_wanted_done != status.total_wanted:
        raise SystemExit("libtorrent says finished but has not everything")
    session.remove_torrent(handle)
    del handle, session
    report.send((seconds, busy, (encryption, first_byte)))


def make_torrent(source: Path) -> tuple[bytes, int]:
    creator = lt.create_torrent(lt.list_files(str(source)))
    lt.set_piece_hashes(creator, str(source.parent))
    return bytes(lt.bencode(creator.generate())), int(creator.piece_length())


def run_libtorrent(
    work: Path, source: Path, digest: bytes, total: int, torrent: bytes
) -> tuple[Result, tuple[str, float]]:
    """Return the result, what the connection's payload used, and when its first byte came."""
    save_path = work / "lt-leech"
    save_path.mkdir()
    timeout = timeout_for(total)
    result, extra = run_pair(
        lt_seeder,
        (torrent, str(source.parent)),
        lt_leecher,
        lambda port: (torrent, str(save_path), port, timeout),
        timeout + 30,
    )
    check_copy(save_path / source.name, digest, "libtorrent")
    shutil.rmtree(save_path)
    return result, cast(tuple[str, float], extra)


# -- (c) kinswarm ---------------------------------------------------------------------------


def kinswarm_env(work: Path) -> dict[str, str]:
    """The environment of the kinswarm processes: bytecode cached under `work`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / PYCACHE)
    return env


def kinswarm_add(path: Path, data_dir: Path, work: Path) -> str:
    added = subprocess.run(
        [*KINSWARM, "add", str(path), "--data-dir", str(data_dir), "--json"],
        env=kinswarm_env(work),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if added.returncode:
        raise RuntimeError(f"kinswarm add failed: {added.stderr}")
    return cast(str, json.loads(added.stdout)["id"])


def wait_listening(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("listening tcp://"):
                return line.split()[1]
        if process.poll() is not None:
            raise RuntimeError(f"kinswarm run exited with {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError("kinswarm run did not say where it listens")


def kinswarm_get(
    container_id: str, peer: str, work: Path, label: str, timeout: float
) -> tuple[float, float]:
    """Run `kinswarm get` into a fresh data dir; return its wall and CPU seconds. The seeder
    must still be running (not reaped), so the CPU delta is the `get` process's alone."""
    data_dir = private_dir(work / f"ks-{label}")
    downloads = work / f"ks-{label}-downloads"
    log = work / f"ks-{label}.log"
    command = [
        *KINSWARM,
        "get",
        container_id,
        "--peer",
        peer,
        "--no-seed",
        "--data-dir",
        str(data_dir),
        "--download-dir",
        str(downloads),
        "--listen",
        "127.0.0.1:0",
        "--no-ws",
        "--no-dht",
    ]
    cpu_before = children_cpu()
    started = time.perf_counter()
    with log.open("wb") as out:
        got = subprocess.run(
            command,
            stdout=out,
            stderr=out,
            env=kinswarm_env(work),
            timeout=timeout,
            check=False,
        )
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    if got.returncode:
        raise RuntimeError(f"kinswarm get {label} exited with {got.returncode}:\n{tail(log)}")
    return seconds, cpu


def downloaded(downloads: Path, name: str) -> Path:
    found = [path for path in downloads.rglob(name) if path.is_file()]
    if len(found) != 1:
        raise RuntimeError(f"expected one {name} under {downloads}, found {found}")
    return found[0]


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@attrs.frozen
class KinswarmRun:
    big: Result
    """The big `get`: its wall time; CPU of it and the seeder; busy = less the start-ups
    (the tiny `get`'s CPU, and the seeder's CPU until it listened)."""
    tiny_seconds: float
    tiny_cpu: float
    get_cpu: float
    seeder_cpu: float
    seeder_start_cpu: float


def run_kinswarm(work: Path, source: Path, digest: bytes, tiny: Path, total: int) -> KinswarmRun:
    seed_dir = private_dir(work / "ks-seed")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *SOURCES],
        env=kinswarm_env(work),
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    big_id = kinswarm_add(source, seed_dir, work)
    tiny_id = kinswarm_add(tiny, seed_dir, work)
    log = work / "ks-seed.log"
    cpu_before = children_cpu()
    with log.open("wb") as out:
        seeder = subprocess.Popen(
            [
                *KINSWARM,
                "run",
                "--data-dir",
                str(seed_dir),
                "--listen",
                "127.0.0.1:0",
                "--no-ws",
                "--no-dht",
            ],
            stdout=out,
            stderr=out,
            env=kinswarm_env(work),
        )
    try:
        peer = wait_listening(seeder, log)
        seeder_start_cpu = live_cpu(seeder.pid)
        tiny_seconds, tiny_cpu = kinswarm_get(tiny_id, peer, work, "tiny", 120)
        big_seconds, big_cpu = kinswarm_get(big_id, peer, work, "big", timeout_for(total))
    finally:
        seeder.send_signal(signal.SIGINT)
        try:
            seeder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            seeder.kill()
            seeder.wait()
    seeder_cpu = children_cpu() - cpu_before - tiny_cpu - big_cpu
    if seeder.returncode != 0:
        print(f"note: kinswarm run exited with {seeder.returncode}:\n{tail(log)}", flush=True)
    check_copy(downloaded(work / "ks-tiny-downloads", TINY), sha256_of(tiny), "kinswarm tiny")
    check_copy(downloaded(work / "ks-big-downloads", PAYLOAD), digest, "kinswarm")
    shutil.rmtree(work / "ks-big-downloads")
    busy = big_cpu - tiny_cpu + seeder_cpu - seeder_start_cpu
    return KinswarmRun(
        Result(big_seconds, big_cpu + seeder_cpu, busy),
        tiny_seconds,
        tiny_cpu,
        big_cpu,
        seeder_cpu,
        seeder_start_cpu,
    )


def timeout_for(total: int) -> float:
    """Generous: 120 s plus 2 MB/s."""
    return 120 + total / 2e6


def line(label: str, result: Result, total: int, note: str = "") -> None:
    print(
        f"{label:<36}{result.mb_per_s(total):7.0f} MB/s  {result.seconds:7.2f} s"
        f"  CPU s/GiB {per_gib(result.cpu, total):5.2f} whole,"
        f" {per_gib(result.busy_cpu, total):5.2f} busy{note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the file moved")
    total = parser.parse_args().mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as temp:
        work = Path(temp)
        source = private_dir(work / "source") / PAYLOAD
        digest = write_random(source, total)
        tiny = private_dir(work / "tiny") / TINY
        write_random(tiny, TINY_BYTES)
        torrent, piece_length = make_torrent(source)
        print(
            f"{total / (1 << 20):.0f} MiB of random bytes; libtorrent {lt.__version__}, "
            f"hybrid v1+v2 torrent, {piece_length // 1024} KiB pieces",
            flush=True,
        )
        line("(a) plain TCP, file to file", run_tcp(work, source, digest, total), total)
        libtorrent, (encryption, first_byte) = run_libtorrent(work, source, digest, total, torrent)
        line("(b) libtorrent, add to finished", libtorrent, total, f"  ({encryption})")
        print(
            f"    first payload byte after {first_byte:.2f} s; first byte to finished:"
            f" {total / (libtorrent.seconds - first_byte) / 1e6:.0f} MB/s",
            flush=True,
        )
        kinswarm = run_kinswarm(work, source, digest, tiny, total)
        line(
            "(c) kinswarm, whole `get` process",
            kinswarm.big,
            total,
            f"  (CPU s: get {kinswarm.get_cpu:.2f}, seeder {kinswarm.seeder_cpu:.2f}"
            f" of which {kinswarm.seeder_start_cpu:.2f} to start)",
        )
        print(
            f"    `get` of a {TINY_BYTES} B container: {kinswarm.tiny_seconds:.2f} s wall,"
            f" {kinswarm.tiny_cpu:.2f} CPU s (start-up and shutdown)",
            flush=True,
        )
        transfer_seconds = kinswarm.big.seconds - kinswarm.tiny_seconds
        if transfer_seconds > 0:
            transfer_only = total / transfer_seconds / 1e6
            print(
                f"    transfer only (big - tiny wall):  {transfer_only:7.0f} MB/s"
                f"  (ratio to b: {transfer_only / libtorrent.mb_per_s(total):.2f})",
                flush=True,
            )
    print(f"ratio: {kinswarm.big.mb_per_s(total) / libtorrent.mb_per_s(total):.2f}")


if __name__ == "__main__":
    main()
