"""Fixtures for RA-TLS: a simulated SGX authority, attesters, verifiers and certificate surgery."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.issuers import IssuerCa
from inclavare.ratls.policy import RatlsPolicy
from inclavare.ratls.verifier import RatlsVerifier
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.evidence import TrustConfig
from tests.testdata_paths import TESTDATA as SHARED_TESTDATA

RATLS_DATA = SHARED_TESTDATA / "ratls"
MR_A = bytes.fromhex("aa" * 32)
MR_B = bytes.fromhex("bb" * 32)


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SimAuthority:
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim-authority")))


@pytest.fixture(scope="session")
def attester_a(authority: SimAuthority) -> SimAuthorityAttester:
    return SimAuthorityAttester(authority, MR_A)


@pytest.fixture(scope="session")
def attester_b(authority: SimAuthority) -> SimAuthorityAttester:
    return SimAuthorityAttester(authority, MR_B)


@pytest.fixture(scope="session")
def sim_trust(authority: SimAuthority) -> TrustConfig:
    """Trusts the simulated root, with the authority's collateral configured."""
    return TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(),))


VerifierFactory = Callable[..., RatlsVerifier]


@pytest.fixture
def make_verifier(sim_trust: TrustConfig) -> VerifierFactory:
    def make(trust: TrustConfig | None = None, **policy: object) -> RatlsVerifier:
        use_endorsements = bool(policy.pop("use_endorsements", True))
        issuers = tuple(IssuerCa.from_der(ca.public_bytes(Encoding.DER))  # type: ignore[attr-defined]
                        for ca in policy.pop("issuer_cas", ()))  # type: ignore[attr-defined]
        if not policy:
            policy = {"mr_enclave": (MR_A,)}
        return RatlsVerifier(RatlsPolicy(**policy), trust or sim_trust,  # type: ignore[arg-type]
                             use_endorsements=use_endorsements, issuer_cas=issuers)

    return make


def shared_certificate(name: str) -> bytes:
    path = RATLS_DATA / name
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent (CI places ../shared beside the clone)")
    return path.read_bytes()


def build_certificate(extensions: Sequence[tuple[str, bytes]], *,
                      key: ec.EllipticCurvePrivateKey | None = None,
                      issuer_key: ec.EllipticCurvePrivateKey | None = None,
                      issuer_name: x509.Name | None = None,
                      not_before: dt.datetime | None = None, days: float = 1,
                      critical: bool = False) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A certificate with the given raw extensions (OID, value) for ``key`` (fresh P-256 by
    default), self-signed unless ``issuer_key`` is given (then issued by ``issuer_name``, or by
    "other issuer"). Returns (DER, key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    issuer = name if issuer_key is None else issuer_name or x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "other issuer")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days)))
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
                                        critical=critical)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(Encoding.DER), key


def make_ca(common_name: str, *, days: float = 30) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (cA true, keyCertSign) valid from 5 minutes ago, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def endorsed_certificate(attester: SimAuthorityAttester, ca: x509.Certificate,
                         ca_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A genuine RA-TLS certificate (sim evidence binding a fresh key) issued by ``ca``, valid
    for 30 days. Returns (DER, key)."""
    from inclavare.ratls import cbor_subset
    from inclavare.ratls.certificate import OID_TCG_DICE_EVIDENCE
    from inclavare.ratls.claims import build_claims

    key = ec.generate_private_key(ec.SECP256R1())
    claims = build_claims(key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    quote = attester.evidence(hashlib.sha256(claims.raw).digest()).data
    value = cbor_subset.dumps(cbor_subset.Tagged(60000, [quote, claims.raw]))
    return build_certificate([(OID_TCG_DICE_EVIDENCE, value)], key=key, issuer_key=ca_key,
                             issuer_name=ca.subject, days=30)


def extensions_of(der: bytes) -> list[tuple[str, bytes]]:
    """The non-id-ce extensions of a certificate, as (dotted OID, value); read with the strict
    DER reader because cryptography refuses Gramine's certificate."""
    from inclavare.formats.der import oid_text
    from inclavare.formats.x509_view import CertificateView

    return [(oid_text(e.oid), e.value) for e in CertificateView.parse(der).extensions
            if not e.oid.startswith(b"\x55\x1d")]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return RATLS_DATA


class _Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _EchoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A plain TCP echo service on loopback: the unmodified service behind the relays."""
    server = _Echo(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def exchange(port: int, payload: bytes, timeout: float = 30) -> bytes:
    """Send ``payload`` to a loopback port, half-close, and read everything back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
