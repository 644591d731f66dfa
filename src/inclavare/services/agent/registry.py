"""The agent's registry of enclave containers, kept in the run directory.

Every registration is one JSON file written atomically, so a restarted agent (even after
``kill -9``) knows every running enclave container and its measurement. A workload is matched to
its container through the container's pid namespace, learnt from runc (``runc state``) and
re-validated on every use (the init process must still be alive with the same start time), so a
namespace inode recycled by a later container never inherits an identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from inclavare.atomic_file import write_atomic
from inclavare.errors import AgentError, ConfigError
from inclavare.services.agent.peer import Peer, namespace_of, start_time


@dataclass(frozen=True)
class Registration:
    id: str
    root: str
    runc: str
    bundle: str
    measurement: str  # hex
    enclave: dict[str, str]
    runtime: str
    cleanup: str = ""  # rune's per-container state directory, removed with the registration
    registered_at: float = field(default_factory=time.time)
    init_pid: int = 0
    init_start: int = 0
    pid_ns: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return registration_key(self.root, self.id)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["pid_ns"] = list(self.pid_ns) if self.pid_ns else None
        return d


def registration_key(root: str, container_id: str) -> str:
    return hashlib.sha256(f"{os.path.abspath(root)}\0{container_id}".encode()).hexdigest()[:40]


REQUIRED = ("id", "root", "runc", "bundle", "measurement", "enclave", "runtime")


def registration_from(doc: Any) -> Registration:
    if not isinstance(doc, dict):
        raise ConfigError("registration must be a JSON object")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ConfigError(f"registration lacks {', '.join(missing)}")
    for k in ("id", "root", "runc", "bundle", "measurement", "runtime"):
        if not isinstance(doc[k], str) or not doc[k]:
            raise ConfigError(f"registration field {k} must be a non-empty string")
    if not isinstance(doc["enclave"], dict) or not all(isinstance(v, str) for v in doc["enclave"].values()):
        raise ConfigError("registration field enclave must be an object of strings")
    try:
        if len(bytes.fromhex(doc["measurement"])) != 32:
            raise ValueError
    except ValueError:
        raise ConfigError("measurement must be 32 bytes of hex") from None
    if not os.path.isabs(doc["root"]) or not os.path.isabs(doc["runc"]):
        raise ConfigError("root and runc must be absolute paths")
    cleanup = doc.get("cleanup", "")
    if not isinstance(cleanup, str) or (cleanup and not os.path.isabs(cleanup)):
        raise ConfigError("cleanup must be an absolute path")
    return Registration(id=doc["id"], root=os.path.abspath(doc["root"]), runc=doc["runc"],
                        bundle=doc["bundle"], measurement=doc["measurement"].lower(),
                        enclave=dict(doc["enclave"]), runtime=doc["runtime"], cleanup=cleanup)


def _remove_rune_state(path: str) -> None:
    """rune's per-container directory (record + private bundle), only if it looks like one."""
    if path and os.path.isfile(os.path.join(path, "record.json")):
        shutil.rmtree(path, ignore_errors=True)


