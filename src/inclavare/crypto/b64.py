"""Strict base64 decoding for untrusted input (JOSE's unpadded base64url and standard base64).

``base64.b64decode`` silently skips garbage unless ``validate=True`` and accepts either alphabet
in places; protocol fields are checked exactly here and fail with ``FormatError``.
"""

from __future__ import annotations

import base64
import binascii
import re

from inclavare.errors import FormatError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, what: str = "value") -> bytes:
    """Decode unpadded (or padded) base64url; anything else raises ``FormatError``."""
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a base64url string, got {type(text).__name__}")
    stripped = text.rstrip("=")
    if not _B64URL.fullmatch(stripped) or len(stripped) % 4 == 1:
        raise FormatError(f"{what}: not valid base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what}: not valid base64url") from exc


def b64std_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64std_decode(text: object, what: str = "value") -> bytes:
    """Decode standard (padded) base64; anything else raises ``FormatError``."""
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected a base64 string, got {type(text).__name__}")
    if not _B64STD.fullmatch(text):
        raise FormatError(f"{what}: not valid base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what}: not valid base64") from exc
