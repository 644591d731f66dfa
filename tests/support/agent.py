"""Start and stop a node agent (`inclavare agent serve`) in a temp dir, as a real process."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from inclavare.services.agent import client
from tests.support.processes import stop


class AgentProcess:
    def __init__(self, work: Path, kbs_url: str | None = None, epc_mib: int = 0, log_format: str = "text") -> None:
        self.work = work
        self.epc_mib = epc_mib
        self.log_format = log_format
        self.state_dir = work / "state"
        self.socket = str(work / "run" / "agent.sock")
        self.channels_dir = str(work / "run" / "enclaves")  # one channel directory per enclave container
        self.kbs_url = kbs_url
        self.registries: list[str] = []  # --registry URL (guest pull)
        self.log = work / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What rune needs to find this agent and keep its state beside it."""
        return {"INCLAVARE_AGENT_SOCKET": self.socket, "INCLAVARE_EPM_DIR": str(self.work / "epm"),
                "INCLAVARE_RUNE_STATE": str(self.work / "rune-state"),
                "INCLAVARE_RUNELET_DIR": str(self.work / "runelet")}

    def start(self, timeout: float = 60, nofile: int | None = None) -> "AgentProcess":
        """``nofile``: the agent's descriptor limit (soft and hard), to make exhaustion reachable."""
        cmd = [str(Path(sys.executable).parent / "inclavare"), "agent", "serve",
               "--state-dir", str(self.state_dir), "--socket", self.socket]
        if self.kbs_url:
            cmd += ["--kbs-url", self.kbs_url]
        if self.epc_mib:
            cmd += ["--epc-mib", str(self.epc_mib)]
        for url in self.registries:
            cmd += ["--registry", url]
        if self.log_format != "text":
            cmd += ["--log-format", self.log_format]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **self.env},
                                         preexec_fn=None if nofile is None else lambda: resource.setrlimit(
                                             resource.RLIMIT_NOFILE, (nofile, nofile)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-3000:]}")
            try:
                if client.call(self.socket, "GET", "/v1/health", timeout=2)["status"] == "ok":
                    return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("agent did not become ready")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop(self.proc, 10)
        self.proc = None

    def containers(self) -> list[dict]:  # type: ignore[type-arg]
        return client.call(self.socket, "GET", "/v1/containers")  # type: ignore[no-any-return]
