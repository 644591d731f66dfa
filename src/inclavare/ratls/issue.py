"""Issue an RA-TLS certificate for a fresh key pair from the current TEE.

The key pair is generated here (inside the enclave container or TEE guest, where this runs),
its SubjectPublicKeyInfo hashed into the claims buffer, ``SHA-256(claims)`` handed to the
attester as report data, and the resulting evidence placed in the TCG DICE evidence extension
(2.23.133.5.4.9) of a self-signed certificate — the interoperable layout Gramine, the Intel SGX
SDK and rats-tls verify. Optionally the certificate also carries the collateral
(endorsements, 2.23.133.5.4.2) and a second quote in the legacy layout (1.2.840.113741.1337.6,
report data = ``SHA-256(SPKI)``) for verifiers that only know the old format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from inclavare.errors import ConfigError
from inclavare.ratls import cbor_subset
from inclavare.ratls.attester import Attester
from inclavare.ratls.cbor_subset import Tagged
from inclavare.ratls.certificate import (
    OID_LEGACY_ECDSA_QUOTE,
    OID_TCG_DICE_ENDORSEMENTS,
    OID_TCG_DICE_EVIDENCE,
    TAG_INTEL_TEE_QUOTE,
    certificate_der,
)
from inclavare.ratls.claims import build_claims
from inclavare.ratls.endorsements import build_endorsements

KEY_TYPES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.SHA256] | type[hashes.SHA384]]] = {
    "ec-p256": (ec.SECP256R1, hashes.SHA256), "ec-p384": (ec.SECP384R1, hashes.SHA384)}
DEFAULT_VALIDITY = dt.timedelta(days=1)
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RatlsCredentials:
    """A certificate (DER) and its private key: what a TLS endpoint presents."""

    certificate_der: bytes
    private_key: ec.EllipticCurvePrivateKey

    def certificate_pem(self) -> bytes:
        return x509.load_der_x509_certificate(self.certificate_der).public_bytes(Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    @classmethod
    def from_pem(cls, certificate: bytes, private_key: bytes) -> RatlsCredentials:
        """Credentials from PEM (or DER) bytes; ConfigError if the key is not the certificate's."""
        der = certificate_der(certificate)
        try:
            key = serialization.load_pem_private_key(private_key, None)
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"unreadable certificate or private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("RA-TLS private keys are EC keys (P-256 or P-384)")
        spki = PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(Encoding.DER, spki) != cert.public_key().public_bytes(
                Encoding.DER, spki):
            raise ConfigError("the private key does not belong to the certificate")
        return cls(der, key)

    @classmethod
    def load(cls, certificate_path: str, key_path: str) -> RatlsCredentials:
        try:
            with open(certificate_path, "rb") as cert_file, open(key_path, "rb") as key_file:
                return cls.from_pem(cert_file.read(), key_file.read())
        except OSError as exc:
            raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None


def issue_certificate(
    attester: Attester,
    *,
    key_type: str = "ec-p256",
    hash_algorithm: str = "sha256",
    nonce: bytes | None = None,
    custom_claims: Mapping[str, bytes] | None = None,
    endorsements: bool = False,
    legacy_extension: bool = False,
    common_name: str = "Inclavare RA-TLS",
    validity: dt.timedelta = DEFAULT_VALIDITY,
    now: dt.datetime | None = None,
) -> RatlsCredentials:
    """A fresh key pair and its RA-TLS certificate with evidence from ``attester``."""
    if key_type not in KEY_TYPES:
        raise ConfigError(f"unknown key type {key_type!r} (supported: {', '.join(KEY_TYPES)})")
    if validity <= dt.timedelta(0):
        raise ConfigError("certificate validity must be positive")
    curve, digest = KEY_TYPES[key_type]
    key = ec.generate_private_key(curve())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    claims = build_claims(spki, hash_algorithm=hash_algorithm, nonce=nonce, custom=custom_claims)
    evidence = attester.evidence(hashlib.sha256(claims.raw).digest())
    wrapped = cbor_subset.dumps(Tagged(evidence.tag, [evidence.data, claims.raw]))
    start = (now or dt.datetime.now(dt.timezone.utc)) - CLOCK_SKEW
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Inclavare"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(start).not_valid_after(start + CLOCK_SKEW + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_TCG_DICE_EVIDENCE),
                                                  wrapped), critical=False)
    )
    if endorsements and evidence.tag == TAG_INTEL_TEE_QUOTE:
        collateral = attester.endorsements()
        if collateral is None:
            raise ConfigError(f"the {attester.name} attester provides no collateral to embed")
        builder = builder.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier(OID_TCG_DICE_ENDORSEMENTS), build_endorsements(collateral)),
            critical=False)
    if legacy_extension:
        if evidence.tag != TAG_INTEL_TEE_QUOTE:
            raise ConfigError("the legacy extension carries Intel quotes only")
        legacy = attester.evidence(hashlib.sha256(spki).digest())
        builder = builder.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier(OID_LEGACY_ECDSA_QUOTE), legacy.data), critical=False)
    certificate = builder.sign(key, digest())
    return RatlsCredentials(certificate.public_bytes(Encoding.DER), key)
