"""A workload's own evidence buys its secrets: the agent runs the KBS protocol for it.

`attest token` / `attest resource` inside busybox-only sim enclave containers, against a real
key broker process trusting the simulated root (explicitly) with a measurement policy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.tee.sim_authority import SimAuthority
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root

ATTEST = "/run/inclavare/bin/attest"
SIM = {"enclave.type": "sim"}


@pytest.fixture(scope="module")
def kbs_and_agent(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[tuple[KbsProcess, AgentProcess]]:
    work = tmp_path_factory.mktemp("workload-kbs")
    kbs_dir = work / "kbs"
    kbs_dir.mkdir()
    agent = AgentProcess(work / "agent-home")
    (work / "agent-home").mkdir()
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(kbs_dir / "sim"))
    key = write_admin_keys(str(kbs_dir))
    kbs = KbsProcess(str(kbs_dir), config_text("sqlite:///kbs.db", sample=False, extra=(
        '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
        'insecure_sim_collateral = "sim/collateral.json"\n')), key).start()
    agent.kbs_url = kbs.url
    agent.start()
    try:
        yield kbs, agent
    finally:
        agent.stop()
        kbs.stop()


@pytest.fixture
def rune_k(kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_bin: str, runc_root: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Rune:
    for k, v in kbs_and_agent[1].env.items():
        monkeypatch.setenv(k, v)
    return Rune(rune_bin, runc_root, tmp_path)


def test_token_and_resource_released_to_the_measured_container_only(
        kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_k: Rune, bundle_factory: BundleFactory) -> None:
    kbs, agent = kbs_and_agent
    good = bundle_factory([ATTEST, "resource", "kbs:///tenant/key/app"], annotations=SIM)
    other = bundle_factory([ATTEST, "resource", "kbs:///tenant/key/app"], annotations={**SIM, "enclave.runtime.args": "x"})
    mr = measure(good, agent.env)
    assert kbs.admin("POST", "/resource/tenant/key/app", b"s3cret-bytes\x00\xff").status_code == 200
    kbs.set_resource_policy(
        'package policy\nimport rego.v1\ndefault allow := false\n'
        'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
        f'allow if {{ data.plugin == "resource"; ev.simulated == true; ev.sgx.mr_enclave == "{mr}" }}\n')

    import subprocess

    raw = subprocess.run([rune_k.binary, "--root", rune_k.root, "run", "--bundle", good, "kbs-good"],
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (raw.returncode, raw.stdout) == (0, b"s3cret-bytes\x00\xff"), raw.stderr  # binary-safe
    r = rune_k("run", "--bundle", other, "kbs-other")  # another measurement
    assert r.returncode == 1 and "PolicyDeny" in r.stderr and r.stdout == ""

    t = rune_k("run", "--bundle", bundle_factory([ATTEST, "token"], annotations=SIM), "kbs-token")
    assert t.returncode == 0, t.stderr
    token = json.loads(t.stdout)["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["simulated"] is True and "sgx" in evidence
    assert claims["iss"] == "CoCo-Attestation-Service"


def test_without_a_key_broker_the_answer_says_so(rune: Rune, bundle_factory: BundleFactory) -> None:
    r = rune("run", "--bundle", bundle_factory([ATTEST, "resource", "kbs:///a/b/c"], annotations=SIM), "nokbs")
    assert r.returncode == 1
    assert "no key broker is configured" in r.stderr


def test_bad_resource_uris_are_refused_in_the_container(rune: Rune, bundle_factory: BundleFactory) -> None:
    for uri in ("http://x/a/b/c", "kbs:///a/b", "kbs:///a/../c", "kbs:///a/b/c/d"):
        r = rune("run", "--bundle", bundle_factory([ATTEST, "resource", uri], annotations=SIM), "baduri")
        assert r.returncode == 2 and "kbs:///REPO/TYPE/TAG" in r.stderr, uri
