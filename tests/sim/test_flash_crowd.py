"""The flash crowd at a size CI affords (the 100- and 1,000-leecher figures come from
`kinswarm sim flash-crowd --nodes N`): every leecher finishes, leechers trade with each other
rather than all drawing on the seed, and the last finish stays within a few times the
Kumar-Ross bound. Before partial downloads served their pieces, this crowd took 9x the bound
and the seed uploaded a copy per leecher."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from simulations.adversaries import TRICKLE_SECONDS, TricklingEngine, trickle
from simulations.harness import register, run_scenario
from simulations.scenarios.flash_crowd import (
    FlashCrowd,
    held_spread,
    kumar_ross_bound,
    piece_floor_ratio,
    time_budget,
)
from simulations.scenarios.swarm import FirstCopy
from wire.merkle import BLOCK_SIZE
from wire.swarm import Bitfield, Block, Have, HaveByAlias, Unchoke

SMALL = register(FlashCrowd(file_bytes=1024 * 1024).spec("flash-crowd-small"))
SMALL_IMPORTED = register(
    FlashCrowd(file_bytes=1024 * 1024, metadata_imported=True).spec("flash-crowd-small-imported")
)
SMALL_LIARS = register(FlashCrowd(file_bytes=1024 * 1024, liars=2).spec("flash-crowd-small-liars"))
SMALL_TRICKLERS = register(
    FlashCrowd(file_bytes=1024 * 1024, liars=2, liar_engine=TricklingEngine).spec(
        "flash-crowd-small-tricklers"
    )
)


def test_kumar_ross_bound_takes_the_tightest_term() -> None:
    assert kumar_ross_bound(100, 10, [10, 10], [50, 50]) == 10  # the seed's upload
    assert kumar_ross_bound(100, 100, [10, 10], [5, 50]) == 20  # the slowest download
    assert kumar_ross_bound(100, 10, [1, 1, 1, 1], [500] * 4) == 400 / 14  # the swarm


def test_the_piece_floor_grows_with_the_crowd_and_shrinks_with_more_pieces() -> None:
    assert piece_floor_ratio(1000, 64) == 1 + 9 / 64  # 1.14: the 1.15 leaves ~1 %
    assert piece_floor_ratio(100, 64) == 1 + 6 / 64
    assert piece_floor_ratio(1000, 256) == 1 + 9 / 256
    assert piece_floor_ratio(1, 1) == 1.0


def test_the_time_budget_splits_the_excess_over_the_bound_by_phase() -> None:
    # Fluid schedule for a 20 s bound: a quarter at 5 s, nine tenths at 18 s, done at 20 s.
    budget = time_budget(20.0, [6.5, 11.0, 15.0, 19.0], done_p50=21.5, last=23.0)
    assert budget == {
        "start_to_25pct": 1.5,  # the quarter came 1.5 s late
        "25_to_90pct": -0.5,  # then 12.5 s for 13 s of the schedule: a little ahead
        "90pct_to_done": 0.5,
        "median_to_last": 1.5,
    }
    assert sum(budget.values()) == 23.0 - 20.0
    with pytest.raises(ValueError):
        time_budget(20.0, [6.5, 19.0], done_p50=21.5, last=23.0)


def test_the_spread_is_from_the_tenth_leecher_to_the_ninetieth_at_each_mark() -> None:
    even = [5.0] * 10
    ten = [float(t) for t in range(10, 20)]  # nearest rank: the 1st and the 9th of ten
    spread = held_spread([even, ten, [7.0], []])
    assert spread == {"25%": 0.0, "50%": 8.0, "75%": 0.0, "90%": None}
    with pytest.raises(ValueError):
        held_spread([even, even])


def test_the_first_copy_counts_runs_and_duplicates_until_every_block_was_out() -> None:
    watch = FirstCopy(b"seed", blocks=5)  # four whole blocks and a short last one

    def run(first: int, blocks: int, size: int = BLOCK_SIZE) -> Block:
        return Block(b"r" * 32, first, (), b"x" * (blocks - 1) * BLOCK_SIZE + b"x" * size)

    watch.on_block(run(0, 2), now=1.0)
    watch.on_block(run(0, 2), now=2.0)  # the same run again: a duplicate
    watch.on_block(run(2, 1), now=3.0)
    assert watch.done_at is None and watch.copies() is None
    watch.on_block(run(3, 2, size=100), now=4.0)
    assert watch.done_at == 4.0 and watch.copies() == 7 / 5
    watch.on_block(run(4, 1, size=100), now=5.0)  # after the first copy: not counted in it
    assert watch.copies() == 7 / 5 and watch.sent == 8


def test_a_small_flash_crowd_completes_near_the_bound_and_trades() -> None:
    leechers = 24
    metrics = run_scenario(SMALL.name, nodes=leechers, seed=3, sim_seconds=300).metrics
    assert metrics["completed"] == leechers and metrics["failed"] == 0
    assert metrics["bound_ratio"] < 3.0, metrics["bound_ratio"]  # 1.70 measured; 9 untraded
    assert 1 < metrics["piece_floor_ratio"] < metrics["bound_ratio"]
    # The omniscient schedule of the same crowd: past the pacing's 1/0.95, short of the engine
    # (1.23 against 1.65 measured: a 1 MiB file leaves the start's round trips little to hide in).
    assert 1 / 0.95 < metrics["reference_p50_ratio"] <= metrics["reference_ratio"]
    assert metrics["reference_ratio"] < metrics["bound_ratio"]
    reference_excess = (metrics["reference_ratio"] - 1) * metrics["kumar_ross_bound_s"]
    budget = sum(metrics["reference_time_budget_s"].values())
    assert abs(budget - reference_excess) < 0.01, metrics["reference_time_budget_s"]
    assert metrics["seed_uploaded_copies"] < leechers / 3  # the rest came from leechers
    # The seed sent each piece about once before the crowd held a whole copy (BEP 16): 1.00
    # measured; 1.84 when it showed pieces to peers it choked and a 64-block first window.
    assert 1 <= metrics["seed_copies_for_first_copy"] < 1.3, metrics["seed_copies_for_first_copy"]
    assert metrics["seed_first_copy_s"] < metrics["completion_p50_s"]
    assert metrics["received_data_over_needed"] < 1.1  # endgame duplicates: 1.03 measured
    assert metrics["blocks_rejected"] == 0
    assert metrics["connections_per_leecher_mean"] > 5  # PEX meshed the crowd
    excess = metrics["completion_p100_s"] - metrics["kumar_ross_bound_s"]
    assert abs(sum(metrics["time_budget_s"].values()) - excess) < 0.01, metrics["time_budget_s"]
    held = metrics["held_p50_s"]
    assert held["25%"] < held["50%"] < held["75%"] < held["90%"] < metrics["completion_p50_s"]
    # The omniscient schedule keeps the crowd together: 0.17-0.20 s from the tenth leecher to
    # the ninetieth at each mark, measured. The engine's peers drift further apart
    # mid-download (0.69-1.46 s), but not by a whole third of the run.
    spread, reference_spread = metrics["held_spread_s"], metrics["reference_held_spread_s"]
    assert max(reference_spread.values()) < 0.5, reference_spread
    assert max(spread.values()) < metrics["completion_p50_s"] / 3, spread


def test_a_probed_crowd_reports_each_leecher_until_it_is_complete() -> None:
    spec = register(
        FlashCrowd(file_bytes=1024 * 1024, probe_step=0.5).spec("flash-crowd-small-probed")
    )
    leechers = 6
    metrics = run_scenario(spec.name, nodes=leechers, seed=3, sim_seconds=300).metrics
    probe = metrics["probe"]
    assert probe["columns"] == ["t_s", "pieces_held", "peers_unchoking", "down_kb_s", "up_kb_s"]
    assert len(probe["leechers"]) == leechers
    pieces = metrics["pieces"]
    for rows in probe["leechers"].values():
        times = [row[0] for row in rows]
        held = [row[1] for row in rows]
        assert times == sorted(times) and held == sorted(held)  # progress never goes back
        assert held[-1] == pieces and held[-2] < pieces  # sampled until complete, then not
        assert all(0 <= row[2] <= leechers and row[3] >= 0 and row[4] >= 0 for row in rows)
        assert any(row[2] > 0 and row[3] > 0 for row in rows)
    # What was downloaded adds up to at least the file (duplicates may add a little): each
    # rate covers the time since the sample before (the last one is cut short by the end).
    for rows in probe["leechers"].values():
        times = [row[0] for row in rows]
        spans = [now - then for then, now in zip([0.0, *times[:-1]], times, strict=True)]
        got = sum(row[3] * 1000 * span for row, span in zip(rows, spans, strict=True))
        assert metrics["file_bytes"] * 0.99 <= got <= metrics["file_bytes"] * 1.2, got
    # An unprobed run carries no probe (its task is not started: the run is unchanged).
    plain = run_scenario(SMALL.name, nodes=leechers, seed=3, sim_seconds=300)
    assert "probe" not in plain.metrics


def test_a_crowd_with_the_metadata_imported_asks_nobody_for_it() -> None:
    """Leechers that imported the container (as from a .torrent) start with the transfer:
    no manifest or piece layer crosses the network, and the crowd completes as the other."""
    leechers = 24
    metrics = run_scenario(SMALL_IMPORTED.name, nodes=leechers, seed=3, sim_seconds=300).metrics
    assert metrics["completed"] == leechers and metrics["failed"] == 0
    assert metrics["metadata_p50_s"] == metrics["metadata_p100_s"] == 0.0
    sent = metrics["messages_received"]
    assert not {"GetManifest", "Manifest", "GetLayer", "Layer"} & set(sent), sent
    assert "Block" in sent and metrics["blocks_rejected"] == 0
    assert metrics["bound_ratio"] < 3.0, metrics["bound_ratio"]
    assert 1 <= metrics["seed_copies_for_first_copy"] < 1.3, metrics["seed_copies_for_first_copy"]


def test_a_crowd_stopped_mid_transfer_shuts_down_without_errors(caplog: Any) -> None:
    """Stopping every node while pieces flow runs the node's disconnect callbacks while the
    swarm engines stop: they must not start tasks in an engine's closed nursery. They did
    ("Nursery is closed to new arrivals", and the run ended in that error) in this crowd,
    stopped at 5 s; a race, so another stop time or seed may not meet it."""
    leechers = 40
    with caplog.at_level(logging.ERROR):
        metrics = run_scenario("flash-crowd", nodes=leechers, seed=3, sim_seconds=5.0).metrics
    assert sum(metrics["upload_timeline"]) > 0, "nothing moved: not stopped mid-transfer"
    assert metrics["completed"] < leechers, "all done: not stopped mid-transfer"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_liars_hide_what_they_hold_until_done_and_the_crowd_reports_their_lead() -> None:
    """The adversary of `flash-crowd-liars` (`simulations.adversaries.HidingEngine`) works as
    meant: no peer hears a Have or a Bitfield from a liar before it has its file, the swarm
    still serves it, and the scenario says how much sooner than the honest the liars were."""
    metrics = run_scenario(SMALL_LIARS.name, nodes=16, seed=3).metrics
    assert metrics["completed"] == 16
    assert metrics["liars"] == 2 and len(metrics["liars_done_s"]) == 2
    assert metrics["liar_told_before_done"] == 0
    assert isinstance(metrics["liar_lead_s"], float)
    plain = run_scenario(SMALL.name, nodes=16, seed=3).metrics
    assert "liars" not in plain


def test_tricklers_tell_a_little_and_are_never_silent() -> None:
    """The adversary of `flash-crowd-tricklers` speaks (peers hear Haves from it before it
    has its file, so the silent rule does not put it last) and still gets its file."""
    metrics = run_scenario(SMALL_TRICKLERS.name, nodes=16, seed=3).metrics
    assert metrics["completed"] == 16
    assert metrics["liars"] == 2 and len(metrics["liars_done_s"]) == 2
    assert metrics["liar_told_before_done"] > 0
    assert isinstance(metrics["liar_lead_s"], float)


def test_a_trickle_is_one_piece_per_peer_per_interval() -> None:
    have = HaveByAlias(3, (4, 5, 6))
    other = Unchoke()
    kept, told = trickle([other, have, Have(b"r" * 32, 16384, (7,))], -math.inf, now=10.0)
    assert kept == (other, HaveByAlias(3, (4,))) and told
    kept, told = trickle(
        [have, Bitfield(b"r" * 32, 16384, b"\xff")], 10.0 - TRICKLE_SECONDS / 2, 10.0
    )
    assert kept == () and not told
    kept, told = trickle([Bitfield(b"r" * 32, 16384, b"\xff"), have], 10.0 - TRICKLE_SECONDS, 10.0)
    assert kept == (HaveByAlias(3, (4,)),) and told  # a Bitfield never goes, even in turn
