"""Enclave containers: prepare the enclave at create time, then keep container semantics.

``rune create`` with an enclave configuration: resolve the enclave runtime, measure the enclave
(through the enclave pool), inject what the TEE needs (the agent's workload directory with its
socket and the ``attest`` client, read-only; SGX device nodes and the aesmd socket for
``intelSgx``), register the container with the node agent, and hand runc the rewritten bundle
(written by :mod:`inclavare.runtime.rune_cli`). Afterwards:

* ``start`` and ``kill`` go straight to runc: the container's init *is* the enclave runtime's
  process (the payload itself for direct-launch runtimes such as ``sim``, the runelet for PAL
  libraries, which forwards signals to ``pal_kill``), so runc's signal is the runtime's kill;
* ``exec`` runs inside the enclave (same pid namespace, hence the same identity at the agent);
* ``delete`` deregisters the container from the agent;
* ``attest`` prints the container's evidence JSON.
"""

from __future__ import annotations

import os
import stat as stat_mod

from inclavare.errors import ConfigError, InclavareError, NotSupportedError
from inclavare.runtime.bundle import rootfs_path
from inclavare.runtime.enclave_config import (
    TYPE_INTEL_SGX,
    TYPE_JAILHOUSE,
    TYPE_NITRO,
    TYPE_SIM,
    EnclaveConfig,
    EnclaveRequest,
)
from inclavare.runtime.host_settings import EPM_DIR_ENV
from inclavare.runtime.invocation import Invocation
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.runc_process import exec_runc
from inclavare.runtime.rune_state import ContainerRecord
from inclavare.services.agent import client as agent_client
from inclavare.services.agent import paths as agent_paths

MEASUREMENT_ANNOTATION = "io.inclavare.enclave.measurement"
SANDBOX_ANNOTATION = "io.kubernetes.cri.container-type"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from inclavare.runtime.bundle import Spec
    from inclavare.runtime.host_settings import Host

SGX_DEVICES = ("/dev/sgx_enclave", "/dev/sgx_provision", "/dev/sgx/enclave", "/dev/sgx/provision",
               "/dev/isgx", "/dev/gsgx")
AESMD_DIR = "/var/run/aesmd"


class PreparedEnclave:
    """What ``prepare_enclave`` registered; released when the container is gone."""

    def __init__(self, socket_path: str, root: str, container_id: str, runelet: bool = False) -> None:
        self.socket_path = socket_path
        self.root = root
        self.container_id = container_id
        self.runelet = runelet  # exec must be rewritten to reach the enclave through the runelet

    def release(self, record: ContainerRecord) -> None:
        deregister(self.socket_path, self.root, self.container_id)


def deregister(socket_path: str, root: str, container_id: str) -> None:
    try:
        agent_client.request(socket_path, "DELETE", agent_client.container_path(root, container_id), timeout=10)
    except InclavareError:
        pass  # the agent forgets containers runc no longer knows on its own


def is_sandbox(spec: Spec) -> bool:
    """CRI's pod sandbox (pause) container carries the pod's annotations but runs no workload."""
    annotations = spec.get("annotations") or {}
    return isinstance(annotations, dict) and annotations.get(SANDBOX_ANNOTATION) == "sandbox"


def _require_private_pid_namespace(spec: Spec) -> None:
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    for ns in namespaces:
        if isinstance(ns, dict) and ns.get("type") == "pid":
            if ns.get("path"):
                raise ConfigError("an enclave container needs its own pid namespace (it identifies "
                                  "the workload to the node agent); it cannot join another's")
            return
    raise ConfigError("an enclave container needs its own pid namespace (add {\"type\": \"pid\"} "
                      "to linux.namespaces)")


