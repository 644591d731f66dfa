"""Where the node agent lives on a host (overridable by flags and environment)."""

from __future__ import annotations

import os

DEFAULT_STATE_DIR = "/var/lib/inclavare"  # persistent: simulated TEE keys, enclave pool
DEFAULT_RUN_DIR = "/run/inclavare"  # volatile: sockets, registrations (containers die with the host too)
SOCKET_ENV = "INCLAVARE_AGENT_SOCKET"
CONTROL_SOCKET_NAME = "agent.sock"
WORKLOAD_DIR_NAME = "workload"  # mounted read-only at /run/inclavare in every enclave container
WORKLOAD_SOCKET_NAME = "agent.sock"
IN_CONTAINER_DIR = "/run/inclavare"


def default_control_socket() -> str:
    return os.environ.get(SOCKET_ENV) or os.path.join(DEFAULT_RUN_DIR, CONTROL_SOCKET_NAME)


def workload_dir_for(control_socket: str) -> str:
    """The workload directory sits next to the control socket."""
    return os.path.join(os.path.dirname(os.path.abspath(control_socket)), WORKLOAD_DIR_NAME)
