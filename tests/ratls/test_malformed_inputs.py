"""Every malformed certificate, extension, CBOR item, claims buffer or endorsement raises the
typed error — never IndexError, ValueError, UnicodeDecodeError or a half result."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.errors import FormatError, InclavareError, VerificationError
from inclavare.ratls import cbor_subset
from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.cbor_subset import CborError, Tagged
from inclavare.ratls.certificate import (
    OID_LEGACY_ECDSA_QUOTE,
    OID_TCG_DICE_ENDORSEMENTS,
    OID_TCG_DICE_EVIDENCE,
    RatlsCertificateError,
    parse_ratls_certificate,
)
from inclavare.ratls.claims import ClaimsError, build_claims, parse_claims
from inclavare.ratls.endorsements import (
    EndorsementsError,
    build_endorsements,
    parse_endorsements,
)
from inclavare.ratls.inspection import describe_certificate
from inclavare.ratls.issue import issue_certificate
from inclavare.ratls.verifier import RatlsVerifier
from tests.ratls.conftest import VerifierFactory, build_certificate

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_SPKI = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
GOOD_CLAIMS = build_claims(_SPKI, nonce=b"abc").raw


# -- CBOR subset ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"", "truncated"),
    (b"\x18", "truncated"),
    (b"\x18\x05", "non-minimal"),
    (b"\x19\x00\x10", "non-minimal"),
    (b"\x5f\x41a\xff", "indefinite"),
    (b"\xa2\x61a\x01\x61a\x02", "duplicate"),
    (b"\xa1\x01\x02", "text strings"),
    (b"\x20", "outside"),
    (b"\xf5", "outside"),
    (b"\xfb" + bytes(8), "outside"),
    (b"\x62\xff\xfe", "UTF-8"),
    (b"\x01\x02", "trailing"),
    (b"\x9b" + (1 << 62).to_bytes(8, "big"), "longer than the data"),
    (b"\x5b" + (1 << 62).to_bytes(8, "big"), "truncated"),
    (b"\x81" * 20 + b"\x01", "deep"),
    (b"\x1c", "reserved"),
])
def test_cbor_subset_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(CborError, match=reason):
        cbor_subset.loads(data)


_values = st.recursive(
    st.integers(0, 2 ** 64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    | st.builds(Tagged, st.integers(0, 2 ** 32), inner),
    max_leaves=12)


@given(_values)
@FAST
def test_cbor_round_trip_and_agreement_with_cbor2(value: cbor_subset.CborValue) -> None:
    encoded = cbor_subset.dumps(value)
    assert cbor_subset.loads(encoded) == value

    def to_cbor2(v: object) -> object:
        if isinstance(v, Tagged):
            return cbor2.CBORTag(v.tag, to_cbor2(v.value))
        if isinstance(v, list):
            return [to_cbor2(x) for x in v]
        if isinstance(v, dict):
            return {k: to_cbor2(x) for k, x in v.items()}
        return v

    assert cbor2.dumps(to_cbor2(value)) == encoded  # same canonical bytes as an independent encoder


@given(st.binary(max_size=200))
@FAST
def test_cbor_random_bytes_only_raise_cbor_error(data: bytes) -> None:
    try:
        cbor_subset.loads(data)
    except CborError:
        pass


# -- claims -------------------------------------------------------------------------------

@pytest.mark.parametrize("claims", [
    cbor2.dumps([1, 2]),
    cbor2.dumps({"nonce": b"x"}),
    cbor2.dumps({"pubkey-hash": "text"}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps([2, bytes(32)])}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(31)])}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps([7, bytes(32)])}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(32), 3])}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps({"a": 1})}),
    cbor2.dumps({"pubkey-hash": b"\xff"}),
    cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(32)]), "nonce": 5}),
])
def test_malformed_claims(claims: bytes) -> None:
    with pytest.raises(ClaimsError):
        parse_claims(claims)


@given(st.binary(max_size=120))
@FAST
def test_claims_random_bytes(data: bytes) -> None:
    try:
        parse_claims(data)
    except ClaimsError:
        pass


@given(st.integers(0, len(GOOD_CLAIMS) - 1), st.integers(1, 255))
@FAST
def test_claims_byte_flips_are_refused_or_rebind(position: int, flip: int) -> None:
    mutated = bytearray(GOOD_CLAIMS)
    mutated[position] ^= flip
    try:
        parsed = parse_claims(bytes(mutated))
    except ClaimsError:
        return
    # a flip that still parses changed what the claims say: never the same key and nonce
    assert (parsed.pubkey_hash, parsed.nonce, dict(parsed.custom)) != (
        hashlib.sha256(_SPKI).digest(), b"abc", {})


# -- certificates --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issued(attester_a: SimAuthorityAttester) -> bytes:
    return issue_certificate(attester_a, endorsements=True).certificate_der


@pytest.mark.parametrize("value", [
    b"",
    b"\x01",
    cbor2.dumps([b"q", b"c"]),                                   # untagged
    cbor2.dumps(cbor2.CBORTag(60000, [b"q"])),                    # one element
    cbor2.dumps(cbor2.CBORTag(60000, [b"", GOOD_CLAIMS])),        # empty evidence
    cbor2.dumps(cbor2.CBORTag(60000, ["q", GOOD_CLAIMS])),        # text evidence
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", b"\xa0"])),           # claims without pubkey-hash
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", GOOD_CLAIMS])) + b"\0",  # trailing byte
])
def test_malformed_evidence_extension(value: bytes) -> None:
    der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, value)])
    with pytest.raises(RatlsCertificateError):
        parse_ratls_certificate(der)


def test_malformed_quote_inside_a_well_formed_extension(make_verifier: VerifierFactory) -> None:
    value = cbor2.dumps(cbor2.CBORTag(60000, [b"\x03\x00\x02\x00" + bytes(60), GOOD_CLAIMS]))
    der, key = build_certificate([(OID_TCG_DICE_EVIDENCE, value)])
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    value = cbor2.dumps(cbor2.CBORTag(60000, [b"\x03\x00\x02\x00" + bytes(60), build_claims(spki).raw]))
    der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, value)], key=key)
    with pytest.raises(FormatError):
        make_verifier().verify(der)
    assert describe_certificate(der)["pubkey_bound"] is False
    for tag in (60001, 60002, 0x1A7505):
        value = cbor2.dumps(cbor2.CBORTag(tag, [b"report", build_claims(spki).raw]))
        der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, value)], key=key)
        with pytest.raises(VerificationError):
            make_verifier().verify(der)


def test_duplicate_or_empty_legacy_extensions(issued: bytes) -> None:
    for extensions in ([(OID_LEGACY_ECDSA_QUOTE, b"")],):
        der, _ = build_certificate(extensions)
        with pytest.raises(RatlsCertificateError):
            parse_ratls_certificate(der)


@pytest.mark.parametrize("value", [
    b"",
    cbor2.dumps(cbor2.CBORTag(60001, [3] + [b""] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b""] * 6)),
    cbor2.dumps(cbor2.CBORTag(60000, ["3"] + [b""] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b"{}"] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b'{"tcbInfo":{},"signature":"zz"}'] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b'{"tcbInfo":{}, "tcbInfo":{},"signature":"00"}'] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b'{"tcbInfo":{"a":' + b"[" * 5000] * 7)),
    cbor2.dumps(cbor2.CBORTag(60000, [3] + [b"\xff\xfe"] * 7)),
])
def test_malformed_endorsements(value: bytes) -> None:
    with pytest.raises(EndorsementsError):
        parse_endorsements(value)


def test_a_der_crl_ending_in_a_zero_byte_keeps_it() -> None:
    """DER may end in 0x00 (an ECDSA signature's last byte, 1 time in 256): only NUL padding
    after the encoded length goes (a regression: stripping all trailing NULs broke such CRLs)."""
    from inclavare.ratls.endorsements import _crl

    der = bytes([0x30, 0x03, 0x02, 0x01, 0x00])  # SEQUENCE { INTEGER 0 }
    assert _crl(der, "crl") == der
    assert _crl(der + b"\0\0", "crl") == der
    with pytest.raises(EndorsementsError):
        _crl(der + b"junk", "crl")
    with pytest.raises(EndorsementsError):
        _crl(der[:-1], "crl")


def test_endorsements_round_trip_and_encodings(authority) -> None:  # type: ignore[no-untyped-def]
    collateral = authority.collateral()
    assert parse_endorsements(build_endorsements(collateral)) == collateral
    # the same collateral with hex CRLs, NUL-terminated strings and a PEM root CRL, as DCAP's
    # older collateral versions carry it
    import base64

    decoded = cbor_subset.loads(build_endorsements(collateral))
    assert isinstance(decoded, Tagged) and isinstance(decoded.value, list)
    fields = decoded.value
    pem_crl = (b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(collateral.root_ca_crl)
               + b"-----END X509 CRL-----\n")
    variant = [3] + [v + b"\0" for v in fields[1:3]] + [collateral.pck_crl.hex().encode(), pem_crl] \
        + [v + b"\0" for v in fields[5:8]] + [b"2026-01-01T00:00:00Z"]
    assert parse_endorsements(cbor_subset.dumps(Tagged(60000, variant))) == collateral


@given(st.data())
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_mutated_certificates_only_raise_typed_errors(issued: bytes, make_verifier: VerifierFactory,
                                                      data: st.DataObject) -> None:
    """Flip, truncate or extend an issued certificate anywhere: parsing, inspection and
    verification raise InclavareError subclasses, and a mutated certificate never verifies."""
    mutated = bytearray(issued)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    position = data.draw(st.integers(0, len(mutated) - 1))
    if kind == "flip":
        mutated[position] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del mutated[position:]
    else:
        mutated[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    verifier = make_verifier()
    for action in (parse_ratls_certificate, describe_certificate, verifier.verify):
        try:
            action(bytes(mutated))
        except InclavareError:
            continue
        else:
            assert action is not verifier.verify, "a mutated certificate verified"


@given(st.binary(max_size=300))
@FAST
def test_random_bytes_as_certificate(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_ratls_certificate(data)


def test_non_bytes_input_is_typed(make_verifier: VerifierFactory) -> None:
    with pytest.raises(FormatError):
        parse_ratls_certificate("text")  # type: ignore[arg-type]
    with pytest.raises(CborError):
        cbor_subset.loads(None)  # type: ignore[arg-type]
    assert isinstance(make_verifier(), RatlsVerifier)


def test_endorsements_extension_that_is_garbage_fails_verification(attester_a: SimAuthorityAttester,
                                                                   authority) -> None:  # type: ignore[no-untyped-def]
    from inclavare.ratls.policy import RatlsPolicy
    from inclavare.verify.evidence import TrustConfig
    from tests.ratls.conftest import MR_A

    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    quote = attester_a.evidence(hashlib.sha256(claims.raw).digest()).data
    der, _ = build_certificate([(OID_TCG_DICE_EVIDENCE, cbor_subset.dumps(Tagged(60000, [quote, claims.raw]))),
                                (OID_TCG_DICE_ENDORSEMENTS, b"\x01\x02")], key=key)
    verifier = RatlsVerifier(RatlsPolicy(mr_enclave=(MR_A,)), TrustConfig(sgx_root_cas=(authority.root_ca,)))
    with pytest.raises(RatlsCertificateError, match="endorsements"):
        verifier.verify(der)
