"""Issue 10, observation 5: the RA-TLS verifier must check every certificate's signature.

Before, the signature was checked only when issuer == subject: a genuine (expired) certificate's
key and evidence copied into a certificate with other names, a SAN and a ten-year validity,
signed by an unrelated key, verified (``inclavare ratls verify`` exit 0, ``verified: true``),
and single-byte changes of the issuer or subject passed — some that ``cryptography`` cannot
even parse. Now the signature is verified with the certificate's own key whatever the issuer
says, endorsed certificates only with a configured issuer CA, and what ``cryptography``
refuses is refused.
"""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.x509.oid import NameOID

from inclavare.errors import ConfigError
from inclavare.formats.der import BIT_STRING, SEQUENCE, encode_sequence, encode_tlv
from inclavare.formats.x509_view import CertificateView
from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.issuers import IssuerCa
from inclavare.ratls.certificate import (
    OID_TCG_DICE_EVIDENCE,
    RatlsCertificateError,
    certificate_der,
    parse_ratls_certificate,
)
from inclavare.ratls.issue import issue_certificate
from inclavare.ratls.policy import RatlsPolicy
from inclavare.ratls.verifier import CertificateNotValidNow, RatlsVerifier
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.evidence import TrustConfig
from tests.ratls.conftest import endorsed_certificate, extensions_of, make_ca, shared_certificate

INCLAVARE = str(Path(sys.executable).parent / "inclavare")
SHARED = ("gramine-cert.pem", "intel-sgxsdk-cert.pem")
MR = bytes.fromhex("5a" * 32)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SimAuthority:
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim-authority")))


@pytest.fixture(scope="module")
def exported(authority: SimAuthority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust")
    authority.export(str(out))
    return out


def _verifier(authority: SimAuthority, *issuers: x509.Certificate) -> RatlsVerifier:
    """A verifier trusting the sim root and these issuer CAs (as the unchanged code's, when
    there are none, so that the refusals below can be seen failing there)."""
    trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(),))
    if not issuers:
        return RatlsVerifier(RatlsPolicy(mr_enclave=(MR,)), trust)
    return RatlsVerifier(RatlsPolicy(mr_enclave=(MR,)), trust,
                         issuer_cas=tuple(_issuer(ca) for ca in issuers))


def _ratls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INCLAVARE, "ratls", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _pem(path: Path, der: bytes) -> str:
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
    return str(path)


def forge(genuine: bytes) -> bytes:
    """Observation 5's forgery: the genuine certificate's public key and RA-TLS extensions in a
    new certificate — another issuer, subject and SAN, valid for ten years from yesterday —
    signed by an unrelated key."""
    der = certificate_der(genuine)
    public_key = load_der_public_key(encode_tlv(SEQUENCE, CertificateView.parse(der).spki))
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.example")]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Trusted CA")]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]),
                              critical=False))
    for oid, value in extensions_of(der):
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    forged = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return forged.public_bytes(Encoding.DER)


@pytest.mark.parametrize("name", SHARED)
def test_forgery_from_a_genuine_certificate_is_refused(name: str) -> None:
    genuine = certificate_der(shared_certificate(name))
    forged = forge(genuine)
    # a well-formed certificate carrying the genuine key and evidence: only its signer differs
    assert CertificateView.parse(forged).spki == CertificateView.parse(genuine).spki
    assert dict(extensions_of(forged))[OID_TCG_DICE_EVIDENCE] == dict(extensions_of(genuine))[
        OID_TCG_DICE_EVIDENCE]
    with pytest.raises(RatlsCertificateError, match="not signed by its own key.*--issuer-ca") as refused:
        parse_ratls_certificate(forged)
    assert type(refused.value).__name__ == "IssuerNotTrusted"
    # refused before any collateral is looked at
    with pytest.raises(RatlsCertificateError, match="not signed by its own key"):
        RatlsVerifier(RatlsPolicy(insecure_any_enclave=True)).verify(forged)


