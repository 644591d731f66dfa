"""EPC discovery (CPUID leaf 0x12, the kernel's per-node sizes) and SGX-mode health and Allocate.

This machine has no SGX: the real CPUID instruction is checked on leaf 0, and the SGX leaves come
from ``FakeSgxCpuid`` (register values as the SDM lays them out). The SGX device nodes are real
character devices made with mknod in a temp dir, removed and made again to flip health.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from inclavare.errors import ConfigError, NotSupportedError
from inclavare.services.deviceplugin import api_pb2 as pb
from inclavare.services.deviceplugin.epc import MAX_DEVICES, MIB, EpcInventory, cpuid, discover, epc_sections
from inclavare.services.deviceplugin.plugin import EpcDevicePlugin
from inclavare.services.deviceplugin.service import DevicePluginService, PluginSettings
from tests.deviceplugin.fake_kubelet import FakeKubelet, summary
from tests.support.grpc_stubs import assert_stubs_match_proto



class FakeSgxCpuid:
    """CPUID of an SGX2 CPU with two EPC sections (stands in for hardware this machine lacks)."""

    def __init__(self, sections: list[int]) -> None:
        self.sections = sections

    def __call__(self, leaf: int, sub: int) -> tuple[int, int, int, int]:
        if leaf == 0:
            return 0x1B, 0, 0, 0
        if leaf == 7:
            return 0, 1 << 2, 0, 0
        if leaf == 0x12 and sub >= 2 and sub - 2 < len(self.sections):
            size = self.sections[sub - 2]
            return 0x1 | 0x7000_0000, 0, (size & 0xFFFFF000) | 0x1, (size >> 32) & 0xFFFFF
        return 0, 0, 0, 0


def test_cpuid_instruction_runs() -> None:
    _eax, ebx, ecx, edx = cpuid(0)
    vendor = struct.pack("<III", ebx, edx, ecx).decode()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert f"vendor_id\t: {vendor}" in cpuinfo


def test_epc_sections_follow_the_sdm_layout() -> None:
    sizes = [(64 << 30) + (93 << 20), 188 << 20]  # one above 4 GiB (EDX bits used), one small
    assert epc_sections(FakeSgxCpuid(sizes)) == sizes
    assert epc_sections(FakeSgxCpuid([])) == []


def test_this_host_without_sgx_needs_epc_mib() -> None:
    assert not os.path.exists("/dev/sgx_enclave")
    with pytest.raises(ConfigError, match="give --epc-mib N"):
        discover(None)
    inv = discover(16)
    assert (inv.mib, inv.simulated, inv.device_nodes, inv.numa) == (16, True, (), ())
    with pytest.raises(ConfigError, match="more than"):
        discover(MAX_DEVICES + 1)


def test_largest_device_list_fits_kubelets_message_limit() -> None:
    inv = EpcInventory(MAX_DEVICES, simulated=False, device_nodes=("/dev/sgx_enclave",),
                       numa=((0, MAX_DEVICES // 2), (1, MAX_DEVICES // 2)))
    devices = EpcDevicePlugin(inv)._build(False)
    assert pb.ListAndWatchResponse(devices=devices).ByteSize() < 4 << 20


@pytest.fixture
def sgx_nodes(tmp_path: Path) -> tuple[str, str]:
    if os.geteuid() != 0:
        pytest.skip("mknod of character devices needs root")
    enclave, provision = str(tmp_path / "sgx_enclave"), str(tmp_path / "sgx_provision")
    for path in (enclave, provision):
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))
    return enclave, provision


def test_sgx_inventory(sgx_nodes: tuple[str, str], tmp_path: Path) -> None:
    sysfs = tmp_path / "node"
    for node, size in ((0, 64 * MIB), (1, 32 * MIB)):
        (sysfs / f"node{node}" / "x86").mkdir(parents=True)
        (sysfs / f"node{node}" / "x86" / "sgx_total_bytes").write_text(f"{size}\n")
    read = FakeSgxCpuid([64 * MIB, 32 * MIB])
    inv = discover(None, read=read, dev_nodes=sgx_nodes, sysfs=str(sysfs))
    assert (inv.mib, inv.simulated, inv.device_nodes) == (96, False, sgx_nodes)
    assert (inv.node_of(0), inv.node_of(63), inv.node_of(64), inv.node_of(95)) == (0, 0, 1, 1)
    with pytest.raises(ConfigError, match="for nodes without SGX"):
        discover(8, read=read, dev_nodes=sgx_nodes, sysfs=str(sysfs))
    with pytest.raises(NotSupportedError, match="no SGX leaf"):
        discover(None, read=lambda leaf, sub: (0, 0, 0, 0),
                 dev_nodes=sgx_nodes)
    (sysfs / "node1" / "x86" / "sgx_total_bytes").write_text("1\n")  # disagrees with CPUID: no topology
    assert discover(None, read=read, dev_nodes=sgx_nodes, sysfs=str(sysfs)).numa == ()


def test_sgx_devices_allocated_and_health_follows_device_nodes(sgx_nodes: tuple[str, str], tmp_path: Path) -> None:
    """In-process service on SGX inventory: Allocate hands over the device nodes; a node removed → Unhealthy."""
    directory = tmp_path / "dp"
    directory.mkdir()
    kubelet = FakeKubelet(str(directory)).start()
    inv = EpcInventory(8, simulated=False, device_nodes=sgx_nodes, numa=((0, 4), (1, 4)))
    service = DevicePluginService(inv, PluginSettings(str(directory), "alibabacloud.com/sgx_epc_MiB",
                                                      poll_interval=0.05, health_interval=0.05))
    import threading

    service.start()
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        ep = kubelet.wait_registrations(1)
        ep.wait_for(lambda d: summary(d) == {"Healthy": 8})
        assert ep.topologies[-1] == [0]
        resp = ep.allocate([["4", "5"]]).container_responses[0]
        assert [(d.container_path, d.host_path, d.permissions) for d in resp.devices] == [
            (p, p, "rw") for p in sgx_nodes]
        assert dict(resp.annotations) == {"enclave.epc_allowance_mib": "2"} and not resp.envs and not resp.mounts
        os.unlink(sgx_nodes[1])
        ep.wait_for(lambda d: summary(d) == {"Unhealthy": 8})
        os.mknod(sgx_nodes[1], 0o600 | 0o020000, os.makedev(1, 3))
        ep.wait_for(lambda d: summary(d) == {"Healthy": 8})
    finally:
        service.stop()
        runner.join(5)
        kubelet.stop()


def test_checked_in_stubs_match_the_proto() -> None:
    """api_pb2*.py are generated from api.proto by grpcio-tools; regenerate and compare."""
    assert_stubs_match_proto("inclavare/services/deviceplugin/api.proto")


def test_service_paths_match_kubelets() -> None:
    """The gRPC method paths kubelet calls (/v1beta1.Registration/Register, /v1beta1.DevicePlugin/...)."""
    services = pb.DESCRIPTOR.services_by_name
    assert [m.name for m in services["Registration"].methods] == ["Register"]
    assert [m.name for m in services["DevicePlugin"].methods] == [
        "GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate", "PreStartContainer"]
    assert pb.DESCRIPTOR.package == "v1beta1"
    fields = {m.name: [(f.name, f.number) for f in m.fields] for m in pb.DESCRIPTOR.message_types_by_name.values()}
    assert fields["ContainerAllocateResponse"] == [("envs", 1), ("mounts", 2), ("devices", 3), ("annotations", 4),
                                                   ("cdi_devices", 5)]
    assert fields["ContainerPreferredAllocationRequest"] == [
        ("available_deviceIDs", 1), ("must_include_deviceIDs", 2), ("allocation_size", 3)]
    assert fields["Device"] == [("ID", 1), ("health", 2), ("topology", 3)]

