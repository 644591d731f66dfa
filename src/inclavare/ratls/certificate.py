"""Reading RA-TLS certificates: where the evidence is, what it claims, which key it binds.

A certificate is accepted only when both the project's strict DER reader
(:class:`~inclavare.formats.x509_view.CertificateView`) and ``cryptography`` parse it, and its
signature verifies with its own key — or, for an endorsed certificate, with the key of a
configured issuer CA that it names (:mod:`.issuers`).

Accepted layouts (self-signed X.509 v3; the evidence extension is non-critical, as OpenSSL and
mbedTLS refuse unknown critical extensions):

* **Interoperable RA-TLS / TCG DICE** (Gramine ≥ 1.8, Intel SGX SDK, rats-tls): extension
  2.23.133.5.4.9 holding ``tag([quote-or-report, claims-buffer])``; report data =
  ``SHA-256(claims-buffer) ‖ 0³²`` and the claims' ``pubkey-hash`` is the hash of the
  certificate's SubjectPublicKeyInfo. Optional endorsements in 2.23.133.5.4.2.
* **Legacy Intel/rats-tls**: extension 1.2.840.113741.1337.6 holding the raw ECDSA quote;
  report data = ``SHA-256(SubjectPublicKeyInfo DER) ‖ 0³²``.
* **Gramine's legacy extension**, whose OID bytes include the TLV header by mistake and so read
  as 0.6.9.42.840.113741.1337.6; same binding as the legacy layout.

The Intel SGX SDK also copies its quote into 1.2.840.113741.1.13.1; that copy is listed but
the DICE extension next to it is what binds the key. When a certificate carries several,
the DICE extension is preferred, then the legacy ones in the order above.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from inclavare.crypto.signatures import verify_signed_data
from inclavare.errors import FormatError, SignatureError, VerificationError
from inclavare.formats.der import BIT_STRING, SEQUENCE, DerReader, encode_oid, encode_sequence, encode_tlv
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.x509_view import CertificateView, SignedData
from inclavare.ratls import cbor_subset
from inclavare.ratls.cbor_subset import CborError, Tagged
from inclavare.ratls.claims import Claims, parse_claims
from inclavare.ratls.issuers import IssuerCa

OID_TCG_DICE_EVIDENCE = "2.23.133.5.4.9"
OID_TCG_DICE_ENDORSEMENTS = "2.23.133.5.4.2"
OID_LEGACY_ECDSA_QUOTE = "1.2.840.113741.1337.6"
OID_GRAMINE_LEGACY_QUOTE = "0.6.9.42.840.113741.1337.6"
OID_INTEL_SGX_SDK_QUOTE = "1.2.840.113741.1.13.1"

TAG_INTEL_TEE_QUOTE = 60000
TAG_INTEL_TEE_REPORT = 60001
TAG_SGX_LEGACY_REPORT = 60002
TAG_SEV_SNP = 0x1A7504
TAG_SEV = 0x1A7505
TAG_CSV = 0x1A7506
_TAG_NAMES = {TAG_INTEL_TEE_REPORT: "intel_tee_report", TAG_SGX_LEGACY_REPORT: "sgx_report",
              TAG_SEV_SNP: "sev_snp", TAG_SEV: "sev", TAG_CSV: "csv"}

SOURCE_DICE = "tcg-dice"
SOURCE_LEGACY = "legacy-intel"
SOURCE_GRAMINE = "legacy-gramine"
SOURCE_SGX_SDK = "intel-sgx-sdk"

_OID_DICE = encode_oid(OID_TCG_DICE_EVIDENCE)
_OID_ENDORSEMENTS = encode_oid(OID_TCG_DICE_ENDORSEMENTS)
_OID_LEGACY = encode_oid(OID_LEGACY_ECDSA_QUOTE)
_OID_GRAMINE = encode_tlv(0x06, _OID_LEGACY)  # the mis-encoding: TLV inside the OID value
_OID_SGX_SDK = encode_oid(OID_INTEL_SGX_SDK_QUOTE)
_LEGACY_SOURCES = ((_OID_LEGACY, SOURCE_LEGACY, OID_LEGACY_ECDSA_QUOTE),
                   (_OID_GRAMINE, SOURCE_GRAMINE, OID_GRAMINE_LEGACY_QUOTE),
                   (_OID_SGX_SDK, SOURCE_SGX_SDK, OID_INTEL_SGX_SDK_QUOTE))
# mbedTLS (Gramine) writes ecdsa-with-SHA* with explicit NULL parameters; RFC 5758 says absent.
_ECDSA_WITH_NULL = {bytes.fromhex("06082a8648ce3d0403020500"): bytes.fromhex("06082a8648ce3d040302"),
                    bytes.fromhex("06082a8648ce3d0403030500"): bytes.fromhex("06082a8648ce3d040303")}
MAX_CERTIFICATE_SIZE = 0xFFFF


class RatlsCertificateError(VerificationError, FormatError):
    """The certificate is malformed or carries malformed RA-TLS evidence."""


class NotAnRatlsCertificate(RatlsCertificateError):
    """The certificate carries no RA-TLS evidence (a plain certificate)."""


class IssuerNotTrusted(RatlsCertificateError):
    """The signature verifies neither with the certificate's own key nor with a configured
    issuer CA."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One piece of evidence found in a certificate. ``data`` is the quote or report;
    ``claims`` is the claims buffer (DICE layout only); ``tag`` the CBOR tag (DICE only)."""

    source: str
    oid: str
    tag: int | None
    data: bytes
    claims: Claims | None

    @property
    def evidence_type(self) -> str:
        """rats-tls' name of the evidence format: ``sgx_ecdsa``, ``tdx_ecdsa``, ``sev_snp``…"""
        if self.tag not in (None, TAG_INTEL_TEE_QUOTE):
            return _TAG_NAMES.get(self.tag, f"tag_{self.tag}")  # type: ignore[arg-type]
        if len(self.data) >= 8 and self.data[4:8] == b"\x81\0\0\0":
            return "tdx_ecdsa"
        return "sgx_ecdsa"

    def expected_report_data(self, spki_der: bytes) -> bytes:
        """The 64 bytes of report data this evidence must carry to bind the certificate key."""
        subject = self.claims.raw if self.claims is not None else spki_der
        return hashlib.sha256(subject).digest() + bytes(32)


