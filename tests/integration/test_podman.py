"""rune under podman (`podman --runtime rune`), with a private storage root."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.sample_images import build_busybox_rootfs, rootfs_tar

pytestmark = [pytest.mark.root, pytest.mark.podman]

# No CAP_SYS_RESOURCE here: podman's default rlimits exceed the hard limits (environment.md §3).
RUN_FLAGS = ["--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


class Podman:
    def __init__(self, work: Path, rune: str, extra_env: dict[str, str] | None = None) -> None:
        self.work, self.rune = work, rune
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "INCLAVARE_RUNE_STATE": str(work / "rune-state"),
                    **(extra_env or {})}
        self.base = ["podman", "--root", str(work / "root"), "--runroot", str(work / "run"),
                     "--tmpdir", str(work / "tmp"), "--cgroup-manager", "cgroupfs",
                     "--events-backend", "file", "--runtime", rune]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env)

    def cleanup(self) -> None:
        self("rm", "--all", "--force")
        # conmon runs `podman container cleanup` after each exit, which re-mounts the storage:
        # wait for those, then drop podman's private bind mount of the overlay directory.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and subprocess.run(
                ["pgrep", "-f", str(self.work)], capture_output=True).returncode == 0:
            time.sleep(0.1)
        overlay = str(self.work / "root" / "overlay")
        while subprocess.run(["mountpoint", "-q", overlay]).returncode == 0:
            if subprocess.run(["umount", overlay], capture_output=True).returncode != 0:
                break


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[Podman]:
    if subprocess.run(["which", "podman"], capture_output=True).returncode != 0:
        pytest.skip("podman is not installed (make setup installs it)")
    work = tmp_path_factory.mktemp("podman")
    p = Podman(work, rune_bin)
    tar = rootfs_tar(build_busybox_rootfs(str(work / "rootfs")), str(work / "rootfs.tar"))
    r = p("import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV PATH=/bin", tar, "localhost/bb:latest")
    assert r.returncode == 0, r.stderr
    try:
        yield p
    finally:
        p.cleanup()


def test_podman_run_through_rune(podman: Podman) -> None:
    r = podman("run", "--rm", *RUN_FLAGS, "localhost/bb:latest", "/bin/sh", "-c", "echo hello-from-podman; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hello-from-podman\n"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Path}}")
    assert info.stdout.strip() == podman.rune


def test_podman_detached_exec_stop(podman: Podman) -> None:
    r = podman("run", "-d", "--name", "svc", *RUN_FLAGS, "localhost/bb:latest", "/bin/sleep", "300")
    assert r.returncode == 0, r.stderr
    try:
        e = podman("exec", "svc", "/bin/sh", "-c", "echo exec-ok; exit 5")
        assert (e.returncode, e.stdout) == (5, "exec-ok\n")
        assert podman("stop", "-t", "1", "svc").returncode == 0
        assert podman("inspect", "--format", "{{.State.Status}}", "svc").stdout.strip() == "exited"
    finally:
        podman("rm", "--force", "svc")


def test_podman_shows_rune_errors(podman: Podman) -> None:
    r = podman("run", "--rm", *RUN_FLAGS, "--env", "ENCLAVE_TYPE=bogus", "localhost/bb:latest", "/bin/echo", "ran")
    assert r.returncode != 0
    assert "ran" not in r.stdout
    assert "enclave type bogus is not supported" in r.stderr


def test_podman_with_json_runtime_errors_names_rune_once(podman: Podman) -> None:
    """With `runtime_supports_json` listing rune (README), podman reads rune's JSON log and adds
    the runtime's name itself: the reason appears once, as `…/rune: enclave type bogus …`."""
    conf = podman.work / "containers-json.conf"
    conf.write_text('[engine]\nruntime_supports_json = ["crun", "runc", "rune"]\n')
    with_json = Podman(podman.work, podman.rune, {"CONTAINERS_CONF": str(conf)})
    r = with_json("run", "--rm", *RUN_FLAGS, "--env", "ENCLAVE_TYPE=bogus", "localhost/bb:latest", "/bin/echo", "ran")
    assert r.returncode != 0 and "ran" not in r.stdout
    assert "rune: enclave type bogus is not supported" in r.stderr and "rune: rune:" not in r.stderr, r.stderr
    assert "level=error" not in r.stderr, r.stderr  # a reason, not a raw log line
