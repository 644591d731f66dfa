"""The SEV-SNP verifier: ``{"attestation_report": …, "cert_chain": […]}`` evidence -> Verdict,
against the configured AMD ASK/ARK chains and VCEKs (known, or sent with the evidence)."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from inclavare.errors import FormatError, VerificationError
from inclavare.formats.evidence import decode_base64, decode_report_value
from inclavare.formats.snp import parse_snp_report
from inclavare.tee.registry import Tee
from inclavare.verify.evidence import SNP_STATUS, TrustConfig, UnsupportedTee, Verdict, expect_report_data
from inclavare.verify.snp import MalformedSnpReport, verify_snp_report


def _snp_certificates(evidence: Mapping[str, Any]) -> list[x509.Certificate]:
    """VCEK/VLEK candidates sent with the evidence (PEM text, or base64 DER, or
    ``{"cert_type": …, "data": …}`` entries). Unreadable entries are ignored: a certificate
    only counts if it chains to a configured ARK anyway."""
    found: list[x509.Certificate] = []
    entries = evidence.get("cert_chain") or []
    if not isinstance(entries, list):
        return found
    for entry in entries:
        data = entry.get("data") if isinstance(entry, dict) else entry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if isinstance(data, str) and "BEGIN CERTIFICATE" in data:
                    found.extend(x509.load_pem_x509_certificates(data.encode()))
                elif isinstance(data, str):
                    found.append(x509.load_der_x509_certificate(decode_base64(data, "cert_chain")))
                elif isinstance(data, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in data):
                    found.append(x509.load_der_x509_certificate(bytes(data)))
        except (ValueError, FormatError):
            continue
    return found


def verify_snp(tee: Tee, evidence: Mapping[str, Any], report_data: bytes | None, trust: TrustConfig,
               now: dt.datetime) -> Verdict:
    try:
        report = parse_snp_report(decode_report_value(evidence.get("attestation_report")))
    except FormatError as exc:
        raise MalformedSnpReport(f"malformed {tee} evidence: {exc}") from exc
    if not trust.amd_chains:
        raise UnsupportedTee("no AMD ASK/ARK chain is configured: SNP evidence cannot be verified")
    candidates = list(trust.vceks) + _snp_certificates(evidence)
    if not candidates:
        raise VerificationError("no VCEK for this SNP report (configure one or send cert_chain)")
    first_error: VerificationError | None = None
    for vcek in candidates:
        for chain in trust.amd_chains:
            try:
                verified = verify_snp_report(report, vcek=vcek, ask_ark=chain, now=now)
            except VerificationError as exc:
                first_error = first_error or exc
                continue
            expect_report_data(verified.report_data, report_data)
            return Verdict(tee.name, SNP_STATUS, (), verified.claims)
    raise first_error or VerificationError("SNP report did not verify")


def snp_ready(trust: TrustConfig) -> bool:
    """SNP evidence can verify only with an AMD chain configured."""
    return bool(trust.amd_chains)
