"""Simulated TDX and SEV-SNP evidence end to end against a real key broker: accepted only with
the simulated roots opted in (fail closed otherwise), marked simulated, and a secret released
only to the measurement the resource policy names."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from inclavare.crypto.b64 import b64url_decode
from inclavare.errors import KbsError
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.registry import Attester
from inclavare.tee.sim_amd import SimAmdAuthority
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.sim_snp import SimSnpAttester
from inclavare.tee.sim_tdx import SimTdxAttester

MEASUREMENT = hashlib.sha384(b"the measured image").digest()
CHANGED = hashlib.sha384(b"the image, changed").digest()
TDX_CONFIG = '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\ninsecure_sim_collateral = "sim"\n'
SGX_ONLY_CONFIG = ('[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
                   'insecure_sim_collateral = "sim/collateral.json"\n')
SNP_CONFIG = '[attestation]\ninsecure_sim_amd_ask_ark = "amd/ask_ark.pem"\n'


@pytest.fixture(scope="module")
def intel(tmp_path_factory: pytest.TempPathFactory) -> SimAuthority:
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim-authority")))


@pytest.fixture(scope="module")
def amd(tmp_path_factory: pytest.TempPathFactory) -> SimAmdAuthority:
    return SimAmdAuthority.load_or_create(str(tmp_path_factory.mktemp("amd-authority")))


def _policy(tee: str, field: str, value: str) -> str:
    return ('package policy\nimport rego.v1\ndefault allow := false\n'
            'allow if {\n  data.plugin == "resource"\n'
            '  ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'  ev.simulated == true\n  ev.{tee}.{field} == "{value}"\n}}\n')


def _annotated(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    evidence: dict[str, Any] = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    return evidence


def _secret_only_for_the_measurement(server: Any, attester: Callable[[bytes], Attester], field: str) -> None:
    assert server.admin("POST", "/resource/default/key/1", b"td secret").status_code == 200
    tee = attester(MEASUREMENT).tee.name
    server.set_resource_policy(_policy(tee, field, MEASUREMENT.hex()))
    with KbsClient(server.url, attester(MEASUREMENT)) as client:
        token = client.get_token()
        assert client.get_resource("kbs:///default/key/1") == b"td secret"
    evidence = _annotated(token)
    assert evidence["simulated"] is True and evidence[tee]["simulated"] is True
    assert evidence[tee][field] == MEASUREMENT.hex()
    with pytest.raises(KbsError) as info:
        KbsClient(server.url, attester(CHANGED)).get_resource("kbs:///default/key/1")
    assert (info.value.kind, info.value.status) == ("PolicyDeny", 401)


def test_sim_tdx_fetches_a_secret(make_kbs: Any, intel: SimAuthority, tmp_path: Any) -> None:
    intel.export(os.path.join(tmp_path, "sim"))
    server = make_kbs(TDX_CONFIG, sample=False)
    _secret_only_for_the_measurement(server, lambda mr: SimTdxAttester(intel, mr), "mr_td")


def test_sim_snp_fetches_a_secret(make_kbs: Any, amd: SimAmdAuthority, tmp_path: Any) -> None:
    amd.export(os.path.join(tmp_path, "amd"))
    server = make_kbs(SNP_CONFIG, sample=False)
    assert "insecure_sim_amd_ask_ark" in server.stderr() and "SIMULATED" in server.stderr()
    _secret_only_for_the_measurement(server, lambda m: SimSnpAttester(amd, m), "measurement")


def test_fail_closed_without_the_opt_in(make_kbs: Any, intel: SimAuthority, amd: SimAmdAuthority,
                                        tmp_path: Any) -> None:
    """The SGX-only simulated configuration accepts no TD quote (no TDX collateral), and nothing
    accepts simulated SNP reports unless insecure_sim_amd_ask_ark names the simulated chain."""
    intel.export(os.path.join(tmp_path, "sim"))
    amd.export(os.path.join(tmp_path, "amd"))
    server = make_kbs(SGX_ONLY_CONFIG, sample=False)
    expected = {"tdx": "no collateral configured for TDX", "snp": "nothing is configured to verify snp"}
    for attester in (SimTdxAttester(intel, MEASUREMENT), SimSnpAttester(amd, MEASUREMENT)):
        with pytest.raises(KbsError) as info:
            KbsClient(server.url, attester).get_token()
        assert (info.value.kind, info.value.status) == ("AttestationError", 401)
        assert expected[attester.tee.name] in str(info.value)
