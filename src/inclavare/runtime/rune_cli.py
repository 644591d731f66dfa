"""rune's slow path: calls that involve an enclave, a rewritten bundle, or rune-only commands.

Reached only when :mod:`inclavare.runtime.rune_entry` decided runc cannot take the call as is.
Besides ``--version`` and the run of a spec stripped of ``ENCLAVE_TYPE`` (rune waits for it),
this module only dispatches: ``create``/``run`` are planned by
:mod:`inclavare.runtime.enclave_create`; commands on enclave containers and ``attest`` go to
:mod:`inclavare.runtime.enclave_commands`; ``delete`` and ``state`` of other containers rune
recorded, to :mod:`inclavare.runtime.container_commands`.
Errors are reported the way runc reports them (``--log`` file in its format, plain stderr,
exit status 1), so containerd's shim and podman show rune's reason to the user.

Creating an enclave container is still a start-up path, so this module and what it imports on
that path avoid heavy standard modules (``subprocess``, ``json``, ``dataclasses``, ``typing``,
``socket``): tests/runtime/test_lean_imports.py keeps it that way.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError
from inclavare.runtime.bundle import write_bundle
from inclavare.runtime.container_commands import delete, state
from inclavare.runtime.host_settings import Host
from inclavare.runtime.invocation import Invocation
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.runc_process import exec_runc, runc_knows, spawn, wait_child
from inclavare.runtime.rune_state import ContainerRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def run_slow_path(inv: Invocation, runc: str) -> int:
    log = RuneLog.from_globals(inv.globals)
    try:
        return _dispatch(inv, runc, log)
    except InclavareError as exc:
        log.error(f"rune: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input; still one line where the engine shows it
        log.error(f"rune: internal error: {type(exc).__name__}: {exc}".replace("\n", " "))
        if log.debug_enabled:
            import traceback

            log.debug("".join(traceback.format_exception(exc)))
        return 1


def _dispatch(inv: Invocation, runc: str, log: RuneLog) -> int:
    if "version" in inv.globals or "v" in inv.globals:
        return _version(runc)
    if "help" in inv.globals or "h" in inv.globals:
        return _help(runc)
    cmd = inv.command
    if cmd in ("create", "run"):
        return _create_or_run(inv, runc, log)
    if cmd == "attest":
        from inclavare.runtime.enclave_commands import ATTEST_USAGE, attest

        if "help" in inv.flags or "h" in inv.flags:
            print(ATTEST_USAGE, end="", flush=True)
            return 0

        return attest(inv, runc, log)
    record = ContainerRecord.load(inv.root, inv.container_id)
    if record is None:
        exec_runc(runc, inv.argv)
    assert record is not None
    if record.enclave is not None:
        from inclavare.runtime.enclave_commands import handle_enclave_command

        return handle_enclave_command(inv, runc, log, record)
    if cmd == "delete":
        return delete(inv, runc, record)
    if cmd == "state":
        return state(inv, runc, record)
    exec_runc(runc, inv.argv)
    return 1  # not reached


RUNE_HELP = """
RUNE:
   rune is runc with enclaves (Inclavare): every runc command and flag above works unchanged; a
   container whose bundle asks for an enclave (annotation enclave.type, or ENCLAVE_TYPE in its
   environment) is measured and run inside one.

RUNE COMMANDS:
   attest   print a simulated enclave container's evidence, produced inside the enclave
            (rune attest --help)
"""


def _help(runc: str) -> int:
    """runc's own help, then what rune adds to it."""
    status = wait_child(spawn(runc, ["--help"]))
    print(RUNE_HELP, end="", flush=True)
    return status


def _version(runc: str) -> int:
    print(f"rune version {_package_version()} (inclavare)", flush=True)
    return wait_child(spawn(runc, ["--version"]))


def _package_version() -> str:
    from inclavare import __version__

    return __version__


def _create_or_run(inv: Invocation, runc: str, log: RuneLog) -> int:
    from inclavare.runtime.enclave_create import ENCLAVE, RUNC, plan_create, with_bundle

    host = Host.from_environment()
    plan = plan_create(inv, runc, log, host, register=lambda doc: _register(host, doc))
    if plan.kind == RUNC:
        exec_runc(runc, inv.argv)
    record = plan.record
    assert record is not None
    if plan.kind == ENCLAVE:
        def release() -> None:
            from inclavare.runtime.enclave_prepare import deregister

            deregister(host.agent_socket, os.path.abspath(record.root), record.id)
            record.remove()

        # after a foreground run that succeeded the agent's GC forgets the container (within its
        # grace), so what it relayed stays readable; every failure is released at once
        return run_and_clean_up(inv, runc, plan.argv, record, release, keep_after_run=True)
    # Upstream consumes ``ENCLAVE_TYPE=`` even when it selects no enclave: run a copy without it.
    assert plan.spec is not None
    try:
        write_bundle(record.private_bundle, plan.spec)
        record.save()
    except BaseException:
        record.remove()
        raise
    return run_and_clean_up(inv, runc, with_bundle(inv, record.private_bundle), record, record.remove)


def _register(host: Host, doc: dict[str, Any]) -> dict[str, Any]:
    from inclavare.services.agent import client as agent_client

    answer = agent_client.call(host.agent_socket, "POST", "/v1/containers", doc)
    return answer if isinstance(answer, dict) else {}


def run_and_clean_up(inv: Invocation, runc: str, argv: list[str], record: ContainerRecord,
                     release: Callable[[], None], keep_after_run: bool = False) -> int:
    """Run runc as our child (same stdio, signals forwarded, its exit status) and ``release``
    what rune made for the container as soon as runc no longer knows it: a failed create, or a
    foreground run that ended, leaves nothing behind (no registration, record, private bundle)."""
    gone = True
    try:
        rc = wait_child(spawn(runc, argv), forward_signals=True)
        foreground_run = inv.command == "run" and not _flag(inv, "detach", "d")
        if foreground_run and not _flag(inv, "keep"):
            gone = not (keep_after_run and rc == 0)  # runc deleted the container when it exited
        elif rc == 0 and not foreground_run:
            gone = False
        else:
            gone = not runc_knows(record.root, runc, record.id)
        return rc
    finally:
        if gone:
            release()


def _flag(inv: Invocation, *names: str) -> bool:
    return any(inv.flags.get(n, "false") not in ("false", "0") for n in names if n in inv.flags)
