"""The signed inputs of DCAP verification, checked against a trust anchor and the CRLs:
the TCB Info and QE Identity documents (issuer chain + ECDSA signature over the exact JSON text)
and the PCK certificate chain (+ its SGX extension).

A validated chain is remembered with its validity window (latest ``notBefore``, earliest
``notAfter``, earliest CRL ``nextUpdate``) under the exact chain text, anchor and CRLs; a later
call reuses it only when its own ``now`` falls inside that window and otherwise validates afresh,
so the memo never changes a verdict. This is what makes repeated verification cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inclavare.crypto.signatures import verify_p256_sha256
from inclavare.errors import CertificateChainError, CollateralError, FormatError, SignatureError
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.qe_identity import QeIdentity, parse_qe_identity
from inclavare.formats.sgx_pck_extension import (
    SGX_EXTENSION_OID_BYTES,
    PckExtension,
    parse_pck_extension,
)
from inclavare.formats.tcb_info import TcbInfo, parse_tcb_info
from inclavare.formats.x509_view import CertificateView, CrlView
from inclavare.memo import Memo, memo
from inclavare.verify.pki_path import (
    TrustAnchor,
    VerifiedPath,
    check_signature,
    parse_crl,
    verify_path,
)


@dataclass(frozen=True, slots=True)
class CrlPair:
    """The root CA CRL and the PCK CRL of a collateral set, parsed (order matters: webpki picks
    the first CRL whose issuer matches)."""

    root_ca_crl: CrlView
    pck_crl: CrlView

    @property
    def both(self) -> tuple[CrlView, CrlView]:
        return (self.root_ca_crl, self.pck_crl)


def load_crls(root_ca_crl: bytes, pck_crl: bytes) -> CrlPair:
    try:
        return CrlPair(parse_crl(root_ca_crl), parse_crl(pck_crl))
    except FormatError as exc:
        raise CollateralError(f"malformed CRL in collateral: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Window:
    """Times (Unix seconds, inclusive) at which a validated path stays valid."""

    start: int
    end: int

    @classmethod
    def of(cls, path: VerifiedPath, crls: Sequence[CrlView]) -> _Window:
        start = max(c.not_before for c in path.certificates)
        end = min(c.not_after for c in path.certificates)
        for cert in path.certificates:
            crl = next(c for c in crls if c.issuer == cert.issuer)
            end = min(end, crl.next_update - 1)
        return cls(start, end)

    def contains(self, now: int) -> bool:
        return self.start <= now <= self.end


_PATHS: Memo[tuple[object, ...], tuple[VerifiedPath, _Window]] = memo("validated-paths", 256)


def _certificates(pem: str | bytes, what: str) -> list[bytes]:
    try:
        blocks = parse_pem_blocks(pem)
    except FormatError as exc:
        raise CertificateChainError(f"{what}: {exc}") from exc
    return [b.contents for b in blocks]


def validate_chain(pem: str | bytes, anchor: TrustAnchor, crls: CrlPair, now: int, what: str) -> VerifiedPath:
    """Validate a PEM chain (leaf first; other blocks are candidate intermediates)."""
    key = (pem, anchor.certificate.der, crls.root_ca_crl.der, crls.pck_crl.der)
    cached = _PATHS.get(key)
    if cached is not None and cached[1].contains(now):
        return cached[0]
    certs = _certificates(pem, what)
    if not certs:
        raise CertificateChainError(f"{what}: certificate chain is empty")
    try:
        path = verify_path(certs[0], certs[1:], (anchor,), crls.both, now)
    except CertificateChainError as exc:
        raise CertificateChainError(f"{what}: {exc}") from exc
    _PATHS.put(key, (path, _Window.of(path, crls.both)))
    return path


def check_root_not_revoked(anchor: TrustAnchor, crls: CrlPair, now: int) -> None:
    """The anchor itself must be covered by a current CRL it signed that does not list it."""
    root = anchor.certificate
    crl = next((c for c in crls.both if c.issuer == root.issuer), None)
    if crl is None:
        raise CertificateChainError("revocation status of the root CA unknown (no CRL issued by it)")
    try:
        check_signature(root.spki, crl.signed)
    except SignatureError as exc:
        raise CertificateChainError(f"root CA CRL signature invalid: {exc}") from exc
    if now >= crl.next_update:
        raise CollateralError("root CA CRL has expired (past nextUpdate)")
    if root.serial in crl.revoked_serials:
        raise CertificateChainError("the root CA is revoked")


_DOC_SIGNATURES: Memo[tuple[bytes, str, bytes], bool | SignatureError] = memo("collateral-signatures", 256)
_TCB_INFOS: Memo[str, TcbInfo | FormatError] = memo("tcb-info", 128)
_QE_IDENTITIES: Memo[str, QeIdentity | FormatError] = memo("qe-identity", 128)


def _check_document_signature(leaf: CertificateView, text: str, signature: bytes, what: str) -> None:
    key = (leaf.spki, text, signature)
    outcome = _DOC_SIGNATURES.get(key)
    if outcome is None:
        try:
            verify_p256_sha256(leaf.spki, text.encode("utf-8"), signature)
            outcome = True
        except SignatureError as exc:
            outcome = exc
        _DOC_SIGNATURES.put(key, outcome)
    if isinstance(outcome, SignatureError):
        raise SignatureError(f"{what} signature is invalid: {outcome}")


def _check_dates(issue: int, next_update: int, now: int, what: str) -> None:
    if now < issue:
        raise CollateralError(f"{what} issue date is in the future")
    if now > next_update:
        raise CollateralError(f"{what} has expired (past nextUpdate)")


def verified_tcb_info(text: str, signature: bytes, chain: str, anchor: TrustAnchor,
                      crls: CrlPair, now: int) -> TcbInfo:
    """TCB Info whose dates cover ``now``, signed by a TCB signing key chained to ``anchor``."""
    try:
        parsed = _TCB_INFOS.parse(text, lambda: parse_tcb_info(text))
    except FormatError as exc:
        raise CollateralError(f"malformed TCB Info: {exc}") from None
    _check_dates(parsed.issue_date, parsed.next_update, now, "TCB Info")
    path = validate_chain(chain, anchor, crls, now, "TCB Info issuer chain")
    _check_document_signature(path.leaf, text, signature, "TCB Info")
    return parsed


def verified_qe_identity(text: str, signature: bytes, chain: str, anchor: TrustAnchor,
                         crls: CrlPair, now: int) -> QeIdentity:
    """QE Identity whose dates cover ``now``, signed by a key chained to ``anchor``."""
    try:
        parsed = _QE_IDENTITIES.parse(text, lambda: parse_qe_identity(text))
    except FormatError as exc:
        raise CollateralError(f"malformed QE Identity: {exc}") from None
    _check_dates(parsed.issue_date, parsed.next_update, now, "QE Identity")
    path = validate_chain(chain, anchor, crls, now, "QE Identity issuer chain")
    _check_document_signature(path.leaf, text, signature, "QE Identity")
    return parsed


@dataclass(frozen=True, slots=True)
class PckCertificate:
    """The validated PCK leaf and the platform facts its SGX extension certifies."""

    certificate: CertificateView
    extension: PckExtension

    @property
    def ca_type(self) -> str:
        """``processor`` or ``platform``, from the issuing CA's name (as dcap-qvl classifies)."""
        issuer = self.certificate.issuer
        if b"Processor" in issuer:
            return "processor"
        if b"Platform" in issuer:
            return "platform"
        return "processor"


_PCK_EXTENSIONS: Memo[bytes, PckExtension | FormatError] = memo("pck-extensions", 256)


def pck_extension_of(certificate: CertificateView) -> PckExtension:
    """Parse (memoised) the SGX extension of a PCK certificate; FormatError if absent/malformed."""

    def parse() -> PckExtension:
        ext = certificate.extension(SGX_EXTENSION_OID_BYTES)
        if ext is None:
            raise FormatError("PCK certificate has no SGX extension")
        return parse_pck_extension(ext.value)

    return _PCK_EXTENSIONS.parse(certificate.der, parse)


def verified_pck(chain_pem: str | bytes, anchor: TrustAnchor, crls: CrlPair, now: int) -> PckCertificate:
    path = validate_chain(chain_pem, anchor, crls, now, "PCK certificate chain")
    try:
        return PckCertificate(path.leaf, pck_extension_of(path.leaf))
    except FormatError as exc:
        raise CertificateChainError(f"PCK certificate: {exc}") from exc
