"""Hypothesis strategies derived from `wire.schema` kinds, so every record type gets fuzzed
from the same description its decoder enforces."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from wire.schema import Bool, Bytes, Kind, ListOf, MapOf, Nested, Optional, Record, Text, UInt

_KIND = "kinswarm_kind"


def _text(kind: Text) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(
            min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"
        ),
        max_size=kind.max_bytes // 2,
    ).filter(lambda t: kind.min_bytes <= len(t.encode()) <= kind.max_bytes)


def strategy_for(kind: Kind) -> st.SearchStrategy[Any]:
    if isinstance(kind, UInt):
        return st.integers(min_value=kind.minimum, max_value=kind.maximum)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, Bytes):
        return st.binary(min_size=kind.min_length, max_size=min(kind.max_length, 64))
    if isinstance(kind, Text):
        return _text(kind)
    if isinstance(kind, ListOf):
        return st.lists(strategy_for(kind.item), max_size=min(kind.max_items, 4)).map(tuple)
    if isinstance(kind, MapOf):
        return st.dictionaries(
            _text(kind.key), strategy_for(kind.value), max_size=min(kind.max_items, 4)
        )
    if isinstance(kind, Nested):
        return records(kind.record)
    if isinstance(kind, Optional):
        return st.none() | strategy_for(kind.inner)
    from dht.records import NumericHost

    if isinstance(kind, NumericHost):
        return (
            st.ip_addresses(v=4).filter(lambda a: not (a.is_unspecified or a.is_multicast)).map(str)
        )
    raise TypeError(f"no strategy for {kind!r}")


def records(cls: type[Record]) -> st.SearchStrategy[Any]:
    fields = {f.name: strategy_for(f.metadata[_KIND]) for f in attrs.fields(cls)}
    return st.builds(cls, **fields)
