"""DHT records: round trips, strict decoding, the exact signed bytes, and signature tampering."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.records import (
    MAX_SALT_BYTES,
    MAX_VALUE_BYTES,
    MUTABLE_KEY_DOMAIN,
    MUTABLE_SIGNATURE_DOMAIN,
    ImmutableRecord,
    MutableRecord,
    Provider,
    address_group,
    canonical_host,
    decode_record,
    encode_record,
    immutable_key,
    mutable_key,
    mutable_signed_bytes,
)
from wire.canonical import pack_canonical
from wire.errors import DecodeError, ProtocolError
from wire.schema import from_wire, to_wire

SIGNING_KEY = nacl.signing.SigningKey(bytes(range(32)))

ipv4_hosts = st.integers(1 << 24, (224 << 24) - 1).map(
    lambda n: ".".join(str((n >> shift) & 255) for shift in (24, 16, 8, 0))
)
ipv6_hosts = st.sampled_from(["2001:db8::1", "fe80::1", "::1", "2001:db8:0:1:2:3:4:5", "fd00::"])
providers = st.builds(
    Provider,
    node_id=st.binary(min_size=32, max_size=32),
    host=ipv4_hosts | ipv6_hosts,
    port=st.integers(1, 65535),
)
salts = st.binary(max_size=MAX_SALT_BYTES)
values = st.binary(max_size=MAX_VALUE_BYTES)
seqs = st.integers(0, (1 << 64) - 1)
mutable_records = st.builds(
    MutableRecord.sign, st.just(SIGNING_KEY), salt=salts, seq=seqs, value=values
)
immutable_records = st.builds(ImmutableRecord, value=values)
RECORD_TYPES = (Provider, MutableRecord, ImmutableRecord)


@given(providers | mutable_records | immutable_records)
def test_records_round_trip(record: Any) -> None:
    assert decode_record(type(record), encode_record(record)) == record
    assert from_wire(type(record), to_wire(record)) == record


@given(st.sampled_from(RECORD_TYPES), st.binary(max_size=1200))
def test_arbitrary_bytes_only_raise_protocol_errors(cls: Any, data: bytes) -> None:
    try:
        decode_record(cls, data)
    except ProtocolError:
        pass


@given(providers | mutable_records | immutable_records, st.data())
def test_mutated_encodings_only_raise_protocol_errors(record: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode_record(record))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    for cls in RECORD_TYPES:
        try:
            decoded = decode_record(cls, bytes(encoded))
        except ProtocolError:
            continue
        if isinstance(decoded, MutableRecord):
            try:
                decoded.verify()
            except ProtocolError:
                continue
            # Only a mutation that left the signed fields intact (never happens with one flip).
            assert decoded == record


@pytest.mark.parametrize(
    "host",
    [
        "example.org",
        "localhost",
        "1.2.3.04",
        "01.2.3.4",
        "1.2.3",
        "FE80::1",
        "2001:0db8::1",
        "fe80::1%eth0",
        "::ffff:1.2.3.4",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        " 1.2.3.4",
        "1.2.3.4\n",
        "",
        "1" * 46,
    ],
)
def test_provider_hosts_must_be_canonical_numeric_addresses(host: str) -> None:
    wire = {"node_id": bytes(32), "host": host, "port": 1}
    with pytest.raises(DecodeError):
        decode_record(Provider, pack_canonical(wire))
    with pytest.raises(ValueError):
        Provider(bytes(32), host, 1)


@pytest.mark.parametrize("host", ["1.2.3.4", "10.0.0.1", "127.0.0.1", "::1", "2001:db8::1"])
def test_canonical_hosts_are_accepted(host: str) -> None:
    assert Provider(bytes(32), host, 65535).host == host


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ({"node_id": bytes(32), "host": "1.2.3.4", "port": 0}, "outside"),
        ({"node_id": bytes(32), "host": "1.2.3.4", "port": 65536}, "outside"),
        ({"node_id": bytes(31), "host": "1.2.3.4", "port": 1}, "expected 32 bytes"),
        ({"node_id": bytes(32), "host": b"1.2.3.4", "port": 1}, "expected text"),
        ({"node_id": bytes(32), "host": "1.2.3.4"}, "missing field"),
        ({"node_id": bytes(32), "host": "1.2.3.4", "port": 1, "x": 1}, "unknown field"),
    ],
)
def test_provider_field_checks(wire: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_record(Provider, pack_canonical(wire))


def test_record_size_limits() -> None:
    base = attrs.asdict(MutableRecord.sign(SIGNING_KEY, b"", 0, b""))
    for field, bad in (("salt", bytes(MAX_SALT_BYTES + 1)), ("value", bytes(MAX_VALUE_BYTES + 1))):
        with pytest.raises(DecodeError, match="outside"):
            decode_record(MutableRecord, pack_canonical({**base, field: bad}))
    with pytest.raises(DecodeError, match="outside"):
        decode_record(MutableRecord, pack_canonical({**base, "seq": -1}))
    with pytest.raises(DecodeError, match="outside"):
        decode_record(ImmutableRecord, pack_canonical({"value": bytes(MAX_VALUE_BYTES + 1)}))
    with pytest.raises(ValueError):
        MutableRecord.sign(SIGNING_KEY, bytes(MAX_SALT_BYTES + 1), 0, b"")
    with pytest.raises(ValueError):
        MutableRecord.sign(SIGNING_KEY, b"", 1 << 64, b"")
    with pytest.raises(ValueError):
        ImmutableRecord(bytes(MAX_VALUE_BYTES + 1))


def test_decoding_is_canonical_only() -> None:
    encoded = encode_record(ImmutableRecord(b"x"))
    # The same map with the bin value spelled as bin16 instead of bin8.
    longer = encoded.replace(b"\xc4\x01x", b"\xc5\x00\x01x")
    assert longer != encoded
    with pytest.raises(DecodeError, match="non-canonical"):
        decode_record(ImmutableRecord, longer)


def test_keys() -> None:
    record = MutableRecord.sign(SIGNING_KEY, b"salt", 1, b"v")
    public_key = bytes(SIGNING_KEY.verify_key)
    assert record.public_key == public_key
    assert record.key == mutable_key(public_key, b"salt")
    assert record.key == hashlib.sha256(MUTABLE_KEY_DOMAIN + public_key + b"salt").digest()
    assert mutable_key(public_key) == hashlib.sha256(MUTABLE_KEY_DOMAIN + public_key).digest()
    # Domain separation: an immutable value spelling pk||salt lands elsewhere.
    assert immutable_key(public_key + b"salt") != mutable_key(public_key, b"salt")
    assert ImmutableRecord(b"v").key == immutable_key(b"v") == hashlib.sha256(b"v").digest()


def test_signed_bytes_are_exactly_as_documented() -> None:
    expected = (
        b"kinswarm-dht/v1 mutable:"
        + b"\x83"
        + b"\xa4salt\xc4\x02sa"
        + b"\xa3seq\xcd\x01\x00"
        + b"\xa1v\xc4\x05value"
    )
    assert mutable_signed_bytes(b"sa", 256, b"value") == expected
    record = MutableRecord.sign(SIGNING_KEY, b"sa", 256, b"value")
    assert record.signed_bytes() == expected
    SIGNING_KEY.verify_key.verify(expected, record.signature)  # plain Ed25519 over those bytes


def test_verify_accepts_a_good_signature() -> None:
    MutableRecord.sign(SIGNING_KEY, b"", 0, b"").verify()
    MutableRecord.sign(SIGNING_KEY, bytes(64), (1 << 64) - 1, bytes(1000)).verify()


def test_a_signature_without_the_domain_does_not_verify() -> None:
    body = pack_canonical({"salt": b"", "seq": 1, "v": b"x"})
    signature = SIGNING_KEY.sign(body).signature
    record = MutableRecord(bytes(SIGNING_KEY.verify_key), b"", 1, b"x", signature)
    with pytest.raises(DecodeError, match="signature"):
        record.verify()
    assert MUTABLE_SIGNATURE_DOMAIN == b"kinswarm-dht/v1 mutable:"


def _tampered(record: MutableRecord, field: str, data: st.DataObject) -> MutableRecord:
    current = getattr(record, field)
    if field == "seq":
        new: Any = data.draw(seqs.filter(lambda s: s != current))
    elif field == "public_key":
        other = nacl.signing.SigningKey(data.draw(st.binary(min_size=32, max_size=32)))
        new = data.draw(
            st.sampled_from([bytes(other.verify_key), bytes(32), bytes([1]) + bytes(31)])
        )
    elif field in ("salt", "value"):
        limit = MAX_SALT_BYTES if field == "salt" else MAX_VALUE_BYTES
        new = data.draw(st.binary(max_size=limit).filter(lambda b: b != current))
    else:  # signature: flip one bit anywhere
        index = data.draw(st.integers(0, len(current) * 8 - 1))
        flipped = bytearray(current)
        flipped[index // 8] ^= 1 << (index % 8)
        new = bytes(flipped)
    if new == current:
        new = bytes([current[0] ^ 1]) + current[1:]
    return attrs.evolve(record, **{field: new})


@given(
    mutable_records,
    st.sampled_from(["public_key", "salt", "seq", "value", "signature"]),
    st.data(),
)
def test_tampering_with_any_field_breaks_the_signature(
    record: MutableRecord, field: str, data: st.DataObject
) -> None:
    record.verify()
    tampered = _tampered(record, field, data)
    assert tampered != record
    with pytest.raises(DecodeError):
        tampered.verify()
    # ... also after a trip over the wire.
    decoded = decode_record(MutableRecord, encode_record(tampered))
    with pytest.raises(DecodeError):
        decoded.verify()


def test_canonical_host_normalises_datagram_sources() -> None:
    assert canonical_host("1.2.3.4") == "1.2.3.4"
    assert canonical_host("::ffff:1.2.3.4") == "1.2.3.4"
    assert canonical_host("FE80::0001%eth0") == "fe80::1"
    assert canonical_host("2001:0db8:0:0:0:0:0:1") == "2001:db8::1"
    for bad in ("example.org", "0.0.0.0", "::", "224.0.0.1", "1.2.3.04"):
        with pytest.raises(ValueError):
            canonical_host(bad)


def test_address_groups() -> None:
    assert address_group("1.2.3.4") == "1.2.3.4"
    assert address_group("::ffff:1.2.3.4") == "1.2.3.4"
    assert address_group("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2::ffff") == address_group("2001:db8:1:2:3:4:5:6")
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("fe80::1%eth0") == "fe80::/64"
    with pytest.raises(ValueError):
        address_group("example.org")
