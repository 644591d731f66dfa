"""The CBOR subset RA-TLS uses, read strictly and written canonically.

Interoperable RA-TLS (CCC interoperable-ra-tls, TCG DICE) encodes evidence, claims and
endorsements with a handful of CBOR items: unsigned integers, byte and text strings,
definite-length arrays and maps, and tags. Reading only that subset with our own bounds-checked
cursor means an attacker's certificate can fail in exactly one way — :class:`CborError` — and
never reaches a general decoder's corner cases (indefinite lengths, floats, huge
preallocations, deep recursion). Duplicate map keys are refused: a claim must mean one thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from inclavare.errors import FormatError

MAX_DEPTH = 8
MAX_ITEMS = 4096

_UINT, _NEGINT, _BSTR, _TSTR, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)


class CborError(FormatError):
    """Malformed CBOR, or CBOR outside the subset RA-TLS uses."""


@dataclass(frozen=True, slots=True)
class Tagged:
    """A CBOR tag and the item it covers."""

    tag: int
    value: CborValue


CborValue = Union[int, bytes, str, list["CborValue"], dict[str, "CborValue"], Tagged]


class _Reader:
    __slots__ = ("data", "pos", "items")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def _take(self, count: int) -> bytes:
        end = self.pos + count
        if count < 0 or end > len(self.data):
            raise CborError("CBOR: truncated item")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def _head(self) -> tuple[int, int]:
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info in (24, 25, 26, 27):
            size = 1 << (info - 24)
            value = int.from_bytes(self._take(size), "big")
            if value < (24 if size == 1 else 1 << (4 * size)):
                raise CborError("CBOR: non-minimal length or integer encoding")
            return major, value
        if info == 31:
            raise CborError("CBOR: indefinite-length items are not accepted")
        raise CborError("CBOR: reserved additional information value")

    def item(self, depth: int) -> CborValue:
        if depth > MAX_DEPTH:
            raise CborError("CBOR: nesting is too deep")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CborError("CBOR: too many items")
        if self.pos < len(self.data) and self.data[self.pos] >> 5 in (_NEGINT, _SIMPLE):
            raise CborError(f"CBOR: major type {self.data[self.pos] >> 5} is outside the RA-TLS subset")
        major, value = self._head()
        if major == _UINT:
            return value
        if major == _BSTR:
            return self._take(value)
        if major == _TSTR:
            try:
                return self._take(value).decode("utf-8")
            except UnicodeDecodeError:
                raise CborError("CBOR: text string is not valid UTF-8") from None
        if major == _ARRAY:
            if value > len(self.data) - self.pos:
                raise CborError("CBOR: array longer than the data")
            return [self.item(depth + 1) for _ in range(value)]
        if major == _MAP:
            if 2 * value > len(self.data) - self.pos:
                raise CborError("CBOR: map longer than the data")
            out: dict[str, CborValue] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str):
                    raise CborError("CBOR: map keys must be text strings")
                if key in out:
                    raise CborError(f"CBOR: duplicate map key {key!r}")
                out[key] = self.item(depth + 1)
            return out
        if major == _TAG:
            return Tagged(value, self.item(depth + 1))
        raise CborError(f"CBOR: major type {major} is outside the RA-TLS subset")


def loads(data: bytes) -> CborValue:
    """Decode exactly one item filling ``data``; CborError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CborError("CBOR input must be bytes")
    reader = _Reader(bytes(data))
    value = reader.item(0)
    if reader.pos != len(reader.data):
        raise CborError("CBOR: trailing bytes after the item")
    return value


def _head(major: int, value: int) -> bytes:
    if value < 0:
        raise CborError("CBOR: negative values are outside the subset")
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise CborError("CBOR: integer too large")


def dumps(value: CborValue) -> bytes:
    """Canonical (shortest-form, definite-length) encoding; maps keep their insertion order."""
    if isinstance(value, bool):
        raise CborError("CBOR: booleans are outside the subset")
    if isinstance(value, int):
        return _head(_UINT, value)
    if isinstance(value, (bytes, bytearray)):
        return _head(_BSTR, len(value)) + bytes(value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(_TSTR, len(raw)) + raw
    if isinstance(value, list):
        return _head(_ARRAY, len(value)) + b"".join(dumps(v) for v in value)
    if isinstance(value, dict):
        return _head(_MAP, len(value)) + b"".join(dumps(k) + dumps(v) for k, v in value.items())
    if isinstance(value, Tagged):
        return _head(_TAG, value.tag) + dumps(value.value)
    raise CborError(f"CBOR: cannot encode {type(value).__name__}")
