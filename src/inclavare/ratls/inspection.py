"""A readable account of an RA-TLS certificate, without trusting it.

:func:`describe_certificate` reports what a certificate claims — evidence format and type, the
claims (bytes as hex), the enclave identity in the quote — and whether the public-key binding
holds (``pubkey_bound``): the claims name the certificate's key *and* the evidence's report data
is the hash that binds them. It checks the certificate's own signature (as the parser always does) but not the
signatures on the evidence or any collateral;
that is :class:`~inclavare.ratls.verifier.RatlsVerifier`'s job. A malformed certificate raises
the typed parse error; a certificate whose key does not match its evidence is reported unbound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.quote import parse_quote
from inclavare.formats.report_body import EnclaveReport, TdReport10
from inclavare.formats.snp import parse_snp_report
from inclavare.ratls.certificate import (
    TAG_INTEL_TEE_QUOTE,
    TAG_SEV_SNP,
    Evidence,
    RatlsCertificate,
    parse_ratls_certificate,
    report_data_matches,
)
from inclavare.ratls.issuers import IssuerCa
from inclavare.tee.sim_pki import quote_is_simulated


def _time(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat()


def _quote_summary(data: bytes) -> tuple[dict[str, Any], bytes]:
    quote = parse_quote(data)
    body = quote.report
    summary: dict[str, Any] = {"version": quote.header.version, "tee": quote.tee}
    if isinstance(body, EnclaveReport):
        summary.update(mr_enclave=body.mr_enclave.hex(), mr_signer=body.mr_signer.hex(),
                       isv_prod_id=body.isv_prod_id, isv_svn=body.isv_svn,
                       attributes=body.attributes.hex(), debug=body.debug)
    elif isinstance(body, TdReport10):
        summary.update(mr_td=body.mr_td.hex(), rtmr0=body.rt_mr0.hex(), rtmr1=body.rt_mr1.hex(),
                       rtmr2=body.rt_mr2.hex(), rtmr3=body.rt_mr3.hex(), debug=body.debug)
    summary["report_data"] = body.report_data.hex()
    try:  # who issued the PCK chain (no trust decision): a simulated authority says so in every name
        summary["simulated"] = quote_is_simulated(quote.pck_chain_pem)
    except FormatError:
        pass
    return summary, body.report_data


def _evidence_summary(cert: RatlsCertificate, evidence: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {"format": evidence.source, "oid": evidence.oid,
                           "evidence_type": evidence.evidence_type, "tag": evidence.tag,
                           "size": len(evidence.data)}
    if evidence.claims is not None:
        out["claims"] = evidence.claims.to_json()
    report_data: bytes | None = None
    try:
        if evidence.tag in (None, TAG_INTEL_TEE_QUOTE):
            out["quote"], report_data = _quote_summary(evidence.data)
        elif evidence.tag == TAG_SEV_SNP:
            report = parse_snp_report(evidence.data)
            report_data = report.report_data
            out["report"] = {"measurement": report.measurement.hex(),
                             "report_data": report.report_data.hex()}
    except FormatError as exc:
        out["error"] = f"unreadable evidence: {exc}"
    claims_bound = cert.claims_bind_key(evidence)
    data_bound = report_data is not None and report_data_matches(
        report_data, evidence.expected_report_data(cert.spki_der))
    out["pubkey_bound"] = bool(claims_bound and data_bound)
    if not claims_bound:
        out["binding"] = "the pubkey-hash claim names another public key"
    elif report_data is None:
        out["binding"] = "the evidence's report data cannot be read"
    elif not data_bound:
        out["binding"] = ("the report data is not SHA-256 of the claims"
                          if evidence.claims is not None else
                          "the report data is not SHA-256 of the certificate's public key")
    else:
        out["binding"] = ("report data = SHA-256(claims), pubkey-hash = hash(SPKI)"
                          if evidence.claims is not None else "report data = SHA-256(SPKI)")
    return out


def describe_certificate(data: bytes, issuers: tuple[IssuerCa, ...] = ()) -> dict[str, Any]:
    """JSON-ready description; top-level ``evidence_type``, ``claims`` and ``pubkey_bound``
    describe the evidence a verifier would use (the DICE extension when present). An endorsed
    certificate is described only when its issuer is among ``issuers``."""
    cert = parse_ratls_certificate(data, issuers)
    evidence = [_evidence_summary(cert, e) for e in cert.evidence]
    primary = evidence[0]
    return {
        "evidence_type": primary["evidence_type"],
        "format": primary["format"],
        "pubkey_bound": primary["pubkey_bound"],
        "claims": primary.get("claims", {}),
        "quote": primary.get("quote", primary.get("report")),
        "certificate": {
            "sha256": cert.sha256.hex(),
            "self_signed": cert.self_signed,
            "issuer_ca": cert.issuer_ca.name if cert.issuer_ca is not None else None,
            "not_before": _time(cert.view.not_before),
            "not_after": _time(cert.view.not_after),
            "spki_sha256": hashlib.sha256(cert.spki_der).hexdigest(),
            "endorsements": cert.endorsements is not None,
        },
        "evidence": evidence,
    }
