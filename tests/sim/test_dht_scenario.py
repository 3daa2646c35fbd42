"""The DHT at small scale in the simulator: the checks CI can afford (the 10,000-node figures
come from `kinswarm sim dht --nodes 10000`)."""

from __future__ import annotations

from simulations.harness import run_scenario


def test_lookups_find_providers_quickly() -> None:
    metrics = run_scenario("dht", nodes=150, seed=2, sim_seconds=900).metrics
    assert metrics["provider_lookups"] >= 100
    assert metrics["lookup_success_rate"] >= 0.99
    assert metrics["latency_median_s"] < 1.0
    assert metrics["find_node_accuracy"] >= 0.9
    assert metrics["routing_table_median"] >= 20


def test_lookups_survive_a_third_of_the_nodes_being_replaced() -> None:
    metrics = run_scenario("dht-churn", nodes=150, seed=3, sim_seconds=900).metrics
    assert metrics["nodes_left"] == 50
    assert metrics["lookup_success_rate"] >= 0.99
    assert metrics["latency_median_s"] < 1.0
