"""The one registry of TEEs: their names and the facts other layers need about them.

Every TEE name (Trustee's spelling, as in a KBS ``Request.tee`` and as the key of its claims in
the attestation token) is written here and nowhere else; other modules use :data:`SGX`,
:data:`TDX`, :data:`SNP`, :data:`TPM`, :data:`SAMPLE` or look a name up with :func:`tee_named`. Adding a TEE
is one attester module under ``inclavare/tee/``, one verifier module under ``inclavare/verify/``
(registered in ``inclavare.verify.table``) and one :func:`register_tee` entry here (see
docs/architecture.md, "Adding a TEE").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from inclavare.errors import ConfigError, VerificationError


class UnknownTee(VerificationError):
    """A TEE name that is not in the registry."""


@dataclass(frozen=True, slots=True)
class Tee:
    """A kind of TEE. ``name`` is Trustee's; ``init_data_field`` the claim that carries the
    init-data digest (None: the TEE cannot bind init-data); ``hardware`` False for the
    test-only ``sample`` TEE, whose evidence proves nothing."""

    name: str
    init_data_field: str | None = None
    hardware: bool = True

    def __str__(self) -> str:
        return self.name


class Attester(Protocol):
    """Produces evidence for one TEE: report data in (at most 64 bytes, bound into the evidence),
    Trustee's evidence JSON for that TEE out (e.g. ``{"quote": "<base64>"}`` for SGX/TDX).
    Wire formats that need another shape (RA-TLS' CBOR-tagged evidence, the agent's channel
    answer) adapt this one."""

    @property
    def tee(self) -> Tee: ...  # read-only: a class attribute or a property both qualify

    def evidence(self, report_data: bytes) -> dict[str, Any]: ...


def pad_report_data(report_data: bytes) -> bytes:
    """Hardware report data is 64 bytes: shorter data is zero-padded, longer refused."""
    if not isinstance(report_data, bytes) or len(report_data) > 64:
        raise ConfigError("report data is at most 64 bytes")
    return report_data.ljust(64, b"\0")


SGX = Tee("sgx", init_data_field="config_id")
TDX = Tee("tdx", init_data_field="mr_config_id")
SNP = Tee("snp", init_data_field="host_data")
TPM = Tee("tpm")  # a TPM 2.0 (swtpm, a cloud vTPM); it cannot bind init-data
SAMPLE = Tee("sample", hardware=False)

_TEES: dict[str, Tee] = {}


def register_tee(tee: Tee) -> Tee:
    """Add ``tee`` (idempotent for an equal entry; a different entry under a taken name is refused)."""
    known = _TEES.get(tee.name)
    if known is not None and known != tee:
        raise ValueError(f"TEE {tee.name!r} is already registered differently")
    _TEES[tee.name] = tee
    return tee


def unregister_tee(name: str) -> None:
    """Remove a TEE (tests that register a toy TEE clean up with this)."""
    _TEES.pop(name, None)


def tee_named(name: str) -> Tee:
    """The registered TEE called ``name``; UnknownTee otherwise."""
    tee = _TEES.get(name)
    if tee is None:
        raise UnknownTee(f"unknown TEE {name!r} (known: {', '.join(_TEES)})")
    return tee


def known_tees() -> Mapping[str, Tee]:
    """All registered TEEs by name, in registration order."""
    return dict(_TEES)


def tee_of_evidence(evidence: Mapping[str, Any]) -> str:
    """The first registered TEE name that keys an object in ``evidence`` (annotated evidence or a
    token's claims), ``-`` if none."""
    return next((name for name in _TEES if isinstance(evidence.get(name), Mapping)), "-")


for _builtin in (SGX, TDX, SNP, TPM, SAMPLE):
    register_tee(_builtin)
