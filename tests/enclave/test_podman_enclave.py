"""A sim enclave container under podman (`podman --runtime rune run --annotation enclave.type=sim`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from inclavare.sample_images import build_busybox_rootfs, rootfs_tar
from tests.enclave.conftest import verify_sim_evidence
from tests.integration.test_podman import RUN_FLAGS, Podman
from tests.support.agent import AgentProcess

pytestmark = [pytest.mark.root, pytest.mark.podman]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, runc_bin: str, agent: AgentProcess) -> Iterator[Podman]:
    if subprocess.run(["which", "podman"], capture_output=True).returncode != 0:
        pytest.skip("podman is not installed (make setup installs it)")
    work = tmp_path_factory.mktemp("podman-enclave")
    # podman does not pass its environment to the runtime: bake this agent's locations in
    from inclavare.runtime.launcher import install_launcher

    rune = str(work / "rune")
    install_launcher(rune, runc_bin, "auto", agent_socket=agent.socket,
                     state_dir=agent.env["INCLAVARE_RUNE_STATE"])
    p = Podman(work, rune)
    tar = rootfs_tar(build_busybox_rootfs(str(work / "rootfs")), str(work / "rootfs.tar"))
    assert p("import", "--change", "ENV PATH=/bin", tar, "localhost/bb:latest").returncode == 0
    try:
        yield p
    finally:
        p.cleanup()


def test_podman_runs_a_sim_enclave_container(podman: Podman, agent: AgentProcess) -> None:
    r = podman("run", "--rm", *RUN_FLAGS, "--annotation", "enclave.type=sim", "localhost/bb:latest",
               "/run/inclavare/bin/attest", "evidence", "--runtime-data", "via-podman")
    assert r.returncode == 0, r.stderr
    claims = verify_sim_evidence(agent, r.stdout).claims
    assert claims.report_data.rstrip(b"\0") == b"via-podman"
