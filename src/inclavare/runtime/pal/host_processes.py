"""Processes a Python enclave runtime runs on the host kernel, with PAL semantics.

``spawn`` starts a process with the given stdio and environment (clean signal mask and
dispositions, no inherited descriptors), ``wait`` returns its wait status, ``signal``
reaches one process or all (-1), ``terminate_all`` kills what is left. Shared by the sim,
Occlum and Gramine runtimes.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import signal as signal_mod
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence

from inclavare.errors import PalError
from inclavare.runtime.pal.abi import StdioFds


def env_mapping(env: Sequence[str]) -> dict[str, str]:
    """``KEY=value`` strings as a mapping (later entries win; entries without ``=`` dropped)."""
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    return out


@contextlib.contextmanager
def _unblocked_signals() -> Iterator[None]:
    """A child inherits the forking thread's signal mask: clear it around the fork."""
    old = signal_mod.pthread_sigmask(signal_mod.SIG_SETMASK, [])
    try:
        yield
    finally:
        signal_mod.pthread_sigmask(signal_mod.SIG_SETMASK, old)


class HostProcessTable:
    """The live processes of one enclave runtime instance."""

    def __init__(self, call_prefix: str) -> None:
        self._prefix = call_prefix
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def spawn(self, path: str, argv: Sequence[str], env: Sequence[str] | Mapping[str, str],
              stdio: StdioFds, cwd: str | None = None) -> int:
        for value in (path, *argv):
            if "\x00" in value:
                raise PalError(f"{self._prefix}create_process: NUL byte in path or argv", errno_mod.EINVAL)
        environ = dict(env) if isinstance(env, Mapping) else env_mapping(env)
        if any("\x00" in k or "\x00" in v for k, v in environ.items()):
            raise PalError(f"{self._prefix}create_process: NUL byte in the environment", errno_mod.EINVAL)
        try:
            with _unblocked_signals():
                proc = subprocess.Popen(
                    list(argv) or [path], executable=path, env=environ, cwd=cwd,
                    stdin=stdio.stdin, stdout=stdio.stdout, stderr=stdio.stderr,
                    close_fds=True, restore_signals=True)
        except OSError as exc:
            err = exc.errno or errno_mod.EIO
            raise PalError(f"{self._prefix}create_process: {path}: {os.strerror(err)}", err) from None
        with self._lock:
            self._procs[proc.pid] = proc
        return proc.pid

    def _get(self, pid: int, call: str) -> subprocess.Popen[bytes]:
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None:
            raise PalError(f"{self._prefix}{call}: no process {pid} in this enclave", errno_mod.ESRCH)
        return proc

    def wait(self, pid: int) -> int:
        """Wait for ``pid`` and return its wait status."""
        proc = self._get(pid, "exec")
        code = proc.wait()
        with self._lock:
            self._procs.pop(pid, None)
        return code << 8 if code >= 0 else -code  # Popen gives -N for death by signal N

    def signal(self, pid: int, sig: int) -> None:
        """Signal ``pid``, or every live process for ``pid == -1``."""
        if pid == -1:
            with self._lock:
                targets = list(self._procs.values())
        elif pid > 0:
            targets = [self._get(pid, "kill")]
        else:
            raise PalError(f"{self._prefix}kill: pid {pid} is not supported (-1 or a process id)",
                           errno_mod.EINVAL)
        if not 0 < sig < signal_mod.NSIG:
            raise PalError(f"{self._prefix}kill: invalid signal {sig}", errno_mod.EINVAL)
        for proc in targets:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def pids(self) -> list[int]:
        with self._lock:
            return list(self._procs)

    def terminate_all(self) -> None:
        """SIGKILL and reap every process still running (the enclave is going away)."""
        with self._lock:
            procs = list(self._procs.values())
            self._procs.clear()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in procs:
            with contextlib.suppress(ChildProcessError):
                proc.wait()
