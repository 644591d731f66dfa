"""Unpacking OCI image layers into a directory, safely, inside the enclave.

A layer is untrusted input even after its digest checks out (the tenant's image may embed
anything a base image had). So every entry is placed relative to an open directory of the target
and never through a path: ``..`` and absolute names are refused, every parent is resolved inside
the target (a symlink in a parent is followed as a chroot would follow it, never out of the
target), files are created with ``O_NOFOLLOW | O_EXCL``, hard links must name a file inside the
target. Whiteouts (``.wh.NAME``, ``.wh..wh..opq``) apply to the lower layers as the OCI image spec
says. Device nodes are skipped (the enclave-private tmpfs is ``nodev``); set-id bits are dropped
(it is ``nosuid``). Caps: :class:`UnpackLimits`.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from inclavare.errors import InclavareError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINK_HOPS = 40
COPY_CHUNK = 1 << 20


class UnpackError(InclavareError):
    """A layer cannot be unpacked safely (traversal, a cap, a malformed archive)."""


class _Mounted(Exception):
    """The entry lies on a mount inside the target: skipped."""


@dataclass
class UnpackLimits:
    """Caps over the whole image (every layer counts against the same budget)."""

    max_bytes: int = 4 << 30  # file contents written
    max_entries: int = 500_000
    max_path: int = 4096
    bytes_used: int = 0
    entries_used: int = 0
    owners: bool = field(default_factory=lambda: os.geteuid() == 0)  # chown only as root


def _parts(name: str, limits: UnpackLimits) -> list[str]:
    if len(name) > limits.max_path or "\0" in name:
        raise UnpackError(f"layer entry name too long or malformed ({name[:80]!r})")
    if name.startswith("/"):
        raise UnpackError(f"layer entry {name[:80]!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"layer entry {name[:80]!r} climbs out of the image ('..')")
    return parts


def _open_dir(root_fd: int, stack: list[str]) -> int:
    fd = os.dup(root_fd)
    try:
        for name in stack:
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        raise
    return fd


def _resolve(root_fd: int, parts: list[str], create: bool, dev: int) -> list[str]:
    """The in-root path of directory ``parts``: symlinks followed inside the root only; a
    component on another file system (``dev``: the target's) raises :class:`_Mounted`."""
    stack: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if stack:
                stack.pop()
            continue
        fd = _open_dir(root_fd, stack)
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise UnpackError(f"{'/'.join(parts)[:120]} does not exist in the image") from None
                os.mkdir(name, 0o755, dir_fd=fd)
                stack.append(name)
                continue
            if st.st_dev != dev:
                raise _Mounted
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnpackError(f"too many symbolic links under {'/'.join(parts)[:120]}")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    stack = []
                pending = target.split("/") + pending
            elif stat.S_ISDIR(st.st_mode):
                stack.append(name)
            else:
                raise UnpackError(f"{'/'.join(stack + [name])[:120]} is not a directory in the image")
        finally:
            os.close(fd)
    return stack


def _remove(dir_fd: int, name: str, dev: int) -> None:
    """Remove ``name`` (a tree too) under ``dir_fd``, never following a symlink nor entering a
    mount (a directory holding one stays, with the mount)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if st.st_dev != dev:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for child in os.listdir(sub):
                _remove(sub, child, dev)
        finally:
            os.close(sub)
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
                raise
    else:
        os.unlink(name, dir_fd=dir_fd)


@contextmanager
def _parent(root_fd: int, parts: list[str], dev: int) -> Iterator[tuple[int, str, str]]:
    """An open directory of the entry's parent, the entry's name and its in-root path; raises
    :class:`_Mounted` when the entry itself is a mount point."""
    stack = _resolve(root_fd, parts[:-1], create=True, dev=dev)
    fd = _open_dir(root_fd, stack)
    try:
        try:
            if os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_dev != dev:
                raise _Mounted
        except FileNotFoundError:
            pass
        yield fd, parts[-1], "/".join([*stack, parts[-1]])
    finally:
        os.close(fd)


def _copy(src: IO[bytes], dst_fd: int, size: int) -> None:
    left = size
    while left > 0:
        chunk = src.read(min(COPY_CHUNK, left))
        if not chunk:
            raise UnpackError("layer archive ends inside a file")
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]
        left -= len(chunk)


def _own(fd: int, name: str, member: tarfile.TarInfo, limits: UnpackLimits) -> None:
    if limits.owners:
        try:
            os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        except OSError:
            pass


def unpack_layer(stream: BinaryIO, root: str, limits: UnpackLimits) -> None:
    """Apply one (uncompressed or gzip) tar layer on top of ``root``."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    created: set[str] = set()  # in-root paths this layer wrote (an opaque whiteout keeps them)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            dev = os.fstat(root_fd).st_dev
            for member in archive:
                try:
                    _entry(archive, member, root_fd, created, limits, dev)
                except _Mounted:
                    continue
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise UnpackError("the enclave's image storage is full (the tmpfs size cap)") from None
        raise UnpackError(f"layer archive is malformed or cannot be written: {exc}") from None
    finally:
        os.close(root_fd)


def _entry(archive: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, created: set[str],
           limits: UnpackLimits, dev: int) -> None:
    limits.entries_used += 1
    if limits.entries_used > limits.max_entries:
        raise UnpackError(f"the image has more than {limits.max_entries} entries")
    parts = _parts(member.name, limits)
    if not parts:
        return  # the root itself ("./")
    base = parts[-1]
    if base == OPAQUE:
        stack = _resolve(root_fd, parts[:-1], create=True, dev=dev)
        fd = _open_dir(root_fd, stack)
        try:
            for child in os.listdir(fd):
                if "/".join([*stack, child]) not in created:
                    _remove(fd, child, dev)
        finally:
            os.close(fd)
        return
    if base.startswith(WHITEOUT):
        if base[len(WHITEOUT):] in ("", ".", ".."):
            raise UnpackError(f"layer entry {member.name[:80]!r} is a malformed whiteout")
        with _parent(root_fd, [*parts[:-1], base[len(WHITEOUT):]], dev) as (fd, name, _):
            _remove(fd, name, dev)
        return
    with _parent(root_fd, parts, dev) as (fd, name, path):
        mode = member.mode & 0o1777  # set-id bits dropped: the storage is nosuid anyway
        if member.isdir():
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    _remove(fd, name, dev)
                    os.mkdir(name, mode | 0o700, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, mode | 0o700, dir_fd=fd)
            os.chmod(name, mode | (0o700 if not limits.owners else 0), dir_fd=fd, follow_symlinks=False)
            _own(fd, name, member, limits)
            created.add(path)
            return
        _remove(fd, name, dev)
        created.add(path)
        if member.isreg():
            limits.bytes_used += member.size
            if limits.bytes_used > limits.max_bytes:
                raise UnpackError(f"the image unpacks to more than {limits.max_bytes >> 20} MiB")
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            try:
                src = archive.extractfile(member)
                assert src is not None
                _copy(src, out, member.size)
                os.fchmod(out, mode)
            finally:
                os.close(out)
            _own(fd, name, member, limits)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=fd)
            _own(fd, name, member, limits)
        elif member.islnk():
            target = _parts(member.linkname, limits)
            if not target:
                raise UnpackError(f"hard link {member.name[:80]!r} names the image root")
            stack = _resolve(root_fd, target[:-1], create=False, dev=dev)
            src_fd = _open_dir(root_fd, stack)
            try:
                st = os.stat(target[-1], dir_fd=src_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise UnpackError(f"hard link {member.name[:80]!r} names a directory")
                os.link(target[-1], name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnpackError(f"hard link {member.name[:80]!r} names {member.linkname[:80]!r}, "
                                  "which the image does not hold") from None
            finally:
                os.close(src_fd)
        elif member.isfifo():
            os.mkfifo(name, mode, dir_fd=fd)
            _own(fd, name, member, limits)
        # character and block devices: skipped (nodev storage; the container's /dev is runc's)


def ensure_dir(root: str, path: str) -> str:
    """Directory ``path`` of the tree at ``root`` (made if missing), resolved inside the root as
    a chroot would see it; returns its real location on this side."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        stack = _resolve(root_fd, [p for p in path.split("/") if p], create=True, dev=os.fstat(root_fd).st_dev)
    except _Mounted:
        raise UnpackError(f"{path} lies on a mount inside the image") from None
    finally:
        os.close(root_fd)
    return os.path.join(root, *stack)
