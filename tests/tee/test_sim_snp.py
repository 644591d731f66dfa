"""The simulated SEV-SNP attester: reports v3 of the simulated AMD authority verify with our SNP
verifier (through the verifier table) with the simulated ARK as the anchor, never with AMD's or
another ARK; the caller's fields are what the report attests; every signed bit matters."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from tests.testdata_paths import vector

from inclavare.errors import ConfigError, InclavareError, StoreError, VerificationError
from inclavare.formats.snp import REPORT_SIZE, parse_snp_report
from inclavare.tee.registry import SNP
from inclavare.tee.sim_amd import SIM_TCB, SimAmdAuthority, milan_tcb
from inclavare.tee.sim_pki import is_simulated
from inclavare.tee.sim_snp import SimSnpAttester
from inclavare.verify.evidence import ReportDataMismatch, TrustConfig, verify_evidence
from inclavare.verify.snp import verify_snp_report
from inclavare.verify.trust_files import load_trust

MEASUREMENT = hashlib.sha384(b"measured guest").digest()
HOST_DATA = hashlib.sha256(b"init data").digest()
NONCE = hashlib.sha384(b"runtime data").digest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SimAmdAuthority:
    return SimAmdAuthority.load_or_create(str(tmp_path_factory.mktemp("amd")))


def _trust(authority: SimAmdAuthority) -> TrustConfig:
    return TrustConfig(amd_chains=((authority.ask, authority.ark),))


def test_report_verifies_under_the_simulated_ark(authority: SimAmdAuthority) -> None:
    tcb = milan_tcb(bootloader=4, tee=1, snp=22, microcode=213)
    attester = SimSnpAttester(authority, MEASUREMENT, host_data=HOST_DATA, policy=0x30000 | 1 << 16,
                              platform_info=3, reported_tcb=tcb, guest_svn=7)
    assert attester.tee is SNP
    evidence = attester.evidence(NONCE)
    raw = base64.b64decode(evidence["attestation_report"])
    report = parse_snp_report(raw)
    assert (len(raw), report.version, report.cpuid_fms) == (REPORT_SIZE, 3, bytes([0x19, 1, 1]))
    verdict = verify_evidence("snp", evidence, report_data=NONCE, trust=_trust(authority), now=_now())
    claims = verdict.claims
    assert (verdict.tee, verdict.status) == ("snp", "Verified")
    assert claims["measurement"] == MEASUREMENT.hex() and claims["host_data"] == HOST_DATA.hex()
    assert claims["report_data"] == NONCE.hex() + "00" * 16 and claims["chip_id"] == authority.chip_id.hex()
    assert (claims["policy"], claims["platform_info"], claims["guest_svn"], claims["debug"]) == (0x30000, 3, 7, False)
    assert [claims[f"reported_tcb_{k}"] for k in ("bootloader", "tee", "snp", "microcode")] == [4, 1, 22, 213]


def test_chain_is_amd_shaped_and_says_simulated(authority: SimAmdAuthority) -> None:
    _, vcek = authority.vcek()
    assert vcek.subject.rfc4514_string().endswith("CN=SEV-VCEK") and vcek.issuer == authority.ask.subject
    assert authority.ark.subject == authority.ark.issuer == authority.ask.issuer
    assert all(is_simulated(c) for c in (vcek, authority.ask, authority.ark))
    assert vcek.signature_algorithm_oid == authority.ask.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    assert authority.vcek()[1] is vcek  # one VCEK per TCB, as the key is derived from it


def test_refused_without_the_simulated_ark(authority: SimAmdAuthority, tmp_path: Path) -> None:
    evidence = SimSnpAttester(authority, MEASUREMENT).evidence(NONCE)
    with pytest.raises(ReportDataMismatch):
        verify_evidence("snp", evidence, report_data=b"other", trust=_trust(authority), now=_now())
    with pytest.raises(VerificationError):  # fail closed: no AMD chain configured
        verify_evidence("snp", evidence, report_data=NONCE, trust=TrustConfig(), now=_now())
    amd = x509.load_pem_x509_certificates(vector("snp", "ask_ark_milan.pem").read_bytes())
    with pytest.raises(VerificationError):
        verify_evidence("snp", evidence, report_data=NONCE, trust=TrustConfig(amd_chains=(tuple(amd),)), now=_now())
    other = SimAmdAuthority.load_or_create(str(tmp_path / "other"))
    with pytest.raises(VerificationError):
        verify_evidence("snp", evidence, report_data=NONCE, trust=_trust(other), now=_now())


def test_vcek_of_another_tcb_is_refused(authority: SimAmdAuthority) -> None:
    raw = authority.report(MEASUREMENT, NONCE, reported_tcb=milan_tcb(snp=9))
    with pytest.raises(VerificationError):
        verify_snp_report(raw, vcek=authority.vcek(SIM_TCB)[1], ask_ark=[authority.ask, authority.ark], now=_now())
    verify_snp_report(raw, vcek=authority.vcek(milan_tcb(snp=9))[1], ask_ark=[authority.ask, authority.ark], now=_now())


def test_every_signed_bit_matters(authority: SimAmdAuthority) -> None:
    """One flipped bit in every byte of the signed report and of the signature R‖S."""
    raw = authority.report(MEASUREMENT, NONCE, host_data=HOST_DATA)
    _, vcek = authority.vcek()
    chain = [authority.ask, authority.ark]
    verify_snp_report(raw, vcek=vcek, ask_ark=chain, now=_now())
    for position in range(0x2A0 + 144):
        mutated = bytearray(raw)
        mutated[position] ^= 1 << (position % 8)
        with pytest.raises(VerificationError):
            verify_snp_report(bytes(mutated), vcek=vcek, ask_ark=chain, now=_now())


def test_export_and_state_persist(authority: SimAmdAuthority, tmp_path: Path) -> None:
    authority.export(str(tmp_path))
    trust = load_trust(amd_chains=[str(tmp_path / "ask_ark.pem")])
    evidence = SimSnpAttester(authority, MEASUREMENT).evidence(NONCE)
    assert verify_evidence("snp", evidence, report_data=NONCE, trust=trust, now=_now()).status == "Verified"
    state = tmp_path / "state"
    first = SimAmdAuthority.load_or_create(str(state))
    again = SimAmdAuthority.load_or_create(str(state))
    assert (again.ark, again.chip_id) == (first.ark, first.chip_id)
    assert again.vcek()[0].private_numbers() == first.vcek()[0].private_numbers()
    (state / "amd-authority.json").write_text(json.dumps({"version": 1, "chip_id": "zz"}))
    with pytest.raises(StoreError):
        SimAmdAuthority.load_or_create(str(state))


@pytest.mark.parametrize("bad", [
    {"report_data": bytes(65)}, {"measurement": bytes(32)}, {"host_data": bytes(31)}, {"policy": -1},
    {"reported_tcb": 1 << 64}, {"vmpl": "0"}, {"family_id": bytes(3)}, {"report_data": "text"},
])
def test_bad_inputs(authority: SimAmdAuthority, bad: dict[str, object]) -> None:
    args: dict[str, object] = {"measurement": MEASUREMENT, "report_data": NONCE, **bad}
    with pytest.raises(ConfigError):
        authority.report(**args)  # type: ignore[arg-type]


def test_attester_bad_inputs(authority: SimAmdAuthority) -> None:
    with pytest.raises(ConfigError):
        SimSnpAttester(authority, bytes(32))
    with pytest.raises(ConfigError):
        SimSnpAttester(object(), MEASUREMENT)  # type: ignore[arg-type]
    with pytest.raises(InclavareError):
        SimSnpAttester(authority, MEASUREMENT).evidence(bytes(65))
    with pytest.raises(ConfigError):
        milan_tcb(snp=256)
