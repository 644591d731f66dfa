"""A TCP listener on loopback whose connections are each handled in a thread of their own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def serve_in_background(handle: Callable[[socket.socket], None]) -> socket.socket:
    """Listen on an ephemeral loopback port; ``handle(conn)`` runs per connection until the
    returned socket is closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener
