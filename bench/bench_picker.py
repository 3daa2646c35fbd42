"""How fast does the piece picker choose, on a 1,000,000-piece file and 50 peers?

In one run, on one picker:

* setup: `add_file` of `--pieces` pieces, then the swarm's announcements: `--seeds` seeds
  (`peer_has_all`) and the other peers with random bitfields — half with 1/8 of the pieces,
  half with 1/64 — plus one "sparse" peer with 100 pieces (a newcomer: once it has nothing
  left for us it leaves and another with 100 random pieces takes its place);
* ours: rounds of `pick(peer, --count)` for a random peer, each pick followed by
  `mark_requested`, `block_received` and `piece_verified` so that the state moves as in a real
  download; picks/s are given per kind of peer, for `pick` alone;
* drained: one 1/64 peer asked again and again until we have taken its rarest pieces, so
  every later pick must get past buckets full of pieces it lacks (the bucket walk's worst
  case; after `walk_budget` positions the picker switches to rank bitsets);
* reference: a plain rarest-first scan over every piece (what a picker without buckets does:
  O(pieces) per pick), on the same state, for the same kinds of peer.

The last line is `ratio: <ours / reference>` (picks per second, all peers).

    .venv/bin/python bench/bench_picker.py [--pieces 1000000] [--peers 50] [--rounds 20000]
"""

from __future__ import annotations

import argparse
import random
import time

from node.picker import PiecePicker

ROOT = b"\x07" * 32


