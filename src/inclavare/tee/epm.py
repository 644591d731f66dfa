"""The enclave pool (epm): prepared enclave state cached by content, so warm starts skip work.

Upstream's epm kept initialised SGX enclaves and Occlum bundle caches keyed by digests. For the
simulated TEE the expensive preparation is measuring the root filesystem; the pool keeps, per
*scan signature* (the ordered list of trusted paths with their stat identity), the resulting
files digest and each file's content digest.

Stat identity = (inode, size, mtime ns, ctime ns). ``ctime`` cannot be set from user space, so any
write to a file changes it; a file that changes while it is being hashed is detected and not
cached. Symlinks are not ``lstat``-ed (most of a busybox image's entries): a symlink's target
cannot change in place, and replacing one changes its directory's ctime, which the signature
holds. A signature hit therefore means no trusted byte changed; a miss re-hashes (reusing the
content digests of files whose identity is already known from any other entry of the pool).
Entries are written atomically; a damaged entry is ignored and recomputed.
"""

from __future__ import annotations

import os
import time
from _sha256 import sha256 as small_sha256  # type: ignore[import-not-found]

from inclavare import fastjson
from inclavare.atomic_file import write_atomic
from inclavare.errors import ConfigError
from inclavare.immutable import Immutable
from inclavare.tee.measurement import files_digest, racy, rescan, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from inclavare.tee.measurement import FileEntry

DEFAULT_EPM_DIR = "/var/lib/inclavare/epm"
FORMAT = 1


class PoolEntry(Immutable):
    __slots__ = ("key", "rootfs", "files", "total_bytes", "files_digest", "created", "last_used")
    key: str
    rootfs: str
    files: int
    total_bytes: int
    files_digest: str
    created: float
    last_used: float

    def __init__(self, key: str, rootfs: str, files: int, total_bytes: int, files_digest: str,
                 created: float, last_used: float) -> None:
        self._set(key=key, rootfs=rootfs, files=files, total_bytes=total_bytes, files_digest=files_digest,
                  created=created, last_used=last_used)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def signature(entries: Sequence[FileEntry]) -> str:
    """Digest of every trusted path with its kind, mode and stat identity (a symlink's inode only,
    its directory's identity covers its replacement; see :func:`inclavare.tee.measurement.scan`)."""
    text = "".join([f"{e[0]}\0{e[1]}\0{e[2]:o}\0{e[4]}:{e[3]}:{e[5]}:{e[6]}\n" for e in entries])
    return str(small_sha256(b"epm-signature-v2\0" + text.encode("utf-8", "surrogateescape")).hexdigest())


_POOLS: dict[str, EnclavePool] = {}


def pool_for(directory: str) -> EnclavePool:
    """The process-wide pool object for ``directory`` (its memo survives across containers)."""
    pool = _POOLS.get(directory)
    if pool is None:
        pool = _POOLS.setdefault(directory, EnclavePool(directory))
    return pool


