"""deploy/image: the project image builds with podman offline (--network none) from a Debian base
bootstrapped with mmdebstrap, and the node installer inside it installs onto (and uninstalls from)
a node root exactly as the DaemonSet runs it (`--host-root /host --copy-payload`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_podman import RUN_FLAGS, Podman

pytestmark = [pytest.mark.root, pytest.mark.podman, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/inclavare:test"
NODE_CONFIG = b'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause"'  # no final newline


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, runc_bin: str) -> Iterator[Podman]:
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    work = tmp_path_factory.mktemp("image")
    podman = Podman(work, runc_bin)  # runc: crun cannot run on this host's hybrid cgroups
    env = {**os.environ, "PODMAN": " ".join(podman.base),
           "PODMAN_BUILD_FLAGS": " ".join(RUN_FLAGS[2:])}  # the --ulimit flags, not --network
    r = subprocess.run([str(REPO / "deploy/image/build.sh"), TAG], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    try:
        yield podman
    finally:
        podman("rmi", "--all", "--force")
        podman.cleanup()
        shutil.rmtree(work / "root", ignore_errors=True)  # ~1 GB of layers


def test_image_runs_inclavare(image: Podman) -> None:
    r = image("run", "--rm", *RUN_FLAGS, TAG, "--version")
    assert (r.returncode, r.stdout.strip()) == (0, "inclavare 0.1.0"), r.stderr
    r = image("image", "inspect", "--format", "{{.Config.Entrypoint}}", TAG)
    assert r.stdout.strip() == "[/opt/inclavare/bin/inclavare]"


def test_installer_in_the_image_installs_on_a_node_root_and_restores_it(image: Podman, tmp_path: Path,
                                                                        runc_bin: str) -> None:
    node = tmp_path / "node"
    (node / "etc/containerd").mkdir(parents=True)
    (node / "usr/sbin").mkdir(parents=True)
    shutil.copy(runc_bin, node / "usr/sbin/runc")
    config = node / "etc/containerd/config.toml"
    config.write_bytes(NODE_CONFIG)

    def installer(*args: str) -> subprocess.CompletedProcess[str]:
        return image("run", "--rm", *RUN_FLAGS, "-v", f"{node}:/host", TAG, "node", *args, "--host-root", "/host")

    r = installer("install", "--copy-payload")
    assert r.returncode == 0, r.stderr
    assert "changed" in r.stdout
    launcher = node / "opt/inclavare/bin/rune"
    assert launcher.read_bytes()[:4] == b"\x7fELF"
    assert b"/usr/sbin/runc" in launcher.read_bytes()  # the node's runc, not the image's view of it
    assert b'BinaryName = "/opt/inclavare/bin/rune"' in config.read_bytes()
    assert list((node / "var/lib/inclavare/runelet/native").glob("attest-*"))  # prebuilt tools
    # The copied interpreter runs on this host from the node's prefix (relocatable).
    python = node / "opt/inclavare/python/bin/python3.11"
    out = subprocess.run([str(python), "-I", "-c", "import sys, ssl, ctypes; print(sys.prefix)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(node / "opt/inclavare/python"), out.stderr
    installed = config.read_bytes()
    again = installer("install", "--copy-payload")
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert config.read_bytes() == installed

    r = installer("uninstall")
    assert r.returncode == 0, r.stderr
    assert config.read_bytes() == NODE_CONFIG
    assert not launcher.exists() and not (node / "opt/inclavare/python").exists()
