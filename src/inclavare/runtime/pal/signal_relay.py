"""Catching every signal a relay must pass on, and reading them from one descriptor.

Signals are caught with no-op Python handlers plus ``signal.set_wakeup_fd``: the C-level
handler writes each signal number to a pipe, which the relay's event loop reads alongside
its sockets. Not relayed: SIGKILL/SIGSTOP (uncatchable), SIGCHLD (our own children's
notifications), and the synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
SIGTRAP, SIGSYS), which a handler cannot safely return from.
"""

from __future__ import annotations

import os
import signal

NOT_RELAYED = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGSEGV, signal.SIGBUS,
    signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS,
})


def relayed_signals() -> list[int]:
    return sorted(int(s) for s in signal.valid_signals() if s not in NOT_RELAYED)


def _ignore(_signum: int, _frame: object) -> None:
    """The work happens in the wakeup descriptor; the Python-level handler does nothing."""


class SignalPipe:
    """Installs the handlers (main thread only) and yields the signals received."""

    def __init__(self, *, with_sigchld: bool = False) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self.caught: list[int] = []
        for sig in relayed_signals() + ([signal.SIGCHLD] if with_sigchld else []):
            try:
                signal.signal(sig, _ignore)
            except (OSError, ValueError):
                continue  # reserved by the C library
            self.caught.append(sig)

    def drain(self) -> list[int]:
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return []
        return list(data)


def block_in_this_thread() -> None:
    """Keep signals away from a worker thread, so blocking C calls there are not
    interrupted and the main thread's event loop receives them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, relayed_signals() + [signal.SIGCHLD])
