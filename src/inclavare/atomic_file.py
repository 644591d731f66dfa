"""Small files replaced atomically: write a temporary sibling, rename it over the target.

A reader sees the old content or the new, never half of either, even if the writer is killed.
With ``durable=True`` (the default) the data and the directory entry are also fsynced, so an
acknowledged write survives a power loss; state that dies with the host anyway (registrations
of running containers under /run) skips the fsyncs. ``locked`` serialises read-modify-write
cycles between processes.
"""

from __future__ import annotations

import fcntl
import os


def write_atomic(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class locked:  # noqa: N801 - used like a function: ``with locked(path):``
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block."""

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self.fd = -1

    def __enter__(self) -> None:
        os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
