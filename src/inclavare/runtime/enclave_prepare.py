"""Enclave containers at create time: prepare the enclave the container's spec asks for.

``rune create`` with an enclave configuration (planned by :mod:`inclavare.runtime.enclave_create`):
resolve the enclave runtime, measure the enclave (through the enclave pool), inject what the TEE
needs (for ``sim`` the enclave side of :mod:`inclavare.runtime.enclave_side`; SGX device nodes
and the aesmd socket for ``intelSgx``), register the container with the node agent (which opens
the container's channel), and hand runc the rewritten bundle (written by
:mod:`inclavare.runtime.enclave_create`).
``inclavare measure`` computes the same measurement for a bundle (:func:`measure_bundle`).

What rune does for commands on the container afterwards is in
:mod:`inclavare.runtime.enclave_commands`.
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
from inclavare.runtime.oci_log import RuneLog
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


def inject_tee(spec: Spec, config: EnclaveConfig) -> None:
    """What the TEE needs before measuring: for ``sim`` the container-private directory of the
    enclave side (its destination is never measured); for SGX the device nodes and aesmd."""
    if config.simulated:
        from inclavare.runtime.enclave_side import add_private_dir

        add_private_dir(spec, config.image)
    elif config.type == TYPE_INTEL_SGX:
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
        if not config.simulated:
            raise ConfigError(f"the sim enclave runtime simulates a TEE; it needs enclave.type=sim "
                              f"(or a VM TEE type), not {config.type}")
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
                    host: Host, register: Callable[[dict[str, Any]], dict[str, Any]]) -> PreparedEnclave:
    """Resolve the runtime, inject the TEE's mounts/devices, measure, register: ``spec`` is
    rewritten in place; ``register`` hands the registration to the agent and returns its answer
    (with the container's channel directory)."""
    config = request.config
    assert config is not None
    runtime = resolve_runtime(config)
    _require_private_pid_namespace(spec)
    from inclavare.runtime.epc_need import epc_need

    need = epc_need(spec, rootfs_path(spec, record.bundle), runtime.ref, config.runtime_args)
    socket_path = host.agent_socket
    enclave_side = config.simulated
    inject_tee(spec, config)

    from inclavare.tee.epm import pool_for
    from inclavare.tee.measurement import measure, mount_destinations, parse_trusted_arg

    process = spec.get("process") or {}
    enclave_doc = runtime.measured_config(config)
    result = measure(rootfs_path(spec, record.bundle), process, enclave_doc,
                     trusted=parse_trusted_arg(config.runtime_args), excluded=mount_destinations(spec),
                     pool=pool_for(host.epm_dir))
    spec.setdefault("annotations", {})[MEASUREMENT_ANNOTATION] = result.hex
    if log.debug_enabled:
        log.debug(f"enclave {record.id}: runtime {runtime.ref}, measurement {result.hex} "
                  f"({result.files} files, {result.total_bytes} bytes, pool {'hit' if result.cached else 'miss'})")
    rt_dir = ""
    if enclave_side or not runtime.direct_launch:
        from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt

        rt_dir = ensure_runelet_rt(host.runelet_dir,
                                   pal_libraries=[runtime.ref] if "/" in runtime.ref else [])
    if not runtime.direct_launch:
        from inclavare.runtime.pal.runelet_rt import plan_runelet_launch

        os.makedirs(record.directory, mode=0o700, exist_ok=True)
        plan_runelet_launch(spec, runtime_ref=runtime.ref, runtime_args=config.runtime_args,
                            log_level=config.log_level, rt_dir=rt_dir, private_dir=record.directory)

    answer = register({
        "id": record.id, "root": os.path.abspath(record.root), "runc": runc or "/usr/sbin/runc",
        "bundle": record.bundle, "measurement": result.hex, "enclave": config.as_dict(),
        "runtime": runtime.ref, "cleanup": record.directory, "epc_mib": need.mib,
    })
    prepared = PreparedEnclave(socket_path, os.path.abspath(record.root), record.id,
                               runelet=not runtime.direct_launch)
    if enclave_side:
        channel = answer.get("channel") if isinstance(answer, dict) else None
        try:
            if not isinstance(channel, str) or not os.path.isabs(channel):
                raise ConfigError("the node agent gave no channel for the container (is it an older version?)")
            from inclavare.runtime.enclave_side import add_runtime

            tsm = answer.get("tsm") if isinstance(answer, dict) else None
            add_runtime(spec, rt_dir, channel, config.image, tsm if isinstance(tsm, str) and os.path.isabs(tsm) else "")
        except BaseException:
            prepared.release(record)
            raise
    record.enclave = config.as_dict()
    record.runtime = runtime.ref
    record.measurement = result.hex
    record.extra["agent_socket"] = socket_path
    return prepared


def measure_bundle(bundle: str, pool_dir: str | None = None) -> dict[str, Any]:
    """What ``inclavare measure`` prints: the measurement the container will have. The enclave
    pool at ``pool_dir`` (default: rune's) is used if it exists, and never written."""
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
    inject_tee(spec, config)
    destinations = mount_destinations(spec)
    pool_dir = pool_dir or os.environ.get(EPM_DIR_ENV) or DEFAULT_EPM_DIR
    result = measure(rootfs_path(spec, bundle), process, runtime.measured_config(config),
                     trusted=parse_trusted_arg(config.runtime_args), excluded=destinations,
                     pool=EnclavePool(pool_dir, read_only=True) if os.path.isdir(pool_dir) else None)
    return {"measurement": result.hex, "files": result.files, "bytes": result.total_bytes, "pool_hit": result.cached}
