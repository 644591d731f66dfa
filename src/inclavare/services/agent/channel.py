"""A container's channel to the node agent: what the host does for an enclave, and nothing more.

Each registered enclave container gets ``<run>/enclaves/<key>/host.sock``, bind-mounted read-only
at ``/run/inclavare/host`` in that container only. It offers exactly what the host offers an
enclave on real hardware:

* ``POST /v1/quote`` ``{"report_data": "<base64, ≤ 64 bytes>"}`` — the quoting enclave's part:
  a quote for the measurement recorded at create, over report data the enclave chose
  (``{"tee": "sgx", "evidence": {"quote": ...}, "simulated": true}``);
* ``GET /v1/collateral`` — collateral for verifiers;
* ``GET /v1/info`` — the TEE and where the relay goes (hints from an untrusted host);
* ``CONNECT kbs`` — an opaque tunnel to the configured key broker, for containers without a
  network: bytes are copied both ways and counted, never parsed, logged or stored;
* ``CONNECT HOST:PORT`` of a configured image registry (``--registry URL``) — the same opaque
  tunnel, for guest pull: the enclave fetches manifests and (encrypted) layers itself.

Only processes whose pid, mount and cgroup namespaces are those of the container's init are
answered; anyone else — a host process, a container sharing the pid namespace, a process that
reaches the socket through a bind mount or ``/proc/N/root``, another enclave — gets ``403``.
"""

from __future__ import annotations

import base64
import binascii
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import NotSupportedError
from inclavare.services.agent.registry import Registration, Registry
from inclavare.services.http_transport import parse_origin, tcp_connect
from inclavare.services.peer import Peer
from inclavare.services.prometheus import Counters
from inclavare.services.unix_http import HttpError, Request, Response, Tunnel
from inclavare.tee.registry import SGX

SIM_TYPE = "sim"
REFUSED = "refused: this channel answers only the processes of the enclave container it belongs to"


