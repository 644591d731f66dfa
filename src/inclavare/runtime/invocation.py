"""A runc command line as rune reads it: global flags, command, its flags, positional arguments.

One parser for every place that reads a runc call: rune's fast path, its slow path and the
node agent's prepare service. It imports nothing (not even ``os``): the fast path pays for
every module it loads, on every call a container engine makes.
"""

# runc's own default for --root (where runc keeps its container state).
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
# for runtimes that run the payload through the runelet (marker file
# host_settings.RUNELET_MARKER).
ENCLAVE_AWARE_COMMANDS = frozenset({"exec", "delete", "state"})
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


def valid_id(cid: str) -> bool:
    """runc's container id rule (``^[\\w+-\\.]+$``, not "." or ".."); rune keeps no state otherwise."""
    if not cid or cid in (".", ".."):
        return False
    for ch in cid:
        if not (ch.isalnum() or ch in "_+-."):
            return False
    return cid.isascii()
