"""Write tokens: bound to host and port, valid for the current and the previous secret only."""

from __future__ import annotations

import hashlib
import hmac
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.tokens import ROTATION_PERIOD, TOKEN_LEN, TokenIssuer


class Secrets:
    """A deterministic secret source that counts its draws."""

    def __init__(self) -> None:
        self.draws = 0

    def __call__(self) -> bytes:
        self.draws += 1
        return hashlib.sha256(f"secret {self.draws}".encode()).digest()


ADDRESS = ("10.0.0.1", 4000)


def test_a_token_is_accepted_from_its_address_only() -> None:
    issuer = TokenIssuer(Secrets())
    token = issuer.issue(ADDRESS, 0.0)
    assert len(token) == TOKEN_LEN
    assert issuer.check(token, ADDRESS, 1.0)
    assert not issuer.check(token, ("10.0.0.2", 4000), 1.0)
    assert not issuer.check(token, ("10.0.0.1", 4001), 1.0)
    assert not issuer.check(token[:-1], ADDRESS, 1.0)
    assert not issuer.check(token + b"\0", ADDRESS, 1.0)
    assert not issuer.check(b"", ADDRESS, 1.0)
    assert not issuer.check(bytes(TOKEN_LEN), ADDRESS, 1.0)


def test_the_token_is_the_documented_hmac() -> None:
    secrets = Secrets()
    issuer = TokenIssuer(secrets)
    token = issuer.issue(("192.0.2.7", 6881), 0.0)
    secret = hashlib.sha256(b"secret 1").digest()
    message = bytes([192, 0, 2, 7]) + (6881).to_bytes(2, "big")
    assert token == hmac.new(secret, message, hashlib.sha256).digest()[:8]
    token6 = issuer.issue(("2001:db8::1", 443), 0.0)
    message6 = bytes.fromhex("20010db8000000000000000000000001") + (443).to_bytes(2, "big")
    assert token6 == hmac.new(secret, message6, hashlib.sha256).digest()[:8]


def test_rotation_windows() -> None:
    secrets = Secrets()
    issuer = TokenIssuer(secrets)
    early = issuer.issue(ADDRESS, 0.0)
    late = issuer.issue(ADDRESS, ROTATION_PERIOD - 0.001)  # same epoch, same secret
    assert early == late
    assert secrets.draws == 1
    assert issuer.check(early, ADDRESS, ROTATION_PERIOD)  # now the previous secret
    assert secrets.draws == 2
    assert issuer.check(early, ADDRESS, 2 * ROTATION_PERIOD - 0.001)
    assert not issuer.check(early, ADDRESS, 2 * ROTATION_PERIOD)
    assert secrets.draws == 3
    fresh = issuer.issue(ADDRESS, 2 * ROTATION_PERIOD)
    assert fresh != early
    assert issuer.check(fresh, ADDRESS, 3 * ROTATION_PERIOD + 1)


def test_after_a_long_idle_gap_no_old_secret_is_kept() -> None:
    secrets = Secrets()
    issuer = TokenIssuer(secrets)
    token = issuer.issue(ADDRESS, 0.0)
    assert not issuer.check(token, ADDRESS, 2 * ROTATION_PERIOD + 5)
    assert secrets.draws == 2  # one draw per rotation, however long the gap


def test_time_running_backwards_does_not_rotate() -> None:
    secrets = Secrets()
    issuer = TokenIssuer(secrets)
    token = issuer.issue(ADDRESS, 1000.0)
    assert issuer.check(token, ADDRESS, 10.0)
    assert secrets.draws == 1


def test_secrets_must_be_long_enough() -> None:
    issuer = TokenIssuer(lambda: b"short")
    with pytest.raises(ValueError):
        issuer.issue(ADDRESS, 0.0)


def test_hosts_must_be_numeric() -> None:
    issuer = TokenIssuer(Secrets())
    with pytest.raises(ValueError):
        issuer.issue(("example.org", 1), 0.0)
    with pytest.raises(ValueError):
        issuer.issue(("10.0.0.1", 70000), 0.0)


def test_issuers_with_different_secrets_disagree() -> None:
    a = TokenIssuer(Secrets())
    b = TokenIssuer(lambda: bytes(32))
    assert not b.check(a.issue(ADDRESS, 0.0), ADDRESS, 0.0)


@given(
    st.floats(0, 10 * ROTATION_PERIOD, allow_nan=False),
    st.floats(0, 3 * ROTATION_PERIOD, allow_nan=False),
    st.lists(st.floats(0, 3 * ROTATION_PERIOD, allow_nan=False), max_size=5),
)
def test_a_token_lives_through_its_epoch_and_the_next(
    issued: float, age: float, calls_between: list[float]
) -> None:
    """Whatever other calls happen in between, a token is accepted exactly while the current
    epoch is its own or the next one: at least one period, less than two."""
    issuer = TokenIssuer(Secrets())
    issuer.issue(("10.9.9.9", 1), 0.0)  # epochs count from the first call, at 0
    token = issuer.issue(ADDRESS, issued)
    for offset in sorted(calls_between):
        if offset < age:
            issuer.issue(("10.9.9.9", 1), issued + offset)
    checked = issued + age
    epochs_apart = math.floor(checked / ROTATION_PERIOD) - math.floor(issued / ROTATION_PERIOD)
    assert issuer.check(token, ADDRESS, checked) == (epochs_apart <= 1)
