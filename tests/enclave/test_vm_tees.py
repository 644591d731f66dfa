"""Simulated TDX and SEV-SNP enclave containers end to end (issue 12, items 2-3).

``enclave.type=tdx|snp`` with ``enclave.runtime.path=sim``: real runc runs a busybox container
whose enclave agent attests with the TEE the node agent's simulated platform quotes for (a TD
quote with MRTD = the container's measurement, an SNP report with MEASUREMENT = it), fetches a
secret from a real key broker on loopback whose policy requires that TEE's measurement, and a
changed container is refused. The evidence verifies with ``inclavare verify`` under the sim roots.
"""

from __future__ import annotations

import json
import re
import time
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.tee.registry import SNP, TDX, Tee
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure, rune_with
from tests.kbs.kbs_harness import KbsProcess
from tests.support.agent import AgentProcess
from tests.support.enclave_kbs import agent_and_kbs

pytestmark = pytest.mark.root

ATTEST = "/run/inclavare/bin/attest"
FIELD = {TDX.name: "mr_td", SNP.name: "measurement"}


def annotations(tee: Tee, **extra: str) -> dict[str, str]:
    return {"enclave.type": tee.name, "enclave.runtime.path": "sim", **extra}


@pytest.fixture(scope="module")
def vm_kbs(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[tuple[KbsProcess, AgentProcess]]:
    """A node agent (its simulated Intel and AMD authorities exported) and a key broker that
    trusts the simulated roots explicitly."""
    with agent_and_kbs(tmp_path_factory.mktemp("vm-tees"), amd=True, attestation=(
            'insecure_sim_trust_anchor = "sim/root-ca.pem"\ninsecure_sim_collateral = "sim"\n'
            'insecure_sim_amd_ask_ark = "amd/ask_ark.pem"\n')) as both:
        yield both


@pytest.fixture
def vm_rune(vm_kbs: tuple[KbsProcess, AgentProcess], monkeypatch: pytest.MonkeyPatch, rune_bin: str, runc_root: str,
            tmp_path: Path) -> Rune:
    return rune_with(vm_kbs[1], monkeypatch, rune_bin, runc_root, tmp_path)


def policy(tee: Tee, value: str) -> str:
    return ('package policy\nimport rego.v1\ndefault allow := false\n'
            'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'allow if {{ data.plugin == "resource"; ev.simulated == true; ev.{tee.name}.{FIELD[tee.name]} == "{value}" }}\n')


@pytest.mark.parametrize("tee", [TDX, SNP], ids=lambda t: t.name)
def test_secret_released_to_the_measured_vm_tee_container_only(
        tee: Tee, vm_kbs: tuple[KbsProcess, AgentProcess], vm_rune: Rune, bundle_factory: BundleFactory,
        tmp_path: Path) -> None:
    kbs, agent = vm_kbs
    path = f"tenant/{tee.name}/key"
    command = [ATTEST, "resource", f"kbs:///{path}"]
    good = bundle_factory(command, annotations=annotations(tee))
    changed = bundle_factory(command, annotations=annotations(tee, **{"enclave.runtime.args": "x"}))
    mr = measure(good, agent.env)
    secret = f"{tee.name} secret".encode() + b"\x00\xff"
    assert kbs.admin("POST", f"/resource/{path}", secret).status_code == 200
    kbs.set_resource_policy(policy(tee, mr + "00" * 16))  # the 32-byte measurement in a 48-byte register

    r = subprocess.run([vm_rune.binary, "--root", vm_rune.root, "run", "--bundle", good, f"{tee.name}-good"],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (r.returncode, r.stdout) == (0, secret), r.stderr
    r2 = vm_rune("run", "--bundle", changed, f"{tee.name}-changed")
    assert r2.returncode == 1 and "PolicyDeny" in r2.stderr and r2.stdout == "", r2.stderr

    # the same TEE's evidence, straight from the enclave agent, verifies offline under the sim roots
    asker = bundle_factory([ATTEST, "evidence", "--runtime-data", "hello"], annotations=annotations(tee))
    ev = vm_rune("run", "--bundle", asker, f"{tee.name}-evidence")
    assert ev.returncode == 0, ev.stderr
    evidence = tmp_path / "evidence.json"
    evidence.write_text(ev.stdout)
    sim = Path(kbs.directory)
    trust = (["--trust-anchor", str(sim / "sim" / "root-ca.pem"), "--collateral", str(sim / "sim" / "tdx-collateral.json")]
             if tee == TDX else ["--ca", str(sim / "amd" / "ask_ark.pem")])  # SNP: the VCEK comes in cert_chain
    v = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "verify", "--json", *trust, str(evidence)],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    verdict = json.loads(v.stdout)
    assert verdict["tee"] == tee.name and verdict["simulated"] is True, verdict
    assert verdict["claims"][FIELD[tee.name]] == measure(asker, agent.env) + "00" * 16
    listed = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "agent", "ls", "--socket", agent.socket],
                            capture_output=True, text=True, timeout=30)
    assert re.search(rf"^{tee.name}-evidence +{tee.name} \(SIMULATED\) ", listed.stdout, re.M), listed.stdout
    assert verdict["claims"]["report_data"] == b"hello".hex() + "00" * 59


