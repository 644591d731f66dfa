"""``workers = N``: N broker processes on one host, all accepting on one listening socket.

The parent binds the socket, then forks the workers and only supervises them: it forwards
SIGTERM/SIGINT, waits for them to finish their requests, and replaces a worker that dies (killed,
crashed) so the host keeps N. Workers share nothing in memory: sessions, ``/auth`` buckets,
policies and resources are in the store, so any worker serves any step of a flow. A worker that
keeps dying (more than ``MAX_RESTARTS`` in ``RESTART_WINDOW_S``) stops the broker instead of
looping.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("inclavare.kbs")
MAX_RESTARTS = 10
RESTART_WINDOW_S = 30.0
STOP_TIMEOUT_S = 30.0


def _fork(run: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the worker: default signal handling (uvicorn installs its own), then serve
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            run()
        except BaseException as exc:  # never return into the parent's code in the child
            log.error("worker %d failed: %s: %s", os.getpid(), type(exc).__name__, exc)
            code = 1
        finally:
            os._exit(code)
    return pid


def supervise(count: int, run: Callable[[], None], sock: socket.socket) -> int:
    """Run ``run`` in ``count`` forked workers until SIGTERM/SIGINT; the exit status."""
    stopping = False
    children: set[int] = set()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        children.add(_fork(run))
    log.info("%d workers started (pids %s)", count, ", ".join(map(str, sorted(children))))
    restarts: deque[float] = deque()
    status = 0
    alarmed = False
    while children:
        if stopping and not alarmed:  # workers get STOP_TIMEOUT_S to finish, then SIGKILL
            alarmed = True
            signal.signal(signal.SIGALRM, _raise_timeout)
            signal.alarm(int(STOP_TIMEOUT_S))
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except _StopTimeout:
            for other in children:
                os.kill(other, signal.SIGKILL)
            continue
        if pid not in children:
            continue
        children.discard(pid)
        if stopping:
            continue
        log.warning("worker %d %s; starting a new one", pid, _describe(wstatus))
        now = time.monotonic()
        restarts.append(now)
        while restarts and now - restarts[0] > RESTART_WINDOW_S:
            restarts.popleft()
        if len(restarts) > MAX_RESTARTS:
            log.error("workers keep dying (%d restarts in %.0f s): stopping", len(restarts), RESTART_WINDOW_S)
            status = 1
            stop(signal.SIGTERM, None)
            continue
        children.add(_fork(run))
    sock.close()
    return status


class _StopTimeout(Exception):
    pass


def _raise_timeout(_signum: int, _frame: object) -> None:
    raise _StopTimeout


def _describe(wstatus: int) -> str:
    if os.WIFSIGNALED(wstatus):
        return f"was killed by signal {os.WTERMSIG(wstatus)}"
    return f"exited with status {os.waitstatus_to_exitcode(wstatus)}"
