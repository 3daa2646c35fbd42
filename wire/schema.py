"""Declarative, strict field kinds for messages and records.

A record class is an attrs frozen class whose fields carry a `Kind` in their metadata (use
`attrs.field(metadata=spec(kind))`). `to_wire` turns a record into a plain map for canonical
msgpack and `from_wire` checks a decoded map against the same kinds: every field's type,
length and range, no missing and no unknown keys. One schema drives both directions, so
encoder and decoder cannot drift apart, and hypothesis strategies can be derived from it for
the fuzz tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from wire.errors import DecodeError

R = TypeVar("R", bound="Record")


class Kind(Protocol):
    """Checks one decoded value and returns it in its Python form (lists become tuples)."""

    def check(self, value: Any, where: str) -> Any: ...

    def to_wire(self, value: Any) -> Any: ...


@attrs.frozen
class UInt:
    maximum: int = (1 << 64) - 1
    minimum: int = 0

    def check(self, value: Any, where: str) -> int:
        if type(value) is not int:
            raise DecodeError(f"{where}: expected an integer, got {type(value).__name__}")
        if not self.minimum <= value <= self.maximum:
            raise DecodeError(f"{where}: {value} is outside [{self.minimum}, {self.maximum}]")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@attrs.frozen
class Bool:
    def check(self, value: Any, where: str) -> bool:
        if type(value) is not bool:
            raise DecodeError(f"{where}: expected a boolean, got {type(value).__name__}")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@attrs.frozen
class Bytes:
    max_length: int
    min_length: int = 0

    def check(self, value: Any, where: str) -> bytes:
        if type(value) is not bytes:
            raise DecodeError(f"{where}: expected bytes, got {type(value).__name__}")
        if not self.min_length <= len(value) <= self.max_length:
            if self.min_length == self.max_length:
                raise DecodeError(f"{where}: expected {self.max_length} bytes, got {len(value)}")
            raise DecodeError(
                f"{where}: length {len(value)} is outside [{self.min_length}, {self.max_length}]"
            )
        return value

    def to_wire(self, value: Any) -> Any:
        return value


def FixedBytes(length: int) -> Bytes:
    return Bytes(max_length=length, min_length=length)


@attrs.frozen
class Text:
    """A UTF-8 string of at most `max_bytes` encoded bytes, without control characters
    (`multiline` text may contain newlines and tabs)."""

    max_bytes: int
    min_bytes: int = 0
    multiline: bool = False

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str:
            raise DecodeError(f"{where}: expected text, got {type(value).__name__}")
        size = len(value.encode("utf-8"))
        if not self.min_bytes <= size <= self.max_bytes:
            raise DecodeError(
                f"{where}: text of {size} bytes is outside [{self.min_bytes}, {self.max_bytes}]"
            )
        allowed = "\n\t" if self.multiline else ""
        if any((ord(char) < 0x20 or ord(char) == 0x7F) and char not in allowed for char in value):
            raise DecodeError(f"{where}: control characters are not allowed")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@attrs.frozen
class ListOf:
    item: Kind
    max_items: int

    def check(self, value: Any, where: str) -> tuple[Any, ...]:
        if type(value) is not list:
            raise DecodeError(f"{where}: expected a list, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise DecodeError(f"{where}: {len(value)} items, at most {self.max_items} allowed")
        return tuple(self.item.check(item, f"{where}[{index}]") for index, item in enumerate(value))

    def to_wire(self, value: Any) -> Any:
        return [self.item.to_wire(item) for item in value]


@attrs.frozen
class MapOf:
    """A map with text keys of one kind and values of another."""

    key: Text
    value: Kind
    max_items: int

    def check(self, value: Any, where: str) -> Mapping[str, Any]:
        if type(value) is not dict:
            raise DecodeError(f"{where}: expected a map, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise DecodeError(f"{where}: {len(value)} entries, at most {self.max_items} allowed")
        return {
            self.key.check(key, f"{where} key"): self.value.check(item, f"{where}[{key!r}]")
            for key, item in value.items()
        }

    def to_wire(self, value: Any) -> Any:
        return {key: self.value.to_wire(item) for key, item in value.items()}


@attrs.frozen
class Nested:
    record: type[Record]

    def check(self, value: Any, where: str) -> Record:
        return from_wire(self.record, value, where=where)

    def to_wire(self, value: Any) -> Any:
        return to_wire(value)


@attrs.frozen
class Optional:
    """A field that may be absent from the map; absent decodes to None."""

    inner: Kind

    def check(self, value: Any, where: str) -> Any:
        return self.inner.check(value, where)

    def to_wire(self, value: Any) -> Any:
        return self.inner.to_wire(value)


_KIND = "kinswarm_kind"


def spec(kind: Kind) -> dict[str, Kind]:
    """Field metadata saying how a field travels: `x: int = attrs.field(metadata=spec(UInt()))`.

    (A helper returning `attrs.field(...)` would hide the field from mypy's attrs plugin.)
    """
    return {_KIND: kind}


class Record:
    """Base for schema-described attrs classes. Subclasses must be attrs classes."""

    __slots__ = ()
    _fields_cache: ClassVar[dict[type, tuple[tuple[str, Kind], ...]]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, Kind], ...]:
    cached = Record._fields_cache.get(cls)
    if cached is None:
        cached = tuple((f.name, f.metadata[_KIND]) for f in attrs.fields(cls))
        Record._fields_cache[cls] = cached
    return cached


def to_wire(record: Record) -> dict[str, Any]:
    """The plain map for `record`, for canonical msgpack. Checks every field on the way out,
    raising ValueError if our own code built an invalid record."""
    result: dict[str, Any] = {}
    for name, kind in _fields_of(type(record)):
        value = getattr(record, name)
        if value is None and isinstance(kind, Optional):
            continue
        wire_value = kind.to_wire(value)
        try:
            kind.check(_as_decoded(wire_value), f"{type(record).__name__}.{name}")
        except DecodeError as exc:
            raise ValueError(f"refusing to encode an invalid record: {exc}") from exc
        result[name] = wire_value
    return result


def _as_decoded(value: Any) -> Any:
    """What msgpack would give back for `value` (tuples come back as lists)."""
    if isinstance(value, tuple | list):
        return [_as_decoded(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_decoded(item) for key, item in value.items()}
    return value


def from_wire(cls: type[R], value: Any, *, where: str | None = None) -> R:
    """Check a decoded map against `cls`'s schema and build the record. Raises DecodeError."""
    where = where or cls.__name__
    if type(value) is not dict:
        raise DecodeError(f"{where}: expected a map, got {type(value).__name__}")
    fields = _fields_of(cls)
    known = {name for name, _ in fields}
    unknown = [key for key in value if key not in known]
    if unknown:
        raise DecodeError(f"{where}: unknown field(s) {', '.join(map(repr, sorted(unknown)))}")
    arguments: dict[str, Any] = {}
    for name, kind in fields:
        if name not in value:
            if isinstance(kind, Optional):
                continue
            raise DecodeError(f"{where}: missing field {name!r}")
        arguments[name] = kind.check(value[name], f"{where}.{name}")
    return cls(**arguments)
