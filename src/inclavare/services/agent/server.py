"""The node agent: the host's side of enclave containers, and only the host's side.

It plays the parts the host plays with real hardware — and holds no tenant secret and no
enclave key:

* the **control** socket (root only, 0600): rune registers and deregisters enclave containers
  (``/v1/containers``) and has creates planned (``/v1/prepare``, given by the command line);
* one **channel** per registered container (:mod:`.channel`): the simulated quoting enclave,
  collateral, and an opaque relay to the key broker, answering that container's own processes
  only.

Everything that touches a secret — the TEE key pair, the key broker protocol, JWE decryption,
tokens — runs in the enclave agent inside each container
(:mod:`inclavare.services.enclave_agent`). All sockets are served by the bounded server of
:mod:`inclavare.services.unix_http`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from inclavare import __version__
from inclavare.errors import AgentError
from inclavare.secrets.sealing_keys import SealingSecret
from inclavare.services.agent import paths
from inclavare.services.agent.channel import Channels, Quoter, RelayTarget, registry_targets
from inclavare.services.agent.registry import Registration, Registry, registration_from
from inclavare.services.agent.tsm_fs import PROVIDER_OF, TsmFsError, TsmServer
from inclavare.services.enclave_layout import HOST_SOCKET_NAME
from inclavare.services.logs import configure, event, request_id
from inclavare.services.peer import Peer, credentials
from inclavare.services.prometheus import Counters
from inclavare.services.unix_http import HttpError, Limits, Listener, Request, Response, UnixHttpServer, after_answer

log = logging.getLogger("inclavare.agent")
METRICS = {  # named like the key broker's (Trustee's kbs_* counters)
    "agent_quotes_total": "quotes issued to enclave containers",
    "agent_refusals_total": "channel connections refused, by reason",
    "agent_registrations_total": "enclave containers registered (enclave starts)",
    "agent_deregistrations_total": "enclave containers deregistered",
    "agent_relay_tunnels_total": "relay tunnels to the key broker that ended",
    "agent_relay_bytes_total": "bytes relayed, by direction (counted, never read)",
    "agent_sealing_keys_total": "sealing keys derived for enclave containers (simulated EGETKEY)",
}

GC_INTERVAL = 5.0  # a dead container costs a stat: forget it soon, with its channel
ControlHandlerFactory = Callable[["Agent"], Callable[[Any], tuple[int, Any]]]


def _root_only(peer: Peer | None) -> None:
    if peer is None or peer.uid != 0:
        raise HttpError(403, "the control socket is for root on the host")


class Agent:
    def __init__(self, state_dir: str, control_socket: str, kbs_url: str | None = None,
                 extra_control: dict[str, ControlHandlerFactory] | None = None,
                 limits: Limits | None = None, epc_mib: int = 0, registries: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.epc_mib = epc_mib  # the simulated TEE's EPC (0: not accounted)
        self.control_socket = os.path.abspath(control_socket)
        self.run_dir = os.path.dirname(self.control_socket)
        self.channels_dir = paths.channels_dir_for(self.control_socket)
        self.registry = Registry(os.path.join(self.run_dir, "agent", "containers"))
        self.relay = RelayTarget.parse(kbs_url) if kbs_url else None
        self.metrics = Counters(METRICS, {
            "agent_enclaves": ("enclave containers registered", lambda: len(self.registry.all())),
            "agent_epc_in_use_mib": ("EPC held by running sim enclaves (MiB)", self.registry.epc_in_use),
            "agent_epc_capacity_mib": ("the simulated TEE's EPC (MiB; 0: not accounted)", lambda: self.epc_mib),
        })
        self.sealing = SealingSecret(state_dir)  # the simulated CPU's sealing secret
        quoter = Quoter(self.sim_authority, amd_dir=os.path.join(state_dir, "amd"),
                        rtmr_dir=os.path.join(self.run_dir, "agent", "rtmrs"))
        self.channels = Channels(self.registry, quoter, self.relay, self.metrics, self.sealing,
                                 registry_targets(registries or []))
        self.tsm = TsmServer(self.channels, os.path.join(self.run_dir, "agent", "tsm"))
        self.http = UnixHttpServer(limits, log)
        self.started = time.time()
        self._sim: Any = None
        self._sim_lock = threading.Lock()
        self._listeners: dict[str, Listener] = {}
        self._channel_lock = threading.Lock()
        self._stop = threading.Event()
        # POST routes of higher layers (rune's prepare service), given by the command line
        self.extra_control = {path: factory(self) for path, factory in (extra_control or {}).items()}

    def sim_authority(self) -> Any:
        with self._sim_lock:
            if self._sim is None:
                from inclavare.tee.sim_authority import SimAuthority

                self._sim = SimAuthority.load_or_create(os.path.join(self.state_dir, "sim"))
            return self._sim

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.sim_authority()  # create/load keys now: fail at start, not at first request
        self.sealing.get()
        os.makedirs(self.channels_dir, mode=0o711, exist_ok=True)
        os.chmod(self.channels_dir, 0o711)
        self.http.listen(self.control_socket, self._control, name="control", mode=0o600, admit=_root_only,
                         identify=credentials)
        self.tsm.detach_stale()  # after the listen: no other agent serves this run directory
        known = set()
        for reg in self.registry.all():
            self._open_channel(reg)
            known.add(reg.key)
        for name in os.listdir(self.channels_dir):  # channels of containers forgotten meanwhile
            if name not in known:
                shutil.rmtree(os.path.join(self.channels_dir, name), ignore_errors=True)
        self.channels.quoter.forget_all_but(known)
        self.http.start()
        threading.Thread(target=self._gc_loop, name="gc", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.http.stop()
        self.tsm.stop()

    def wait(self) -> None:
        self._stop.wait()

    def _gc_loop(self) -> None:
        while not self._stop.wait(GC_INTERVAL):
            try:
                for reg in self.registry.collect_garbage():
                    self._close_channel(reg.key)
                    event(log, "forget", "forgot enclave container %s (runc no longer knows it)", reg.id,
                          container=reg.id, root=reg.root)
            except Exception:  # keep serving; the next round retries
                log.exception("garbage collection failed")

    # -- channels -------------------------------------------------------------------------

    def channel_dir(self, reg: Registration) -> str:
        return os.path.join(self.channels_dir, reg.key)

    def _open_channel(self, reg: Registration) -> str:
        directory = self.channel_dir(reg)
        with self._channel_lock:
            old = self._listeners.pop(reg.key, None)
            if old is not None:
                self.http.remove(old)
            os.makedirs(directory, mode=0o755, exist_ok=True)
            key = reg.key
            self._listeners[key] = self.http.listen(
                os.path.join(directory, HOST_SOCKET_NAME), lambda request: self.channels.handle(key, request),
                name=f"channel {reg.id}", mode=0o666, admit=lambda peer: self.channels.admit(key, peer))
        return directory

    def _close_channel(self, key: str) -> None:
        with self._channel_lock:
            listener = self._listeners.pop(key, None)
            if listener is not None:
                self.http.remove(listener)
        self.channels.forget(key)
        self.tsm.forget(key)
        shutil.rmtree(os.path.join(self.channels_dir, key), ignore_errors=True)

    def register(self, doc: Any) -> dict[str, Any]:
        """Register an enclave container and open its channel; returns what rune needs."""
        reg = self.registry.register(registration_from(doc), epc_capacity_mib=self.epc_mib)
        try:
            channel = self._open_channel(reg)
        except OSError as exc:
            self.registry.deregister(reg.root, reg.id)
            raise AgentError(f"cannot open the channel of enclave container {reg.id}: {exc.strerror or exc}") from None
        tsm = self._tsm_dir(reg)
        self.metrics.inc("agent_registrations_total")
        rid = request_id()  # in the answer too, so the caller's record and the agent's line meet
        after_answer(lambda: event(  # rune's create waits for the answer, not for the log line
            log, "register", "registered enclave container %s (type %s, measurement %s)", reg.id, reg.tee,
            reg.measurement, container=reg.id, root=reg.root, tee=reg.tee, measurement=reg.measurement,
            epc_mib=reg.epc_mib, simulated=bool(reg.simulated_tee), request_id=rid))
        return {**reg.public(), "channel": channel, "tsm": tsm, "request_id": rid}

    def _tsm_dir(self, reg: Registration) -> str | None:
        """configfs-tsm's report directory for a simulated TDX/SNP container (rune binds it at
        /sys/kernel/config/tsm/report); without FUSE the container still quotes via its channel."""
        if reg.simulated_tee not in PROVIDER_OF:
            return None
        try:
            return self.tsm.directory(reg)
        except TsmFsError as exc:
            log.warning("enclave container %s gets no configfs-tsm: %s", reg.id, exc)
            return None

    def describe(self, reg: Registration) -> dict[str, Any]:
        counters = self.channels.counters.get(reg.key)
        return {**reg.public(), "channel": self.channel_dir(reg),
                "relay": counters.public() if counters else {"tunnels": 0, "bytes_up": 0, "bytes_down": 0}}

    # -- control API ----------------------------------------------------------------------

    def _control(self, request: Request) -> Response:
        status, payload = self.control(request.method, request.path, request.query(), request.json())
        if isinstance(payload, bytes):
            kind = "text/plain; version=0.0.4" if request.path == "/metrics" else "application/octet-stream"
            return Response(status, payload, kind)
        return Response.json(status, payload)

    def control(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path in self.extra_control:
            return self.extra_control[path](body)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and parts == ["metrics"]:
            return 200, self.metrics.render().encode()
        if method == "GET" and parts == ["v1", "health"]:
            return 200, {"status": "ok", "version": __version__, "tee": "sim",
                         "containers": len(self.registry.all()), "kbs": self.relay.url if self.relay else None,
                         "uptime_s": round(time.time() - self.started, 1),
                         "epc": {"capacity_mib": self.epc_mib, "in_use_mib": self.registry.epc_in_use()}}
        if parts == ["v1", "containers"]:
            if method == "GET":
                return 200, [self.describe(r) for r in self.registry.all()]
            if method == "POST":
                return 201, self.register(body)
        if len(parts) == 3 and parts[:2] == ["v1", "containers"] and method == "DELETE":
            root = query.get("root", "")
            if not root:
                raise HttpError(400, "root query parameter required")
            reg = self.registry.deregister(root, parts[2])
            if reg is None:
                return 404, {"detail": f"container {parts[2]} is not registered"}
            self._close_channel(reg.key)
            self.metrics.inc("agent_deregistrations_total")
            rid = request_id()
            event(log, "deregister", "deregistered enclave container %s", reg.id, container=reg.id, root=reg.root,
                  request_id=rid)
            return 200, {"deregistered": reg.id, "request_id": rid}
        raise HttpError(404, f"no such endpoint: {method} {path}")


def serve(state_dir: str, control_socket: str, kbs_url: str | None = None,
          extra_control: dict[str, ControlHandlerFactory] | None = None, epc_mib: int = 0,
          log_format: str = "text", registries: list[str] | None = None) -> int:
    configure("agent", log_format)
    agent = Agent(state_dir, control_socket, kbs_url, extra_control, epc_mib=epc_mib, registries=registries)
    agent.start()
    log.warning("simulated TEE: quotes are signed by this installation's SIMULATED SGX root; "
                "they prove nothing about hardware and nothing should trust them unless told to")
    if epc_mib:
        log.info("simulated TEE EPC: %d MiB; sim enclaves holding EPC now: %d MiB", epc_mib,
                 agent.registry.epc_in_use())
    log.info("serving control on %s, enclave channels under %s%s", agent.control_socket, agent.channels_dir,
             f", relaying to the key broker at {agent.relay.url}" if agent.relay else "")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent._stop.set())
    agent.wait()
    agent.stop()
    return 0
