"""The node agent's registry of enclave containers, kept in the run directory.

Every registration is one JSON file written atomically, so a restarted agent (even after
``kill -9``) knows every running enclave container and its measurement. A container's identity
is its init process (learnt from ``runc state``), pinned by its start time: the namespaces a
caller must share are read from that process each time, so a namespace inode recycled by a later
container never inherits an identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from inclavare.atomic_file import write_atomic
from inclavare.errors import AgentError, ConfigError
from inclavare.services.peer import Namespaces, namespaces_of
from inclavare.tee.simulated import SIM_TYPE, simulated_tee

RESOLVE_INTERVAL = 0.5  # at most one `runc state` per container per this many seconds
GC_GRACE = 30.0  # a registration younger than this is never collected (its create may be under way)


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
    epc_mib: int = 0  # the enclave's EPC need (node-wide accounting of the simulated TEE)
    registered_at: float = field(default_factory=time.time)
    init_pid: int = 0
    init_start: int = 0

    @property
    def key(self) -> str:
        return registration_key(self.root, self.id)

    @property
    def tee(self) -> str:
        return self.enclave.get("type", "")

    @property
    def simulated_tee(self) -> str:
        """The TEE the node's simulated platform quotes for ('' for hardware enclave types)."""
        return simulated_tee(self.tee, self.enclave.get("path", ""))

    def public(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies, and this runs on every create
        return {"id": self.id, "root": self.root, "runc": self.runc, "bundle": self.bundle,
                "measurement": self.measurement, "enclave": dict(self.enclave), "runtime": self.runtime,
                "cleanup": self.cleanup, "registered_at": self.registered_at, "init_pid": self.init_pid,
                "init_start": self.init_start, "epc_mib": self.epc_mib}


def registration_key(root: str, container_id: str) -> str:
    return hashlib.sha256(f"{os.path.abspath(root)}\0{container_id}".encode()).hexdigest()[:40]


MAX_EPC_MIB = 1 << 24
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
    if "/" in doc["id"] or doc["id"] in (".", ".."):
        raise ConfigError("container id must not contain '/'")
    cleanup = doc.get("cleanup", "")
    if not isinstance(cleanup, str) or (cleanup and not os.path.isabs(cleanup)):
        raise ConfigError("cleanup must be an absolute path")
    epc_mib = doc.get("epc_mib", 0)
    if not isinstance(epc_mib, int) or isinstance(epc_mib, bool) or not 0 <= epc_mib <= MAX_EPC_MIB:
        raise ConfigError(f"epc_mib must be a whole number of MiB in [0, {MAX_EPC_MIB}]")
    return Registration(id=doc["id"], root=os.path.abspath(doc["root"]), runc=doc["runc"],
                        bundle=doc["bundle"], measurement=doc["measurement"].lower(),
                        enclave=dict(doc["enclave"]), runtime=doc["runtime"], cleanup=cleanup, epc_mib=epc_mib)


RUNC_STATE_MAX = 1 << 20  # runc's state.json holds the container's config: a few KiB to a few hundred


def runc_init_process(root: str, container_id: str) -> tuple[int, int]:
    """The init pid and start time (clock ticks) runc recorded for a container, or (0, 0).

    Read from runc's ``state.json`` rather than by running ``runc state``: a file read costs
    microseconds and cannot be multiplied into process spawns by whoever sends requests."""
    try:
        with open(os.path.join(root, container_id, "state.json"), "rb") as f:
            data = f.read(RUNC_STATE_MAX + 1)
        if len(data) > RUNC_STATE_MAX:
            return 0, 0
        state = json.loads(data)
    except (OSError, ValueError):
        return 0, 0
    pid = state.get("init_process_pid") if isinstance(state, dict) else None
    started = state.get("init_process_start") if isinstance(state, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(started, int):
        return 0, 0
    return pid, started


def _remove_rune_state(path: str) -> None:
    """rune's per-container directory (record + private bundle), only if it looks like one."""
    if path and os.path.isfile(os.path.join(path, "record.json")):
        shutil.rmtree(path, ignore_errors=True)


class Registry:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._items: dict[str, Registration] = {}
        self._last_resolve: dict[str, float] = {}
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
                              init_pid=int(doc.get("init_pid", 0)), init_start=int(doc.get("init_start", 0)))
            except (OSError, ValueError, ConfigError, KeyError, TypeError):
                continue  # a damaged file is skipped, never trusted
            self._items[reg.key] = reg

    def _save(self, reg: Registration) -> None:
        # /run dies with the host and its containers: atomic against a killed agent is enough
        write_atomic(self._path(reg.key), json.dumps(reg.public()).encode(), durable=False)

    def register(self, reg: Registration, epc_capacity_mib: int = 0) -> Registration:
        """Record ``reg``; with a capacity, a sim enclave is refused when the sim enclaves holding
        EPC would need more than the node has (checked and recorded under one lock)."""
        with self._lock:
            old = self._items.get(reg.key)
            if old is not None and self._still_running(old):
                raise AgentError(f"container {reg.id} is already registered")
            if epc_capacity_mib and reg.tee == SIM_TYPE and reg.epc_mib:
                in_use = self._epc_in_use(exclude=reg.key)
                if in_use + reg.epc_mib > epc_capacity_mib:
                    raise AgentError(
                        f"enclave container {reg.id} needs {reg.epc_mib} MiB of EPC but the node has "
                        f"{max(epc_capacity_mib - in_use, 0)} MiB free ({in_use} of {epc_capacity_mib} MiB "
                        "held by running enclaves)")
            self._save(reg)
            self._items[reg.key] = reg
            self._last_resolve.pop(reg.key, None)
            return reg

    def deregister(self, root: str, container_id: str) -> Registration | None:
        key = registration_key(root, container_id)
        with self._lock:
            reg = self._items.pop(key, None)
            self._last_resolve.pop(key, None)
            if reg is None:
                return None
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
        _remove_rune_state(reg.cleanup)
        return reg

    # -- EPC accounting ---------------------------------------------------------------------

    def holds_epc(self, reg: Registration, now: float | None = None) -> bool:
        """Whether a registration still holds its EPC: its container runs, or is being created.

        Computed from the persisted registrations and kernel facts each time, so a restarted
        agent (even after ``kill -9``) counts exactly what still runs, and a container that
        exited (before anyone deleted it) frees its EPC at once."""
        if reg.init_pid and namespaces_of(reg.init_pid, reg.init_start) is not None:
            return True
        pid, started = runc_init_process(reg.root, reg.id)
        if pid > 0:
            return namespaces_of(pid, started) is not None
        if reg.init_pid:
            return False  # it ran once and runc has no live init for it any more
        return (now or time.time()) - reg.registered_at < GC_GRACE  # created, not yet known to runc

    def _epc_in_use(self, exclude: str = "") -> int:
        now = time.time()
        return sum(r.epc_mib for r in self._items.values()
                   if r.key != exclude and r.tee == SIM_TYPE and r.epc_mib and self.holds_epc(r, now))

    def epc_in_use(self) -> int:
        with self._lock:
            return self._epc_in_use()

    def get(self, root: str, container_id: str) -> Registration | None:
        return self._items.get(registration_key(root, container_id))

    def by_key(self, key: str) -> Registration | None:
        return self._items.get(key)

    def all(self) -> list[Registration]:
        return sorted(self._items.values(), key=lambda r: r.registered_at)

    # -- identity -------------------------------------------------------------------------

    def init_namespaces(self, key: str) -> Namespaces | None:
        """The namespaces of the container's init process, or None while it does not run.

        The recorded init is trusted only while it is alive with its recorded start time; else
        runc's own record of the container (``<root>/<id>/state.json``) is read again, at most
        every RESOLVE_INTERVAL seconds per container. This runs for every caller, identified or
        not, so it never starts a process (no ``runc state``) and holds the lock only to count."""
        reg = self._items.get(key)
        if reg is None:
            return None
        if reg.init_pid:
            ns = namespaces_of(reg.init_pid, reg.init_start)
            if ns is not None:
                return ns
        with self._lock:
            now = time.monotonic()
            if now - self._last_resolve.get(key, -RESOLVE_INTERVAL) < RESOLVE_INTERVAL:
                return None
            self._last_resolve[key] = now
        pid, started = runc_init_process(reg.root, reg.id)
        if pid <= 0:
            return None
        ns = namespaces_of(pid, started)
        if ns is None:
            return None  # exited, or the pid now belongs to another process
        with self._lock:
            if self._items.get(key) is reg:
                resolved = replace(reg, init_pid=pid, init_start=started)
                self._items[key] = resolved
                self._save(resolved)
        return ns

    def _alive(self, reg: Registration) -> bool:
        return bool(reg.init_pid) and namespaces_of(reg.init_pid, reg.init_start) is not None

    def _still_running(self, reg: Registration) -> bool:
        return self._alive(reg) or self._runc_pid(reg) > 0

    def _runc_pid(self, reg: Registration) -> int:
        """The init pid runc recorded, if it still runs (0: not running; -1: runc does not know the
        container). Read from runc's ``state.json`` as for callers: no process is ever started."""
        if not os.path.exists(os.path.join(reg.root, reg.id, "state.json")):
            return -1  # runc keeps <root>/<id>/state.json while it knows a container
        pid, started = runc_init_process(reg.root, reg.id)
        return pid if pid > 0 and namespaces_of(pid, started) is not None else 0

    def collect_garbage(self, grace: float = GC_GRACE) -> list[Registration]:
        """Drop registrations whose container runc no longer knows (registered at least ``grace``
        seconds ago: runc creates its state only after rune registered the container)."""
        gone = []
        now = time.time()
        for reg in self.all():
            if now - reg.registered_at < grace or self._alive(reg):
                continue
            if self._runc_pid(reg) == -1:
                dropped = self.deregister(reg.root, reg.id)
                if dropped is not None:
                    gone.append(dropped)
        return gone
