"""Enclave containers after create: keep container semantics for the commands that follow.

rune's slow path sends here the commands naming a container whose enclave
:mod:`inclavare.runtime.enclave_prepare` prepared, and ``attest``:

* ``start`` and ``kill`` go straight to runc: the container's init *is* the enclave runtime's
  process (the payload itself for direct-launch runtimes such as ``sim``, the runelet for PAL
  libraries, which forwards signals to ``pal_kill``), so runc's signal is the runtime's kill;
* ``exec`` runs inside the enclave (same pid namespace, hence the same identity at the agent);
* ``delete`` deregisters the container from the agent;
* ``attest`` prints the container's evidence JSON, produced inside the enclave.
"""

from __future__ import annotations

import os

from inclavare.errors import ConfigError, InclavareError, NotSupportedError
from inclavare.runtime import container_commands
from inclavare.runtime.enclave_prepare import agent_socket, deregister
from inclavare.runtime.invocation import COMMAND_VALUE_FLAGS, Invocation
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.runc_process import exec_runc, runc_knows
from inclavare.runtime.rune_state import ContainerRecord
from inclavare.services.enclave_layout import ATTEST


def handle_enclave_command(inv: Invocation, runc: str, log: RuneLog, record: ContainerRecord) -> int:
    if inv.command == "delete":
        rc = container_commands.delete(inv, runc, record)
        if not os.path.exists(record.directory):  # the container is gone
            socket_path = str(record.extra.get("agent_socket") or agent_socket())
            deregister(socket_path, os.path.abspath(record.root), record.id)
        return rc
    if inv.command == "state":
        return container_commands.state(inv, runc, record)
    if inv.command == "exec" and record.runtime != "sim":
        exec_runc(runc, runelet_exec_argv(inv, record))
    exec_runc(runc, inv.argv)  # start, kill, exec (sim): runc acts on the enclave's own process
    return 1


def runelet_exec_argv(inv: Invocation, record: ContainerRecord) -> list[str]:
    """``exec`` rewritten so the command runs inside the enclave, through the runelet.

    runc starts the runelet's exec client in the container; it hands the command and its stdio
    to the container's runelet, which runs it with the enclave runtime (PAL create_process +
    exec) and relays signals; the client exits with the command's status.
    """
    from inclavare import fastjson
    from inclavare.atomic_file import write_atomic
    from inclavare.runtime.pal.runelet_launch import runelet_exec_args

    argv = list(inv.argv)
    process_file = inv.flags.get("process") or inv.flags.get("p")
    if process_file:
        try:
            with open(process_file, "rb") as f:
                process = fastjson.loads(f.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the exec process file {process_file}: {exc}") from None
        if not isinstance(process, dict) or not isinstance(process.get("args"), list):
            raise ConfigError(f"exec process file {process_file} has no args")
        process["args"] = runelet_exec_args(process["args"], env=process.get("env") or [],
                                            cwd=process.get("cwd") or None)
        process["env"] = []
        rewritten = os.path.join(record.directory, f"exec-{os.getpid()}.json")
        write_atomic(rewritten, fastjson.dumps(process).encode(), durable=False)
        for i, arg in enumerate(argv):
            if arg in ("--process", "-p", "-process") and i + 1 < len(argv):
                argv[i + 1] = rewritten
            elif arg.lstrip("-").startswith(("process=", "p=")):
                argv[i] = "--process=" + rewritten
        return argv
    if len(inv.positionals) < 2:
        exec_runc("", argv)  # let runc report the missing command (never reached with a runc)
    env = [v for k, v in _repeated_flags(inv, ("env", "e"))]
    cwd = inv.flags.get("cwd") or None
    command = inv.positionals[1:]
    cut = len(argv) - len(command)
    return argv[:cut] + runelet_exec_args(command, env=env or None, cwd=cwd)


def _repeated_flags(inv: Invocation, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every occurrence of a repeatable command flag (``--env A=1 -e B=2``)."""
    out = []
    argv = inv.argv
    i = inv.command_index + 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in names:
            if not eq and i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            out.append((name, value))
        elif not eq and name in COMMAND_VALUE_FLAGS["exec"]:
            i += 1
        i += 1
    return out


ATTEST_USAGE = """Usage: rune [global options] attest [--runtime-data DATA] CONTAINER_ID

Print the evidence (JSON) of a simulated enclave container, produced inside the enclave: the
attest client runs in the container (runc exec) and asks the container's enclave agent, which
obtains a quote over report data binding DATA. The evidence is SIMULATED: it proves nothing
about hardware. Containers started by containerd live under its runc root:
   rune --root /run/containerd/runc/NAMESPACE attest ID
"""


def attest(inv: Invocation, runc: str, log: RuneLog) -> int:
    """``rune attest [--runtime-data S] ID``: the container's evidence, produced by the enclave.

    The host cannot mint evidence for an enclave (on hardware only the enclave can have its
    report signed), so rune asks the enclave: it runs the attest client inside the container
    (``runc exec``), which asks the enclave agent, which asks the quoting service over report
    data it chose. Output and exit status are the client's."""
    cid = inv.container_id
    if not cid:
        raise InclavareError('"attest" requires a container id')
    record = ContainerRecord.load(inv.root, cid)
    if record is None or record.enclave is None:
        if not runc_knows(inv.root, runc, cid):
            raise InclavareError(f"container {cid} does not exist in {inv.root} (containers started by "
                                 "containerd live under --root /run/containerd/runc/NAMESPACE)")
        raise InclavareError(f"container {cid} is not an enclave container")
    if record.runtime != "sim":
        raise NotSupportedError(
            f"container {cid} is a {record.enclave.get('type')} enclave: it attests inside its LibOS "
            "(Occlum init_ra, Gramine /dev/attestation); rune attest serves simulated enclaves")
    data = inv.flags.get("runtime-data", "")
    exec_runc(runc, [*inv.argv[:inv.command_index], "exec", cid, ATTEST, "evidence", "--runtime-data", data])
    return 1  # not reached