"""A container's channel to the node agent: what the host does for an enclave, and nothing more.

Each registered enclave container gets ``<run>/enclaves/<key>/host.sock``, bind-mounted read-only
at ``/run/inclavare/host`` in that container only. It offers exactly what the host offers an
enclave on real hardware:

* ``POST /v1/quote`` ``{"report_data": "<base64, ≤ 64 bytes>"}`` — the platform's quoting part:
  evidence of the simulated TEE for the measurement recorded at create, over report data the
  enclave chose (``{"tee": "sgx"|"tdx"|"snp", "evidence": {...Trustee's JSON for that TEE},
  "simulated": true}``; see :mod:`inclavare.tee.sim_platform`);
* ``POST /v1/rtmr`` ``{"index": 2|3, "digest": "<base64 of 48 bytes>"}`` — TDX only: extend the
  container's RTMR (``SHA-384(rtmr ‖ digest)``), as TDG.MR.RTMR.EXTEND does; later quotes carry it.
  The registers live in the agent's memory, as a TD's live in the CPU: they start at zero;
* ``GET /v1/collateral`` — collateral for verifiers (SGX, TDX);
* ``GET /v1/info`` — the TEE the platform quotes for (the simulated ``detect_tee_type``) and
  where the relay goes (hints from an untrusted host: a lie makes evidence the verifier or the
  policy refuses);
* ``POST /v1/sealing-key`` ``{"policy": "mrenclave"|"mrsigner", "key_id": "<base64, 32 bytes>",
  "isv_svn": N?}`` — the CPU's part of sealing (EGETKEY, simulated): a key for this container's
  identity only (:mod:`inclavare.secrets.sealing_keys`), ``{"key", "isv_svn", "isv_prod_id"}``;
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
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inclavare import fastjson
from inclavare.atomic_file import write_atomic
from inclavare.errors import ConfigError, NotSupportedError
from inclavare.services.agent.registry import Registration, Registry
from inclavare.services.http_transport import parse_origin, tcp_connect
from inclavare.services.peer import Peer
from inclavare.services.prometheus import Counters
from inclavare.services.unix_http import HttpError, Request, Response, Tunnel
from inclavare.tee.registry import SGX, TDX, Attester, tee_named
from inclavare.tee.rtmr import RTMR_SIZE, Rtmrs

if TYPE_CHECKING:
    from inclavare.secrets.sealing_keys import SealingSecret

log = logging.getLogger("inclavare.agent")

SEALING_KEY_PATH = "/v1/sealing-key"
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
    """The simulated platform's quoting part (the node's SimAuthority for SGX and TDX, its
    SimAmdAuthority for SNP), the authorities loaded on first use; TDX RTMRs per container.

    A TD's RTMRs live in the TDX module, not in the host's agent: with ``rtmr_dir`` they are kept
    there too (``<key>.json``, beside the registrations under /run), so they survive the agent's
    restart as the TD does, and die with the registration."""

    def __init__(self, load_authority: Any, amd_dir: str = "", rtmr_dir: str = "") -> None:
        self._load = load_authority
        self._amd_dir = amd_dir
        self._amd: Any = None
        self._lock = threading.Lock()
        self._extend_lock = threading.Lock()  # an extension and its record, one at a time
        self.rtmr_dir = rtmr_dir
        self.rtmrs: dict[str, tuple[float, Rtmrs]] = {}  # key -> (registered_at, registers)

    def _load_amd(self) -> Any:
        with self._lock:
            if self._amd is None:
                if not self._amd_dir:
                    raise NotSupportedError("this node agent has no simulated AMD authority")
                from inclavare.tee.sim_amd import SimAmdAuthority

                self._amd = SimAmdAuthority.load_or_create(self._amd_dir)
            return self._amd

    @staticmethod
    def tee_of(reg: Registration) -> str:
        """The TEE the platform quotes for; hardware types are refused."""
        tee = reg.simulated_tee
        if not tee:
            raise NotSupportedError(
                f"quotes for enclave type {reg.tee} come from the platform's quoting service "
                "(aesmd / configfs-tsm inside the enclave), not from the node agent")
        return tee

    def attester(self, reg: Registration) -> Attester:
        """The simulated platform's attester for ``reg`` (its measurement, its RTMRs now)."""
        from inclavare.tee.sim_platform import sim_attester

        tee = tee_named(self.tee_of(reg))
        rtmrs = self._registers(reg).values() if tee == TDX else None
        return sim_attester(tee, bytes.fromhex(reg.measurement), self._load, self._load_amd, rtmrs,
                            config_id=_config_id(reg))

    def evidence(self, reg: Registration, report_data: bytes) -> tuple[str, dict[str, Any]]:
        """``(tee, Trustee's evidence JSON)`` for ``reg``'s measurement over ``report_data``."""
        attester = self.attester(reg)
        return attester.tee.name, attester.evidence(report_data)

    def extend_rtmr(self, reg: Registration, index: Any, digest: bytes) -> bytes:
        if self.tee_of(reg) != TDX.name:
            raise HttpError(400, f"RTMRs are TDX registers; this container is {reg.simulated_tee}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise HttpError(400, "index is an RTMR number (2 or 3)")
        if len(digest) != RTMR_SIZE:
            raise HttpError(400, f"digest is {RTMR_SIZE} bytes (SHA-384)")
        with self._extend_lock:
            registers = self._registers(reg)
            try:
                value = registers.extend(index, digest)
            except ConfigError as exc:
                raise HttpError(400, str(exc)) from None
            self._record(reg, registers)
            return value

    def _registers(self, reg: Registration) -> Rtmrs:
        """The registration's RTMRs: zero for a new registration, even under a reused key (a
        container re-created with the same id is a new TD); as recorded after an agent restart."""
        with self._lock:
            known = self.rtmrs.get(reg.key)
            if known is None or known[0] != reg.registered_at:
                known = self.rtmrs[reg.key] = (reg.registered_at, self._recorded(reg) or Rtmrs())
            return known[1]

    def _rtmr_path(self, key: str) -> str:
        return os.path.join(self.rtmr_dir, key + ".json")

    def _record(self, reg: Registration, registers: Rtmrs) -> None:
        if not self.rtmr_dir:
            return
        doc = {"registered_at": reg.registered_at, "rtmrs": [v.hex() for v in registers.values()]}
        try:
            write_atomic(self._rtmr_path(reg.key), fastjson.dumps(doc).encode(), durable=False)
        except OSError as exc:  # the TD keeps its registers; only an agent restart would lose them
            log.error("cannot record the RTMRs of enclave container %s: %s", reg.id, exc.strerror or exc)

    def _recorded(self, reg: Registration) -> Rtmrs | None:
        """The registers recorded for this very registration (not an earlier one under the key);
        a damaged record is ignored, so the TD's RTMRs read as zero (a policy refuses them)."""
        if not self.rtmr_dir:
            return None
        try:
            with open(self._rtmr_path(reg.key), "rb") as f:
                doc = fastjson.loads(f.read())
            if not isinstance(doc, dict) or doc.get("registered_at") != reg.registered_at:
                return None
            return Rtmrs(tuple(bytes.fromhex(v) for v in doc["rtmrs"]))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return None

    def collateral_json(self, reg: Registration) -> bytes:
        tee = self.tee_of(reg)
        if tee == TDX.name:
            return str(self._load().tdx_collateral().to_json()).encode()
        if tee == SGX.name:
            return str(self._load().collateral().to_json()).encode()
        raise NotSupportedError(f"{tee} evidence carries its own certificate (the VCEK; AMD KDS on hardware)")

    def forget(self, key: str) -> None:
        with self._lock:
            self.rtmrs.pop(key, None)
        if self.rtmr_dir:
            try:
                os.unlink(self._rtmr_path(key))
            except OSError:
                pass

    def forget_all_but(self, keys: set[str]) -> None:
        """Drop the records of registrations no longer held (forgotten while the agent was down)."""
        try:
            names = os.listdir(self.rtmr_dir) if self.rtmr_dir else []
        except OSError:
            return
        for name in names:
            if name.endswith(".json") and name[:-5] not in keys:
                self.forget(name[:-5])


class Channels:
    """Admission and routes of every container's channel (one listener per container)."""

    def __init__(self, registry: Registry, quoter: Quoter, relay: RelayTarget | None,
                 metrics: Counters | None = None, sealing: SealingSecret | None = None,
                 registries: dict[str, RelayTarget] | None = None) -> None:
        self.registry = registry
        self.sealing = sealing
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
            tee, evidence = self.quoter.evidence(reg, _report_data(request.json()))
            self.metrics.inc("agent_quotes_total")
            return Response.json(200, {"tee": tee, "evidence": evidence, "simulated": True})
        if method == "POST" and path == "/v1/rtmr":
            index, digest = _rtmr_request(request.json())
            value = self.quoter.extend_rtmr(reg, index, digest)
            return Response.json(200, {"index": index, "value": value.hex()})
        if method == "GET" and path == "/v1/collateral":
            return Response(200, self.quoter.collateral_json(reg))
        if method == "GET" and path == "/v1/info":
            tee = reg.simulated_tee
            return Response.json(200, {"container": reg.id, "enclave_type": reg.tee, "tee": tee or None,
                                       "simulated": bool(tee),
                                       "kbs": {"url": self.relay.url} if self.relay else None,
                                       "registries": {name: t.url for name, t in self.registries.items()}})
        if method == "POST" and path == SEALING_KEY_PATH:
            return self._sealing_key(reg, request)
        if method == "CONNECT":
            return self._tunnel(key, request.target)
        raise HttpError(404, f"no such endpoint: {method} {path}")

    def _sealing_key(self, reg: Registration, request: Request) -> Response:
        """EGETKEY(SEAL) for the registration this channel belongs to: nothing in the request
        names an identity, so a container can only ever get keys for its own."""
        from inclavare.secrets.sealing_keys import KeyRequest, SealingIdentity, SealingKeyError, derive

        if reg.simulated_tee != SGX.name:  # EGETKEY is SGX's; TDX/SNP guests seal with their own keys
            raise NotSupportedError(f"sealing keys for enclave type {reg.tee} come from the CPU inside the "
                                    "enclave (EGETKEY; the LibOS's sealing), never from the host")
        if self.sealing is None:
            raise HttpError(503, "this node agent has no sealing secret")
        try:
            identity = SealingIdentity.of(reg.measurement, reg.enclave.get("args", ""))
            key, svn = derive(self.sealing.get(), identity, KeyRequest.parse(request.json()))
        except SealingKeyError as exc:
            raise HttpError(400, str(exc)) from None
        self.metrics.inc("agent_sealing_keys_total")
        return Response.json(200, {"key": base64.b64encode(key).decode(), "isv_svn": svn,
                                   "isv_prod_id": identity.isv_prod_id})

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
        self.quoter.forget(key)


def _rtmr_request(body: Any) -> tuple[Any, bytes]:
    index = body.get("index") if isinstance(body, dict) else None
    value = body.get("digest") if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise HttpError(400, 'body must be {"index": 2|3, "digest": "<base64 of 48 bytes>"}')
    try:
        return index, base64.b64decode(value, validate=True)
    except binascii.Error:
        raise HttpError(400, "digest is not base64") from None


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