def test_hardware_vm_types_fail_closed_without_the_sim_runtime(vm_rune: Rune, bundle_factory: BundleFactory) -> None:
    for tee in (TDX, SNP):
        none = vm_rune("run", "--bundle", bundle_factory(["/bin/true"], annotations={"enclave.type": tee.name}), "hw1")
        assert none.returncode != 0 and "enclave runtime path is not configured" in none.stderr, none.stderr
        other = vm_rune("run", "--bundle", bundle_factory(["/bin/true"], annotations={
            "enclave.type": tee.name, "enclave.runtime.path": "/usr/lib/libpal.so"}), "hw2")
        assert other.returncode != 0 and "confidential VM" in other.stderr, other.stderr
        assert len(other.stderr.strip().splitlines()) == 1 and "Traceback" not in other.stderr


def _chain(*events: str) -> str:
    """The RTMR after extending a zero register with each event text's SHA-384, recomputed here."""
    import hashlib

    value = bytes(48)
    for text in events:
        value = hashlib.sha384(value + hashlib.sha384(text.encode()).digest()).digest()
    return value.hex()


def _verified_td_claims(kbs: KbsProcess, tmp_path: Path, evidence: str) -> dict[str, str]:
    """`inclavare verify` of a TD's evidence under the simulated roots: its claims."""
    (tmp_path / "evidence.json").write_text(evidence)
    sim = Path(kbs.directory) / "sim"
    v = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "verify", "--json", "--trust-anchor",
                        str(sim / "root-ca.pem"), "--collateral", str(sim / "tdx-collateral.json"),
                        str(tmp_path / "evidence.json")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    return json.loads(v.stdout)["claims"]  # type: ignore[no-any-return]