class EnclavePool:
    """``read_only``: use what the pool holds, never write to it (for commands that only report)."""

    def __init__(self, directory: str = DEFAULT_EPM_DIR, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        self.entries_dir = os.path.join(directory, "entries")
        self._memo: dict[str, str] = {}  # signature -> files digest, for long-lived processes (the agent)
        self._last: dict[str, tuple[Sequence[FileEntry], str]] = {}  # rootfs -> its last scan and signature
        # (rootfs, trusted, excluded) -> its last scan and when that scan started, for rescan
        self._scans: dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[list[FileEntry], int]] = {}

    def _path(self, key: str) -> str:
        return os.path.join(self.entries_dir, key + ".json")

    def _load(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(key), "rb") as f:
                doc = fastjson.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        return doc

    def scan(self, rootfs: str, trusted: Sequence[str], excluded: Sequence[str]) -> list[FileEntry]:
        """:func:`~inclavare.tee.measurement.scan`, from this process's last scan of the same paths
        when no directory in it changed (:func:`~inclavare.tee.measurement.rescan`)."""
        key = (rootfs, tuple(trusted), tuple(excluded))
        previous = self._scans.get(key)
        if previous is not None:
            entries = rescan(rootfs, *previous)
            if entries is previous[0]:
                return entries
            if entries is not None:  # files changed, no directory: the listing is the one read then
                self._remember_scan(key, entries, previous[1])
                return entries
        started = time.time_ns()
        entries = scan(rootfs, trusted, excluded)
        self._remember_scan(key, entries, started)
        return entries

    def _remember_scan(self, key: tuple[str, tuple[str, ...], tuple[str, ...]], entries: list[FileEntry],
                       started: int) -> None:
        if len(self._scans) >= 64:
            self._scans.pop(next(iter(self._scans), key), None)
        self._scans[key] = (entries, started)

    def files_digest(self, rootfs: str, entries: Sequence[FileEntry]) -> tuple[str, bool]:
        """The files digest of ``entries``; (digest, True) when served from the pool."""
        last = self._last.get(rootfs)
        if last is not None and last[0] == entries:  # equal scans have equal signatures: skip formatting
            key = last[1]
        else:
            key = signature(entries)
            if len(self._last) >= 64:
                del self._last[next(iter(self._last))]
            self._last[rootfs] = (entries, key)
        memo = self._memo.get(key)
        if memo is not None:
            try:
                if self.read_only:
                    os.stat(self._path(key))  # still there (`epm rm` may have removed it)
                else:
                    os.utime(self._path(key))  # last use; fails if `epm rm` removed the entry
                return memo, True
            except OSError:
                del self._memo[key]
        doc = self._load(key)
        if doc is not None and isinstance(doc.get("files_digest"), str):
            if not self.read_only:
                try:
                    os.utime(self._path(key))  # last use, for `epm ls` and eviction
                except OSError:
                    pass
            self._memo[key] = str(doc["files_digest"])
            return str(doc["files_digest"]), True
        started = time.time_ns()
        digest, digests, _ = files_digest(rootfs, entries, self._known_digests())
        if self.read_only or any(e[1] == "f" and racy(e[6], started) for e in entries):
            return digest, False  # a file changed within a clock tick of its reading: hash it again next time
        now = time.time()
        record = {
            "format": FORMAT, "key": key, "rootfs": rootfs, "files": sum(1 for e in entries if e[1] != "d"),
            "total_bytes": sum(e[3] for e in entries if e[1] == "f"), "files_digest": digest,
            "created": now, "digests": digests,
        }
        try:
            write_atomic(self._path(key), fastjson.dumps(record).encode(), mode=0o600, durable=False)
        except OSError as exc:
            raise ConfigError(f"cannot write the enclave pool at {self.directory}: {exc.strerror}") from None
        self._memo[key] = digest
        return digest, False

    def _known_digests(self, limit: int = 8) -> dict[str, str]:
        """Content digests from the most recently used entries (shared layers hash once)."""
        known: dict[str, str] = {}
        for entry in self.entries()[:limit]:
            doc = self._load(entry.key)
            if doc and isinstance(doc.get("digests"), dict):
                known.update(doc["digests"])
        return known

    def entries(self) -> list[PoolEntry]:
        out: list[PoolEntry] = []
        try:
            names = os.listdir(self.entries_dir)
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json"):
                continue
            doc = self._load(name[:-5])
            if doc is None:
                continue
            try:
                used = os.stat(self._path(name[:-5])).st_mtime
            except OSError:
                continue
            out.append(PoolEntry(doc["key"], str(doc.get("rootfs", "")), int(doc.get("files", 0)),
                                 int(doc.get("total_bytes", 0)), str(doc.get("files_digest", "")),
                                 float(doc.get("created", 0)), used))
        out.sort(key=lambda e: e.last_used, reverse=True)
        return out

    def remove(self, prefix: str) -> list[str]:
        """Remove entries whose key starts with ``prefix`` (at least 4 characters)."""
        if len(prefix) < 4:
            raise ConfigError("give at least 4 characters of the entry key (or --all)")
        removed = [e.key for e in self.entries() if e.key.startswith(prefix)]
        for key in removed:
            os.unlink(self._path(key))
        return removed

    def clear(self) -> list[str]:
        removed = [e.key for e in self.entries()]
        for key in removed:
            os.unlink(self._path(key))
        return removed
