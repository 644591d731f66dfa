"""HTTP/1.1 requests over a connection the caller opens (TCP, or a tunnel through a relay).

The key broker client runs inside enclaves, where the only way out may be the node agent's opaque
relay (``CONNECT kbs`` on a unix socket) and where start-up time is paid on the first secret; so
this transport is the standard library's ``http.client`` (with ``ssl`` when the URL is https)
over a socket from a ``connect`` callable, keeping the connection alive between requests. It
knows nothing of the key broker protocol (:mod:`inclavare.services.kbs_client` does).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from inclavare.errors import ConfigError

Connect = Callable[[float], socket.socket]  # timeout -> a connected stream socket
MAX_RESPONSE = 16 << 20


class TransportError(OSError):
    """The request could not be sent or its answer not read."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]  # names in lower case, in order (set-cookie may repeat)
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def nodelay(sock: socket.socket) -> socket.socket:
    """Send small writes at once: http.client writes a request's head and body separately, and
    with Nagle's algorithm the body would wait for the peer's delayed ACK (~40 ms)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tcp_connect(host: str, port: int) -> Connect:
    return lambda timeout: nodelay(socket.create_connection((host, port), timeout=timeout))


class HttpTransport:
    """Requests to one origin (``base_url``), over sockets from ``connect`` (default: TCP)."""

    def __init__(self, base_url: str, *, connect: Connect | None = None, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"URL must be http://HOST[:PORT] or https://HOST[:PORT], not {base_url!r}")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigError(f"URL has an invalid port: {base_url!r}") from None
        self.host = parts.hostname
        self.https = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._connect = connect or tcp_connect(self.host, self.port)
        self._ssl = (ssl_context or ssl.create_default_context()) if self.https else None
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            sock = self._connect(self.timeout)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            conn.sock = sock
            self._conn = conn
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> HttpResponse:
        """One request; a kept-alive connection the server closed meanwhile is reopened once."""
        for attempt in (0, 1):
            fresh = self._conn is None
            try:
                conn = self._connection()
                conn.request(method, self.prefix + path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read(MAX_RESPONSE + 1)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if fresh or attempt:
                    raise TransportError(f"connection closed: {exc}") from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(str(exc) or type(exc).__name__) from exc
            if len(data) > MAX_RESPONSE:
                self.close()
                raise TransportError("response too large")
            if resp.will_close:
                self.close()
            return HttpResponse(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