@pytest.mark.parametrize("name", SHARED)
def test_forgery_from_a_genuine_certificate_is_refused_by_the_cli(name: str, tmp_path: Path) -> None:
    forged = _pem(tmp_path / "forged.pem", forge(shared_certificate(name)))
    r = _ratls("verify", forged, "--insecure-any-enclave")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("inclavare: error: the certificate is not signed by its own key")
    assert len(r.stderr.strip().splitlines()) == 1


def test_forgery_extending_an_expired_certificate_is_refused(authority: SimAuthority,
                                                             exported: Path, tmp_path: Path) -> None:
    """The observation end to end: the genuine certificate has expired and is refused; its
    forged ten-year copy verified (exit 0, ``verified: true``) before the fix."""
    expired = issue_certificate(SimAuthorityAttester(authority, MR), validity=dt.timedelta(days=1),
                                now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    trust = ["--trust-anchor", str(exported / "root-ca.pem"), "--collateral",
             str(exported / "collateral.json"), "--mr-enclave", MR.hex()]
    genuine = _ratls("verify", _pem(tmp_path / "genuine.pem", expired.certificate_der), *trust)
    assert genuine.returncode == 1 and "not valid at this time" in genuine.stderr
    forged = _ratls("verify", _pem(tmp_path / "forged.pem", forge(expired.certificate_der)), *trust)
    assert forged.returncode == 1 and "verified" not in forged.stdout
    assert "not signed by its own key" in forged.stderr
    assert len(forged.stderr.strip().splitlines()) == 1


def _refused_mutations(der: bytes, offsets: list[int], xor: int) -> int:
    """How many of the single-byte mutations (TBS offset, ``xor``) the parser refuses."""
    view = CertificateView.parse(der)
    base = der.index(view.signed.data)
    refused = 0
    for offset in offsets:
        mutated = bytearray(der)
        mutated[base + offset] ^= xor
        try:
            parse_ratls_certificate(bytes(mutated))
        except RatlsCertificateError:
            refused += 1
    return refused


@pytest.mark.parametrize("name", SHARED)
def test_every_single_byte_mutation_of_the_signed_part_is_refused(name: str) -> None:
    der = certificate_der(shared_certificate(name))
    parse_ratls_certificate(der)  # the genuine certificate parses
    view = CertificateView.parse(der)
    size = len(view.signed.data)
    assert size > 9000
    every = list(range(size))
    assert _refused_mutations(der, every, 0x01) == size  # 100 %
    # other values on a sample, and on every byte of the names (where the check used to lapse)
    names = [i for i in every if view.signed.data[i:i + len(view.issuer)] == view.issuer
             or view.signed.data[i:i + len(view.subject)] == view.subject]
    names = sorted({i + k for i in names for k in range(min(len(view.issuer), len(view.subject)))})
    sample = sorted(set(random.Random(5).sample(every, 200)) | set(names))
    for xor in (0x80, 0xFF):
        assert _refused_mutations(der, sample, xor) == len(sample)


def _resigned_with_unparsable_names(authority: SimAuthority) -> bytes:
    """A genuine sim certificate whose issuer and subject first RDN is a SEQUENCE instead of a
    SET (accepted by the strict DER reader, which keeps names as raw bytes; refused by
    ``cryptography``), re-signed with its own key so the signature is valid."""
    creds = issue_certificate(SimAuthorityAttester(authority, MR))
    view = CertificateView.parse(creds.certificate_der)
    assert view.issuer == view.subject and view.issuer[0] == 0x31
    tbs = view.signed.data.replace(view.issuer, b"\x30" + view.issuer[1:])
    signature = creds.private_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = encode_sequence(tbs, encode_tlv(SEQUENCE, view.signed.algorithm),
                          encode_tlv(BIT_STRING, b"\0" + signature))
    CertificateView.parse(der)  # the strict DER reader alone accepts it
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)
    return der


