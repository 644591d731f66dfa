"""The bounded unix-socket HTTP server every agent socket uses: it holds when pushed.

Each test drives a real server on a real unix socket with raw bytes, as a misbehaving client
would: caps answer 503 at once, a trickling client is cut off, oversized heads and bodies and
garbage get one-line errors, a refused caller reads its 403 (not a reset), tunnels copy bytes
both ways and count them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from inclavare.errors import ConfigError
from inclavare.services.peer import Peer, credentials
from inclavare.services.unix_http import HttpError, Limits, Request, Response, Tunnel, UnixHttpServer, after_answer
from tests.support.loopback import serve_in_background


def _raw(path: str, data: bytes, wait: float = 5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(wait)
    s.connect(path)
    if data:
        try:
            s.sendall(data)
        except BrokenPipeError:
            pass  # answered (and closed) before the request was sent: read the answer
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            if out:  # the answer arrived; the server then closed hard (as clients tolerate)
                break
            raise
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _detail(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"])


@pytest.fixture
def echo_port() -> Iterator[int]:
    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    srv = serve_in_background(echo)
    yield int(srv.getsockname()[1])
    srv.close()


class Server:
    def __init__(self, tmp: Path, limits: Limits, echo_port: int, **listen: Any) -> None:
        self.path = str(tmp / f"s{len(list(tmp.glob('s*.sock')))}.sock")
        self.tunnels: list[tuple[int, int]] = []
        self.refuse = False
        self.peers: list[Peer | None] = []
        self.deferred: list[float] = []
        self.http = UnixHttpServer(limits)
        self.http.listen(self.path, self.handle, name="test", mode=0o600, admit=self.admit, **listen)
        self.http.start()
        self.echo_port = echo_port

    def admit(self, peer: Peer | None) -> None:
        self.peers.append(peer)
        if self.refuse:
            raise HttpError(403, "refused: not one of ours")

    def handle(self, request: Request) -> Response | Tunnel:
        if request.method == "CONNECT":
            return Tunnel(connect=lambda t: socket.create_connection(("127.0.0.1", self.echo_port), timeout=t),
                          done=lambda up, down: self.tunnels.append((up, down)))
        if request.path == "/bug":
            raise RuntimeError("a bug")
        if request.path == "/slow":
            time.sleep(float(request.query()["s"]))
        if request.path == "/deferred":
            after_answer(lambda: (time.sleep(0.5), self.deferred.append(time.monotonic())))
        return Response.json(200, {"path": request.path, "body": len(request.body),
                                   "peer_pid": request.peer.pid if request.peer else None})


@pytest.fixture
def make_server(tmp_path: Path, echo_port: int) -> Iterator[object]:
    servers: list[Server] = []

    def make(identify: Any = None, **limits: float) -> Server:
        s = Server(tmp_path, Limits(**limits), echo_port,  # type: ignore[arg-type]
                   **({"identify": identify} if identify else {}))
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.http.stop()


def test_a_request_is_answered_with_the_kernel_identified_caller(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    answer = _raw(server.path, b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\n\r\nabc")
    assert _status(answer) == 200
    import os

    doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert doc == {"path": "/x", "body": 3, "peer_pid": os.getpid()}


def test_work_deferred_by_a_handler_runs_after_the_answer_is_out(make_server) -> None:  # type: ignore[no-untyped-def]
    """What a handler defers (a log line) does not delay the client: it runs after the write."""
    server = make_server()
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(server.path)
        s.sendall(b"GET /deferred HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = s.recv(65536)
        answered = time.monotonic()
        assert _status(answer) == 200 and server.deferred == []
    assert answered - started < 0.4
    deadline = time.monotonic() + 5
    while not server.deferred and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.deferred and server.deferred[0] > answered
    ran: list[int] = []
    after_answer(lambda: ran.append(1))  # outside a request: at once
    assert ran == [1]


def test_a_listener_admitting_by_user_alone_reads_only_the_credentials(make_server) -> None:  # type: ignore[no-untyped-def]
    """The node agent's control socket admits root alone: it asks the kernel who connected, not
    into which namespaces (that costs a pidfd and a look at each: rune calls it at every create)."""
    import os

    full, cheap = make_server(), make_server(identify=credentials)
    for server in (full, cheap):
        assert _status(_raw(server.path, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")) == 200
    assert full.peers[0] is not None and full.peers[0].ns is not None
    assert cheap.peers[0] is not None and cheap.peers[0].ns is None
    assert (cheap.peers[0].pid, cheap.peers[0].uid, cheap.peers[0].gid) == (os.getpid(), os.getuid(), os.getgid())


@pytest.mark.parametrize("request_bytes,status,words", [
    (b"GARBAGE\r\n\r\n", 400, "malformed"),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431, "head larger"),
    (b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-length: 99999999\r\n\r\n", 413, "body larger"),
    (b"GET /bug HTTP/1.1\r\nHost: a\r\n\r\n", 500, "internal error: RuntimeError"),
])
def test_bad_requests_get_one_line_errors(make_server, request_bytes: bytes, status: int, words: str) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    answer = _raw(server.path, request_bytes)
    assert _status(answer) == status
    assert words in _detail(answer) and "Traceback" not in answer.decode(errors="replace")


def test_a_trickling_client_is_cut_off_at_the_deadline(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(request_deadline=0.5)
    s = socket.socket(socket.AF_UNIX)
    s.connect(server.path)
    started = time.monotonic()
    s.settimeout(5)
    for piece in (b"GET /x HT", b"TP/1.1\r\n", b"Host: a\r\n"):  # never finishes its head
        s.sendall(piece)
        time.sleep(0.2)
    answer = s.recv(65536)
    assert _status(answer) == 408 and time.monotonic() - started < 3
    s.close()


def test_connection_caps_answer_503_at_once_and_others_keep_working(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(per_listener=3, request_deadline=2.0)
    idle = []
    for _ in range(3):  # hold every slot with a connection that says nothing
        c = socket.socket(socket.AF_UNIX)
        c.connect(server.path)
        idle.append(c)
    time.sleep(0.2)
    started = time.monotonic()
    answer = _raw(server.path, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert _status(answer) == 503 and time.monotonic() - started < 1
    for c in idle:
        c.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # slots come back once the idle ones are gone
        if _status(_raw(server.path, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")) == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the server did not recover after the idle connections closed")


def test_the_worker_pool_is_capped(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(workers=2, per_listener=10)
    results: list[float] = []

    def slow() -> None:
        t = time.monotonic()
        assert _status(_raw(server.path, b"GET /slow?s=0.5 HTTP/1.1\r\nHost: a\r\n\r\n")) == 200
        results.append(time.monotonic() - t)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(results) >= 0.9  # two waves of two: the pool never ran four at once


def test_a_refused_caller_reads_its_403_and_nothing_else(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    server.refuse = True
    answer = _raw(server.path, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert _status(answer) == 403 and _detail(answer) == "refused: not one of ours"
    tunnel = _raw(server.path, b"CONNECT kbs:0 HTTP/1.1\r\nHost: a\r\n\r\nhello")
    assert _status(tunnel) == 403 and b"hello" not in tunnel and server.tunnels == []


def test_a_tunnel_copies_bytes_both_ways_and_counts_them(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(server.path)
    s.sendall(b"CONNECT kbs:0 HTTP/1.1\r\nHost: kbs\r\n\r\nearly ")  # bytes sent before the answer
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    payload = bytes(range(256)) * 1000
    s.sendall(payload)
    got = b""
    while len(got) < len(payload) + 6:
        got += s.recv(65536)
    assert got == b"early " + payload
    s.close()
    deadline = time.monotonic() + 5
    while not server.tunnels and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.tunnels == [(len(payload) + 6, len(payload) + 6)]


def test_tunnels_are_capped_and_idle_ones_closed(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(tunnels_per_listener=1, tunnel_idle=0.5)
    first = socket.socket(socket.AF_UNIX)
    first.settimeout(5)
    first.connect(server.path)
    first.sendall(b"CONNECT kbs:0 HTTP/1.1\r\nHost: kbs\r\n\r\n")
    assert first.recv(100).startswith(b"HTTP/1.1 200")
    second = _raw(server.path, b"CONNECT kbs:0 HTTP/1.1\r\nHost: kbs\r\n\r\n")
    assert _status(second) == 503
    assert first.recv(100) == b""  # closed for idleness
    first.close()


def test_a_live_socket_is_never_taken_over_and_a_stale_one_is_replaced(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A second server on a path someone still serves would leave the first running but
    unreachable (seen with two `inclavare agent serve`): refused in one line instead."""
    first = make_server()
    second = UnixHttpServer(Limits())
    with pytest.raises(ConfigError, match="another process is serving on this socket"):
        second.listen(first.path, first.handle, name="second")
    assert _status(_raw(first.path, b"GET /still-mine HTTP/1.1\r\nHost: x\r\n\r\n")) == 200

    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))  # bound, never listening: what a killed server leaves
    leftover.close()
    second.listen(str(stale), first.handle, name="second")
    second.start()
    try:
        assert _status(_raw(str(stale), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 200
    finally:
        second.stop()
