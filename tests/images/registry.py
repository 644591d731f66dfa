"""A real docker-registry (Debian ``docker-registry``) on a loopback ephemeral port, storing in a temp dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import httpx

from tests.support.processes import stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    directory: str
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""

    @property
    def storage(self) -> str:
        return os.path.join(self.directory, "data")

    def start(self, timeout: float = 15.0) -> Registry:
        binary = shutil.which("docker-registry")
        assert binary, "docker-registry is not installed (make setup installs it)"
        for _ in range(3):  # the port is picked before the registry binds it: retry a lost race
            self.address = f"127.0.0.1:{_free_port()}"
            config = os.path.join(self.directory, "config.yml")
            with open(config, "w") as f:
                f.write(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {self.storage}}}}}\n"
                        f"http: {{addr: {self.address}}}\n")
            log = open(os.path.join(self.directory, "registry.log"), "ab")
            self.proc = subprocess.Popen([binary, "serve", config], stdout=log, stderr=log)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"http://{self.address}/v2/", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.directory}/registry.log")

    def blobs(self) -> list[bytes]:
        """Every blob the registry stored (its on-disk bytes, what a registry operator sees)."""
        out = []
        for root, _dirs, files in os.walk(os.path.join(self.storage, "docker", "registry", "v2", "blobs")):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    out.append(f.read())
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop(self.proc, 10)
