"""A private containerd for tests: config, root, state and socket in a temp dir; loopback only.

Runs the Debian containerd 1.6 with the CRI plugin configured the way a Kubernetes node would
reach rune (a runtime handler whose runc ``BinaryName`` is the rune launcher), plus
``restrict_oom_score_adj`` (this machine lacks CAP_SYS_RESOURCE). See research/environment.md §1–2.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from inclavare.sample_images import build_busybox_rootfs, build_oci_archive

CONFIG = """version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[debug]
  level = "info"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/pause:busybox"
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
{rune_runtime}    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni_bin}"
      conf_dir = "{cni_conf}"
"""
RUNE_RUNTIME = """      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]
        runtime_type = "io.containerd.runc.v2"
        pod_annotations = ["enclave.*"]
        container_annotations = ["enclave.*"]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune.options]
          BinaryName = "{rune}"
"""


class Containerd:
    """Start/stop a containerd daemon and run ``ctr`` against it (``rune=None``: a node's config
    without rune's runtime handler, as `inclavare node install` finds it)."""

    def __init__(self, workdir: Path, rune: str | None, env: dict[str, str] | None = None,
                 namespace: str = "inclavare-test") -> None:
        self.dir = workdir
        self.rune = rune
        self.namespace = namespace
        self.socket = str(workdir / "containerd.sock")
        self.log_path = workdir / "containerd.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    def start(self, write_config: bool = True) -> "Containerd":
        for d in ("root", "state", "cni-bin", "cni-conf", "logs"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        config = self.config
        if write_config:
            rune_runtime = RUNE_RUNTIME.format(rune=self.rune) if self.rune else ""
            config.write_text(CONFIG.format(
                root=self.dir / "root", state=self.dir / "state", socket=self.socket,
                rune_runtime=rune_runtime, cni_bin=self.dir / "cni-bin", cni_conf=self.dir / "cni-conf"))
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log_path.read_text()[-2000:]}")
            if os.path.exists(self.socket) and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("containerd did not become ready in 20 s")

    def ctr(self, *args: str, check: bool = True, namespace: str | None = None,
            timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "--address", self.socket, "--namespace", namespace or self.namespace, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env,
                           stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
        return r

    def import_busybox(self, tmp: Path, name: str = "localhost/busybox", namespace: str | None = None,
                       cmd: tuple[str, ...] = ("/bin/sh",), entrypoint: tuple[str, ...] | None = None,
                       rootfs: str | None = None, tag: str = "latest") -> str:
        rootfs = rootfs or build_busybox_rootfs(str(tmp / f"rootfs-{name.replace('/', '_')}"))
        archive = build_oci_archive(rootfs, str(tmp / f"{name.replace('/', '_')}-{tag}.tar"), cmd=cmd,
                                    entrypoint=entrypoint, ref=tag)
        self.ctr("images", "import", "--base-name", name, archive, namespace=namespace)
        return f"{name}:{tag}"

    def restart(self) -> None:
        """Stop the daemon only (shims, tasks, images stay, as on a node) and start it again on
        the config file as it now is."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.start(write_config=False)

    def stop(self) -> None:
        if self.proc is None:
            return
        for ns in {self.namespace, "k8s.io"}:
            tasks = self.ctr("tasks", "list", "-q", check=False, namespace=ns).stdout.split()
            for t in tasks:
                self.ctr("tasks", "kill", "-s", "SIGKILL", t, check=False, namespace=ns)
                self.ctr("tasks", "delete", "--force", t, check=False, namespace=ns)
            for c in self.ctr("containers", "list", "-q", check=False, namespace=ns).stdout.split():
                self.ctr("containers", "delete", c, check=False, namespace=ns)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        # Shims outlive the daemon by design; stop the ones that served this daemon.
        subprocess.run(["pkill", "-f", f"containerd-shim-runc-v2.*{self.socket}"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.dir / "root")], capture_output=True)
        shutil.rmtree(self.dir / "root", ignore_errors=True)
