"""rune under containerd's runc v2 shim (`ctr run --runc-binary`), with a daemon started by the test."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest

from tests.support.containerd import Containerd

pytestmark = [pytest.mark.root, pytest.mark.containerd]


@pytest.fixture(scope="module")
def ctrd(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[tuple[Containerd, str]]:
    work = tmp_path_factory.mktemp("containerd")
    daemon = Containerd(work, rune_bin, env={"INCLAVARE_RUNE_STATE": str(work / "rune-state")}).start()
    try:
        image = daemon.import_busybox(work)
        yield daemon, image
    finally:
        daemon.stop()


def test_run_exit_code_and_output_match_runc(ctrd: tuple[Containerd, str], rune_bin: str) -> None:
    daemon, image = ctrd
    script = "echo hello from ctr; echo to-stderr >&2; exit 3"
    via_rune = daemon.ctr("run", "--rm", "--runc-binary", rune_bin, image, "r1", "/bin/sh", "-c", script, check=False)
    via_runc = daemon.ctr("run", "--rm", image, "r2", "/bin/sh", "-c", script, check=False)
    assert via_rune.returncode == via_runc.returncode == 3
    assert via_rune.stdout == via_runc.stdout
    assert "hello from ctr" in via_rune.stdout and "to-stderr" in via_rune.stdout + via_rune.stderr


def test_detached_run_exec_pause_kill_delete(ctrd: tuple[Containerd, str], rune_bin: str) -> None:
    daemon, image = ctrd
    daemon.ctr("run", "-d", "--runc-binary", rune_bin, image, "d1", "/bin/sleep", "300")
    try:
        info = json.loads(daemon.ctr("containers", "info", "d1").stdout)
        # runc shim options (protobuf): BinaryName carries the rune launcher
        assert rune_bin.encode() in base64.b64decode(info["Runtime"]["Options"]["value"])
        r = daemon.ctr("tasks", "exec", "--exec-id", "e1", "d1", "/bin/sh", "-c", "echo exec-ok; exit 4", check=False)
        assert (r.returncode, r.stdout.strip()) == (4, "exec-ok")
        pids = daemon.ctr("tasks", "ps", "d1").stdout.split()
        assert len(pids) >= 3  # header "PID INFO" and the init process
        daemon.ctr("tasks", "pause", "d1")
        assert "PAUSED" in daemon.ctr("tasks", "list").stdout
        daemon.ctr("tasks", "resume", "d1")
        assert "RUNNING" in daemon.ctr("tasks", "list").stdout
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", "d1")
        for _ in range(100):
            if "STOPPED" in daemon.ctr("tasks", "list").stdout:
                break
            time.sleep(0.05)
        assert "STOPPED" in daemon.ctr("tasks", "list").stdout
        r = daemon.ctr("tasks", "delete", "d1")
        assert "exit code 137" in r.stdout + r.stderr  # exit status of a SIGKILLed init
    finally:
        daemon.ctr("tasks", "delete", "--force", "d1", check=False)
        daemon.ctr("containers", "delete", "d1", check=False)
    assert "d1" not in daemon.ctr("containers", "list", "-q").stdout.split()


@pytest.mark.parametrize("how,message", [
    (["--env", "ENCLAVE_TYPE=bogus"], "enclave type bogus is not supported"),
    (["--annotation", "enclave.type=intelSgx"], "enclave runtime path is not configured"),
])
def test_failing_create_error_text_reaches_ctr(ctrd: tuple[Containerd, str], rune_bin: str,
                                               how: list[str], message: str) -> None:
    daemon, image = ctrd
    r = daemon.ctr("run", "--rm", "--runc-binary", rune_bin, *how, image, "bad1", "/bin/echo", "ran", check=False)
    assert r.returncode != 0
    assert "ran" not in r.stdout
    assert message in r.stderr, r.stderr
    assert "OCI runtime create failed" in r.stderr
    daemon.ctr("containers", "delete", "bad1", check=False)
    assert "bad1" not in daemon.ctr("tasks", "list", "-q").stdout.split()