def test_rtmrs_survive_an_agent_restart_as_the_td_does(
        vm_kbs: tuple[KbsProcess, AgentProcess], vm_rune: Rune, bundle_factory: BundleFactory,
        tmp_path: Path) -> None:
    """A TD's RTMRs live in the TDX module, not in the host's agent: extended, then the agent
    killed (-9) and started again, the TD's next extension chains on what it had, and its quote
    carries both; once the container is deleted, nothing of its registers is left."""
    kbs, agent = vm_kbs
    vm_rune.create(bundle_factory(["/bin/sleep", "300"], annotations=annotations(TDX)), "rtmr-k9")
    try:
        assert vm_rune("start", "rtmr-k9").returncode == 0
        for _ in range(200):
            if json.loads(vm_rune("state", "rtmr-k9").stdout or "{}").get("status") == "running":
                break
        first = vm_rune("exec", "rtmr-k9", ATTEST, "extend", "app", "before", "restart")
        assert first.returncode == 0, first.stderr
        agent.kill9()
        agent.start()
        tsm = str(Path(agent.socket).parent / "agent" / "tsm")
        assert f" {tsm} " not in Path("/proc/mounts").read_text(), "the dead agent's FUSE mount was left behind"
        second = vm_rune("exec", "rtmr-k9", ATTEST, "extend", "app", "after", "restart")
        assert second.returncode == 0, second.stderr
        ev = vm_rune("exec", "rtmr-k9", ATTEST, "evidence")
        assert ev.returncode == 0, ev.stderr
        claims = _verified_td_claims(kbs, tmp_path, ev.stdout)
        assert claims["rtmr3"] == _chain("app before restart", "app after restart")
    finally:
        vm_rune("delete", "--force", "rtmr-k9")
    records = Path(agent.socket).parent / "agent" / "rtmrs"
    deadline = time.monotonic() + 15
    while list(records.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(records.glob("*.json"))


def test_rtmr_extension_reaches_the_td_quote_and_the_policy(
        vm_kbs: tuple[KbsProcess, AgentProcess], vm_rune: Rune, bundle_factory: BundleFactory,
        tmp_path: Path) -> None:
    """`attest extend` (CoCo's ExtendRuntimeMeasurement at /aa/aael) extends RTMR3 (default PCR 17)
    and RTMR2 (PCR 8); the next TD quote carries the SHA-384 chain; a policy requiring these RTMRs
    releases the secret, one requiring another value refuses it. RTMR0/1 and SNP are refused."""
    kbs, agent = vm_kbs
    extend = (f'{ATTEST} extend app load "image=sha256:ab cd" >/dev/null && '
              f'{ATTEST} extend app config "x=\\"1\\"" >/dev/null && '
              f'{ATTEST} extend app start now --index 8 >/dev/null && ')
    rtmr3 = _chain('app load image=sha256:ab cd', 'app config x="1"')
    rtmr2 = _chain("app start now")

    asker = bundle_factory(["/bin/sh", "-c", extend + f"{ATTEST} evidence"], annotations=annotations(TDX))
    ev = vm_rune("run", "--bundle", asker, "rtmr-evidence")
    assert ev.returncode == 0, ev.stderr
    claims = _verified_td_claims(kbs, tmp_path, ev.stdout)
    assert (claims["rtmr3"], claims["rtmr2"], claims["rtmr1"], claims["rtmr0"]) == (rtmr3, rtmr2, "00" * 48, "00" * 48)

    fetch = bundle_factory(["/bin/sh", "-c", extend + f"{ATTEST} resource kbs:///tenant/rtmr/key"],
                           annotations=annotations(TDX))
    mr_td = measure(fetch, agent.env) + "00" * 16
    assert kbs.admin("POST", "/resource/tenant/rtmr/key", b"after-extend").status_code == 200

    def require(rtmr3_value: str) -> None:
        kbs.set_resource_policy(
            'package policy\nimport rego.v1\ndefault allow := false\n'
            'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'allow if {{ data.plugin == "resource"; ev.tdx.mr_td == "{mr_td}"; '
            f'ev.tdx.rtmr3 == "{rtmr3_value}"; ev.tdx.rtmr2 == "{rtmr2}" }}\n')

    require(rtmr3)
    ok = vm_rune("run", "--bundle", fetch, "rtmr-good")
    assert (ok.returncode, ok.stdout) == (0, "after-extend"), ok.stderr
    require(_chain('app load image=sha256:ab cd'))  # the chain without the second event
    denied = vm_rune("run", "--bundle", fetch, "rtmr-other")
    assert denied.returncode == 1 and "PolicyDeny" in denied.stderr and denied.stdout == "", denied.stderr

    firmware = vm_rune("run", "--bundle", bundle_factory([ATTEST, "extend", "a", "b", "c", "--index", "1"],
                                                         annotations=annotations(TDX)), "rtmr-firmware")
    assert firmware.returncode == 1 and "maps to RTMR0, which only the firmware extends" in firmware.stderr
    snp = vm_rune("run", "--bundle", bundle_factory([ATTEST, "extend", "a", "b", "c"], annotations=annotations(SNP)),
                  "rtmr-snp")
    assert snp.returncode == 1 and "extend TDX RTMRs; this enclave is snp" in snp.stderr, snp.stderr
