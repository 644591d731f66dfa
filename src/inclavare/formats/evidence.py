"""Evidence as it arrives: raw binary, hex text (optional ``0x``), or the JSON CoCo attesters
emit — ``{"quote": "<base64>"}`` for SGX/TDX (``cc_eventlog`` may accompany it) and
``{"attestation_report": …, "cert_chain": …}`` for SNP. :func:`load_evidence` detects which and
returns the parsed quote or report; the TEE is decided by the evidence itself (the quote header's
TEE type, or an SNP report), never by a caller's claim.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from inclavare.errors import FormatError
from inclavare.formats.quote import TEE_TYPE_SGX, TEE_TYPE_TDX, Quote, parse_quote
from inclavare.formats.snp import REPORT_SIZE, SnpReport, parse_snp_report
from inclavare.formats.strict_json import loads_strict
from inclavare.tee.registry import SNP

MAX_EVIDENCE_SIZE = 4 * 1024 * 1024
_HEX = re.compile(rb"(?:0x)?((?:[0-9a-fA-F]{2})+)")

@dataclass(frozen=True, slots=True)
class LoadedEvidence:
    """Parsed evidence. ``raw`` is the quote/report bytes; ``encoding`` says how it came
    (``binary``, ``hex`` or ``json``); ``extra`` keeps the other JSON members (event log, SNP
    certificate chain) for the layers that use them."""

    tee: str  # a name from inclavare.tee.registry
    raw: bytes
    encoding: Literal["binary", "hex", "json"]
    quote: Quote | None = None
    snp_report: SnpReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _looks_like_quote(data: bytes) -> bool:
    return (len(data) >= 48 and int.from_bytes(data[0:2], "little") in (3, 4, 5)
            and int.from_bytes(data[2:4], "little") == 2)


def _from_binary(data: bytes, encoding: Literal["binary", "hex", "json"],
                 extra: dict[str, Any] | None = None) -> LoadedEvidence:
    if _looks_like_quote(data):
        quote = parse_quote(data)
        tee_type = quote.header.tee_type
        if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
            raise FormatError(f"quote with unknown TEE type {tee_type:#x}")
        return LoadedEvidence(quote.tee, data, encoding, quote=quote, extra=extra or {})
    if len(data) == REPORT_SIZE:
        return LoadedEvidence(SNP.name, data, encoding, snp_report=parse_snp_report(data), extra=extra or {})
    raise FormatError("evidence is neither a DCAP quote (v3/v4/v5) nor an SNP attestation report")


def decode_base64(text: object, what: str) -> bytes:
    """Standard base64 (padding required), as CoCo attesters encode evidence."""
    if not isinstance(text, str) or len(text) % 4:
        raise FormatError(f"{what} must be standard base64 text")
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what} is not valid base64: {exc}") from exc


def decode_report_value(value: object) -> bytes:
    """The bytes of an ``attestation_report`` JSON member: base64, hex or an array of bytes."""
    if isinstance(value, str):
        stripped = value.strip()
        match = _HEX.fullmatch(stripped.encode("ascii", "replace"))
        if match is not None and len(match.group(1)) == 2 * REPORT_SIZE:
            return bytes.fromhex(match.group(1).decode())
        return decode_base64(stripped, "attestation_report")
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                                       for b in value):
        return bytes(value)
    raise FormatError("attestation_report must be base64, hex or a byte array (the sev crate's "
                      "structured form is not supported)")


def _from_json(text: bytes) -> LoadedEvidence:
    document = loads_strict(text, "evidence JSON")
    if not isinstance(document, dict):
        raise FormatError("evidence JSON must be an object")
    extra = {k: v for k, v in document.items() if k not in ("quote", "attestation_report")}
    if "quote" in document:
        data = decode_base64(document["quote"], "evidence quote")
        if not _looks_like_quote(data):
            raise FormatError("evidence 'quote' is not a DCAP quote")
        return _from_binary(data, "json", extra)
    if "attestation_report" in document:
        data = decode_report_value(document["attestation_report"])
        if len(data) != REPORT_SIZE:
            raise FormatError(f"attestation_report must be {REPORT_SIZE} bytes")
        return _from_binary(data, "json", extra)
    raise FormatError("evidence JSON has neither 'quote' nor 'attestation_report'")


def load_evidence(data: bytes) -> LoadedEvidence:
    """Detect and parse evidence (binary, hex text, or CoCo evidence JSON). FormatError if none."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("evidence is bytes")
    data = bytes(data)
    if len(data) > MAX_EVIDENCE_SIZE:
        raise FormatError(f"evidence is larger than {MAX_EVIDENCE_SIZE} bytes")
    if _looks_like_quote(data):
        return _from_binary(data, "binary")
    stripped = data.strip()
    if stripped[:1] == b"{":
        return _from_json(stripped)
    match = _HEX.fullmatch(stripped)
    if match is not None:
        return _from_binary(bytes.fromhex(match.group(1).decode("ascii")), "hex")
    return _from_binary(data, "binary")
