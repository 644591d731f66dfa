"""Real RA-TLS certificates from Gramine and the Intel SGX SDK, and a rats-tls-shaped one.

The shared certificates were produced on SGX hardware; no collateral for their platforms is
available here, so full verification must stop at collateral — but their structure, their
claims and the binding of their key are checked exactly, and any tampering is refused.
"""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from inclavare.errors import CollateralError, FormatError, VerificationError
from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.certificate import (
    OID_GRAMINE_LEGACY_QUOTE,
    OID_INTEL_SGX_SDK_QUOTE,
    OID_TCG_DICE_EVIDENCE,
    SOURCE_DICE,
    SOURCE_GRAMINE,
    RatlsCertificateError,
    parse_ratls_certificate,
)
from inclavare.ratls.claims import PublicKeyNotBound
from inclavare.ratls.inspection import describe_certificate
from inclavare.ratls.policy import RatlsPolicy
from inclavare.ratls.verifier import RatlsVerifier
from tests.ratls.conftest import (
    MR_A,
    VerifierFactory,
    build_certificate,
    shared_certificate,
)

SHARED = ("gramine-cert.pem", "intel-sgxsdk-cert.pem")


@pytest.mark.parametrize("name", SHARED)
def test_shared_certificate_binds_its_key(name: str) -> None:
    cert = parse_ratls_certificate(shared_certificate(name))
    dice = cert.primary
    assert dice.source == SOURCE_DICE and dice.tag == 60000 and dice.evidence_type == "sgx_ecdsa"
    assert dice.claims is not None and dice.claims.hash_algorithm == "sha256"
    # computed here independently: pubkey-hash = SHA-256(SPKI DER), report data = SHA-256(claims)
    assert dice.claims.pubkey_hash == hashlib.sha256(cert.spki_der).digest()
    assert dice.data[368:432] == hashlib.sha256(dice.claims.raw).digest() + bytes(32)
    description = describe_certificate(shared_certificate(name))
    assert description["pubkey_bound"] is True
    assert description["evidence_type"] == "sgx_ecdsa"
    assert description["claims"]["pubkey-hash"]["hash"] == hashlib.sha256(cert.spki_der).hexdigest()


def test_gramine_legacy_extension_is_read_under_its_misencoded_oid() -> None:
    cert = parse_ratls_certificate(shared_certificate("gramine-cert.pem"))
    legacy = [e for e in cert.evidence if e.source == SOURCE_GRAMINE]
    assert [e.oid for e in legacy] == [OID_GRAMINE_LEGACY_QUOTE]
    assert legacy[0].data[368:400] == hashlib.sha256(cert.spki_der).digest()
    assert describe_certificate(shared_certificate("gramine-cert.pem"))["evidence"][1]["pubkey_bound"]


def test_sgx_sdk_quote_copy_is_bound_through_the_dice_claims() -> None:
    cert = parse_ratls_certificate(shared_certificate("intel-sgxsdk-cert.pem"))
    assert [e.oid for e in cert.evidence] == [OID_TCG_DICE_EVIDENCE, OID_INTEL_SGX_SDK_QUOTE]
    assert all(e["pubkey_bound"] for e in describe_certificate(cert.der)["evidence"])


@pytest.mark.parametrize("name", SHARED)
def test_shared_certificate_without_collateral_is_refused(name: str) -> None:
    verifier = RatlsVerifier(RatlsPolicy(insecure_any_enclave=True))  # Intel root, no collateral
    with pytest.raises(CollateralError):
        verifier.verify(shared_certificate(name))


@pytest.mark.parametrize("name", SHARED)
def test_shared_evidence_on_another_key_is_refused(name: str) -> None:
    original = parse_ratls_certificate(shared_certificate(name))
    moved = [(e.oid, e.data) if e.source != SOURCE_DICE else (e.oid, _dice_value(original.der))
             for e in original.evidence]
    der, _ = build_certificate(moved, key=ec.generate_private_key(ec.SECP384R1()))
    description = describe_certificate(der)
    assert description["pubkey_bound"] is False
    assert not any(e["pubkey_bound"] for e in description["evidence"])
    with pytest.raises(PublicKeyNotBound):
        RatlsVerifier(RatlsPolicy(insecure_any_enclave=True)).verify(der)


def _dice_value(der: bytes) -> bytes:
    from tests.ratls.conftest import extensions_of

    return dict(extensions_of(der))[OID_TCG_DICE_EVIDENCE]


@pytest.mark.parametrize("name", SHARED)
def test_tampered_shared_certificate_is_refused(name: str) -> None:
    der = parse_ratls_certificate(shared_certificate(name)).der
    # flip one byte in the public key, in the quote, in the claims
    spki = parse_ratls_certificate(der).spki_der
    for offset in (der.index(spki) + len(spki) - 3, der.index(_dice_value(der)) + 500,
                   der.index(b"pubkey-hash") + 20):
        tampered = bytearray(der)
        tampered[offset] ^= 0x01
        with pytest.raises(RatlsCertificateError):  # the self-signature no longer verifies
            parse_ratls_certificate(bytes(tampered))


def _rats_tls_shaped(attester: SimAuthorityAttester) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A certificate laid out as rats-tls (src/core/dice.c) lays it out, encoded with cbor2 (an
    independent CBOR implementation): P-256 key, claims {pubkey-hash, key_0, key_1} with the
    C strings' NUL terminators, SHA-256 of the claims as report data, tag 60000."""
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, hashlib.sha256(spki).digest()]),
                          "key_0": b"value_0\0", "key_1": b"value_1\0"})
    quote = attester.evidence(hashlib.sha256(claims).digest()).data
    evidence = cbor2.dumps(cbor2.CBORTag(60000, [quote, claims]))
    return build_certificate([(OID_TCG_DICE_EVIDENCE, evidence)], key=key)


def test_rats_tls_shaped_certificate_verifies(attester_a: SimAuthorityAttester,
                                              make_verifier: VerifierFactory) -> None:
    der, _ = _rats_tls_shaped(attester_a)
    verdict = make_verifier().verify(der)
    assert verdict.evidence_type == "sgx_ecdsa" and verdict.source == SOURCE_DICE
    assert verdict.claims["mr_enclave"] == MR_A.hex()
    assert verdict.custom_claims == {"key_0": b"value_0\0", "key_1": b"value_1\0"}
    assert describe_certificate(der)["claims"]["key_1"] == b"value_1\0".hex()


def test_rats_tls_shaped_certificate_with_another_measurement_is_refused(
        attester_b: SimAuthorityAttester, make_verifier: VerifierFactory) -> None:
    der, _ = _rats_tls_shaped(attester_b)
    with pytest.raises(VerificationError, match="mr_enclave"):
        make_verifier().verify(der)


def test_malformed_pem_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        parse_ratls_certificate(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
