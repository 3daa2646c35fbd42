"""The DHT node's protocol engine, sans-IO: requests in flight, answering requests, learning
contacts, verifying them, storing what others announce.

Fed datagrams (`datagram_received`), the time (`expire`), and requests from the service
(`request`), it queues datagrams to send (`take_outbox`) and calls the completion callback of
each request exactly once, with a `Reply` or a `Failure`. It never touches a socket or reads a
clock, so the same engine runs on UDP and in the simulator, and the tests drive it by hand.

Security decisions, each in one place:

* **Verified contacts only enter the routing table.** To verify a node we send it a fresh
  16-byte challenge; the answer must carry a public key whose SHA-256 is the node's id and an
  Ed25519 signature over the challenge and our id. The challenge rides on the lookup request
  we send an unverified node anyway (`find_node`, `get_providers`, `get`: the answer carries
  the proof), so verification costs no extra datagram; a node that only *queried* us gets a
  `ping`. Contacts merely mentioned in responses are lookup candidates, nothing more, until
  they answer us themselves.
* **Responses must come from where the request went**, and from the node id we asked (when
  we knew it); anything else is ignored. Transaction ids are random per request.
* **Write tokens** (`announce`, `put`) are bound to the requester's address, as in BEP 5, so
  nobody can announce on behalf of another address.
* **Rate limits and bans per source host.** A host over its rate is ignored; a host that
  sends garbage is penalised, and once banned it is ignored and removed from the table.
* **Bounded everything:** outstanding requests, verifications in progress, the verified-keys
  cache, the store (per source and in total).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import attrs
import nacl.exceptions
import nacl.signing

from dht.contacts import Contact, encode_contact
from dht.messages import (
    ERROR_BAD_TOKEN,
    ERROR_PROTOCOL,
    ERROR_REJECTED,
    MAX_CONTACTS,
    MAX_PROVIDERS,
    REQUEST_METHOD,
    Announce,
    Datagram,
    Error,
    FindNode,
    Get,
    GetProviders,
    Nodes,
    Ping,
    Pong,
    Providers,
    Put,
    Stored,
    Value,
    decode_args,
    decode_datagram,
    decode_result,
    encode_request,
    encode_response,
    ping_statement,
)
from dht.ratelimit import Penalties, RateLimiter
from dht.records import ImmutableRecord, Provider, canonical_host
from dht.routing import Entry, RoutingTable
from dht.storage import RecordStore, StoreRejected
from dht.tokens import TokenIssuer
from wire.errors import DecodeError
from wire.identity import LocalIdentity, node_id_of
from wire.schema import Record

Address = tuple[str, int]

REQUEST_TIMEOUT_SECONDS: Final = 2.0
"""A request unanswered this long has failed (lookups stop waiting much sooner: see
`dht.lookup`); round trips on the internet rarely pass 1 s."""
MAX_OUTSTANDING: Final = 2048
MAX_VERIFYING: Final = 64
VERIFIED_CACHE: Final = 4096
REVERIFY_AFTER_SECONDS: Final = 600.0
"""A node that failed verification is not asked again for this long."""


@attrs.frozen
class Reply:
    node_id: bytes
    address: Address
    result: Record
    """The method's result record (never `Error`: errors come as a Failure)."""
    seen_as: Address | None


@attrs.frozen
class Failure:
    address: Address
    reason: str
    """"timeout", "error: <message>", "bad response", or "cancelled"."""


Outcome = Reply | Failure
Callback = Callable[[Outcome], None]


@attrs.define(slots=True, eq=False)
class _Pending:
    tx: bytes
    address: Address
    node_id: bytes | None
    method: str
    deadline: float
    callback: Callback
    challenge: bytes | None = None


@attrs.define
class Traffic:
    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests_answered: int = 0
    timeouts: int = 0
    dropped_rate_limited: int = 0
    dropped_garbage: int = 0
    dropped_unexpected: int = 0
    verifications_passed: int = 0
    verifications_failed: int = 0


