"""A small, dependency-free client of the agent's HTTP-over-unix-socket APIs.

rune calls it on container create/delete, so it uses only the C modules underneath ``socket``
and ``json`` (their Python layers cost more to import than the request takes) and speaks just
enough HTTP/1.1 (one request per connection, ``Connection: close``).
"""

from __future__ import annotations

import _socket

from inclavare import fastjson
from inclavare.errors import AgentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_RESPONSE = 16 << 20


class AgentResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> Any:
        try:
            return fastjson.loads(self.body)
        except ValueError:
            raise AgentError(f"agent sent a malformed response (status {self.status})") from None

    def error_text(self) -> str:
        try:
            doc = fastjson.loads(self.body)
            if isinstance(doc, dict) and "detail" in doc:
                return str(doc["detail"])
        except ValueError:
            pass
        return self.body.decode("utf-8", "replace").strip() or f"status {self.status}"


def request(socket_path: str, method: str, path: str, body: Any = None, timeout: float = 30) -> AgentResponse:
    payload = b"" if body is None else fastjson.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: inclavare-agent\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        try:
            s.connect(socket_path)
        except OSError as exc:
            raise AgentError(
                f"node agent not reachable at {socket_path}: {exc.strerror or exc} "
                "(start it with `inclavare agent serve`)") from None
        s.sendall(head + payload)
        chunks, size = [], 0
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise AgentError("agent response too large")
    except TimeoutError:
        raise AgentError(f"node agent at {socket_path} did not answer within {timeout:g} s") from None
    finally:
        s.close()
    raw = b"".join(chunks)
    head_end = raw.find(b"\r\n\r\n")
    if not raw.startswith(b"HTTP/1.") or head_end < 0:
        raise AgentError("agent sent a malformed response")
    try:
        status = int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise AgentError("agent sent a malformed status line") from None
    return AgentResponse(status, raw[head_end + 4:])


def call(socket_path: str, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    """Request and decode JSON; a non-2xx answer raises AgentError with the agent's reason."""
    resp = request(socket_path, method, path, body, timeout)
    if not 200 <= resp.status < 300:
        raise AgentError(resp.error_text())
    return resp.json() if resp.body else None


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (urllib.parse.quote, safe='')."""
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def container_path(root: str, container_id: str, suffix: str = "") -> str:
    return f"/v1/containers/{quote(container_id)}{suffix}?root={quote(root)}"
