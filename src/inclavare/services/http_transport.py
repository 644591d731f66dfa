"""HTTP/1.1 requests over a connection the caller opens (TCP, or a tunnel through a relay).

The key broker client runs inside enclaves, where the only way out may be the node agent's opaque
relay (``CONNECT kbs`` on a unix socket) and where start-up time is paid by the first secret a
workload asks for. So the protocol is h11's (already loaded by the enclave agent's server),
``ssl`` is imported only for an https URL, and the connection is kept alive between requests.
The transport knows nothing of the key broker protocol (:mod:`inclavare.services.kbs_client`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

from inclavare.errors import ConfigError

Connect = Callable[[float], socket.socket]  # timeout -> a connected stream socket
MAX_RESPONSE = 16 << 20


class TransportError(OSError):
    """The request could not be sent or its answer not read."""


class TunnelRefused(TransportError):
    """The server answered a CONNECT with something else than 200 (kept in ``response``)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"CONNECT refused ({response.status})")
        self.response = response


class _Stale(Exception):
    """A kept-alive connection the server had closed before this request: try a fresh one."""


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
    """Send small writes at once: a request's head and body may leave in two writes, and with
    Nagle's algorithm the body would wait for the peer's delayed ACK (~40 ms)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def parse_origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; ConfigError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"URL must be http://HOST[:PORT] or https://HOST[:PORT], not {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"URL has an invalid port: {url!r}") from None
    return parts.scheme, parts.hostname, port


def tcp_connect(host: str, port: int) -> Connect:
    return lambda timeout: nodelay(socket.create_connection((host, port), timeout=timeout))


class HttpTransport:
    """Requests to one origin (``base_url``), over sockets from ``connect`` (default: TCP)."""

    def __init__(self, base_url: str, *, connect: Connect | None = None, ssl_context: Any = None,
                 timeout: float = 30.0) -> None:
        scheme, self.host, self.port = parse_origin(base_url)
        default_port = 443 if scheme == "https" else 80
        self.authority = self.host if self.port == default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            self.authority = f"[{self.host}]" + ("" if self.port == default_port else f":{self.port}")
        self.prefix = urlsplit(base_url).path.rstrip("/")
        self.timeout = timeout
        self._connect = connect or tcp_connect(self.host, self.port)
        self._ssl = None
        if scheme == "https":
            import ssl

            self._ssl = ssl_context or ssl.create_default_context()
        self._sock: socket.socket | None = None
        self._conn: h11.Connection | None = None

    def _open(self) -> tuple[socket.socket, h11.Connection]:
        sock = self._connect(self.timeout)
        sock.settimeout(self.timeout)
        if self._ssl is not None:
            try:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock, self._conn = sock, h11.Connection(h11.CLIENT)
        return self._sock, self._conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, sink: Callable[[bytes], None] | None = None,
                limit: int | None = None) -> HttpResponse:
        """One request; a kept-alive connection the server closed meanwhile is reopened once.

        With ``sink`` a 200 answer's body (up to ``limit`` bytes) is handed to it piece by piece
        instead of being kept (image layers); other answers are kept as usual (``MAX_RESPONSE``)."""
        for attempt in (0, 1):
            reused = self._sock is not None
            try:
                sock, conn = (self._sock, self._conn) if reused else self._open()
                assert sock is not None and conn is not None
                return self._exchange(sock, conn, method, path, body, headers or {}, sink, limit)
            except _Stale:
                self.close()
                if not reused or attempt:
                    raise TransportError("the server closed the connection without answering") from None
            except (OSError, h11.ProtocolError) as exc:
                self.close()
                raise TransportError(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    def _exchange(self, sock: socket.socket, conn: h11.Connection, method: str, path: str,
                  body: bytes | None, headers: dict[str, str], sink: Callable[[bytes], None] | None = None,
                  limit: int | None = None) -> HttpResponse:
        fields = [("host", self.authority), *((k, v) for k, v in headers.items())]
        if body is not None:
            fields.append(("content-length", str(len(body))))
        target = path if method == "CONNECT" else self.prefix + path  # CONNECT takes an authority
        out = conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        try:
            sock.sendall(out)
        except (BrokenPipeError, ConnectionResetError):
            raise _Stale from None
        status, received, chunks, size = 0, False, [], 0
        response_headers: list[tuple[str, str]] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data and not received:
                    raise _Stale
                received = received or bool(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > (limit if limit is not None and status == 200 else MAX_RESPONSE):
                    raise TransportError("response too large")
                if sink is not None and status == 200:
                    sink(bytes(event.data))
                else:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                break  # PAUSED: a CONNECT was accepted, the socket now carries raw bytes
            elif isinstance(event, h11.ConnectionClosed):
                raise TransportError("the server closed the connection mid-answer")
        if event is h11.PAUSED:
            pass  # the caller takes the socket over
        elif conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        return HttpResponse(status, response_headers, b"".join(chunks))

    def tunnel(self, target: str) -> socket.socket:
        """``CONNECT target`` on a fresh connection; the socket, carrying raw bytes from then on."""
        self.close()
        try:
            sock, conn = self._open()
            response = self._exchange(sock, conn, "CONNECT", target, None, {})
        except _Stale:
            self.close()
            raise TransportError("the server closed the connection without answering") from None
        except (OSError, h11.ProtocolError) as exc:
            self.close()
            raise TransportError(str(exc) or type(exc).__name__) from exc
        if response.status != 200 or conn.their_state is not h11.SWITCHED_PROTOCOL:
            self.close()
            raise TunnelRefused(response)
        if conn.trailing_data[0]:
            self.close()
            raise TransportError("the tunnel sent bytes before any were asked for")
        self._sock, self._conn = None, None  # the caller owns it now
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._conn = None, None
