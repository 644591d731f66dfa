"""Strict hexadecimal text, as Rust's ``hex`` crate accepts it: an even number of ``[0-9a-fA-F]``
and nothing else (no ``0x``, no whitespace — unlike ``bytes.fromhex``)."""

from __future__ import annotations

import re

from inclavare.errors import FormatError

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def decode_hex(text: object, field: str, size: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{field} must be a hex string")
    if _HEX.fullmatch(text) is None:
        raise FormatError(f"{field} is not hex (even number of 0-9a-f digits)")
    value = bytes.fromhex(text)
    if size is not None and len(value) != size:
        raise FormatError(f"{field} must be {size} bytes, got {len(value)}")
    return value
