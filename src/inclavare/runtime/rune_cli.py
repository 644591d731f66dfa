"""rune's slow path: calls that involve an enclave, a rewritten bundle, or rune-only commands.

Reached only when :mod:`inclavare.runtime.rune_entry` decided runc cannot take the call as is.
Errors are reported the way runc reports them (``--log`` file in its format, plain stderr,
exit status 1), so containerd's shim and podman show rune's reason to the user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from inclavare import __version__
from inclavare.errors import ConfigError, InclavareError
from inclavare.runtime.bundle import absolutize, load_spec, write_bundle
from inclavare.runtime.enclave_config import (
    EnclaveRequest,
    read_enclave_request,
    validate_runtime_path,
)
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.rune_entry import Invocation, exec_runc, valid_id
from inclavare.runtime.rune_state import ContainerRecord


def run_slow_path(inv: Invocation, runc: str) -> int:
    log = RuneLog.from_globals(inv.globals)
    try:
        return _dispatch(inv, runc, log)
    except InclavareError as exc:
        log.error(f"rune: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(inv: Invocation, runc: str, log: RuneLog) -> int:
    if "version" in inv.globals or "v" in inv.globals:
        return _version(runc)
    cmd = inv.command
    if cmd in ("create", "run"):
        return _create_or_run(inv, runc, log)
    if cmd == "attest":
        from inclavare.runtime.enclave_lifecycle import attest

        return attest(inv, runc, log)
    record = ContainerRecord.load(inv.root, inv.container_id)
    if record is None:
        exec_runc(runc, inv.argv)
    assert record is not None
    if record.enclave is not None:
        from inclavare.runtime.enclave_lifecycle import handle_enclave_command

        return handle_enclave_command(inv, runc, log, record)
    if cmd == "delete":
        return delete(inv, runc, record)
    if cmd == "state":
        return state(inv, runc, record)
    exec_runc(runc, inv.argv)
    return 1  # not reached


def _version(runc: str) -> int:
    print(f"rune version {__version__} (inclavare)", flush=True)
    try:
        return subprocess.call([runc, "--version"])
    except OSError as exc:
        raise ConfigError(f"cannot execute runc at {runc}: {exc.strerror}") from None


def _create_or_run(inv: Invocation, runc: str, log: RuneLog) -> int:
    try:
        spec = load_spec(inv.bundle)
    except ConfigError:
        exec_runc(runc, inv.argv)  # runc reports a broken bundle in its own words
    request = read_enclave_request(spec)
    if request.config is not None:
        from inclavare.runtime.enclave_lifecycle import is_sandbox

        if is_sandbox(spec):  # a pod's pause container: the workload containers get the enclaves
            request = EnclaveRequest(None, request.env, request.removed)
    if request.config is None and not request.env_changed:
        exec_runc(runc, inv.argv)
    cid = inv.container_id
    if not valid_id(cid):
        exec_runc(runc, inv.argv)  # runc reports a missing or invalid container id
    _refuse_duplicate(inv, runc, cid)

    new_spec = absolutize(spec, inv.bundle)
    process = new_spec.get("process")
    if isinstance(process, dict):
        process["env"] = list(request.env)
    record = ContainerRecord(
        id=cid, root=inv.root, bundle=os.path.abspath(inv.bundle), private_bundle="")
    record.private_bundle = os.path.join(record.directory, "bundle")
    if request.config is not None:
        from inclavare.runtime.enclave_lifecycle import prepare_enclave

        validate_runtime_path(request.config)
        prepare = prepare_enclave(request, new_spec, record, inv, log, runc)
    else:
        prepare = None
    write_bundle(record.private_bundle, new_spec)
    record.save()
    argv = with_bundle(inv, record.private_bundle)
    gone = True
    try:
        rc = call_runc(runc, argv)
        foreground_run = inv.command == "run" and not _flag(inv, "detach", "d")
        if foreground_run and not _flag(inv, "keep"):
            gone = True  # runc deleted the container when it exited
        elif rc == 0 and not foreground_run:
            gone = False
        else:
            gone = not _runc_knows(inv, runc, cid)
        return rc
    finally:
        if gone:
            if prepare is not None:
                prepare.release(record)
            record.remove()


def _flag(inv: Invocation, *names: str) -> bool:
    return any(inv.flags.get(n, "false") not in ("false", "0") for n in names if n in inv.flags)


def _refuse_duplicate(inv: Invocation, runc: str, cid: str) -> None:
    old = ContainerRecord.load(inv.root, cid)
    if old is None:
        return
    probe = subprocess.run([runc, "--root", inv.root, "state", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        raise InclavareError(f"container with id exists: {cid}")
    old.remove()  # stale: runc no longer knows the container


def with_bundle(inv: Invocation, bundle: str) -> list[str]:
    """The invocation's argv with its bundle replaced (``--bundle`` placed right after the command)."""
    argv = inv.argv
    head = argv[: inv.command_index + 1]
    out: list[str] = []
    i = inv.command_index + 1
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.extend(argv[i:])
            break
        name, eq, _ = arg.lstrip("-").partition("=")
        if name in ("bundle", "b"):
            i += 1 if eq else 2
            continue
        out.append(arg)
        if not eq and name in _value_flags(inv.command) and i + 1 < n:
            out.append(argv[i + 1])
            i += 1
        i += 1
    return [*head, "--bundle", bundle, *out]


def _value_flags(command: str) -> frozenset[str]:
    from inclavare.runtime.rune_entry import COMMAND_VALUE_FLAGS

    return COMMAND_VALUE_FLAGS.get(command, frozenset())


_FORWARDED = [s for s in signal.valid_signals()
              if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]


def call_runc(runc: str, argv: Sequence[str]) -> int:
    """Run runc as a child with our stdio, forwarding every signal we receive to it."""
    try:
        proc = subprocess.Popen([runc, *argv], close_fds=False)
    except OSError as exc:
        raise ConfigError(f"cannot execute runc at {runc}: {exc.strerror}") from None
    previous = {}
    for sig in _FORWARDED:
        try:
            previous[sig] = signal.signal(sig, lambda s, _f: proc.send_signal(s))
        except (OSError, ValueError):
            pass
    try:
        while True:
            try:
                return proc.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
    finally:
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError):
                pass


def delete(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    rc = call_runc(runc, inv.argv)
    if rc == 0 or not _runc_knows(inv, runc, record.id):
        record.remove()
    return rc


def _runc_knows(inv: Invocation, runc: str, cid: str) -> bool:
    probe = subprocess.run([runc, "--root", inv.root, "state", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def state(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    """runc's state, with the caller's bundle path instead of rune's private one."""
    proc = subprocess.run([runc, *inv.argv], stdout=subprocess.PIPE)
    out = proc.stdout
    if proc.returncode == 0:
        import json

        private = json.dumps(record.private_bundle).encode()
        original = json.dumps(record.bundle).encode()
        out = out.replace(b'"bundle": ' + private, b'"bundle": ' + original)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return proc.returncode


def describe_request(request: EnclaveRequest) -> str:
    """One line for debug logs."""
    if request.config is None:
        return "no enclave"
    c = request.config
    return f"enclave type={c.type} runtime={c.runtime_path or '(default)'} args={c.runtime_args!r}"
