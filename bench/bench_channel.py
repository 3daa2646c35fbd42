"""How much does our encrypted, framed channel cost on top of what the machine can do?

In one run this measures, over the same number of bytes:

(a) plain loopback TCP between two processes with 16 KiB writes (trio streams);
(b) the cipher alone: the one the channel ends up using (AES-256-GCM where the CPU has AES
    instructions, else ChaCha20-Poly1305; libsodium) encrypting and then decrypting the
    same bytes in memory on one core, in 16 KiB frames, called the cheapest way we know (in
    place in one reused buffer, `wire.aead`; pynacl's public wrapper is ~15% slower);
(c) our channel: two kinswarm Nodes in two processes over loopback TCP, the Noise handshake,
    then 16 KiB extension messages through `PeerConnection`/`SecureConnection` (framing,
    encryption, dispatch to a handler).

Each side of (a) and (c) runs in its own process, as two nodes would. Throughput is measured at
the receiver, from the first byte to the last. The last line is `ratio: c / min(a, b)`: the
share of the slower limit (the cipher or the socket) that the channel keeps. Goal: >= 0.6.

    .venv/bin/python bench/bench_channel.py [--mib 512]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import cast

import trio

from node.network import StreamAddress
from node.node import Node, NodeConfig
from node.peer import PeerConnection
from node.realnet import TrioNetwork
from wire import aead
from wire.identity import LocalIdentity

FRAME_BYTES = 16 * 1024
EXTENSION = "bench.bulk"


def identity(label: str) -> LocalIdentity:
    return LocalIdentity(hashlib.sha256(label.encode()).digest())


# -- (a) raw TCP ----------------------------------------------------------------------------


def raw_receiver(total: int, report: Connection) -> None:
    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        report.send(listeners[0].socket.getsockname()[1])
        stream = await listeners[0].accept()
        received = 0
        started = 0.0
        while received < total:
            data = await stream.receive_some(256 * 1024)
            if not data:
                break
            if not received:
                started = time.perf_counter()
            received += len(data)
        report.send((received, time.perf_counter() - started))

    trio.run(main)


def raw_sender(port: int, total: int) -> None:
    async def main() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        chunk = os.urandom(FRAME_BYTES)
        for _ in range(total // FRAME_BYTES):
            await stream.send_all(chunk)
        await stream.aclose()

    trio.run(main)


# -- (c) our channel ------------------------------------------------------------------------


def channel_receiver(total: int, report: Connection) -> None:
    async def main() -> None:
        done = trio.Event()
        state = {"received": 0, "started": 0.0}

        async def on_bulk(peer: PeerConnection, payload: memoryview) -> None:
            if not state["received"]:
                state["started"] = time.perf_counter()
            state["received"] += len(payload)
            if state["received"] >= total:
                done.set()

        async with TrioNetwork() as network, trio.open_nursery() as nursery:
            node = Node(
                network=network,
                identity=identity("receiver"),
                config=NodeConfig(listen=(StreamAddress("tcp", "127.0.0.1", 0),)),
            )
            node.register_extension(EXTENSION, 1, on_bulk)
            bound = await nursery.start(node.run)
            report.send(bound[0].port)
            await done.wait()
            report.send((state["received"], time.perf_counter() - state["started"]))
            node.stop()

    trio.run(main)


def channel_sender(port: int, total: int) -> None:
    async def main() -> None:
        async def ignore(peer: PeerConnection, payload: memoryview) -> None:
            return None

        async with TrioNetwork() as network, trio.open_nursery() as nursery:
            node = Node(network=network, identity=identity("sender"), config=NodeConfig(listen=()))
            node.register_extension(EXTENSION, 1, ignore)
            await nursery.start(node.run)
            peer = await node.connect(StreamAddress("tcp", "127.0.0.1", port))
            chunk = os.urandom(FRAME_BYTES)
            for _ in range(total // FRAME_BYTES):
                await peer.send_extension(EXTENSION, chunk)
            await peer.wait_closed()
            node.stop()

    trio.run(main)


def run_pair(
    receiver: Callable[[int, Connection], None], sender: Callable[[int, int], None], total: int
) -> float:
    """Run receiver and sender in two processes; return receiver-side MB/s."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    receiving = context.Process(target=receiver, args=(total, child_end))
    receiving.start()
    port = parent_end.recv()
    sending = context.Process(target=sender, args=(port, total))
    sending.start()
    received, seconds = cast(tuple[int, float], parent_end.recv())
    receiving.join(timeout=30)
    sending.join(timeout=30)
    for process in (receiving, sending):
        if process.is_alive():
            process.kill()
    if received < total:
        raise RuntimeError(f"only {received} of {total} bytes arrived")
    return received / seconds / 1e6


# -- (b) the cipher alone -------------------------------------------------------------------


def cipher_alone(total: int) -> float:
    key = os.urandom(32)
    buffer = bytearray(os.urandom(FRAME_BYTES)) + bytearray(aead.TAG_LEN)
    frames = total // FRAME_BYTES
    seal, unseal = (
        (aead.aesgcm_seal_in_place, aead.aesgcm_open_in_place)
        if aead.AESGCM_AVAILABLE
        else (aead.seal_in_place, aead.open_in_place)
    )
    started = time.perf_counter()
    for counter in range(frames):
        nonce = b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")
        seal(buffer, 0, FRAME_BYTES, nonce, key)
        unseal(buffer, nonce, key)
    return frames * FRAME_BYTES / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="bytes moved per measurement")
    total = parser.parse_args().mib * 1024 * 1024
    tcp = run_pair(raw_receiver, raw_sender, total)
    print(f"(a) loopback TCP, 16 KiB writes:          {tcp:8.0f} MB/s", flush=True)
    cipher = cipher_alone(total)
    name = "AES-256-GCM" if aead.AESGCM_AVAILABLE else "ChaCha20-Poly1305"
    print(f"(b) {name + ' encrypt+decrypt:':37} {cipher:8.0f} MB/s", flush=True)
    channel = run_pair(channel_receiver, channel_sender, total)
    print(f"(c) kinswarm encrypted channel over TCP:  {channel:8.0f} MB/s", flush=True)
    print(f"ratio: {channel / min(tcp, cipher):.2f}")


if __name__ == "__main__":
    main()
