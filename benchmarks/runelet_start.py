"""Container start-to-exit cost of the runelet launch path against plain runc.

Runs busybox ``true`` with ``runc run`` n times each: plainly (the baseline, measured in the
same run), through the runelet with the sim runtime, and through the runelet with the
skeleton PAL v2 (compiled with cc into a temporary directory). Progress on stderr; the last
stdout line is one JSON object with medians in milliseconds. Needs root and runc.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt, plan_runelet_launch
from inclavare.sample_images import build_busybox_rootfs, default_spec

RUNS = int(os.environ.get("RUNELET_BENCH_RUNS", "15"))
HERE = Path(__file__).resolve().parent
SKELETON = HERE.parent / "tests" / "pal" / "skeleton_pal.c"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bundle(base: Path, name: str, rootfs: str, rt: str, ref: str | None) -> str:
    spec = default_spec(["true"], rootfs=rootfs)
    directory = base / name
    directory.mkdir()
    if ref is not None:
        plan_runelet_launch(spec, runtime_ref=ref, runtime_args="", log_level="off", rt_dir=rt,
                            private_dir=str(directory / "private"))
    (directory / "config.json").write_text(json.dumps(spec))
    return str(directory)


def measure(runc: str, root: str, path: str, label: str) -> list[float]:
    times = []
    for i in range(RUNS):
        cid = f"bench-{label}-{i}"
        start = time.perf_counter()
        proc = subprocess.run([runc, "--root", root, "run", "--bundle", path, cid],
                              stdin=subprocess.DEVNULL, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            subprocess.run([runc, "--root", root, "delete", "-f", cid], capture_output=True)
            raise SystemExit(f"{label}: runc run failed: {proc.stderr.decode(errors='replace')}")
    log(f"{label}: median {statistics.median(times):.1f} ms over {RUNS} runs")
    return times


def main() -> int:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    cc = shutil.which("cc")
    if os.geteuid() != 0 or not os.access(runc, os.X_OK) or cc is None:
        raise SystemExit("needs root, runc and cc")
    with tempfile.TemporaryDirectory(prefix="runelet-bench-") as tmp:
        base = Path(tmp)
        rootfs = build_busybox_rootfs(str(base / "rootfs"))
        started = time.perf_counter()
        rt = ensure_runelet_rt(str(base / "rtcache"))
        build_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        ensure_runelet_rt(str(base / "rtcache"))
        warm_ms = (time.perf_counter() - started) * 1000
        log(f"runtime folder: built in {build_ms:.0f} ms, found again in {warm_ms:.2f} ms")
        pal = str(base / "liberpal-skeleton-v2.so")
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-DSKELETON_PAL_VERSION=2", "-o", pal,
                        str(SKELETON), "-lpthread"], check=True)
        root = str(base / "runc-root")
        results = {
            "runc_plain": measure(runc, root, bundle(base, "plain", rootfs, rt, None), "runc_plain"),
            "runelet_sim": measure(runc, root, bundle(base, "sim", rootfs, rt, "sim"), "runelet_sim"),
            "runelet_skeleton_v2": measure(runc, root, bundle(base, "pal", rootfs, rt, pal),
                                           "runelet_skeleton_v2"),
        }
    medians = {k: round(statistics.median(v), 1) for k, v in results.items()}
    print(json.dumps({
        "benchmark": "runelet_start", "unit": "ms", "runs": RUNS, "baseline": "runc_plain",
        "median_ms": medians,
        "overhead_ms": {k: round(v - medians["runc_plain"], 1) for k, v in medians.items()
                        if k != "runc_plain"},
        "rt_folder_build_ms": round(build_ms), "rt_folder_lookup_ms": round(warm_ms, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
