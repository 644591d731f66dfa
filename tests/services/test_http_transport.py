"""The key broker client's HTTP transport against real servers misbehaving on loopback: kept-alive
connections are reused, one the server dropped is reopened once, truncated and oversized
answers and unreachable servers are typed errors."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from inclavare.services import http_transport
from inclavare.services.http_transport import HttpTransport, TransportError
from tests.support.loopback import read_request, serve_in_background

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class Server:
    """Reads one request head at a time and answers with ``behaviour(conn, index)``."""

    def __init__(self, behaviour: Callable[[socket.socket, int], bool]) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.requests = 0
        self.sock = serve_in_background(self._handle)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        buf = b""
        with conn:
            while True:
                request = read_request(conn, buf)
                if request is None:
                    return
                buf = request[2]
                self.requests += 1
                if not self.behaviour(conn, self.requests):
                    return


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket, int], bool]], Server]]:
    made: list[Server] = []

    def make(behaviour: Callable[[socket.socket, int], bool]) -> Server:
        made.append(Server(behaviour))
        return made[-1]

    yield make
    for s in made:
        s.sock.close()


def test_requests_reuse_one_kept_alive_connection(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda conn, i: conn.sendall(ANSWER) is None)
    t = HttpTransport(s.url)
    for _ in range(3):
        r = t.request("POST", "/x", b"{}", {"content-type": "application/json"})
        assert (r.status, r.body, r.header("content-type")) == (200, b"ok", "text/plain")
    assert (s.connections, s.requests) == (1, 3)


def test_a_connection_the_server_dropped_is_reopened_once(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda conn, i: conn.sendall(ANSWER) is None and False)  # answers, then closes
    t = HttpTransport(s.url)
    assert t.request("GET", "/a").body == b"ok"
    assert t.request("GET", "/b").body == b"ok"  # the kept connection was dead: a fresh one
    assert s.connections == 2


def test_a_truncated_answer_is_a_transport_error(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda conn, i: conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b") and False)
    with pytest.raises(TransportError, match="closed"):
        HttpTransport(s.url).request("GET", "/")


def test_an_oversized_answer_is_a_transport_error(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(http_transport, "MAX_RESPONSE", 1000)
    s = server(lambda conn, i: conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000) is None)
    with pytest.raises(TransportError, match="too large"):
        HttpTransport(s.url).request("GET", "/")


def test_garbage_and_unreachable_servers_are_transport_errors(server) -> None:  # type: ignore[no-untyped-def]
    s = server(lambda conn, i: conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n") and False)
    with pytest.raises(TransportError):
        HttpTransport(s.url).request("GET", "/")
    s.sock.close()
    with pytest.raises(TransportError):
        HttpTransport(s.url).request("GET", "/")


def test_bad_urls_are_configuration_errors() -> None:
    from inclavare.errors import ConfigError

    for url in ("ftp://x", "http://", "http://h:99999"):
        with pytest.raises(ConfigError):
            HttpTransport(url)


def test_a_tunnel_carries_raw_bytes_and_a_refusal_keeps_its_answer(server) -> None:  # type: ignore[no-untyped-def]
    from inclavare.services.http_transport import TunnelRefused

    def accept_then_echo(conn: socket.socket, i: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        conn.sendall(conn.recv(100)[::-1])
        return False

    sock = HttpTransport(server(accept_then_echo).url).tunnel("kbs:0")
    sock.sendall(b"raw bytes")
    assert sock.recv(100) == b"setyb war"
    sock.close()
    refusing = server(lambda conn, i: conn.sendall(b'HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\n\r\n{"detail":"no"}')
                      and False)
    with pytest.raises(TunnelRefused) as info:
        HttpTransport(refusing.url).tunnel("kbs:0")
    assert (info.value.response.status, info.value.response.body) == (403, b'{"detail":"no"}')
