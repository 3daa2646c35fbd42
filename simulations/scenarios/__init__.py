"""Scenarios for `kinswarm sim`. Importing this package registers them all."""

from simulations.scenarios import (
    crash_restart,
    dht,
    flash_crowd,
    handshake_mesh,
    many_containers,
)

__all__ = ["crash_restart", "dht", "flash_crowd", "handshake_mesh", "many_containers"]
