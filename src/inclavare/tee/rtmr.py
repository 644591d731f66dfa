"""TDX run-time measurement registers: CoCo's ExtendRuntimeMeasurement semantics.

A TD has four RTMRs of 48 bytes, all zero at launch; extending one with a SHA-384 digest ``d``
sets it to ``SHA-384(rtmr ‖ d)``. CoCo's attestation agent (``ExtendRuntimeMeasurement{domain,
operation, content, register_index}``) measures the event text ``"domain operation content"``
(SHA-384) into a *PCR index* (default 17) that the TDX attester maps onto an RTMR as the TCG's
CC event-log mapping does: PCR 1 and 7 → RTMR0, 2–6 → RTMR1, 8–15 → RTMR2, anything else → RTMR3.
The guest may extend only RTMR2 and RTMR3 (RTMR0/1 are the firmware's: TDG.MR.RTMR.EXTEND refuses
them), so an index that lands on RTMR0/1 is refused here too.
"""

from __future__ import annotations

import hashlib
import threading

from inclavare.errors import ConfigError

RTMR_SIZE = 48
RTMR_COUNT = 4
GUEST_EXTENDABLE = (2, 3)
DEFAULT_PCR_INDEX = 17  # CoCo's attestation agent's default register
MAX_EVENT_FIELD = 1024  # domain / operation / content, bytes each


def rtmr_of_pcr(pcr: int) -> int:
    """The RTMR a PCR index maps to (TCG CC event log mapping, as CoCo's TDX attester)."""
    if isinstance(pcr, bool) or not isinstance(pcr, int) or pcr < 0:
        raise ConfigError("register_index is a PCR index (a whole number ≥ 0)")
    if pcr in (1, 7):
        return 0
    if 2 <= pcr <= 6:
        return 1
    if 8 <= pcr <= 15:
        return 2
    return 3


def event_digest(domain: str, operation: str, content: str) -> bytes:
    """SHA-384 of CoCo's event-log entry text ``"domain operation content"``."""
    for what, value in (("domain", domain), ("operation", operation), ("content", content)):
        if not isinstance(value, str) or not value or len(value.encode()) > MAX_EVENT_FIELD:
            raise ConfigError(f"{what} must be a non-empty string of at most {MAX_EVENT_FIELD} bytes")
        if what != "content" and any(c.isspace() for c in value):
            raise ConfigError(f"{what} must not contain white space (the event text is space-separated)")
    return hashlib.sha384(f"{domain} {operation} {content}".encode()).digest()


def extended(value: bytes, digest: bytes) -> bytes:
    """``SHA-384(value ‖ digest)``: one extension of a register."""
    if len(value) != RTMR_SIZE or len(digest) != RTMR_SIZE:
        raise ConfigError("an RTMR and the digest extending it are 48 bytes")
    return hashlib.sha384(value + digest).digest()


class Rtmrs:
    """One TD's four registers (thread-safe): zero at launch, extended only through :meth:`extend`."""

    def __init__(self, values: "tuple[bytes, ...] | None" = None) -> None:
        """``values``: the four registers as they were (a node agent restarted while the TD ran)."""
        if values is not None and (len(values) != RTMR_COUNT or any(len(v) != RTMR_SIZE for v in values)):
            raise ConfigError(f"a TD has {RTMR_COUNT} RTMRs of {RTMR_SIZE} bytes")
        self._values = list(values) if values is not None else [bytes(RTMR_SIZE)] * RTMR_COUNT
        self._lock = threading.Lock()

    def extend(self, index: int, digest: bytes) -> bytes:
        """Extend RTMR ``index`` (2 or 3) with ``digest``; returns the new value."""
        if index not in GUEST_EXTENDABLE:
            raise ConfigError(f"RTMR{index} cannot be extended from the guest "
                              f"(only RTMR{GUEST_EXTENDABLE[0]} and RTMR{GUEST_EXTENDABLE[1]})")
        with self._lock:
            self._values[index] = extended(self._values[index], digest)
            return self._values[index]

    def values(self) -> tuple[bytes, bytes, bytes, bytes]:
        with self._lock:
            a, b, c, d = self._values
            return a, b, c, d


def runtime_measurement_request(body: object) -> tuple[int, bytes, str]:
    """CoCo's ExtendRuntimeMeasurement body ``{"domain", "operation", "content",
    "register_index"?}`` → ``(rtmr, digest, event text)``; ConfigError for anything else."""
    if not isinstance(body, dict):
        raise ConfigError('body must be {"domain": …, "operation": …, "content": …, "register_index": N?}')
    unknown = set(body) - {"domain", "operation", "content", "register_index"}
    if unknown:
        raise ConfigError(f"unknown field(s): {', '.join(sorted(unknown))}")
    pcr = body.get("register_index")
    rtmr = rtmr_of_pcr(DEFAULT_PCR_INDEX if pcr is None else pcr)
    if rtmr not in GUEST_EXTENDABLE:
        raise ConfigError(f"register_index {pcr} maps to RTMR{rtmr}, which only the firmware extends")
    digest = event_digest(body.get("domain"), body.get("operation"), body.get("content"))  # type: ignore[arg-type]
    return rtmr, digest, f"{body['domain']} {body['operation']} {body['content']}"
