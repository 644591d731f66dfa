"""The node agent daemon: two HTTP/1.1 servers on unix sockets.

* the **control** socket (root only, 0600): rune registers and deregisters enclave containers
  and asks for a container's evidence (``rune attest``);
* the **workload** socket (0666, in a directory mounted read-only at ``/run/inclavare`` in every
  enclave container): CoCo's attestation-agent / CDH REST paths. The caller is identified from
  the kernel (peer pid → pid namespace → registered container); a process in no enclave
  container gets nothing.

The standard library's threading HTTP server is used because the handlers need the raw socket
for peer credentials, which ASGI servers do not expose.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit

from inclavare import __version__
from inclavare.errors import AgentError, ConfigError, InclavareError, KbsError, NotSupportedError
from inclavare.services.agent import paths
from inclavare.services.agent.peer import identify
from inclavare.services.agent.registry import Registration, Registry, registration_from

log = logging.getLogger("inclavare.agent")

MAX_BODY = 1 << 20
RESOURCE_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*$")


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class EvidenceProvider:
    """Turns (container, report_data) into evidence; the simulated quoting enclave by default."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self._sim: Any = None
        self._lock = threading.Lock()

    def sim_authority(self) -> Any:
        with self._lock:
            if self._sim is None:
                from inclavare.tee.sim_authority import SimAuthority

                self._sim = SimAuthority.load_or_create(os.path.join(self.state_dir, "sim"))
            return self._sim

    def evidence(self, reg: Registration, report_data: bytes) -> dict[str, str]:
        import base64

        if len(report_data) > 64:
            raise HttpError(400, "runtime data longer than 64 bytes")
        if reg.enclave.get("type") != "sim":
            raise NotSupportedError(
                f"evidence for enclave type {reg.enclave.get('type')} needs TEE hardware this host lacks")
        quote = self.sim_authority().quote(bytes.fromhex(reg.measurement), report_data.ljust(64, b"\0"))
        return {"quote": base64.b64encode(quote).decode()}


class KbsBridge:
    """Runs the key broker protocol on behalf of a workload, with that workload's own evidence."""

    def __init__(self, url: str | None, evidence: EvidenceProvider) -> None:
        self.url = url
        self.evidence = evidence

    def _client(self, reg: Registration) -> Any:
        if not self.url:
            raise HttpError(503, "no key broker is configured for this node (start the agent with --kbs-url URL)")
        from inclavare.services.kbs_client import KbsClient

        def attester(report_data: bytes) -> tuple[str, dict[str, Any]]:
            return "sgx", self.evidence.evidence(reg, report_data)

        return KbsClient(self.url, attester, tee="sgx")

    def token(self, reg: Registration) -> Any:
        with self._client(reg) as client:
            return {"token": client.get_token()}

    def resource(self, reg: Registration, path: str) -> bytes:
        with self._client(reg) as client:
            return bytes(client.get_resource("kbs:///" + path))


ControlHandlerFactory = Callable[["Agent"], Callable[[Any], tuple[int, Any]]]


class Agent:
    def __init__(self, state_dir: str, control_socket: str, kbs_url: str | None = None,
                 extra_control: dict[str, ControlHandlerFactory] | None = None) -> None:
        self.state_dir = state_dir
        self.control_socket = os.path.abspath(control_socket)
        self.run_dir = os.path.dirname(self.control_socket)
        self.workload_dir = paths.workload_dir_for(self.control_socket)
        self.registry = Registry(os.path.join(self.run_dir, "agent", "containers"))
        self.evidence = EvidenceProvider(state_dir)
        self.kbs = KbsBridge(kbs_url, self.evidence)
        self.started = time.time()
        self._servers: list[socketserver.BaseServer] = []
        self._stop = threading.Event()
        # POST routes of higher layers (rune's prepare service), given by the command line
        self.extra_control = {path: factory(self) for path, factory in (extra_control or {}).items()}

    # -- setup ------------------------------------------------------------------------------

    def prepare_workload_dir(self) -> None:
        """The directory containers see at /run/inclavare: the workload socket and the client."""
        from inclavare.native.build import build_static

        os.makedirs(os.path.join(self.workload_dir, "bin"), mode=0o755, exist_ok=True)
        os.chmod(self.workload_dir, 0o755)
        built = build_static("attest", os.path.join(self.state_dir, "native"))
        target = os.path.join(self.workload_dir, "bin", "attest")
        tmp = target + ".tmp"
        shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)

    def _bind(self, path: str, mode: int, handler: type[BaseHTTPRequestHandler]) -> socketserver.BaseServer:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = UnixHTTPServer(path, handler, self)
        os.chmod(path, mode)
        self._servers.append(server)
        return server

    def start(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.prepare_workload_dir()
        self.evidence.sim_authority()  # create/load keys now: fail at start, not at first request
        control = self._bind(self.control_socket, 0o600, ControlHandler)
        workload = self._bind(os.path.join(self.workload_dir, paths.WORKLOAD_SOCKET_NAME), 0o666, WorkloadHandler)
        for server in (control, workload):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Thread(target=self._gc_loop, daemon=True).start()

    def _gc_loop(self) -> None:
        while not self._stop.wait(30):
            try:
                for cid in self.registry.collect_garbage():
                    log.info("forgot container %s (gone)", cid)
            except Exception:  # keep serving; the next round retries
                log.exception("garbage collection failed")

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def wait(self) -> None:
        self._stop.wait()

    # -- control API --------------------------------------------------------------------------

    def control(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path in self.extra_control:
            return self.extra_control[path](body)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and parts == ["v1", "health"]:
            return 200, {"status": "ok", "version": __version__, "tee": "sim",
                         "containers": len(self.registry.all()), "kbs": self.kbs.url,
                         "uptime_s": round(time.time() - self.started, 1)}
        if parts == ["v1", "containers"]:
            if method == "GET":
                return 200, [r.public() for r in self.registry.all()]
            if method == "POST":
                reg = self.registry.register(registration_from(body))
                log.info("registered %s (measurement %s)", reg.id, reg.measurement)
                return 201, reg.public()
        if len(parts) >= 3 and parts[:2] == ["v1", "containers"]:
            root = query.get("root", "")
            if not root:
                raise HttpError(400, "root query parameter required")
            cid = parts[2]
            if method == "DELETE" and len(parts) == 3:
                found = self.registry.deregister(root, cid)
                return (200, {"deregistered": cid}) if found else (404, {"detail": f"container {cid} is not registered"})
            if method == "POST" and parts[3:] == ["evidence"]:
                known = self.registry.get(root, cid)
                if known is None:
                    raise HttpError(404, f"container {cid} is not an enclave container known to this agent")
                data = body.get("runtime_data", "") if isinstance(body, dict) else ""
                if not isinstance(data, str):
                    raise HttpError(400, "runtime_data must be a string")
                return 200, self.evidence.evidence(known, data.encode())
        raise HttpError(404, f"no such endpoint: {method} {path}")

    # -- workload API ---------------------------------------------------------------------

    def workload(self, reg: Registration, path: str, query: dict[str, str], raw_query: dict[str, bytes]) -> tuple[int, Any]:
        if path == "/aa/evidence":
            # the percent-decoded bytes: binary report data (e.g. a hash) passes unchanged
            return 200, self.evidence.evidence(reg, raw_query.get("runtime_data", b""))
        if path == "/aa/token":
            if query.get("token_type", "kbs") != "kbs":
                raise HttpError(400, "only token_type=kbs is supported")
            return 200, self.kbs.token(reg)
        if path.startswith("/cdh/resource/"):
            segments = path[len("/cdh/resource/"):].split("/")
            if len(segments) != 3 or not all(RESOURCE_SEGMENT.match(s) for s in segments):
                raise HttpError(400, "resource path must be /cdh/resource/REPO/TYPE/TAG")
            return 200, self.kbs.resource(reg, "/".join(segments))
        raise HttpError(404, f"no such endpoint: {path}")


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler], agent: Agent) -> None:
        self.agent = agent
        super().__init__(path, handler)


