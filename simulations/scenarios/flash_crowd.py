"""`flash-crowd`: one seed and N leechers who all want one file at the same instant.

The seed holds a container of one file of F bytes (`FILE_BYTES`, 4 MiB by default, so that
1,000 leechers run in minutes of wall time). Upload capacities keep the proportions of the
libtorrent reference in ../shared/GUIDE.md (seed 4 MB/s, leechers 1, 2 or 4 MB/s, a 64 MiB
file) scaled to home uplinks: seed 500 KB/s, leechers 125, 250 or 500 KB/s at random (1, 2
or 4 Mbit/s), so that moving one copy takes seconds, as there, and round trips matter as
little as there; every download capacity is 4x the upload. Round trips are 20-150 ms
(uniform), without loss. Every node is a real `Node` with the real `SwarmEngine` over a
`MemoryStore`. Each leecher starts the download with the seed's address and `HINTS` random
other leechers' addresses as hints (as a federation roster would give it); PEX and incoming
connections do the rest. A leecher knows the container by its id alone, as from a magnet
link, and fetches the manifest and piece layers from the crowd first (`flash-crowd-imported`
starts with them in every leecher's store, as after importing a .torrent). Every node paces
its uploads at 95 % of its capacity (`kinswarm run --upload-limit`), as BitTorrent users are
told to: with the uplink full, a node's own Requests wait behind seconds of its Block data
and its last pieces stall (`node.swarm.pacer`).

Reported: completion times (from the instant every leecher asked) at p50, p90 and p100, and the
median of each upload capacity (tit-for-tat serves fast uploaders first); the Kumar-Ross fluid
lower bound T_min = max(F/u_s, F/d_min, N*F/(u_s + sum u_i)) computed from the capacities
actually drawn, and `bound_ratio` = last completion / T_min; beside it `piece_floor_ratio`,
what the file's division into M pieces alone costs against that fluid bound, and
`reference_ratio` (`reference_p50_ratio` for the median), where an omniscient greedy schedule
of the same crowd finishes (`simulations.reference`: the same capacities, pacing, pieces and
round trips), so bound_ratio - reference_ratio is what our scheduling loses against one that
knows everything (`reference_time_budget_s`: its time budget, below, phase by phase); the
copies of the file the seed uploaded, in all and until the swarm held one whole copy
(`seed_first_copy_s`, `seed_copies_for_first_copy`: BEP 16's measure of a seed); upload
utilisation; blocks rejected; connections per node; where the time goes before data flows
(metadata, first piece); the median time to a quarter, half, three quarters and nine tenths
held (`held_p50_s`), and from those `time_budget_s`: how far the median leecher fell behind the
fluid schedule up to a quarter held, from there to nine tenths and on to done, and the last
finisher's lag behind the median, which add up to last - T_min; how far apart the leechers
are at each of those marks (`held_spread_s`, the tenth to the ninetieth in ten; 0 in the fluid
schedule) beside the reference's (`reference_held_spread_s`); message counts by type. In
`flash-crowd-probed`, each leecher's pieces, unchoking peers and rates every half second
(`probe`, `LeecherProbe`). With liars (`flash-crowd-liars`, `flash-crowd-tricklers`): when
each finished and how much sooner than the honest median (`liar_lead_s`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from node.hashing import choose_piece_length
from node.node import DEFAULT_MAX_PEERS
from node.swarm.engine import Download, SwarmEngine
from simulations.adversaries import HIDDEN_TYPES, HidingEngine, TricklingEngine
from simulations.determinism import derive_seed
from simulations.harness import (
    ScenarioParams,
    ScenarioSpec,
    SimHost,
    Simulation,
    percentile,
    register,
)
from simulations.latency import LatencyModel
from simulations.memstore import Content
from simulations.reference import ReferenceResult, reference_schedule
from simulations.scenarios.swarm import FirstCopy, SwarmNodes, address_of, describe, rounded
from simulations.virtualnet import World, WorldConfig
from wire.merkle import block_count

FILE_BYTES: Final = 4 * 1024 * 1024
SEED_UPLOAD: Final = 500_000
LEECHER_UPLOADS: Final = (125_000, 250_000, 500_000)
DOWNLOAD_FACTOR: Final = 4
HINTS: Final = 4


@attrs.frozen
class FlashCrowd:
    """The scenario's knobs (the CLI runs the defaults; tests and studies make variants)."""

    file_bytes: int = FILE_BYTES
    piece_length: int | None = None
    """None: what `kinswarm add` would choose (`choose_piece_length`)."""
    seed_upload: float = SEED_UPLOAD
    leecher_uploads: tuple[float, ...] = LEECHER_UPLOADS
    download_factor: float = DOWNLOAD_FACTOR
    hints: int = HINTS
    latency: LatencyModel = attrs.field(factory=lambda: LatencyModel(20, 150, "uniform"))
    max_peers: int = DEFAULT_MAX_PEERS
    verify: str = "compare"
    timeline_step: float = 0.5
    """Sample the swarm's upload every this many simulated seconds (0: never)."""
    probe_step: float = 0.0
    """Sample each leecher's state every this many simulated seconds (`LeecherProbe`, in the
    result as `probe`); 0: never (`flash-crowd-probed`: every 0.5 s)."""
    upload_limit_share: float | None = 0.95
    """Each node's upload limit as a share of its capacity (None: no limit)."""
    metadata_imported: bool = False
    """Each leecher starts with the manifest and piece layers in its store, as after
    `kinswarm import FILE.torrent` (a v2 torrent carries the layers): the download begins
    with its transfer, not with fetching the metadata from the crowd (by id, as from a
    magnet link: the default)."""
    liars: int = 0
    """This many leechers (the first drawn) under-report what they hold while they download
    (`liar_engine`): what that buys against the need slots, in `liar_lead_s`."""
    liar_engine: type[SwarmEngine] = HidingEngine
    """How the liars lie: `HidingEngine` says nothing, `TricklingEngine` one piece per peer
    every 2 s (`simulations.adversaries`)."""

    def world(self, seed: int) -> WorldConfig:
        return WorldConfig(seed=seed, latency=self.latency)

    def spec(self, name: str = "flash-crowd") -> ScenarioSpec:
        return ScenarioSpec(
            name=name,
            description=DESCRIPTION,
            run=lambda simulation, params: run(simulation, params, self),
            default_nodes=100,
            default_sim_seconds=600.0,
            world=self.world,
        )


