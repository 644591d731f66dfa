"""Where the node agent lives on a host (overridable by flags and environment)."""

from __future__ import annotations

import os

DEFAULT_STATE_DIR = "/var/lib/inclavare"  # persistent: simulated TEE keys, enclave pool
DEFAULT_RUN_DIR = "/run/inclavare"  # volatile: sockets, registrations (containers die with the host too)
SOCKET_ENV = "INCLAVARE_AGENT_SOCKET"
CONTROL_SOCKET_NAME = "agent.sock"
CHANNELS_DIR_NAME = "enclaves"  # one channel directory per enclave container, beside the control socket


def default_control_socket() -> str:
    return os.environ.get(SOCKET_ENV) or os.path.join(DEFAULT_RUN_DIR, CONTROL_SOCKET_NAME)


def channels_dir_for(control_socket: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(control_socket)), CHANNELS_DIR_NAME)
