"""The runelet's configuration: what the launch planner writes and the runelet reads.

One JSON object, written by rune into the container's private directory and mounted
read-only at ``/.inclavare/runelet.json``. Unknown keys and wrong types are errors: the file
decides what runs in the enclave, so nothing in it is guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inclavare.errors import ConfigError

CONFIG_VERSION = 1
KIND_PAL = "pal"
KIND_PYTHON = "python"


@dataclass(frozen=True)
class RuntimeRef:
    """A C PAL (``path`` inside the container) or a built-in Python runtime (``target``)."""

    kind: str
    path: str = ""
    name: str = ""
    target: str = ""


@dataclass(frozen=True)
class Payload:
    """The container's own process: run inside the enclave instead of as pid 1."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str


@dataclass(frozen=True)
class RuneletConfig:
    runtime: RuntimeRef
    args: str
    log_level: str
    payload: Payload
    socket: str

    def to_json(self) -> bytes:
        runtime: dict[str, str] = {"kind": self.runtime.kind}
        if self.runtime.kind == KIND_PAL:
            runtime["path"] = self.runtime.path
        else:
            runtime.update(name=self.runtime.name, target=self.runtime.target)
        return json.dumps({
            "version": CONFIG_VERSION,
            "runtime": runtime,
            "args": self.args,
            "log_level": self.log_level,
            "payload": {"args": list(self.payload.args), "env": list(self.payload.env),
                        "cwd": self.payload.cwd},
            "socket": self.socket,
        }, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RuneletConfig:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ConfigError("runelet configuration is not UTF-8 JSON") from None
        top = _object(obj, "runelet configuration",
                      {"version", "runtime", "args", "log_level", "payload", "socket"})
        if top.get("version") != CONFIG_VERSION:
            raise ConfigError(f"runelet configuration version must be {CONFIG_VERSION}")
        rt = _object(top.get("runtime"), "runtime", {"kind", "path", "name", "target"})
        kind = rt.get("kind")
        if kind == KIND_PAL:
            runtime = RuntimeRef(KIND_PAL, path=_abs_path(rt.get("path"), "runtime.path"))
        elif kind == KIND_PYTHON:
            runtime = RuntimeRef(KIND_PYTHON, name=_string(rt.get("name"), "runtime.name"),
                                 target=_string(rt.get("target"), "runtime.target"))
        else:
            raise ConfigError(f"runtime.kind must be {KIND_PAL!r} or {KIND_PYTHON!r}")
        pl = _object(top.get("payload"), "payload", {"args", "env", "cwd"})
        args = _strings(pl.get("args"), "payload.args")
        if not args:
            raise ConfigError("payload.args must not be empty")
        payload = Payload(args, _strings(pl.get("env"), "payload.env"),
                          _abs_path(pl.get("cwd"), "payload.cwd"))
        return cls(runtime=runtime, args=_string(top.get("args"), "args", allow_empty=True),
                   log_level=_string(top.get("log_level"), "log_level"), payload=payload,
                   socket=_abs_path(top.get("socket"), "socket"))


def _object(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    extra = set(value) - allowed
    if extra:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(sorted(extra))}")
    return value


def _string(value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty) or "\x00" in value:
        raise ConfigError(f"{what} must be a {'' if allow_empty else 'non-empty '}string without NUL")
    return value


def _abs_path(value: Any, what: str) -> str:
    path = _string(value, what)
    if not path.startswith("/"):
        raise ConfigError(f"{what} must be an absolute path")
    return path


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "\x00" not in v for v in value):
        raise ConfigError(f"{what} must be a list of strings without NUL")
    return tuple(value)