def kumar_ross_bound(
    file_bytes: float, seed_upload: float, uploads: list[float], downloads: list[float]
) -> float:
    """T_min = max(F/u_s, F/d_min, N*F/(u_s + sum u_i)) for N = len(uploads) leechers."""
    return max(
        file_bytes / seed_upload,
        file_bytes / min(downloads),
        len(uploads) * file_bytes / (seed_upload + sum(uploads)),
    )


def piece_floor_ratio(leechers: int, pieces: int) -> float:
    """The fluid bound treats the file as infinitely divisible. Cut into M pieces, it is not:
    a piece is passed on only once whole. With equal upload capacities everywhere, the best
    possible schedule for one seed and N leechers takes M + floor(log2 N) piece-upload times
    (Mundinger, Weber & Weiss, "Optimal scheduling of peer-to-peer file dissemination",
    J. Scheduling 11, 2008), against the fluid bound's M. So no swarm, however well run, gets
    below 1 + floor(log2 N) / M of the fluid bound: 1.14 for 1,000 leechers and 64 pieces,
    1.04 with 256. Ours has unequal capacities, so this is a reference, not a proof."""
    if leechers < 1 or pieces < 1:
        raise ValueError("at least one leecher and one piece")
    return 1 + math.floor(math.log2(leechers)) / pieces


@attrs.define
class Timeline:
    """When each leecher's download reached each stage (simulated seconds since the start)."""

    metadata: dict[int, float] = attrs.Factory(dict)
    """Manifest and layers in: the transfer began."""
    first_piece: dict[int, float] = attrs.Factory(dict)
    quartiles: dict[int, list[float]] = attrs.Factory(dict)
    """When a quarter, half, three quarters and nine tenths of the file were held."""
    done: dict[int, float] = attrs.Factory(dict)

    def listener(self, index: int, started: float) -> Any:
        marks = self.quartiles.setdefault(index, [])

        def on_progress(download: Download) -> None:
            now = trio.current_time() - started
            if download.state in ("transfer", "complete"):
                self.metadata.setdefault(index, now)
            if download.held_bytes > 0:
                self.first_piece.setdefault(index, now)
            total = download.total_bytes
            while (
                total
                and len(marks) < len(PROGRESS_MARKS)
                and download.held_bytes >= PROGRESS_MARKS[len(marks)] * total
            ):
                marks.append(round(now, 3))

        return on_progress

    def slowest(self, count: int, uploads: dict[int, float]) -> list[dict[str, Any]]:
        ordered = sorted(self.done.items(), key=lambda item: (-item[1], item[0]))[:count]
        return [
            {
                "host": index,
                "upload": uploads.get(index),
                "done_s": round(at, 3),
                "first_piece_s": rounded(self.first_piece.get(index)),
                "held_25_50_75_90_s": self.quartiles.get(index, []),
            }
            for index, at in ordered
        ]


