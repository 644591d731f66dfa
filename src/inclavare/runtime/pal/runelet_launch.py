"""The launch planner: rewrite an OCI spec so runc starts the runelet as the container's pid 1.

:func:`plan_runelet_launch` keeps the container's process (args, env, cwd) as the payload
the runelet runs in the enclave, and adds (paths in :mod:`container_layout`)::

    /.inclavare               tmpfs, nosuid nodev noexec (holds the mount points below)
    /.inclavare/rt            runelet runtime folder    bind, ro nosuid nodev
    /.inclavare/pal.so        the PAL library (C PALs)  bind, ro nosuid nodev
    /.inclavare/runelet.json  the runelet configuration bind, ro nosuid nodev noexec
    /.inclavare/run           tmpfs for the exec socket, mode 0700, owned by the process user

plus the device nodes and host mounts a Python runtime declares (``required_devices``,
``required_mounts``; e.g. SGX for Occlum/Gramine), failing closed when the host lacks them.
The runelet process itself gets an empty environment: the payload's environment travels in
the configuration, so nothing in it (LD_PRELOAD, ...) touches the runelet.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Sequence
from typing import Any

from inclavare.atomic_file import write_atomic
from inclavare.errors import ConfigError, NotSupportedError
from inclavare.runtime.bundle import process_ids, spec_mounts
from inclavare.runtime.pal import container_layout as layout
from inclavare.runtime.pal.elf_info import ElfError, read_elf
from inclavare.runtime.pal.plugin import BUILTIN_PREFIX, runtime_target
from inclavare.runtime.pal.runelet_config import (
    KIND_PAL,
    KIND_PYTHON,
    Payload,
    RuneletConfig,
    RuntimeRef,
)

CONFIG_FILE = "runelet.json"
_RO_BIND = ["rbind", "ro", "nosuid", "nodev"]


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} in config.json must be a list of strings")
    if any("\x00" in v for v in value):
        raise ConfigError(f"{what} in config.json must not contain NUL characters")
    return list(value)


def _process(spec: dict[str, Any]) -> dict[str, Any]:
    process = spec.get("process")
    if not isinstance(process, dict):
        raise ConfigError("config.json has no process")
    return process


def _host_ids(spec: dict[str, Any], uid: int, gid: int) -> tuple[int, int]:
    """The host uid/gid of the container's uid/gid (user namespace mappings applied)."""
    raw = spec.get("linux")
    linux: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def mapped(ident: int, key: str) -> int:
        mappings = linux.get(key) or []
        if not mappings:
            return ident
        for m in mappings:
            values = [m.get(k) if isinstance(m, dict) else None
                      for k in ("containerID", "hostID", "size")]
            ints = [v for v in values if type(v) is int and v >= 0]
            if len(ints) != 3:
                raise ConfigError(f"linux.{key} entries need integer containerID, hostID and size")
            inside, host, size = ints
            if inside <= ident < inside + size:
                return host + ident - inside
        raise ConfigError(f"id {ident} of the container process is not mapped by linux.{key}")

    return mapped(uid, "uidMappings"), mapped(gid, "gidMappings")


def _check_rt_dir(rt_dir: str) -> None:
    for part in ("ld.so", "bin/python", "MANIFEST.json"):
        if not os.path.isfile(os.path.join(rt_dir, part)):
            raise ConfigError(f"{rt_dir} is not a runelet runtime folder (missing {part}; "
                              "build it with ensure_runelet_rt)")


def check_pal_dependencies(pal: str, rt_dir: str) -> None:
    """The PAL's DT_NEEDED libraries must all be in the folder (nothing else is visible)."""
    try:
        needed = read_elf(pal).needed
    except ElfError as exc:
        raise ConfigError(f"enclave runtime {exc}") from None
    try:
        present = set(os.listdir(os.path.join(rt_dir, "lib")))
    except OSError:
        present = set()
    missing = [n for n in needed if n not in present]
    if missing:
        raise ConfigError(
            f"enclave runtime {pal} needs {', '.join(missing)}, which the runelet runtime "
            f"folder {rt_dir} lacks (build it with ensure_runelet_rt(..., pal_libraries=[{pal!r}]))")


def add_device_nodes(spec: dict[str, Any], paths: Sequence[str], needed_by: str) -> None:
    """Expose host device nodes (as upstream rune does for SGX: uid/gid 0, cgroup ``rwm``)."""
    linux = spec.setdefault("linux", {})
    devices = linux.setdefault("devices", [])
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            raise ConfigError(f"{path}, needed by enclave runtime {needed_by}, is not present on "
                              "this host") from None
        if stat.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            raise ConfigError(f"{path}, needed by enclave runtime {needed_by}, is not a device node")
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if not any(isinstance(d, dict) and d.get("path") == path for d in devices):
            devices.append({"path": path, "type": kind, "major": major, "minor": minor,
                            "fileMode": 0o666, "uid": 0, "gid": 0})
        rules.append({"allow": True, "type": kind, "major": major, "minor": minor, "access": "rwm"})


