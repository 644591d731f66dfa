"""rune's entry point: hand the call to runc unchanged unless an enclave is involved.

This module is imported on every runtime call a container engine makes, so it imports nothing
but the built-in ``posix`` and ``sys`` modules (even ``os`` costs a measurable share of a
30 ms ``runc run``) and decides with at most one file read (``create``/``run``: the bundle's
``config.json``) or one ``stat`` (other container commands: does rune hold state for this
container?). Everything else lives in :mod:`inclavare.runtime.rune_cli`, imported only when an
enclave is configured or rune has its own work to do.
"""

import posix
import sys

DEFAULT_RUNC = "/usr/sbin/runc"
RUNC_ENV = "INCLAVARE_RUNC"
STATE_DIR_ENV = "INCLAVARE_RUNE_STATE"
EXPLAIN_ENV = "INCLAVARE_RUNE_EXPLAIN"
DEFAULT_STATE_DIR = "/run/inclavare/rune"
DEFAULT_RUNC_ROOT = "/run/runc"

# runc 1.1 global flags that take a value (urfave/cli accepts -x, --x, --x=v, -x v).
GLOBAL_VALUE_FLAGS = frozenset({"log", "log-format", "root", "criu", "rootless"})

# Command flags that take a value, per runc command; needed to find the positional arguments.
_RUN_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds"})
COMMAND_VALUE_FLAGS: dict[str, frozenset[str]] = {
    "create": _RUN_FLAGS,
    "run": _RUN_FLAGS,
    "exec": frozenset({
        "console-socket", "cwd", "env", "e", "user", "u", "additional-gids", "g", "process",
        "p", "pid-file", "process-label", "apparmor", "cap", "c", "preserve-fds", "cgroup",
    }),
    "list": frozenset({"format", "f"}),
    "ps": frozenset({"format", "f"}),
    "events": frozenset({"interval"}),
    "spec": frozenset({"bundle", "b"}),
    "update": frozenset({
        "resources", "r", "blkio-weight", "cpu-period", "cpu-quota", "cpu-share",
        "cpu-rt-period", "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "kernel-memory",
        "kernel-memory-tcp", "memory", "memory-reservation", "memory-swap", "pids-limit",
        "l3-cache-schema", "mem-bw-schema",
    }),
    "checkpoint": frozenset({
        "image-path", "work-path", "parent-path", "status-fd", "page-server",
        "manage-cgroups-mode", "empty-ns",
    }),
    "attest": frozenset({"runtime-data", "quote-type", "spid", "subscription-key", "key", "reportFile"}),
    "restore": frozenset({
        "console-socket", "image-path", "work-path", "manage-cgroups-mode", "bundle", "b",
        "pid-file", "empty-ns", "lsm-profile", "lsm-mount-context",
    }),
}

# Commands that name an existing container and need rune when it is an enclave container.
# `start` and `kill` never do: runc acts on the enclave runtime's own process. `exec` does only
# for runtimes that run the payload through the runelet (marker file RUNELET_MARKER).
ENCLAVE_AWARE_COMMANDS = frozenset({"exec", "delete", "state"})
RUNELET_MARKER = "runelet"
# Commands only rune has.
RUNE_ONLY_COMMANDS = frozenset({"attest"})