PROGRESS_MARKS: Final = (0.25, 0.5, 0.75, 0.9)
SPREAD_QUANTILES: Final = (0.1, 0.9)
"""`held_spread`: between which of the leechers' times to a mark."""


def held_spread(times_by_mark: Sequence[Sequence[float]]) -> dict[str, float | None]:
    """How far apart the leechers are at each progress mark: the seconds from the tenth
    leecher (in ten) to hold that share of the file to the ninetieth, one entry per
    PROGRESS_MARKS (None where no leecher reached it). In the fluid schedule every leecher
    holds the same share at every instant, so each entry is 0. A wide spread means some
    peers were served less than others for long stretches, and the one furthest behind
    near the end finishes last."""
    if len(times_by_mark) != len(PROGRESS_MARKS):
        raise ValueError("one list of times per progress mark")
    low, high = SPREAD_QUANTILES
    spread: dict[str, float | None] = {}
    for mark, times in zip(PROGRESS_MARKS, times_by_mark, strict=True):
        early, late = percentile(list(times), low), percentile(list(times), high)
        key = f"{int(mark * 100)}%"
        spread[key] = None if early is None or late is None else round(late - early, 3)
    return spread


def time_budget(
    bound: float, marks_p50: list[float], done_p50: float, last: float
) -> dict[str, float]:
    """Where the time beyond the fluid bound goes, phase by phase.

    In the fluid model every leecher holds the share t/T_min of the file at time t and all
    finish at T_min. Each phase's entry is how much longer the median leecher took over it
    than that schedule allows (negative: it caught up): from the start to a quarter of the
    file held, from there to nine tenths, from there to done; then the last finisher's lag
    behind the median. The entries add up to `last - bound` exactly (the medians
    telescope), so they say which phase a change of `bound_ratio` came from. `marks_p50` is
    the median time to a quarter, half, three quarters and nine tenths held
    (PROGRESS_MARKS)."""
    if len(marks_p50) != len(PROGRESS_MARKS):
        raise ValueError("one median per progress mark")
    quarter, nine_tenths = marks_p50[0], marks_p50[-1]
    return {
        "start_to_25pct": round(quarter - 0.25 * bound, 3),
        "25_to_90pct": round(nine_tenths - quarter - 0.65 * bound, 3),
        "90pct_to_done": round(done_p50 - nine_tenths - 0.1 * bound, 3),
        "median_to_last": round(last - done_p50, 3),
    }


@attrs.define
class UploadSampler:
    """Upload rate of the whole swarm per interval, as a share of its capacity."""

    step: float
    shares: list[float] = attrs.Factory(list)

    async def run(self, hosts: list[Any], capacity: float) -> None:
        before = sum(h.host.bytes_sent for h in hosts)
        while True:
            await trio.sleep(self.step)
            now = sum(h.host.bytes_sent for h in hosts)
            self.shares.append(round((now - before) / (capacity * self.step), 3))
            before = now


PROBE_COLUMNS: Final = ("t_s", "pieces_held", "peers_unchoking", "down_kb_s", "up_kb_s")


