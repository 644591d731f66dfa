"""SEV-SNP evidence in an RA-TLS certificate (tag 0x1A7504) goes through the real SNP verifier.

No SNP report binding a key of ours exists (that needs AMD hardware), so the real go-sev-guest
report is used: its signature verifies under the Milan ARK/ASK and its VCEK, and the binding
check then refuses it, because its report data (01 02 03 04 05 …) is not the claims' hash.
"""

from __future__ import annotations

import warnings

import pytest
from cryptography import x509

from inclavare.errors import ReportDataMismatch, SignatureError
from inclavare.ratls import cbor_subset
from inclavare.ratls.certificate import OID_TCG_DICE_EVIDENCE, TAG_SEV_SNP
from inclavare.ratls.claims import build_claims
from inclavare.ratls.inspection import describe_certificate
from inclavare.ratls.policy import RatlsPolicy
from inclavare.ratls.verifier import RatlsVerifier, UnsupportedEvidence
from inclavare.verify.evidence import TrustConfig, UnsupportedTee
from tests.ratls.conftest import build_certificate
from tests.testdata_paths import TESTDATA as SHARED_TESTDATA

SNP = SHARED_TESTDATA / "snp"


@pytest.fixture(scope="module")
def snp_trust() -> tuple[bytes, TrustConfig]:
    if not (SNP / "attestation.bin").is_file():
        pytest.skip(f"shared test data {SNP} is absent")
    chain = tuple(x509.load_pem_x509_certificates((SNP / "ask_ark_milan.pem").read_bytes()))
    with warnings.catch_warnings():  # the test VCEK has a non-positive serial (go-sev-guest's)
        warnings.simplefilter("ignore")
        vcek = x509.load_der_x509_certificate((SNP / "vcek.testcer").read_bytes())
    return (SNP / "attestation.bin").read_bytes(), TrustConfig(amd_chains=(chain,), vceks=(vcek,))


def _snp_certificate(report: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP384R1())
    claims = build_claims(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    value = cbor_subset.dumps(cbor_subset.Tagged(TAG_SEV_SNP, [report, claims.raw]))
    return build_certificate([(OID_TCG_DICE_EVIDENCE, value)], key=key)[0]


def test_snp_report_is_verified_then_refused_for_its_binding(snp_trust: tuple[bytes, TrustConfig]) -> None:
    report, trust = snp_trust
    der = _snp_certificate(report)
    description = describe_certificate(der)
    assert description["evidence_type"] == "sev_snp" and description["pubkey_bound"] is False
    verifier = RatlsVerifier(RatlsPolicy(insecure_any_enclave=True), trust)
    with pytest.raises(ReportDataMismatch):  # the signature verified; the binding did not
        verifier.verify(der)
    tampered = bytearray(report)
    tampered[0x90] ^= 1  # one bit of the measurement
    with pytest.raises(SignatureError):
        verifier.verify(_snp_certificate(bytes(tampered)))


def test_snp_without_amd_chains_is_refused(snp_trust: tuple[bytes, TrustConfig]) -> None:
    report, _ = snp_trust
    with pytest.raises(UnsupportedTee):
        RatlsVerifier(RatlsPolicy(insecure_any_enclave=True)).verify(_snp_certificate(report))
    assert issubclass(UnsupportedEvidence, UnsupportedTee)
