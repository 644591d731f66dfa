"""Certificates and CRLs of the simulated SGX provisioning authority.

Shaped like Intel's: a self-signed root, a PCK Platform CA, PCK leaf certificates carrying the SGX
extension (PPID, TCB component SVNs + PCESVN + CPUSVN, PCE-ID, FMSPC, SGX type, platform instance
id, configuration), a TCB signing certificate, and v2 CRLs with CRL numbers. Every subject says
SIMULATED so nobody can mistake it for Intel's PKI.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from inclavare.formats.der import (
    encode_boolean,
    encode_enumerated,
    encode_integer,
    encode_object_identifier,
    encode_octets,
    encode_sequence,
)
from inclavare.formats.sgx_pck_extension import SGX_EXTENSION_OID

ORGANIZATION = "Inclavare (SIMULATED TEE - no hardware protection)"
ROOT_CN = "Inclavare SIMULATED SGX Root CA - not a TEE"
PCK_CA_CN = "Inclavare SIMULATED SGX PCK Platform CA"
PCK_CN = "Inclavare SIMULATED SGX PCK Certificate"
TCB_SIGNING_CN = "Inclavare SIMULATED SGX TCB Signing"


def is_simulated(certificate: x509.Certificate) -> bool:
    """Whether a certificate belongs to a simulated authority (every one of its names says so)."""
    return any(a.value == ORGANIZATION for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


def quote_is_simulated(pck_chain_pem: bytes) -> bool:
    """Whether a quote's PCK chain was issued by a simulated authority (no trust decision)."""
    try:
        return any(is_simulated(c) for c in x509.load_pem_x509_certificates(pck_chain_pem))
    except ValueError:
        return False


def name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ"),
    ])


@dataclass(frozen=True, slots=True)
class PlatformFacts:
    """What a PCK certificate certifies about the (simulated) platform."""

    ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes
    fmspc: bytes
    platform_instance_id: bytes
    sgx_type: int = 1


def sgx_extension_value(facts: PlatformFacts) -> bytes:
    """DER of the SGX extension (1.2.840.113741.1.13.1) in Intel's layout."""
    base = SGX_EXTENSION_OID

    def entry(suffix: str, value: bytes) -> bytes:
        return encode_sequence(encode_object_identifier(f"{base}.{suffix}"), value)

    tcb = [entry(f"2.{i + 1}", encode_integer(svn)) for i, svn in enumerate(facts.cpu_svn)]
    tcb.append(entry("2.17", encode_integer(facts.pce_svn)))
    tcb.append(entry("2.18", encode_octets(facts.cpu_svn)))
    configuration = encode_sequence(
        entry("7.1", encode_boolean(False)),
        entry("7.2", encode_boolean(False)),
        entry("7.3", encode_boolean(False)),
    )
    return encode_sequence(
        entry("1", encode_octets(facts.ppid)),
        entry("2", encode_sequence(*tcb)),
        entry("3", encode_octets(facts.pce_id)),
        entry("4", encode_octets(facts.fmspc)),
        entry("5", encode_enumerated(facts.sgx_type)),
        entry("6", encode_octets(facts.platform_instance_id)),
        entry("7", configuration),
    )


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             issuer_key: ec.EllipticCurvePublicKey, not_before: dt.datetime,
             not_after: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))


_CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False)
_SIGNER_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False)


def issue_root(key: ec.EllipticCurvePrivateKey, not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    return (_builder(ROOT_CN, name(ROOT_CN), key.public_key(), key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(key, hashes.SHA256()))


def issue_ca(key: ec.EllipticCurvePublicKey, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
             not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    return (_builder(PCK_CA_CN, root.subject, key, root_key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(root_key, hashes.SHA256()))


def issue_pck(key: ec.EllipticCurvePublicKey, facts: PlatformFacts, ca: x509.Certificate,
              ca_key: ec.EllipticCurvePrivateKey, not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    return (_builder(PCK_CN, ca.subject, key, ca_key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_SIGNER_USAGE, critical=True)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID),
                                                      sgx_extension_value(facts)), critical=False)
            .sign(ca_key, hashes.SHA256()))


def issue_tcb_signing(key: ec.EllipticCurvePublicKey, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                      not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    return (_builder(TCB_SIGNING_CN, root.subject, key, root_key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_SIGNER_USAGE, critical=True)
            .sign(root_key, hashes.SHA256()))


def issue_crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, number: int,
              this_update: dt.datetime, next_update: dt.datetime,
              revoked_serials: tuple[int, ...] = ()) -> bytes:
    """A v2 CRL (DER) with a CRL number and authority key identifier, as Intel issues them."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(this_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                              critical=False))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build())
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)
