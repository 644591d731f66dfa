"""Serving the plugin the way kubelet expects: own socket first, then Register, then keep watch.

* Own socket ``DIR/inclavare-epc.sock`` (0600) served by a bounded gRPC server; a stale file
  from an earlier run (``kill -9``) is replaced, so the plugin survives its own restart.
* ``Registration.Register`` on ``DIR/kubelet.sock`` while the server already runs (kubelet dials
  back and calls GetDevicePluginOptions before it answers).
* A watch loop: when the kubelet restarts it deletes every socket in DIR and creates a new
  ``kubelet.sock`` — the plugin then serves a fresh socket and registers again; when Register
  fails it retries with back-off. The same loop checks health: the SGX device nodes and the node
  agent's control socket; devices turn Unhealthy when either goes, Healthy when both are back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc

from inclavare.errors import AgentError, ConfigError
from inclavare.services.agent import client as agent_client
from inclavare.services.deviceplugin import api_pb2 as pb
from inclavare.services.deviceplugin import api_pb2_grpc as rpc
from inclavare.services.deviceplugin.epc import EpcInventory, is_char_device
from inclavare.services.deviceplugin.names import API_VERSION, KUBELET_SOCKET, SOCKET_NAME
from inclavare.services.deviceplugin.plugin import MAX_STREAMS, EpcDevicePlugin
from inclavare.services.unix_http import socket_is_served

log = logging.getLogger("inclavare.deviceplugin")

MAX_WORKERS = MAX_STREAMS + 4  # streams hold a thread each; four more for unary calls
MAX_CONCURRENT_RPCS = 2 * MAX_WORKERS  # beyond this gRPC answers RESOURCE_EXHAUSTED at once
MAX_MESSAGE = 4 << 20  # kubelet's own limit; our largest message (ListAndWatch) is sized to fit
REGISTER_TIMEOUT = 15.0  # kubelet dials back for up to 10 s before it answers
AGENT_PROBE_TIMEOUT = 2.0
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_concurrent_streams", MAX_CONCURRENT_RPCS),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_connection_idle_ms", 600_000),
    ("grpc.server_handshake_timeout_ms", 10_000),  # a connection that never speaks HTTP/2 is dropped
]


@dataclass(frozen=True)
class PluginSettings:
    directory: str
    resource_name: str
    agent_socket: str = ""  # "" : health does not depend on a node agent
    poll_interval: float = 0.5  # kubelet.sock and own socket
    health_interval: float = 2.0


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_resource_name(name: str) -> str:
    """``vendor-domain/type``, as kubelet's IsExtendedResourceName wants it."""
    domain, sep, kind = name.partition("/")
    if not sep or not domain or not kind or "." not in domain or "/" in kind or domain.startswith("kubernetes.io") \
            or len(name) > 253 or not all(c.isalnum() or c in "-._/" for c in name):
        raise ConfigError(f"resource name {name[:80]!r} must look like vendor.example/type")
    return name


