"""The runelet's exec protocol: how ``rune exec`` reaches the enclave through the init-runelet.

Framing: every message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object (at most 1 MiB). The client's first message carries its stdin,
stdout and stderr as exactly three descriptors (SCM_RIGHTS). Messages::

    client  {"op": "exec", "argv": [..], "env": [..] | null, "cwd": ".." | null}   + 3 fds
    client  {"op": "kill", "signal": N}                       (any number, after "started")
    server  {"op": "started", "pid": N}
    server  {"op": "exit", "status": S, "code": C}            S = wait status, C = exit code
    server  {"op": "error", "message": "..", "errno": E}      the command could not run

``env``/``cwd`` null mean the container process's own. Anything else is a protocol error
(:class:`ExecProtocolError`); decoding never raises anything but that.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from inclavare.errors import FormatError

MAX_MESSAGE = 1 << 20
HEADER = struct.Struct(">I")
STDIO_FDS = 3


class ExecProtocolError(FormatError):
    """A malformed or unexpected exec-protocol message."""


@dataclass(frozen=True)
class ExecRequest:
    argv: tuple[str, ...]
    env: tuple[str, ...] | None
    cwd: str | None


@dataclass(frozen=True)
class KillRequest:
    signal: int


@dataclass(frozen=True)
class Started:
    pid: int


@dataclass(frozen=True)
class Exited:
    status: int
    code: int


@dataclass(frozen=True)
class Failed:
    message: str
    errno: int


Message = ExecRequest | KillRequest | Started | Exited | Failed


def _strings(value: Any, what: str, allow_empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ExecProtocolError(f"{what} must be a list of strings")
    if not allow_empty and not value:
        raise ExecProtocolError(f"{what} must not be empty")
    if any("\x00" in v for v in value):
        raise ExecProtocolError(f"{what} must not contain NUL characters")
    return tuple(value)


def _int(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ExecProtocolError(f"{key} must be an integer in [{low}, {high}]")
    return value


def _keys(obj: dict[str, Any], allowed: set[str]) -> None:
    extra = set(obj) - allowed
    if extra:
        raise ExecProtocolError(f"unknown field(s) {', '.join(sorted(extra))}")


def decode(payload: bytes) -> Message:
    """One message body (without the length header)."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ExecProtocolError("message is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ExecProtocolError("message must be a JSON object")
    op = obj.get("op")
    if op == "exec":
        _keys(obj, {"op", "argv", "env", "cwd"})
        argv = _strings(obj.get("argv"), "argv", allow_empty=False)
        env = None if obj.get("env") is None else _strings(obj["env"], "env")
        cwd = obj.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/") or "\x00" in cwd):
            raise ExecProtocolError("cwd must be an absolute path")
        return ExecRequest(argv, env, cwd)
    if op == "kill":
        _keys(obj, {"op", "signal"})
        return KillRequest(_int(obj, "signal", 1, 64))
    if op == "started":
        _keys(obj, {"op", "pid"})
        return Started(_int(obj, "pid", -(2**31), 2**31 - 1))
    if op == "exit":
        _keys(obj, {"op", "status", "code"})
        return Exited(_int(obj, "status", 0, 0xFFFF), _int(obj, "code", 0, 255))
    if op == "error":
        _keys(obj, {"op", "message", "errno"})
        message = obj.get("message")
        if not isinstance(message, str):
            raise ExecProtocolError("error message must be a string")
        return Failed(message, _int(obj, "errno", 0, 4095))
    raise ExecProtocolError(f"unknown op {op!r:.40}")


def encode(message: Message) -> bytes:
    """One framed message."""
    if isinstance(message, ExecRequest):
        obj: dict[str, Any] = {"op": "exec", "argv": list(message.argv),
                               "env": None if message.env is None else list(message.env),
                               "cwd": message.cwd}
    elif isinstance(message, KillRequest):
        obj = {"op": "kill", "signal": message.signal}
    elif isinstance(message, Started):
        obj = {"op": "started", "pid": message.pid}
    elif isinstance(message, Exited):
        obj = {"op": "exit", "status": message.status, "code": message.code}
    else:
        obj = {"op": "error", "message": message.message, "errno": message.errno}
    body = json.dumps(obj, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ExecProtocolError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: Message, fds: tuple[int, ...] = ()) -> None:
    """Send one message (with descriptors attached to its first byte). Never raises SIGPIPE."""
    data = memoryview(encode(message))
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sent = sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
        data = data[sent:]
    while data:
        data = data[sock.send(data, socket.MSG_NOSIGNAL):]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _recv_exact(sock: socket.socket, size: int, fds: list[int], max_fds: int) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize) if max_fds else 0
    while got < size:
        data, ancdata, flags, _ = sock.recvmsg(size - got, space, socket.MSG_CMSG_CLOEXEC)
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(cdata[: len(cdata) - len(cdata) % received.itemsize])
                fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            raise ExecProtocolError("too many file descriptors attached")
        if not data:
            if got == 0 and not chunks:
                return None
            raise ExecProtocolError("connection closed in the middle of a message")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[Message | None, list[int]]:
    """Read one message; ``(None, [])`` at a clean end of stream. Descriptors received
    are close-on-exec; on any error they are closed before raising."""
    fds: list[int] = []
    try:
        header = _recv_exact(sock, HEADER.size, fds, max_fds)
        if header is None:
            return None, []
        (size,) = HEADER.unpack(header)
        if size > MAX_MESSAGE:
            raise ExecProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE}")
        body = _recv_exact(sock, size, fds, max_fds) if size else b""
        if body is None:
            raise ExecProtocolError("connection closed in the middle of a message")
        return decode(body), fds
    except BaseException:
        _close_all(fds)
        raise
