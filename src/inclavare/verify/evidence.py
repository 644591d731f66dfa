"""One entry point for every kind of evidence: ``verify_evidence(tee, evidence, …) -> Verdict``.

The key broker calls this with the TEE name and evidence JSON of a KBS attestation request
(``{"quote": "<base64>"}`` for SGX/TDX, ``{"attestation_report": …}`` for SNP), the expected report
data (hash of the session's runtime data) and the configured trust. Verification raises a
``VerificationError`` subclass; a returned :class:`Verdict` means the evidence verified.

:class:`TrustConfig` says what to trust: the SGX root CA(s) — Intel's by default; the simulated
TEE's root only when configured — the DCAP collateral to verify with (picked by the quote's FMSPC,
PCK CA and TEE; fixed documents and/or a provider such as the simulated authority), and the AMD
ASK/ARK chains (and known VCEKs) for SNP, and the CA certificates a TPM's EK certificate must
chain to. Repeated calls are cheap: parsed and verified collateral,
chains and signatures are memoised (see ``inclavare.verify.dcap_chains``).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from inclavare.errors import (
    CollateralError,
    FormatError,
    ReportDataMismatch,
    VerificationError,
)
from inclavare.formats.collateral import Collateral
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.quote import CERT_TYPE_PCK_CHAIN, Quote
from inclavare.formats.tcb_info import TcbInfo, parse_tcb_info
from inclavare.memo import Memo, memo
from inclavare.verify.dcap import MalformedQuote
from inclavare.verify.dcap_chains import pck_extension_of
from inclavare.verify.intel_sgx_root import INTEL_SGX_ROOT_CA
from inclavare.verify.pki_path import parse_certificate, parse_crl

SNP_STATUS = "Verified"
"""SNP has no TCB status document; a verified report carries this status and its reported TCB
appears in the claims for policy to judge."""


class UnsupportedTee(VerificationError):
    """Evidence for a TEE this verifier does not handle."""


class CertificateChainFormat(VerificationError, FormatError):
    """The quote's PCK chain cannot be read."""


CollateralProvider = Callable[[], Sequence[Collateral]]


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """What verification trusts. Defaults fail closed: Intel's root only, no collateral (DCAP
    evidence is rejected until collateral is configured), no AMD chains (SNP rejected), no EK CAs (TPM rejected)."""

    sgx_root_cas: tuple[x509.Certificate, ...] = (INTEL_SGX_ROOT_CA,)
    collateral: tuple[Collateral, ...] = ()
    collateral_provider: CollateralProvider | None = None
    amd_chains: tuple[tuple[x509.Certificate, ...], ...] = ()
    vceks: tuple[x509.Certificate, ...] = ()
    tpm_ek_cas: tuple[x509.Certificate, ...] = ()

    def collateral_documents(self) -> tuple[Collateral, ...]:
        provided = tuple(self.collateral_provider()) if self.collateral_provider else ()
        return self.collateral + provided


@dataclass(frozen=True, slots=True)
class Verdict:
    """Verified evidence: TCB ``status`` (dcap-qvl spelling; ``Verified`` for SNP),
    ``advisory_ids`` and JSON-ready ``claims`` (bytes as lowercase hex)."""

    tee: str
    status: str
    advisory_ids: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tee": self.tee, "status": self.status, "advisory_ids": list(self.advisory_ids),
                "claims": self.claims}

    def appraisal_claims(self, simulated: bool) -> dict[str, Any]:
        """The claims policies see (``input.<tee>``): the evidence's, its TCB status and advisories,
        and ``simulated`` when only a simulated root vouched for it."""
        claims = dict(self.claims)
        claims["tcb_status"] = self.status
        claims["advisory_ids"] = list(self.advisory_ids)
        if simulated:
            claims["simulated"] = True
        return claims


_TCB_INFO: Memo[str, TcbInfo | FormatError] = memo("evidence-tcb-info", 128)
_CHAIN_LEAF: Memo[bytes, tuple[bytes, str, bytes] | FormatError] = memo("evidence-pck-leaf", 256)


def _tcb_info(collateral: Collateral) -> TcbInfo | None:
    try:
        return _TCB_INFO.parse(collateral.tcb_info, lambda: parse_tcb_info(collateral.tcb_info))
    except FormatError:
        return None


def _platform_of(quote: Quote) -> tuple[bytes, str, bytes]:
    """(FMSPC, PCK CA type, PCK CRL issuer name) from the quote's PCK leaf."""
    cert = quote.auth_data.qe.certification_data
    if cert.cert_type != CERT_TYPE_PCK_CHAIN:
        raise CollateralError(f"cannot select collateral for certification data type {cert.cert_type}")

    def leaf_facts() -> tuple[bytes, str, bytes]:
        blocks = parse_pem_blocks(cert.body)
        if not blocks:
            raise FormatError("empty PCK chain")
        leaf = parse_certificate(blocks[0].contents)
        issuer = leaf.issuer
        ca = "processor" if b"Processor" in issuer else "platform" if b"Platform" in issuer else "processor"
        return (pck_extension_of(leaf).fmspc, ca, issuer)

    try:
        return _CHAIN_LEAF.parse(cert.body, leaf_facts)
    except FormatError as exc:
        raise CertificateChainFormat(f"unreadable PCK certificate chain: {exc}") from None


def select_collateral(quote: Quote, documents: Sequence[Collateral]) -> Collateral:
    """The collateral for this quote's platform: same FMSPC, same TEE (TCB Info id), and a PCK CRL
    from the PCK certificate's issuer. CollateralError when none matches."""
    fmspc, ca, issuer = _platform_of(quote)
    tee_id = quote.tee.upper()  # the TCB Info "id" of the quote's TEE
    for collateral in documents:
        info = _tcb_info(collateral)
        if info is None or info.id != tee_id or info.fmspc.upper() != fmspc.hex().upper():
            continue
        try:
            crl_issuer = parse_crl(collateral.pck_crl).issuer
        except FormatError:
            continue
        if crl_issuer == issuer:
            return collateral
    raise CollateralError(f"no collateral configured for {tee_id} FMSPC {fmspc.hex().upper()} "
                          f"(PCK {ca} CA)")


def expect_report_data(actual: bytes, expected: bytes | None) -> None:
    if expected is None:
        return
    if len(expected) > 64:
        raise ReportDataMismatch("expected report data is longer than 64 bytes")
    if not hmac.compare_digest(actual, expected.ljust(64, b"\0")):
        raise ReportDataMismatch("the evidence is not bound to the expected report data")


def verify_evidence(
    tee: str,
    evidence: Mapping[str, Any],
    *,
    report_data: bytes | None,
    trust: TrustConfig,
    now: dt.datetime,
) -> Verdict:
    """Verify ``evidence`` of TEE ``tee`` (a name in the verifier table) at time ``now``; when
    ``report_data`` is given the evidence's report data must equal it zero-padded to 64 bytes."""
    if not isinstance(evidence, Mapping):
        raise MalformedQuote("evidence must be a JSON object")
    from inclavare.verify.table import verifier_for  # the table's verifiers import this module

    found, entry = verifier_for(tee)
    return entry.verify(found, evidence, report_data, trust, now)
