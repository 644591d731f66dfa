"""Sim enclave containers under containerd (`ctr run --runc-binary rune --annotation enclave.type=sim`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.enclave.conftest import verify_sim_evidence
from tests.support.agent import AgentProcess
from tests.support.containerd import Containerd

pytestmark = [pytest.mark.root, pytest.mark.containerd]


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory, rune_bin: str, agent: AgentProcess) -> Iterator[tuple[Containerd, str]]:
    work = tmp_path_factory.mktemp("ctrd-enclave")
    daemon = Containerd(work, rune_bin, env=agent.env).start()
    try:
        yield daemon, daemon.import_busybox(work)
    finally:
        daemon.stop()


def run(daemon: Containerd, rune: str, cid: str, *cmd: str, check: bool = False):  # type: ignore[no-untyped-def]
    return daemon.ctr("run", "--rm", "--runc-binary", rune, "--annotation", "enclave.type=sim",
                      "localhost/busybox:latest", cid, *cmd, check=check)


def test_busybox_image_gets_verifiable_evidence_through_containerd(
        ctrd: tuple[Containerd, str], rune_bin: str, agent: AgentProcess) -> None:
    daemon, _ = ctrd
    r = run(daemon, rune_bin, "ce1", "/run/inclavare/bin/attest", "evidence", "--runtime-data", "via-ctr")
    assert r.returncode == 0, r.stderr
    claims = verify_sim_evidence(agent, r.stdout).claims
    assert claims.report_data.rstrip(b"\0") == b"via-ctr"
    assert len(claims.mr_enclave) == 32


def test_exit_codes_and_signals_through_containerd(ctrd: tuple[Containerd, str], rune_bin: str,
                                                   agent: AgentProcess) -> None:
    daemon, image = ctrd
    assert run(daemon, rune_bin, "ce2", "/bin/sh", "-c", "exit 3").returncode == 3
    daemon.ctr("run", "-d", "--runc-binary", rune_bin, "--annotation", "enclave.type=sim", image, "ce3",
               "/bin/sh", "-c", "trap 'exit 42' TERM; sleep 300 & wait")
    try:
        assert "ce3" in {c["id"] for c in agent.containers()}
        daemon.ctr("tasks", "kill", "-s", "SIGTERM", "ce3")
        for _ in range(200):
            if "STOPPED" in daemon.ctr("tasks", "list").stdout:
                break
            time.sleep(0.05)
        r = daemon.ctr("tasks", "delete", "ce3")
        assert "exit code 42" in r.stdout + r.stderr
    finally:
        daemon.ctr("tasks", "delete", "--force", "ce3", check=False)
        daemon.ctr("containers", "delete", "ce3", check=False)
    assert "ce3" not in {c["id"] for c in agent.containers()}
