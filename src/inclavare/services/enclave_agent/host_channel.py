"""The enclave's side of its node agent channel (``/run/inclavare/host/host.sock``).

The host is outside the enclave's trust: what it answers is either verifiable by others (a quote
over report data the enclave chose) or harmless hints (where the relay goes). Secrets never pass
here in plaintext: key broker traffic goes through :meth:`HostChannel.tunnel`, an opaque byte
pipe the host only copies.

Requests go through the same :class:`~inclavare.services.http_transport.HttpTransport` the key
broker client uses (h11, which the agent's server already loads), over the unix socket.
"""

from __future__ import annotations

import base64
import binascii
import socket
import time
from typing import Any

from inclavare import fastjson
from inclavare.errors import InclavareError
from inclavare.services.enclave_layout import HOST_SOCKET
from inclavare.services.http_transport import Connect, HttpTransport, TransportError, TunnelRefused


class HostChannelError(InclavareError):
    """The node agent refused or could not be reached."""


def unix_connect(path: str) -> Connect:
    """Connect to a unix socket, waiting (up to ``timeout``) while its backlog is full.

    A unix socket answers ``EAGAIN`` at once when connections wait unaccepted; another local
    user flooding the channel can cause exactly that. The node agent refuses such a caller in
    microseconds, so a retry a few milliseconds later gets in."""

    def connect(timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
                return sock
            except BlockingIOError:
                sock.close()
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
            except OSError:
                sock.close()
                raise

    return connect


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

    def _transport(self, timeout: float | None = None) -> HttpTransport:
        # one per call: the agent asks from several threads, and the node agent closes after
        # each answer anyway
        return HttpTransport("http://inclavare-host", connect=unix_connect(self.socket_path),
                             timeout=self.timeout if timeout is None else timeout)

    def _call(self, method: str, target: str, body: Any = None) -> bytes:
        transport = self._transport()
        try:
            resp = transport.request(method, target, None if body is None else fastjson.dumps(body).encode(),
                                     {"content-type": "application/json"} if body is not None else None)
        except TransportError as exc:
            raise HostChannelError(f"the node agent is not reachable at {self.socket_path}: {exc}") from None
        finally:
            transport.close()
        if resp.status != 200:
            raise HostChannelError(f"the node agent refused {target} ({resp.status}): {_detail(resp.body)}")
        return resp.body

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

    def quote(self, report_data: bytes) -> tuple[str, dict[str, Any]]:
        """Evidence over ``report_data`` (≤ 64 bytes): ``(tee, evidence JSON)`` as Trustee takes it
        (its contents are the verifier's to check)."""
        doc = self._json("POST", "/v1/quote", {"report_data": base64.b64encode(report_data).decode()})
        tee = doc.get("tee") if isinstance(doc, dict) else None
        evidence = doc.get("evidence") if isinstance(doc, dict) else None
        if not isinstance(tee, str) or not isinstance(evidence, dict) or not evidence:
            raise HostChannelError("the node agent's quote answer is malformed")
        quote = evidence.get("quote")
        if quote is not None:
            try:
                base64.b64decode(quote, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise HostChannelError("the node agent's quote is not base64") from None
        return tee, evidence

    def platform_tee(self) -> str:
        """The TEE the platform quotes for (``/v1/info``)."""
        tee = self.info().get("tee")
        if not isinstance(tee, str) or not tee:
            raise HostChannelError("the node agent names no TEE for this container")
        return tee

    def extend_rtmr(self, index: int, digest: bytes) -> bytes:
        """Extend TDX RTMR ``index`` with ``digest`` (48 bytes); the new value."""
        doc = self._json("POST", "/v1/rtmr", {"index": index, "digest": base64.b64encode(digest).decode()})
        value = doc.get("value") if isinstance(doc, dict) else None
        try:
            return bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raise HostChannelError("the node agent's RTMR answer is malformed") from None

    def sealing_key(self, policy: str, key_id: bytes, isv_svn: int | None) -> tuple[bytes, int, int]:
        """EGETKEY(SEAL), simulated by the node agent: ``(key, ISV SVN, ISV product id)``."""
        request: dict[str, Any] = {"policy": policy, "key_id": base64.b64encode(key_id).decode()}
        if isv_svn is not None:
            request["isv_svn"] = isv_svn
        doc = self._json("POST", "/v1/sealing-key", request)
        try:
            key = base64.b64decode(doc["key"], validate=True)
            svn, prod_id = doc["isv_svn"], doc["isv_prod_id"]
        except (TypeError, KeyError, binascii.Error):
            raise HostChannelError("the node agent's sealing key answer is malformed") from None
        if len(key) != 32 or type(svn) is not int or type(prod_id) is not int:
            raise HostChannelError("the node agent's sealing key answer is malformed")
        return key, svn, prod_id

    def collateral(self) -> bytes:
        return self._call("GET", "/v1/collateral")

    def tunnel(self, timeout: float, target: str = "kbs:0") -> socket.socket:
        """A byte pipe through the host to the node's key broker (``CONNECT kbs``) or to a
        registry the node agent is configured for (``CONNECT host:port``)."""
        try:
            return self._transport(timeout).tunnel(target)
        except TunnelRefused as exc:
            raise HostChannelError(f"the node agent's relay refused ({exc.response.status}): "
                                   f"{_detail(exc.response.body)}") from None
        except TransportError as exc:
            raise HostChannelError(f"the node agent's relay is not reachable at {self.socket_path}: {exc}") from None
