"""Every real DCAP vector in ../shared/testdata: its verdict at the pinned time (as dcap-qvl 0.7
gives it), and rejection today (2026-11-28: the CRLs have expired)."""

from __future__ import annotations

import datetime as dt

import dcap_qvl
import pytest
from testdata_paths import PINNED_2025, PINNED_2026, TODAY, vector

from inclavare.errors import CollateralError, TcbError, VerificationError
from inclavare.formats.collateral import Collateral
from inclavare.formats.report_body import EnclaveReport, TdReport10
from inclavare.verify.dcap import SgxClaims, TdxClaims, verify_quote
from inclavare.verify.intel_sgx_root import INTEL_SGX_ROOT_CA, INTEL_SGX_ROOT_CA_SHA256

ACCEPTED = [
    ("sgx_quote", "sgx_quote_collateral.json", PINNED_2025, "ConfigurationAndSWHardeningNeeded",
     ("INTEL-SA-00289", "INTEL-SA-00615")),
    ("tdx_quote", "tdx_quote_collateral.json", PINNED_2025, "UpToDate", ()),
]
ALL = [("sgx_quote", "sgx_quote_collateral.json"), ("tdx_quote", "tdx_quote_collateral.json"),
       ("tdx_quote_outdated", "tdx_quote_outdated_collateral.json")]


def _load(quote: str, collateral: str) -> tuple[bytes, Collateral]:
    return vector("dcap", quote).read_bytes(), Collateral.from_json(vector("dcap", collateral).read_text())


def test_pinned_intel_root_fingerprint() -> None:
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    der = INTEL_SGX_ROOT_CA.public_bytes(Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == INTEL_SGX_ROOT_CA_SHA256
    assert INTEL_SGX_ROOT_CA.subject.rfc4514_string().endswith("CN=Intel SGX Root CA")


@pytest.mark.parametrize("quote,collateral,now,status,advisories", ACCEPTED)
def test_accepted_vectors(quote: str, collateral: str, now: dt.datetime, status: str,
                          advisories: tuple[str, ...]) -> None:
    raw, coll = _load(quote, collateral)
    result = verify_quote(raw, coll, now=now)
    assert (result.status, result.advisory_ids) == (status, advisories)
    reference = dcap_qvl.verify(raw, dcap_qvl.QuoteCollateralV3.from_json(coll.to_json()), int(now.timestamp()))
    assert (result.status, list(result.advisory_ids)) == (reference.status, reference.advisory_ids)


def test_sgx_claims() -> None:
    raw, coll = _load("sgx_quote", "sgx_quote_collateral.json")
    result = verify_quote(raw, coll, now=PINNED_2025)
    assert result.tee == "sgx" and isinstance(result.claims, SgxClaims)
    body = result.quote.report
    assert isinstance(body, EnclaveReport)
    assert result.claims.mr_enclave == body.mr_enclave and result.claims.mr_enclave.hex().startswith("33d8736d")
    assert result.claims.report_data.startswith(b"Hello, world!") and not result.claims.debug
    assert result.claims_dict()["mr_signer"] == body.mr_signer.hex()
    assert result.fmspc.hex().upper() == "00A067110000" and result.pck_ca == "processor"


def test_tdx_claims() -> None:
    raw, coll = _load("tdx_quote", "tdx_quote_collateral.json")
    result = verify_quote(raw, coll, now=PINNED_2025)
    assert isinstance(result.claims, TdxClaims) and isinstance(result.quote.report, TdReport10)
    assert result.claims.mr_td == result.quote.report.mr_td
    assert result.claims.rtmr2 == result.quote.report.rt_mr2
    assert result.claims.td_attributes.hex() == "0000001000000000" and result.claims.tee_tcb_svn2 is None
    assert result.pck_ca == "platform"


def test_outdated_tdx_v5_is_rejected_for_its_tcb() -> None:
    raw, coll = _load("tdx_quote_outdated", "tdx_quote_outdated_collateral.json")
    with pytest.raises(TcbError, match="no matching TCB level"):
        verify_quote(raw, coll, now=PINNED_2026)


@pytest.mark.parametrize("quote,collateral", ALL)
def test_every_vector_is_rejected_today(quote: str, collateral: str) -> None:
    raw, coll = _load(quote, collateral)
    with pytest.raises(CollateralError, match="expired"):
        verify_quote(raw, coll, now=TODAY)


def test_quote_object_and_bytes_give_the_same_result() -> None:
    from inclavare.formats.quote import parse_quote

    raw, coll = _load("tdx_quote", "tdx_quote_collateral.json")
    assert verify_quote(parse_quote(raw), coll, now=PINNED_2025) == verify_quote(raw, coll, now=PINNED_2025)


def test_malformed_quote_raises_verification_error() -> None:
    _, coll = _load("sgx_quote", "sgx_quote_collateral.json")
    with pytest.raises(VerificationError, match="malformed"):
        verify_quote(b"\x03\x00\x02\x00", coll, now=PINNED_2025)


def test_naive_time_is_refused() -> None:
    from inclavare.errors import ConfigError

    raw, coll = _load("sgx_quote", "sgx_quote_collateral.json")
    with pytest.raises(ConfigError):
        verify_quote(raw, coll, now=dt.datetime(2025, 7, 1))
