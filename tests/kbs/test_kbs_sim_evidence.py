"""SGX evidence through the real verifier: simulated-TEE quotes end to end against a real server,
and the real Intel-root / AMD paths in process with the public test vectors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

import pytest
from kbs_harness import SampleSession, error_type

from inclavare.crypto.b64 import b64url_decode
from inclavare.errors import KbsError, ReportDataMismatch, VerificationError
from inclavare.services.kbs.config import AttestationConfig
from inclavare.services.kbs.hardware_verifier import build_hardware_verifier
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.sim_sgx import SimSgxAttester

TESTDATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "testdata")
MR_ENCLAVE = bytes.fromhex("6f" * 32)
SIM_CONFIG = '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\ninsecure_sim_collateral = "sim/collateral.json"\n'


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> SimAuthority:
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim-authority")))


def _exported(authority: SimAuthority, directory: str) -> None:
    authority.export(os.path.join(directory, "sim"))


def _attester(authority: SimAuthority, mr_enclave: bytes = MR_ENCLAVE) -> SimSgxAttester:
    return SimSgxAttester(authority, mr_enclave)


def _allow_sim_measurement(mr_hex: str) -> str:
    return ('package policy\nimport rego.v1\ndefault allow := false\n'
            'allow if {\n  data.plugin == "resource"\n'
            '  ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            '  ev.simulated == true\n'
            f'  ev.sgx.mr_enclave == "{mr_hex}"\n}}\n')


def _claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def test_sim_quotes_accepted_with_sim_anchor_and_marked_simulated(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    log = server.stderr()
    assert "WARNING" in log and "SIMULATED" in log and "NOT a TEE" in log
    with KbsClient(server.url, _attester(authority)) as client:
        token = client.get_token()
    ev = _claims(token)["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert ev["simulated"] is True and ev["sgx"]["simulated"] is True
    assert ev["sgx"]["mr_enclave"] == MR_ENCLAVE.hex() and ev["sgx"]["tcb_status"] == "UpToDate"
    assert ev["report_data"] == ev["sgx"]["report_data"]


def test_sim_quotes_denied_by_default_resource_policy(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    assert server.admin("POST", "/resource/default/key/1", b"sim secret").status_code == 200
    with pytest.raises(KbsError) as info:
        KbsClient(server.url, _attester(authority)).get_resource("kbs:///default/key/1")
    assert (info.value.kind, info.value.status) == ("PolicyDeny", 401)


def test_sim_quotes_accepted_by_policy_allowing_the_measurement(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    assert server.admin("POST", "/resource/default/key/1", b"sim secret").status_code == 200
    server.set_resource_policy(_allow_sim_measurement(MR_ENCLAVE.hex()))
    with KbsClient(server.url, _attester(authority)) as client:
        assert client.get_resource("kbs:///default/key/1") == b"sim secret"
    with pytest.raises(KbsError) as info:  # another enclave on the same simulated platform
        KbsClient(server.url, _attester(authority, bytes(32))).get_resource("kbs:///default/key/1")
    assert info.value.kind == "PolicyDeny"


def test_sim_quotes_rejected_without_sim_anchor(make_kbs, authority, tmp_path) -> None:
    server = make_kbs(sample=False)
    r = SampleSession(server.url, tee="sgx").auth()
    assert r.status_code == 401 and "nothing is configured to verify sgx" in r.json()["detail"]
    assert "SIMULATED" not in server.stderr()


def test_sim_quotes_of_another_installation_rejected(make_kbs, authority, tmp_path) -> None:
    other = SimAuthority.load_or_create(str(tmp_path / "other-authority"))
    _exported(other, str(tmp_path))  # the server trusts a different simulated root
    server = make_kbs(SIM_CONFIG, sample=False)
    with pytest.raises(KbsError) as info:
        KbsClient(server.url, _attester(authority)).get_token()
    assert info.value.kind == "AttestationError" and "simulated root" in str(info.value)


def test_tampered_or_misbound_sim_quotes_rejected(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    s = SampleSession(server.url, tee="sgx")
    s.auth()
    good = authority.quote(MR_ENCLAVE, s.report_data().ljust(64, b"\0"))
    flipped = bytearray(good)
    flipped[120] ^= 1  # inside MRENCLAVE, covered by the quote signature
    other_rd = authority.quote(MR_ENCLAVE, os.urandom(64))
    for quote in (bytes(flipped), other_rd, good[:400], b"garbage"):
        r = s.attest(s.attestation({"quote": base64.b64encode(quote).decode()}))
        assert r.status_code == 401 and error_type(r) == "AttestationError"
    assert s.attest(s.attestation({"quote": base64.b64encode(good).decode()})).status_code == 200


def test_init_data_must_match_sgx_config_id(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    s = SampleSession(server.url, tee="sgx")
    s.auth()
    doc = s.attestation({"quote": base64.b64encode(authority.quote(MR_ENCLAVE, s.report_data().ljust(64, b"\0"))).decode()})
    doc["init-data"] = {"format": "toml", "body": 'algorithm = "sha384"\nversion = "0.1.0"\n'}
    r = s.attest(doc)  # the simulated enclave's CONFIGID is zero, so it does not carry this digest
    assert r.status_code == 401 and "config_id" in r.json()["detail"]


# --- real roots, in process (public vectors; time pinned inside the collateral window) -----------


def _vector(*parts: str) -> str:
    path = os.path.join(TESTDATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared test vectors not present at {os.path.normpath(TESTDATA)}")
    return path


def test_real_sgx_quote_through_the_intel_root_path() -> None:
    quote = open(_vector("dcap", "sgx_quote"), "rb").read()
    verify = build_hardware_verifier(AttestationConfig(sgx_collateral=_vector("dcap", "sgx_quote_collateral.json")))
    assert verify is not None
    at = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
    report_data = quote[368:432]
    evidence = {"quote": base64.b64encode(quote).decode()}
    claims, simulated = verify("sgx", evidence, report_data, at)
    assert simulated is False and "simulated" not in claims
    assert claims["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert claims["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    with pytest.raises(ReportDataMismatch):
        verify("sgx", evidence, os.urandom(48), at)
    with pytest.raises(VerificationError):  # collateral expired today
        verify("sgx", evidence, report_data, dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc))


def test_real_quote_is_not_accepted_through_the_sim_root(authority, tmp_path) -> None:
    quote = open(_vector("dcap", "sgx_quote"), "rb").read()
    authority.export(str(tmp_path))
    verify = build_hardware_verifier(AttestationConfig(
        insecure_sim_trust_anchor=str(tmp_path / "root-ca.pem"), insecure_sim_collateral=str(tmp_path / "collateral.json")))
    assert verify is not None
    with pytest.raises(VerificationError):
        verify("sgx", {"quote": base64.b64encode(quote).decode()}, quote[368:432],
               dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc))


def test_real_snp_report_through_the_amd_path() -> None:
    report = open(_vector("snp", "attestation.bin"), "rb").read()
    verify = build_hardware_verifier(AttestationConfig(
        amd_ask_ark=(_vector("snp", "ask_ark_milan.pem"),), amd_vceks=(_vector("snp", "vcek.testcer"),)))
    assert verify is not None
    evidence = {"attestation_report": base64.b64encode(report).decode()}
    claims, simulated = verify("snp", evidence, bytes([1, 2, 3, 4, 5]), dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc))
    assert simulated is False and claims["tcb_status"] == "Verified" and len(claims["measurement"]) == 96
    with pytest.raises(ReportDataMismatch):
        verify("snp", evidence, bytes(48), dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc))


def test_reference_values_make_sim_sgx_affirming(make_kbs, authority, tmp_path) -> None:
    from inclavare.policy.reference_values import build_message

    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    with KbsClient(server.url, _attester(authority)) as client:
        cpu0 = _claims(client.get_token())["submods"]["cpu0"]
    assert cpu0["ear.status"] == "warning"  # platform fine, measurement unknown
    signer = cpu0["ear.veraison.annotated-evidence"]["sgx"]["mr_signer"]
    rvs = build_message({"mr_enclave": [MR_ENCLAVE.hex()], "mr_signer": [signer]})
    assert server.admin("POST", "/reference-value", rvs).status_code == 200
    with KbsClient(server.url, _attester(authority)) as client:
        cpu0 = _claims(client.get_token())["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming" and cpu0["ear.trustworthiness-vector"]["executables"] == 3


def test_sim_warning_is_logged_at_every_start(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    for _ in range(2):
        server = make_kbs(SIM_CONFIG, sample=False, directory=str(tmp_path))
        assert "SIMULATED" in server.stderr() and "NOT a TEE" in server.stderr()
        server.stop()


def test_explain_replays_the_brokers_decision(make_kbs, authority, tmp_path) -> None:
    """`inclavare explain` says why a real broker denied a resource, from the token it issued and
    from the evidence itself with the same reference values: the same trust vector either way."""
    import subprocess
    import sys

    from inclavare.policy.reference_values import build_message

    _exported(authority, str(tmp_path))
    server = make_kbs(SIM_CONFIG, sample=False)
    from inclavare.formats.quote import parse_quote

    signer = parse_quote(authority.quote(MR_ENCLAVE, b"")).report.mr_signer.hex()  # the sim enclave's MRSIGNER
    values = {"mr_enclave": [MR_ENCLAVE.hex()], "mr_signer": [signer]}
    assert server.admin("POST", "/reference-value", build_message(values)).status_code == 200
    assert server.admin("POST", "/resource/default/key/1", b"sim secret").status_code == 200
    with KbsClient(server.url, _attester(authority)) as client:
        token = client.get_token()
        with pytest.raises(KbsError) as denied:
            client.get_resource("kbs:///default/key/1")
    assert denied.value.kind == "PolicyDeny"
    # the denial says which measurement was presented, and names its decision in the broker's log
    import re as _re

    decision = _re.search(r"decision ([0-9a-f]{12})", str(denied.value))
    assert decision and MR_ENCLAVE.hex() in str(denied.value) and "SIMULATED" in str(denied.value)
    log = server.stderr()
    assert f"resource default/key/1 denied to sgx measurement {MR_ENCLAVE.hex()} (SIMULATED) " \
           f"(decision {decision[1]})" in log
    assert f"measurement {MR_ENCLAVE.hex()}, TCB UpToDate: appraisal" in log  # the attestation, one line
    (tmp_path / "token.jwt").write_text(token)
    (tmp_path / "rv.json").write_text(json.dumps(values))
    (tmp_path / "quote.bin").write_bytes(authority.quote(MR_ENCLAVE, b"explain"))
    inclavare = os.path.join(os.path.dirname(sys.executable), "inclavare")

    def explain(*args: str) -> dict:
        r = subprocess.run([inclavare, "explain", "--json", "--reference-values", str(tmp_path / "rv.json"), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    from_token = explain("--token", str(tmp_path / "token.jwt"))
    from_evidence = explain("--evidence", str(tmp_path / "quote.bin"), "--collateral",
                            str(tmp_path / "sim" / "collateral.json"), "--trust-anchor", str(tmp_path / "sim" / "root-ca.pem"))
    for trace in (from_token, from_evidence):
        assert trace["simulated"] is True and trace["resource"]["allowed"] is False
        assert any("SIMULATED" in r for r in trace["resource"]["reasons"])
        assert all(rv["match"] for rv in trace["reference_values"])
        assert trace["trust_vector"]["executables"]["value"] == 3  # the reference values match
    assert from_token["trust_vector"] == from_evidence["trust_vector"]
    server.set_resource_policy(_allow_sim_measurement(MR_ENCLAVE.hex()))
    (tmp_path / "allow.rego").write_text(_allow_sim_measurement(MR_ENCLAVE.hex()))
    allowed = explain("--token", str(tmp_path / "token.jwt"), "--resource-policy", str(tmp_path / "allow.rego"))
    assert allowed["resource"]["allowed"] is True
    with KbsClient(server.url, _attester(authority)) as client:
        assert client.get_resource("kbs:///default/key/1") == b"sim secret"  # the broker agrees


def test_decisions_are_json_events_with_log_format_json(make_kbs, authority, tmp_path) -> None:
    _exported(authority, str(tmp_path))
    server = make_kbs('log_format = "json"\n' + SIM_CONFIG, sample=False)
    server.set_resource_policy(_allow_sim_measurement(MR_ENCLAVE.hex()))
    assert server.admin("POST", "/resource/default/key/1", b"sim secret").status_code == 200
    with KbsClient(server.url, _attester(authority)) as client:
        assert client.get_resource("kbs:///default/key/1") == b"sim secret"
    lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    events = {doc.get("event"): doc for doc in lines}
    assert {"attest", "release"} <= set(events), lines
    release = events["release"]
    assert release["resource"] == "default/key/1" and release["measurement"] == MR_ENCLAVE.hex()
    assert release["simulated"] is True and release["verdict"] == "released" and release["decision_id"]
    assert events["attest"]["trust_vector"]["hardware"] == 2 and events["attest"]["component"] == "kbs"


def test_explain_a_denial_by_its_decision_id(make_kbs, authority, tmp_path) -> None:
    """The PolicyDeny answer names a decision; the broker's JSON log holds its claims (not the
    token), and `inclavare explain --decision ID --log FILE` replays it."""
    import re as _re
    import subprocess
    import sys

    _exported(authority, str(tmp_path))
    server = make_kbs('log_format = "json"\n' + SIM_CONFIG, sample=False)
    assert server.admin("POST", "/resource/default/key/1", b"sim secret").status_code == 200
    with KbsClient(server.url, _attester(authority)) as client:
        token = client.get_token()
        with pytest.raises(KbsError) as denied:
            client.get_resource("kbs:///default/key/1")
    decision = _re.search(r"decision ([0-9a-f]{12})", str(denied.value))[1]
    assert token not in server.stderr()  # a bearer credential never reaches the log
    deny = next(json.loads(line) for line in server.stderr().splitlines()
                if line.startswith("{") and json.loads(line).get("decision_id") == decision)
    assert deny["event"] == "deny" and deny["policy"] == "default" and len(deny["claims_digest"]) == 64
    assert any("SIMULATED" in reason for reason in deny["reasons"])  # which condition of the policy failed
    inclavare = os.path.join(os.path.dirname(sys.executable), "inclavare")
    r = subprocess.run([inclavare, "explain", "--decision", decision, "--log", server.stderr_path, "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    trace = json.loads(r.stdout)
    assert trace["decision_id"] == decision and trace["resource"] == {
        "path": "default/key/1", "allowed": False, "reasons": trace["resource"]["reasons"]}
    assert any("SIMULATED" in reason for reason in trace["resource"]["reasons"])
    missing = subprocess.run([inclavare, "explain", "--decision", "000000000000", "--log", server.stderr_path],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "is not in" in missing.stderr
