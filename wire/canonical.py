"""Canonical, strictly bounded msgpack.

Anything we hash or sign must have exactly one encoding, so that two implementations (or two
versions of ours) agree on the bytes. The canonical form is msgpack with:

* map keys that are text strings, sorted by their UTF-8 bytes, with no duplicates;
* byte strings as `bin`, text as `str` (valid UTF-8), integers in their shortest form;
* no floats, no extension types, no timestamps;
* nesting at most `MAX_DEPTH` deep.

`unpack_canonical` re-encodes what it decoded and rejects the input unless the bytes are
identical, which catches unsorted or duplicate keys, over-long integers, `str` used for bytes
and every other non-canonical spelling in one check. All limits are enforced while decoding
(msgpack's own length limits), so a small hostile input can never allocate much.
"""

from __future__ import annotations

from typing import Any

import msgpack

from wire.errors import DecodeError

MAX_DEPTH = 16
"""Deepest nesting of arrays/maps accepted. Our schemas need 4; 16 leaves room to grow."""

Value = None | bool | int | str | bytes | list[Any] | tuple[Any, ...] | dict[str, Any]

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


def _canonicalise(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"integer {value} does not fit in msgpack")
        return value
    if isinstance(value, list | tuple):
        return [_canonicalise(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"map key {key!r} is not a text string")
        return {
            key: _canonicalise(value[key], depth + 1)
            for key in sorted(value, key=lambda k: k.encode("utf-8"))
        }
    raise ValueError(f"type {type(value).__name__} has no canonical encoding")


def pack_canonical(value: Any) -> bytes:
    """Encode `value` canonically. Raises ValueError for values that have no canonical form."""
    return msgpack.packb(_canonicalise(value, 0), use_bin_type=True)  # type: ignore[no-any-return]


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed")


def unpack_strict(data: bytes, *, max_container_items: int = 100_000) -> Any:
    """Decode one msgpack value from exactly `data`, enforcing size limits and depth.

    The result uses lists for arrays and dicts for maps. Floats and extension types are
    rejected. Raises DecodeError with a readable reason on any violation.
    """
    limit = len(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=min(limit, max_container_items),
            max_map_len=min(limit, max_container_items),
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after the msgpack value") from exc
    except Exception as exc:  # msgpack raises many types for bad input; all mean the same
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc
    _check_plain(value, 0)
    return value


def _check_plain(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DecodeError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        raise DecodeError("floats are not allowed")
    if isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError("map keys must be text strings")
            _check_plain(item, depth + 1)


def unpack_canonical(data: bytes, *, max_container_items: int = 100_000) -> Any:
    """Like `unpack_strict`, and also reject any encoding that is not the canonical one."""
    value = unpack_strict(data, max_container_items=max_container_items)
    try:
        again = pack_canonical(value)
    except ValueError as exc:
        raise DecodeError(f"value has no canonical form: {exc}") from exc
    if again != data:
        raise DecodeError("non-canonical msgpack encoding (key order, integer width or types)")
    return value
