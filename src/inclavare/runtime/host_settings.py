"""Where rune finds runc, its own state and the node's enclave folders on this host.

The environment variables rune reads, their defaults, the few path helpers built on them, and
:class:`Host`, the same settings bundled for planning a create (in rune's slow path or in the
node agent). rune's fast path reads these on every call, so this module imports only the
built-in ``posix`` (and :mod:`inclavare.runtime.invocation`, which imports nothing).
"""

import posix

from inclavare.immutable import Immutable
from inclavare.runtime.invocation import DEFAULT_RUNC_ROOT as DEFAULT_RUNC_ROOT  # runc's default, re-exported

DEFAULT_RUNC = "/usr/sbin/runc"
RUNC_ENV = "INCLAVARE_RUNC"
STATE_DIR_ENV = "INCLAVARE_RUNE_STATE"
EXPLAIN_ENV = "INCLAVARE_RUNE_EXPLAIN"
DEFAULT_STATE_DIR = "/run/inclavare/rune"
EPM_DIR_ENV = "INCLAVARE_EPM_DIR"
RUNELET_DIR_ENV = "INCLAVARE_RUNELET_DIR"
DEFAULT_RUNELET_DIR = "/var/lib/inclavare/runelet"
# In rune's state directory of a container: `exec` must reach the enclave through the runelet.
RUNELET_MARKER = "runelet"


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


class Host(Immutable):
    """Where this node keeps rune's state, the enclave pool and the runelet runtime folder."""

    __slots__ = ("state_base", "agent_socket", "epm_dir", "runelet_dir")
    state_base: str
    agent_socket: str
    epm_dir: str
    runelet_dir: str

    def __init__(self, state_base: str, agent_socket: str, epm_dir: str, runelet_dir: str) -> None:
        self._set(state_base=state_base, agent_socket=agent_socket, epm_dir=epm_dir, runelet_dir=runelet_dir)

    @classmethod
    def from_environment(cls, agent_socket: "str | None" = None, state_dir: "str | None" = None) -> "Host":
        """Paths from the environment; ``state_dir`` (the node agent's ``--state-dir``) holds the
        enclave pool and the runtime folder unless the environment says otherwise."""
        import os

        from inclavare.services.agent.paths import default_control_socket
        from inclavare.tee.epm import DEFAULT_EPM_DIR

        env = os.environ
        return cls(state_base=env.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR,
                   agent_socket=agent_socket or default_control_socket(),
                   epm_dir=env.get(EPM_DIR_ENV) or (os.path.join(state_dir, "epm") if state_dir else DEFAULT_EPM_DIR),
                   runelet_dir=env.get(RUNELET_DIR_ENV) or (os.path.join(state_dir, "runelet") if state_dir
                                                             else DEFAULT_RUNELET_DIR))
