"""JSON decoding with the strictness of serde_json (what dcap-qvl and Trustee use).

Python's ``json`` is more permissive: it accepts ``NaN``/``Infinity``, lone UTF-16 surrogate
escapes and duplicate keys. Collateral that one verifier parses and the other rejects would give
different verdicts, so those are refused here, and every failure is a ``FormatError``.
"""

from __future__ import annotations

import json
from typing import Any

from inclavare.errors import FormatError

MAX_DOCUMENT_SIZE = 16 * 1024 * 1024


def _reject_constant(name: str) -> Any:
    raise FormatError(f"JSON constant {name} is not allowed")


def _object_hook(known: frozenset[str] | None) -> Any:
    """serde rejects a repeated *field*; repeated keys it ignores anyway are harmless."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result and (known is None or key in known):
                raise FormatError(f"duplicate JSON key {key!r}")
            result[key] = value
        return result

    return build


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise FormatError("JSON string contains a lone surrogate escape") from exc
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_strict(text: str | bytes, what: str, known_keys: frozenset[str] | None = None) -> Any:
    """Parse a JSON document; ``what`` names it in errors. Keys in ``known_keys`` (all keys when
    None) may not repeat within an object."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_DOCUMENT_SIZE:
            raise FormatError(f"{what} is larger than {MAX_DOCUMENT_SIZE} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{what} is not valid UTF-8") from exc
    if not isinstance(text, str):
        raise FormatError(f"{what} must be JSON text")
    if len(text) > MAX_DOCUMENT_SIZE:
        raise FormatError(f"{what} is larger than {MAX_DOCUMENT_SIZE} characters")
    try:
        value = json.loads(text, object_pairs_hook=_object_hook(known_keys), parse_constant=_reject_constant)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from exc
    if "\\u" in text:
        _check_strings(value)
    return value


def require_int(obj: dict[str, Any], key: str, bits: int, what: str) -> int:
    """An unsigned integer field of the given width (booleans and floats are not integers)."""
    value = obj.get(key)
    if key not in obj:
        raise FormatError(f"{what}: missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise FormatError(f"{what}: {key!r} must be an unsigned {bits}-bit integer")
    return value


def require_str(obj: dict[str, Any], key: str, what: str) -> str:
    if key not in obj:
        raise FormatError(f"{what}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(f"{what}: {key!r} must be a string")
    return value


def require_list(obj: dict[str, Any], key: str, what: str, *, optional: bool = False) -> list[Any]:
    """A list field; ``optional`` fields may be absent (then empty) but never ``null``."""
    if key not in obj:
        if optional:
            return []
        raise FormatError(f"{what}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, list):
        raise FormatError(f"{what}: {key!r} must be a list")
    return value


def require_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be a JSON object")
    return value
