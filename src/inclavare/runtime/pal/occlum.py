"""Occlum: configuration generation and the adapter that launches ``occlum run``.

Configuration: :func:`occlum_config_from_env` reads the ``OCCLUM_*`` variables upstream's
shim-rune carrier read (Inclavare ``shim/runtime/carrier/occlum/config.go``) over sane
defaults (Occlum's current template), validating every value; :func:`occlum_json` renders
the ``Occlum.json`` for ``occlum build``. Unlike upstream, a malformed value is an error (not
a logged zero) and the enclave is NOT debuggable unless ``OCCLUM_DEBUGGABLE`` says so: a
debuggable enclave's memory is readable by the host.

Runtime (``occlum``): the image ships a built, signed Occlum instance; the enclave runtime
args name its directory (upstream's ``ENCLAVE_RUNTIME_ARGS=./``) and may set
``occlum=PATH``. The container's process becomes ``occlum run PATH ARGS...`` in that
directory, driven by the runelet. Untested on SGX hardware (none here).
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inclavare.errors import ConfigError, PalError
from inclavare.runtime.pal.host_processes import env_mapping
from inclavare.runtime.pal.libos_launch import LibosRuntime

_SIZE = re.compile(r"^[1-9][0-9]{0,9}(KB|MB|GB)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")

# rune's log levels -> OCCLUM_LOG_LEVEL
OCCLUM_LOG_LEVELS = {"trace": "trace", "debug": "debug", "info": "info", "warning": "warn",
                     "error": "error", "fatal": "error", "panic": "error", "off": "off"}


@dataclass(frozen=True)
class OcclumConfig:
    user_space_size: str = "300MB"
    kernel_space_heap_size: str = "32MB"
    kernel_space_stack_size: str = "1MB"
    max_num_of_threads: int = 32
    default_stack_size: str = "4MB"
    default_heap_size: str = "32MB"
    default_mmap_size: str = "100MB"
    product_id: int = 0
    version_number: int = 0
    debuggable: bool = False
    default_env: tuple[str, ...] = ("OCCLUM=yes",)
    untrusted_env: tuple[str, ...] = ()
    entry_points: tuple[str, ...] = field(default=("/bin",))


def _size(name: str, value: str) -> str:
    if not _SIZE.match(value):
        raise ConfigError(f"{name}={value!r:.40}: expected a size such as 32MB (KB, MB or GB)")
    return value


def _int(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", value) or not low <= int(value) <= high:
        raise ConfigError(f"{name}={value!r:.40}: expected an integer in [{low}, {high}]")
    return int(value)


def _bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r:.40}: expected true or false")


def _env_list(name: str, value: str, with_values: bool) -> tuple[str, ...]:
    items = tuple(v for v in value.split(",") if v)
    for item in items:
        key = item.partition("=")[0] if with_values else item
        if not _ENV_NAME.match(key) or (with_values and "=" not in item):
            raise ConfigError(f"{name}: {item!r:.40} is not a "
                              f"{'NAME=value pair' if with_values else 'variable name'}")
    return items


def occlum_config_from_env(env: Mapping[str, str] | Sequence[str],
                           base: OcclumConfig | None = None) -> OcclumConfig:
    """The configuration the ``OCCLUM_*`` variables of a container's environment ask for."""
    values = dict(env) if isinstance(env, Mapping) else env_mapping(env)
    cfg = base or OcclumConfig()
    changes: dict[str, Any] = {}
    sizes = {"OCCLUM_USER_SPACE_SIZE": "user_space_size",
             "OCCLUM_KERNEL_SPACE_HEAP_SIZE": "kernel_space_heap_size",
             "OCCLUM_KERNEL_SPACE_STACK_SIZE": "kernel_space_stack_size",
             "OCCLUM_PROCESS_DEFAULT_STACK_SIZE": "default_stack_size",
             "OCCLUM_PROCESS_DEFAULT_HEAP_SIZE": "default_heap_size",
             "OCCLUM_PROCESS_DEFAULT_MMAP_SIZE": "default_mmap_size"}
    for var, attr in sizes.items():
        if var in values:
            changes[attr] = _size(var, values[var])
    if "OCCLUM_MAX_NUM_OF_THREADS" in values:
        changes["max_num_of_threads"] = _int("OCCLUM_MAX_NUM_OF_THREADS",
                                             values["OCCLUM_MAX_NUM_OF_THREADS"], 1, 4096)
    if "OCCLUM_PRODUCT_ID" in values:  # SGX ISVPRODID / ISVSVN are 16-bit
        changes["product_id"] = _int("OCCLUM_PRODUCT_ID", values["OCCLUM_PRODUCT_ID"], 0, 65535)
    if "OCCLUM_VERSION_NUMBER" in values:
        changes["version_number"] = _int("OCCLUM_VERSION_NUMBER",
                                         values["OCCLUM_VERSION_NUMBER"], 0, 65535)
    if "OCCLUM_DEBUGGABLE" in values:
        changes["debuggable"] = _bool("OCCLUM_DEBUGGABLE", values["OCCLUM_DEBUGGABLE"])
    if values.get("OCCLUM_DEFAULT_ENV"):
        changes["default_env"] = _env_list("OCCLUM_DEFAULT_ENV", values["OCCLUM_DEFAULT_ENV"], True)
    if values.get("OCCLUM_UNTRUSTED_ENV"):
        changes["untrusted_env"] = _env_list("OCCLUM_UNTRUSTED_ENV",
                                             values["OCCLUM_UNTRUSTED_ENV"], False)
    return replace(cfg, **changes)