def _bind(source: str, destination: str, writable: bool = False) -> dict[str, Any]:
    options = ["bind", "nosuid", "nodev", "rw" if writable else "ro"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def _add_sgx_devices(spec: Spec) -> None:
    """As upstream: every SGX node present on the host that the spec does not list, rw, uid 0."""
    linux = spec.setdefault("linux", {})
    devices = linux.setdefault("devices", [])
    listed = {d.get("path") for d in devices if isinstance(d, dict)}
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    for path in SGX_DEVICES:
        if path in listed:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat_mod.S_ISCHR(st.st_mode):
            continue
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        devices.append({"path": path, "type": "c", "major": major, "minor": minor,
                        "fileMode": 0o666, "uid": 0, "gid": 0})
        rules.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"})
    mounts = spec.setdefault("mounts", [])
    if os.path.isdir(AESMD_DIR) and not any(
            m.get("destination") in (AESMD_DIR, "/run/aesmd") for m in mounts if isinstance(m, dict)):
        mounts.append(_bind(AESMD_DIR, AESMD_DIR, writable=True))


def inject_tee(spec: Spec, config: EnclaveConfig, workload_dir: str) -> None:
    """What every enclave container gets: the agent's workload directory (socket + attest
    client) read-only at /run/inclavare; for SGX the device nodes and the aesmd socket."""
    spec.setdefault("mounts", []).append(_bind(workload_dir, agent_paths.IN_CONTAINER_DIR))
    if config.type == TYPE_INTEL_SGX:
        _add_sgx_devices(spec)


class ResolvedRuntime:
    """Which enclave runtime runs the container, and how it is launched."""

    __slots__ = ("ref", "direct_launch", "digest")

    def __init__(self, ref: str, direct_launch: bool, digest: str = "") -> None:
        self.ref = ref  # "sim", a runtime plugin name, or a PAL library path
        self.direct_launch = direct_launch  # the payload itself is the container's init
        self.digest = digest  # SHA-256 of a PAL library (part of the measurement)

    def measured_config(self, config: EnclaveConfig) -> dict[str, str]:
        doc = config.as_dict()
        doc["path"] = self.ref
        if self.digest:
            doc["runtime_digest"] = self.digest
        return doc


def resolve_runtime(config: EnclaveConfig) -> ResolvedRuntime:
    """The enclave runtime that will run the container (``sim`` is built in)."""
    if config.type in (TYPE_NITRO, TYPE_JAILHOUSE):
        raise NotSupportedError(
            f"enclave type {config.type} has no enclave runtime in this installation; "
            "refusing to run the container outside an enclave")
    ref = config.runtime_path or ("sim" if config.type == TYPE_SIM else "")
    if not ref:
        raise ConfigError("enclave runtime path is not configured (set enclave.runtime.path)")
    if ref == "sim":
        if config.type != TYPE_SIM:
            raise ConfigError(f"the sim enclave runtime simulates a TEE; it needs enclave.type=sim, "
                              f"not {config.type}")
        return ResolvedRuntime("sim", direct_launch=True)
    if "/" in ref:
        from inclavare.tee.measurement import hash_file

        return ResolvedRuntime(os.path.abspath(ref), direct_launch=False, digest=hash_file(ref))
    from inclavare.runtime.pal.plugin import runtime_target

    runtime_target(ref)  # an unknown name is an error listing the installed runtimes
    return ResolvedRuntime(ref, direct_launch=False)


def agent_socket() -> str:
    return agent_paths.default_control_socket()


def prepare_enclave(request: EnclaveRequest, spec: Spec, record: ContainerRecord, log: RuneLog, runc: str,
                    host: Host, register: Callable[[dict[str, Any]], None]) -> PreparedEnclave:
    """Resolve the runtime, inject the TEE's mounts/devices, measure, register: ``spec`` is
    rewritten in place; ``register`` hands the registration to the agent."""
    config = request.config
    assert config is not None
    runtime = resolve_runtime(config)
    _require_private_pid_namespace(spec)
    socket_path = host.agent_socket
    workload_dir = agent_paths.workload_dir_for(socket_path)
    if not os.path.isdir(workload_dir):
        raise ConfigError(f"node agent not running (no {workload_dir}); start `inclavare agent serve`")

    inject_tee(spec, config, workload_dir)

    from inclavare.tee.epm import pool_for
    from inclavare.tee.measurement import measure, mount_destinations, parse_trusted_arg

    process = spec.get("process") or {}
    enclave_doc = runtime.measured_config(config)
    result = measure(rootfs_path(spec, record.bundle), process, enclave_doc,
                     trusted=parse_trusted_arg(config.runtime_args), excluded=mount_destinations(spec),
                     pool=pool_for(host.epm_dir))
    spec.setdefault("annotations", {})[MEASUREMENT_ANNOTATION] = result.hex
    log.debug(f"enclave {record.id}: runtime {runtime.ref}, measurement {result.hex} "
              f"({result.files} files, {result.total_bytes} bytes, pool {'hit' if result.cached else 'miss'})")
    if not runtime.direct_launch:
        from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt, plan_runelet_launch

        rt_dir = ensure_runelet_rt(host.runelet_dir,
                                   pal_libraries=[runtime.ref] if "/" in runtime.ref else [])
        os.makedirs(record.directory, mode=0o700, exist_ok=True)
        plan_runelet_launch(spec, runtime_ref=runtime.ref, runtime_args=config.runtime_args,
                            log_level=config.log_level, rt_dir=rt_dir, private_dir=record.directory)

    register({
        "id": record.id, "root": os.path.abspath(record.root), "runc": runc or "/usr/sbin/runc",
        "bundle": record.bundle, "measurement": result.hex, "enclave": config.as_dict(),
        "runtime": runtime.ref, "cleanup": record.directory,
    })
    record.enclave = config.as_dict()
    record.runtime = runtime.ref
    record.measurement = result.hex
    record.extra["agent_socket"] = socket_path
    return PreparedEnclave(socket_path, os.path.abspath(record.root), record.id,
                           runelet=not runtime.direct_launch)


def handle_enclave_command(inv: Invocation, runc: str, log: RuneLog, record: ContainerRecord) -> int:
    from inclavare.runtime import container_commands

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
        elif not eq and name in _exec_value_flags():
            i += 1
        i += 1
    return out


def _exec_value_flags() -> frozenset[str]:
    from inclavare.runtime.invocation import COMMAND_VALUE_FLAGS

    return COMMAND_VALUE_FLAGS["exec"]


def attest(inv: Invocation, runc: str, log: RuneLog) -> int:
    cid = inv.container_id
    if not cid:
        raise InclavareError('"attest" requires a container id')
    record = ContainerRecord.load(inv.root, cid)
    if record is None or record.enclave is None:
        raise InclavareError(f"container {cid} is not an enclave container")
    data = inv.flags.get("runtime-data", "")
    socket_path = str(record.extra.get("agent_socket") or agent_socket())
    evidence = agent_client.call(socket_path, "POST",
                                 agent_client.container_path(os.path.abspath(record.root), cid, "/evidence"),
                                 {"runtime_data": data})
    from inclavare import fastjson

    print(fastjson.dumps(evidence))
    return 0


def measure_bundle(bundle: str) -> dict[str, Any]:
    """What ``inclavare measure`` prints: the measurement the container will have."""
    from inclavare.runtime.bundle import absolutize, load_spec
    from inclavare.runtime.enclave_config import read_enclave_request
    from inclavare.tee.epm import DEFAULT_EPM_DIR, EnclavePool
    from inclavare.tee.measurement import measure, mount_destinations, parse_trusted_arg

    spec = absolutize(load_spec(bundle), bundle)
    request = read_enclave_request(spec)
    if request.config is None:
        raise ConfigError(f"bundle {bundle} has no enclave configuration (set enclave.type)")
    config = request.config
    runtime = resolve_runtime(config)
    process = dict(spec.get("process") or {})
    process["env"] = list(request.env)
    inject_tee(spec, config, agent_paths.workload_dir_for(agent_socket()))
    destinations = mount_destinations(spec)
    pool_dir = os.environ.get(EPM_DIR_ENV) or DEFAULT_EPM_DIR
    result = measure(rootfs_path(spec, bundle), process, runtime.measured_config(config),
                     trusted=parse_trusted_arg(config.runtime_args), excluded=destinations,
                     pool=EnclavePool(pool_dir) if os.access(os.path.dirname(pool_dir) or "/", os.W_OK) else None)
    return {"measurement": result.hex, "files": result.files, "bytes": result.total_bytes, "pool_hit": result.cached}
