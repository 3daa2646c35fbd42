"""kinswarm's wire formats and sans-IO protocol cores.

Everything in this package is pure: it is fed bytes, messages and the current time and answers
with bytes to send and events. It never touches a socket, a clock or a random generator of its
own, so the same code runs on real sockets, in unit tests without an event loop and in the
deterministic simulator. It imports nothing else of ours.
"""
