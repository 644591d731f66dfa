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
from inclavare.runtime.enclave_config import TYPE_INTEL_SGX, TYPE_SIM, EnclaveConfig, EnclaveRequest
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.rune_entry import Invocation, exec_runc
from inclavare.runtime.rune_state import ContainerRecord
from inclavare.services.agent import client as agent_client
from inclavare.services.agent import paths as agent_paths

EPM_DIR_ENV = "INCLAVARE_EPM_DIR"
MEASUREMENT_ANNOTATION = "io.inclavare.enclave.measurement"
SANDBOX_ANNOTATION = "io.kubernetes.cri.container-type"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.runtime.bundle import Spec

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


def resolve_runtime(config: EnclaveConfig) -> str:
    """The enclave runtime that will run the container (``sim`` is built in)."""
    if config.type == TYPE_SIM and config.runtime_path in ("", "sim"):
        return "sim"
    raise NotSupportedError(
        f"enclave type {config.type} with runtime {config.runtime_path or '(default)'} has no enclave "
        "runtime in this installation; refusing to run the container outside an enclave")


def agent_socket() -> str:
    return agent_paths.default_control_socket()


def prepare_enclave(request: EnclaveRequest, spec: Spec, record: ContainerRecord,
                    inv: Invocation, log: RuneLog, runc: str = "") -> PreparedEnclave:
    config = request.config
    assert config is not None
    runtime = resolve_runtime(config)
    _require_private_pid_namespace(spec)
    socket_path = agent_socket()
    workload_dir = agent_paths.workload_dir_for(socket_path)
    if not os.path.isdir(workload_dir):
        raise ConfigError(f"node agent not running (no {workload_dir}); start `inclavare agent serve`")

    inject_tee(spec, config, workload_dir)

    from inclavare.tee.epm import DEFAULT_EPM_DIR, EnclavePool
    from inclavare.tee.measurement import measure, mount_destinations, parse_trusted_arg

    process = spec.get("process") or {}
    result = measure(rootfs_path(spec, record.bundle), process, config.as_dict(),
                     trusted=parse_trusted_arg(config.runtime_args), excluded=mount_destinations(spec),
                     pool=EnclavePool(os.environ.get(EPM_DIR_ENV) or DEFAULT_EPM_DIR))
    spec.setdefault("annotations", {})[MEASUREMENT_ANNOTATION] = result.hex
    log.debug(f"enclave {record.id}: runtime {runtime}, measurement {result.hex} "
              f"({result.files} files, {result.bytes} bytes, pool {'hit' if result.cached else 'miss'})")

    agent_client.call(socket_path, "POST", "/v1/containers", {
        "id": record.id, "root": os.path.abspath(record.root), "runc": runc or "/usr/sbin/runc",
        "bundle": record.bundle, "measurement": result.hex, "enclave": config.as_dict(),
        "runtime": runtime, "cleanup": record.directory,
    })
    record.enclave = config.as_dict()
    record.runtime = runtime
    record.measurement = result.hex
    record.extra["agent_socket"] = socket_path
    return PreparedEnclave(socket_path, os.path.abspath(record.root), record.id)


def handle_enclave_command(inv: Invocation, runc: str, log: RuneLog, record: ContainerRecord) -> int:
    from inclavare.runtime import rune_cli

    if inv.command == "delete":
        rc = rune_cli.delete(inv, runc, record)
        if not os.path.exists(record.directory):  # the container is gone
            socket_path = str(record.extra.get("agent_socket") or agent_socket())
            deregister(socket_path, os.path.abspath(record.root), record.id)
        return rc
    if inv.command == "state":
        return rune_cli.state(inv, runc, record)
    exec_runc(runc, inv.argv)  # start, kill, exec: runc acts on the enclave runtime's process
    return 1


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
    resolve_runtime(config)
    process = dict(spec.get("process") or {})
    process["env"] = list(request.env)
    inject_tee(spec, config, agent_paths.workload_dir_for(agent_socket()))
    destinations = mount_destinations(spec)
    pool_dir = os.environ.get(EPM_DIR_ENV) or DEFAULT_EPM_DIR
    result = measure(rootfs_path(spec, bundle), process, config.as_dict(),
                     trusted=parse_trusted_arg(config.runtime_args), excluded=destinations,
                     pool=EnclavePool(pool_dir) if os.access(os.path.dirname(pool_dir) or "/", os.W_OK) else None)
    return {"measurement": result.hex, "files": result.files, "bytes": result.bytes, "pool_hit": result.cached}
