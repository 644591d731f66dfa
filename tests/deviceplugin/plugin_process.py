"""Run `inclavare device-plugin serve` as a real process for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import stop


class PluginProcess:
    def __init__(self, directory: str, log: Path, epc_mib: int = 64, agent_socket: str = "",
                 extra: tuple[str, ...] = ()) -> None:
        self.directory, self.log = directory, log
        self.cmd = [str(Path(sys.executable).parent / "inclavare"), "device-plugin", "serve",
                    "--device-plugin-dir", directory, "--epc-mib", str(epc_mib),
                    "--agent-socket", agent_socket, "--health-interval", "0.2", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "PluginProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        stop(self.proc, 10)
        rc = self.proc.returncode
        self.proc = None
        return rc
