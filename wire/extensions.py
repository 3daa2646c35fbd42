"""Extension negotiation: who speaks what, and on which message id.

Learned from BEP 10, without its central numbering: an extension is named by a self-describing
string (`"ks.swarm"`) and a version. Each side lists what it speaks in its Hello, together with
the message id *it* wants to receive that extension on. The sender then uses the receiver's id,
so ids are private to one connection and nobody needs to coordinate a registry. Both sides use
the lower of the two versions. A message on an id we never offered is skipped, not fatal, so a
newer peer may try things an older one does not know.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from wire.messages import FIRST_EXTENSION_ID, LAST_MESSAGE_ID, MAX_EXTENSIONS, ExtensionOffer

_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_extension_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"extension name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-'"
        )
    return name


@attrs.frozen
class NegotiatedExtension:
    name: str
    version: int
    send_id: int
    """The id the remote asked us to send this extension's messages on."""
    receive_id: int
    """The id we asked the remote to use; messages arriving on it are this extension's."""


def make_offers(supported: Mapping[str, int]) -> dict[str, ExtensionOffer]:
    """Assign our receive ids (in name order, so they are deterministic) to `supported`,
    a map of extension name to the highest version we speak."""
    if len(supported) > MAX_EXTENSIONS:
        raise ValueError(f"at most {MAX_EXTENSIONS} extensions fit in the message id space")
    offers: dict[str, ExtensionOffer] = {}
    for index, name in enumerate(sorted(supported)):
        check_extension_name(name)
        offers[name] = ExtensionOffer(
            version=supported[name], message_id=FIRST_EXTENSION_ID + index
        )
    assert all(offer.message_id <= LAST_MESSAGE_ID for offer in offers.values())
    return offers


def negotiate(
    ours: Mapping[str, ExtensionOffer], theirs: Mapping[str, ExtensionOffer]
) -> dict[str, NegotiatedExtension]:
    """The extensions both sides speak, at the lower of the two versions."""
    return {
        name: NegotiatedExtension(
            name=name,
            version=min(ours[name].version, theirs[name].version),
            send_id=theirs[name].message_id,
            receive_id=ours[name].message_id,
        )
        for name in sorted(ours)
        if name in theirs
    }
