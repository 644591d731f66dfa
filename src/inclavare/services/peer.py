"""Who is on the other end of a unix socket, and which namespaces it lives in — kernel facts only.

Both agents decide whom to answer from these facts, never from anything a caller sends:

* the node agent answers a container's channel only for processes whose pid, mount and cgroup
  namespaces are those of that container's init process;
* the enclave agent answers only processes whose namespaces are its own.

The peer is pinned by ``SO_PEERPIDFD`` (Linux >= 6.5): a pidfd of the process that connected, so a
recycled pid cannot stand in for it. Its namespaces are read through the pidfd itself
(``PIDFD_GET_*_NAMESPACE`` ioctls, Linux >= 6.11), which is race-free; on older kernels they are
read from ``/proc/<pid>/ns`` and the pidfd is checked to be still alive afterwards (a process
that exited may have handed its pid to another). Reading another process's namespaces needs
ptrace read access: a peer we may not inspect is treated as unidentified.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
from dataclasses import dataclass

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERPIDFD = 77
# include/uapi/linux/pidfd.h: _IO(PIDFS_IOCTL_MAGIC 0xFF, nr)
_PIDFD_GET_NS = {"cgroup": 0xFF01, "mnt": 0xFF03, "pid": 0xFF05}
NS_KINDS = ("pid", "mnt", "cgroup")

NsId = tuple[int, int]  # (st_dev, st_ino) of a namespace file


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The namespaces that decide whether two processes are the same container."""

    pid: NsId
    mnt: NsId
    cgroup: NsId

    def differing(self, other: Namespaces) -> list[str]:
        """Names of the namespaces in which ``other`` differs (empty: same container)."""
        return [k for k in NS_KINDS if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int  # as seen from this process's pid namespace (0: not visible from here)
    uid: int
    gid: int
    ns: Namespaces | None  # None: the process could not be inspected (gone, or no permission)


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: tells a process from a later one with the same pid."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])


def _alive(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return not p.poll(0)  # a pidfd turns readable when its process exits


def _ns_by_ioctl(pidfd: int) -> Namespaces | None:
    found: dict[str, NsId] = {}
    for kind in NS_KINDS:
        try:
            fd = fcntl.ioctl(pidfd, _PIDFD_GET_NS[kind], 0)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        found[kind] = (st.st_dev, st.st_ino)
    return Namespaces(**found)


def _ns_by_proc(pid: int) -> Namespaces:
    found = {}
    for kind in NS_KINDS:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
        found[kind] = (st.st_dev, st.st_ino)
    return Namespaces(**found)


def namespaces_of_pidfd(pidfd: int, pid: int) -> Namespaces | None:
    """The namespaces of the process ``pidfd`` pins (``pid`` is its pid here, for old kernels)."""
    ns = _ns_by_ioctl(pidfd)
    if ns is not None:
        return ns
    if pid <= 0:
        return None
    try:
        ns = _ns_by_proc(pid)
    except OSError:
        return None
    return ns if _alive(pidfd) else None


def namespaces_of(pid: int, expected_start: int | None = None) -> Namespaces | None:
    """The namespaces of process ``pid``; with ``expected_start``, only if it is still the
    process that started then (else None)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if expected_start is not None:
            try:
                if start_time(pid) != expected_start:
                    return None  # the pid now names another process; the pidfd pins that one
            except (OSError, ValueError):
                return None
        return namespaces_of_pidfd(pidfd, pid)
    finally:
        os.close(pidfd)


def own_namespaces() -> Namespaces:
    return _ns_by_proc(os.getpid())


def _pid_of_pidfd(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    return 0


def credentials(sock: socket.socket) -> Peer:
    """Who connected ``sock`` (pid, uid, gid), not where it runs (``ns`` is None): enough for a
    socket that admits by user alone, and one ``getsockopt`` instead of a pidfd and a look at
    each namespace (the node agent's control socket: rune calls it at every create)."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i")))
    return Peer(pid, uid, gid, None)


def identify(sock: socket.socket) -> Peer | None:
    """The process that connected ``sock`` and its namespaces; None when it is already gone.

    ``Peer.pid`` is 0 when the peer lives in a pid namespace this process cannot see (the host,
    seen from a container; another container)."""
    who = credentials(sock)
    pid, uid, gid = who.pid, who.uid, who.gid
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = -1
    if pidfd < 0:
        # kernels before 6.5: the pid may be recycled once the peer exits; read, then re-check
        if pid <= 0:
            return who
        return Peer(pid, uid, gid, namespaces_of(pid))
    try:
        try:
            pid = _pid_of_pidfd(pidfd)
        except (OSError, ValueError):
            pid = 0
        if pid < 0:
            return None  # the peer has exited
        return Peer(pid, uid, gid, namespaces_of_pidfd(pidfd, pid))
    finally:
        os.close(pidfd)
