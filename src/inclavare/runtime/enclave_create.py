"""Planning ``rune create``/``run`` of a container whose spec mentions an enclave.

The plan is computed where it is cheapest: in the node agent (already running, its enclave
pool warm) when rune's native launcher asks it, otherwise in rune's own slow path. Either way
the same function runs with explicit host settings, resolves every relative path against the
caller's working directory, and ends in one of three outcomes:

* ``RUNC``: runc can take the call unchanged (no enclave after all);
* ``STRIPPED``: upstream's quirk — ``ENCLAVE_TYPE`` consumed without selecting an enclave; rune
  runs a copy of the spec without it (in its own process: it must wait to clean up);
* ``ENCLAVE``: the enclave is prepared, measured, registered; runc gets ``argv``.
"""

from __future__ import annotations

import os

from inclavare.errors import ConfigError, InclavareError
from inclavare.runtime.bundle import absolutize, load_spec, write_bundle
from inclavare.runtime.enclave_config import EnclaveRequest, read_enclave_request, validate_runtime_path
from inclavare.runtime.invocation import COMMAND_VALUE_FLAGS, Invocation, valid_id
from inclavare.runtime.runc_process import runc_knows
from inclavare.runtime.spec_shape import SpecShapeError
from inclavare.runtime.rune_state import ContainerRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from inclavare.runtime.host_settings import Host
    from inclavare.runtime.oci_log import RuneLog

RUNC, STRIPPED, ENCLAVE = "runc", "stripped", "enclave"


class Plan:
    __slots__ = ("kind", "argv", "record", "spec")

    def __init__(self, kind: str, argv: list[str] | None = None, record: ContainerRecord | None = None,
                 spec: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.argv = argv or []
        self.record = record
        self.spec = spec


def _resolve(path: str, cwd: str) -> str:
    return os.path.normpath(os.path.join(cwd, path))


def plan_create(inv: Invocation, runc: str, log: RuneLog, host: Host,
                register: Callable[[dict[str, Any]], dict[str, Any]], cwd: str | None = None) -> Plan:
    """Decide (and for enclaves, prepare) a ``create``/``run`` call. Raises InclavareError."""
    cwd = cwd or os.getcwd()
    bundle = _resolve(inv.bundle, cwd)
    root = _resolve(inv.root, cwd)
    try:
        spec = load_spec(bundle)
    except SpecShapeError:
        raise  # the spec mentions an enclave: rune must not hand runc what it cannot read itself
    except ConfigError:
        return Plan(RUNC)  # runc reports a missing or unreadable bundle in its own words
    request = read_enclave_request(spec)
    if request.config is not None:
        from inclavare.runtime.enclave_prepare import is_sandbox

        if is_sandbox(spec):  # a pod's pause container: the workload containers get the enclaves
            request = EnclaveRequest(None, request.env, request.removed)
    if request.config is None and not request.env_changed:
        return Plan(RUNC)
    cid = inv.container_id
    if not valid_id(cid):
        return Plan(RUNC)  # runc reports a missing or invalid container id
    _refuse_duplicate(runc, root, cid, host.state_base)

    new_spec = absolutize(spec, bundle)
    process = new_spec.get("process")
    if isinstance(process, dict):
        process["env"] = list(request.env)
    record = ContainerRecord(id=cid, root=root, bundle=bundle, private_bundle="", state_base=host.state_base)
    record.private_bundle = os.path.join(record.directory, "bundle")
    if request.config is None:
        return Plan(STRIPPED, record=record, spec=new_spec)

    from inclavare.runtime.enclave_prepare import prepare_enclave

    validate_runtime_path(request.config)
    prepared = None
    try:  # whatever fails from here on, nothing of this container stays behind
        prepared = prepare_enclave(request, new_spec, record, log, runc, host, register)
        write_bundle(record.private_bundle, new_spec)
        record.save(runelet=prepared.runelet)
    except BaseException:
        if prepared is not None:
            prepared.release(record)
        record.discard_plan()
        raise
    return Plan(ENCLAVE, argv=with_bundle(inv, record.private_bundle), record=record)


def _refuse_duplicate(runc: str, root: str, cid: str, state_base: str) -> None:
    old = ContainerRecord.load(root, cid, state_base)
    if old is None:
        return
    if runc_knows(root, runc, cid):
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
