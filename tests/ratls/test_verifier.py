"""RA-TLS verification with the simulated TEE: what passes, what is refused, and why."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.errors import (
    CertificateChainError,
    CollateralError,
    ConfigError,
    FormatError,
    SignatureError,
    VerificationError,
)
from inclavare.formats.collateral import Collateral
from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.certificate import (
    OID_LEGACY_ECDSA_QUOTE,
    OID_TCG_DICE_ENDORSEMENTS,
    OID_TCG_DICE_EVIDENCE,
    SOURCE_LEGACY,
    NotAnRatlsCertificate,
    RatlsCertificateError,
)
from inclavare.ratls.claims import PublicKeyNotBound
from inclavare.ratls.issue import issue_certificate
from inclavare.ratls.policy import PolicyMismatch, RatlsPolicy
from inclavare.ratls.verifier import CertificateNotValidNow, RatlsVerifier
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.evidence import TrustConfig
from tests.ratls.conftest import (
    MR_A,
    MR_B,
    VerifierFactory,
    build_certificate,
    extensions_of,
)


@pytest.fixture(scope="module")
def cert_a(attester_a: SimAuthorityAttester) -> bytes:
    return issue_certificate(attester_a, nonce=b"n0nce", custom_claims={"app": b"x"}).certificate_der


def test_issued_certificate_verifies_with_claims(cert_a: bytes, make_verifier: VerifierFactory,
                                                 authority: SimAuthority) -> None:
    verdict = make_verifier().verify(cert_a)
    assert verdict.evidence_type == "sgx_ecdsa" and verdict.status == "UpToDate"
    assert verdict.claims["mr_enclave"] == MR_A.hex() and verdict.claims["debug"] is False
    assert verdict.nonce == b"n0nce" and verdict.custom_claims == {"app": b"x"}
    assert verdict.claims["collateral_from"] == "configuration"
    assert verdict.certificate_sha256 == hashlib.sha256(cert_a).digest()
    expires = int(dt.datetime.fromisoformat(
        __import__("json").loads(authority.collateral().tcb_info)["nextUpdate"].replace("Z", "+00:00"))
        .timestamp())
    assert verdict.valid_until <= expires


@pytest.mark.parametrize("policy, reason", [
    ({"mr_enclave": (MR_B,)}, "mr_enclave"),
    ({"mr_signer": (bytes(32),)}, "mr_signer"),
    ({"mr_enclave": (MR_A,), "isv_prod_id": 7}, "isv_prod_id"),
    ({"mr_enclave": (MR_A,), "min_isv_svn": 1}, "isv_svn"),
    ({"mr_enclave": (MR_A,), "allowed_tcb_statuses": ("OutOfDate",)}, "TCB status"),
    ({"mr_enclave": (MR_A,), "nonce": b"other"}, "nonce"),
    ({"mr_td": (bytes(48),)}, "mr_td"),
])
def test_policy_refusals(cert_a: bytes, make_verifier: VerifierFactory, policy: dict[str, object],
                         reason: str) -> None:
    with pytest.raises(PolicyMismatch, match=reason):
        make_verifier(**policy).verify(cert_a)


def test_policy_accepts_any_listed_measurement_and_signer(cert_a: bytes, make_verifier: VerifierFactory,
                                                          attester_a: SimAuthorityAttester) -> None:
    from inclavare.tee.sim_authority import DEFAULT_ENCLAVE_SIGNER

    make_verifier(mr_enclave=(MR_B, MR_A)).verify(cert_a)
    make_verifier(mr_signer=(DEFAULT_ENCLAVE_SIGNER.hex(),), isv_prod_id=0, min_isv_svn=0).verify(cert_a)


def test_policy_must_pin_an_identity() -> None:
    with pytest.raises(ConfigError, match="pins no identity"):
        RatlsPolicy()
    with pytest.raises(ConfigError):
        RatlsPolicy.from_mapping({"mr_enclave": "zz"})
    with pytest.raises(ConfigError, match="unknown policy key"):
        RatlsPolicy.from_mapping({"mr_enclave": MR_A.hex(), "mrenclave": "x"})
    with pytest.raises(ConfigError, match="unknown TCB status"):
        RatlsPolicy(mr_enclave=(MR_A,), allowed_tcb_statuses=("Fine",))


def test_plain_certificate_is_refused(make_verifier: VerifierFactory) -> None:
    der, _ = build_certificate([])
    with pytest.raises(NotAnRatlsCertificate):
        make_verifier().verify(der)


def test_evidence_replayed_with_another_key_is_refused(cert_a: bytes, make_verifier: VerifierFactory) -> None:
    der, _ = build_certificate(extensions_of(cert_a))  # same extensions, fresh key
    with pytest.raises(PublicKeyNotBound):
        make_verifier().verify(der)


def test_claims_rewritten_for_another_key_break_the_report_data(
        cert_a: bytes, make_verifier: VerifierFactory, attester_a: SimAuthorityAttester) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from inclavare.ratls import cbor_subset
    from inclavare.ratls.claims import build_claims

    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    tagged = cbor_subset.loads(dict(extensions_of(cert_a))[OID_TCG_DICE_EVIDENCE])
    assert isinstance(tagged, cbor_subset.Tagged) and isinstance(tagged.value, list)
    forged = cbor_subset.dumps(cbor_subset.Tagged(60000, [tagged.value[0], build_claims(spki).raw]))
    der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, forged)], key=key)
    with pytest.raises(PublicKeyNotBound, match="report data"):
        make_verifier().verify(der)


def test_untrusted_root_is_refused(cert_a: bytes, authority: SimAuthority) -> None:
    intel_only = TrustConfig(collateral=(authority.collateral(),))  # Intel's root (the default)
    with pytest.raises(CertificateChainError):
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), intel_only).verify(cert_a)


def test_expired_collateral_is_refused_even_after_a_cached_success(
        cert_a: bytes, make_verifier: VerifierFactory) -> None:
    verifier = make_verifier()
    now = dt.datetime.now(dt.timezone.utc)
    first = verifier.verify(cert_a, now=now)
    assert verifier.verify(cert_a, now=now + dt.timedelta(minutes=1)) is first  # cache hit
    with pytest.raises(VerificationError):  # collateral (30 days) and certificate (1 day) expired
        verifier.verify(cert_a, now=now + dt.timedelta(days=40))
    with pytest.raises(VerificationError):  # before the certificate existed
        verifier.verify(cert_a, now=now - dt.timedelta(days=2))


def test_expired_collateral_refused_while_certificate_still_valid(
        attester_a: SimAuthorityAttester, make_verifier: VerifierFactory) -> None:
    long_lived = issue_certificate(attester_a, validity=dt.timedelta(days=365)).certificate_der
    verifier = make_verifier()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=40)
    verifier.verify(long_lived)
    with pytest.raises(CollateralError):
        verifier.verify(long_lived, now=later)


def test_expired_certificate_is_refused(attester_a: SimAuthorityAttester, make_verifier: VerifierFactory) -> None:
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    der = issue_certificate(attester_a, now=old).certificate_der
    with pytest.raises(CertificateNotValidNow):
        make_verifier().verify(der)


def test_invalid_collateral_is_refused(cert_a: bytes, authority: SimAuthority) -> None:
    good = authority.collateral()
    bad_sig = bytearray(good.tcb_info_signature)
    bad_sig[5] ^= 1
    for broken in (dataclasses.replace(good, tcb_info_signature=bytes(bad_sig)),
                   dataclasses.replace(good, tcb_info=good.tcb_info.replace('"UpToDate"', '"Revoked"', 1))):
        trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(broken,))
        with pytest.raises(SignatureError):
            RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), trust).verify(cert_a)


def test_collateral_from_the_endorsements_extension(attester_a: SimAuthorityAttester,
                                                    authority: SimAuthority) -> None:
    der = issue_certificate(attester_a, endorsements=True).certificate_der
    roots_only = TrustConfig(sgx_root_cas=(authority.root_ca,))
    verdict = RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), roots_only).verify(der)
    assert verdict.claims["collateral_from"] == "certificate"
    with pytest.raises(CollateralError):
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), roots_only, use_endorsements=False).verify(der)
    with pytest.raises(CertificateChainError):  # embedded collateral does not make a root trusted
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,))).verify(der)


def test_tampered_endorsements_are_refused(attester_a: SimAuthorityAttester, authority: SimAuthority) -> None:
    from inclavare.ratls.endorsements import build_endorsements

    good = authority.collateral()
    forged = dataclasses.replace(good, qe_identity=good.qe_identity.replace('"isvprodid":1', '"isvprodid":2'))
    assert forged != good
    der = issue_certificate(attester_a).certificate_der
    exts = extensions_of(der) + [(OID_TCG_DICE_ENDORSEMENTS, build_endorsements(forged))]
    rebuilt, _ = build_certificate(exts)  # a fresh key: the replayed claims fail first ...
    roots_only = TrustConfig(sgx_root_cas=(authority.root_ca,))
    with pytest.raises(PublicKeyNotBound):
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), roots_only).verify(rebuilt)
    key = ec.generate_private_key(ec.SECP256R1())  # ... so issue properly for a known key
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from inclavare.ratls import cbor_subset
    from inclavare.ratls.claims import build_claims

    claims = build_claims(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    quote = attester_a.evidence(hashlib.sha256(claims.raw).digest()).data
    evidence = cbor_subset.dumps(cbor_subset.Tagged(60000, [quote, claims.raw]))
    rebuilt, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, evidence),
                                    (OID_TCG_DICE_ENDORSEMENTS, build_endorsements(forged))], key=key)
    with pytest.raises(SignatureError):
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), roots_only).verify(rebuilt)


def test_legacy_only_certificate_verifies(attester_a: SimAuthorityAttester, make_verifier: VerifierFactory) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP384R1())
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    quote = attester_a.evidence(hashlib.sha256(spki).digest()).data
    der, _ = build_certificate([(OID_LEGACY_ECDSA_QUOTE, quote)], key=key)
    verdict = make_verifier().verify(der)
    assert verdict.source == SOURCE_LEGACY and verdict.nonce is None
    other, _ = build_certificate([(OID_LEGACY_ECDSA_QUOTE, quote)])
    with pytest.raises(PublicKeyNotBound):
        make_verifier().verify(other)


def test_issued_certificate_carries_both_layouts_on_request(attester_a: SimAuthorityAttester,
                                                            make_verifier: VerifierFactory) -> None:
    from inclavare.ratls.inspection import describe_certificate

    der = issue_certificate(attester_a, legacy_extension=True, key_type="ec-p384",
                            hash_algorithm="sha384").certificate_der
    description = describe_certificate(der)
    assert [e["format"] for e in description["evidence"]] == ["tcg-dice", "legacy-intel"]
    assert all(e["pubkey_bound"] for e in description["evidence"])
    assert description["claims"]["pubkey-hash"]["alg"] == "sha384"
    make_verifier().verify(der)


def test_critical_evidence_extension_is_refused(cert_a: bytes, make_verifier: VerifierFactory) -> None:
    der, _ = build_certificate(extensions_of(cert_a), critical=True)
    with pytest.raises(RatlsCertificateError):
        make_verifier().verify(der)


def test_ca_signed_ratls_certificate_needs_its_issuer_configured(
        attester_a: SimAuthorityAttester, make_verifier: VerifierFactory) -> None:
    """Evidence bound to the key is not enough: the certificate's other fields are bound by its
    signature, so an endorsed one needs its CA configured (tests/adversarial covers that)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from inclavare.ratls import cbor_subset
    from inclavare.ratls.claims import build_claims

    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    quote = attester_a.evidence(hashlib.sha256(claims.raw).digest()).data
    value = cbor_subset.dumps(cbor_subset.Tagged(60000, [quote, claims.raw]))
    der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, value)], key=key,
                               issuer_key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(RatlsCertificateError, match="no issuer CA is configured"):
        make_verifier().verify(der)


def test_collateral_for_another_platform_is_not_used(cert_a: bytes, authority: SimAuthority) -> None:
    from tests.testdata_paths import TESTDATA as SHARED_TESTDATA

    path = SHARED_TESTDATA / "dcap" / "sgx_quote_collateral.json"
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    intel = Collateral.from_json(path.read_bytes())
    trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(intel,))
    with pytest.raises(CollateralError, match="no collateral"):
        RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), trust).verify(cert_a)


def test_verifying_garbage_is_a_format_error(make_verifier: VerifierFactory) -> None:
    for junk in (b"", b"\x30\x00", b"not a certificate", bytes(100)):
        with pytest.raises(FormatError):
            make_verifier().verify(junk)
