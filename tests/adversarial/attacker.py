"""A local attacker for the agents' unix sockets, run as an unprivileged user (``nobody``).

``python attacker.py SECONDS CONNECTIONS PAYLOAD PATH...`` keeps up to CONNECTIONS connections
open across the PATHs (round robin) for SECONDS, reopening every one the server closes, and sends
PAYLOAD (``idle``: nothing; ``partial``: half a request head; ``quote``: a whole quote request) on
each. It prints one JSON line of counts at the end. Bounded: a fixed number of sockets, a fixed
duration, poll-based, no threads.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import time

PAYLOADS = {
    "idle": b"",
    "partial": b"POST /v1/quote HTTP/1.1\r\nHost: x\r\n",
    "quote": b'POST /v1/quote HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\n{"report_data": "AA=="}',
}


def main() -> None:
    seconds, count, payload = float(sys.argv[1]), int(sys.argv[2]), PAYLOADS[sys.argv[3]]
    paths = sys.argv[4:]
    stats = {"opened": 0, "failed": 0, "closed_by_server": 0, "open_at_end": 0}
    poller = select.poll()
    socks: dict[int, socket.socket] = {}
    turn = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        while len(socks) < count and time.monotonic() < deadline:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            path = paths[turn % len(paths)]
            turn += 1
            try:
                s.connect(path)
            except OSError as exc:
                s.close()
                stats["failed"] += 1
                if exc.errno in (errno.EAGAIN, errno.ECONNREFUSED):
                    break  # the backlog is full: wait for the server
                raise SystemExit(f"attacker: connect {path}: {exc}") from None
            try:
                s.send(payload)
            except OSError:
                pass
            stats["opened"] += 1
            socks[s.fileno()] = s
            poller.register(s, select.POLLIN)
        for fd, _ in poller.poll(20):
            s = socks[fd]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                del socks[fd]
                s.close()
                stats["closed_by_server"] += 1
    stats["open_at_end"] = len(socks)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
