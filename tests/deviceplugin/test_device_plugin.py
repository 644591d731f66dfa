"""The EPC device plugin as the kubelet sees it: a real `inclavare device-plugin serve` process and a
fake kubelet speaking the real v1beta1 protocol over unix sockets (tests/deviceplugin/fake_kubelet.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inclavare.services.deviceplugin import api_pb2 as pb
from tests.deviceplugin.fake_kubelet import FakeKubelet, summary
from tests.deviceplugin.plugin_process import PluginProcess
from tests.support.agent import AgentProcess

ALL_HEALTHY = {"Healthy": 64}


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    directory = tmp_path / "device-plugins"
    directory.mkdir()
    k = FakeKubelet(str(directory)).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def plugin(kubelet: FakeKubelet, tmp_path: Path) -> Iterator[PluginProcess]:
    p = PluginProcess(kubelet.directory, tmp_path / "plugin.log").start()
    try:
        yield p
    finally:
        p.stop()


def test_registers_lists_and_allocates(kubelet: FakeKubelet, plugin: PluginProcess) -> None:
    ep = kubelet.wait_registrations(1)
    assert (ep.request.version, ep.request.endpoint, ep.request.resource_name) == (
        "v1beta1", "inclavare-epc.sock", "alibabacloud.com/sgx_epc_MiB")
    assert ep.request.options.get_preferred_allocation_available and not ep.request.options.pre_start_required
    assert ep.options == ep.request.options
    devices = ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
    assert sorted(devices, key=int) == [str(i) for i in range(64)]
    assert ep.topologies[-1] == []  # simulated EPC: no NUMA node claimed
    mode = os.stat(os.path.join(kubelet.directory, "inclavare-epc.sock")).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    answer = ep.allocate([[str(i) for i in range(16)], ["40", "41"]])
    first, second = answer.container_responses
    assert dict(first.annotations) == {"enclave.epc_allowance_mib": "16"}
    assert dict(second.annotations) == {"enclave.epc_allowance_mib": "2"}
    assert not first.envs and not first.mounts and not first.devices and not first.cdi_devices  # sim: no nodes

    for bad in (["64"], ["-1"], ["007"], ["3", "3"], []):
        with pytest.raises(grpc.RpcError) as err:
            ep.allocate([bad])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad

    pref = ep.stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(available_deviceIDs=["9", "10", "2", "30"],
                                               must_include_deviceIDs=["30"], allocation_size=3)]), timeout=5)
    assert list(pref.container_responses[0].deviceIDs) == ["30", "2", "9"]
    with pytest.raises(grpc.RpcError) as err:
        ep.stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
            pb.ContainerPreferredAllocationRequest(available_deviceIDs=["1"], allocation_size=5)]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ep.stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["1"]), timeout=5)


def test_stream_cap(kubelet: FakeKubelet, plugin: PluginProcess) -> None:
    """ListAndWatch streams are capped (each holds a server thread); unary calls still pass."""
    ep = kubelet.wait_registrations(1)
    ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
    streams = [ep.stub.ListAndWatch(pb.Empty()) for _ in range(3)]  # with kubelet's: 4, the cap
    try:
        for s in streams:
            next(s)
        extra = ep.stub.ListAndWatch(pb.Empty())
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ep.allocate([["1"]]).container_responses[0].annotations["enclave.epc_allowance_mib"] == "1"
    finally:
        for s in streams:
            s.cancel()


def test_kubelet_restart_reregisters(kubelet: FakeKubelet, plugin: PluginProcess) -> None:
    kubelet.wait_registrations(1).wait_for(lambda d: summary(d) == ALL_HEALTHY)
    kubelet.restart()  # every socket in the directory deleted, kubelet.sock recreated
    ep = kubelet.wait_registrations(2)
    ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
    assert ep.allocate([["5"]]).container_responses[0].annotations["enclave.epc_allowance_mib"] == "1"
    assert os.path.exists(os.path.join(kubelet.directory, "inclavare-epc.sock"))


def test_plugin_survives_its_own_kill9(kubelet: FakeKubelet, plugin: PluginProcess) -> None:
    kubelet.wait_registrations(1).wait_for(lambda d: summary(d) == ALL_HEALTHY)
    plugin.kill9()
    assert os.path.exists(os.path.join(kubelet.directory, "inclavare-epc.sock"))  # stale, left behind
    plugin.start()
    ep = kubelet.wait_registrations(2)
    ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
    assert ep.allocate([["0", "1", "2"]]).container_responses[0].annotations["enclave.epc_allowance_mib"] == "3"
    assert plugin.stop() == 0
    assert not os.path.exists(os.path.join(kubelet.directory, "inclavare-epc.sock"))  # a clean stop removes it


def test_a_second_plugin_does_not_take_the_socket_over(kubelet: FakeKubelet, plugin: PluginProcess,
                                                       tmp_path: Path) -> None:
    kubelet.wait_registrations(1).wait_for(lambda d: summary(d) == ALL_HEALTHY)
    second = subprocess.run(PluginProcess(kubelet.directory, tmp_path / "second.log").cmd, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 2 and "another process is serving on this socket" in second.stderr
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("inclavare: error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr  # its start-up log lines, then one error
    ep = kubelet.wait_registrations(1)  # the first plugin still answers
    assert ep.allocate([["0"]]).container_responses[0].annotations["enclave.epc_allowance_mib"] == "1"


def test_registers_once_kubelet_appears(tmp_path: Path) -> None:
    """Started before the kubelet: the plugin serves, retries, and registers when kubelet.sock shows up."""
    directory = tmp_path / "dp"
    directory.mkdir()
    plugin = PluginProcess(str(directory), tmp_path / "plugin.log").start()
    kubelet = FakeKubelet(str(directory))
    try:
        for _ in range(100):
            if (directory / "inclavare-epc.sock").exists():
                break
            time.sleep(0.05)
        kubelet.start()
        kubelet.wait_registrations(1).wait_for(lambda d: summary(d) == ALL_HEALTHY)
    finally:
        plugin.stop()
        kubelet.stop()


@pytest.mark.root
def test_health_follows_the_node_agent(kubelet: FakeKubelet, tmp_path: Path, runc_bin: str) -> None:
    """The node agent's socket removed → every device Unhealthy in the stream; back → Healthy."""
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent").start()
    plugin = PluginProcess(kubelet.directory, tmp_path / "plugin.log", agent_socket=agent.socket).start()
    try:
        ep = kubelet.wait_registrations(1)
        ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
        os.rename(agent.socket, agent.socket + ".away")
        ep.wait_for(lambda d: summary(d) == {"Unhealthy": 64})
        os.rename(agent.socket + ".away", agent.socket)
        ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
        agent.stop()
        ep.wait_for(lambda d: summary(d) == {"Unhealthy": 64})
        agent.start()
        ep.wait_for(lambda d: summary(d) == ALL_HEALTHY)
    finally:
        plugin.stop()
        agent.stop()
    log = (tmp_path / "plugin.log").read_text()
    assert "SIMULATED EPC" in log and "does not answer" in log


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "inclavare"), "device-plugin", "serve", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, message", [
    (["--epc-mib", "16", "--resource-name", "no-domain"], "must look like vendor.example/type"),
    (["--epc-mib", "16", "--device-plugin-dir", "/nonexistent/dp"], "does not exist"),
    (["--epc-mib", "999999999"], "more than 131072"),
    (["--epc-mib", "0"], "positive number"),
    (["--epc-mib", "1x"], "whole number"),
    ([], "give --epc-mib N"),
    (["--epc-mib", "4", "--health-interval", "0"], "--health-interval"),
])
def test_cli_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    r = _cli(*args, "--agent-socket", "") if "--device-plugin-dir" in args else _cli(
        *args, "--agent-socket", "", "--device-plugin-dir", str(tmp_path))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1
