"""Offline DCAP quote verification (SGX quote v3, TDX quote v4/v5), with the verdicts of Intel's
QVL as dcap-qvl implements them.

Steps: the trust anchor is covered by a current root CA CRL and not revoked; the quote header is
an Intel ECDSA-P256 quote of a supported version for its TEE; TCB Info and QE Identity are inside
their validity window, chain to the anchor (CRL-checked) and are signed over their exact JSON
text; the PCK chain (from the quote, or the collateral's ``pck_certificate_chain``) chains to the
anchor; the QE report is signed by the PCK key; the QE report data binds the attestation key and
the QE authentication data; the QE matches its identity; the quote is signed by the attestation
key; the platform TCB (PCK certificate TCB, FMSPC, and for TDX the TEE TCB SVNs and the TDX module
identity) matches a TCB level; the statuses merge (``Revoked`` fails); debug enclaves/TDs, reserved
TD attribute bits, a missing SEPT_VE_DISABLE and a non-zero MRSERVICETD fail.

Verification raises a :class:`~inclavare.errors.VerificationError` subclass; it never returns a
negative result. Both the trust anchors and the time are parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.crypto.signatures import p256_public_key, verify_p256_raw, verify_p256_sha256
from inclavare.errors import (
    CertificateChainError,
    FormatError,
    SignatureError,
    TcbError,
    VerificationError,
)
from inclavare.formats.collateral import Collateral
from inclavare.formats.quote import (
    ATTESTATION_KEY_TYPE_ECDSA_P256,
    CERT_TYPE_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    Quote,
    parse_quote,
)
from inclavare.formats.report_body import EnclaveReport, TdReport10, TdReport15
from inclavare.formats.rfc3339 import unix_seconds
from inclavare.formats.tcb_info import TcbStatus
from inclavare.memo import Memo, memo
from inclavare.tee.registry import SGX, TDX
from inclavare.verify.dcap_chains import (
    CrlPair,
    PckCertificate,
    check_root_not_revoked,
    load_crls,
    verified_pck,
    verified_qe_identity,
    verified_tcb_info,
)
from inclavare.verify.intel_sgx_root import INTEL_SGX_ROOT_CA
from inclavare.verify.pki_path import TrustAnchor
from inclavare.verify.tcb_match import TcbResult, match_platform, match_quoting_enclave


class MalformedQuote(VerificationError, FormatError):
    """The evidence is not a well-formed DCAP quote."""


class QuoteRejected(VerificationError):
    """A well-formed quote failed a check of the quote itself (header, binding, attributes)."""


@dataclass(frozen=True, slots=True)
class SgxClaims:
    """What an SGX quote attests about the enclave."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: bytes
    report_data: bytes
    cpu_svn: bytes
    misc_select: int
    config_id: bytes
    config_svn: int
    isv_ext_prod_id: bytes
    isv_family_id: bytes
    debug: bool

    @classmethod
    def of(cls, body: EnclaveReport) -> SgxClaims:
        return cls(body.mr_enclave, body.mr_signer, body.isv_prod_id, body.isv_svn, body.attributes,
                   body.report_data, body.cpu_svn, body.misc_select, body.config_id, body.config_svn,
                   body.isv_ext_prod_id, body.isv_family_id, body.debug)


