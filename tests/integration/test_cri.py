"""rune as a Kubernetes RuntimeClass handler: containerd's CRI plugin with options.BinaryName = rune.

Driven by a small CRI gRPC client (tests/support/cri) as the kubelet would drive it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.containerd import Containerd
from tests.support.cri.client import CRIClient

pytestmark = [pytest.mark.root, pytest.mark.containerd, pytest.mark.cri]


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[tuple[CRIClient, Path]]:
    work = tmp_path_factory.mktemp("cri")
    daemon = Containerd(work, rune_bin, env={"INCLAVARE_RUNE_STATE": str(work / "rune-state")}).start()
    client = CRIClient(daemon.socket)
    try:
        rootfs = str(work / "rootfs")
        daemon.import_busybox(work, namespace="k8s.io")
        from inclavare.sample_images import build_busybox_rootfs
        daemon.import_busybox(work, name="localhost/pause", tag="busybox", namespace="k8s.io",
                              entrypoint=("/bin/sleep",), cmd=("2147483647",),
                              rootfs=build_busybox_rootfs(rootfs))
        yield client, work
    finally:
        client.close()
        daemon.stop()


def test_runtime_class_lifecycle(cri: tuple[CRIClient, Path]) -> None:
    client, work = cri
    pb = client.pb
    assert client.runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "containerd"
    images = {t for i in client.images.ListImages(pb.ListImagesRequest(), timeout=10).images for t in i.repo_tags}
    assert {"localhost/busybox:latest", "localhost/pause:busybox"} <= images

    pod_cfg = client.sandbox_config("p1", str(work / "logs"))
    pod = client.run_pod(pod_cfg, handler="rune")
    try:
        status = client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10).status
        assert status.state == pb.SANDBOX_READY and status.runtime_handler == "rune"

        once = client.create_container(pod, pod_cfg, "once", "localhost/busybox:latest",
                                       ["/bin/sh", "-c", "echo hello-from-cri; exit 3"])
        client.start(once)
        st = client.wait_exited(once)
        assert st.exit_code == 3
        log = (work / "logs" / "once.log").read_text()
        assert "stdout F hello-from-cri" in log

        svc = client.create_container(pod, pod_cfg, "svc", "localhost/busybox:latest", ["/bin/sleep", "300"])
        client.start(svc)
        assert client.status(svc).state == pb.CONTAINER_RUNNING
        r = client.exec_sync(svc, ["/bin/sh", "-c", "echo execsync-ok; exit 2"])
        assert (r.exit_code, r.stdout) == (2, b"execsync-ok\n")
        client.remove_container(svc)
        client.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=once), timeout=30)
    finally:
        client.remove_pod(pod)


def test_enclave_annotation_reaches_rune_through_cri(cri: tuple[CRIClient, Path]) -> None:
    """Container annotations `enclave.*` pass the CRI allow-list; a bad one fails in rune, visibly."""
    client, work = cri
    pod_cfg = client.sandbox_config("p2", str(work / "logs"))
    pod = client.run_pod(pod_cfg, handler="rune")
    try:
        cid = client.create_container(pod, pod_cfg, "bad", "localhost/busybox:latest", ["/bin/echo", "ran"],
                                      annotations={"enclave.type": "not-a-tee"})
        with pytest.raises(grpc.RpcError) as err:
            client.start(cid)
        assert "enclave type not-a-tee is not supported" in err.value.details()
        assert client.status(cid).state != client.pb.CONTAINER_RUNNING
        client.runtime.RemoveContainer(client.pb.RemoveContainerRequest(container_id=cid), timeout=30)
    finally:
        client.remove_pod(pod)
