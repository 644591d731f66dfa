"""A TCP proxy that keeps every byte passing through it: what a host on the path could see."""

from __future__ import annotations

import socket
import threading

from tests.support.loopback import serve_in_background


class RecordingProxy:
    """TCP proxy in front of the key broker keeping every byte that passes, both ways."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.up = bytearray()  # node agent -> broker
        self.down = bytearray()  # broker -> node agent
        self.lock = threading.Lock()
        self.sock = serve_in_background(self._relay)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()  # the peer sees the upstream gone at once, not after its timeout
            return
        for src, dst, log in ((client, server, self.up), (server, client, self.down)):
            threading.Thread(target=self._copy, args=(src, dst, log), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, log: bytearray) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    log += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()  # wakes the accept loop first (tests.support.loopback)
