"""What the Occlum and Gramine adapters share: a LibOS launcher run as one host process.

Both LibOSes start an enclave with a command-line tool the image ships (``occlum run``,
``gramine-sgx``); the adapter runs that tool as the enclave's process, relays signals to it
and waits for it. One enclave runs one process tree, so a second ``create_process`` (an
exec into the running container) is refused.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Sequence

from inclavare.errors import NotSupportedError, PalError
from inclavare.runtime.pal.abi import PrebuiltEnclave, StdioFds
from inclavare.runtime.pal.host_processes import HostProcessTable

SGX_DEVICES = ("/dev/sgx_enclave", "/dev/sgx_provision")
AESMD_DIR = "/var/run/aesmd"


def parse_runtime_args(args: str, tool: str) -> tuple[list[str], dict[str, str]]:
    """Space-separated runtime args: ``key=value`` options and bare positional words."""
    words, options = [], {}
    for token in args.split():
        key, sep, value = token.partition("=")
        if sep:
            if key != tool:
                raise PalError(f"unknown enclave runtime option {key!r} (known: {tool}=PATH)",
                               errno_mod.EINVAL)
            options[key] = value
        else:
            words.append(token)
    return words, options


def _which(name: str) -> str:
    for directory in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return ""


def find_tool(name: str, override: str | None) -> str:
    path = override or _which(name)
    if not path or not os.access(path, os.X_OK):
        raise PalError(f"{name} not found in the container image (install it, or pass "
                       f"{name}=PATH in the enclave runtime args)", errno_mod.ENOENT)
    return path


class LibosRuntime:
    """Base of the LibOS adapters: subclasses set ``name``/``tool`` and build the command."""

    name = ""
    tool = ""
    direct_launch = False
    required_devices: tuple[str, ...] = SGX_DEVICES
    required_mounts: tuple[str, ...] = (AESMD_DIR,)

    def __init__(self) -> None:
        self._procs = HostProcessTable(f"{self.name}: ")
        self._launched = False
        self._initialized = False
        self.log_level = "info"
        self.tool_path = ""
        self.workdir = "/"

    def get_version(self) -> int:
        return 2

    def configure(self, words: list[str]) -> None:
        raise NotImplementedError

    def command(self, path: str, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def extra_env(self) -> dict[str, str]:
        return {}

    def init(self, args: str, log_level: str, enclave: PrebuiltEnclave | None = None) -> None:
        words, options = parse_runtime_args(args, self.tool)
        self.log_level = log_level
        self.tool_path = find_tool(self.tool, options.get(self.tool))
        self.configure(words)
        self._initialized = True

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str],
                       stdio: StdioFds) -> int:
        if not self._initialized:
            raise PalError(f"{self.name}: create_process before init", errno_mod.EINVAL)
        if self._launched:
            raise NotSupportedError(f"{self.name} runs one process tree per enclave; running "
                                    "another command in a running enclave is not supported")
        environ = dict(item.partition("=")[::2] for item in env if "=" in item)
        environ.update(self.extra_env())
        pid = self._procs.spawn(self.tool_path, self.command(path, argv), environ, stdio,
                                cwd=self.workdir)
        self._launched = True
        return pid

    def exec(self, pid: int) -> int:
        return self._procs.wait(pid)

    def kill(self, pid: int, sig: int) -> None:
        self._procs.signal(pid, sig)

    def destroy(self) -> None:
        self._procs.terminate_all()

    def get_local_report(self, target_info: bytes) -> bytes:
        raise NotSupportedError(f"{self.name} provides attestation inside the enclave "
                                "(its own SGX device), not through the PAL")