@dataclass(frozen=True, slots=True)
class TdxClaims:
    """What a TDX quote attests about the trust domain and the TDX module."""

    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    td_attributes: bytes
    xfam: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    report_data: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    tee_tcb_svn2: bytes | None
    mr_service_td: bytes | None
    debug: bool

    @classmethod
    def of(cls, body: TdReport10) -> TdxClaims:
        v15 = body if isinstance(body, TdReport15) else None
        return cls(body.mr_td, body.rt_mr0, body.rt_mr1, body.rt_mr2, body.rt_mr3, body.td_attributes,
                   body.xfam, body.mr_config_id, body.mr_owner, body.mr_owner_config, body.report_data,
                   body.tee_tcb_svn, body.mr_seam, body.mr_signer_seam, body.seam_attributes,
                   v15.tee_tcb_svn2 if v15 else None, v15.mr_service_td if v15 else None, body.debug)


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote that verified: its TCB status and advisories and the attested claims."""

    tee: str  # SGX.name or TDX.name
    status: str
    advisory_ids: tuple[str, ...]
    claims: SgxClaims | TdxClaims
    quote: Quote = field(repr=False)
    platform_status: str
    qe_status: str
    fmspc: bytes
    pck_ca: str
    ppid: bytes
    collateral_expires: int

    @property
    def report_data(self) -> bytes:
        return self.claims.report_data

    def claims_dict(self) -> dict[str, Any]:
        """JSON-ready claims: byte fields as lowercase hex."""
        out: dict[str, Any] = {}
        for name in self.claims.__dataclass_fields__:
            value = getattr(self.claims, name)
            out[name] = value.hex() if isinstance(value, bytes) else value
        return out


def _anchor(certificate: x509.Certificate | bytes) -> TrustAnchor:
    der = certificate if isinstance(certificate, bytes) else _ANCHOR_DER.get_or_compute(
        certificate, lambda: certificate.public_bytes(Encoding.DER))
    return TrustAnchor.from_der(der)


_ANCHOR_DER: Memo[x509.Certificate, bytes] = memo("anchor-der", 32)
_QE_SIGNATURES: Memo[tuple[bytes, bytes, bytes], bool | SignatureError] = memo("qe-report-signatures", 1024)


def _check_header(quote: Quote) -> str:
    header = quote.header
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise QuoteRejected("unknown QE vendor id")
    if header.tee_type == TEE_TYPE_SGX:
        if header.version != 3:
            raise QuoteRejected("SGX quotes must be version 3")
        tee = SGX.name
    elif header.tee_type == TEE_TYPE_TDX:
        if header.version not in (4, 5):
            raise QuoteRejected("TDX quotes must be version 4 or 5")
        tee = TDX.name
    else:
        raise QuoteRejected(f"unsupported TEE type {header.tee_type:#x}")
    if header.attestation_key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
        raise QuoteRejected("unsupported attestation key type (need ECDSA-P256)")
    return tee


def _check_qe_report_signature(pck: PckCertificate, quote: Quote) -> None:
    qe = quote.auth_data.qe
    report = qe.qe_report.to_bytes()
    key = (pck.certificate.spki, report, qe.qe_report_signature)
    outcome = _QE_SIGNATURES.get(key)
    if outcome is None:
        try:
            verify_p256_sha256(pck.certificate.spki, report, qe.qe_report_signature)
            outcome = True
        except SignatureError as exc:
            outcome = exc
        _QE_SIGNATURES.put(key, outcome)
    if isinstance(outcome, SignatureError):
        raise SignatureError(f"QE report signature (by the PCK key) is invalid: {outcome}")


def _check_qe_binding(quote: Quote) -> None:
    auth = quote.auth_data
    if len(auth.qe.qe_auth_data) != 32:
        raise QuoteRejected("QE authentication data must be 32 bytes")
    digest = hashlib.sha256(auth.attestation_key + auth.qe.qe_auth_data).digest()
    if digest != auth.qe.qe_report.report_data[:32]:
        raise QuoteRejected("QE report data does not bind the attestation key")


# TD_ATTRIBUTES (TDX module ABI): bit 0 DEBUG, 4-6 profiling, 17 SERVTD_EXT, 28 SEPT_VE_DISABLE,
# 29 MIGRATABLE. The bits a production TD may set are those dcap-qvl 0.7 accepts; everything else
# (reserved bits included) fails, and SEPT_VE_DISABLE is required.
_TD_DEBUG = 1
_TD_PROFILING = 0b111 << 4
_TD_SERVTD_EXT = 1 << 17
_TD_SEPT_VE_DISABLE = 1 << 28
_TD_MIGRATABLE = 1 << 29
_TD_ALLOWED = (0b1111101 << 16) | (1 << 27) | _TD_SEPT_VE_DISABLE | (0b11 << 30) | (0b11 << 62)


def _check_attributes(report: EnclaveReport | TdReport10) -> None:
    if isinstance(report, EnclaveReport):
        if report.debug:
            raise QuoteRejected("the enclave runs in debug mode")
        return
    if isinstance(report, TdReport15) and report.mr_service_td != bytes(48):
        raise QuoteRejected("MRSERVICETD is not zero (service TD binding not allowed)")
    attrs = int.from_bytes(report.td_attributes, "little")
    if attrs & _TD_DEBUG:
        raise QuoteRejected("the TD runs in debug mode")
    if attrs & _TD_MIGRATABLE:
        raise QuoteRejected("the TD is migratable")
    if attrs & _TD_PROFILING:
        raise QuoteRejected("TD profiling is enabled")
    if attrs & _TD_SERVTD_EXT:
        raise QuoteRejected("SERVTD_EXT is enabled")
    if attrs & ~_TD_ALLOWED:
        raise QuoteRejected("reserved bits in TD attributes are set")
    if not attrs & _TD_SEPT_VE_DISABLE:
        raise QuoteRejected("SEPT_VE_DISABLE is not set")


def _verify_with_anchor(raw: bytes, quote: Quote, tee: str, collateral: Collateral,
                        anchor: TrustAnchor, now: int) -> VerifiedQuote:
    crls: CrlPair = load_crls(collateral.root_ca_crl, collateral.pck_crl)
    check_root_not_revoked(anchor, crls, now)
    tcb_info = verified_tcb_info(collateral.tcb_info, collateral.tcb_info_signature,
                                 collateral.tcb_info_issuer_chain, anchor, crls, now)
    qe_identity = verified_qe_identity(collateral.qe_identity, collateral.qe_identity_signature,
                                       collateral.qe_identity_issuer_chain, anchor, crls, now)
    expected_id, versions = ("QE", (2,)) if tee == SGX.name else ("TD_QE", (2, 3))
    if qe_identity.id != expected_id or qe_identity.version not in versions:
        raise TcbError(f"QE Identity {qe_identity.id!r} v{qe_identity.version} does not fit a {tee.upper()} quote")
    if collateral.pck_certificate_chain is not None:
        chain: str | bytes = collateral.pck_certificate_chain
    else:
        cert = quote.auth_data.qe.certification_data
        if cert.cert_type != CERT_TYPE_PCK_CHAIN:
            raise CertificateChainError(f"unsupported certification data type {cert.cert_type} "
                                        "(need 5, or a PCK chain in the collateral)")
        chain = cert.body
    pck = verified_pck(chain, anchor, crls, now)
    _check_qe_report_signature(pck, quote)
    _check_qe_binding(quote)
    qe_status = match_quoting_enclave(quote.auth_data.qe.qe_report, qe_identity)
    key = p256_public_key(quote.auth_data.attestation_key)
    try:
        verify_p256_raw(key, raw[:quote.signed_length], quote.auth_data.ecdsa_signature)
    except SignatureError as exc:
        raise SignatureError(f"quote signature (by the attestation key) is invalid: {exc}") from exc
    td_report = quote.report if isinstance(quote.report, TdReport10) else None
    platform = match_platform(tcb_info, is_tdx_quote=tee == TDX.name, fmspc=pck.extension.fmspc,
                              cpu_svn=pck.extension.cpu_svn, pce_svn=pck.extension.pce_svn,
                              td_report=td_report)
    final: TcbResult = platform.merge(qe_status)
    if final.status is TcbStatus.REVOKED:
        raise TcbError("the platform or quoting enclave TCB is revoked")
    _check_attributes(quote.report)
    claims: SgxClaims | TdxClaims = (SgxClaims.of(quote.report) if isinstance(quote.report, EnclaveReport)
                                     else TdxClaims.of(quote.report))
    expires = min(tcb_info.next_update, qe_identity.next_update,
                  crls.root_ca_crl.next_update, crls.pck_crl.next_update)
    return VerifiedQuote(tee, final.status.value, final.advisory_ids, claims, quote,
                         platform.status.value, qe_status.status.value, pck.extension.fmspc,
                         pck.ca_type, pck.extension.ppid, expires)


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral,
    *,
    now: dt.datetime,
    trust_anchors: Sequence[x509.Certificate] = (INTEL_SGX_ROOT_CA,),
) -> VerifiedQuote:
    """Verify a DCAP quote against collateral at time ``now``, trusting ``trust_anchors``
    (the pinned Intel SGX Root CA by default). Raises VerificationError subclasses."""
    if isinstance(quote, Quote):
        return verify_parsed_quote(quote.to_bytes(), quote, collateral, now=now, trust_anchors=trust_anchors)
    try:
        parsed = parse_quote(quote)
    except FormatError as exc:
        raise MalformedQuote(f"malformed quote: {exc}") from exc
    return verify_parsed_quote(bytes(quote), parsed, collateral, now=now, trust_anchors=trust_anchors)


def verify_parsed_quote(
    raw: bytes,
    quote: Quote,
    collateral: Collateral,
    *,
    now: dt.datetime,
    trust_anchors: Sequence[x509.Certificate] = (INTEL_SGX_ROOT_CA,),
) -> VerifiedQuote:
    """:func:`verify_quote` for a quote already parsed from ``raw`` (``parse_quote(raw)``)."""
    if not trust_anchors:
        raise CertificateChainError("no trust anchor configured")
    seconds = unix_seconds(now)
    tee = _check_header(quote)
    first_error: VerificationError | None = None
    for certificate in trust_anchors:
        try:
            return _verify_with_anchor(raw, quote, tee, collateral, _anchor(certificate), seconds)
        except VerificationError as exc:
            first_error = first_error or exc
    raise first_error or CertificateChainError("no trust anchor accepted the quote")