def test_what_cryptography_cannot_parse_is_refused(authority: SimAuthority) -> None:
    der = _resigned_with_unparsable_names(authority)
    with pytest.raises(RatlsCertificateError, match="refused by cryptography"):
        parse_ratls_certificate(der)
    with pytest.raises(RatlsCertificateError, match="refused by cryptography"):
        _verifier(authority).verify(der)


def _endorsed(authority: SimAuthority, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> bytes:
    return endorsed_certificate(SimAuthorityAttester(authority, MR), ca, ca_key)[0]


def _issuer(ca: x509.Certificate) -> IssuerCa:

    return IssuerCa.from_der(ca.public_bytes(Encoding.DER))


def test_endorsed_certificate_needs_its_issuer_configured(authority: SimAuthority) -> None:
    ca, ca_key = make_ca("Tenant RA-TLS CA")
    der = _endorsed(authority, ca, ca_key)
    with pytest.raises(RatlsCertificateError, match="no issuer CA is configured.*--issuer-ca PEM"):
        _verifier(authority).verify(der)
    verdict = _verifier(authority, ca).verify(der)
    assert verdict.claims["mr_enclave"] == MR.hex()
    assert parse_ratls_certificate(der, (_issuer(ca),)).issuer_ca == _issuer(ca)
    other, _ = make_ca("Another CA")
    with pytest.raises(RatlsCertificateError, match="not a configured issuer CA"):
        _verifier(authority, other).verify(der)
    impostor, _ = make_ca("Tenant RA-TLS CA")  # same name, another key
    with pytest.raises(RatlsCertificateError, match="does not verify with the configured issuer CA"):
        _verifier(authority, impostor).verify(der)


def test_endorsed_certificate_is_refused_when_its_issuer_has_expired(authority: SimAuthority) -> None:
    ca, ca_key = make_ca("Short-lived CA", days=1)
    der = _endorsed(authority, ca, ca_key)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)  # the leaf is valid 30 days
    verifier = _verifier(authority, ca)
    assert verifier.verify(der).valid_until <= ca.not_valid_after_utc.timestamp()
    with pytest.raises(CertificateNotValidNow, match="issuer CA 'CN=Short-lived CA'"):
        verifier.verify(der, now=later)


def test_only_ca_certificates_can_be_issuers(authority: SimAuthority) -> None:
    leaf = issue_certificate(SimAuthorityAttester(authority, MR)).certificate_der
    with pytest.raises(ConfigError, match="not a CA certificate"):
        _issuer(x509.load_der_x509_certificate(leaf))


def test_issuer_ca_on_the_command_line(authority: SimAuthority, exported: Path, tmp_path: Path) -> None:
    ca, ca_key = make_ca("Tenant RA-TLS CA")
    cert = _pem(tmp_path / "endorsed.pem", _endorsed(authority, ca, ca_key))
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(Encoding.PEM))
    trust = ["--trust-anchor", str(exported / "root-ca.pem"), "--collateral",
             str(exported / "collateral.json"), "--mr-enclave", MR.hex()]
    ok = _ratls("verify", cert, *trust, "--issuer-ca", str(ca_pem))
    assert ok.returncode == 0 and "verified: true" in ok.stdout, ok.stderr
    shown = _ratls("inspect", cert, "--issuer-ca", str(ca_pem))
    assert shown.returncode == 0 and "issuer_ca: CN=Tenant RA-TLS CA" in shown.stdout, shown.stderr
    for refused in (_ratls("verify", cert, *trust), _ratls("inspect", cert)):
        assert refused.returncode == 1 and "--issuer-ca PEM" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    leaf = _ratls("verify", cert, *trust, "--issuer-ca", cert)
    assert leaf.returncode == 2 and "not a CA certificate" in leaf.stderr
    assert len(leaf.stderr.strip().splitlines()) == 1