@dataclass(frozen=True)
class RelayTarget:
    url: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> RelayTarget:
        _, host, port = parse_origin(url)
        return cls(url.rstrip("/"), host, port)

    @property
    def authority(self) -> str:
        """``host:port`` as an image reference names the registry (and CONNECT asks for it)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def connect(self, timeout: float) -> socket.socket:
        """A TCP connection to the target (``TCP_NODELAY``: bytes are forwarded as they come)."""
        try:
            return tcp_connect(self.host, self.port)(timeout)
        except OSError as exc:
            raise HttpError(502, f"cannot reach {self.url}: {exc.strerror or exc}") from None


def registry_targets(urls: list[str] | tuple[str, ...]) -> dict[str, RelayTarget]:
    """Configured image registries by authority (``host:port``, the default port explicit)."""
    targets: dict[str, RelayTarget] = {}
    for url in urls:
        target = RelayTarget.parse(url)
        targets[target.authority] = target
    return targets


@dataclass
class RelayCounters:
    """What went through a container's relay: counts only, the bytes themselves are never kept."""

    tunnels: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, up: int, down: int) -> None:
        with self.lock:
            self.tunnels += 1
            self.bytes_up += up
            self.bytes_down += down

    def public(self) -> dict[str, int]:
        with self.lock:
            return {"tunnels": self.tunnels, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


class Quoter:
    """The simulated quoting enclave (the node's SimAuthority), loaded on first use."""

    def __init__(self, load_authority: Any) -> None:
        self._load = load_authority

    def quote(self, reg: Registration, report_data: bytes) -> bytes:
        if reg.tee != SIM_TYPE:
            raise NotSupportedError(
                f"quotes for enclave type {reg.tee} come from the platform's quoting service "
                "(aesmd / configfs-tsm inside the enclave), not from the node agent")
        return bytes(self._load().quote(bytes.fromhex(reg.measurement), report_data.ljust(64, b"\0"),
                                        config_id=_config_id(reg)))

    def collateral_json(self) -> bytes:
        return str(self._load().collateral().to_json()).encode()


class Channels:
    """Admission and routes of every container's channel (one listener per container)."""

    def __init__(self, registry: Registry, quoter: Quoter, relay: RelayTarget | None,
                 metrics: Counters | None = None, registries: dict[str, RelayTarget] | None = None) -> None:
        self.registry = registry
        self.quoter = quoter
        self.relay = relay
        self.registries = registries or {}
        self.metrics = metrics or Counters({})
        self.counters: dict[str, RelayCounters] = {}

    def admit(self, key: str, peer: Peer | None) -> None:
        """Raise 403 unless ``peer`` is a process of the container registered under ``key``."""
        if peer is None or peer.ns is None:
            self.metrics.inc("agent_refusals_total", reason="unidentified")
            raise HttpError(403, f"{REFUSED} (the caller could not be identified)")
        expected = self.registry.init_namespaces(key)
        if expected is None:
            self.metrics.inc("agent_refusals_total", reason="not_running")
            raise HttpError(403, f"{REFUSED} (the container is not running)")
        differing = expected.differing(peer.ns)
        if differing:
            self.metrics.inc("agent_refusals_total", reason="namespace")
            raise HttpError(403, f"{REFUSED} (the caller's {', '.join(differing)} namespace differs)")

    def handle(self, key: str, request: Request) -> Response | Tunnel:
        reg = self.registry.by_key(key)
        if reg is None:
            raise HttpError(403, f"{REFUSED} (no such registration)")
        method, path = request.method, request.path
        if method == "POST" and path == "/v1/quote":
            quote = self.quoter.quote(reg, _report_data(request.json()))
            self.metrics.inc("agent_quotes_total")
            return Response.json(200, {"tee": SGX.name, "evidence": {"quote": base64.b64encode(quote).decode()},
                                       "simulated": reg.tee == SIM_TYPE})
        if method == "GET" and path == "/v1/collateral":
            if reg.tee != SIM_TYPE:
                raise NotSupportedError("collateral for hardware quotes comes from Intel's PCS or a PCCS")
            return Response(200, self.quoter.collateral_json())
        if method == "GET" and path == "/v1/info":
            return Response.json(200, {"container": reg.id, "tee": reg.tee, "simulated": reg.tee == SIM_TYPE,
                                       "kbs": {"url": self.relay.url} if self.relay else None,
                                       "registries": {name: t.url for name, t in self.registries.items()}})
        if method == "CONNECT":
            return self._tunnel(key, request.target)
        raise HttpError(404, f"no such endpoint: {method} {path}")

    def _tunnel(self, key: str, target: str) -> Tunnel:
        relay = self._relay_for(target)
        counters = self.counters.setdefault(key, RelayCounters())

        def done(up: int, down: int) -> None:
            counters.add(up, down)
            self.metrics.inc("agent_relay_tunnels_total")
            self.metrics.inc("agent_relay_bytes_total", up, direction="up")
            self.metrics.inc("agent_relay_bytes_total", down, direction="down")

        return Tunnel(connect=relay.connect, done=done)

    def _relay_for(self, target: str) -> RelayTarget:
        """The key broker (``CONNECT kbs``) or a configured registry (``CONNECT host:port``)."""
        if target in self.registries:
            return self.registries[target]
        if target.split(":", 1)[0] != "kbs":
            raise HttpError(403, "the relay reaches the key broker (CONNECT kbs) and the configured image "
                                 "registries only")
        if self.relay is None:
            raise HttpError(503, "no key broker is configured for this node (start the agent with --kbs-url URL)")
        return self.relay

    def forget(self, key: str) -> None:
        self.counters.pop(key, None)


def _config_id(reg: Registration) -> bytes:
    """CONFIGID, set at launch as the SGX launcher sets it: the digest of the init-data that names
    the container's pulled image (zeros without one), so the broker can check what it claims."""
    image = reg.enclave.get("image")
    if not image:
        return bytes(64)
    from inclavare.images.reference import config_id, parse_image_ref

    return config_id(parse_image_ref(image))


def _report_data(body: Any) -> bytes:
    value = body.get("report_data") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise HttpError(400, 'body must be {"report_data": "<base64 of at most 64 bytes>"}')
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise HttpError(400, "report_data is not base64") from None
    if len(data) > 64:
        raise HttpError(400, "report_data is longer than 64 bytes")
    return data
