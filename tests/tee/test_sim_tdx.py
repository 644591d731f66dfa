"""The simulated TDX attester: TD quotes v4/v5 of the simulated authority verify with our DCAP
verifier (through the verifier table) and with dcap-qvl under the simulated root and its TDX
collateral, never under Intel's; every signed bit matters; bad inputs are one-line errors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.errors import CollateralError, ConfigError, InclavareError, VerificationError
from inclavare.formats.quote import parse_quote
from inclavare.formats.report_body import TdReport10
from inclavare.tee.registry import TDX
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.sim_tdx import SimTdxAttester
from inclavare.verify.dcap import verify_quote
from inclavare.verify.evidence import ReportDataMismatch, TrustConfig, verify_evidence
from inclavare.verify.trust_files import load_trust

MR_TD = hashlib.sha384(b"measured TD image").digest()
RTMRS = tuple(hashlib.sha384(bytes([i])).digest() for i in range(4))
NONCE = hashlib.sha384(b"runtime data").digest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _trust(authority: SimAuthority) -> TrustConfig:
    return TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(), authority.tdx_collateral()))


def _dcap_qvl(authority: SimAuthority, quote: bytes) -> str:
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(authority.tdx_collateral().to_json())
        result = dcap_qvl.verify_with_root_ca(quote, collateral, authority.root_ca.public_bytes(Encoding.DER),
                                              int(_now().timestamp()))
        return f"accept:{result.status}"
    except ValueError:
        return "reject"


@pytest.mark.parametrize("version", [4, 5])
def test_td_quote_verifies_with_ours_and_dcap_qvl(authority: SimAuthority, version: int) -> None:
    attester = SimTdxAttester(authority, MR_TD, rtmrs=RTMRS, version=version)
    assert attester.tee is TDX
    evidence = attester.evidence(NONCE)
    quote = base64.b64decode(evidence["quote"])
    parsed = parse_quote(quote)
    assert (parsed.header.version, parsed.tee, type(parsed.report)) == (version, "tdx", TdReport10)
    verdict = verify_evidence("tdx", evidence, report_data=NONCE, trust=_trust(authority), now=_now())
    assert (verdict.tee, verdict.status, verdict.advisory_ids) == ("tdx", "UpToDate", ())
    claims = verdict.claims
    assert claims["mr_td"] == MR_TD.hex() and claims["report_data"] == NONCE.hex() + "00" * 16
    assert [claims[f"rtmr{i}"] for i in range(4)] == [r.hex() for r in RTMRS]
    assert claims["debug"] is False
    assert _dcap_qvl(authority, quote) == "accept:UpToDate"


def test_collateral_is_tdx_collateral(authority: SimAuthority) -> None:
    info = json.loads(authority.tdx_collateral().tcb_info)
    identity = json.loads(authority.tdx_collateral().qe_identity)
    assert (info["id"], info["version"], identity["id"], identity["isvprodid"]) == ("TDX", 3, "TD_QE", 2)
    assert [m["id"] for m in info["tdxModuleIdentities"]] == ["TDX_01"]
    assert all(len(level["tcb"]["tdxtcbcomponents"]) == 16 for level in info["tcbLevels"])


def test_report_options_are_attested(authority: SimAuthority) -> None:
    config_id = hashlib.sha384(b"init data").digest()
    evidence = SimTdxAttester(authority, MR_TD, mr_config_id=config_id).evidence(b"n")
    verdict = verify_evidence("tdx", evidence, report_data=b"n", trust=_trust(authority), now=_now())
    assert verdict.claims["mr_config_id"] == config_id.hex() and verdict.claims["rtmr3"] == "00" * 48


def test_refused_without_the_simulated_trust(authority: SimAuthority) -> None:
    evidence = SimTdxAttester(authority, MR_TD).evidence(NONCE)
    with pytest.raises(ReportDataMismatch):
        verify_evidence("tdx", evidence, report_data=b"other", trust=_trust(authority), now=_now())
    sgx_only = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(),))
    with pytest.raises(CollateralError):
        verify_evidence("tdx", evidence, report_data=NONCE, trust=sgx_only, now=_now())
    intel = TrustConfig(collateral=(authority.tdx_collateral(),))
    with pytest.raises(VerificationError):
        verify_evidence("tdx", evidence, report_data=NONCE, trust=intel, now=_now())
    with pytest.raises(VerificationError):  # a TD quote is not SGX evidence
        verify_evidence("sgx", evidence, report_data=NONCE, trust=_trust(authority), now=_now())


def test_debug_td_is_refused_by_both(authority: SimAuthority) -> None:
    quote = authority.td_quote(MR_TD, NONCE, td_attributes=((1 << 28) | 1).to_bytes(8, "little"))
    with pytest.raises(VerificationError):
        verify_quote(quote, authority.tdx_collateral(), now=_now(), trust_anchors=[authority.root_ca])
    assert _dcap_qvl(authority, quote) == "reject"


def test_every_signed_bit_matters(authority: SimAuthority) -> None:
    """One flipped bit in every byte of the attestation-key-signed prefix (header + TD report), of
    the signature and attestation key, and of the PCK-signed QE report and its signature; dcap-qvl
    agrees on a sample."""
    quote = authority.td_quote(MR_TD, NONCE, rtmrs=RTMRS)
    collateral, root, now = authority.tdx_collateral(), authority.root_ca, _now()
    parsed = parse_quote(quote)
    qe_start = parsed.signed_length + 4 + 128 + 6  # sig len, signature + key, type-6 wrapper header
    signed = list(range(parsed.signed_length)) + list(range(parsed.signed_length + 4, parsed.signed_length + 132))
    signed += list(range(qe_start, qe_start + 384 + 64))
    for position in signed:
        mutated = bytearray(quote)
        mutated[position] ^= 1 << (position % 8)
        with pytest.raises(VerificationError):
            verify_quote(bytes(mutated), collateral, now=now, trust_anchors=[root])
        if position % 37 == 0:
            assert _dcap_qvl(authority, bytes(mutated)) == "reject", position


def test_export_writes_tdx_collateral(authority: SimAuthority, tmp_path: Path) -> None:
    authority.export(str(tmp_path))
    trust = load_trust(roots=[str(tmp_path / "root-ca.pem")], collateral_source=str(tmp_path), first_root_only=True)
    evidence = SimTdxAttester(authority, MR_TD).evidence(NONCE)
    assert verify_evidence("tdx", evidence, report_data=NONCE, trust=trust, now=_now()).status == "UpToDate"


def test_collateral_persists_and_older_state_gains_tdx_collateral(tmp_path: Path) -> None:
    first = SimAuthority.load_or_create(str(tmp_path))
    assert SimAuthority.load_existing(str(tmp_path)).tdx_collateral() == first.tdx_collateral()
    (tmp_path / "tdx-collateral.json").unlink()  # a state directory from before TDX
    again = SimAuthority.load_existing(str(tmp_path))
    quote = again.td_quote(MR_TD, NONCE)
    assert verify_quote(quote, again.tdx_collateral(), now=_now(), trust_anchors=[first.root_ca]).status == "UpToDate"


@pytest.mark.parametrize("bad", [
    {"mr_td": b"short"}, {"report_data": bytes(65)}, {"rtmrs": (bytes(48),) * 3}, {"version": 3},
    {"mr_config_id": bytes(32)}, {"td_attributes": bytes(4)}, {"report_data": "text"},
])
def test_bad_inputs(authority: SimAuthority, bad: dict[str, object]) -> None:
    args: dict[str, object] = {"mr_td": MR_TD, "report_data": NONCE, **bad}
    with pytest.raises(ConfigError):
        authority.td_quote(**args)  # type: ignore[arg-type]


def test_attester_bad_inputs(authority: SimAuthority) -> None:
    with pytest.raises(ConfigError):
        SimTdxAttester(authority, bytes(32))
    with pytest.raises(ConfigError):
        SimTdxAttester(object(), MR_TD)  # type: ignore[arg-type]
    with pytest.raises(InclavareError):
        SimTdxAttester(authority, MR_TD).evidence(bytes(65))
