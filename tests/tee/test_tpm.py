"""The TPM attester against a real swtpm (started here, EK certificate from a test CA) and the TPM
verifier on its evidence: chain, AK signature, PCR digest, report data; single-bit flips refused."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import os
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from inclavare.errors import (
    CertificateChainError,
    ConfigError,
    InclavareError,
    ReportDataMismatch,
    SignatureError,
    VerificationError,
)
from inclavare.tee.registry import TPM, tee_named
from inclavare.tee.tpm import TpmAttester, TpmUnavailable
from inclavare.verify.evidence import TrustConfig, verify_evidence
from inclavare.verify.table import ready_tees
from inclavare.verify.tpm import MalformedTpmEvidence
from inclavare.verify.trust_files import load_trust
from tests.support.swtpm import Swtpm, swtpm_for_module

RD = hashlib.sha384(b"runtime data").digest()


swtpm = pytest.fixture(scope="module", name="swtpm")(swtpm_for_module)


@pytest.fixture(scope="module")
def trust(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> TrustConfig:
    bundle = swtpm.ek_cas_bundle(str(tmp_path_factory.mktemp("ekca") / "ek-ca.pem"))
    return load_trust(tpm_ek_cas=(bundle,))


@pytest.fixture(scope="module")
def evidence(swtpm: Swtpm) -> dict[str, Any]:
    return TpmAttester(swtpm.tcti).evidence(RD)


def _verify(evidence: dict[str, Any], trust: TrustConfig, report_data: bytes | None = RD,
            now: dt.datetime | None = None) -> dict[str, Any]:
    at = now or dt.datetime.now(dt.timezone.utc)  # the EK certificate is as new as the swtpm
    return verify_evidence(TPM.name, evidence, report_data=report_data, trust=trust, now=at).claims


def test_evidence_has_trustees_shape_and_verifies(evidence: dict[str, Any], trust: TrustConfig) -> None:
    assert set(evidence) == {"ek_cert", "ak_pubkey", "quote", "eventlog", "aa_eventlog"}
    assert set(evidence["quote"]) == {"SHA256"}
    assert set(evidence["quote"]["SHA256"]) == {"attest_body", "attest_sig", "pcrs"}
    claims = _verify(evidence, trust)
    assert sorted(claims["pcrs"], key=int) == [str(i) for i in range(8)]
    assert claims["pcrs"]["0"] == evidence["quote"]["SHA256"]["pcrs"][0]
    assert claims["report_data"] == RD.ljust(64, b"\0").hex()
    ak = serialization.load_pem_public_key(evidence["ak_pubkey"].encode())
    spki = ak.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert claims["ak_public_sha256"] == hashlib.sha256(spki).hexdigest()
    assert "swtpm-localca" in claims["ek_cert_issuer"]
    assert TPM.name in ready_tees(trust) and TPM.name not in ready_tees(TrustConfig())
    assert tee_named(TPM.name) is TPM


def test_the_ak_is_stable_and_an_extended_pcr_shows(swtpm: Swtpm, evidence: dict[str, Any],
                                                     trust: TrustConfig) -> None:
    import tpm2_pytss as tss

    with tss.ESAPI(swtpm.tcti) as ctx:
        ctx.pcr_extend(tss.ESYS_TR.PCR9, tss.TPML_DIGEST_VALUES([tss.TPMT_HA(
            hashAlg=tss.TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=hashlib.sha256(b"app").digest()))]))
    after = TpmAttester(swtpm.tcti, pcrs=(7, 9)).evidence(RD)
    claims = _verify(after, trust)
    assert after["ak_pubkey"] == evidence["ak_pubkey"]
    assert set(claims["pcrs"]) == {"7", "9"} and claims["pcrs"]["9"] != "00" * 32


def test_report_data_binding(evidence: dict[str, Any], trust: TrustConfig) -> None:
    with pytest.raises(ReportDataMismatch):
        _verify(evidence, trust, report_data=hashlib.sha384(b"other session").digest())


def test_ek_chain_must_reach_the_configured_ca(evidence: dict[str, Any], trust: TrustConfig) -> None:
    with pytest.raises(CertificateChainError, match="no TPM EK CA"):
        _verify(evidence, TrustConfig())
    # a CA of the same name but another key: the EK certificate's signature does not verify
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.load_pem_x509_certificate(evidence["ek_cert"].encode()).issuer
    impostor = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(dt.datetime(2020, 1, 1))
                .not_valid_after(dt.datetime(2100, 1, 1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
    with pytest.raises(CertificateChainError, match="not signed by its issuer"):
        _verify(evidence, TrustConfig(tpm_ek_cas=(impostor,)))
    root_only = TrustConfig(tpm_ek_cas=(trust.tpm_ek_cas[0],))  # the bundle holds root, then issuer
    with pytest.raises(CertificateChainError, match="not a configured"):
        _verify(evidence, root_only)
    with pytest.raises(CertificateChainError, match="not valid"):
        _verify(evidence, trust, now=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    with pytest.raises(CertificateChainError, match="no EK certificate"):
        _verify({**evidence, "ek_cert": None}, trust)


def test_another_ak_and_changed_pcr_values_are_refused(evidence: dict[str, Any], trust: TrustConfig) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(SignatureError, match="not signed by the AK"):
        _verify({**evidence, "ak_pubkey": other}, trust)
    forged = copy.deepcopy(evidence)
    forged["quote"]["SHA256"]["pcrs"][7] = "ab" * 32
    with pytest.raises(SignatureError, match="PCR digest"):
        _verify(forged, trust)
    forged["quote"]["SHA256"]["pcrs"] = forged["quote"]["SHA256"]["pcrs"][:7]
    with pytest.raises(MalformedTpmEvidence, match="8 quoted PCR values"):
        _verify(forged, trust)


@pytest.mark.parametrize("field", ["attest_body", "attest_sig"])
def test_every_single_bit_flip_of_the_signed_quote_is_refused(
        field: str, evidence: dict[str, Any], trust: TrustConfig) -> None:
    raw = base64.b64decode(evidence["quote"]["SHA256"][field])
    refused = 0
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        mutated = copy.deepcopy(evidence)
        mutated["quote"]["SHA256"][field] = base64.b64encode(bytes(flipped)).decode()
        with pytest.raises(VerificationError) as refusal:
            _verify(mutated, trust)
        assert "\n" not in str(refusal.value)
        refused += 1
    assert refused == len(raw) * 8 >= 8 * 100


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(extra=1), "unknown fields"),
    (lambda e: e.update(quote={}), "exactly the SHA256 bank"),
    (lambda e: e["quote"].update(SHA1=e["quote"]["SHA256"]), "exactly the SHA256 bank"),
    (lambda e: e["quote"]["SHA256"].update(attest_sig="%%%"), "not base64"),
    (lambda e: e["quote"]["SHA256"].update(pcrs="00"), "quoted PCR values"),
    (lambda e: e.update(ak_pubkey="nope"), "not a PEM public key"),
    (lambda e: e.update(ek_cert="nope"), "not a PEM certificate"),
])
def test_malformed_evidence_is_one_typed_line(mutate: Any, message: str, evidence: dict[str, Any],
                                              trust: TrustConfig) -> None:
    bad = copy.deepcopy(evidence)
    mutate(bad)
    with pytest.raises(InclavareError, match=message) as refusal:
        _verify(bad, trust)
    assert "\n" not in str(refusal.value)


def test_attester_configuration_errors(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        TpmAttester("")
    with pytest.raises(ConfigError):
        TpmAttester("device:/dev/tpmrm0", pcrs=(1, 1))
    with pytest.raises(ConfigError):
        TpmAttester("device:/dev/tpmrm0", pcrs=(24,))
    missing = os.path.join(str(tmp_path), "no-tpm")
    with pytest.raises(TpmUnavailable, match="cannot open the TPM") as refusal:
        TpmAttester(f"device:{missing}").evidence(RD)
    assert "\n" not in str(refusal.value)
