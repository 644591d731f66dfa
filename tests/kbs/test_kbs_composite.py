"""Composite evidence end to end: one KBS attest carries simulated SGX evidence (primary) and a
real swtpm's TPM quote (Trustee's ``additional_evidence``), and yields one EAR token with a
submodule per TEE; a resource policy requiring both releases the secret only while the TPM's PCR
matches its reference value and only when the TPM evidence is there."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest

from inclavare.crypto.b64 import b64url_decode
from inclavare.errors import ConfigError, KbsError
from inclavare.policy.reference_values import build_message
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.composite import CompositeAttester
from inclavare.tee.registry import SGX, TPM
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.sim_sgx import SimSgxAttester
from inclavare.tee.tpm import TpmAttester
from tests.support.swtpm import Swtpm, swtpm_for_module

MR_ENCLAVE = hashlib.sha256(b"the enclave").digest()
SECRET = "kbs:///default/key/both"
CONFIG = ('[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
          'insecure_sim_collateral = "sim/collateral.json"\ntpm_ek_ca = ["ek-ca.pem"]\n')
BOTH = ('package policy\nimport rego.v1\ndefault allow := false\n'
        'allow if {\n  data.plugin == "resource"\n'
        '  cpu := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
        f'  cpu.{SGX.name}.mr_enclave == "{MR_ENCLAVE.hex()}"\n'
        f'  input.submods.cpu1["ear.veraison.annotated-evidence"].{TPM.name}\n'
        '  input.submods.cpu1["ear.trustworthiness-vector"].executables == 3\n'
        '  input.submods.cpu1["ear.trustworthiness-vector"].hardware == 2\n}\n')


swtpm = pytest.fixture(scope="module", name="swtpm")(swtpm_for_module)


@pytest.fixture(scope="module")
def intel(tmp_path_factory: pytest.TempPathFactory) -> SimAuthority:
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim-authority")))


class Rebound:
    """A TPM attester that quotes the wrong report data (evidence of another session)."""

    tee = TPM

    def __init__(self, inner: TpmAttester) -> None:
        self.inner = inner

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return self.inner.evidence(hashlib.sha384(b"another session").digest())


def _submods(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return dict(claims["submods"])


def _extend_pcr9(swtpm: Swtpm) -> None:
    import tpm2_pytss as tss

    with tss.ESAPI(swtpm.tcti) as ctx:
        ctx.pcr_extend(tss.ESYS_TR.PCR9, tss.TPML_DIGEST_VALUES([tss.TPMT_HA(
            hashAlg=tss.TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=hashlib.sha256(b"changed").digest()))]))


def test_sgx_plus_tpm_fetches_a_secret_only_with_both(make_kbs: Any, intel: SimAuthority, swtpm: Swtpm,
                                                      tmp_path: Any) -> None:
    intel.export(os.path.join(tmp_path, "sim"))
    swtpm.ek_cas_bundle(os.path.join(tmp_path, "ek-ca.pem"))
    server = make_kbs(CONFIG, sample=False)
    tpm = TpmAttester(swtpm.tcti, pcrs=(0, 7, 9))
    sgx = SimSgxAttester(intel, MR_ENCLAVE)
    probe = tpm.evidence(b"")  # what the operator enrols: the AK and the PCR values
    from cryptography.hazmat.primitives import serialization

    spki = serialization.load_pem_public_key(probe["ak_pubkey"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    reference = {"tpm_trusted_ak": [hashlib.sha256(spki).hexdigest()],
                 "tpm_pcr9": [probe["quote"]["SHA256"]["pcrs"][2]]}
    assert server.admin("POST", "/reference-value", build_message(reference)).status_code == 200
    assert server.admin("POST", "/resource/default/key/both", b"needs both").status_code == 200
    server.set_resource_policy(BOTH)

    with KbsClient(server.url, CompositeAttester(sgx, [tpm])) as client:
        token = client.get_token()
        assert client.get_resource(SECRET) == b"needs both"
    submods = _submods(token)
    assert set(submods) == {"cpu0", "cpu1"}
    cpu, device = (submods[n]["ear.veraison.annotated-evidence"] for n in ("cpu0", "cpu1"))
    assert cpu[SGX.name]["mr_enclave"] == MR_ENCLAVE.hex() and cpu["simulated"] is True
    assert device[TPM.name]["pcrs"]["9"] == reference["tpm_pcr9"][0] and "simulated" not in device
    # each binds its own report data: the device's omits the additional evidence it is part of
    assert "additional-evidence" in cpu["runtime_data_claims"]
    assert "additional-evidence" not in device["runtime_data_claims"]
    assert submods["cpu1"]["ear.trustworthiness-vector"]["executables"] == 3

    def denied(attester: Any) -> KbsError:
        with KbsClient(server.url, attester) as client, pytest.raises(KbsError) as refusal:
            client.get_resource(SECRET)
        return refusal.value

    missing = denied(sgx)  # no TPM evidence: no cpu1 submodule
    assert (missing.kind, missing.status) == ("PolicyDeny", 401)
    replayed = denied(CompositeAttester(sgx, [Rebound(tpm)]))
    assert replayed.kind == "AttestationError" and "report data" in str(replayed)
    _extend_pcr9(swtpm)  # the TPM's PCR 9 no longer matches its reference value
    changed = denied(CompositeAttester(sgx, [tpm]))
    assert (changed.kind, changed.status) == ("PolicyDeny", 401)


def test_composite_attester_configuration(intel: SimAuthority) -> None:
    sgx = SimSgxAttester(intel, MR_ENCLAVE)
    with pytest.raises(ConfigError):
        CompositeAttester(sgx, [])
    with pytest.raises(ConfigError):
        CompositeAttester(sgx, [sgx])


@pytest.mark.parametrize("additional, message", [
    ("not json", "additional_evidence"),
    ("[1]", "JSON object {tee: evidence}"),
    ('{"a": 1, "a": 2}', "duplicate"),
    (json.dumps({f"t{i}": {} for i in range(5)}), "more than 4"),
    (json.dumps({"snp": {}}), "additional evidence: nothing is configured to verify snp"),
    (json.dumps({"gpu-of-mars": {}}), "additional evidence: TEE 'gpu-of-mars' is not supported"),
])
def test_bad_additional_evidence_is_one_line(kbs: Any, additional: str, message: str) -> None:
    from inclavare.services.kbs.protocol import runtime_data, runtime_data_digest
    from tests.kbs.kbs_harness import SampleSession, sample_evidence

    session = SampleSession(kbs.url)
    try:
        assert session.auth().status_code == 200
        doc = session.attestation(sample_evidence(runtime_data_digest(
            runtime_data(session.pub, session.nonce, additional), session.tee)))
        doc["tee-evidence"]["additional_evidence"] = additional
        answer = session.attest(doc)
        assert answer.status_code == 401, answer.text
        assert message in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    finally:
        session.close()