class Invocation:
    """The parts of a runc command line rune needs: global flags, command, its flags, positionals."""

    __slots__ = ("argv", "globals", "command", "command_index", "flags", "positionals")

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.globals: dict[str, str] = {}
        self.command = ""
        self.command_index = len(argv)
        self.flags: dict[str, str] = {}
        self.positionals: list[str] = []
        self._parse()

    def _parse(self) -> None:
        argv, n, i = self.argv, len(self.argv), 0
        while i < n:
            arg = argv[i]
            if arg == "--" or not arg.startswith("-") or arg == "-":
                break
            name, eq, value = arg.lstrip("-").partition("=")
            if name in GLOBAL_VALUE_FLAGS and not eq:
                i += 1
                value = argv[i] if i < n else ""
            self.globals[name] = value if (eq or name in GLOBAL_VALUE_FLAGS) else "true"
            i += 1
        if i < n and argv[i] == "--":
            i += 1
        if i >= n:
            return
        self.command, self.command_index = argv[i], i
        value_flags = COMMAND_VALUE_FLAGS.get(self.command, frozenset())
        i += 1
        while i < n:
            arg = argv[i]
            if arg == "--":
                self.positionals.extend(argv[i + 1:])
                return
            if not arg.startswith("-") or arg == "-":
                # urfave/cli v1 stops parsing flags at the first positional argument.
                self.positionals.extend(argv[i:])
                return
            name, eq, value = arg.lstrip("-").partition("=")
            if name in value_flags and not eq:
                i += 1
                value = argv[i] if i < n else ""
            elif not eq:
                value = "true"
            self.flags[name] = value
            i += 1

    @property
    def root(self) -> str:
        return self.globals.get("root") or DEFAULT_RUNC_ROOT

    @property
    def container_id(self) -> str:
        return self.positionals[0] if self.positionals else ""

    @property
    def bundle(self) -> str:
        return self.flags.get("bundle") or self.flags.get("b") or "."


def getenv(name: str) -> str:
    value = posix.environ.get(name.encode())
    return value.decode("utf-8", "surrogateescape") if value else ""


def abspath(path: str) -> str:
    """``os.path.abspath`` without importing ``os`` (same result: absolute and normalised)."""
    if not path.startswith("/"):
        path = posix.getcwd() + "/" + path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def state_path(root: str, container_id: str, base: str = "") -> str:
    """Where rune keeps what it knows of an enclave container (mirrors runc's --root)."""
    base = base or getenv(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return abspath(base) + abspath(root) + "/" + container_id


def may_configure_enclave(bundle: str) -> bool:
    """Cheap pre-check: can the bundle's config.json mention enclave configuration at all?

    A substring test on the raw bytes; only a hit pays for JSON parsing in the slow path.
    An unreadable config also goes to the slow path, which reports it the way runc would.
    """
    try:
        fd = posix.open(bundle + "/config.json", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False  # runc reports the missing/unreadable bundle itself
    try:
        chunks = []
        while True:
            chunk = posix.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        posix.close(fd)
    data = b"".join(chunks)
    return b"enclave." in data or b"ENCLAVE_" in data


def valid_id(cid: str) -> bool:
    """runc's container id rule (``^[\\w+-\\.]+$``, not "." or ".."); rune keeps no state otherwise."""
    if not cid or cid in (".", ".."):
        return False
    for ch in cid:
        if not (ch.isalnum() or ch in "_+-."):
            return False
    return cid.isascii()


def needs_rune(inv: Invocation) -> bool:
    cmd = inv.command
    if cmd in ("create", "run"):
        return may_configure_enclave(inv.bundle)
    if cmd in ENCLAVE_AWARE_COMMANDS:
        cid = inv.container_id
        if not valid_id(cid):
            return False
        path = state_path(inv.root, cid)
        return exists(path + "/" + RUNELET_MARKER if cmd == "exec" else path)
    if cmd in RUNE_ONLY_COMMANDS:
        return True
    return "version" in inv.globals or "v" in inv.globals


def exec_runc(runc: str, argv: list[str]) -> None:
    try:
        posix.execv(runc, [runc, *argv])
    except OSError as exc:
        from inclavare.runtime.oci_log import fatal

        fatal(argv, f"rune: cannot execute runc at {runc}: {exc.strerror} "
                    f"(set {RUNC_ENV} or reinstall rune with `inclavare install-rune --runc PATH`)")


def main(argv: list[str], runc: str = DEFAULT_RUNC) -> int:
    runc = getenv(RUNC_ENV) or runc
    inv = Invocation(argv)
    decision = needs_rune(inv)
    if getenv(EXPLAIN_ENV):  # tests keep the native launcher's decisions in step with these
        sys.stdout.write("rune\n" if decision else "runc\n")
        return 0
    if not decision:
        exec_runc(runc, argv)
    from inclavare.runtime.rune_cli import run_slow_path

    return run_slow_path(inv, runc)


def console_main() -> None:
    """Entry point of the pip-generated script (the installed fast launcher calls :func:`main`)."""
    sys.exit(main(sys.argv[1:]))