def occlum_json(cfg: OcclumConfig) -> dict[str, Any]:
    """``Occlum.json`` (Occlum's current layout) for ``cfg``."""
    return {
        "resource_limits": {
            "kernel_space_heap_size": cfg.kernel_space_heap_size,
            "kernel_space_stack_size": cfg.kernel_space_stack_size,
            "user_space_size": cfg.user_space_size,
            "max_num_of_threads": cfg.max_num_of_threads,
        },
        "process": {
            "default_stack_size": cfg.default_stack_size,
            "default_heap_size": cfg.default_heap_size,
            "default_mmap_size": cfg.default_mmap_size,
        },
        "entry_points": list(cfg.entry_points),
        "env": {"default": list(cfg.default_env), "untrusted": list(cfg.untrusted_env)},
        "metadata": {
            "product_id": cfg.product_id,
            "version_number": cfg.version_number,
            "debuggable": cfg.debuggable,
            "enable_kss": False,
            "family_id": {"high": "0x0", "low": "0x0"},
            "ext_prod_id": {"high": "0x0", "low": "0x0"},
        },
        "feature": {"amx": 0, "pkru": 0, "io_uring": 0, "enable_edmm": False,
                    "enable_posix_shm": False},
        "mount": [
            {"target": "/", "type": "unionfs", "options": {"layers": [
                {"target": "/", "type": "sefs", "source": "./build/mount/__ROOT",
                 "options": {"MAC": ""}},
                {"target": "/", "type": "sefs", "source": "./run/mount/__ROOT"},
            ]}},
            {"target": "/host", "type": "hostfs", "source": "."},
        ],
    }


class OcclumEnclaveRuntime(LibosRuntime):
    """``occlum run`` in the instance directory the runtime args name (default: cwd)."""

    name = "occlum"
    tool = "occlum"

    def configure(self, words: list[str]) -> None:
        if len(words) > 1:
            raise PalError(f"occlum: expected one instance directory, got {' '.join(words)!r:.80}",
                           errno_mod.EINVAL)
        instance = os.path.abspath(words[0] if words else ".")
        if not os.path.isfile(os.path.join(instance, "Occlum.json")):
            raise PalError(f"occlum: {instance} is not an Occlum instance (no Occlum.json)",
                           errno_mod.ENOENT)
        self.workdir = instance

    def command(self, path: str, argv: Sequence[str]) -> list[str]:
        return [self.tool_path, "run", path, *argv[1:]]

    def extra_env(self) -> dict[str, str]:
        return {"OCCLUM_LOG_LEVEL": OCCLUM_LOG_LEVELS.get(self.log_level, "info")}
