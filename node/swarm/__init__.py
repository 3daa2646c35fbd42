"""The swarm engine: one connection per remote node carries every container both share.

* `storeapi`: the part of the store the engine uses (`node.store.Store` in a node, an
  in-memory one in simulations);
* `transfer`: per-file download state (layer, block verification, piece assembly) and the
  upload side's piece cache with proofs;
* `session`: per-connection state (index exchange, choke and interest, requests in flight,
  rates, strikes);
* `engine`: `SwarmEngine`, the Trio service tying picker, choker, index exchange and store.
"""