@dataclass(frozen=True, slots=True)
class RatlsCertificate:
    """A parsed RA-TLS certificate (see the module docstring)."""

    der: bytes
    view: CertificateView
    spki_der: bytes
    issuer_ca: IssuerCa | None  # None: signed by its own key
    evidence: tuple[Evidence, ...]
    endorsements: bytes | None

    @property
    def self_signed(self) -> bool:
        """Signed by its own key (whatever the issuer field says)."""
        return self.issuer_ca is None

    @property
    def primary(self) -> Evidence:
        """The evidence verification uses (DICE first, then the legacy layouts)."""
        return self.evidence[0]

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.der).digest()

    def claims_bind_key(self, evidence: Evidence) -> bool:
        """Whether the evidence's claims (if any) name this certificate's public key."""
        return evidence.claims is None or evidence.claims.binds(self.spki_der)


def _dice_evidence(value: bytes) -> Evidence:
    try:
        item = cbor_subset.loads(value)
    except CborError as exc:
        raise RatlsCertificateError(f"RA-TLS evidence extension: {exc}") from exc
    if not isinstance(item, Tagged):
        raise RatlsCertificateError("RA-TLS evidence extension must be a tagged CBOR item")
    content = item.value
    if not isinstance(content, list) or len(content) != 2 or not all(
            isinstance(part, bytes) for part in content):
        raise RatlsCertificateError("RA-TLS evidence must be a tagged array [bstr evidence, "
                                    "bstr claims]")
    data, raw_claims = content
    assert isinstance(data, bytes) and isinstance(raw_claims, bytes)
    if not data:
        raise RatlsCertificateError("RA-TLS evidence is empty")
    try:
        claims = parse_claims(raw_claims)
    except FormatError as exc:
        raise RatlsCertificateError(f"RA-TLS evidence: {exc}") from exc
    return Evidence(SOURCE_DICE, OID_TCG_DICE_EVIDENCE, item.tag, data, claims)


def _signature_error(spki: bytes, signed: SignedData) -> SignatureError | None:
    """Why the key in ``spki`` did not sign ``signed`` (None when it did)."""
    algorithm = _ECDSA_WITH_NULL.get(signed.algorithm, signed.algorithm)
    try:
        verify_signed_data(spki, algorithm, signed.data, signed.signature)
    except SignatureError as exc:
        return exc
    return None


def _check_signer(view: CertificateView, issuer_text: str,
                  issuers: tuple[IssuerCa, ...]) -> IssuerCa | None:
    """None when the certificate's own key signed it (whatever its issuer field says), else
    the configured CA, named by the issuer field, whose key did; IssuerNotTrusted otherwise."""
    own = _signature_error(view.spki, view.signed)
    if own is None:
        return None
    if view.issuer == view.subject:
        raise IssuerNotTrusted(f"the certificate's self-signature does not verify: {own}")
    named = [ca for ca in issuers if ca.view.subject == view.issuer]
    for ca in named:
        if _signature_error(ca.view.spki, view.signed) is None:
            return ca
    if named:
        raise IssuerNotTrusted(f"the certificate's signature does not verify with the "
                               f"configured issuer CA {named[0].name!r}")
    state = "no issuer CA is configured" if not issuers else "it is not a configured issuer CA"
    raise IssuerNotTrusted(f"the certificate is not signed by its own key and names the issuer "
                           f"{issuer_text!r}, but {state}: to accept RA-TLS certificates endorsed "
                           f"by that CA, configure it (--issuer-ca PEM)")


