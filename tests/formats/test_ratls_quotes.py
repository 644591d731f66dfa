"""The SGX quotes inside the real RA-TLS certificates (Gramine, Intel SGX SDK) parse exactly,
and the interoperable RA-TLS evidence binds the certificate key (research/attestation.md §5)."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from testdata_paths import vector

from inclavare.formats.der import SEQUENCE, encode_tlv, oid_text
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.quote import parse_quote
from inclavare.formats.x509_view import CertificateView

_HASHES = {1: "sha256", 7: "sha384", 8: "sha512"}


@pytest.mark.parametrize("name", ["gramine-cert.pem", "intel-sgxsdk-cert.pem"])
def test_ratls_certificate_quotes(name: str) -> None:
    der = parse_pem_blocks(vector("ratls", name).read_bytes())[0].contents
    cert = CertificateView.parse(der)
    spki = encode_tlv(SEQUENCE, cert.spki)
    extensions = {oid_text(e.oid): e.value for e in cert.extensions}
    tagged = cbor2.loads(extensions["2.23.133.5.4.9"])
    assert tagged.tag == 60000
    quote_bytes, claims_bytes = tagged.value
    quote = parse_quote(quote_bytes)
    assert quote.to_bytes() == quote_bytes and quote.tee == "sgx"
    assert quote.report.report_data[:32] == hashlib.sha256(claims_bytes).digest()
    algorithm, digest = cbor2.loads(cbor2.loads(claims_bytes)["pubkey-hash"])
    assert digest == hashlib.new(_HASHES[algorithm], spki).digest()
    legacy = [v for k, v in extensions.items()
              if k in ("0.6.9.42.840.113741.1337.6", "1.2.840.113741.1337.6", "1.2.840.113741.1.13.1")]
    assert legacy and parse_quote(legacy[0]).to_bytes() == legacy[0]
