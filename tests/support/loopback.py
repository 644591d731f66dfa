"""A TCP listener on loopback whose connections are each handled in a thread of their own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class _Listener(socket.socket):
    """Closing wakes the accept loop first: a bare close leaves it blocked, and its retry after a
    signal would accept on whatever listener reuses the descriptor number next (stealing the
    clients of the next test's server)."""

    def close(self) -> None:
        try:
            self.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        super().close()


def serve_in_background(handle: Callable[[socket.socket], None]) -> socket.socket:
    """Listen on an ephemeral loopback port; ``handle(conn)`` runs per connection until the
    returned socket is closed."""
    listener = _Listener(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener


def read_request(conn: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes] | None:
    """One HTTP/1.1 request from ``conn`` as (head, body, what followed it), the body as long as
    its Content-Length; None when the client closes before a whole head arrived. For the tests'
    own stand-in servers (scripted agents, brokers), not for code under test."""
    buf = buffered
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(buf) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return head, buf[:length], buf[length:]
