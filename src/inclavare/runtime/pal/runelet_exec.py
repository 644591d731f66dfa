"""``runelet exec``: run a command in the enclave of a running container.

What ``rune exec`` has ``runc exec`` start: it connects to the init-runelet's socket, hands
over the command and its own stdin/stdout/stderr (SCM_RIGHTS), relays every signal it gets
as a kill request for that command, and exits with the command's exit code.
"""

from __future__ import annotations

import errno as errno_mod
import selectors
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from inclavare.errors import RuntimeFailure
from inclavare.runtime.pal import exec_protocol as proto
from inclavare.runtime.pal.signal_relay import SignalPipe


@dataclass(frozen=True)
class ExecArgs:
    socket: str
    argv: tuple[str, ...]
    env: tuple[str, ...] | None
    cwd: str | None


def parse_exec_args(args: Sequence[str]) -> ExecArgs:
    """``--socket PATH [--cwd DIR] [--env KEY=VALUE]... -- ARGV...`` (raises ValueError)."""
    sock, cwd, env = "", None, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            argv = tuple(args[i + 1:])
            break
        if arg not in ("--socket", "--cwd", "--env") or i + 1 >= len(args):
            raise ValueError(f"unexpected argument {arg!r}")
        value = args[i + 1]
        if arg == "--socket":
            sock = value
        elif arg == "--cwd":
            cwd = value
        else:
            env.append(value)
        i += 2
    else:
        raise ValueError("missing '--' before the command")
    if not sock:
        raise ValueError("--socket is required")
    if not argv:
        raise ValueError("no command given")
    return ExecArgs(sock, argv, tuple(env) if env else None, cwd)


def _failure_code(err: int) -> int:
    if err == errno_mod.ENOENT:
        return 127
    if err in (errno_mod.EACCES, errno_mod.ENOEXEC, errno_mod.EPERM):
        return 126
    return 255


class ExecFailed(RuntimeFailure):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def run_exec(args: ExecArgs) -> int:
    signals = SignalPipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(args.socket)
    except OSError as exc:
        raise ExecFailed(f"cannot reach the container's runelet at {args.socket}: "
                         f"{exc.strerror}", 255) from None
    try:
        proto.send(sock, proto.ExecRequest(args.argv, args.env, args.cwd), fds=(0, 1, 2))
        return _relay(sock, signals)
    except OSError as exc:
        raise ExecFailed(f"lost the connection to the container's runelet: {exc.strerror}", 255) from None
    except proto.ExecProtocolError as exc:
        raise ExecFailed(f"bad reply from the container's runelet: {exc}", 255) from None
    finally:
        sock.close()


def _relay(sock: socket.socket, signals: SignalPipe) -> int:
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(signals.read_fd, selectors.EVENT_READ, "signal")
    started = False
    pending: list[int] = []
    while True:
        for key, _ in selector.select():
            if key.data == "signal":
                pending.extend(signals.drain())
                if started:
                    for sig in pending:
                        proto.send(sock, proto.KillRequest(sig))
                    pending.clear()
                continue
            message, _ = proto.receive(sock)
            if message is None:
                raise ExecFailed("the container's runelet closed the connection before the "
                                 "command finished (the container is stopping)", 255)
            if isinstance(message, proto.Started):
                started = True
                for sig in pending:
                    proto.send(sock, proto.KillRequest(sig))
                pending.clear()
            elif isinstance(message, proto.Exited):
                return message.code
            elif isinstance(message, proto.Failed):
                raise ExecFailed(message.message, _failure_code(message.errno))
            else:
                raise proto.ExecProtocolError(f"unexpected {type(message).__name__} message")
