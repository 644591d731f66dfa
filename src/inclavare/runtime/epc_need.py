"""How much EPC an enclave container needs, and whether it was allowed that much.

The need: the ``enclave.epc_mib`` annotation when given; else what the LibOS image declares
(Occlum: ``resource_limits`` of the instance's ``Occlum.json`` — user space, kernel heap and
kernel stack, which is most of the enclave Occlum builds; Gramine: ``sgx.enclave_size`` of the
signed manifest); else the allowance itself (the enclave takes what it was given); else 0.

The allowance: the ``enclave.epc_allowance_mib`` annotation the EPC device plugin's Allocate
sets on the container (absent: the container was not scheduled by EPC, and only the node
agent's node-wide accounting applies). A need above the allowance is refused here, at create,
in the plan both rune launchers share — before anything is measured or registered.

Image files are read inside the container's root filesystem without following any symlink
(the image is the tenant's; rune runs as root on the host).
"""

from __future__ import annotations

import os
import re

from inclavare.errors import ConfigError, EnclaveConfigError
from inclavare.services.deviceplugin.names import ALLOWANCE_ANNOTATION, NEED_ANNOTATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MIB = 1 << 20
MAX_MIB = 1 << 24  # 16 TiB: more than any EPC, small enough to stay an exact count
MAX_CONFIG_BYTES = 8 << 20
_SIZE = re.compile(r"^([0-9]{1,15})\s*([KMGT]?)(I?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class EpcAllowanceError(ConfigError):
    """An enclave needs more EPC than the container was allocated."""


def _mib_annotation(annotations: dict[str, Any], name: str) -> int | None:
    value = annotations.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isdigit() or not 0 <= int(value) <= MAX_MIB:
        raise EnclaveConfigError(f"annotation {name} must be a whole number of MiB up to {MAX_MIB}, "
                                 f"not {str(value)[:40]!r}")
    return int(value)


def size_to_mib(text: str, what: str) -> int:
    """``300MB``, ``512M``, ``1G``, ``4096`` (bytes) → MiB, rounded up."""
    m = _SIZE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise EnclaveConfigError(f"{what} {str(text)[:40]!r} is not a size such as 512M or 300MB")
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    return -(-size // MIB)


def read_in_rootfs(rootfs: str, path: str, limit: int = MAX_CONFIG_BYTES) -> bytes | None:
    """A regular file of the image, never through a symlink; None when it is not there."""
    parts = [p for p in os.path.normpath("/" + path).split("/") if p]
    if not parts:
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(rootfs, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for name in parts[:-1]:
            nxt = os.open(name, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        os.close(fd)
        return None
    os.close(fd)
    try:
        import stat

        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            return None
        data = os.read(leaf, limit + 1)
    finally:
        os.close(leaf)
    if len(data) > limit:
        raise EnclaveConfigError(f"{path} is larger than {limit} bytes")
    return data


def _words(runtime_args: str) -> list[str]:
    return [w for w in runtime_args.split() if "=" not in w]


def _occlum_mib(rootfs: str, cwd: str, runtime_args: str) -> int | None:
    words = _words(runtime_args)
    instance = os.path.normpath(os.path.join(cwd, words[0] if words else "."))
    data = read_in_rootfs(rootfs, os.path.join(instance, "Occlum.json"))
    if data is None:
        return None
    from inclavare.formats.strict_json import loads_strict

    doc = loads_strict(data, "Occlum.json")
    limits = doc.get("resource_limits") if isinstance(doc, dict) else None
    if not isinstance(limits, dict):
        raise EnclaveConfigError("Occlum.json has no resource_limits object")
    keys = ("user_space_size", "kernel_space_heap_size", "kernel_space_stack_size")
    return sum(size_to_mib(limits.get(k, "0"), f"Occlum.json resource_limits.{k}") for k in keys)


def _gramine_mib(rootfs: str, cwd: str, runtime_args: str) -> int | None:
    words = _words(runtime_args)
    if len(words) != 1:
        return None  # the Gramine runtime refuses this itself, with its own message
    stem = os.path.normpath(os.path.join(cwd, words[0]))
    data = read_in_rootfs(rootfs, stem + ".manifest.sgx")
    if data is None:
        return None
    import tomllib

    try:
        manifest = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EnclaveConfigError(f"{stem}.manifest.sgx is not valid TOML: {str(exc)[:80]}") from None
    sgx = manifest.get("sgx")
    size = sgx.get("enclave_size") if isinstance(sgx, dict) else None
    if size is None:
        return None
    return size_to_mib(str(size), "sgx.enclave_size")


class EpcNeed:
    __slots__ = ("mib", "source", "allowance")

    def __init__(self, mib: int, source: str, allowance: int | None) -> None:
        self.mib, self.source, self.allowance = mib, source, allowance


def epc_need(spec: dict[str, Any], rootfs: str, runtime_ref: str, runtime_args: str) -> EpcNeed:
    """What the container needs and was allowed; raises EpcAllowanceError when need > allowance."""
    annotations = spec.get("annotations") or {}
    allowance = _mib_annotation(annotations, ALLOWANCE_ANNOTATION)
    declared = _mib_annotation(annotations, NEED_ANNOTATION)
    if declared is not None:
        need = EpcNeed(declared, NEED_ANNOTATION, allowance)
    else:
        process = spec.get("process") or {}
        cwd = process.get("cwd") if isinstance(process.get("cwd"), str) else "/"
        derived = None
        if runtime_ref == "occlum":
            derived = _occlum_mib(rootfs, cwd or "/", runtime_args)
            source = "Occlum.json resource_limits"
        elif runtime_ref == "gramine":
            derived = _gramine_mib(rootfs, cwd or "/", runtime_args)
            source = "Gramine sgx.enclave_size"
        if derived is not None:
            need = EpcNeed(min(derived, MAX_MIB), source, allowance)
        else:
            need = EpcNeed(allowance or 0, ALLOWANCE_ANNOTATION if allowance else "undeclared", allowance)
    if allowance is not None and need.mib > allowance:
        raise EpcAllowanceError(
            f"enclave needs {need.mib} MiB of EPC ({need.source}) but the container was allocated "
            f"{allowance} MiB ({ALLOWANCE_ANNOTATION}): request at least {need.mib} MiB of EPC for it")
    return need
