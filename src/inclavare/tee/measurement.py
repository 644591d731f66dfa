"""The measurement of an enclave container (the MRENCLAVE of the simulated TEE).

    measurement = SHA-256( "inclavare-measurement-v1\\0"
                           || canonical JSON of {enclave configuration, entrypoint}
                           || files digest )
    files digest = SHA-256 over one line per trusted file, in path order:
        regular file: path \\0 "f" \\0 mode \\0 size \\0 sha256(content) \\n
        symlink:      path \\0 "l" \\0 target \\n

The trusted files are those the enclave runtime declares: the whole root filesystem for the
simulated runtime unless it is given ``trusted=PATH[:PATH...]``. The entrypoint (the command, its
working directory, the user, and the resolved program path) is measured too; the environment is
not (engines inject deployment-specific variables; SGX's MRENCLAVE does not cover it either).
Bind mounts from the host (volumes) are data, not code, and are not measured; neither is
anything under a mount destination of the spec (the container never sees it), nor directories
(their existence carries no code; runc creates mount points in the rootfs, which must not change
the next container's identity). Change one byte of a trusted file, its mode, a symlink target,
the command or the enclave configuration and the measurement changes.

Hashing a large root filesystem is the cold-start cost; :class:`inclavare.tee.epm.EnclavePool`
caches file digests by stat identity so an unchanged image is not read again.
"""

from __future__ import annotations

import os
import stat
from _sha256 import sha256 as small_sha256  # type: ignore[import-not-found]  # no OpenSSL start-up on rune's create path

from inclavare import fastjson
from inclavare.errors import ConfigError
from inclavare.immutable import Immutable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from inclavare.tee.epm import EnclavePool

DOMAIN = b"inclavare-measurement-v1\x00"


class FileEntry(tuple):  # type: ignore[type-arg]
    """(path, kind, mode, size, inode, mtime_ns, ctime_ns) — a tuple: the scan makes hundreds
    per container start, so creating one must cost no more than a tuple."""

    __slots__ = ()

    def __new__(cls, path: str, kind: str, mode: int, size: int, inode: int, mtime_ns: int,
                ctime_ns: int) -> FileEntry:
        return tuple.__new__(cls, (path, kind, mode, size, inode, mtime_ns, ctime_ns))

    @property
    def path(self) -> str:
        """Relative to the rootfs, "/"-separated, no leading slash."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def kind(self) -> str:
        """"f" (regular file), "l" (symlink) or "d" (directory: part of the pool signature, not
        of the measurement)."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def mode(self) -> int:
        return self[2]  # type: ignore[no-any-return]

    @property
    def size(self) -> int:
        return self[3]  # type: ignore[no-any-return]

    @property
    def fingerprint(self) -> tuple[int, int, int, int]:
        """(inode, size, mtime ns, ctime ns) of the lstat."""
        return (self[4], self[3], self[5], self[6])

    def line(self, digest_or_target: str) -> bytes:
        if self[1] == "f":
            return f"{self[0]}\0f\0{self[2]:o}\0{self[3]}\0{digest_or_target}\n".encode(
                "utf-8", "surrogateescape")
        return f"{self[0]}\0l\0{digest_or_target}\n".encode("utf-8", "surrogateescape")


class Measurement(Immutable):
    __slots__ = ("measurement", "files_digest", "files", "total_bytes", "cached")
    measurement: bytes  # 32 bytes
    files_digest: str
    files: int
    total_bytes: int
    cached: bool  # True when no file content had to be read

    def __init__(self, measurement: bytes, files_digest: str, files: int, total_bytes: int, cached: bool) -> None:
        self._set(measurement=measurement, files_digest=files_digest, files=files, total_bytes=total_bytes,
                  cached=cached)

    @property
    def hex(self) -> str:
        return self.measurement.hex()


def _rel(path: str) -> str:
    return os.path.normpath("/" + path).lstrip("/")


def scan(rootfs: str, trusted: Sequence[str] = ("/",), excluded: Sequence[str] = ()) -> list[FileEntry]:
    """Every trusted file, symlink and directory under ``rootfs`` with its stat identity
    (symlinks are never followed), in path order, skipping ``excluded`` paths and everything
    below them (mount destinations). Directories are listed for the pool's signature only: they
    are not measured."""
    if not os.path.isdir(rootfs):
        raise ConfigError(f"root filesystem {rootfs} is not a directory")
    skip = {_rel(p) for p in excluded} - {""}
    entries: dict[str, FileEntry] = {}
    for top in trusted:
        rel_top = _rel(top)
        start = os.path.join(rootfs, rel_top) if rel_top else rootfs
        try:
            st = os.lstat(start)
        except FileNotFoundError:
            raise ConfigError(f"trusted path {top} does not exist in the root filesystem") from None
        if rel_top in skip:
            continue
        _add(entries, rel_top, st)
        if stat.S_ISDIR(st.st_mode):
            _walk(start, rel_top, skip, entries)
    return [entries[k] for k in sorted(entries)]


