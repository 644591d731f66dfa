"""configfs-tsm inside simulated TDX/SNP enclave containers: the platform's report ABI over FUSE.

On a TDX or SEV-SNP guest the kernel offers ``/sys/kernel/config/tsm/report``: ``mkdir`` an entry,
write ``inblob`` (≤ 64 bytes of report data), read ``outblob`` (the TD quote / the SNP report)
and ``auxblob`` (SNP: the certificate table), with ``provider``, ``generation``, ``privlevel``
(and ``privlevel_floor`` on SNP). The node agent plays that platform for simulated TDX/SNP
containers, so :mod:`inclavare.tee.tsm` — the attester written for the kernel — runs unchanged
inside them: one FUSE file system per agent (pyfuse3: one mount per process) at
``<run>/agent/tsm``, one directory per registration (``<key>/``), which rune bind-mounts at the
kernel's path in that container only (see :mod:`inclavare.runtime.enclave_side`).

Kernel semantics kept: an entry's files appear on ``mkdir``; a written ``inblob`` is committed
when the file is closed (configfs buffers binary attributes) and bumps ``generation``, as does a
``privlevel`` write; ``outblob`` is made on the first read after a change and cached; a write
past 64 bytes fails with ``EFBIG`` (configfs's ``cb_max_size`` check), a bad ``privlevel`` with
``EINVAL``. Every operation under a registration's directory is admitted like the channel
(:meth:`Channels.admit`: the caller's pid, mount and cgroup namespaces must be the container
init's), else ``EACCES``; quotes are always for that directory's registration.

Bounds: ``MAX_ENTRIES`` report entries per container (``ENOSPC`` beyond), ``MAX_TASKS``
concurrent FUSE requests, ``QUOTE_WORKERS`` quotes at a time, each abandoned after
``QUOTE_TIMEOUT`` seconds (``ETIMEDOUT``). The file system lives as long as the agent: after an
agent restart the containers that were running keep a dead mount (``ENOTCONN``) — their channel
socket comes back, their configfs-tsm does not; containers created afterwards get the new one.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inclavare.errors import AgentError, InclavareError
from inclavare.services.peer import Peer, namespaces_of
from inclavare.services.unix_http import HttpError
from inclavare.tee.registry import SNP, TDX
from inclavare.tee.tsm import CERT_GUIDS, PROVIDERS

if TYPE_CHECKING:
    from inclavare.services.agent.channel import Channels
    from inclavare.services.agent.registry import Registration

log = logging.getLogger("inclavare.agent")

MAX_INBLOB = 64  # TSM_INBLOB_MAX
MAX_PRIVLEVEL = 3  # TSM_PRIVLEVEL_MAX
MAX_ENTRIES = 16  # report entries one container may hold at once
MAX_TASKS = 16  # FUSE requests served concurrently
QUOTE_WORKERS = 2  # quotes signed at once (threads)
QUOTE_TIMEOUT = 10.0
PROVIDER_OF = {tee.name: name for name, tee in PROVIDERS.items()}
GUID_OF = {kind: guid for guid, kind in CERT_GUIDS.items()}
MNT_DETACH = 2
_ACTIVE: TsmServer | None = None


class TsmFsError(AgentError):
    """The configfs-tsm file system could not be served."""


def _fail(code: int) -> Exception:
    import pyfuse3

    return pyfuse3.FUSEError(code)


@dataclass
class Entry:
    """One ``report/<name>`` directory: configfs's ``struct tsm_report`` state."""

    name: bytes
    inode: int
    files: dict[bytes, int] = field(default_factory=dict)
    inblob: bytes = b""
    privlevel: int = 0
    write_generation: int = 0
    read_generation: int = -1
    outblob: bytes = b""
    auxblob: bytes = b""


@dataclass
class Node:
    kind: str  # "report" (a registration's directory), "entry", or a file name
    key: str
    entry: Entry | None = None


