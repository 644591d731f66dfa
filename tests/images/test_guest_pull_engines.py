"""Guest pull from the container engines (issue 14 item 2): containerd through `ctr run` and
through its CRI plugin (the Kubernetes path, pod annotations as a user writes them), and podman.

Each engine is given a bootstrap image with no layer at all (umoci), imported into its own
store; the enclave pulls the encrypted workload image through the node agent's relay and runs
its entrypoint, whose output (the image's marker file) the engine hands back. The world (registry,
KBS, relaying agent, pushed images) is the one tests/images/conftest.py builds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import ConfigError
from inclavare.runtime.enclave_side import add_runtime
from inclavare.sample_images import build_busybox_rootfs
from tests.images.conftest import MARKER, PLAIN_MARKER, policy
from tests.integration.test_podman import RUN_FLAGS, Podman
from tests.support.containerd import Containerd
from tests.support.cri.client import CRIClient

pytestmark = [pytest.mark.root, pytest.mark.slow]

BOOTSTRAP = "localhost/bootstrap"  # the engines' image: no layer at all, never run
NEVER_RUN = ("/never/run",)
CAP_SYS_CHROOT = 18


def _scratch_bootstrap(work: Path) -> str:
    """The smallest bootstrap: an image with no layer at all (umoci), as an OCI archive that
    `ctr images import` and `podman load` take; its command is never run."""
    layout = f"{work}/bootstrap-oci"
    for cmd in (["umoci", "init", "--layout", layout], ["umoci", "new", "--image", f"{layout}:latest"],
                ["umoci", "config", "--image", f"{layout}:latest", "--config.cmd", NEVER_RUN[0]],
                ["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"oci-archive:{work}/bootstrap.tar:{BOOTSTRAP}:latest"]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return f"{work}/bootstrap.tar"


@pytest.fixture(scope="module")
def allow_the_image(world: dict[str, Any]) -> dict[str, Any]:
    world["kbs"].set_resource_policy(policy(f'ev.init_data_claims.image == "{world["image"]}"'))
    return world


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory, rune_bin: str, world: dict[str, Any]) -> Iterator[Containerd]:
    """One containerd for ctr (its test namespace) and CRI (k8s.io), rune as the `rune` handler."""
    work = tmp_path_factory.mktemp("gp-ctrd")
    daemon = Containerd(work, rune_bin, env=world["agent"].env).start()
    try:
        bootstrap = _scratch_bootstrap(work)
        for ns in (None, "k8s.io"):
            daemon.ctr("images", "import", bootstrap, namespace=ns)
        daemon.import_busybox(work, name="localhost/pause", tag="busybox", namespace="k8s.io",
                              entrypoint=("/bin/sleep",), cmd=("2147483647",),
                              rootfs=build_busybox_rootfs(str(work / "pause-rootfs")))
        yield daemon
    finally:
        daemon.stop()


def test_ctr_runs_an_encrypted_image_pulled_inside_the_enclave(
        ctrd: Containerd, rune_bin: str, allow_the_image: dict[str, Any]) -> None:
    r = ctrd.ctr("run", "--rm", "--runc-binary", rune_bin, "--annotation", "enclave.type=sim",
                 "--annotation", f"enclave.image={allow_the_image['image']}", f"{BOOTSTRAP}:latest", "gp-ctr",
                 check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == MARKER, r.stderr
    assert any(line.startswith("guest-pull: ") and "ready" in line for line in r.stderr.splitlines()), r.stderr


def test_a_kubernetes_pod_runs_an_encrypted_image_pulled_inside_the_enclave(
        ctrd: Containerd, allow_the_image: dict[str, Any], tmp_path: Path) -> None:
    """The pod annotations of docs/confidential-images.md, through CRI's pod_annotations
    allow-list: the pause container stays a plain one, the app container pulls and runs."""
    client = CRIClient(ctrd.socket)
    pod_cfg = client.sandbox_config("gp-pod", str(tmp_path), annotations={
        "enclave.type": "sim", "enclave.image": allow_the_image["image"]})
    pod = client.run_pod(pod_cfg, handler="rune")
    try:
        cid = client.create_container(pod, pod_cfg, "app", f"{BOOTSTRAP}:latest", [], own_pid_namespace=True)
        client.start(cid)
        status = client.wait_exited(cid, timeout=30)
        log = (tmp_path / "app.log").read_text()
        assert status.exit_code == 0, log
        stdout = [line.split(" ", 3)[3] for line in log.splitlines() if line.split(" ")[1] == "stdout"]
        assert "".join(stdout).encode() == MARKER, log
        assert pod not in {c["id"] for c in allow_the_image["agent"].containers()}  # pause: no enclave
        client.runtime.RemoveContainer(client.pb.RemoveContainerRequest(container_id=cid), timeout=30)
    finally:
        client.remove_pod(pod)
        client.close()


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, runc_bin: str, world: dict[str, Any]) -> Iterator[Podman]:
    if subprocess.run(["which", "podman"], capture_output=True).returncode != 0:
        pytest.skip("podman is not installed (make setup installs it)")
    from inclavare.runtime.launcher import install_launcher

    work = tmp_path_factory.mktemp("gp-podman")
    agent = world["agent"]
    rune = str(work / "rune")  # podman does not pass its environment to the runtime: bake the agent in
    install_launcher(rune, runc_bin, "auto", agent_socket=agent.socket, state_dir=agent.env["INCLAVARE_RUNE_STATE"])
    p = Podman(work, rune)
    r = p("load", "--quiet", "--input", _scratch_bootstrap(work))
    assert r.returncode == 0, r.stderr
    try:
        yield p
    finally:
        p.cleanup()


def test_podman_runs_an_encrypted_image_pulled_inside_the_enclave(
        podman: Podman, allow_the_image: dict[str, Any]) -> None:
    r = podman("run", "--rm", *RUN_FLAGS, "--annotation", "enclave.type=sim",
               "--annotation", f"enclave.image={allow_the_image['image']}", f"{BOOTSTRAP}:latest")
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == MARKER, r.stderr


def test_podman_read_only_user_namespace_and_no_sys_chroot_still_pull_and_the_workload_holds_no_chroot(
        podman: Podman, allow_the_image: dict[str, Any]) -> None:
    """What engines pass that the plain runc path never sees: a read-only root (podman adds a
    /run tmpfs), a user namespace, capabilities without CAP_SYS_CHROOT and a seccomp profile
    that denies chroot(2) without it. The unencrypted image reports what it got."""
    r = podman("run", "--rm", *RUN_FLAGS, "--read-only", "--cap-drop", "sys_chroot",
               "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536",
               "--annotation", "enclave.type=sim", "--annotation", f"enclave.image={allow_the_image['plain_image']}",
               f"{BOOTSTRAP}:latest")
    assert r.returncode == 0, r.stderr
    out, rest = r.stdout.encode().split(b"agent-reachable\n")
    assert out.startswith(PLAIN_MARKER + b"\nfrom-the-image"), r.stdout
    sets = dict(line.split(":\t") for line in rest.decode().splitlines()[:3])
    assert len(sets) == 3 and all(not int(v, 16) >> CAP_SYS_CHROOT & 1 for v in sets.values()), sets


def test_podman_user_other_than_root_is_refused_in_one_line(podman: Podman, allow_the_image: dict[str, Any]) -> None:
    r = podman("run", "--rm", *RUN_FLAGS, "--user", "1000", "--annotation", "enclave.type=sim",
               "--annotation", f"enclave.image={allow_the_image['image']}", f"{BOOTSTRAP}:latest")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("enclave.image needs the container to start as root (it runs as uid 1000)") == 1, r.stderr
    assert "guest-pull:" not in r.stderr  # refused at create: nothing was pulled


def test_a_seccomp_profile_denying_chroot_to_a_container_holding_the_capability_is_refused() -> None:
    """Rune lets chroot(2) through only where it granted CAP_SYS_CHROOT itself; an operator's
    profile denying it to a container that holds the capability is kept, and refused."""
    spec: dict[str, Any] = {
        "process": {"args": ["/x"], "capabilities": {k: ["CAP_SYS_CHROOT"] for k in ("bounding", "effective")}},
        "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                              "syscalls": [{"names": ["read", "chroot"], "action": "SCMP_ACT_ERRNO"}]}}}
    with pytest.raises(ConfigError, match=r"needs chroot\(2\), which the container's seccomp profile denies"):
        add_runtime(spec, "/rt", "/channel", "127.0.0.1:5000/a@sha256:" + "0" * 64)
    spec["process"]["capabilities"] = {"bounding": []}  # as podman --cap-drop sys_chroot leaves it
    add_runtime(spec, "/rt", "/channel", "127.0.0.1:5000/a@sha256:" + "0" * 64)
    assert spec["linux"]["seccomp"]["syscalls"] == [{"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                                                    {"names": ["chroot"], "action": "SCMP_ACT_ALLOW"}]
