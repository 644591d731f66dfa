"""Who is on the other end of a unix socket — from kernel facts only.

The caller's pid comes from the kernel (``SO_PEERPIDFD`` where available: a pidfd pinned to the
connecting process, so a recycled pid cannot impersonate it; else ``SO_PEERCRED``). Its pid
namespace is read from ``/proc/<pid>/ns/pid``. Nothing the caller sends is consulted.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from dataclasses import dataclass

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERPIDFD = 77  # Linux >= 6.5


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    pid_ns: tuple[int, int]  # (st_dev, st_ino) of /proc/<pid>/ns/pid


def namespace_of(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/pid")
    return (st.st_dev, st.st_ino)


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: distinguishes a process from a later one with the same pid."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def _pid_of_pidfd(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    raise OSError("no Pid in pidfd fdinfo")


def _alive(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return not p.poll(0)  # a pidfd becomes readable when the process exits


def identify(sock: socket.socket) -> Peer | None:
    """The peer process and its pid namespace; None if it is gone."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i")))
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0:
            pid = _pid_of_pidfd(pidfd)
            if pid <= 0:
                return None
        ns = namespace_of(pid)
        if pidfd >= 0 and not _alive(pidfd):
            return None  # exited: its pid (and what we read under it) may already be someone else's
    except (OSError, ValueError):
        return None
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return Peer(pid, uid, gid, ns)