def snp_cert_table(certs: list[tuple[str, bytes]]) -> bytes:
    """The SNP certificate table ``auxblob`` carries: ``guid ‖ offset u32 ‖ length u32`` per
    certificate (GUIDs in EFI byte order, offsets from the table's start), an all-zero entry,
    then the DER certificates."""
    offset = 24 * (len(certs) + 1)
    head, body = b"", b""
    for kind, der in certs:
        head += struct.pack("<16sII", GUID_OF[kind].bytes_le, offset + len(body), len(der))
        body += der
    return head + bytes(24) + body


class TsmFs:
    """The FUSE operations (pyfuse3) over every registration's report directory."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self._lock = threading.Lock()
        self._next = 2  # inode 1 is the root
        self._nodes: dict[int, Node] = {}
        self._reports: dict[str, int] = {}  # registration key -> its directory's inode
        self._entries: dict[str, dict[bytes, Entry]] = {}
        self._handles: dict[int, tuple[int, bytearray | None]] = {}  # fh -> (inode, pending inblob)
        self._next_fh = 1
        self._limiter: Any = None
        self.started = int(time.time() * 1e9)

    # -- state (any thread) ----------------------------------------------------------------

    def _inode(self, node: Node) -> int:
        ino = self._next
        self._next += 1
        self._nodes[ino] = node
        return ino

    def _registration(self, key: str) -> Registration | None:
        reg = self.channels.registry.by_key(key)
        return reg if reg is not None and reg.simulated_tee in PROVIDER_OF else None

    def forget_registration(self, key: str) -> None:
        """Drop a deregistered container's directory and entries (its processes are gone)."""
        with self._lock:
            ino = self._reports.pop(key, None)
            if ino is not None:
                self._nodes.pop(ino, None)
            for entry in self._entries.pop(key, {}).values():
                self._drop(entry)

    def _drop(self, entry: Entry) -> None:
        self._nodes.pop(entry.inode, None)
        for ino in entry.files.values():
            self._nodes.pop(ino, None)

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, key: str, ctx: Any) -> Registration:
        """The registration, if the caller is one of its container's processes (else EACCES)."""
        reg = self._registration(key)
        if reg is None:
            raise _fail(errno.ENOENT)
        peer = Peer(ctx.pid, ctx.uid, ctx.gid, namespaces_of(ctx.pid) if ctx.pid > 0 else None)
        try:
            self.channels.admit(key, peer)
        except HttpError as exc:
            log.debug("configfs-tsm: refused pid %d for container %s: %s", ctx.pid, reg.id, exc.detail)
            raise _fail(errno.EACCES) from None
        return reg

    def _node(self, inode: int) -> Node:
        node = self._nodes.get(inode)
        if node is None:
            raise _fail(errno.ENOENT)
        return node

    # -- attributes ----------------------------------------------------------------------------

    def _attr(self, inode: int) -> Any:
        import pyfuse3

        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_uid = attr.st_gid = 0
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.started
        attr.entry_timeout = attr.attr_timeout = 0  # nothing cached: entries come and go
        attr.st_blksize = 4096
        node = None if inode == pyfuse3.ROOT_INODE else self._node(inode)
        if node is None or node.kind in ("report", "entry"):
            attr.st_mode = stat.S_IFDIR | (0o711 if node is None else 0o755)
            attr.st_nlink = 2
            return attr
        attr.st_mode = stat.S_IFREG | {"inblob": 0o200, "privlevel": 0o644}.get(node.kind, 0o444)
        attr.st_nlink = 1
        attr.st_size = 4096 if node.kind not in ("inblob",) else 0  # configfs reports a page
        return attr

    # -- the attribute files ---------------------------------------------------------------------

    def _files(self, reg: Registration) -> list[bytes]:
        names = [b"inblob", b"outblob", b"provider", b"generation", b"privlevel"]
        if reg.simulated_tee == SNP.name:
            names += [b"auxblob", b"privlevel_floor"]
        return names

    def _text(self, reg: Registration, entry: Entry, kind: str) -> bytes:
        if kind == "provider":
            return f"{PROVIDER_OF[reg.simulated_tee]}\n".encode()
        if kind == "generation":
            return f"{entry.write_generation}\n".encode()
        if kind == "privlevel":
            return f"{entry.privlevel}\n".encode()
        if kind == "privlevel_floor":
            return b"0\n"
        raise _fail(errno.EINVAL)

    def _report(self, reg: Registration, inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        """What the TDX module / SNP firmware returns for ``inblob`` (runs in a worker thread)."""
        attester: Any = self.channels.quoter.attester(reg)
        if reg.simulated_tee == TDX.name:
            return attester.quote(inblob), b""
        from cryptography.hazmat.primitives.serialization import Encoding

        from inclavare.tee.sim_snp import SimSnpAttester

        snp = SimSnpAttester(attester.authority, attester.measurement, vmpl=privlevel)
        authority = snp.authority
        certs = [("VCEK", authority.vcek()[1].public_bytes(Encoding.DER)),
                 ("ASK", authority.ask.public_bytes(Encoding.DER)), ("ARK", authority.ark.public_bytes(Encoding.DER))]
        return snp.report(inblob), snp_cert_table(certs)

    async def _outblob(self, reg: Registration, entry: Entry) -> None:
        import trio

        if entry.read_generation == entry.write_generation:
            return
        generation, inblob, privlevel = entry.write_generation, entry.inblob, entry.privlevel
        result: tuple[bytes, bytes] | None = None
        with trio.move_on_after(QUOTE_TIMEOUT):
            try:
                result = await trio.to_thread.run_sync(self._report, reg, inblob, privlevel,
                                                       limiter=self._limiter, abandon_on_cancel=True)
            except InclavareError as exc:
                log.warning("configfs-tsm: no report for container %s: %s", reg.id, exc)
                raise _fail(errno.EIO) from None
        if result is None:
            raise _fail(errno.ETIMEDOUT)
        entry.outblob, entry.auxblob = result
        entry.read_generation = generation

    # -- pyfuse3 operations (the trio thread) -------------------------------------------------

    def operations(self) -> Any:
        import pyfuse3
        import trio

        fs = self
        self._limiter = trio.CapacityLimiter(QUOTE_WORKERS)

        class Ops(pyfuse3.Operations):
            async def getattr(self, inode: int, ctx: Any = None) -> Any:
                return fs._attr(inode)

            async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
                return fs._attr(inode)  # O_TRUNC on open: configfs files have no size to set

            async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
                return fs._attr(fs.lookup(parent, name, ctx))

            async def opendir(self, inode: int, ctx: Any) -> int:
                node = fs._nodes.get(inode)
                if node is None:
                    raise _fail(errno.EACCES)  # the root lists nothing to anyone
                fs._admit(node.key, ctx)
                return inode

            async def readdir(self, fh: int, start_id: int, token: Any) -> None:
                for i, (name, ino) in enumerate(fs.listing(fh)):
                    if i < start_id:
                        continue
                    if not pyfuse3.readdir_reply(token, name, fs._attr(ino), i + 1):
                        return

            async def releasedir(self, fh: int) -> None:
                return None

            async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
                return fs._attr(fs.mkdir(parent, name, ctx))

            async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
                fs.rmdir(parent, name, ctx)

            async def open(self, inode: int, flags: int, ctx: Any) -> Any:
                return pyfuse3.FileInfo(fh=fs.open(inode, flags, ctx), direct_io=True, keep_cache=False)

            async def read(self, fh: int, off: int, size: int) -> bytes:
                return (await fs.read(fh))[off:off + size]

            async def write(self, fh: int, off: int, buf: bytes) -> int:
                return fs.write(fh, off, buf)

            async def flush(self, fh: int) -> None:
                fs.commit(fh)

            async def release(self, fh: int) -> None:
                fs.commit(fh)
                with fs._lock:
                    fs._handles.pop(fh, None)

        return Ops()

    def lookup(self, parent: int, name: bytes, ctx: Any) -> int:
        import pyfuse3

        with self._lock:
            if parent == pyfuse3.ROOT_INODE:  # runc resolves the bind source: no admission here
                key = name.decode("ascii", "replace")
                if self._registration(key) is None:
                    raise _fail(errno.ENOENT)
                if key not in self._reports:
                    self._reports[key] = self._inode(Node("report", key))
                return self._reports[key]
        node = self._node(parent)
        self._admit(node.key, ctx)
        with self._lock:
            if node.kind == "report":
                entry = self._entries.get(node.key, {}).get(name)
                if entry is None:
                    raise _fail(errno.ENOENT)
                return entry.inode
            if node.kind == "entry" and node.entry is not None and name in node.entry.files:
                return node.entry.files[name]
        raise _fail(errno.ENOENT)

    def listing(self, inode: int) -> list[tuple[bytes, int]]:
        with self._lock:
            node = self._node(inode)
            if node.kind == "report":
                return sorted((e.name, e.inode) for e in self._entries.get(node.key, {}).values())
            if node.kind == "entry" and node.entry is not None:
                return sorted(node.entry.files.items())
        return []

    def mkdir(self, parent: int, name: bytes, ctx: Any) -> int:
        node = self._node(parent)
        if node.kind != "report":
            raise _fail(errno.EPERM)  # configfs: entries hold attributes, not directories
        reg = self._admit(node.key, ctx)
        with self._lock:
            entries = self._entries.setdefault(node.key, {})
            if name in entries:
                raise _fail(errno.EEXIST)
            if len(entries) >= MAX_ENTRIES:
                raise _fail(errno.ENOSPC)
            entry = Entry(name, 0)
            entry.inode = self._inode(Node("entry", node.key, entry))
            for file in self._files(reg):
                entry.files[file] = self._inode(Node(file.decode(), node.key, entry))
            entries[name] = entry
            return entry.inode

    def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        node = self._node(parent)
        if node.kind != "report":
            raise _fail(errno.ENOTDIR)
        self._admit(node.key, ctx)
        with self._lock:
            entry = self._entries.get(node.key, {}).pop(name, None)
            if entry is None:
                raise _fail(errno.ENOENT)
            self._drop(entry)

    def open(self, inode: int, flags: int, ctx: Any) -> int:
        node = self._node(inode)
        if node.entry is None:
            raise _fail(errno.EISDIR)
        self._admit(node.key, ctx)
        mode = flags & os.O_ACCMODE
        writable = {"inblob", "privlevel"}
        readable = {"outblob", "auxblob", "provider", "generation", "privlevel", "privlevel_floor"}
        if (mode != os.O_RDONLY and node.kind not in writable) or (mode != os.O_WRONLY and node.kind not in readable):
            raise _fail(errno.EACCES)
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = (inode, bytearray() if mode != os.O_RDONLY else None)
        return fh

    def _handle(self, fh: int) -> tuple[Node, bytearray | None]:
        with self._lock:
            inode, pending = self._handles.get(fh, (0, None))
            node = self._nodes.get(inode)
        if node is None or node.entry is None:
            raise _fail(errno.ENOENT)  # the entry was removed (or the container deregistered)
        return node, pending

    async def read(self, fh: int) -> bytes:
        node, _ = self._handle(fh)
        reg = self._registration(node.key)
        if reg is None or node.entry is None:
            raise _fail(errno.ENOENT)
        if node.kind in ("outblob", "auxblob"):
            await self._outblob(reg, node.entry)
            return node.entry.outblob if node.kind == "outblob" else node.entry.auxblob
        return self._text(reg, node.entry, node.kind)

    def write(self, fh: int, off: int, buf: bytes) -> int:
        node, pending = self._handle(fh)
        if pending is None or node.entry is None:
            raise _fail(errno.EBADF)
        if node.kind == "privlevel":  # a text attribute: configfs stores it at write time
            self._store_privlevel(node.entry, buf)
            return len(buf)
        if off + len(buf) > MAX_INBLOB:
            raise _fail(errno.EFBIG)
        with self._lock:
            if len(pending) < off:
                pending.extend(bytes(off - len(pending)))
            pending[off:off + len(buf)] = buf
        return len(buf)

    def _store_privlevel(self, entry: Entry, buf: bytes) -> None:
        try:
            level = int(buf.decode("ascii").strip())
        except ValueError:
            raise _fail(errno.EINVAL) from None
        if not 0 <= level <= MAX_PRIVLEVEL:
            raise _fail(errno.EINVAL)
        with self._lock:
            entry.privlevel = level
            entry.write_generation += 1

    def commit(self, fh: int) -> None:
        """A closed ``inblob`` takes effect (configfs stores binary attributes at release)."""
        with self._lock:
            inode, pending = self._handles.get(fh, (0, None))
            node = self._nodes.get(inode)
            if not pending or node is None or node.entry is None or node.kind != "inblob":
                return
            node.entry.inblob = bytes(pending)
            node.entry.write_generation += 1
            pending.clear()


class TsmServer:
    """The agent's configfs-tsm mount: pyfuse3's loop in its own thread, mounted on first use."""

    def __init__(self, channels: Channels, mountpoint: str) -> None:
        self.fs = TsmFs(channels)
        self.mountpoint = mountpoint
        self._thread: threading.Thread | None = None
        self._token: Any = None
        self._ready = threading.Event()
        self._error: str = ""
        self._lock = threading.Lock()

    def directory(self, reg: Registration) -> str:
        """The registration's report directory (bind source), the file system mounted if needed."""
        self.ensure()
        return os.path.join(self.mountpoint, reg.key)

    def ensure(self) -> None:
        with self._lock:
            if self._thread is None:
                self._start()
            if self._error:
                raise TsmFsError(f"configfs-tsm for enclave containers is unavailable: {self._error}")

    def _start(self) -> None:
        try:
            import pyfuse3
        except ImportError:
            self._error = "pyfuse3 is not installed (pip install 'inclavare[tsm]'; Debian's libfuse3-dev)"
            self._thread = threading.current_thread()
            return
        global _ACTIVE
        if _ACTIVE is not None:  # pyfuse3 keeps one session per process
            self._error = "another node agent in this process serves it"
            self._thread = threading.current_thread()
            return
        _ACTIVE = self
        detach(self.mountpoint)  # a mount left by an agent that died
        os.makedirs(self.mountpoint, mode=0o700, exist_ok=True)
        options = {"fsname=inclavare-tsm", "subtype=configfs-tsm", "allow_other", "nosuid", "nodev", "noexec"}
        try:
            pyfuse3.init(self.fs.operations(), self.mountpoint, options)
        except RuntimeError as exc:
            _ACTIVE = None
            self._error = f"cannot mount FUSE at {self.mountpoint}: {exc}"
            self._thread = threading.current_thread()
            return
        self._thread = threading.Thread(target=self._run, name="configfs-tsm", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            self._error = "the FUSE loop did not start"

    def _run(self) -> None:
        import pyfuse3
        import trio

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await pyfuse3.main(min_tasks=1, max_tasks=MAX_TASKS)

        try:
            trio.run(main)
        except Exception:
            log.exception("configfs-tsm: the FUSE loop failed")
        finally:
            global _ACTIVE
            pyfuse3.close(unmount=True)
            _ACTIVE = None

    def forget(self, key: str) -> None:
        self.fs.forget_registration(key)

    def detach_stale(self) -> None:
        """Detach a mount an agent that died left at the mount point (dead: ENOTCONN), at this
        agent's start rather than at its first sim TDX/SNP container, which may never come."""
        with self._lock:
            if self._thread is None:
                detach(self.mountpoint)

    def stop(self) -> None:
        thread, token = self._thread, self._token
        if thread is None or token is None or thread is threading.current_thread():
            return
        import pyfuse3
        import trio

        try:
            trio.from_thread.run_sync(pyfuse3.terminate, trio_token=token)
        except (trio.RunFinishedError, RuntimeError):
            pass
        thread.join(5)


def detach(path: str) -> None:
    """Lazily unmount ``path`` if something is mounted there (a stale FUSE mount: ENOTCONN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), MNT_DETACH)
