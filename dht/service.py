"""The DHT as a Trio service: the engine on a datagram endpoint, lookups, announces, upkeep.

`DhtService.run` is a supervised node service. It binds a datagram endpoint through the
Network seam (UDP on real networks, virtual in the simulator) and runs three tasks: the
receive loop feeding the engine, the timer that expires requests, and upkeep (bootstrap,
bucket refresh, announcing the keys this node provides, republishing its records, saving the
routing table). Operations (`find_node`, `find_providers`, `announce`, `get`, `put_mutable`)
are coroutines that drive a sans-IO `Lookup` with the engine's replies.

**Announces are spread out.** Every provided key has a fixed phase in the announce interval
(derived from the key and our id), and upkeep announces the keys whose phase has come, a few
at a time: a node holding 100,000 containers announces about one key every 18 ms, never all
at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from dht.contacts import Contact, decode_contacts
from dht.engine import Address, DhtEngine, Failure, Outcome, Reply
from dht.ids import id_in_bucket
from dht.lookup import Lookup
from dht.messages import Announce, FindNode, Get, GetProviders, Providers, Put, Value
from dht.records import ImmutableRecord, MutableRecord, Provider, canonical_host
from dht.storage import StoreRejected
from wire.canonical import pack_canonical, unpack_canonical
from wire.errors import DecodeError
from wire.identity import LocalIdentity

log = logging.getLogger("kinswarm.dht")

HostPort = tuple[str, int]


class Endpoint(Protocol):
    """A bound datagram socket: the part of `node.network.DatagramEndpoint` we use."""

    @property
    def local_address(self) -> HostPort: ...

    async def send(self, data: bytes, destination: HostPort) -> None: ...

    async def receive(self) -> tuple[bytes, HostPort]: ...

    async def aclose(self) -> None: ...


class DatagramNetwork(Protocol):
    """The part of the node's Network seam the DHT needs (dht/ must not import node/; the
    real and the simulated networks both satisfy this structurally)."""

    @property
    def random(self) -> random.Random: ...

    def crypto_random(self, size: int) -> bytes: ...

    def now(self) -> float: ...

    async def open_datagram_endpoint(self, address: HostPort) -> Endpoint: ...


ANNOUNCE_INTERVAL_SECONDS: Final = 30 * 60.0
ANNOUNCE_TARGETS: Final = 8
"""Providers are stored on the 8 closest nodes that answered (BEP 5 does the same)."""
MAX_CONCURRENT_ANNOUNCES: Final = 4
UPKEEP_PERIOD_SECONDS: Final = 10.0
REFRESH_CHECK_SECONDS: Final = 60.0
SAVE_PERIOD_SECONDS: Final = 600.0
REPUBLISH_SECONDS: Final = 60 * 60.0
BOOTSTRAP_RETRY_SECONDS: Final = 30.0
MAX_SAVED_CONTACTS: Final = 500


@attrs.frozen
class LookupStats:
    rpcs: int
    hops: int
    seconds: float


@attrs.frozen
class ProvidersResult:
    providers: list[Provider]
    closest: list[Contact]
    stats: LookupStats


@attrs.frozen
class ValueResult:
    value: MutableRecord | ImmutableRecord | None
    closest: list[Contact]
    stats: LookupStats


class DhtService:
    def __init__(
        self,
        *,
        network: DatagramNetwork,
        identity: LocalIdentity,
        bind: HostPort,
        bootstrap: Sequence[HostPort] = (),
        state_file: Path | None = None,
        provided_keys: Callable[[], Iterable[bytes]] | None = None,
        announce_port: int | None = None,
        paths: int = 1,
        announce_interval: float = ANNOUNCE_INTERVAL_SECONDS,
    ) -> None:
        self.network = network
        self.identity = identity
        self.bind = bind
        self.bootstrap_addresses = list(bootstrap)
        self.state_file = state_file
        self.provided_keys = provided_keys
        self.announce_port = announce_port
        self.paths = paths
        self.announce_interval = announce_interval
        self.engine: DhtEngine | None = None
        self.endpoint: Endpoint | None = None
        self.local_address: HostPort | None = None
        self._wakeup = trio.Event()
        self._timer_deadline = math.inf
        self._phases: dict[bytes, float] = {}
        """Each provided key's place in the announce interval (hashing it every tick for a
        100,000-container node would cost more than the announces)."""
        self._announced_at: dict[bytes, float] = {}
        self._own_records: dict[bytes, MutableRecord | ImmutableRecord] = {}
        self._started_at = 0.0
        self.announces_sent = 0
        self.lookups_done = 0

    # -- the service ----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED
    ) -> None:
        network = self.network
        now = network.now()
        engine = DhtEngine(
            self.identity,
            now=now,
            random_source=network.random,
            crypto_random=network.crypto_random,
        )
        endpoint = await network.open_datagram_endpoint(self.bind)
        self.engine, self.endpoint = engine, endpoint
        self.local_address = endpoint.local_address
        self._started_at = now
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._timer_loop)
                task_status.started(endpoint.local_address)
                await self._join()
                nursery.start_soon(self._upkeep)
        finally:
            self._save_contacts()
            with trio.CancelScope(shield=True):
                await endpoint.aclose()

    async def _receive_loop(self) -> None:
        engine, endpoint = self._require()
        while True:
            data, source = await endpoint.receive()
            engine.datagram_received(data, source, self.network.now())
            await self._flush()

    async def _timer_loop(self) -> None:
        engine, _ = self._require()
        while True:
            deadline = engine.next_deadline()
            self._timer_deadline = deadline if deadline is not None else math.inf
            with trio.move_on_at(self._timer_deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            engine.expire(self.network.now())
            await self._flush()

    async def _flush(self) -> None:
        engine, endpoint = self._require()
        outbox = engine.take_outbox()
        for data, address in outbox:
            await endpoint.send(data, address)
        if outbox:
            deadline = engine.next_deadline()
            if deadline is not None and deadline < self._timer_deadline:
                self._wakeup.set()  # a new request expires before the timer would wake

    def _require(self) -> tuple[DhtEngine, Endpoint]:
        if self.engine is None or self.endpoint is None:
            raise RuntimeError("the DHT service is not running")
        return self.engine, self.endpoint

    # -- joining and upkeep -----------------------------------------------------------------

    async def _join(self) -> None:
        engine, _ = self._require()
        known = [*self._load_contacts(), *self.bootstrap_addresses]
        await self._ping_all(known)
        if len(engine.table):
            await self.find_node(self.identity.node_id)

    async def _ping_all(self, addresses: Iterable[HostPort]) -> None:
        engine, _ = self._require()
        outcomes = 0
        done = trio.Event()
        targets = list(dict.fromkeys(addresses))
        if not targets:
            return

        def finished(outcome: Outcome) -> None:
            nonlocal outcomes
            outcomes += 1
            if outcomes == len(targets):
                done.set()

        for address in targets:
            engine.ping(address, self.network.now(), finished)
        await self._flush()
        await done.wait()

    async def _upkeep(self) -> None:
        engine, _ = self._require()
        next_refresh = self.network.now() + REFRESH_CHECK_SECONDS
        next_save = self.network.now() + SAVE_PERIOD_SECONDS
        async with trio.open_nursery() as nursery:
            slots = trio.CapacityLimiter(MAX_CONCURRENT_ANNOUNCES)
            while True:
                await trio.sleep(UPKEEP_PERIOD_SECONDS)
                now = self.network.now()
                if not len(engine.table) and self.bootstrap_addresses:
                    await self._ping_all(self.bootstrap_addresses)
                    if len(engine.table):
                        nursery.start_soon(self.find_node, self.identity.node_id)
                if now >= next_refresh:
                    next_refresh = now + REFRESH_CHECK_SECONDS
                    for index in engine.table.stale_buckets(now):
                        target = id_in_bucket(
                            self.identity.node_id,
                            min(index, 255),
                            self.network.random.randbytes(32),
                        )
                        nursery.start_soon(self.find_node, target)
                if now >= next_save:
                    next_save = now + SAVE_PERIOD_SECONDS
                    self._save_contacts()
                for key in self._due_announces(now):
                    nursery.start_soon(self._announce_limited, slots, key)
                for key, record in list(self._own_records.items()):
                    if now - self._announced_at.get(b"put" + key, 0.0) >= REPUBLISH_SECONDS:
                        self._announced_at[b"put" + key] = now
                        nursery.start_soon(self._republish, record)

    def _due_announces(self, now: float) -> list[bytes]:
        """Keys whose phase in the announce interval has come since they were last sent."""
        if self.provided_keys is None or self.announce_port is None:
            return []
        due = []
        interval = self.announce_interval
        cycle_start = now - (now % interval)
        phases = self._phases
        announced = self._announced_at
        for key in self.provided_keys():
            phase = phases.get(key)
            if phase is None:
                phase = phases[key] = _phase(key, self.identity.node_id) * interval
            slot = cycle_start + phase
            if slot > now:
                slot -= interval  # this cycle's moment has not come: the last one counts
            if announced.get(key, -math.inf) < slot:
                announced[key] = now
                due.append(key)
        return due

    async def _announce_limited(self, slots: trio.CapacityLimiter, key: bytes) -> None:
        async with slots:
            await self.announce(key)

    async def _republish(self, record: MutableRecord | ImmutableRecord) -> None:
        if isinstance(record, MutableRecord):
            await self.put_mutable(record)
        else:
            await self.put_immutable(record.value)

    # -- operations ---------------------------------------------------------------------------

    async def find_node(self, target: bytes) -> tuple[list[Contact], LookupStats]:
        lookup, _ = await self._run_lookup(target, lambda: FindNode(target))
        return lookup.results(), self._stats(lookup)

    async def find_providers(self, key: bytes, *, want: int = 20) -> ProvidersResult:
        """Providers of `key`; stops as soon as `want` distinct providers are known."""
        engine, _ = self._require()
        found: dict[bytes, Provider] = {
            p.node_id: p for p in engine.store.get_providers(key, self.network.now(), want)
        }
        if len(found) >= want:
            return ProvidersResult(list(found.values()), [], LookupStats(0, 0, 0.0))

        def collect(reply: Reply, lookup: Lookup) -> None:
            assert isinstance(reply.result, Providers)
            for contact in decode_contacts(reply.result.providers):
                found.setdefault(
                    contact.node_id, Provider(contact.node_id, contact.host, contact.port)
                )
            if len(found) >= want:
                lookup.stop(self.network.now())

        lookup, _ = await self._run_lookup(key, lambda: GetProviders(key), collect)
        return ProvidersResult(list(found.values()), lookup.results(), self._stats(lookup))

    async def announce(self, key: bytes) -> int:
        """Announce that we provide `key`; returns how many nodes stored it."""
        if self.announce_port is None:
            raise RuntimeError("this DHT node has no port to announce")
        port = self.announce_port
        self._provide_locally(key, port)
        tokens: dict[bytes, tuple[Contact, bytes]] = {}

        def collect(reply: Reply, lookup: Lookup) -> None:
            assert isinstance(reply.result, Providers)
            tokens[reply.node_id] = (Contact(reply.node_id, *reply.address), reply.result.token)

        lookup, _ = await self._run_lookup(key, lambda: GetProviders(key), collect)
        targets = [tokens[c.node_id] for c in lookup.results() if c.node_id in tokens]
        stored = await self._store_on(
            targets[:ANNOUNCE_TARGETS], lambda token: Announce(key, port, token)
        )
        self.announces_sent += 1
        self._announced_at[key] = self.network.now()
        return stored

    def _provide_locally(self, key: bytes, port: int) -> None:
        """Keep our own provider record too: a node asked about a key it provides says so."""
        engine, _ = self._require()
        host = (engine.external_address or self.local_address or self.bind)[0]
        try:
            provider = Provider(self.identity.node_id, canonical_host(host), port)
            engine.store.add_provider(key, provider, source_host=host, now=self.network.now())
        except (ValueError, StoreRejected) as exc:
            log.debug("not keeping our own provider record for %s: %s", key.hex()[:16], exc)

    async def get(self, key: bytes) -> ValueResult:
        """The freshest valid record under `key` (highest seq for mutable records)."""
        best: list[MutableRecord | ImmutableRecord] = []

        def collect(reply: Reply, lookup: Lookup) -> None:
            assert isinstance(reply.result, Value)
            if reply.result.immutable is not None:
                candidate = ImmutableRecord(reply.result.immutable)
                if candidate.key == key and not best:
                    best.append(candidate)
            elif reply.result.mutable is not None:
                record = reply.result.mutable
                try:
                    record.verify()
                except DecodeError:
                    return
                if record.key == key and (
                    not best or not isinstance(best[0], MutableRecord) or record.seq > best[0].seq
                ):
                    best[:] = [record]

        lookup, _ = await self._run_lookup(key, lambda: Get(key), collect)
        return ValueResult(best[0] if best else None, lookup.results(), self._stats(lookup))

    async def put_mutable(self, record: MutableRecord, *, cas: int | None = None) -> int:
        record.verify()
        self._own_records[record.key] = record
        return await self._put(record.key, lambda token: Put(token, mutable=record, cas=cas))

    async def put_immutable(self, value: bytes) -> int:
        record = ImmutableRecord(value)
        self._own_records[record.key] = record
        return await self._put(record.key, lambda token: Put(token, immutable=value))

    async def _put(self, key: bytes, make: Callable[[bytes], Put]) -> int:
        tokens: dict[bytes, tuple[Contact, bytes]] = {}

        def collect(reply: Reply, lookup: Lookup) -> None:
            assert isinstance(reply.result, Value)
            tokens[reply.node_id] = (Contact(reply.node_id, *reply.address), reply.result.token)

        lookup, _ = await self._run_lookup(key, lambda: Get(key), collect)
        targets = [tokens[c.node_id] for c in lookup.results() if c.node_id in tokens]
        return await self._store_on(targets[:ANNOUNCE_TARGETS], make)

    async def _store_on(
        self, targets: list[tuple[Contact, bytes]], make: Callable[[bytes], Any]
    ) -> int:
        engine, _ = self._require()
        if not targets:
            return 0
        results: list[bool] = []
        done = trio.Event()

        def finished(outcome: Outcome) -> None:
            results.append(isinstance(outcome, Reply))
            if len(results) == len(targets):
                done.set()

        for contact, token in targets:
            engine.request(
                contact.address, make(token), self.network.now(), finished, node_id=contact.node_id
            )
        await self._flush()
        await done.wait()
        return sum(results)

    async def _run_lookup(
        self,
        target: bytes,
        make_request: Callable[[], Any],
        on_reply: Callable[[Reply, Lookup], None] | None = None,
    ) -> tuple[Lookup, list[Reply]]:
        """Drive one iterative lookup to its end."""
        engine, _ = self._require()
        now = self.network.now()
        lookup = Lookup(
            target,
            engine.contacts_near(target),
            now=now,
            own_id=self.identity.node_id,
            paths=self.paths,
        )
        engine.table.touch(target, now)
        send, receive = trio.open_memory_channel[tuple[Contact, Outcome]](4096)
        replies: list[Reply] = []

        def callback_for(contact: Contact) -> Callable[[Outcome], None]:
            def deliver(outcome: Outcome) -> None:
                # After the lookup finished, a late answer changes nothing.
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    send.send_nowait((contact, outcome))

            return deliver

        try:
            while not lookup.done:
                now = self.network.now()
                for contact in lookup.next_queries(now):
                    engine.request(
                        contact.address,
                        make_request(),
                        now,
                        callback_for(contact),
                        node_id=contact.node_id,
                    )
                await self._flush()
                if lookup.done:
                    break
                deadline = lookup.next_deadline()
                with trio.move_on_at(deadline if deadline is not None else math.inf):
                    item = await receive.receive()
                    self._feed(lookup, item, replies, on_reply)
                    while True:
                        try:
                            item = receive.receive_nowait()
                        except trio.WouldBlock:
                            break
                        self._feed(lookup, item, replies, on_reply)
                lookup.tick(self.network.now())
        finally:
            send.close()
        self.lookups_done += 1
        return lookup, replies

    def _feed(
        self,
        lookup: Lookup,
        item: tuple[Contact, Outcome],
        replies: list[Reply],
        on_reply: Callable[[Reply, Lookup], None] | None,
    ) -> None:
        contact, outcome = item
        now = self.network.now()
        if isinstance(outcome, Failure):
            lookup.on_failure(contact.node_id, now)
            return
        result = outcome.result
        nodes = getattr(result, "nodes", ())
        try:
            contacts = decode_contacts(nodes)
        except DecodeError:
            lookup.on_failure(contact.node_id, now)
            return
        replies.append(outcome)
        if on_reply is not None:
            on_reply(outcome, lookup)
        lookup.on_response(contact.node_id, contacts, now)

    def _stats(self, lookup: Lookup) -> LookupStats:
        finished = lookup.finished_at if lookup.finished_at is not None else self.network.now()
        return LookupStats(lookup.rpcs, lookup.hops, finished - lookup.started_at)

    # -- status and persistence -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        engine, _ = self._require()
        traffic = attrs.asdict(engine.traffic)
        return {
            "node_id": self.identity.node_id.hex(),
            "address": list(self.local_address) if self.local_address else None,
            "external_address": list(engine.external_address) if engine.external_address else None,
            "table_size": len(engine.table),
            "buckets": [
                {
                    "index": index,
                    "contacts": len(bucket.entries),
                    "replacements": len(bucket.replacements),
                }
                for index, bucket in enumerate(engine.table.buckets)
            ],
            "traffic": traffic,
            "store": engine.store.stats(self.network.now()).as_dict(),
            "lookups": self.lookups_done,
            "announces": self.announces_sent,
        }

    def _save_contacts(self) -> None:
        if self.state_file is None or self.engine is None:
            return
        entries = self.engine.table.entries()
        entries.sort(key=lambda e: e.last_seen, reverse=True)
        payload = pack_canonical(
            {
                "version": 1,
                "contacts": [
                    {"host": e.host, "port": e.port, "id": e.node_id}
                    for e in entries[:MAX_SAVED_CONTACTS]
                ],
            }
        )
        temporary = self.state_file.with_suffix(".tmp")
        try:
            temporary.write_bytes(payload)
            temporary.replace(self.state_file)
        except OSError as exc:
            log.warning("could not save the DHT routing table: %s", exc)

    def _load_contacts(self) -> list[HostPort]:
        if self.state_file is None or not self.state_file.exists():
            return []
        try:
            saved = unpack_canonical(self.state_file.read_bytes())
            return [(str(c["host"]), int(c["port"])) for c in saved["contacts"]]
        except (OSError, DecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an unreadable saved DHT routing table: %s", exc)
            return []


def _phase(key: bytes, node_id: bytes) -> float:
    """Where in the announce interval this node announces `key`, in [0, 1)."""
    digest = hashlib.sha256(node_id + key).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


__all__ = ["Address", "DhtService", "LookupStats", "ProvidersResult", "ValueResult"]
