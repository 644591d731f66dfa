"""A bounds-checked little-endian cursor over untrusted bytes.

Every evidence parser reads through this so that a short or lying input surfaces as one
``FormatError`` naming the field, never as ``IndexError``/``struct.error`` or a silently short slice.
"""

from __future__ import annotations

import struct

from inclavare.errors import FormatError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class ByteReader:
    """Sequential reader; ``what`` names the structure in error messages."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def position(self) -> int:
        return self._pos

    def remaining_length(self) -> int:
        return len(self._data) - self._pos

    def take(self, length: int, field: str) -> bytes:
        end = self._pos + length
        if length < 0 or end > len(self._data):
            raise FormatError(
                f"{self._what}: truncated at {field} (need {length} bytes at offset "
                f"{self._pos}, have {len(self._data) - self._pos})"
            )
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self.take(8, field))[0]
        return value

    def rest(self) -> bytes:
        chunk = self._data[self._pos:]
        self._pos = len(self._data)
        return chunk


def u16le(value: int) -> bytes:
    return _U16.pack(value)


def u32le(value: int) -> bytes:
    return _U32.pack(value)


def u64le(value: int) -> bytes:
    return _U64.pack(value)
