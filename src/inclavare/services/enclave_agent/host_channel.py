"""The enclave's side of its node agent channel (``/run/inclavare/host/host.sock``).

The host is outside the enclave's trust: what it answers is either verifiable by others (a quote
over report data the enclave chose) or harmless hints (where the relay goes). Secrets never pass
here in plaintext: key broker traffic goes through :meth:`HostChannel.tunnel`, an opaque byte
pipe the host only copies.

HTTP is spoken with h11 (which the agent's server already loads): the agent's start-up is paid
by a workload's first request, and ``http.client`` with ``ssl`` and ``email`` would add ~20 ms to
it; they load only when a key broker is first used.
"""

from __future__ import annotations

import base64
import binascii
import socket
from typing import Any

import h11

from inclavare import fastjson
from inclavare.errors import InclavareError
from inclavare.services.enclave_layout import HOST_SOCKET

MAX_ANSWER = 4 << 20


class HostChannelError(InclavareError):
    """The node agent refused or could not be reached."""


def _detail(body: bytes) -> str:
    try:
        doc = fastjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
            return str(doc["detail"])
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:300].decode("utf-8", "replace").strip()


class HostChannel:
    def __init__(self, socket_path: str = HOST_SOCKET, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _exchange(self, method: str, target: str, body: bytes = b"",
                  timeout: float | None = None) -> tuple[int, bytes, socket.socket]:
        """One request; returns the status, the body and the (still open) socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            sock.connect(self.socket_path)
            conn = h11.Connection(h11.CLIENT)
            headers = [("host", "inclavare-host")]
            if method != "CONNECT":
                headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
            out = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            sock.sendall(out)
            status, chunks, size = 0, [], 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_ANSWER:
                        raise HostChannelError(f"the node agent's answer to {target} is too large")
                    chunks.append(bytes(event.data))
                elif event is h11.PAUSED:  # a CONNECT was accepted: the socket now carries raw bytes
                    if conn.trailing_data[0]:
                        raise HostChannelError("the node agent's relay sent bytes before any were asked for")
                    break
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            return status, b"".join(chunks), sock
        except (OSError, h11.ProtocolError) as exc:
            sock.close()
            raise HostChannelError(f"the node agent is not reachable at {self.socket_path}: {exc}") from None
        except BaseException:
            sock.close()
            raise

    def _call(self, method: str, target: str, body: Any = None) -> bytes:
        status, data, sock = self._exchange(method, target, b"" if body is None else fastjson.dumps(body).encode())
        sock.close()
        if status != 200:
            raise HostChannelError(f"the node agent refused {target} ({status}): {_detail(data)}")
        return data

    def _json(self, method: str, target: str, body: Any = None) -> Any:
        try:
            return fastjson.loads(self._call(method, target, body))
        except (ValueError, UnicodeDecodeError):
            raise HostChannelError(f"the node agent's answer to {target} is not JSON") from None

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
        status, data, sock = self._exchange("CONNECT", "kbs:0", timeout=timeout)
        if status != 200:
            sock.close()
            raise HostChannelError(f"the node agent's relay refused ({status}): {_detail(data)}")
        return sock
