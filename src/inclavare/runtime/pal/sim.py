"""The simulated TEE's enclave runtime (PAL v3, registered as ``sim``).

It protects nothing: the "enclave" is ordinary processes on the host kernel. It exists so
that every code path above it (rune, the runelet, exec, signals, attestation through
``get_local_report``) runs on machines without TEE hardware. Local reports come from a
provider callable given at construction (the node agent's simulated quoting enclave);
without one, ``get_local_report`` raises :class:`NotSupportedError`.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Callable, Sequence

from inclavare.errors import NotSupportedError, PalError
from inclavare.runtime.pal.abi import REPORT_SIZE, TARGETINFO_SIZE, PrebuiltEnclave, StdioFds
from inclavare.runtime.pal.host_processes import HostProcessTable

ReportProvider = Callable[[bytes], bytes]


class SimEnclaveRuntime:
    """PAL v3 over plain host processes; ``create_process`` starts the process at once."""

    name = "sim"
    direct_launch = True
    required_devices: tuple[str, ...] = ()
    required_mounts: tuple[str, ...] = ()

    def __init__(self, report_provider: ReportProvider | None = None) -> None:
        self._report_provider = report_provider
        self._procs = HostProcessTable("sim: ")
        self._initialized = False
        self.args = ""
        self.log_level = ""

    def get_version(self) -> int:
        return 3

    def init(self, args: str, log_level: str, enclave: PrebuiltEnclave | None = None) -> None:
        if self._initialized:
            raise PalError("sim: init called twice", errno_mod.EINVAL)
        self.args, self.log_level = args, log_level
        self._initialized = True

    def _check(self, call: str) -> None:
        if not self._initialized:
            raise PalError(f"sim: {call} before init", errno_mod.EINVAL)

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str],
                       stdio: StdioFds) -> int:
        self._check("create_process")
        return self._procs.spawn(path, argv, env, stdio)

    def exec(self, pid: int) -> int:
        self._check("exec")
        return self._procs.wait(pid)

    def kill(self, pid: int, sig: int) -> None:
        self._check("kill")
        self._procs.signal(pid, sig)

    def destroy(self) -> None:
        self._procs.terminate_all()
        self._initialized = False

    def get_local_report(self, target_info: bytes) -> bytes:
        if self._report_provider is None:
            raise NotSupportedError("the sim enclave runtime has no report provider "
                                    "(the node agent supplies one)")
        if len(target_info) != TARGETINFO_SIZE:
            raise PalError(f"sim: target info must be {TARGETINFO_SIZE} bytes, got {len(target_info)}",
                           errno_mod.EINVAL)
        report = self._report_provider(bytes(target_info))
        if len(report) != REPORT_SIZE:
            raise PalError(f"sim: report provider returned {len(report)} bytes, expected {REPORT_SIZE}",
                           errno_mod.EPROTO)
        return report
