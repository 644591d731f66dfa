"""rune's slow path: calls that involve an enclave, a rewritten bundle, or rune-only commands.

Reached only when :mod:`inclavare.runtime.rune_entry` decided runc cannot take the call as is.
Errors are reported the way runc reports them (``--log`` file in its format, plain stderr,
exit status 1), so containerd's shim and podman show rune's reason to the user.

Creating an enclave container is still a start-up path, so this module and what it imports on
that path avoid heavy standard modules (``subprocess``, ``json``, ``dataclasses``, ``typing``,
``socket``): tests/runtime/test_lean_imports.py keeps it that way.
"""

from __future__ import annotations

import os
import posix

from inclavare.errors import ConfigError, InclavareError
from inclavare.runtime.bundle import absolutize, load_spec, write_bundle
from inclavare.runtime.enclave_config import EnclaveRequest, read_enclave_request, validate_runtime_path
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.rune_entry import COMMAND_VALUE_FLAGS, Invocation, exec_runc, valid_id
from inclavare.runtime.rune_state import ContainerRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


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
    print(f"rune version {_package_version()} (inclavare)", flush=True)
    return wait_child(spawn(runc, ["--version"]))


def _package_version() -> str:
    from inclavare import __version__

    return __version__


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
    record = ContainerRecord(id=cid, root=inv.root, bundle=os.path.abspath(inv.bundle), private_bundle="")
    record.private_bundle = os.path.join(record.directory, "bundle")

    if request.config is None:
        return _run_with_stripped_env(inv, runc, new_spec, record)

    from inclavare.runtime.enclave_lifecycle import prepare_enclave

    validate_runtime_path(request.config)
    prepared = prepare_enclave(request, new_spec, record, inv, log, runc)
    try:
        write_bundle(record.private_bundle, new_spec)
        record.save(runelet=prepared.runelet)
    except BaseException:
        prepared.release(record)
        record.remove()
        raise
    # runc takes over this process, as for plain containers: same stdio, signals and exit
    # status. Should it fail or the container end, the agent forgets the registration and
    # removes the record once runc no longer knows the container.
    exec_runc(runc, with_bundle(inv, record.private_bundle))
    return 1  # not reached


def _run_with_stripped_env(inv: Invocation, runc: str, spec: dict, record: ContainerRecord) -> int:  # type: ignore[type-arg]
    """Upstream consumes ``ENCLAVE_TYPE=`` even when it selects no enclave: run a copy without it."""
    write_bundle(record.private_bundle, spec)
    record.save()
    gone = True
    try:
        rc = wait_child(spawn(runc, with_bundle(inv, record.private_bundle)), forward_signals=True)
        foreground_run = inv.command == "run" and not _flag(inv, "detach", "d")
        if foreground_run and not _flag(inv, "keep"):
            gone = True  # runc deleted the container when it exited
        elif rc == 0 and not foreground_run:
            gone = False
        else:
            gone = not runc_knows(inv, runc, record.id)
        return rc
    finally:
        if gone:
            record.remove()


def _flag(inv: Invocation, *names: str) -> bool:
    return any(inv.flags.get(n, "false") not in ("false", "0") for n in names if n in inv.flags)


def _refuse_duplicate(inv: Invocation, runc: str, cid: str) -> None:
    old = ContainerRecord.load(inv.root, cid)
    if old is None:
        return
    if runc_knows(inv, runc, cid):
        raise InclavareError(f"container with id exists: {cid}")
    old.remove()  # stale: runc no longer knows the container


def with_bundle(inv: Invocation, bundle: str) -> list[str]:
    """The invocation's argv with its bundle replaced (``--bundle`` placed right after the command)."""
    argv = inv.argv
    head = argv[: inv.command_index + 1]
    value_flags = COMMAND_VALUE_FLAGS.get(inv.command, frozenset())
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
        if not eq and name in value_flags and i + 1 < n:
            out.append(argv[i + 1])
            i += 1
        i += 1
    return [*head, "--bundle", bundle, *out]


# -- children -------------------------------------------------------------------------------

def spawn(runc: str, argv: Sequence[str], quiet: bool = False) -> int:
    """Start runc with our stdio (or /dev/null for ``quiet``); returns its pid."""
    actions = []
    if quiet:
        actions = [(posix.POSIX_SPAWN_OPEN, fd, "/dev/null", posix.O_RDWR, 0) for fd in (0, 1, 2)]
    try:
        return posix.posix_spawn(runc, [runc, *argv], posix.environ, file_actions=actions)
    except OSError as exc:
        raise ConfigError(f"cannot execute runc at {runc}: {exc.strerror}") from None


def wait_child(pid: int, forward_signals: bool = False) -> int:
    """Wait for a child; with ``forward_signals`` every signal we receive is passed on to it.

    Returns the exit status the way a shell reports it (128+N for death by signal N)."""
    previous = {}
    if forward_signals:
        import _signal  # type: ignore[import-not-found]  # signal.py imports enum: too slow here

        for sig in _signal.valid_signals():
            if sig in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD):
                continue
            try:
                previous[sig] = _signal.signal(sig, lambda s, _f: posix.kill(pid, s))
            except (OSError, ValueError):
                pass
    try:
        _, status = posix.waitpid(pid, 0)
    finally:
        if previous:
            import _signal

            for sig, handler in previous.items():
                try:
                    _signal.signal(sig, handler)
                except (OSError, ValueError):
                    pass
    code = posix.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def runc_knows(inv: Invocation, runc: str, cid: str) -> bool:
    return wait_child(spawn(runc, ["--root", inv.root, "state", cid], quiet=True)) == 0


def delete(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    rc = wait_child(spawn(runc, inv.argv), forward_signals=True)
    if rc == 0 or not runc_knows(inv, runc, record.id):
        record.remove()
    return rc


def state(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    """runc's state, with the caller's bundle path instead of rune's private one."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([runc, *inv.argv], stdout=subprocess.PIPE)
    out = proc.stdout
    if proc.returncode == 0:
        private = json.dumps(record.private_bundle).encode()
        original = json.dumps(record.bundle).encode()
        out = out.replace(b'"bundle": ' + private, b'"bundle": ' + original)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return proc.returncode