def add_host_mounts(spec: dict[str, Any], paths: Sequence[str], needed_by: str) -> None:
    """Bind host directories (sockets such as aesmd's) at the same path, read-write."""
    mounts = spec.setdefault("mounts", [])
    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"{path}, needed by enclave runtime {needed_by}, is not present on "
                              "this host")
        if any(isinstance(m, dict) and m.get("destination") == path for m in mounts):
            continue
        mounts.append({"destination": path, "type": "bind", "source": path,
                       "options": ["rbind", "nosuid", "nodev", "noexec"]})


def _python_runtime(ref: str) -> tuple[RuntimeRef, Any]:
    target = runtime_target(ref)
    module_name, _, attr = target.partition(":")
    if not module_name.startswith(BUILTIN_PREFIX):
        raise NotSupportedError(
            f"enclave runtime {ref} ({target}) is not built into inclavare; the runelet runs "
            "C PAL libraries and built-in Python runtimes only")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"enclave runtime {ref} cannot be loaded: {exc}") from None
    return RuntimeRef(KIND_PYTHON, name=ref, target=target), cls


def plan_runelet_launch(spec: dict[str, Any], *, runtime_ref: str, runtime_args: str,
                        log_level: str, rt_dir: str, private_dir: str) -> None:
    """Mutate ``spec`` in place so runc starts the runelet with the original process as payload.

    ``runtime_ref``: a PAL library path (contains ``/``) or a built-in runtime name.
    ``runtime_args``: space-separated (rune has already turned the annotation's commas into
    spaces). ``private_dir``: a directory only rune uses; the configuration is written there.
    """
    process = _process(spec)
    args = _strings(process.get("args"), "process.args")
    if not args:
        raise ConfigError("process.args in config.json must not be empty")
    env = _strings(process.get("env") or [], "process.env")
    cwd = process.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError("process.cwd in config.json must be an absolute path")
    for value, what in ((runtime_args, "enclave runtime args"), (log_level, "log level")):
        if "\x00" in value:
            raise ConfigError(f"{what} must not contain NUL characters")
    rt_dir = os.path.abspath(rt_dir)
    _check_rt_dir(rt_dir)
    mounts = spec_mounts(spec, layout.ROOT, "the runelet")

    extra_mounts: list[dict[str, Any]] = []
    if "/" in runtime_ref:
        pal = os.path.abspath(runtime_ref)
        if not os.path.isfile(pal):
            raise ConfigError(f"enclave runtime {runtime_ref} does not exist or is not a file")
        check_pal_dependencies(pal, rt_dir)
        runtime = RuntimeRef(KIND_PAL, path=layout.PAL)
        extra_mounts.append({"destination": layout.PAL, "type": "bind", "source": pal,
                             "options": list(_RO_BIND)})
        devices: Sequence[str] = ()
        host_mounts: Sequence[str] = ()
    else:
        runtime, cls = _python_runtime(runtime_ref)
        devices = tuple(getattr(cls, "required_devices", ()))
        host_mounts = tuple(getattr(cls, "required_mounts", ()))

    uid, gid = process_ids(spec)
    host_uid, host_gid = _host_ids(spec, uid, gid)
    config = RuneletConfig(runtime=runtime, args=runtime_args, log_level=log_level,
                           payload=Payload(tuple(args), tuple(env), cwd), socket=layout.SOCKET)
    os.makedirs(private_dir, mode=0o700, exist_ok=True)
    config_path = os.path.join(os.path.abspath(private_dir), CONFIG_FILE)
    write_atomic(config_path, config.to_json(), mode=0o400)
    os.chown(config_path, host_uid, host_gid)

    if devices:
        add_device_nodes(spec, devices, runtime_ref)
    if host_mounts:
        add_host_mounts(spec, host_mounts, runtime_ref)
    mounts.extend([
        {"destination": layout.ROOT, "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "mode=0755", "size=64k"]},
        {"destination": layout.RT, "type": "bind", "source": rt_dir, "options": list(_RO_BIND)},
        *extra_mounts,
        {"destination": layout.CONFIG, "type": "bind", "source": config_path,
         "options": [*_RO_BIND, "noexec"]},
        {"destination": layout.RUN, "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "mode=0700", "size=64k",
                     f"uid={uid}", f"gid={gid}"]},
    ])
    process["args"] = layout.runelet_command("init", layout.CONFIG)
    process["env"] = []


def runelet_exec_args(args: Sequence[str], *, env: Sequence[str] | None = None,
                      cwd: str | None = None) -> list[str]:
    """The process args ``rune exec`` gives ``runc exec`` to run ``args`` in the enclave.

    ``env``/``cwd`` default to the container process's own. They travel as arguments of
    the runelet's exec mode (visible in the container's process list while it runs).
    """
    if not args:
        raise ConfigError("exec needs a command")
    for value in (*args, *(env or ()), cwd or ""):
        if "\x00" in value:
            raise ConfigError("exec arguments must not contain NUL characters")
    if cwd is not None and not cwd.startswith("/"):
        raise ConfigError("exec cwd must be an absolute path")
    out = ["exec", "--socket", layout.SOCKET]
    if cwd is not None:
        out += ["--cwd", cwd]
    for item in env or ():
        out += ["--env", item]
    return layout.runelet_command(*out, "--", *args)
