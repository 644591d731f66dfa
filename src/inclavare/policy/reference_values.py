"""Reference values in the RVPS message format (Trustee ``rvps/src/lib.rs``).

Register message: ``{"version": "0.1.0", "type": "sample", "payload": "<base64 of {name: value}>"}``.
Stored values: ``{"version": "0.1.0", "name", "expiration": RFC 3339, "value"}``; expired values
are left out of appraisal. Policies see them as ``data.reference.<name>`` (lists are matched
with ``in``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from inclavare.crypto.b64 import b64std_decode
from inclavare.errors import FormatError
from inclavare.formats.strict_json import loads_strict

MESSAGE_VERSION = "0.1.0"
DEFAULT_VALIDITY = timedelta(days=365)
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class ReferenceValue:
    name: str
    value: Any
    expiration: datetime

    def record(self) -> dict[str, Any]:
        return {
            "version": MESSAGE_VERSION,
            "name": self.name,
            "expiration": self.expiration.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "value": self.value,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ReferenceValue:
        try:
            expiration = datetime.fromisoformat(str(record["expiration"]).replace("Z", "+00:00"))
            return cls(str(record["name"]), record["value"], expiration)
        except (KeyError, ValueError) as exc:
            raise FormatError(f"malformed stored reference value: {exc}") from exc


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FormatError(
            "reference value name must be 1-128 characters of letters, digits, '_', '.', ':', '-'"
        )
    return name


def parse_message(body: bytes, *, now: datetime) -> list[ReferenceValue]:
    """Parse an RVPS register message (only the ``sample`` extractor is supported)."""
    try:
        message = loads_strict(body, "reference value message")
    except FormatError as exc:
        raise FormatError(f"reference value message: {exc}") from exc
    if not isinstance(message, dict):
        raise FormatError("reference value message must be a JSON object")
    if message.get("version") != MESSAGE_VERSION:
        raise FormatError(f"reference value message version must be {MESSAGE_VERSION!r}")
    if message.get("type") != "sample":
        raise FormatError(f"unsupported reference value type {message.get('type')!r} (supported: 'sample')")
    try:
        provenance = loads_strict(b64std_decode(message.get("payload"), "payload"), "reference value payload")
    except FormatError as exc:
        raise FormatError(f"reference value payload is not base64 of a JSON object: {exc}") from exc
    if not isinstance(provenance, dict) or not provenance:
        raise FormatError("reference value payload must be a non-empty JSON object {name: value}")
    expiration = now + DEFAULT_VALIDITY
    return [ReferenceValue(check_name(k), v, expiration) for k, v in provenance.items()]


def build_message(values: Mapping[str, Any]) -> bytes:
    """The register message for ``values`` (what ``kbs admin reference-value set`` sends)."""
    from inclavare.crypto.b64 import b64std_encode

    payload = b64std_encode(json.dumps(dict(values), separators=(",", ":")).encode())
    return json.dumps({"version": MESSAGE_VERSION, "type": "sample", "payload": payload}).encode()


def active_values(values: Iterable[ReferenceValue], *, now: datetime) -> dict[str, Any]:
    """The ``data.reference`` document: unexpired values by name."""
    return {rv.name: rv.value for rv in values if rv.expiration > now}
