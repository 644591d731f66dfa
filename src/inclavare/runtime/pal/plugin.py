"""The enclave runtime plugin protocol, the adapter for C PALs, and runtime discovery.

An enclave runtime offers the PAL operations in Python form (:class:`EnclaveRuntime`). C
``liberpal-*.so`` libraries are reached through :class:`PalRuntime`; Python runtimes register
under the entry-point group ``inclavare.enclave_runtimes`` (``name = "module:Factory"``, the
factory called without arguments). :func:`load_enclave_runtime` takes either: a reference
containing ``/`` is a library path, anything else a registered name.
"""

from __future__ import annotations

import errno as errno_mod
import importlib
import itertools
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from inclavare.errors import ConfigError, InclavareError, NotSupportedError, PalError
from inclavare.runtime.pal.abi import PalLibrary, PrebuiltEnclave, StdioFds
from inclavare.runtime.pal.process_status import status_from_exit_code

ENTRY_POINT_GROUP = "inclavare.enclave_runtimes"
BUILTIN_PREFIX = "inclavare.runtime.pal."

__all__ = [
    "ENTRY_POINT_GROUP", "EnclaveRuntime", "PalRuntime", "PrebuiltEnclave", "StdioFds",
    "available_enclave_runtimes", "load_builtin_runtime", "load_enclave_runtime",
    "runtime_target",
]


@runtime_checkable
class EnclaveRuntime(Protocol):
    """The PAL operations. Errors raise :class:`PalError` (with an errno) or
    :class:`NotSupportedError`; nothing returns an error code.

    ``direct_launch``: ``create_process`` + ``exec`` of the container's process is
    equivalent to executing it in place as the container's pid 1, so rune may skip the
    runelet. ``required_devices`` / ``required_mounts``: host paths the runtime needs inside
    the container (device nodes, sockets), injected by the launch planner.
    """

    name: str
    direct_launch: bool
    required_devices: tuple[str, ...]
    required_mounts: tuple[str, ...]

    def get_version(self) -> int:
        """The PAL API version the runtime implements (1 to 3)."""

    def init(self, args: str, log_level: str, enclave: PrebuiltEnclave | None = None) -> None:
        """Create the enclave. ``args``: space-separated runtime arguments."""

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str],
                       stdio: StdioFds) -> int:
        """Create a process in the enclave (it may start running); returns its pid."""

    def exec(self, pid: int) -> int:
        """Wait for process ``pid``; returns its wait(2) status."""

    def kill(self, pid: int, sig: int) -> None:
        """Signal process ``pid``; -1 means every process of the enclave."""

    def destroy(self) -> None:
        """Tear the enclave down, terminating processes left in it."""

    def get_local_report(self, target_info: bytes) -> bytes:
        """An SGX-style local report (432 bytes) targeted at ``target_info`` (512 bytes)."""


class PalRuntime:
    """A C PAL library behind the :class:`EnclaveRuntime` protocol.

    For a v1 library ``create_process`` only records the request and returns a local handle;
    ``exec`` then runs the synchronous v1 ``pal_exec`` (which has no environment parameter:
    the process inherits the caller's environment) and ``kill`` is not supported.
    """

    direct_launch = False
    required_devices: tuple[str, ...] = ()
    required_mounts: tuple[str, ...] = ()

    def __init__(self, library: PalLibrary) -> None:
        self.library = library
        self.name = library.path
        self._pending: dict[int, tuple[str, tuple[str, ...], StdioFds]] = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str) -> PalRuntime:
        return cls(PalLibrary.load(path))

    def get_version(self) -> int:
        return self.library.version

    def init(self, args: str, log_level: str, enclave: PrebuiltEnclave | None = None) -> None:
        self.library.init(args, log_level, enclave)

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str],
                       stdio: StdioFds) -> int:
        if self.library.version >= 2:
            return self.library.create_process(path, argv, env, stdio)
        with self._lock:
            handle = next(self._handles)
            self._pending[handle] = (path, tuple(argv), stdio)
        return handle

    def exec(self, pid: int) -> int:
        if self.library.version >= 2:
            return self.library.exec(pid)
        with self._lock:
            request = self._pending.pop(pid, None)
        if request is None:
            raise PalError(f"pal_exec: no process {pid} was created", errno_mod.ESRCH)
        return status_from_exit_code(self.library.exec_v1(*request))

    def kill(self, pid: int, sig: int) -> None:
        if self.library.version < 2:
            raise NotSupportedError(f"{self.library.path} implements pal api version 1, which has "
                                    "no pal_kill: signals cannot reach the enclave")
        self.library.kill(pid, sig)

    def destroy(self) -> None:
        self.library.destroy()

    def get_local_report(self, target_info: bytes) -> bytes:
        if self.library.version < 3:
            raise NotSupportedError(f"{self.library.path} implements pal api version "
                                    f"{self.library.version}; local reports need version 3")
        return self.library.get_local_report(target_info)


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points  # heavy: only when discovering

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_enclave_runtimes() -> list[str]:
    """Names of the registered Python enclave runtimes."""
    return sorted(_entry_points())


def runtime_target(name: str) -> str:
    """The ``module:attribute`` a registered runtime name points at."""
    known = _entry_points()
    try:
        return known[name]
    except KeyError:
        listing = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"unknown enclave runtime {name!r} (known: {listing}; "
                          "a C PAL library is given by its path)") from None


def _instantiate(target: str) -> EnclaveRuntime:
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"enclave runtime {target} cannot be loaded: {exc}") from None
    try:
        runtime = factory()
    except InclavareError:
        raise
    except Exception as exc:  # a third-party factory: report, do not crash the caller
        raise ConfigError(f"enclave runtime {target} failed to start: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(runtime, EnclaveRuntime):
        raise ConfigError(f"enclave runtime {target} does not implement the PAL operations")
    return runtime


def load_builtin_runtime(target: str) -> EnclaveRuntime:
    """Instantiate a runtime shipped in this package, by ``module:attribute``.

    The runelet uses this inside the container, where no package metadata exists and only
    this package's own modules are present.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not attr or not module_name.startswith(BUILTIN_PREFIX):
        raise ConfigError(f"{target!r} is not a built-in enclave runtime")
    return _instantiate(target)


def load_enclave_runtime(ref: str) -> EnclaveRuntime:
    """A runtime from a PAL library path (``ref`` contains ``/``) or a registered name."""
    if "/" in ref:
        return PalRuntime.load(ref)
    return _instantiate(runtime_target(ref))
