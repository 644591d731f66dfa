"""verify_evidence: the key broker's entry point (evidence JSON + report data + trust + time)."""

from __future__ import annotations

import base64
import datetime as dt
import warnings

import pytest
from cryptography import x509
from testdata_paths import PINNED_2025, TODAY, vector

from inclavare.errors import CollateralError, ReportDataMismatch, VerificationError
from inclavare.formats.collateral import Collateral
from inclavare.verify.evidence import TrustConfig, UnsupportedTee, Verdict, verify_evidence


def _quote(name: str) -> dict[str, str]:
    return {"quote": base64.b64encode(vector("dcap", name).read_bytes()).decode()}


@pytest.fixture(scope="module")
def intel_trust() -> TrustConfig:
    documents = tuple(Collateral.from_json(vector("dcap", name).read_text())
                      for name in ("tdx_quote_collateral.json", "sgx_quote_collateral.json",
                                   "tdx_quote_outdated_collateral.json"))
    return TrustConfig(collateral=documents)


def test_sgx_and_tdx_with_selected_collateral(intel_trust: TrustConfig) -> None:
    sgx = verify_evidence("sgx", _quote("sgx_quote"), report_data=b"Hello, world!", trust=intel_trust, now=PINNED_2025)
    assert isinstance(sgx, Verdict) and sgx.status == "ConfigurationAndSWHardeningNeeded"
    assert sgx.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert sgx.claims["mr_enclave"].startswith("33d8736d") and sgx.claims["fmspc"] == "00a067110000"
    tdx = verify_evidence("tdx", _quote("tdx_quote"), report_data=None, trust=intel_trust, now=PINNED_2025)
    assert tdx.to_dict()["status"] == "UpToDate" and set(tdx.to_dict()) == {"tee", "status", "advisory_ids", "claims"}


def test_report_data_binding(intel_trust: TrustConfig) -> None:
    with pytest.raises(ReportDataMismatch):
        verify_evidence("sgx", _quote("sgx_quote"), report_data=b"Hello, world?", trust=intel_trust, now=PINNED_2025)
    with pytest.raises(ReportDataMismatch):
        verify_evidence("sgx", _quote("sgx_quote"), report_data=b"x" * 65, trust=intel_trust, now=PINNED_2025)


def test_claimed_tee_must_match_the_evidence(intel_trust: TrustConfig) -> None:
    with pytest.raises(VerificationError):
        verify_evidence("tdx", _quote("sgx_quote"), report_data=None, trust=intel_trust, now=PINNED_2025)
    with pytest.raises(UnsupportedTee):
        verify_evidence("sample", {"svn": "1"}, report_data=None, trust=intel_trust, now=PINNED_2025)
    with pytest.raises(VerificationError):
        verify_evidence("sgx", {"quote": "%%%"}, report_data=None, trust=intel_trust, now=PINNED_2025)


def test_defaults_fail_closed() -> None:
    with pytest.raises(CollateralError, match="no collateral"):
        verify_evidence("sgx", _quote("sgx_quote"), report_data=None, trust=TrustConfig(), now=PINNED_2025)
    with pytest.raises(VerificationError):
        verify_evidence("snp", {"attestation_report": base64.b64encode(vector("snp", "attestation.bin")
                                                                       .read_bytes()).decode()},
                        report_data=None, trust=TrustConfig(), now=TODAY)


def test_collateral_for_another_platform_is_not_used(intel_trust: TrustConfig) -> None:
    only_tdx = TrustConfig(collateral=intel_trust.collateral[:1])
    with pytest.raises(CollateralError, match="00A067110000"):
        verify_evidence("sgx", _quote("sgx_quote"), report_data=None, trust=only_tdx, now=PINNED_2025)


def test_expired_today(intel_trust: TrustConfig) -> None:
    with pytest.raises(CollateralError):
        verify_evidence("tdx", _quote("tdx_quote"), report_data=None, trust=intel_trust, now=TODAY)


def test_snp(intel_trust: TrustConfig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vcek = x509.load_der_x509_certificate(vector("snp", "vcek.testcer").read_bytes())
    chain = tuple(x509.load_pem_x509_certificates(vector("snp", "ask_ark_milan.pem").read_bytes()))
    report = base64.b64encode(vector("snp", "attestation.bin").read_bytes()).decode()
    trust = TrustConfig(amd_chains=(chain,), vceks=(vcek,))
    verdict = verify_evidence("snp", {"attestation_report": report}, report_data=bytes([1, 2, 3, 4, 5]),
                              trust=trust, now=TODAY)
    assert verdict.tee == "snp" and verdict.claims["reported_tcb_microcode"] == 68
    sent = {"attestation_report": report, "cert_chain": [{"cert_type": "VCEK", "data": base64.b64encode(
        vector("snp", "vcek.testcer").read_bytes()).decode()}]}
    assert verify_evidence("snp", sent, report_data=None, trust=TrustConfig(amd_chains=(chain,)), now=TODAY)
    with pytest.raises(ReportDataMismatch):
        verify_evidence("snp", {"attestation_report": report}, report_data=b"\1", trust=trust, now=TODAY)
    assert dt.datetime(2029, 9, 1, tzinfo=dt.timezone.utc)  # the VCEK stays valid until 2029-09
