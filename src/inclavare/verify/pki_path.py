"""Certificate path validation with CRLs, following webpki's path building.

The reference DCAP verifier (dcap-qvl) validates the PCK chain and the collateral issuer chains
with webpki: depth-first path building from the leaf through the supplied intermediates (in
order, the trust anchor tried first at every step), signature and revocation checks once an
anchor is reached, every certificate (not the anchor) checked for validity at ``now``, CA-ness,
path length and — when present — the serverAuth EKU; every certificate's revocation status must
be known from a CRL of its issuer (unknown → reject), CRLs must be signed by that issuer and not
past ``nextUpdate``. Intermediates that are not needed are never parsed, which is why a
mangled surplus copy of the root in a PEM chain does not change the verdict.

Parsing and signature results are memoised by content, so re-validating a known chain costs a
few dictionary lookups plus the time checks, which are always evaluated at the caller's ``now``.
Deviations from webpki (fail closed): name constraints and CRL issuing distribution points are
not supported (such chains are rejected); RSA-PSS signatures are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inclavare.crypto.signatures import verify_signed_data
from inclavare.errors import CertificateChainError, FormatError, SignatureError
from inclavare.formats.der import BOOLEAN, INTEGER, OID, DerError, DerReader, parse_boolean, parse_small_uint
from inclavare.formats.x509_view import CertificateView, CrlView, SignedData
from inclavare.memo import Memo, memo

MAX_SUB_CA_COUNT = 6
SIGNATURE_BUDGET = 100
BUILD_CALL_BUDGET = 200_000
_EKU_SERVER_AUTH = bytes.fromhex("2b06010505070301")

_CERTS: Memo[bytes, CertificateView | FormatError] = memo("certificates", 1024)
_CRLS: Memo[bytes, CrlView | FormatError] = memo("crls", 256)
_SIGNATURES: Memo[tuple[bytes, bytes, bytes, bytes], SignatureError | bool] = memo("x509-signatures", 4096)


def parse_certificate(der: bytes) -> CertificateView:
    """Parse (memoised) a DER certificate with webpki's rules; FormatError if malformed."""
    return _CERTS.parse(der, lambda: CertificateView.parse(der))


def parse_crl(der: bytes) -> CrlView:
    """Parse (memoised) a DER CRL with webpki's rules; FormatError if malformed."""
    return _CRLS.parse(der, lambda: CrlView.parse(der))


def check_signature(spki: bytes, signed: SignedData) -> None:
    """Verify signed data with a SubjectPublicKeyInfo (memoised; raises SignatureError)."""
    key = (spki, signed.data, signed.algorithm, signed.signature)
    outcome = _SIGNATURES.get(key)
    if outcome is None:
        try:
            verify_signed_data(spki, signed.algorithm, signed.data, signed.signature)
            outcome = True
        except SignatureError as exc:
            outcome = exc
        _SIGNATURES.put(key, outcome)
    if isinstance(outcome, SignatureError):
        raise outcome


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """A trusted root: its subject and key (its own validity is not checked, as in webpki)."""

    certificate: CertificateView

    @classmethod
    def from_der(cls, der: bytes) -> TrustAnchor:
        try:
            return cls(parse_certificate(der))
        except FormatError as exc:
            raise CertificateChainError(f"unusable trust anchor: {exc}") from exc

    @property
    def subject(self) -> bytes:
        return self.certificate.subject

    @property
    def spki(self) -> bytes:
        return self.certificate.spki


class _Fatal(Exception):
    """A budget was exhausted: stop searching (webpki's fatal errors)."""


@dataclass(slots=True)
class _Budget:
    signatures: int = SIGNATURE_BUDGET
    build_calls: int = BUILD_CALL_BUDGET

    def signature(self) -> None:
        self.signatures -= 1
        if self.signatures < 0:
            raise _Fatal("maximum signature checks exceeded")

    def build_call(self) -> None:
        self.build_calls -= 1
        if self.build_calls < 0:
            raise _Fatal("maximum path build calls exceeded")


def _basic_constraints(raw: bytes | None) -> tuple[bool, int | None]:
    if raw is None:
        return False, None
    reader = DerReader(raw)
    is_ca = False
    if reader.peek_tag() == BOOLEAN:
        is_ca = parse_boolean(reader.expect_value(BOOLEAN, "cA"))
    path_len = None
    if not reader.at_end():
        path_len = parse_small_uint(reader.expect_value(INTEGER, "pathLen"), "pathLen")
        if path_len > 255:
            raise DerError("pathLenConstraint does not fit in u8")
    reader.finish("basic constraints")
    return is_ca, path_len


def _check_independent(cert: CertificateView, now: int, is_end_entity: bool, sub_ca_count: int) -> None:
    if cert.not_before > cert.not_after:
        raise CertificateChainError("certificate validity period is inverted")
    if now < cert.not_before:
        raise CertificateChainError("certificate is not yet valid")
    if now > cert.not_after:
        raise CertificateChainError("certificate has expired")
    try:
        is_ca, path_len = _basic_constraints(cert.basic_constraints)
    except FormatError as exc:
        raise CertificateChainError(f"malformed basic constraints: {exc}") from exc
    if is_end_entity and is_ca:
        raise CertificateChainError("CA certificate used as end entity")
    if not is_end_entity and not is_ca:
        raise CertificateChainError("end-entity certificate used as CA")
    if not is_end_entity and path_len is not None and sub_ca_count > path_len:
        raise CertificateChainError("path length constraint violated")
    if cert.extended_key_usage is not None:
        try:
            reader = DerReader(cert.extended_key_usage)
            while True:
                if reader.expect_value(OID, "EKU") == _EKU_SERVER_AUTH:
                    break
                if reader.at_end():
                    raise CertificateChainError("required EKU not present")
        except FormatError as exc:
            raise CertificateChainError(f"malformed EKU: {exc}") from exc


