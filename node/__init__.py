"""The running kinswarm node: the Network seam, the supervised nursery tree, peer connections,
the command line. It imports `wire` and `dht`, never `simulations`."""
