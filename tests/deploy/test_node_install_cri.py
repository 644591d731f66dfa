"""`inclavare node install` on this host's real containerd, driven through CRI as the kubelet would:
install -> a pod with runtime_handler rune runs an enclave container that attests -> uninstall ->
containerd's config is byte-identical to before, and the handler is gone again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from inclavare.sample_images import build_busybox_rootfs
from tests.enclave.conftest import agent, verify_sim_evidence  # noqa: F401  (agent: fixture)
from tests.support.agent import AgentProcess
from tests.support.containerd import Containerd
from tests.support.cri.client import CRIClient

pytestmark = [pytest.mark.root, pytest.mark.containerd, pytest.mark.cri]

INCLAVARE = str(Path(sys.executable).parent / "inclavare")


def node(action: str, daemon: Containerd, prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INCLAVARE, "node", action, "--containerd-config", str(daemon.config),
                           "--prefix", str(prefix), *extra], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def node_containerd(tmp_path_factory: pytest.TempPathFactory, agent: AgentProcess,  # noqa: F811
                    runc_bin: str) -> Iterator[tuple[Containerd, CRIClient, Path]]:
    work = tmp_path_factory.mktemp("node")
    daemon = Containerd(work, rune=None, env=agent.env).start()  # a node without rune
    client = CRIClient(daemon.socket)
    try:
        daemon.import_busybox(work, namespace="k8s.io")
        daemon.import_busybox(work, name="localhost/pause", tag="busybox", namespace="k8s.io",
                              entrypoint=("/bin/sleep",), cmd=("2147483647",),
                              rootfs=build_busybox_rootfs(str(work / "pause-rootfs")))
        yield daemon, client, work
    finally:
        client.close()
        daemon.stop()


def run_pod(client: CRIClient, work: Path, name: str) -> tuple[str, object]:
    cfg = client.sandbox_config(name, str(work / "logs"))
    return client.run_pod(cfg, handler="rune"), cfg


def test_install_run_enclave_uninstall_restores_config(
        node_containerd: tuple[Containerd, CRIClient, Path], agent: AgentProcess,  # noqa: F811
        runc_bin: str) -> None:
    daemon, client, work = node_containerd
    prefix = work / "opt-inclavare"
    before = daemon.config.read_bytes()
    with pytest.raises(grpc.RpcError, match="rune"):  # the handler does not exist yet
        run_pod(client, work, "early")

    args = ("--runc", runc_bin, "--agent-socket", agent.socket)
    first = node("install", daemon, prefix, *args)
    assert first.returncode == 0, first.stderr
    assert "changed" in first.stdout and "unchanged" not in first.stdout
    installed = daemon.config.read_bytes()
    second = node("install", daemon, prefix, *args)  # idempotent: install twice = install once
    assert second.returncode == 0 and "config " + str(daemon.config) + " unchanged" in second.stdout
    assert daemon.config.read_bytes() == installed
    launcher = prefix / "bin" / "rune"
    assert launcher.read_bytes()[:4] == b"\x7fELF"  # the static native launcher

    daemon.restart()
    pod, cfg = run_pod(client, work, "enclave-pod")
    try:
        cid = client.create_container(pod, cfg, "attester", "localhost/busybox:latest",
                                      ["/run/inclavare/bin/attest", "evidence", "--runtime-data", "via-node-install"],
                                      annotations={"enclave.type": "sim"}, own_pid_namespace=True)
        client.start(cid)
        status = client.wait_exited(cid)
        log = (work / "logs" / "attester.log").read_text()
        assert status.exit_code == 0, log
        evidence = "".join(line.split(" ", 3)[3] for line in log.splitlines() if " stdout " in line)
        claims = verify_sim_evidence(agent, evidence).claims
        assert claims.report_data.rstrip(b"\0") == b"via-node-install"
        client.runtime.RemoveContainer(client.pb.RemoveContainerRequest(container_id=cid), timeout=30)
    finally:
        client.remove_pod(pod)

    removed = node("uninstall", daemon, prefix)
    assert removed.returncode == 0, removed.stderr
    assert daemon.config.read_bytes() == before  # byte-identical
    assert not launcher.exists()
    again = node("uninstall", daemon, prefix)
    assert again.returncode == 0 and "unchanged" in again.stdout
    daemon.restart()
    with pytest.raises(grpc.RpcError, match="rune"):
        run_pod(client, work, "late")


def test_bad_inputs_are_one_line_errors(node_containerd: tuple[Containerd, CRIClient, Path],
                                        tmp_path: Path) -> None:
    daemon, _, _ = node_containerd
    before = daemon.config.read_bytes()
    cases = [
        (("--runc", str(tmp_path / "no-runc")), "runc at"),
        (("--handler", "Not_A_Label"), "is not a DNS label"),
        (("--host-root", "relative"), "must be an absolute path"),
        (("--restart-containerd", "/bin/false"), "restarting containerd (/bin/false) exited 1"),
    ]
    for extra, message in cases:
        r = node("install", daemon, tmp_path / "p", *extra)
        assert r.returncode != 0 and message in r.stderr, (extra, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = node("uninstall", daemon, tmp_path / "p")  # the failed restart left the entry in place
    assert r.returncode == 0, r.stderr
    assert daemon.config.read_bytes() == before
