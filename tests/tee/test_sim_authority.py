"""The simulated SGX authority: its quotes verify with exactly the DCAP verifier (and dcap-qvl)
under the simulated root, never under Intel's; state persists; collateral is re-issued."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.cli.main import main
from inclavare.errors import CertificateChainError, CollateralError, ConfigError, VerificationError
from inclavare.formats.quote import parse_quote
from inclavare.formats.tcb_info import parse_tcb_info
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.dcap import verify_quote
from inclavare.verify.evidence import TrustConfig, verify_evidence

MR_ENCLAVE = hashlib.sha256(b"enclave under test").digest()
NONCE = hashlib.sha384(b"runtime data").digest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def test_quote_verifies_under_the_simulated_root(authority: SimAuthority) -> None:
    quote = authority.quote(MR_ENCLAVE, NONCE, isv_prod_id=7, isv_svn=3)
    result = verify_quote(quote, authority.collateral(), now=_now(), trust_anchors=[authority.root_ca])
    assert result.status == "UpToDate" and result.tee == "sgx"
    claims = result.claims
    assert claims.mr_enclave == MR_ENCLAVE and claims.report_data == NONCE.ljust(64, b"\0")
    assert (claims.isv_prod_id, claims.isv_svn, claims.debug) == (7, 3, False)


def test_dcap_qvl_agrees(authority: SimAuthority) -> None:
    quote = authority.quote(MR_ENCLAVE, NONCE)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(authority.collateral().to_json())
    reference = dcap_qvl.verify_with_root_ca(quote, collateral, authority.root_ca.public_bytes(Encoding.DER),
                                             int(time.time()))
    assert reference.status == "UpToDate"


def test_verify_evidence_with_sim_trust(authority: SimAuthority) -> None:
    evidence = {"quote": base64.b64encode(authority.quote(MR_ENCLAVE, NONCE)).decode()}
    trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral_provider=lambda: (authority.collateral(),))
    verdict = verify_evidence("sgx", evidence, report_data=NONCE, trust=trust, now=_now())
    assert verdict.status == "UpToDate" and verdict.claims["mr_enclave"] == MR_ENCLAVE.hex()


def test_rejected_under_the_intel_root(authority: SimAuthority) -> None:
    quote = authority.quote(MR_ENCLAVE, NONCE)
    with pytest.raises(CertificateChainError):
        verify_quote(quote, authority.collateral(), now=_now())
    evidence = {"quote": base64.b64encode(quote).decode()}
    with pytest.raises(VerificationError):
        verify_evidence("sgx", evidence, report_data=None,
                        trust=TrustConfig(collateral=(authority.collateral(),)), now=_now())


def test_root_says_simulated(authority: SimAuthority) -> None:
    subject = authority.root_ca.subject.rfc4514_string()
    assert "SIMULATED" in subject and "not a TEE" in subject
    assert x509.load_pem_x509_certificate(authority.root_ca_pem.encode()) == authority.root_ca


def test_every_signed_bit_matters(authority: SimAuthority) -> None:
    quote = authority.quote(MR_ENCLAVE, NONCE)
    collateral, root, now = authority.collateral(), authority.root_ca, _now()
    parsed = parse_quote(quote)
    qe_start = parsed.signed_length + 4 + 128
    signed = list(range(parsed.signed_length)) + list(range(parsed.signed_length + 4, qe_start + 384 + 64))
    for position in signed:
        mutated = bytearray(quote)
        mutated[position] ^= 1 << (position % 8)
        with pytest.raises(VerificationError):
            verify_quote(bytes(mutated), collateral, now=now, trust_anchors=[root])


def test_collateral_expires_for_a_later_now(authority: SimAuthority) -> None:
    quote = authority.quote(MR_ENCLAVE, NONCE)
    with pytest.raises(CollateralError):
        verify_quote(quote, authority.collateral(), now=_now() + dt.timedelta(days=40),
                     trust_anchors=[authority.root_ca])


def test_state_persists_privately(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = SimAuthority.load_or_create(str(state))
    second = SimAuthority.load_or_create(str(state))
    assert first.root_ca == second.root_ca and first.collateral() == second.collateral()
    for name in ("root-ca.key", "pck.key", "attestation.key", "tcb-signing.key", "collateral.json"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
    quote = first.quote(MR_ENCLAVE, b"")
    assert verify_quote(quote, second.collateral(), now=_now(), trust_anchors=[second.root_ca])


def test_collateral_is_reissued_near_expiry(tmp_path: Path) -> None:
    clock = [dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)]
    authority = SimAuthority.load_or_create(str(tmp_path), clock=lambda: clock[0])
    first = authority.collateral()
    clock[0] += dt.timedelta(days=25)
    second = authority.collateral()
    assert second != first
    assert parse_tcb_info(second.tcb_info).issue_date > parse_tcb_info(first.tcb_info).issue_date
    reloaded = SimAuthority.load_or_create(str(tmp_path), clock=lambda: clock[0])
    assert reloaded.collateral() == second
    for days in (0, 10, 19):
        moment = clock[0] + dt.timedelta(days=days)
        assert verify_quote(authority.quote(MR_ENCLAVE, b""), second, now=moment,
                            trust_anchors=[authority.root_ca]).status == "UpToDate"


def test_quoting_is_fast(authority: SimAuthority) -> None:
    authority.quote(MR_ENCLAVE, NONCE)
    start = time.perf_counter()
    for _ in range(200):
        authority.quote(MR_ENCLAVE, NONCE)
    assert (time.perf_counter() - start) / 200 < 0.001


def test_bad_inputs(authority: SimAuthority) -> None:
    with pytest.raises(ConfigError):
        authority.quote(b"short", NONCE)
    with pytest.raises(ConfigError):
        authority.quote(MR_ENCLAVE, b"x" * 65)
    with pytest.raises(ConfigError):
        SimAuthority.load_or_create("")


def test_only_init_creates_an_authority(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped directory must not mint a new simulated root (export would then report success
    for a root that matches nothing): export, quote and ratls issue refuse, and create nothing."""
    missing = tmp_path / "typo"
    assert main(["sim", "export", "--state-dir", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert main(["sim", "quote", "--state-dir", str(missing), "--mr-enclave", MR_ENCLAVE.hex(),
                 "--out", str(tmp_path / "q.bin")]) == 2
    assert main(["ratls", "issue", "--attester", "sim", "--sim-authority", str(missing),
                 "--cert-out", str(tmp_path / "c.pem"), "--key-out", str(tmp_path / "k.pem")]) == 2
    err = capsys.readouterr().err
    assert err.count("no simulated authority in") == 3 and "sim init" in err
    assert not missing.exists() and not (tmp_path / "out").exists() and not (tmp_path / "c.pem").exists()
    assert main(["sim", "init", "--state-dir", str(missing)]) == 0
    assert main(["sim", "init", "--state-dir", str(missing)]) == 0
    out = capsys.readouterr().out
    assert "created a new SIMULATED" in out and "kept the existing SIMULATED" in out


def test_cli_export_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    assert main(["sim", "init", "--state-dir", str(state)]) == 0
    assert main(["sim", "export", "--state-dir", str(state), "--out", str(out)]) == 0
    assert main(["sim", "quote", "--state-dir", str(state), "--mr-enclave", MR_ENCLAVE.hex(),
                 "--report-data", NONCE.hex(), "--out", str(out / "quote.bin")]) == 0
    capsys.readouterr()
    assert main(["verify", str(out / "quote.bin"), "--collateral", str(out / "collateral.json"),
                 "--trust-anchor", str(out / "root-ca.pem"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "UpToDate" and result["claims"]["mr_enclave"] == MR_ENCLAVE.hex()
    assert result["simulated"] is True
    assert main(["verify", str(out / "quote.bin"), "--collateral", str(out / "collateral.json"),
                 "--trust-anchor", str(out / "root-ca.pem")]) == 0
    text = capsys.readouterr().out  # the same keys as --json, and no Python reprs
    assert "simulated: true (SIMULATED TEE" in text and "debug: false" in text
    assert not any(word in text for word in ("None", "False", "True"))
    assert main(["verify", str(out / "quote.bin"), "--collateral", str(out / "collateral.json")]) != 0
    err = capsys.readouterr().err  # against Intel's root: says it is simulated and what to pass
    assert err.startswith("inclavare: error:") and "this quote is SIMULATED" in err and "--trust-anchor" in err
