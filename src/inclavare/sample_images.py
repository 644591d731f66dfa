"""Busybox root filesystems, runtime bundles and OCI image archives, built offline.

The demo, the tests and the benchmarks need real container images on machines without a
registry or network: a statically linked busybox (Debian ``busybox-static``) is enough for a
complete, tiny image. Archives are deterministic (sorted entries, zero mtimes) so the same
rootfs always yields the same layer digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from inclavare.errors import ConfigError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise ConfigError("busybox not found (apt-get install busybox-static)")


def build_busybox_rootfs(dest: str, busybox: str | None = None,
                         extra_files: Mapping[str, bytes] | None = None) -> str:
    """Create a busybox root filesystem in ``dest`` (about 2 MB) and return ``dest``."""
    busybox = busybox or find_busybox()
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "root", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    target = os.path.join(dest, "bin", "busybox")
    shutil.copy2(busybox, target)
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if "/" in applet or applet in ("busybox", "[", "[["):
            continue
        link = os.path.join(dest, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    for name, content in {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": b"root:x:0:\n",
        **(extra_files or {}),
    }.items():
        path = os.path.join(dest, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
    return dest


def default_spec(args: Sequence[str], env: Sequence[str] = ("PATH=/bin",),
                 annotations: Mapping[str, str] | None = None, terminal: bool = False,
                 rootfs: str = "rootfs", readonly: bool = True) -> dict[str, Any]:
    """The spec ``runc spec`` writes (runc 1.1), with the given process and annotations."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": list(env),
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": readonly},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }
    if annotations:
        spec["annotations"] = dict(annotations)
    return spec


def make_bundle(dest: str, args: Sequence[str], rootfs: str | None = None,
                env: Sequence[str] = ("PATH=/bin",), annotations: Mapping[str, str] | None = None,
                terminal: bool = False) -> str:
    """Create an OCI runtime bundle in ``dest``; builds a busybox rootfs unless one is given."""
    os.makedirs(dest, exist_ok=True)
    if rootfs is None:
        rootfs_rel = "rootfs"
        build_busybox_rootfs(os.path.join(dest, "rootfs"))
    else:
        rootfs_rel = os.path.abspath(rootfs)
    spec = default_spec(args, env=env, annotations=annotations, terminal=terminal, rootfs=rootfs_rel)
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return dest


def _tar_rootfs(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def build_oci_archive(rootfs: str, out: str, cmd: Sequence[str] = ("/bin/sh",),
                      entrypoint: Sequence[str] | None = None, env: Iterable[str] = ("PATH=/bin",),
                      ref: str = "latest", labels: Mapping[str, str] | None = None) -> str:
    """Write an OCI image layout tarball (what ``ctr images import`` and podman load) to ``out``."""
    blobs: dict[str, bytes] = {}
    layer = _tar_rootfs(rootfs)
    layer_desc = _blob(blobs, layer)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": list(env), "Cmd": list(cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "inclavare sample_images"}],
    }
    if entrypoint:
        config["config"]["Entrypoint"] = list(entrypoint)
    if labels:
        config["config"]["Labels"] = dict(labels)
    config_desc = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    manifest_desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_desc,
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }],
    }
    with tarfile.open(out, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    return out


def rootfs_tar(rootfs: str, out: str) -> str:
    """A plain tarball of a rootfs (what ``podman import`` takes)."""
    with open(out, "wb") as f:
        f.write(_tar_rootfs(rootfs))
    return out