class Registry:
    def __init__(self, directory: str, host_pid_ns: tuple[int, int] | None = None) -> None:
        self.directory = directory
        # processes in this namespace are on the host, in no container
        self.host_pid_ns = host_pid_ns or namespace_of(os.getpid())
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._items: dict[str, Registration] = {}
        self._by_ns: dict[tuple[int, int], str] = {}
        self._load()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key + ".json")

    def _load(self) -> None:
        for name in os.listdir(self.directory):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    doc = json.load(f)
                reg = registration_from(doc)
                reg = replace(reg, registered_at=float(doc.get("registered_at", 0)),
                              init_pid=int(doc.get("init_pid", 0)), init_start=int(doc.get("init_start", 0)),
                              pid_ns=(int(doc["pid_ns"][0]), int(doc["pid_ns"][1])) if doc.get("pid_ns") else None)
            except (OSError, ValueError, ConfigError, KeyError, TypeError):
                continue  # a damaged file is skipped, never trusted
            self._items[reg.key] = reg
            if reg.pid_ns and self._valid(reg):  # a dead container's namespace inode may be reused
                self._by_ns[reg.pid_ns] = reg.key

    def _save(self, reg: Registration) -> None:
        # /run dies with the host and its containers: atomic against a killed agent is enough
        write_atomic(self._path(reg.key), json.dumps(reg.public()).encode(), durable=False)

    def register(self, reg: Registration) -> Registration:
        with self._lock:
            old = self._items.get(reg.key)
            if old is not None and self._still_running(old):
                raise AgentError(f"container {reg.id} is already registered")
            self._save(reg)
            self._items[reg.key] = reg
            return reg

    def deregister(self, root: str, container_id: str) -> bool:
        key = registration_key(root, container_id)
        with self._lock:
            reg = self._items.pop(key, None)
            if reg is None:
                return False
            if reg.pid_ns:
                self._by_ns.pop(reg.pid_ns, None)
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
            _remove_rune_state(reg.cleanup)
            return True

    def get(self, root: str, container_id: str) -> Registration | None:
        return self._items.get(registration_key(root, container_id))

    def all(self) -> list[Registration]:
        return sorted(self._items.values(), key=lambda r: r.registered_at)

    # -- identification -------------------------------------------------------------------

    def _valid(self, reg: Registration) -> bool:
        if not reg.init_pid or not reg.pid_ns:
            return False
        try:
            return start_time(reg.init_pid) == reg.init_start and namespace_of(reg.init_pid) == reg.pid_ns
        except (OSError, ValueError):
            return False

    def _still_running(self, reg: Registration) -> bool:
        return self._valid(reg) or self._runc_pid(reg) > 0

    def _runc_pid(self, reg: Registration) -> int:
        try:
            r = subprocess.run([reg.runc, "--root", reg.root, "state", reg.id], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return 0
        if r.returncode != 0:
            return -1 if b"does not exist" in r.stderr else 0
        try:
            state = json.loads(r.stdout)
        except ValueError:
            return 0
        if state.get("status") == "stopped":
            return 0
        pid = state.get("pid")
        return pid if isinstance(pid, int) and pid > 0 else 0

    def _resolve(self, reg: Registration) -> Registration | None:
        pid = self._runc_pid(reg)
        if pid <= 0:
            return None
        try:
            resolved = replace(reg, init_pid=pid, init_start=start_time(pid), pid_ns=namespace_of(pid))
        except (OSError, ValueError):
            return None
        self._save(resolved)
        self._items[reg.key] = resolved
        if resolved.pid_ns:
            self._by_ns[resolved.pid_ns] = reg.key
        return resolved

    def identify(self, peer: Peer) -> Registration | None:
        """The enclave container the peer runs in, or None.

        Namespace inodes are recycled once a namespace dies, so a mapping is trusted only while
        the registered init process is alive, with its start time, in that namespace.
        """
        if peer.pid_ns == self.host_pid_ns:
            return None
        with self._lock:
            key = self._by_ns.get(peer.pid_ns)
            reg = self._items.get(key) if key else None
            if reg is not None and reg.pid_ns == peer.pid_ns and self._valid(reg):
                return reg
            self._by_ns.pop(peer.pid_ns, None)
            for reg in self._items.values():
                if reg.pid_ns == peer.pid_ns and self._valid(reg):
                    self._by_ns[peer.pid_ns] = reg.key
                    return reg
            for reg in list(self._items.values()):
                if reg.pid_ns and self._valid(reg):
                    continue  # alive in another namespace
                resolved = self._resolve(reg)
                if resolved is not None and resolved.pid_ns == peer.pid_ns:
                    return resolved
        return None

    def collect_garbage(self) -> list[str]:
        """Drop registrations whose container runc no longer knows."""
        gone = []
        for reg in self.all():
            if self._valid(reg):
                continue
            if self._runc_pid(reg) == -1:
                self.deregister(reg.root, reg.id)
                gone.append(reg.id)
        return gone
