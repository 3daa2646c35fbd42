"""Deterministic simulations: the real node code on a virtual network under a mock clock.

Imports `node`, `dht` and `wire`; nothing imports this package.
"""