def _walk(top: str, top_rel: str, skip: set[str], entries: dict[str, FileEntry]) -> None:
    """Iterative (no generator frames): this runs over every file at each container start.

    Directories are recorded with their stat identity and symlinks with their inode only (no
    ``lstat``): a symlink's target never changes in place, and replacing it changes its
    directory's ctime, so the pool signature still changes with any trusted byte."""
    pending = [(top, top_rel + "/" if top_rel else "")]
    new = tuple.__new__
    while pending:
        path, prefix = pending.pop()
        try:
            with os.scandir(path) as it:
                children = list(it)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        for entry in children:
            rel = prefix + entry.name
            if rel in skip:
                continue
            if entry.is_symlink():  # the directory entry's type: no lstat unless the file system omits it
                entries[rel] = new(FileEntry, (rel, "l", 0, 0, entry.inode(), 0, 0))
                continue
            st = entry.stat(follow_symlinks=False)
            fmt = st.st_mode & _S_IFMT
            if fmt == _S_IFDIR:
                entries[rel] = new(FileEntry, (rel, "d", 0, 0, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
                pending.append((entry.path, rel + "/"))
            elif fmt == _S_IFREG:
                entries[rel] = new(FileEntry, (rel, "f", st.st_mode & 0o7777, st.st_size, st.st_ino,
                                               st.st_mtime_ns, st.st_ctime_ns))
            elif fmt == _S_IFLNK:  # replaced by a symlink since the directory was read
                entries[rel] = new(FileEntry, (rel, "l", 0, 0, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
            # device nodes, fifos and sockets in an image carry no code; they are not measured


_S_IFMT, _S_IFREG, _S_IFLNK, _S_IFDIR = 0o170000, stat.S_IFREG, stat.S_IFLNK, stat.S_IFDIR


# File times come from the kernel's coarse clock: two changes within one tick (at most 10 ms
# at HZ=100) can leave the same ctime, and file systems with whole-second times (ext3, FAT) make
# that a second. An identity recorded that close to the moment it was read proves nothing about
# a change made just after ("racy git"): such identities are never trusted as unchanged.
RACY_NS = 20_000_000
RACY_COARSE_NS = 2_000_000_000


def racy(ctime_ns: int, read_at_ns: int) -> bool:
    """Whether a change made after ``read_at_ns`` (wall clock) may have left ``ctime_ns`` as it was."""
    return ctime_ns >= read_at_ns - (RACY_COARSE_NS if ctime_ns % 1_000_000_000 == 0 else RACY_NS)


def rescan(rootfs: str, previous: list[FileEntry], scanned_at_ns: int) -> list[FileEntry] | None:
    """``previous`` (a :func:`scan` of ``rootfs`` started at ``scanned_at_ns``) brought up to date
    with one lstat per directory and file, or None when a directory changed (only a new scan
    knows what it holds then).

    As git's index does: a directory whose identity (inode, mtime, ctime) is unchanged holds the
    same names, since creating, removing or renaming an entry changes both times, so it is not
    listed again, and its symlinks (recorded by inode alone) are the same ones; a directory whose
    ctime was :func:`racy` when it was listed is listed again. What can change without its
    directory is a file's content or mode, and a path reached again after a mount; the lstat of
    every file and directory by its path sees both. Returns ``previous`` itself when nothing
    changed, so equal scans are recognised without comparing them."""
    lstat = os.lstat
    out: list[FileEntry] | None = None
    for i, e in enumerate(previous):
        kind = e[1]
        if kind == "l" and not e[6]:
            continue  # a symlink listed with its directory: that directory's identity covers it
        try:
            st = lstat(rootfs + "/" + e[0] if e[0] else rootfs)
        except OSError:
            return None
        fmt = st.st_mode & _S_IFMT
        if kind == "d":
            if (fmt != _S_IFDIR or st.st_ino != e[4] or st.st_mtime_ns != e[5] or st.st_ctime_ns != e[6]
                    or racy(e[6], scanned_at_ns)):
                return None
        elif kind == "f":
            if fmt != _S_IFREG:
                return None
            if (st.st_ino != e[4] or st.st_mtime_ns != e[5] or st.st_ctime_ns != e[6] or st.st_size != e[3]
                    or st.st_mode & 0o7777 != e[2]):
                if out is None:
                    out = list(previous)
                out[i] = FileEntry(e[0], "f", st.st_mode & 0o7777, st.st_size, st.st_ino, st.st_mtime_ns,
                                   st.st_ctime_ns)
        elif fmt != _S_IFLNK or st.st_ino != e[4] or st.st_mtime_ns != e[5] or st.st_ctime_ns != e[6]:
            return None  # a symlink named as a trusted path (its directory is not scanned)
    return previous if out is None else out


def _add(entries: dict[str, FileEntry], rel: str, st: os.stat_result) -> None:
    fmt = st.st_mode & _S_IFMT
    if fmt == _S_IFREG:
        entries[rel] = FileEntry(rel, "f", st.st_mode & 0o7777, st.st_size, st.st_ino, st.st_mtime_ns,
                                 st.st_ctime_ns)
    elif fmt == _S_IFLNK:
        entries[rel] = FileEntry(rel, "l", 0, 0, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    elif fmt == _S_IFDIR:
        entries[rel] = FileEntry(rel, "d", 0, 0, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(path: str) -> str:
    import hashlib  # OpenSSL's SHA-256 (SHA-NI): ~5x the built-in's speed, worth its import here

    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def files_digest(rootfs: str, entries: Sequence[FileEntry],
                 known: dict[str, str] | None = None) -> tuple[str, dict[str, str], bool]:
    """Digest of the trusted files; ``known`` maps a fingerprint key to a content digest.

    Returns (digest, content digests by fingerprint key, whether nothing had to be read).
    """
    known = known or {}
    fresh: dict[str, str] = {}
    h = small_sha256()
    all_cached = True
    for e in entries:
        if e.kind == "f":
            key = fingerprint_key(e)
            digest = known.get(key)
            if digest is None:
                all_cached = False
                digest = hash_file(os.path.join(rootfs, e.path))
                after = os.lstat(os.path.join(rootfs, e.path))
                if (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) != e.fingerprint:
                    raise ConfigError(f"{e.path} changed while it was being measured; retry")
            fresh[key] = digest
            h.update(e.line(digest))
        elif e.kind == "l":
            h.update(e.line(os.readlink(os.path.join(rootfs, e.path))))
    return h.hexdigest(), fresh, all_cached


def fingerprint_key(e: FileEntry) -> str:
    return f"{e[4]}:{e[3]}:{e[5]}:{e[6]}"


def resolve_entrypoint(rootfs: str, args: Sequence[str], env: Sequence[str], cwd: str) -> str:
    """The program the container will run, resolved like ``exec.LookPath`` inside the rootfs."""
    if not args:
        raise ConfigError("config.json has no process.args")
    prog = args[0]
    if "/" in prog:
        return os.path.normpath(os.path.join(cwd or "/", prog))
    path_var = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for d in path_var.split(":"):
        candidate = os.path.normpath(os.path.join("/", d or ".", prog))
        full = os.path.join(rootfs, candidate.lstrip("/"))
        if os.path.lexists(full):
            return candidate
    return prog  # not in the image (e.g. provided by the LibOS); measured by name


def header(enclave: dict[str, str], process: dict[str, Any], entrypoint: str) -> bytes:
    user = process.get("user") or {}
    doc = {
        "enclave": {k: enclave.get(k, "") for k in ("type", "path", "args", "loglevel")},
        "entrypoint": {
            "path": entrypoint,
            "args": list(process.get("args") or []),
            "cwd": process.get("cwd") or "/",
            "uid": user.get("uid", 0),
            "gid": user.get("gid", 0),
        },
    }
    return _canonical(doc).encode()


def _canonical(value: Any) -> str:
    """Compact JSON with sorted keys (fastjson's encoder does not sort)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{fastjson.dumps(k)}:{_canonical(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return fastjson.dumps(value)


def mount_destinations(spec: dict[str, Any]) -> list[str]:
    return [m["destination"] for m in spec.get("mounts") or []
            if isinstance(m, dict) and isinstance(m.get("destination"), str)]


def measure(rootfs: str, process: dict[str, Any], enclave: dict[str, str],
            trusted: Sequence[str] = ("/",), excluded: Sequence[str] = (),
            pool: "EnclavePool | None" = None) -> Measurement:
    """Measure an enclave container; ``pool`` (the epm) avoids re-reading unchanged files (and,
    in a long-lived process, re-listing unchanged directories)."""
    entries = pool.scan(rootfs, trusted, excluded) if pool is not None else scan(rootfs, trusted, excluded)
    entrypoint = resolve_entrypoint(rootfs, process.get("args") or [], process.get("env") or [],
                                    process.get("cwd") or "/")
    if pool is not None:
        fdigest, cached = pool.files_digest(rootfs, entries)
    else:
        fdigest, _, cached = files_digest(rootfs, entries)
    h = small_sha256(DOMAIN)
    h.update(header(enclave, process, entrypoint))
    h.update(b"\0" + fdigest.encode())
    files = [e for e in entries if e[1] != "d"]
    return Measurement(h.digest(), fdigest, len(files), sum(e[3] for e in files), cached)


def parse_trusted_arg(runtime_args: str) -> list[str]:
    """``trusted=/app:/bin/busybox`` in the runtime args limits the measured paths."""
    for token in runtime_args.split():
        if token.startswith("trusted="):
            paths = [p for p in token[len("trusted="):].split(":") if p]
            if not paths:
                raise ConfigError("trusted= needs at least one path")
            return paths
    return ["/"]
