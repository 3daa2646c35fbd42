"""Kademlia distributed hash table: trackerless discovery of peers and records.

Imports `wire` only. The routing table, lookups and RPC handling are sans-IO cores; a thin Trio
shell runs them over the Network seam's datagrams.
"""
