"""The agent-side half of rune's native launcher: plan enclave containers in the warm agent.

rune's native launcher (src/inclavare/native/rune.c) decides most calls without any
interpreter. When a ``create``/``run`` bundle mentions an enclave it posts its argv, working
directory and runc path to the agent's control socket (``POST /v1/prepare``); the agent — whose
enclave pool and imports are already warm — runs the same :func:`plan_create` rune's slow path
runs and answers with the argv for runc (NUL-separated), or ``409`` when the call needs rune's
own process (the launcher then starts the Python slow path), or the error text.

Wired into the agent by ``inclavare agent serve`` (the services layer does not import the
runtime layer).
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from inclavare.services.agent.server import Agent

PREPARE_PATH = "/v1/prepare"


class PrepareRejected(InclavareError):
    """The request itself is malformed."""

    exit_code = 2


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
        raise PrepareRejected(f"{key} must be a list of strings without NUL")
    return value


def _path(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or (value and not os.path.isabs(value)) or "\0" in value:
        raise PrepareRejected(f"{key} must be an absolute path")
    return value


def make_prepare_handler(agent: Agent) -> Callable[[Any], tuple[int, Any]]:
    """A control-socket handler planning creates with this agent's pool and registry."""
    from inclavare.runtime.enclave_create import ENCLAVE, plan_create
    from inclavare.runtime.host_settings import Host
    from inclavare.runtime.invocation import Invocation
    from inclavare.runtime.oci_log import RuneLog

    base_host = Host.from_environment(agent_socket=agent.control_socket, state_dir=agent.state_dir)
    from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt

    ensure_runelet_rt(base_host.runelet_dir)  # the enclave side's runtime folder: now, not at the first create

    def register(doc: dict[str, Any]) -> dict[str, Any]:
        return agent.register(doc)

    def handle(body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise PrepareRejected("request body must be a JSON object")
        argv = _strings(body, "argv")
        cwd = _path(body, "cwd") or "/"
        runc = _path(body, "runc")
        if not runc:
            raise PrepareRejected("runc is required")
        state_base = _path(body, "state_base", base_host.state_base) or base_host.state_base
        host = Host(state_base=state_base, agent_socket=base_host.agent_socket,
                    epm_dir=base_host.epm_dir, runelet_dir=base_host.runelet_dir)
        inv = Invocation(argv)
        if inv.command not in ("create", "run"):
            raise PrepareRejected(f"prepare is for create and run, not {inv.command or 'nothing'}")
        log_path = inv.globals.get("log", "")
        log = RuneLog(os.path.join(cwd, log_path) if log_path and log_path != "/dev/stderr" else "",
                      inv.globals.get("log-format", "text"),
                      debug=inv.globals.get("debug", "false") not in ("false", "0", ""))
        plan = plan_create(inv, runc, log, host, register, cwd=cwd)
        if plan.kind != ENCLAVE:
            return 409, {"detail": f"rune handles this call itself ({plan.kind})"}
        return 200, "\0".join(plan.argv).encode()

    return handle
