"""SEV-SNP: the real Milan report, its VCEK and the AMD ASK/ARK chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings

import pytest
from cryptography import x509
from testdata_paths import TODAY, vector

from inclavare.errors import CertificateChainError, SignatureError, VerificationError
from inclavare.formats.snp import parse_snp_report
from inclavare.verify.snp import verify_snp_report


@pytest.fixture(scope="module")
def snp() -> tuple[bytes, x509.Certificate, list[x509.Certificate]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test VCEK has a non-positive serial number
        vcek = x509.load_der_x509_certificate(vector("snp", "vcek.testcer").read_bytes())
    chain = x509.load_pem_x509_certificates(vector("snp", "ask_ark_milan.pem").read_bytes())
    return vector("snp", "attestation.bin").read_bytes(), vcek, chain


def test_real_report_verifies_today(snp: tuple[bytes, x509.Certificate, list[x509.Certificate]]) -> None:
    raw, vcek, chain = snp
    result = verify_snp_report(raw, vcek=vcek, ask_ark=chain, now=TODAY)
    assert result.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert result.claims["reported_tcb_snp"] == 5 and result.claims["signing_key"] == "vcek"
    assert result.claims["measurement"] == parse_snp_report(raw).measurement.hex()


def test_every_signed_byte_matters(snp: tuple[bytes, x509.Certificate, list[x509.Certificate]]) -> None:
    raw, vcek, chain = snp
    for offset in (0x04, 0x50, 0x90, 0xC0, 0x140, 0x1A0, 0x29F, 0x2A0, 0x2A0 + 80):
        mutated = bytearray(raw)
        mutated[offset] ^= 0x01
        with pytest.raises(VerificationError):
            verify_snp_report(bytes(mutated), vcek=vcek, ask_ark=chain, now=TODAY)


def test_chain_and_time(snp: tuple[bytes, x509.Certificate, list[x509.Certificate]]) -> None:
    raw, vcek, chain = snp
    with pytest.raises(CertificateChainError):
        verify_snp_report(raw, vcek=vcek, ask_ark=chain, now=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    with pytest.raises(CertificateChainError):
        verify_snp_report(raw, vcek=vcek, ask_ark=chain[1:], now=TODAY)
    with pytest.raises(CertificateChainError):
        verify_snp_report(raw, vcek=vcek, ask_ark=[chain[1]], now=TODAY)
    with pytest.raises(CertificateChainError):
        verify_snp_report(raw, vcek=chain[0], ask_ark=chain, now=TODAY)


def test_report_tcb_must_match_the_vcek(snp: tuple[bytes, x509.Certificate, list[x509.Certificate]]) -> None:
    raw, vcek, chain = snp
    report = parse_snp_report(raw)
    with pytest.raises(SignatureError):  # any change breaks the signature first
        verify_snp_report(dataclasses.replace(report, raw=raw[:0x180] + b"\x03" + raw[0x181:]),
                          vcek=vcek, ask_ark=chain, now=TODAY)


def test_malformed_report(snp: tuple[bytes, x509.Certificate, list[x509.Certificate]]) -> None:
    _, vcek, chain = snp
    with pytest.raises(VerificationError, match="malformed"):
        verify_snp_report(b"\x02" * 100, vcek=vcek, ask_ark=chain, now=TODAY)