class _Handler(BaseHTTPRequestHandler):
    server: UnixHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = f"inclavare-agent/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.__class__.__name__, *args)

    def address_string(self) -> str:
        return "unix"

    def _send(self, status: int, payload: Any) -> None:
        if isinstance(payload, bytes):
            body, ctype = payload, "application/octet-stream"
        else:
            body, ctype = json.dumps(payload).encode(), "application/json"
        reason = self.responses.get(status, ("",))[0]
        head = (f"HTTP/1.1 {status} {reason}\r\nServer: {self.version_string()}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.wfile.write(head.encode() + body)  # one write: a client never sees half an answer
        self.log_request(status)
        self.close_connection = True

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise HttpError(413, "request body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError(400, "request body is not valid JSON") from None

    def _dispatch(self, fn: Callable[[], tuple[int, Any]]) -> None:
        try:
            status, payload = fn()
        except HttpError as exc:
            status, payload = exc.status, {"detail": exc.detail}
        except KbsError as exc:
            status, payload = 502, {"detail": f"key broker: {exc}", "type": exc.kind}
        except NotSupportedError as exc:
            status, payload = 501, {"detail": str(exc)}
        except (ConfigError, AgentError) as exc:
            status, payload = 400, {"detail": str(exc)}
        except InclavareError as exc:
            status, payload = 500, {"detail": str(exc)}
        except Exception as exc:  # never a traceback to the caller
            log.exception("request failed")
            status, payload = 500, {"detail": f"internal error: {type(exc).__name__}"}
        self._send(status, payload)

    def _query(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return parts.path, query

    def _raw_query(self) -> dict[str, bytes]:
        """Query values as percent-decoded bytes (first occurrence wins)."""
        out: dict[str, bytes] = {}
        for item in urlsplit(self.path).query.split("&"):
            key, _, value = item.partition("=")
            key_text = unquote_to_bytes(key.replace("+", " ")).decode("utf-8", "replace")
            out.setdefault(key_text, unquote_to_bytes(value.replace("+", " ")))
        return out


class ControlHandler(_Handler):
    def _handle(self, method: str) -> None:
        path, query = self._query()

        def run() -> tuple[int, Any]:
            peer = identify(self.connection)
            if peer is None or peer.uid != 0:
                raise HttpError(403, "the control socket is for root on the host")
            return self.server.agent.control(method, path, query, self._body())

        self._dispatch(run)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class WorkloadHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        path, query = self._query()

        def run() -> tuple[int, Any]:
            peer = identify(self.connection)
            found = self.server.agent.registry.identify(peer) if peer is not None else None
            if found is None:
                raise HttpError(403, "caller is not in an enclave container registered with this node")
            return self.server.agent.workload(found, path, query, self._raw_query())

        self._dispatch(run)


def serve(state_dir: str, control_socket: str, kbs_url: str | None = None,
          extra_control: dict[str, ControlHandlerFactory] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    agent = Agent(state_dir, control_socket, kbs_url, extra_control)
    agent.start()
    log.warning("simulated TEE: evidence is signed by this installation's SIMULATED SGX root; "
                "it proves nothing about hardware and nothing should trust it unless told to")
    log.info("serving control on %s, workloads on %s", agent.control_socket,
             os.path.join(agent.workload_dir, paths.WORKLOAD_SOCKET_NAME))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent._stop.set())
    agent.wait()
    agent.stop()
    return 0