def _as_cryptography_reads_it(view: CertificateView) -> bytes:
    """The certificate with mbedTLS's NULL-parameter ECDSA identifiers written as RFC 5758
    says (absent), the one deviation ``cryptography`` refuses that RA-TLS producers make; the
    same bytes otherwise."""
    plain = _ECDSA_WITH_NULL.get(view.signed.algorithm)
    if plain is None:
        return view.der
    tbs = view.signed.data
    fields = DerReader(tbs).nested(SEQUENCE, "TBS certificate")
    fields.read_tlv()  # version
    fields.read_tlv()  # serial number
    _, start, _, end = fields.read_tlv()  # signature algorithm (checked equal to the outer one)
    inner = DerReader(tbs).nested(SEQUENCE, "TBS certificate")
    content = tbs[inner.pos:start] + encode_tlv(SEQUENCE, plain) + tbs[end:]
    return encode_sequence(encode_tlv(SEQUENCE, content), encode_tlv(SEQUENCE, plain),
                           encode_tlv(BIT_STRING, b"\0" + view.signed.signature))


def _cryptography_parse(view: CertificateView) -> x509.Certificate:
    """The certificate as ``cryptography`` reads it, all fields decoded, or
    RatlsCertificateError: what a mainstream X.509 parser refuses is refused here too."""
    if view.serial[0] & 0x80 or not view.serial.strip(b"\0"):
        raise RatlsCertificateError("malformed certificate: the serial number is not positive "
                                    "(RFC 5280)")
    try:
        cert = x509.load_der_x509_certificate(_as_cryptography_reads_it(view))
        cert.issuer.rfc4514_string()
        cert.subject.rfc4514_string()
        cert.public_key()
        for _ in cert.extensions:
            pass
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType, FormatError) as exc:
        raise RatlsCertificateError(f"malformed certificate (refused by cryptography): "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                    ) from exc
    return cert


def certificate_der(data: bytes) -> bytes:
    """DER of a certificate given as DER or PEM (the first CERTIFICATE block)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RatlsCertificateError("a certificate is bytes (DER or PEM)")
    raw = bytes(data)
    if raw.lstrip()[:10] == b"-----BEGIN":
        try:
            blocks = [b for b in parse_pem_blocks(raw) if b.label == "CERTIFICATE"]
        except FormatError as exc:
            raise RatlsCertificateError(f"unreadable PEM: {exc}") from exc
        if not blocks:
            raise RatlsCertificateError("no CERTIFICATE block in the PEM data")
        raw = blocks[0].contents
    return raw


def parse_ratls_certificate(data: bytes, issuers: tuple[IssuerCa, ...] = ()) -> RatlsCertificate:
    """Parse a certificate and its RA-TLS evidence. RatlsCertificateError when malformed (for
    the strict DER reader or for ``cryptography``) or when its signature verifies neither with
    its own key nor with one of ``issuers`` that it names (IssuerNotTrusted);
    NotAnRatlsCertificate when it carries no evidence."""
    der = certificate_der(data)
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise RatlsCertificateError("certificate is larger than 64 KiB")
    try:
        view = CertificateView.parse(der)
    except FormatError as exc:
        raise RatlsCertificateError(f"malformed certificate: {exc}") from exc
    issuer_ca = _check_signer(view, _cryptography_parse(view).issuer.rfc4514_string(), issuers)
    found: list[Evidence] = []
    try:
        dice = view.extension(_OID_DICE)
        if dice is not None:
            found.append(_dice_evidence(dice.value))
        for oid, source, dotted in _LEGACY_SOURCES:
            ext = view.extension(oid)
            if ext is not None:
                if not ext.value:
                    raise RatlsCertificateError(f"empty {dotted} extension")
                # The SGX SDK's copy of the DICE quote is bound through the DICE claims.
                same = next((e.claims for e in found if e.source == SOURCE_DICE
                             and e.data == ext.value), None)
                found.append(Evidence(source, dotted, None, ext.value, same))
        endorsements = view.extension(_OID_ENDORSEMENTS)
    except RatlsCertificateError:
        raise
    except FormatError as exc:
        raise RatlsCertificateError(f"malformed certificate extensions: {exc}") from exc
    if not found:
        raise NotAnRatlsCertificate("the certificate carries no RA-TLS evidence (a plain "
                                    "certificate)")
    return RatlsCertificate(der, view, encode_tlv(SEQUENCE, view.spki), issuer_ca, tuple(found),
                            endorsements.value if endorsements is not None else None)


def report_data_matches(actual: bytes, expected: bytes) -> bool:
    return len(actual) == len(expected) and hmac.compare_digest(actual, expected)
