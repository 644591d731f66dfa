"""The kubelet's path for an EPC-scheduled enclave pod, end to end, without a kubelet.

The test plays the kubelet with the real protocols: a fake kubelet Registration server on
DIR/kubelet.sock receives the device plugin's Register (a real `inclavare device-plugin serve`
process, simulated EPC) and streams ListAndWatch; for a container asking
`alibabacloud.com/sgx_epc_MiB: 16` it calls Allocate with 16 of the advertised devices and
applies the answer to a real CRI CreateContainer on a private containerd as kubelet's
GenerateRunContainerOptions does (envs, mounts, devices, annotations into ContainerConfig),
with `runtime_handler: rune` and the enclave annotation on the pod. The container runs and
attests; a container declaring 64 MiB against an allocation of 16 is refused with rune's one
line, visible through CRI — also when the pod forges the allowance annotation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.deviceplugin.fake_kubelet import FakeKubelet, PluginEndpoint, summary
from tests.deviceplugin.plugin_process import PluginProcess
from tests.enclave.conftest import verify_sim_evidence
from tests.support.agent import AgentProcess
from tests.support.containerd import Containerd
from tests.support.cri.client import CRIClient

pytestmark = [pytest.mark.root, pytest.mark.containerd, pytest.mark.cri]

RESOURCE = "alibabacloud.com/sgx_epc_MiB"


class Node:
    def __init__(self, cri: CRIClient, work: Path, agent: AgentProcess, plugin: PluginEndpoint) -> None:
        self.cri, self.work, self.agent, self.plugin = cri, work, agent, plugin
        self.free = [str(i) for i in range(64)]  # kubelet's view of unallocated devices

    def allocate(self, mib: int) -> Any:
        """As kubelet's device manager: pick `mib` healthy devices, call Allocate for one container."""
        devices = self.plugin.wait_for(lambda d: summary(d) == {"Healthy": 64})
        chosen = [i for i in self.free if devices[i] == "Healthy"][:mib]
        self.free = [i for i in self.free if i not in chosen]
        (response,) = self.plugin.allocate([chosen]).container_responses
        return response

    def create(self, pod: str, pod_cfg: Any, name: str, command: list[str], response: Any) -> str:
        """CreateContainer with the Allocate answer applied as kubelet applies it."""
        return self.cri.create_container(
            pod, pod_cfg, name, "localhost/busybox:latest", command,
            annotations=dict(response.annotations), env=dict(response.envs),
            devices=[(d.container_path, d.host_path, d.permissions) for d in response.devices],
            mounts=[(m.container_path, m.host_path, m.read_only) for m in response.mounts],
            own_pid_namespace=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[Node]:
    work = tmp_path_factory.mktemp("kubelet-path")
    (work / "agent").mkdir()
    agent = AgentProcess(work / "agent", epc_mib=64).start()
    dp_dir = work / "device-plugins"
    dp_dir.mkdir()
    kubelet = FakeKubelet(str(dp_dir)).start()
    plugin = PluginProcess(str(dp_dir), work / "plugin.log", epc_mib=64, agent_socket=agent.socket).start()
    daemon = Containerd(work / "containerd", rune_bin, env=agent.env)
    (work / "containerd").mkdir()
    cri = None
    try:
        endpoint = kubelet.wait_registrations(1)
        assert endpoint.request.resource_name == RESOURCE
        daemon.start()
        cri = CRIClient(daemon.socket)
        daemon.import_busybox(work, namespace="k8s.io")
        from inclavare.sample_images import build_busybox_rootfs
        daemon.import_busybox(work, name="localhost/pause", tag="busybox", namespace="k8s.io",
                              entrypoint=("/bin/sleep",), cmd=("2147483647",),
                              rootfs=build_busybox_rootfs(str(work / "pause-rootfs")))
        yield Node(cri, work, agent, endpoint)
    finally:
        if cri is not None:
            cri.close()
        daemon.stop()
        plugin.stop()
        kubelet.stop()
        agent.stop()


def test_epc_pod_runs_and_attests(node: Node) -> None:
    cri = node.cri
    pod_cfg = cri.sandbox_config("epc16", str(node.work / "logs"),
                                 annotations={"enclave.type": "sim", "enclave.epc_mib": "16"})
    pod = cri.run_pod(pod_cfg, handler="rune")
    try:
        response = node.allocate(16)
        assert dict(response.annotations) == {"enclave.epc_allowance_mib": "16"}
        cid = node.create(pod, pod_cfg, "attester", ["/run/inclavare/bin/attest", "evidence",
                                                      "--runtime-data", "kubelet-path"], response)
        cri.start(cid)
        assert cri.wait_exited(cid).exit_code == 0
        lines = (node.work / "logs" / "attester.log").read_text().splitlines()
        evidence = "".join(line.split(" ", 3)[3] for line in lines if " stdout " in line)
        claims = verify_sim_evidence(node.agent, evidence).claims
        assert claims.report_data.rstrip(b"\0") == b"kubelet-path"
        cri.runtime.RemoveContainer(cri.pb.RemoveContainerRequest(container_id=cid), timeout=30)
    finally:
        cri.remove_pod(pod)


@pytest.mark.parametrize("forged", [False, True], ids=["declared-64", "declared-64-forged-pod-allowance"])
def test_declaring_more_than_allocated_is_refused_through_cri(node: Node, forged: bool) -> None:
    cri = node.cri
    annotations = {"enclave.type": "sim", "enclave.epc_mib": "64"}
    if forged:  # the pod claims a bigger allowance; Allocate's container annotation must win
        annotations["enclave.epc_allowance_mib"] = "64"
    pod_cfg = cri.sandbox_config(f"epc64-{int(forged)}", str(node.work / "logs"), annotations=annotations)
    pod = cri.run_pod(pod_cfg, handler="rune")
    try:
        cid = node.create(pod, pod_cfg, "greedy", ["/bin/sleep", "300"], node.allocate(16))
        with pytest.raises(grpc.RpcError) as err:
            cri.start(cid)
        assert ("enclave needs 64 MiB of EPC (enclave.epc_mib) but the container was allocated 16 MiB "
                "(enclave.epc_allowance_mib)") in err.value.details()
        assert cri.status(cid).state != cri.pb.CONTAINER_RUNNING
        cri.runtime.RemoveContainer(cri.pb.RemoveContainerRequest(container_id=cid), timeout=30)
    finally:
        cri.remove_pod(pod)
