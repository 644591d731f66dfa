#!/usr/bin/env python3
"""rune's start-up cost over runc, measured against runc in the same run.

Median wall time of `rune run` vs `runc run` of a busybox `/bin/true` bundle (alternating runs),
of a bare `python -I -S` exec wrapper (the floor for any Python entry point), and of
`ctr run --rm` with and without `--runc-binary rune` on a private containerd.
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inclavare.sample_images import build_busybox_rootfs, make_bundle  # noqa: E402


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"benchmark command failed ({r.returncode}): {' '.join(cmd)}")
    return elapsed * 1000


def alternate(commands: dict[str, callable], runs: int, warmup: int = 3) -> dict[str, list[float]]:  # type: ignore[valid-type]
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(warmup + runs):
        for name, make_cmd in commands.items():
            ms = timed(make_cmd(i))
            if i >= warmup:
                samples[name].append(ms)
        if i % 10 == 0:
            print(f"  run {i}/{warmup + runs}", file=sys.stderr)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30, help="alternating runs per variant (>= 20)")
    ap.add_argument("--ctr-runs", type=int, default=20)
    ap.add_argument("--skip-containerd", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc)")
    runc = shutil.which("runc") or "/usr/sbin/runc"
    rune = str(Path(sys.executable).parent / "rune")
    work = Path(tempfile.mkdtemp(prefix="bench-rune-"))
    try:
        rootfs = build_busybox_rootfs(str(work / "rootfs"))
        bundle = make_bundle(str(work / "bundle"), ["/bin/true"], rootfs=rootfs)
        root = str(work / "root")
        wrapper = work / "py-exec-wrapper"
        wrapper.write_text(f"#!{sys.executable} -IS\nimport os, sys\nos.execv({runc!r}, [{runc!r}, *sys.argv[1:]])\n")
        wrapper.chmod(0o755)
        print(f"run: {args.runs} alternating runs of runc / rune / python -IS wrapper", file=sys.stderr)
        s = alternate({
            "runc": lambda i: [runc, "--root", root, "run", "--bundle", bundle, f"c{i}-runc"],
            "rune": lambda i: [rune, "--root", root, "run", "--bundle", bundle, f"c{i}-rune"],
            "wrapper": lambda i: [str(wrapper), "--root", root, "run", "--bundle", bundle, f"c{i}-wrap"],
        }, args.runs)
        med = {k: statistics.median(v) for k, v in s.items()}
        result = {
            "runs": args.runs,
            "runc_run_ms": round(med["runc"], 2),
            "rune_run_ms": round(med["rune"], 2),
            "run_ratio": round(med["rune"] / med["runc"], 3),
            "python_IS_exec_wrapper_ms": round(med["wrapper"], 2),
            "python_IS_exec_wrapper_ratio": round(med["wrapper"] / med["runc"], 3),
        }
        if not args.skip_containerd:
            from tests.support.containerd import Containerd

            daemon = Containerd(work / "ctrd", rune).start()
            try:
                image = daemon.import_busybox(work)
                base = ["ctr", "--address", daemon.socket, "--namespace", daemon.namespace, "run", "--rm"]
                print(f"ctr: {args.ctr_runs} alternating `ctr run --rm` with runc / rune", file=sys.stderr)
                c = alternate({
                    "runc": lambda i: [*base, image, f"k{i}-runc", "/bin/true"],
                    "rune": lambda i: [*base, "--runc-binary", rune, image, f"k{i}-rune", "/bin/true"],
                }, args.ctr_runs)
            finally:
                daemon.stop()
            cm = {k: statistics.median(v) for k, v in c.items()}
            result.update({
                "ctr_runs": args.ctr_runs,
                "ctr_runc_ms": round(cm["runc"], 2),
                "ctr_rune_ms": round(cm["rune"], 2),
                "ctr_ratio": round(cm["rune"] / cm["runc"], 3),
            })
        result["target_run_ratio"] = 1.35
        print(json.dumps(result))
        return 0
    finally:
        subprocess.run(["umount", "-R", str(work / "ctrd" / "root")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
