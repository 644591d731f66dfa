"""The enclave's side of its node agent channel (``/run/inclavare/host/host.sock``).

The host is outside the enclave's trust: what it answers is either verifiable by others (a quote
over report data the enclave chose) or harmless hints (where the relay goes). Secrets never pass
here in plaintext: key broker traffic goes through :meth:`HostChannel.tunnel`, an opaque byte
pipe the host only copies.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import socket
from typing import Any

from inclavare.errors import InclavareError
from inclavare.services.enclave_layout import HOST_SOCKET

MAX_ANSWER = 4 << 20


class HostChannelError(InclavareError):
    """The node agent refused or could not be reached."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("inclavare-host", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
            return str(doc["detail"])
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace").strip()


class HostChannel:
    def __init__(self, socket_path: str = HOST_SOCKET, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> bytes:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=payload,
                         headers={"content-type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read(MAX_ANSWER)
        except (OSError, http.client.HTTPException) as exc:
            raise HostChannelError(f"the node agent is not reachable at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise HostChannelError(f"the node agent refused {path} ({resp.status}): {_detail(data)}")
        return data

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return json.loads(self._call(method, path, body))
        except ValueError:
            raise HostChannelError(f"the node agent's answer to {path} is not JSON") from None

    def info(self) -> dict[str, Any]:
        doc = self._json("GET", "/v1/info")
        if not isinstance(doc, dict):
            raise HostChannelError("the node agent's /v1/info is not an object")
        return doc

    def quote(self, report_data: bytes) -> tuple[str, dict[str, str]]:
        """Evidence over ``report_data`` (≤ 64 bytes): ``(tee, evidence JSON)`` as Trustee takes it."""
        doc = self._json("POST", "/v1/quote", {"report_data": base64.b64encode(report_data).decode()})
        tee = doc.get("tee") if isinstance(doc, dict) else None
        evidence = doc.get("evidence") if isinstance(doc, dict) else None
        quote = evidence.get("quote") if isinstance(evidence, dict) else None
        if not isinstance(tee, str) or not isinstance(quote, str):
            raise HostChannelError("the node agent's quote answer is malformed")
        try:
            base64.b64decode(quote, validate=True)
        except binascii.Error:
            raise HostChannelError("the node agent's quote is not base64") from None
        return tee, {"quote": quote}

    def collateral(self) -> bytes:
        return self._call("GET", "/v1/collateral")

    def tunnel(self, timeout: float) -> socket.socket:
        """A byte pipe to the node's key broker through the host (``CONNECT kbs``)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
            sock.sendall(b"CONNECT kbs:0 HTTP/1.1\r\nHost: kbs:0\r\n\r\n")
            resp = http.client.HTTPResponse(sock, method="CONNECT")
            resp.begin()
            if resp.status != 200:
                detail = _detail(resp.read(MAX_ANSWER))
                raise HostChannelError(f"the node agent's relay refused ({resp.status}): {detail}")
        except (OSError, http.client.HTTPException) as exc:
            sock.close()
            raise HostChannelError(f"the node agent's relay is not reachable at {self.socket_path}: {exc}") from None
        except HostChannelError:
            sock.close()
            raise
        return sock