@attrs.define
class LeecherProbe:
    """Each leecher's state every `step` simulated seconds, to see how a crowd shares its
    uplinks rather than only when it finished: the pieces it holds, how many peers unchoke
    it, and what it downloaded and uploaded since the last sample (KB/s), one row per sample
    (`PROBE_COLUMNS`) up to the one that finds it complete (the last is taken as the crowd
    ends). Off by default: its task changes the order in which trio runs the others, so a
    probed run is another run (as deterministic, with its own digest), not the same run
    watched."""

    step: float
    hosts: dict[int, SimHost]
    engines: dict[int, SwarmEngine]
    downloads: dict[int, Download]
    piece_length: int
    started: float
    rows: dict[int, list[list[float]]] = attrs.Factory(dict)
    _before: dict[int, tuple[float, int, int]] = attrs.Factory(dict)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.step)
            self.sample()

    def sample(self) -> None:
        now = trio.current_time() - self.started
        for index, download in self.downloads.items():
            rows = self.rows.setdefault(index, [])
            if rows and rows[-1][1] * self.piece_length >= download.total_bytes > 0:
                continue  # complete at the last sample
            then, received_then, sent_then = self._before.get(index, (0.0, 0, 0))
            received, sent = download.received_bytes, self.hosts[index].host.bytes_sent
            self._before[index] = (now, received, sent)
            span = now - then
            if span <= 0:
                continue
            unchoking = sum(not s.peer_choking for s in self.engines[index].sessions.values())
            rows.append(
                [
                    round(now, 3),
                    -(-download.held_bytes // self.piece_length),
                    unchoking,
                    round((received - received_then) / span / 1000, 1),
                    round((sent - sent_then) / span / 1000, 1),
                ]
            )

    def result(self) -> dict[str, Any]:
        return {
            "step_s": self.step,
            "columns": list(PROBE_COLUMNS),
            "leechers": {str(index): rows for index, rows in self.rows.items()},
        }


async def run(simulation: Simulation, params: ScenarioParams, config: FlashCrowd) -> dict[str, Any]:
    leechers = params.nodes
    F = config.file_bytes
    piece_length = config.piece_length or choose_piece_length(F)
    content = Content(seed=derive_seed(params.seed, "content"))
    file = content.generate("flash-crowd", F)
    manifest, layers = content.container("flash-crowd", [("data.bin", file)], piece_length)

    swarm = SwarmNodes(
        content,
        max_peers=config.max_peers,
        verify=config.verify,
        upload_limit_share=config.upload_limit_share,
    )
    seed_host = simulation.add_host(
        upload_bytes_per_second=config.seed_upload,
        download_bytes_per_second=config.seed_upload * config.download_factor,
    )
    swarm.upload[seed_host.index] = config.seed_upload
    uploads: list[float] = []
    hosts = []
    for _ in range(leechers):
        upload = simulation.random.choice(config.leecher_uploads)
        host = simulation.add_host(
            upload_bytes_per_second=upload,
            download_bytes_per_second=upload * config.download_factor,
        )
        swarm.upload[host.index] = upload
        uploads.append(upload)
        hosts.append(host)
    downloads_capacity = [u * config.download_factor for u in uploads]
    bound = kumar_ross_bound(F, config.seed_upload, uploads, downloads_capacity)

    swarm.store(seed_host.index).add_container(
        manifest, layers, Path("/virtual/seed") / manifest.name, complete=True, now=0.0
    )
    liars = hosts[: config.liars]
    for host in liars:
        swarm.engine_classes[host.index] = config.liar_engine
    swarm.tap.keep_first = bool(liars)  # when each liar first told anyone what it holds
    factory = swarm.factory()
    seed_node = await simulation.start(seed_host, factory)
    first_copy = swarm.tap.first_copy = FirstCopy(seed_node.node_id, block_count(F))
    for host in hosts:
        await simulation.start(host, factory)
        if config.metadata_imported:
            engine = swarm.engines[host.index]
            engine.store.add_container(
                manifest, layers, engine.download_dir, complete=False, now=0.0
            )

    # Everyone asks at the same instant, once every node listens.
    started = trio.current_time()
    timeline = Timeline()
    downloads: dict[int, Download] = {}
    for host in hosts:
        others = [h for h in hosts if h is not host]
        hinted = simulation.random.sample(others, min(config.hints, len(others)))
        engine = swarm.engines[host.index]
        engine.on_progress(timeline.listener(host.index, started))
        downloads[host.index] = await engine.get(
            manifest.id, peers=[address_of(seed_host), *map(address_of, hinted)]
        )
    capacity = config.seed_upload + sum(uploads)
    all_hosts = [seed_host, *hosts]
    sampler = UploadSampler(config.timeline_step)
    by_index = {host.index: host for host in hosts}
    probe = LeecherProbe(
        config.probe_step, by_index, swarm.engines, downloads, piece_length, started
    )
    async with trio.open_nursery() as nursery:
        if config.timeline_step:
            nursery.start_soon(sampler.run, all_hosts, capacity)
        if config.probe_step:
            nursery.start_soon(probe.run)
        with trio.move_on_at(simulation.started_at + params.sim_seconds):
            for download in downloads.values():
                await download.done.wait()
        nursery.cancel_scope.cancel()
    if config.probe_step:
        probe.sample()  # those that finished since the last sample
    for index, download in downloads.items():
        if download.state == "complete" and download.finished_at is not None:
            timeline.done[index] = download.finished_at - started

    # -- metrics --------------------------------------------------------------------------
    times = list(timeline.done.values())
    last = max(times) if len(times) == leechers else None
    marks_p50 = [
        percentile([m[k] for m in timeline.quartiles.values() if len(m) > k], 0.5)
        for k in range(len(PROGRESS_MARKS))
    ]
    done_p50 = percentile(times, 0.5)
    budget = None
    if last is not None and done_p50 is not None:
        held = [at for at in marks_p50 if at is not None]
        if len(held) == len(PROGRESS_MARKS):
            budget = time_budget(bound, held, done_p50, last)
    world = simulation.world
    reference = reference_for(config, F, piece_length, [seed_host, *hosts], uploads, world)
    down = swarm.ledger.down(swarm.engines)
    seed_id = seed_node.node_id
    seed_data = sum(b for (_, peer), b in down.items() if peer == seed_id)
    all_data = sum(down.values())
    horizon = last if last is not None else simulation.elapsed
    utilisation = [
        h.host.bytes_sent / (swarm.upload[h.index] * horizon) for h in all_hosts if horizon > 0
    ]
    peers = [len(h.node.peers) for h in hosts if h.node is not None]
    stats_of = simulation.trace.events_by_kind
    return {
        "leechers": leechers,
        "file_bytes": F,
        "piece_length": piece_length,
        "upload_limit_share": config.upload_limit_share,
        "pieces": -(-F // piece_length),
        "completed": len(times),
        "failed": sum(d.state == "failed" for d in downloads.values()),
        "completion_p50_s": rounded(done_p50),
        "completion_p90_s": rounded(percentile(times, 0.9)),
        "completion_p100_s": rounded(last),
        "kumar_ross_bound_s": round(bound, 3),
        "bound_terms_s": {
            "F/u_s": round(F / config.seed_upload, 3),
            "F/d_min": round(F / min(downloads_capacity), 3),
            "NF/(u_s+sum u)": round(leechers * F / capacity, 3),
        },
        "bound_ratio": rounded(last / bound if last is not None else None),
        "reference_ratio": round(reference.last_s / bound, 3),
        "reference_p50_ratio": round(reference.median_s / bound, 3),
        "reference_time_budget_s": time_budget(
            bound, reference.held_p50_s, reference.median_s, reference.last_s
        ),
        "held_p50_s": {
            f"{int(mark * 100)}%": rounded(at)
            for mark, at in zip(PROGRESS_MARKS, marks_p50, strict=True)
        },
        "time_budget_s": budget,
        "held_spread_s": held_spread(
            [
                [m[k] for m in timeline.quartiles.values() if len(m) > k]
                for k in range(len(PROGRESS_MARKS))
            ]
        ),
        "reference_held_spread_s": held_spread(reference.held_s),
        "piece_floor_ratio": round(piece_floor_ratio(leechers, -(-F // piece_length)), 4),
        "seed_uploaded_copies": round(seed_data / F, 3),
        "seed_sent_wire_copies": round(seed_host.host.bytes_sent / F, 3),
        "seed_first_copy_s": rounded(
            None if first_copy.done_at is None else first_copy.done_at - started
        ),
        "seed_copies_for_first_copy": rounded(first_copy.copies()),
        "received_data_over_needed": round(all_data / (leechers * F), 4),
        "upload_utilisation_mean": rounded(sum(utilisation) / len(utilisation), 4)
        if utilisation
        else None,
        "upload_utilisation_useful": rounded(leechers * F / (capacity * horizon), 4)
        if horizon
        else None,
        "blocks_rejected": sum(e.blocks_rejected for e in swarm.engines.values()),
        "connections_per_leecher_mean": rounded(sum(peers) / len(peers), 2) if peers else None,
        "connections_per_leecher_max": max(peers) if peers else None,
        "connections_seed": len(seed_node.peers),
        "connections_accepted": stats_of["accept"],
        "connections_refused": stats_of["refused"],
        "disconnects": swarm.ledger.disconnects,
        "metadata_p50_s": rounded(percentile(list(timeline.metadata.values()), 0.5)),
        "metadata_p100_s": rounded(percentile(list(timeline.metadata.values()), 1.0)),
        "first_piece_p50_s": rounded(percentile(list(timeline.first_piece.values()), 0.5)),
        "first_piece_p100_s": rounded(percentile(list(timeline.first_piece.values()), 1.0)),
        "completion_p50_by_upload_s": {
            str(int(upload)): rounded(
                percentile(
                    [at for index, at in timeline.done.items() if swarm.upload[index] == upload],
                    0.5,
                )
            )
            for upload in sorted(set(uploads))
        },
        "slowest": timeline.slowest(3, swarm.upload),
        **liar_metrics(liars, timeline, swarm, started),
        "upload_timeline_step_s": config.timeline_step,
        "upload_timeline": sampler.shares,
        "messages_received": swarm.tap.summary(),
        "world_events_delivered": world.delivered_events,
        **({"probe": probe.result()} if config.probe_step else {}),
    }


def reference_for(
    config: FlashCrowd,
    file_bytes: int,
    piece_length: int,
    hosts: list[SimHost],
    uploads: list[float],
    world: World,
) -> ReferenceResult:
    """The omniscient schedule (`simulations.reference`) of this very crowd: its capacities
    and pacing, its pieces, the round trip of every pair; pull, three round trips of setup
    (connect, handshake, want), serial uploads, anyone to anyone. `hosts[0]` is the seed."""
    share = config.upload_limit_share or 1.0
    whole, rest = divmod(file_bytes, piece_length)
    return reference_schedule(
        piece_sizes=[piece_length] * whole + ([rest] if rest else []),
        seed_rate=share * config.seed_upload,
        leecher_rates=[share * upload for upload in uploads],
        leecher_downloads=[upload * config.download_factor for upload in uploads],
        one_way_s=lambda a, b: world.latency_us(hosts[a].host, hosts[b].host) / 1e6,
        marks=PROGRESS_MARKS,
    )


def liar_metrics(
    liars: list[Any], timeline: Timeline, swarm: SwarmNodes, started: float
) -> dict[str, Any]:
    """With liars in the crowd: when each finished, how much sooner than the honest leechers
    (median against median, positive when lying pays), and to how many peers a liar told
    something of what it holds before it had finished (0 for liars that hide, some for
    liars that trickle)."""
    if not liars:
        return {}
    liar_indices = {host.index for host in liars}
    honest = [at for index, at in timeline.done.items() if index not in liar_indices]
    lying = [timeline.done[index] for index in sorted(liar_indices) if index in timeline.done]
    liar_ids = {swarm.engines[index].node.node_id: index for index in liar_indices}
    told_early = sum(
        1
        for (_, sender, name), at in swarm.tap.first_at.items()
        if name in HIDDEN_NAMES
        and sender in liar_ids
        and at - started < timeline.done.get(liar_ids[sender], math.inf)
    )
    honest_p50, lying_p50 = percentile(honest, 0.5), percentile(lying, 0.5)
    return {
        "liars": len(liars),
        "liars_done_s": [round(at, 3) for at in lying],
        "liar_lead_s": rounded(
            None if honest_p50 is None or lying_p50 is None else honest_p50 - lying_p50
        ),
        "liar_told_before_done": told_early,
    }


HIDDEN_NAMES: Final = frozenset(cls.__name__ for cls in HIDDEN_TYPES)

DESCRIPTION = describe(__doc__)

register(FlashCrowd().spec())
register(FlashCrowd(piece_length=64 * 1024).spec("flash-crowd-64k"))
"""The same with 64 KiB pieces: a quarter of the Have messages, which makes 1,000 leechers
affordable in wall time."""
register(FlashCrowd(metadata_imported=True).spec("flash-crowd-imported"))
"""The same with the metadata in every leecher's store from the start (`metadata_imported`):
what fetching it from the crowd costs, by difference."""
register(FlashCrowd(liars=3).spec("flash-crowd-liars"))
"""The same with three leechers that never say what they hold while they download: how much
sooner under-reporting gets them their file (`liar_lead_s`)."""
register(FlashCrowd(liars=3, liar_engine=TricklingEngine).spec("flash-crowd-tricklers"))
"""The same with three leechers that tell each peer of one piece every 2 s while they
download: under-reporting that the choker's silent rule does not catch."""
register(FlashCrowd(probe_step=0.5).spec("flash-crowd-probed"))
"""The plain crowd with each leecher sampled every half second (`LeecherProbe`): how many
peers unchoke it and how fast it downloads, in the JSON as `probe`."""
