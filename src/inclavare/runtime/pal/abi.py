"""The enclave runtime PAL C ABI (versions 1 to 3), called through ctypes.

Exactly what upstream rune builds (Inclavare ``rune/libenclave/internal/runtime/pal``): the
library is opened with ``RTLD_NOW``; a library without ``pal_get_version`` is version 1; a
version above 3 is refused. Structures are the plain (unpacked) C layouts::

    struct pal_attr_t { const char *args; const char *log_level; };
    struct pal_attr_v3_t { struct pal_attr_t attr_v1; int fd; uint64_t addr; };
    struct pal_stdio_fds { int stdin, stdout, stderr; };
    struct pal_create_process_args { char *path; char **argv; char **env;
                                     struct pal_stdio_fds *stdio; int *pid; };
    struct pal_exec_args { int pid; int *exit_value; };

A negative return is a failure: ``-errno`` by convention; Occlum returns ``-1`` and sets
``errno``, which is honoured when set. Failures raise :class:`inclavare.errors.PalError`
carrying the errno and naming the call.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
from collections.abc import Sequence
from dataclasses import dataclass

from inclavare.errors import PalError

PAL_API_MIN = 1
PAL_API_MAX = 3
TARGETINFO_SIZE = 512
REPORT_SIZE = 432

# Symbols each negotiated version must export (upstream resolves all of them at load).
REQUIRED_SYMBOLS: dict[int, tuple[str, ...]] = {
    1: ("pal_init", "pal_exec", "pal_destroy"),
    2: ("pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_kill", "pal_destroy"),
    3: ("pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_kill", "pal_destroy",
        "pal_get_local_report"),
}


class PalLoadError(PalError):
    """The library cannot be loaded, or does not offer the ABI of the version it declares."""


class PalAttr(ctypes.Structure):
    _fields_ = [("args", ctypes.c_char_p), ("log_level", ctypes.c_char_p)]


class PalAttrV3(ctypes.Structure):
    _fields_ = [("attr_v1", PalAttr), ("fd", ctypes.c_int), ("addr", ctypes.c_uint64)]


class PalStdioFds(ctypes.Structure):
    _fields_ = [("stdin", ctypes.c_int), ("stdout", ctypes.c_int), ("stderr", ctypes.c_int)]


class PalCreateProcessArgs(ctypes.Structure):
    _fields_ = [
        ("path", ctypes.c_char_p),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("env", ctypes.POINTER(ctypes.c_char_p)),
        ("stdio", ctypes.POINTER(PalStdioFds)),
        ("pid", ctypes.POINTER(ctypes.c_int)),
    ]


class PalExecArgs(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int), ("exit_value", ctypes.POINTER(ctypes.c_int))]


@dataclass(frozen=True)
class StdioFds:
    """The three file descriptors a process gets as its standard input, output and error."""

    stdin: int = 0
    stdout: int = 1
    stderr: int = 2


@dataclass(frozen=True)
class PrebuiltEnclave:
    """A pre-built enclave handed to ``pal_init`` v3 (from the enclave pool): its device fd
    and base address. Absent means ``fd = -1, addr = 0``."""

    fd: int
    addr: int


def _c_string(value: str, what: str, call: str) -> bytes:
    raw = os.fsencode(value)
    if b"\x00" in raw:
        raise PalError(f"{call}: {what} must not contain NUL bytes", errno_mod.EINVAL)
    return raw


def _c_string_array(values: Sequence[str], what: str, call: str) -> ctypes.Array[ctypes.c_char_p]:
    items = [_c_string(v, what, call) for v in values]
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _stdio(stdio: StdioFds) -> PalStdioFds:
    return PalStdioFds(stdio.stdin, stdio.stdout, stdio.stderr)


def _describe(err: int) -> str:
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return "unknown error"


class PalLibrary:
    """One loaded ``liberpal-*.so`` and its negotiated API version.

    ctypes releases the GIL during each call, so a blocking ``pal_exec`` does not stop other
    threads; the library must tolerate concurrent calls, as upstream rune's goroutines
    already require.
    """

    def __init__(self, path: str, handle: ctypes.CDLL, version: int) -> None:
        self.path = path
        self.version = version
        self._lib = handle
        self._bind()

    @classmethod
    def load(cls, path: str) -> PalLibrary:
        """Open ``path`` with ``RTLD_NOW`` and negotiate the API version."""
        try:
            handle = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL, use_errno=True)
        except OSError as exc:
            raise PalLoadError(f"cannot load enclave runtime {path}: {exc}", errno_mod.ENOEXEC) from None
        version = cls._negotiate(path, handle)
        missing = [s for s in REQUIRED_SYMBOLS[version] if not hasattr(handle, s)]
        if missing:
            raise PalLoadError(
                f"enclave runtime {path} declares pal api version {version} but does not export "
                f"{', '.join(missing)}", errno_mod.ENOSYS)
        return cls(path, handle, version)

    @staticmethod
    def _negotiate(path: str, handle: ctypes.CDLL) -> int:
        try:
            get_version = handle.pal_get_version
        except AttributeError:
            return 1  # upstream: no pal_get_version means the v1 API
        get_version.argtypes = []
        get_version.restype = ctypes.c_int
        version = int(get_version())
        if version > PAL_API_MAX:
            raise PalLoadError(f"unsupported pal api version {version} (enclave runtime {path}; "
                               f"this runtime supports {PAL_API_MIN} to {PAL_API_MAX})", errno_mod.ENOSYS)
        if version < PAL_API_MIN:
            raise PalLoadError(f"enclave runtime {path} returned invalid pal api version {version}",
                               errno_mod.EINVAL)
        return version

    def _bind(self) -> None:
        lib, c_int = self._lib, ctypes.c_int
        lib.pal_init.restype = c_int
        lib.pal_destroy.argtypes, lib.pal_destroy.restype = [], c_int
        lib.pal_exec.restype = c_int
        if self.version == 1:
            lib.pal_init.argtypes = [ctypes.POINTER(PalAttr)]
            lib.pal_exec.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                                     ctypes.POINTER(PalStdioFds), ctypes.POINTER(c_int)]
            return
        lib.pal_init.argtypes = [ctypes.POINTER(PalAttrV3 if self.version >= 3 else PalAttr)]
        lib.pal_create_process.argtypes = [ctypes.POINTER(PalCreateProcessArgs)]
        lib.pal_create_process.restype = c_int
        lib.pal_exec.argtypes = [ctypes.POINTER(PalExecArgs)]
        lib.pal_kill.argtypes, lib.pal_kill.restype = [c_int, c_int], c_int
        if self.version >= 3:
            lib.pal_get_local_report.argtypes = [ctypes.c_void_p, c_int, ctypes.c_void_p,
                                                 ctypes.POINTER(c_int)]
            lib.pal_get_local_report.restype = c_int

    def _call(self, name: str, *args: object) -> int:
        ctypes.set_errno(0)
        ret = int(getattr(self._lib, name)(*args))
        if ret < 0:
            err = -ret
            saved = ctypes.get_errno()
            if ret == -1 and saved > 0:
                err = saved  # Occlum's convention: -1 and errno
            raise PalError(f"{name}() failed: {_describe(err)} (errno {err}, returned {ret})", err)
        return ret

    def _require(self, minimum: int, call: str) -> None:
        if self.version < minimum:
            raise PalError(f"{call}() needs pal api version {minimum} or later; "
                           f"{self.path} offers version {self.version}", errno_mod.ENOSYS)

    # -- the PAL operations ---------------------------------------------------------------

    def init(self, args: str, log_level: str, enclave: PrebuiltEnclave | None = None) -> None:
        """``pal_init``; v3 gets the pre-built enclave (``fd -1, addr 0`` when none, and
        always when ``args`` contain ``no-epm``, as upstream rune decides)."""
        if "no-epm" in args:
            enclave = None
        attr = PalAttr(_c_string(args, "args", "pal_init"), _c_string(log_level, "log level", "pal_init"))
        if self.version >= 3:
            fd, addr = (enclave.fd, enclave.addr) if enclave is not None else (-1, 0)
            if not (-1 <= fd < 2**31 and 0 <= addr < 2**64):
                raise PalError("pal_init: pre-built enclave fd/addr out of range", errno_mod.EINVAL)
            self._call("pal_init", ctypes.byref(PalAttrV3(attr, fd, addr)))
        else:
            self._call("pal_init", ctypes.byref(attr))

    def exec_v1(self, path: str, argv: Sequence[str], stdio: StdioFds) -> int:
        """v1 ``pal_exec``: run ``path`` synchronously; returns its exit code."""
        if self.version != 1:
            raise PalError(f"pal_exec(path, argv, ...) is the v1 call; {self.path} is version "
                           f"{self.version}", errno_mod.ENOSYS)
        c_argv = _c_string_array(argv, "argv", "pal_exec")
        fds = _stdio(stdio)
        exit_code = ctypes.c_int(0)
        self._call("pal_exec", _c_string(path, "path", "pal_exec"), c_argv, ctypes.byref(fds),
                   ctypes.byref(exit_code))
        return exit_code.value

    def create_process(self, path: str, argv: Sequence[str], env: Sequence[str], stdio: StdioFds) -> int:
        """v2+ ``pal_create_process``: create (not yet run) a process; returns its pid."""
        self._require(2, "pal_create_process")
        c_path = _c_string(path, "path", "pal_create_process")
        c_argv = _c_string_array(argv, "argv", "pal_create_process")
        c_env = _c_string_array(env, "env", "pal_create_process")
        fds = _stdio(stdio)
        pid = ctypes.c_int(-1)
        args = PalCreateProcessArgs(c_path, c_argv, c_env, ctypes.pointer(fds), ctypes.pointer(pid))
        self._call("pal_create_process", ctypes.byref(args))
        return pid.value

    def exec(self, pid: int) -> int:
        """v2+ ``pal_exec``: run process ``pid`` and wait; returns its exit value (a wait status)."""
        self._require(2, "pal_exec")
        value = ctypes.c_int(0)
        self._call("pal_exec", ctypes.byref(PalExecArgs(pid, ctypes.pointer(value))))
        return value.value

    def kill(self, pid: int, sig: int) -> None:
        """v2+ ``pal_kill``: pid -1 means every process of the enclave."""
        self._require(2, "pal_kill")
        self._call("pal_kill", pid, sig)

    def destroy(self) -> None:
        self._call("pal_destroy")

    def get_local_report(self, target_info: bytes) -> bytes:
        """v3 ``pal_get_local_report``: TARGETINFO (512 bytes) in, REPORT (432 bytes) out."""
        self._require(3, "pal_get_local_report")
        if len(target_info) != TARGETINFO_SIZE:
            raise PalError(f"pal_get_local_report: target info must be {TARGETINFO_SIZE} bytes, "
                           f"got {len(target_info)}", errno_mod.EINVAL)
        ti = ctypes.create_string_buffer(bytes(target_info), TARGETINFO_SIZE)
        report = ctypes.create_string_buffer(REPORT_SIZE)
        length = ctypes.c_int(REPORT_SIZE)
        self._call("pal_get_local_report", ti, TARGETINFO_SIZE, report, ctypes.byref(length))
        if length.value != REPORT_SIZE:
            raise PalError(f"pal_get_local_report() returned a report of {length.value} bytes, "
                           f"expected {REPORT_SIZE}", errno_mod.EPROTO)
        return report.raw