def thin_bits(rng: random.Random, pieces: int, ands: int) -> bytes:
    """A bitfield with about 1/2**ands of the pieces (spare bits cleared)."""
    size = -(-pieces // 8)
    value = int.from_bytes(rng.randbytes(size), "big")
    for _ in range(ands - 1):
        value &= int.from_bytes(rng.randbytes(size), "big")
    spare = -pieces % 8
    value &= ~((1 << spare) - 1)
    return value.to_bytes(size, "big")


Kinds = dict[str, list[bytes]]
Haves = dict[bytes, bytes | None]
"""Each peer's bitfield as announced (None: it has everything)."""


def build(args: argparse.Namespace, rng: random.Random) -> tuple[PiecePicker, Kinds, Haves]:
    picker = PiecePicker()
    started = time.perf_counter()
    picker.add_file(ROOT, args.pieces, args.blocks)
    print(f"add_file({args.pieces:,} pieces): {time.perf_counter() - started:.2f} s")
    kinds: Kinds = {"seed": [], "1/8": [], "1/64": [], "sparse": []}
    haves: Haves = {}
    started = time.perf_counter()
    for i in range(args.seeds):
        peer = b"seed%d" % i
        picker.peer_has_all(peer, ROOT)
        kinds["seed"].append(peer)
        haves[peer] = None
    others = args.peers - args.seeds - 1
    for i in range(others):
        kind, ands = ("1/8", 3) if i % 2 == 0 else ("1/64", 6)
        peer = b"peer%d" % i
        bits = haves[peer] = thin_bits(rng, args.pieces, ands)
        picker.peer_bitfield(peer, ROOT, bits)
        kinds[kind].append(peer)
    sparse = bytearray(-(-args.pieces // 8))
    for piece in rng.sample(range(args.pieces), 100):
        picker.peer_has(b"sparse", ROOT, piece)
        sparse[piece >> 3] |= 0x80 >> (piece & 7)
    kinds["sparse"].append(b"sparse")
    haves[b"sparse"] = bytes(sparse)
    elapsed = time.perf_counter() - started
    print(f"announcements ({args.peers} peers): {elapsed:.2f} s")
    return picker, kinds, haves


def ours(
    picker: PiecePicker, kinds: Kinds, args: argparse.Namespace, rng: random.Random
) -> dict[str, float]:
    """Picks per second for each kind of peer, timing `pick` alone."""
    spent = dict.fromkeys(kinds, 0.0)
    picks = dict.fromkeys(kinds, 0)
    names = list(kinds)
    now = 0.0
    for _ in range(args.rounds):
        kind = names[rng.randrange(len(names))]
        peer = rng.choice(kinds[kind])
        started = time.perf_counter()
        got = picker.pick(peer, args.count, now, rng)
        spent[kind] += time.perf_counter() - started
        picks[kind] += 1
        if kind == "sparse" and not got:  # it gave us all it had: a newcomer replaces it
            picker.peer_left(peer)
            for piece in rng.sample(range(args.pieces), 100):
                picker.peer_has(peer, ROOT, piece)
        for request in got:
            picker.mark_requested(peer, request, now)
        for request in got:
            if picker.block_received(peer, request).piece_complete:
                picker.piece_verified(request.root, request.piece)
        now += 0.001
    total = sum(picks.values()) / sum(spent.values())
    rates = {kind: picks[kind] / spent[kind] for kind in names if spent[kind]}
    rates["all"] = total
    return rates


def drained(
    picker: PiecePicker, kinds: Kinds, args: argparse.Namespace, rng: random.Random
) -> float:
    """Picks/s for a thin peer once its rare pieces are gone (timing the last quarter)."""
    peer = kinds["1/64"][-1]
    rare = picker.availability(ROOT, picker.pick(peer, 1, 0.0, rng)[0].piece)
    spent, picks, rounds = 0.0, 0, 0
    while rounds < 100_000:
        started = time.perf_counter()
        got = picker.pick(peer, args.count, 0.0, rng)
        elapsed = time.perf_counter() - started
        rounds += 1
        if not got:
            break
        if picker.availability(ROOT, got[0].piece) > rare:
            spent += elapsed  # its rarest pieces are all taken: this is the case to time
            picks += 1
            if picks == args.drained_picks:
                break
        for request in got:
            picker.mark_requested(peer, request, 0.0)
            if picker.block_received(peer, request).piece_complete:
                picker.piece_verified(request.root, request.piece)
    print(f"drained: {rounds - picks} picks to take its rarest pieces")
    return picks / spent if spent else 0.0


def reference(
    picker: PiecePicker, kinds: Kinds, haves: Haves, args: argparse.Namespace
) -> dict[str, float]:
    """A linear rarest-first scan: every piece's availability, keeping the minimum among those
    the peer has and we still want (the state is read out of the picker once, untimed)."""
    n = args.pieces
    partial = {piece for _, piece in picker.partial_pieces()}
    wanted = [not picker.has_piece(ROOT, p) and p not in partial for p in range(n)]
    avail = [picker.availability(ROOT, p) for p in range(n)]
    rates = {}
    spent_all = 0.0
    found = 0
    for kind, peers in kinds.items():
        bits = haves[peers[0]]
        if bits is None:
            has = [True] * n
        else:
            has = [bool(bits[p >> 3] & (0x80 >> (p & 7))) for p in range(n)]
        started = time.perf_counter()
        for _ in range(args.reference_picks):
            best = -1
            best_avail = 1 << 30
            for p in range(n):
                if wanted[p] and has[p] and avail[p] < best_avail:
                    best, best_avail = p, avail[p]
            found += best >= 0
        spent = time.perf_counter() - started
        rates[kind] = args.reference_picks / spent
        spent_all += spent
    rates["all"] = args.reference_picks * len(kinds) / spent_all
    rates["found"] = found
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=1_000_000)
    parser.add_argument("--blocks", type=int, default=16, help="blocks per piece")
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--count", type=int, default=16, help="blocks asked per pick")
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--reference-picks", type=int, default=3)
    parser.add_argument("--drained-picks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    picker, kinds, haves = build(args, rng)
    started = time.perf_counter()
    mine = ours(picker, kinds, args, rng)
    print(
        f"pick rounds ({args.rounds:,}, with request/receive/verify): "
        f"{time.perf_counter() - started:.2f} s, {len(picker.partial_pieces())} partial pieces"
    )
    after_drain = drained(picker, kinds, args, rng)
    theirs = reference(picker, kinds, haves, args)
    for kind in mine:
        print(
            f"{kind:>7}: ours {mine[kind]:>10,.0f} picks/s "
            f"({mine[kind] * args.count:>12,.0f} blocks/s), "
            f"linear scan {theirs[kind]:>6.1f} picks/s"
        )
    print(f"drained 1/64 peer: ours {after_drain:,.0f} picks/s")
    print(f"ratio: {mine['all'] / theirs['all']:.0f}")


if __name__ == "__main__":
    main()