class DhtEngine:
    def __init__(
        self,
        identity: LocalIdentity,
        *,
        now: float,
        random_source: random.Random,
        crypto_random: Callable[[int], bytes],
        k: int = 20,
        store: RecordStore | None = None,
        rate_limiter: RateLimiter | None = None,
        penalties: Penalties | None = None,
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self._signing_key: nacl.signing.SigningKey = identity.signing_key
        self.table = RoutingTable(self.node_id, now=now, k=k)
        # `is None`, not `or`: these classes define __len__, so an empty one is falsy.
        self.store = RecordStore() if store is None else store
        self.tokens = TokenIssuer(lambda: crypto_random(32))
        self.rate_limiter = (
            RateLimiter(rate_per_second=50.0, burst=200.0) if rate_limiter is None else rate_limiter
        )
        self.penalties = Penalties() if penalties is None else penalties
        self.traffic = Traffic()
        self.external_address: Address | None = None
        self._random = random_source
        self._crypto_random = crypto_random
        self._pending: dict[bytes, _Pending] = {}
        self._verified: OrderedDict[bytes, bytes] = OrderedDict()
        self._verifying: dict[bytes, float] = {}
        self._failed_verification: dict[bytes, float] = {}
        self._outbox: list[tuple[bytes, Address]] = []

    # -- the service's side ---------------------------------------------------------------

    def take_outbox(self) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def request(
        self,
        address: Address,
        args: Record,
        now: float,
        callback: Callback,
        *,
        node_id: bytes | None = None,
    ) -> None:
        """Queue a request; `callback` gets its outcome exactly once."""
        if len(self._pending) >= MAX_OUTSTANDING:
            callback(Failure(address, "too many requests in flight"))
            return
        tx = self._new_tx()
        if (
            isinstance(args, FindNode | GetProviders | Get)
            and node_id is not None
            and not self.is_verified(node_id)
            and args.challenge is None
        ):
            args = attrs.evolve(args, challenge=self._crypto_random(16))
        challenge = (
            args.challenge if isinstance(args, Ping | FindNode | GetProviders | Get) else None
        )
        method = _method_of(args)
        if challenge is not None and node_id is not None:
            self._verifying[node_id] = now  # this request verifies it: no second ping
        self._pending[tx] = _Pending(
            tx, address, node_id, method, now + REQUEST_TIMEOUT_SECONDS, callback, challenge
        )
        self._send(encode_request(tx, self.node_id, args), address)

    def ping(
        self,
        address: Address,
        now: float,
        callback: Callback | None = None,
        *,
        node_id: bytes | None = None,
    ) -> None:
        """Ping with a fresh challenge: a good pong verifies the node and adds it."""
        self.request(
            address, Ping(self._crypto_random(16)), now, callback or _ignore, node_id=node_id
        )

    def expire(self, now: float) -> None:
        """Fail requests whose time is up."""
        overdue = [p for p in self._pending.values() if p.deadline <= now]
        for pending in overdue:
            del self._pending[pending.tx]
            self.traffic.timeouts += 1
            if pending.node_id is not None:
                self.table.failure(pending.node_id, now)  # evicts after repeated failures
            self._verifying.pop(pending.node_id or b"", None)
            pending.callback(Failure(pending.address, "timeout"))
        self.store.expire(now)

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def contacts_near(self, target: bytes, count: int | None = None) -> list[Contact]:
        return [entry.contact for entry in self.table.closest(target, count)]

    def is_verified(self, node_id: bytes) -> bool:
        return node_id in self._verified or node_id in self.table

    # -- the network's side ---------------------------------------------------------------

    def datagram_received(self, data: bytes, source: Address, now: float) -> None:
        host = source[0]
        self.traffic.datagrams_received += 1
        self.traffic.bytes_received += len(data)
        if self.penalties.is_banned(host, now):
            self.traffic.dropped_garbage += 1
            return
        if not self.rate_limiter.allow(host, now):
            self.traffic.dropped_rate_limited += 1
            return
        try:
            datagram = decode_datagram(data)
        except DecodeError:
            self._punish(host, now)
            return
        if datagram.sender == self.node_id:
            return  # our own datagram reflected, or someone claiming our id
        if datagram.kind == "q":
            self._on_request(datagram, source, now)
        else:
            self._on_response(datagram, source, now)

    # -- requests from others ---------------------------------------------------------------

    def _on_request(self, datagram: Datagram, source: Address, now: float) -> None:
        try:
            args = decode_args(datagram)
        except DecodeError as exc:
            self._punish(source[0], now)
            self._reply(datagram, Error(ERROR_PROTOCOL, str(exc)[:200]), source)
            return
        self._heard_from(datagram.sender, source, now)
        self.traffic.requests_answered += 1
        self._reply(datagram, self._answer(args, datagram.sender, source, now), source)

    def _proof(self, challenge: bytes | None, requester: bytes) -> Pong | None:
        if challenge is None:
            return None
        signature = self._signing_key.sign(ping_statement(challenge, requester)).signature
        return Pong(self.identity.public_key, signature)

    def _answer(self, args: Record, sender: bytes, source: Address, now: float) -> Record:
        if isinstance(args, Ping):
            proof = self._proof(args.challenge, sender)
            assert proof is not None
            return proof
        if isinstance(args, FindNode):
            return Nodes(
                self._compact_near(args.target, sender, MAX_CONTACTS),
                self._proof(args.challenge, sender),
            )
        if isinstance(args, GetProviders):
            providers = self.store.get_providers(args.key, now, MAX_PROVIDERS)
            return Providers(
                tuple(encode_contact(Contact(p.node_id, p.host, p.port)) for p in providers),
                self._compact_near(args.key, sender, 8),
                self.tokens.issue(source, now),
                self._proof(args.challenge, sender),
            )
        if isinstance(args, Announce):
            if not self.tokens.check(args.token, source, now):
                return Error(ERROR_BAD_TOKEN, "bad or expired token")
            try:
                provider = Provider(sender, canonical_host(source[0]), args.port)
                self.store.add_provider(args.key, provider, source_host=source[0], now=now)
            except ValueError:
                return Error(ERROR_REJECTED, "this address cannot be a provider")
            except StoreRejected as exc:
                return Error(ERROR_REJECTED, exc.reason[:200])
            return Stored()
        if isinstance(args, Get):
            record = self.store.get(args.key, now)
            nodes = self._compact_near(args.key, sender, 8)
            token = self.tokens.issue(source, now)
            proof = self._proof(args.challenge, sender)
            if isinstance(record, ImmutableRecord):
                return Value(nodes, token, immutable=record.value, proof=proof)
            return Value(nodes, token, mutable=record, proof=proof)
        if isinstance(args, Put):
            if not self.tokens.check(args.token, source, now):
                return Error(ERROR_BAD_TOKEN, "bad or expired token")
            try:
                if args.mutable is not None:
                    self.store.put_mutable(
                        args.mutable, cas=args.cas, source_host=source[0], now=now
                    )
                else:
                    assert args.immutable is not None
                    self.store.put_immutable(
                        ImmutableRecord(args.immutable), source_host=source[0], now=now
                    )
            except StoreRejected as exc:
                return Error(ERROR_REJECTED, exc.reason[:200])
            except DecodeError as exc:
                return Error(ERROR_PROTOCOL, str(exc)[:200])
            return Stored()
        return Error(ERROR_PROTOCOL, "unsupported request")

    def _compact_near(self, target: bytes, requester: bytes, count: int) -> tuple[bytes, ...]:
        near = [e for e in self.table.closest(target, count + 1) if e.node_id != requester]
        return tuple(encode_contact(entry.contact) for entry in near[:count])

    def _reply(self, datagram: Datagram, result: Record, source: Address) -> None:
        try:
            data = encode_response(datagram.tx, self.node_id, result, source)
        except ValueError:  # too large: drop the optional parts rather than not answer
            data = encode_response(
                datagram.tx, self.node_id, Error(ERROR_PROTOCOL, "too big"), source
            )
        self._send(data, source)

    # -- responses to our requests ------------------------------------------------------------

    def _on_response(self, datagram: Datagram, source: Address, now: float) -> None:
        pending = self._pending.get(datagram.tx)
        if (
            pending is None
            or pending.address != source
            or (pending.node_id is not None and pending.node_id != datagram.sender)
        ):
            self.traffic.dropped_unexpected += 1
            return
        del self._pending[datagram.tx]
        if pending.challenge is not None:
            self._verifying.pop(datagram.sender, None)  # answered, proof or not
        try:
            result = decode_result(datagram, pending.method)
        except DecodeError:
            self._punish(source[0], now)
            pending.callback(Failure(source, "bad response"))
            return
        if isinstance(result, Error):
            self._heard_from(datagram.sender, source, now)
            pending.callback(Failure(source, f"error: {result.message}"))
            return
        if datagram.seen_as is not None:
            self.external_address = datagram.seen_as
        proof = result if isinstance(result, Pong) else getattr(result, "proof", None)
        if pending.challenge is not None and proof is not None:
            if not self._check_pong(proof, pending.challenge, datagram.sender, source, now):
                pending.callback(Failure(source, "bad response"))
                return
        else:
            self._heard_from(datagram.sender, source, now)
        pending.callback(Reply(datagram.sender, source, result, datagram.seen_as))

    def _check_pong(
        self, pong: Pong, challenge: bytes, sender: bytes, source: Address, now: float
    ) -> bool:
        self._verifying.pop(sender, None)
        try:
            if node_id_of(pong.public_key) != sender:
                raise ValueError("key does not match the id")
            nacl.signing.VerifyKey(pong.public_key).verify(
                ping_statement(challenge, self.node_id), pong.signature
            )
        except (ValueError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            self.traffic.verifications_failed += 1
            self._failed_verification[sender] = now
            self.table.remove(sender, now)
            self._punish(source[0], now)
            return False
        self.traffic.verifications_passed += 1
        self._verified[sender] = pong.public_key
        self._verified.move_to_end(sender)
        while len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        self._observe(sender, source, pong.public_key, now)
        return True

    # -- learning contacts --------------------------------------------------------------------

    def _heard_from(self, node_id: bytes, source: Address, now: float) -> None:
        public_key = self._verified.get(node_id)
        entry = self.table.get(node_id)
        if public_key is None and entry is not None:
            public_key = entry.public_key  # verified earlier; the cache let it go
        if public_key is not None:
            self._observe(node_id, source, public_key, now)
            return
        if (
            node_id in self._verifying
            or len(self._verifying) >= MAX_VERIFYING
            or now - self._failed_verification.get(node_id, -1e18) < REVERIFY_AFTER_SECONDS
        ):
            return
        self._verifying[node_id] = now
        self.ping(source, now, node_id=node_id)

    def _observe(self, node_id: bytes, source: Address, public_key: bytes, now: float) -> None:
        questionable = self.table.observe(node_id, source[0], source[1], public_key, now)
        if questionable is not None:
            self._check_liveness(questionable, now)

    def _check_liveness(self, entry: Entry, now: float) -> None:
        self.ping((entry.host, entry.port), now, node_id=entry.node_id)

    # -- small helpers --------------------------------------------------------------------

    def _punish(self, host: str, now: float) -> None:
        self.traffic.dropped_garbage += 1
        if self.penalties.punish(host, now):
            for entry in [e for e in self.table.entries() if e.host == host]:
                self.table.remove(entry.node_id, now)

    def _send(self, data: bytes, address: Address) -> None:
        self.traffic.datagrams_sent += 1
        self.traffic.bytes_sent += len(data)
        self._outbox.append((data, address))

    def _new_tx(self) -> bytes:
        while True:
            tx = self._random.randbytes(4)
            if tx not in self._pending:
                return tx


def _method_of(args: Record) -> str:
    return REQUEST_METHOD[type(args)]


def _ignore(outcome: Outcome) -> None:
    return None
