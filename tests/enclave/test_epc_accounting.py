"""Node-wide EPC accounting of the simulated TEE (`inclavare agent serve --epc-mib 64`), with real
rune (native launcher: the agent plans the create), real runc and a real node agent.

The sum of the needs of running sim enclaves stays within the node's EPC; a container's EPC is
free again once it is deleted, once it exits (before anyone deletes it), and the accounting is
the same after the agent's own kill -9 (recomputed from the persisted registrations). rune's
per-container check (need vs the device plugin's allowance) runs in the same plan.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.services.agent import client
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("agent-epc"), epc_mib=64).start()
    try:
        yield a
    finally:
        a.stop()


def sim(epc: int, allowance: int | None = None) -> dict[str, str]:
    out = {"enclave.type": "sim", "enclave.epc_mib": str(epc)}
    if allowance is not None:
        out["enclave.epc_allowance_mib"] = str(allowance)
    return out


def in_use(agent: AgentProcess) -> int:
    return int(client.call(agent.socket, "GET", "/v1/health")["epc"]["in_use_mib"])


def status(rune: Rune, cid: str) -> str:
    return str(json.loads(rune("state", cid).stdout or "{}").get("status"))


def wait_status(rune: Rune, cid: str, want: str) -> None:
    for _ in range(250):
        if status(rune, cid) == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} is {status(rune, cid)}, not {want}")


def refused(rune: Rune, bundle: str, cid: str) -> str:
    r = rune("create", "--bundle", bundle, cid)
    assert r.returncode != 0, f"{cid} was created"
    assert status(rune, cid) == "None"
    return r.stderr.strip()


def test_node_epc_is_shared_and_freed(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory) -> None:
    a = bundle_factory(["/bin/sleep", "300"], annotations=sim(40))
    b = bundle_factory(["/bin/sleep", "301"], annotations=sim(40))
    rune.create(a, "epc-a")
    assert rune("start", "epc-a").returncode == 0
    wait_status(rune, "epc-a", "running")
    assert in_use(agent) == 40

    err = refused(rune, b, "epc-b")
    assert "needs 40 MiB of EPC but the node has 24 MiB free (40 of 64 MiB held by running enclaves)" in err
    assert len(err.splitlines()) == 1

    assert rune("kill", "epc-a", "KILL").returncode == 0  # exited, not deleted: its EPC is free
    wait_status(rune, "epc-a", "stopped")
    assert in_use(agent) == 0
    rune.create(b, "epc-b")  # created (runc init waiting): holds its EPC
    assert in_use(agent) == 40
    assert rune("delete", "--force", "epc-b").returncode == 0
    assert rune("delete", "epc-a").returncode == 0
    assert in_use(agent) == 0


def test_accounting_survives_agent_kill9(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory) -> None:
    c = bundle_factory(["/bin/sleep", "302"], annotations=sim(48))
    d = bundle_factory(["/bin/sleep", "303"], annotations=sim(32))
    rune.create(c, "epc-c")
    assert rune("start", "epc-c").returncode == 0
    agent.kill9()
    agent.start()
    assert in_use(agent) == 48
    assert "needs 32 MiB of EPC but the node has 16 MiB free" in refused(rune, d, "epc-d")
    assert rune("delete", "--force", "epc-c").returncode == 0
    assert in_use(agent) == 0
    rune.create(d, "epc-d")
    assert rune("delete", "--force", "epc-d").returncode == 0


def test_need_over_allowance_refused_at_create(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory,
                                               tmp_path: Path) -> None:
    bundle = bundle_factory(["/bin/true"], annotations=sim(64, allowance=16))
    err = refused(rune, bundle, "epc-e")
    assert len(err.splitlines()) == 1
    assert "enclave needs 64 MiB of EPC (enclave.epc_mib) but the container was allocated 16 MiB" in err
    assert in_use(agent) == 0 and all(c["id"] != "epc-e" for c in agent.containers())


@pytest.mark.parametrize("value", [-1, True, 1.5, "16", 1 << 30])
def test_malformed_epc_in_a_registration_is_refused(agent: AgentProcess, value: object) -> None:
    doc = {"id": "bad-epc", "root": "/run/x", "runc": "/usr/sbin/runc", "bundle": "/b", "measurement": "00" * 32,
           "enclave": {"type": "sim"}, "runtime": "sim", "epc_mib": value}
    r = client.request(agent.socket, "POST", "/v1/containers", doc)
    assert r.status == 400 and "epc_mib must be a whole number of MiB" in r.error_text()
    assert all(c["id"] != "bad-epc" for c in agent.containers())
