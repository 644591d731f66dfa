"""KBS protocol 0.4.0 messages (kbs-types) and the report_data binding, shared by server and client.

Everything here parses untrusted JSON into frozen dataclasses or raises ``KbsError`` with
Trustee's error variant; nothing returns half a message.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from inclavare.crypto.b64 import b64std_encode
from inclavare.errors import FormatError, KbsError
from inclavare.formats.strict_json import loads_strict
from inclavare.tee.registry import known_tees

PROTOCOL_VERSION = "0.4.0"
KBS_PREFIX = "/kbs/v0"
SESSION_COOKIE = "kbs-session-id"
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
NONCE_BYTES = 32
# Wire-format constants (allowed TEE literals, see tests/test_tee_literals.py): kbs-types `Tee`
# serde names a request may carry, and those whose report data kbs-types does not pad to 64 bytes.
KNOWN_TEES = frozenset({
    "az-snp-vtpm", "az-tdx-vtpm", "nvidia", "sgx", "snp", "tdx", "cca", "csv", "se",
    "hygondcu", "tpm", "sample", "sampledevice",
})
UNPADDED_TEES = frozenset({"sample", "sampledevice"})
HARDWARE_REPORT_DATA_LEN = 64
ADDITIONAL_EVIDENCE = "additional-evidence"
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")


def auth_error(detail: str) -> KbsError:
    return KbsError(f"Attestation error: RCAR handshake Auth failed: {detail}", kind="AttestationError")


def attest_error(detail: str) -> KbsError:
    return KbsError(f"Attestation error: RCAR handshake Attest failed: {detail}", kind="AttestationError")


def _json_object(body: bytes, what: str, err: Any) -> dict[str, Any]:
    """As serde_json reads it: UTF-8 only, no NaN/Infinity, no repeated keys."""
    try:
        doc = loads_strict(body, what)
    except FormatError as exc:
        raise err(f"deserialize {what}: {exc}") from exc
    if not isinstance(doc, dict):
        raise err(f"deserialize {what}: expected a JSON object")
    return doc


@dataclass(frozen=True)
class AuthRequest:
    version: str
    tee: str
    extra_params: Any


def parse_request(body: bytes) -> AuthRequest:
    doc = _json_object(body, "Request", auth_error)
    version, tee = doc.get("version"), doc.get("tee")
    if not isinstance(version, str):
        raise auth_error("deserialize Request: 'version' must be a string")
    if not isinstance(tee, str):
        raise auth_error("deserialize Request: 'tee' must be a string")
    if not _SEMVER.fullmatch(version):
        raise auth_error(f"failed to parse KBS version {version[:40]!r}")
    core = version.split("+", 1)[0]
    if core != PROTOCOL_VERSION:
        raise auth_error(
            f"KBS Client Protocol Version Mismatch: expect ={PROTOCOL_VERSION} while the request is {version}"
        )
    if tee not in KNOWN_TEES and tee not in known_tees():
        raise auth_error(f"deserialize Request: unknown tee {tee[:40]!r}")
    return AuthRequest(version, tee, doc.get("extra-params", ""))


def make_nonce() -> str:
    return b64std_encode(os.urandom(NONCE_BYTES))


@dataclass(frozen=True)
class InitData:
    format: str
    body: str


@dataclass(frozen=True)
class Attestation:
    nonce: str
    tee_pubkey: dict[str, Any]
    primary_evidence: Any
    additional_evidence: str
    init_data: InitData | None


def parse_attestation(body: bytes) -> Attestation:
    doc = _json_object(body, "Attestation", attest_error)
    runtime = doc.get("runtime-data")
    if not isinstance(runtime, dict):
        raise attest_error("deserialize Attestation: 'runtime-data' must be an object")
    nonce, pubkey = runtime.get("nonce"), runtime.get("tee-pubkey")
    if not isinstance(nonce, str):
        raise attest_error("deserialize Attestation: 'runtime-data.nonce' must be a string")
    if not isinstance(pubkey, dict):
        raise attest_error("deserialize Attestation: 'runtime-data.tee-pubkey' must be a JWK object")
    evidence = doc.get("tee-evidence")
    if not isinstance(evidence, dict) or "primary_evidence" not in evidence:
        raise attest_error("deserialize Attestation: 'tee-evidence.primary_evidence' is missing")
    additional = evidence.get("additional_evidence", "")
    if not isinstance(additional, str):
        raise attest_error("deserialize Attestation: 'additional_evidence' must be a string")
    init_raw = doc.get("init-data")
    init: InitData | None = None
    if init_raw is not None:
        if (
            not isinstance(init_raw, dict)
            or not isinstance(init_raw.get("format"), str)
            or not isinstance(init_raw.get("body"), str)
        ):
            raise attest_error("deserialize Attestation: 'init-data' must be {format, body} strings")
        init = InitData(init_raw["format"], init_raw["body"])
    return Attestation(nonce, pubkey, evidence["primary_evidence"], additional, init)


def runtime_data(tee_pubkey: Mapping[str, Any], nonce: str, additional_evidence: str) -> dict[str, Any]:
    return {"tee-pubkey": dict(tee_pubkey), "nonce": nonce, ADDITIONAL_EVIDENCE: additional_evidence}


def device_runtime_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What additional (device) attesters bind: the runtime data without the additional evidence
    itself (guest-components' rcar_client hashes ``{tee-pubkey, nonce}`` for them)."""
    return {k: v for k, v in doc.items() if k != ADDITIONAL_EVIDENCE}


def runtime_data_digest(doc: Mapping[str, Any], tee: str) -> bytes:
    """H(JCS(runtime data)): SHA-384 for every TEE but ``se`` (SHA-512), as Trustee."""
    try:
        canonical = rfc8785.dumps(dict(doc))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise attest_error(f"runtime data cannot be canonicalised: {exc}") from exc
    return (hashlib.sha512 if tee == "se" else hashlib.sha384)(canonical).digest()


def expected_report_data(digest: bytes, tee: str) -> bytes:
    """What the TEE report must carry: hardware TEEs zero-pad to 64 bytes; ``sample`` does not."""
    if tee in UNPADDED_TEES:
        return digest
    return digest.ljust(HARDWARE_REPORT_DATA_LEN, b"\0")


def error_body(kind: str, detail: str) -> dict[str, str]:
    return {"type": ERROR_TYPE_PREFIX + kind, "detail": detail}
