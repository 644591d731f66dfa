"""rune's own messages, written the way runc writes them.

containerd's runc shim reads the ``--log`` file (``--log-format json``) to show a runtime's
error text; podman/conmon read stderr. runc 1.1 writes each error both to the log (as
``{"level":"error","msg":...,"time":...}`` or logrus text) and, plain, to stderr, then exits 1.
"""

from __future__ import annotations

import os
import sys
import time

from inclavare import fastjson
from inclavare.runtime.invocation import Invocation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

LEVELS = ("debug", "info", "warning", "error")


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def format_line(level: str, msg: str, log_format: str) -> str:
    if log_format == "json":
        # engines that read the JSON log name the runtime themselves (podman: "rune: <msg>", as
        # for runc), so the entry carries the message alone; stderr and text keep "rune: "
        return fastjson.dumps({"level": level, "msg": msg.removeprefix("rune: "), "time": _timestamp()}) + "\n"
    return f'time="{_timestamp()}" level={level} msg={fastjson.dumps(msg)}\n'


class RuneLog:
    """Writes to the ``--log`` destination chosen on the command line (stderr by default)."""

    def __init__(self, path: str = "", log_format: str = "text", debug: bool = False) -> None:
        self.path = path
        self.log_format = log_format or "text"
        self.debug_enabled = debug

    @classmethod
    def from_globals(cls, globals_: dict[str, str]) -> "RuneLog":
        return cls(
            path=globals_.get("log", ""),
            log_format=globals_.get("log-format", "text"),
            debug=globals_.get("debug", "false") not in ("false", "0", ""),
        )

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_enabled:
            return
        line = format_line(level, msg, self.log_format)
        if not self.path or self.path == "/dev/stderr":
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            sys.stderr.write(line)
            return
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def debug(self, msg: str) -> None:
        self.write("debug", msg)

    def info(self, msg: str) -> None:
        self.write("info", msg)

    def warning(self, msg: str) -> None:
        self.write("warning", msg)

    def error(self, msg: str) -> None:
        """Log an error as runc does: to the log destination and, plainly, to stderr; always
        one line (engines show the last line of stderr)."""
        msg = " ".join(msg.splitlines())
        self.write("error", msg)
        if self.path and self.path != "/dev/stderr":
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()


def fatal(argv: list[str], msg: str, code: int = 1) -> NoReturn:
    """Report ``msg`` as runc reports a fatal error and exit (used before full parsing)."""
    RuneLog.from_globals(Invocation(argv).globals).error(msg)
    sys.exit(code)