def _crl_sign_allowed(key_usage: bytes | None) -> bool:
    if key_usage is None:
        return True
    try:
        reader = DerReader(key_usage)
        value = reader.expect_value(0x03, "key usage")
        reader.finish("key usage")
    except FormatError as exc:
        raise CertificateChainError(f"malformed key usage: {exc}") from exc
    if not value or value[0] > 7 or (len(value) == 1 and value[0] != 0):
        raise CertificateChainError("malformed key usage")
    bits = value[1:]
    if value[0] and bits[-1] & ((1 << value[0]) - 1):
        raise CertificateChainError("malformed key usage")
    return len(bits) >= 1 and bool(bits[0] & 0x02)


@dataclass(frozen=True, slots=True)
class VerifiedPath:
    """The validated path, leaf first, and the anchor it ends in."""

    certificates: tuple[CertificateView, ...]
    anchor: TrustAnchor

    @property
    def leaf(self) -> CertificateView:
        return self.certificates[0]


class _PathSearch:
    def __init__(self, intermediates: Sequence[bytes], anchors: Sequence[TrustAnchor],
                 crls: Sequence[CrlView], now: int) -> None:
        self.intermediates = intermediates
        self.anchors = anchors
        self.crls = crls
        self.now = now
        self.budget = _Budget()
        self.crl_checked: set[tuple[int, bytes]] = set()

    def _check_revocation(self, cert: CertificateView, issuer_spki: bytes, issuer_ku: bytes | None) -> None:
        crl = next((c for c in self.crls if c.issuer == cert.issuer), None)
        if crl is None:
            raise CertificateChainError("revocation status unknown (no CRL from the issuer)")
        marker = (id(crl), issuer_spki)
        if marker not in self.crl_checked:
            self.budget.signature()
            try:
                check_signature(issuer_spki, crl.signed)
            except SignatureError as exc:
                raise CertificateChainError(f"CRL signature invalid: {exc}") from exc
            self.crl_checked.add(marker)
        if self.now >= crl.next_update:
            raise CertificateChainError("CRL has expired (past nextUpdate)")
        if not _crl_sign_allowed(issuer_ku):
            raise CertificateChainError("CRL issuer lacks the cRLSign key usage")
        if cert.serial in crl.revoked_serials:
            raise CertificateChainError("certificate is revoked")

    def _check_signed_chain(self, path: list[CertificateView], anchor: TrustAnchor) -> None:
        if anchor.certificate.name_constraints is not None or any(
                c.name_constraints is not None for c in path[1:]):
            raise CertificateChainError("name constraints are not supported")
        spki, issuer_ku = anchor.spki, None
        for cert in reversed(path):
            self.budget.signature()
            try:
                check_signature(spki, cert.signed)
            except SignatureError as exc:
                raise CertificateChainError(f"certificate signature invalid: {exc}") from exc
            self._check_revocation(cert, spki, issuer_ku)
            spki, issuer_ku = cert.spki, cert.key_usage

    def build(self, path: list[CertificateView], sub_ca_count: int) -> TrustAnchor:
        head = path[-1]
        is_end_entity = len(path) == 1
        _check_independent(head, self.now, is_end_entity, sub_ca_count)
        error: CertificateChainError | None = None
        for anchor in self.anchors:
            if head.issuer != anchor.subject:
                continue
            try:
                self._check_signed_chain(path, anchor)
                return anchor
            except CertificateChainError as exc:
                error = exc
        for der in self.intermediates:
            try:
                candidate = parse_certificate(der)
            except FormatError as exc:
                error = error or CertificateChainError(f"unparsable intermediate: {exc}")
                continue
            if candidate.subject != head.issuer:
                continue
            if any(candidate.spki == p.spki and candidate.subject == p.subject for p in path):
                continue
            next_count = sub_ca_count if is_end_entity else sub_ca_count + 1
            self.budget.build_call()
            if len(path) - 1 >= MAX_SUB_CA_COUNT:
                error = CertificateChainError("maximum path depth exceeded")
                continue
            path.append(candidate)
            try:
                return self.build(path, next_count)
            except CertificateChainError as exc:
                error = exc
                path.pop()
        raise error or CertificateChainError("no path to a trust anchor (unknown issuer)")


def verify_path(
    leaf_der: bytes,
    intermediates: Sequence[bytes],
    anchors: Sequence[TrustAnchor],
    crls: Sequence[CrlView],
    now: int,
) -> VerifiedPath:
    """Validate ``leaf_der`` up to one of ``anchors`` at Unix time ``now``.
    Raises CertificateChainError."""
    try:
        leaf = parse_certificate(leaf_der)
    except FormatError as exc:
        raise CertificateChainError(f"malformed certificate: {exc}") from exc
    search = _PathSearch(intermediates, anchors, crls, now)
    path = [leaf]
    try:
        anchor = search.build(path, 0)
    except _Fatal as exc:
        raise CertificateChainError(str(exc)) from None
    return VerifiedPath(tuple(path), anchor)
