"""Helpers for the enclave runtime tests: the skeleton PAL compiled with the system cc, and
real runc containers whose process runs in the enclave (every one deleted at teardown)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SKELETON_SOURCE = HERE / "skeleton_pal.c"
RUNC = shutil.which("runc") or "/usr/sbin/runc"


def _compile(out_dir: Path, name: str, version: int, *defines: str) -> str:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the skeleton PAL (apt-get install gcc)")
    out = out_dir / name
    cmd = [cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", f"-DSKELETON_PAL_VERSION={version}",
           *(f"-D{d}" for d in defines), "-o", str(out), str(SKELETON_SOURCE), "-lpthread"]
    subprocess.run(cmd, check=True, capture_output=True)
    return str(out)


class Skeletons:
    """liberpal-skeleton-vN.so and variants, compiled once per session on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._built: dict[tuple[int, tuple[str, ...]], str] = {}

    def get(self, version: int, *defines: str) -> str:
        key = (version, defines)
        if key not in self._built:
            suffix = "".join(f"-{d.lower().replace('=', '')}" for d in defines)
            self._built[key] = _compile(self.directory, f"liberpal-skeleton-v{version}{suffix}.so",
                                        version, *defines)
        return self._built[key]

    def fresh(self, directory: Path, version: int, *defines: str) -> str:
        """A private copy: the loader shares one instance (and its globals) per path."""
        source = self.get(version, *defines)
        target = directory / f"{uuid.uuid4().hex[:8]}-{os.path.basename(source)}"
        shutil.copyfile(source, target)
        return str(target)


def read_until(stream: Any, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read from a pipe until ``needle`` appears (or fail after ``timeout``)."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"stream closed before {needle!r}; got {data!r}")
            data += chunk
    return data


class Containers:
    """Real runc containers in a private --root; every one is deleted at teardown."""

    def __init__(self, base: Path, rootfs: str, rt_dir: str) -> None:
        self.base = base
        self.rootfs = rootfs
        self.rt_dir = rt_dir
        self.root = str(base / "runc-root")
        self.ids: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def runc(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run([RUNC, "--root", self.root, *args], **kwargs)

    def prepare(self, args: Sequence[str], runtime_ref: str, runtime_args: str = "",
                env: Sequence[str] = ("PATH=/bin", "FOO=bar"), log_level: str = "debug",
                record: bool = True) -> tuple[str, str, Path]:
        """A bundle whose process runs in the enclave; returns (id, bundle, record file)."""
        from inclavare.runtime.pal.runelet_rt import plan_runelet_launch
        from inclavare.sample_images import default_spec

        cid = "pal-" + uuid.uuid4().hex[:10]
        bundle = self.base / cid
        record_dir = bundle / "record"
        record_dir.mkdir(parents=True)
        spec = default_spec(list(args), env=list(env), rootfs=self.rootfs)
        if record:
            spec["mounts"].append({"destination": "/record", "type": "bind",
                                   "source": str(record_dir), "options": ["rbind", "rw"]})
            runtime_args = f"record=/record/calls.jsonl {runtime_args}".strip()
        plan_runelet_launch(spec, runtime_ref=runtime_ref, runtime_args=runtime_args,
                            log_level=log_level, rt_dir=self.rt_dir,
                            private_dir=str(bundle / "private"))
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        self.ids.append(cid)
        return cid, str(bundle), record_dir / "calls.jsonl"

    def start(self, cid: str, bundle: str) -> subprocess.Popen[bytes]:
        """``runc run`` in the foreground (its exit status is the container's)."""
        proc = subprocess.Popen([RUNC, "--root", self.root, "run", "--bundle", bundle, cid],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def run(self, cid: str, bundle: str, timeout: float = 30) -> tuple[int, str, str]:
        proc = self.start(cid, bundle)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(), err.decode()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for cid in self.ids:
            self.runc("delete", "--force", cid)
        for proc in self.procs:
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def calls(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line]


