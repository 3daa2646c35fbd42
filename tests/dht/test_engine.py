"""The DHT engine, driven by hand: engines hand each other datagrams, time is explicit."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.contacts import decode_contacts
from dht.engine import REQUEST_TIMEOUT_SECONDS, DhtEngine, Failure, Outcome, Reply
from dht.messages import (
    ERROR_BAD_TOKEN,
    Announce,
    FindNode,
    GetProviders,
    Nodes,
    Pong,
    Providers,
    encode_response,
)
from dht.ratelimit import Penalties, RateLimiter
from wire.identity import LocalIdentity


class Net:
    """Engines at addresses, and a wire that can lose or rewrite datagrams."""

    def __init__(self) -> None:
        self.engines: dict[tuple[str, int], DhtEngine] = {}
        self.now = 100.0

    def add(self, name: str, address: tuple[str, int], **kwargs: object) -> DhtEngine:
        seed = hashlib.sha256(name.encode()).digest()
        rng = random.Random(name)
        engine = DhtEngine(
            LocalIdentity(seed),
            now=self.now,
            random_source=rng,
            crypto_random=rng.randbytes,
            **kwargs,  # type: ignore[arg-type]
        )
        self.engines[address] = engine
        return engine

    def address_of(self, engine: DhtEngine) -> tuple[str, int]:
        return next(a for a, e in self.engines.items() if e is engine)

    def deliver(self, *, drop: bool = False) -> int:
        """Deliver every queued datagram until the network is quiet. Returns how many."""
        count = 0
        while True:
            moved = False
            for source, engine in list(self.engines.items()):
                for data, destination in engine.take_outbox():
                    moved = True
                    count += 1
                    target = self.engines.get(destination)
                    if target is not None and not drop:
                        target.datagram_received(data, source, self.now)
            if not moved:
                return count


def outcomes() -> tuple[list[Outcome], object]:
    got: list[Outcome] = []
    return got, got.append


def test_first_contact_is_verified_by_a_signed_challenge_then_tabled() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    b = net.add("b", ("10.0.1.1", 1))
    got, sink = outcomes()
    a.ping(("10.0.1.1", 1), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    (reply,) = got
    assert isinstance(reply, Reply) and isinstance(reply.result, Pong)
    assert reply.node_id == b.node_id
    assert b.node_id in a.table and a.is_verified(b.node_id)
    # b heard a request from a stranger: it verified a in turn.
    assert a.node_id in b.table
    assert reply.seen_as == ("10.0.0.1", 1) and a.external_address == ("10.0.0.1", 1)


def test_a_pong_with_a_key_that_does_not_match_the_id_is_refused() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    liar = net.add("liar", ("10.0.1.1", 1))
    other = LocalIdentity(hashlib.sha256(b"someone else").digest())
    liar.identity = other  # answers pings signing with another key than its id derives from
    liar._signing_key = other.signing_key
    got, sink = outcomes()
    a.ping(("10.0.1.1", 1), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    assert isinstance(got[0], Failure) and got[0].reason == "bad response"
    assert len(a.table) == 0 and a.traffic.verifications_failed >= 1


def test_unverified_contacts_are_queried_but_not_tabled() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    b = net.add("b", ("10.0.1.1", 1))
    for index in range(5):
        other = net.add(f"n{index}", (f"10.0.{index + 10}.1", 1))
        b.ping(net.address_of(other), net.now)
    net.deliver()
    assert len(b.table) == 5
    got, sink = outcomes()
    a.request(("10.0.1.1", 1), FindNode(a.node_id), net.now, sink)  # type: ignore[arg-type]
    net.deliver(drop=False)
    reply = got[0]
    assert isinstance(reply, Reply) and isinstance(reply.result, Nodes)
    returned = decode_contacts(reply.result.nodes)
    assert len(returned) == 5
    assert all(c.node_id not in a.table for c in returned)  # mentioned is not verified
    sent_before = a.traffic.datagrams_sent - a.traffic.requests_answered
    for contact in returned:  # a lookup queries them: the query carries the challenge
        a.request(
            contact.address, FindNode(a.node_id), net.now, lambda o: None, node_id=contact.node_id
        )
    net.deliver()
    assert all(c.node_id in a.table for c in returned)
    requests_sent = a.traffic.datagrams_sent - a.traffic.requests_answered - sent_before
    assert requests_sent == 5, "verified without extra requests"


def test_tokens_bind_announces_to_the_asking_address() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    net.add("b", ("10.0.1.1", 1))
    c = net.add("c", ("10.0.2.1", 1))
    key = hashlib.sha256(b"container").digest()
    got, sink = outcomes()
    a.request(("10.0.1.1", 1), GetProviders(key), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    token = got[0].result.token  # type: ignore[union-attr]
    # c replays a's token from its own address: refused.
    c.request(("10.0.1.1", 1), Announce(key, 7420, token), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    assert isinstance(got[1], Failure) and "token" in got[1].reason
    a.request(("10.0.1.1", 1), Announce(key, 7420, token), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    assert isinstance(got[2], Reply)
    a.request(("10.0.1.1", 1), GetProviders(key), net.now, sink)  # type: ignore[arg-type]
    net.deliver()
    result = got[3].result  # type: ignore[union-attr]
    assert isinstance(result, Providers)
    (provider,) = decode_contacts(result.providers)
    assert provider.node_id == a.node_id and provider.address == ("10.0.0.1", 7420)
    assert ERROR_BAD_TOKEN == 204


def test_responses_from_the_wrong_address_or_id_are_ignored() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    b = net.add("b", ("10.0.1.1", 1))
    got, sink = outcomes()
    a.request(("10.0.1.1", 1), FindNode(a.node_id), net.now, sink, node_id=b.node_id)  # type: ignore[arg-type]
    ((request, _),) = a.take_outbox()
    tx = request[request.index(b"\xa1t\xc4\x04") + 4 : request.index(b"\xa1t\xc4\x04") + 8]
    forged = encode_response(tx, b.node_id, Nodes(()), None)
    a.datagram_received(forged, ("10.6.6.6", 1), net.now)  # right tx, wrong address
    assert got == [] and a.traffic.dropped_unexpected == 1
    wrong_id = encode_response(tx, b"\x07" * 32, Nodes(()), None)
    a.datagram_received(wrong_id, ("10.0.1.1", 1), net.now)  # right address, wrong id
    assert got == [] and a.traffic.dropped_unexpected == 2


def test_unanswered_requests_fail_and_dead_contacts_are_evicted() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    b = net.add("b", ("10.0.1.1", 1))
    a.ping(("10.0.1.1", 1), net.now)
    net.deliver()
    assert b.node_id in a.table
    for _ in range(3):
        got, sink = outcomes()
        a.request(("10.0.1.1", 1), FindNode(a.node_id), net.now, sink, node_id=b.node_id)  # type: ignore[arg-type]
        net.deliver(drop=True)
        assert a.next_deadline() == net.now + REQUEST_TIMEOUT_SECONDS
        net.now += REQUEST_TIMEOUT_SECONDS
        a.expire(net.now)
        assert isinstance(got[0], Failure) and got[0].reason == "timeout"
    assert b.node_id not in a.table


def test_garbage_gets_a_host_banned_and_dropped_from_the_table() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1), penalties=Penalties(threshold=3, window=60, ban_duration=600))
    b = net.add("b", ("10.0.1.1", 1))
    a.ping(("10.0.1.1", 1), net.now)
    net.deliver()
    assert b.node_id in a.table
    for _ in range(3):
        a.datagram_received(b"\xff garbage", ("10.0.1.1", 1), net.now)
    assert b.node_id not in a.table
    a.ping(("10.0.1.1", 1), net.now)
    net.deliver()
    assert b.node_id not in a.table  # banned: its pong is ignored too


def test_a_flooding_host_is_rate_limited() -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1), rate_limiter=RateLimiter(rate_per_second=10, burst=20))
    flooder = net.add("f", ("10.0.9.1", 1))
    for _ in range(100):
        flooder.request(("10.0.0.1", 1), FindNode(a.node_id), net.now, lambda o: None)
    net.deliver()
    assert a.traffic.requests_answered <= 21
    assert a.traffic.dropped_rate_limited >= 79


@settings(max_examples=300)
@given(st.binary(max_size=1400))
def test_any_datagram_is_survived(data: bytes) -> None:
    net = Net()
    a = net.add("a", ("10.0.0.1", 1))
    a.datagram_received(data, ("10.0.5.5", 9), net.now)
    a.expire(net.now + 10)
