"""configfs-tsm presented inside simulated TDX/SNP enclave containers (issue 12, item 4).

Real runc runs a busybox container with ``enclave.type=tdx|snp`` and the sim runtime; inside it,
the runtime folder's interpreter runs :mod:`inclavare.tee.tsm` — the attester written for the
kernel's ``/sys/kernel/config/tsm/report``, unchanged — against the node agent's FUSE file
system (real /dev/fuse). The evidence it gets verifies under the sim roots with this container's
measurement and the report data it wrote; ``generation`` counts writes; a 65-byte ``inblob`` is
refused as configfs refuses it (``EFBIG``); a host process is refused (``EACCES``).
"""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import datetime, timezone

import pytest

from inclavare.services.agent.registry import registration_key
from inclavare.services.enclave_layout import RT, interpreter_command
from inclavare.tee.registry import SNP, TDX, Tee
from inclavare.tee.sim_amd import SimAmdAuthority
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.evidence import TrustConfig, verify_evidence
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure
from tests.support.agent import AgentProcess

pytestmark = [pytest.mark.root, pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse here")]

NONCE = "tsm nonce from inside"
FIELD = {TDX.name: "mr_td", SNP.name: "measurement"}
SCRIPT = f"""
import errno, json, os
from inclavare.tee.tsm import TSM_REPORT_DIR, TsmAttester
attester = TsmAttester()
evidence = attester.evidence({NONCE!r}.encode())
entry = os.path.join(TSM_REPORT_DIR, "probe")
os.mkdir(entry)
def generation():
    with open(os.path.join(entry, "generation")) as f:
        return int(f.read())
def write(name, data):
    try:
        with open(os.path.join(entry, name), "wb") as f:
            f.write(data)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"
gens = [generation()]
for data in (b"a", b"b" * 64):
    write("inblob", data)
    gens.append(generation())
big = write("inblob", b"c" * 65)
badlevel = write("privlevel", b"7")
files = sorted(os.listdir(entry))
provider = open(os.path.join(entry, "provider")).read().strip()
os.rmdir(entry)
print(json.dumps({{"evidence": evidence, "tee": attester.tee.name, "generations": gens, "big": big,
                  "badlevel": badlevel, "files": files, "provider": provider,
                  "after_rmdir": os.listdir(TSM_REPORT_DIR)}}))
"""


def _status(rune: Rune, cid: str) -> str:
    return str(json.loads(rune("state", cid).stdout or "{}").get("status"))


def _trust(agent: AgentProcess, tee: Tee) -> TrustConfig:
    if tee == TDX:
        sim = SimAuthority.load_or_create(str(agent.state_dir / "sim"))
        return TrustConfig(sgx_root_cas=(sim.root_ca,), collateral=(sim.collateral(), sim.tdx_collateral()))
    amd = SimAmdAuthority.load_or_create(str(agent.state_dir / "amd"))
    return TrustConfig(amd_chains=((amd.ask, amd.ark),))


@pytest.mark.parametrize("tee", [TDX, SNP], ids=lambda t: t.name)
def test_tsm_attester_runs_unchanged_inside_and_answers_only_its_container(
        tee: Tee, agent: AgentProcess, rune: Rune, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory([*interpreter_command(RT, SCRIPT)],
                            annotations={"enclave.type": tee.name, "enclave.runtime.path": "sim"})
    cid = f"tsm-{tee.name}"
    out = rune.create(bundle, cid)
    try:
        (reg,) = [c for c in agent.containers() if c["id"] == cid]
        report_dir = agent.work / "run" / "agent" / "tsm" / registration_key(reg["root"], cid)
        assert report_dir.is_dir()  # runc resolved it for the bind; the inside is the container's
        # a host process (this test) is refused, whatever it tries
        for attempt in (lambda: os.mkdir(report_dir / "host"), lambda: os.listdir(report_dir)):
            with pytest.raises(PermissionError) as refused:
                attempt()
            assert refused.value.errno == errno.EACCES

        assert rune("start", cid).returncode == 0
        deadline = time.monotonic() + 30
        while _status(rune, cid) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        result = json.loads(out.read_text().strip().splitlines()[-1])
    finally:
        rune("delete", "--force", cid)
    assert not report_dir.exists()  # deregistered: its directory is gone with its entries

    assert result["tee"] == tee.name and result["provider"] == {TDX.name: "tdx_guest", SNP.name: "sev_guest"}[tee.name]
    assert result["generations"] == [0, 1, 2]  # one per committed write
    assert result["big"] == "EFBIG" and result["badlevel"] == "EINVAL"  # as configfs refuses them
    expected = ["generation", "inblob", "outblob", "privlevel", "provider"]
    assert result["files"] == sorted(expected + (["auxblob", "privlevel_floor"] if tee == SNP else []))
    assert result["after_rmdir"] == []
    verdict = verify_evidence(tee.name, result["evidence"], report_data=NONCE.encode().ljust(64, b"\0"),
                              trust=_trust(agent, tee), now=datetime.now(timezone.utc))
    assert verdict.claims[FIELD[tee.name]] == measure(bundle, agent.env) + "00" * 16
