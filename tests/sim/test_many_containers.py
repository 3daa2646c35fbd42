"""Many containers over one connection, at a size CI affords (the 10,000-container figures
come from `kinswarm sim many-containers`)."""

from __future__ import annotations

from simulations.harness import register, run_scenario
from simulations.scenarios.many_containers import ManyContainers

SMALL = register(ManyContainers(containers=1000).spec("many-containers-small"))


def test_a_thousand_containers_share_one_connection_and_a_small_index() -> None:
    metrics = run_scenario(SMALL.name, seed=2, sim_seconds=600).metrics
    assert metrics["fetched"] == 500 and metrics["failed"] == 0
    assert metrics["connections_a"] == metrics["connections_b"] == 1
    assert metrics["connections_accepted"] == 1
    # One summary each way, then one increment per fetched container: far from the
    # 1,000 entries each way a naive exchange would send on every connect.
    assert metrics["index_messages"]["Summary"] == 2
    assert metrics["index_bytes_per_container"] < 200
    assert metrics["first_request_s"] < 5
    assert metrics["throughput_share_of_link"] > 0.8