class DevicePluginService:
    def __init__(self, inventory: EpcInventory, settings: PluginSettings) -> None:
        self.inventory = inventory
        self.settings = settings
        self.socket_path = os.path.join(settings.directory, SOCKET_NAME)
        self.kubelet_socket = os.path.join(settings.directory, KUBELET_SOCKET)
        self.plugin = EpcDevicePlugin(inventory)
        self._server: grpc.Server | None = None
        self._own: tuple[int, int] | None = None
        self._registered_with: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._next_register = 0.0
        self._backoff = 0.5
        self._last_error = ""
        self.registrations = 0

    # -- the gRPC server ---------------------------------------------------------------------

    def _serve_socket(self) -> None:
        if self._server is not None:
            self.plugin.close()
            self._server.stop(grace=None)
            self.plugin = self._fresh_plugin()
        if not os.path.isdir(self.settings.directory):
            raise ConfigError(f"device-plugin directory {self.settings.directory} does not exist")
        if self._server is None and socket_is_served(self.socket_path):  # another plugin, still running
            raise ConfigError(f"{self.socket_path}: another process is serving on this socket; stop it first")
        try:
            os.unlink(self.socket_path)  # a stale socket of an earlier run
        except FileNotFoundError:
            pass
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="dp"),
                             options=SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        rpc.add_DevicePluginServicer_to_server(self.plugin, server)
        old_umask = os.umask(0o177)  # the socket is born 0600: kubelet (root) is its only client
        try:
            if server.add_insecure_port(f"unix://{self.socket_path}") == 0:
                raise ConfigError(f"cannot listen on {self.socket_path}")
        finally:
            os.umask(old_umask)
        server.start()
        self._server, self._own = server, _identity(self.socket_path)
        self._registered_with = None
        log.info("serving the device plugin on %s", self.socket_path)

    def _fresh_plugin(self) -> EpcDevicePlugin:
        """A new servicer keeping the health already known (streams of the old one are closed)."""
        return EpcDevicePlugin(self.inventory, healthy=self.plugin.healthy)

    # -- registration --------------------------------------------------------------------------

    def _register(self) -> None:
        request = pb.RegisterRequest(
            version=API_VERSION, endpoint=SOCKET_NAME, resource_name=self.settings.resource_name,
            options=pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True))
        with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
            rpc.RegistrationStub(channel).Register(request, timeout=REGISTER_TIMEOUT, wait_for_ready=False)

    def _maybe_register(self) -> None:
        kubelet = _identity(self.kubelet_socket)
        if kubelet is None or kubelet == self._registered_with or time.monotonic() < self._next_register:
            return
        try:
            self._register()
        except grpc.RpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc)
            if detail != self._last_error:
                log.error("registering %s with the kubelet at %s failed (%s); retrying",
                          self.settings.resource_name, self.kubelet_socket, detail)
                self._last_error = detail
            self._next_register = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 10.0)
            return
        self._registered_with, self._backoff, self._last_error = kubelet, 0.5, ""
        self.registrations += 1
        log.info("registered %s (%s) with the kubelet at %s", self.settings.resource_name,
                 self.inventory.describe(), self.kubelet_socket)

    # -- health --------------------------------------------------------------------------------

    def probe(self) -> tuple[bool, str]:
        """(healthy, why): the SGX device nodes exist and the node agent answers."""
        for path in self.inventory.device_nodes:
            if not is_char_device(path):
                return False, f"{path} is gone"
        if self.settings.agent_socket:
            try:  # any HTTP answer (even 403 to a non-root plugin) means the agent is up
                agent_client.request(self.settings.agent_socket, "GET", "/v1/health", timeout=AGENT_PROBE_TIMEOUT)
            except AgentError:
                return False, f"the node agent does not answer at {self.settings.agent_socket}"
        kind = "simulated EPC" if self.inventory.simulated else "SGX device nodes present"
        return True, f"{kind}, node agent answering" if self.settings.agent_socket else kind

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        healthy, why = self.probe()
        self.plugin = EpcDevicePlugin(self.inventory, healthy=healthy)
        log.info("devices %s: %s", "healthy" if healthy else "UNHEALTHY", why)
        self._serve_socket()
        self._maybe_register()

    def run(self) -> None:
        """Keep watch until :meth:`stop`."""
        next_health = time.monotonic() + self.settings.health_interval
        while not self._stop.wait(self.settings.poll_interval):
            if _identity(self.socket_path) != self._own:
                log.warning("%s was removed (kubelet restart?): serving a new socket", self.socket_path)
                self._serve_socket()
            self._maybe_register()
            if time.monotonic() >= next_health:
                self.plugin.set_health(*self.probe())
                next_health = time.monotonic() + self.settings.health_interval

    def stop(self) -> None:
        self._stop.set()
        self.plugin.close()
        if self._server is not None:
            self._server.stop(grace=1).wait(5)
            self._server = None
        if _identity(self.socket_path) == self._own:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


def serve(inventory: EpcInventory, settings: PluginSettings) -> int:
    import signal

    log.info("EPC device plugin for %s: %s", settings.resource_name, inventory.describe())
    if inventory.simulated:
        log.warning("SIMULATED EPC: no SGX on this node; the devices schedule pods onto the simulated TEE "
                    "and prove nothing about hardware")
    service = DevicePluginService(inventory, settings)
    service.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service._stop.set())
    service.run()
    service.stop()
    return 0
