#!/usr/bin/env python3
"""Start-to-exit time of a sim-enclave busybox container vs the same bundle under plain runc.

The rootfs carries ~100 MB of files so the first (cold) start pays for measuring them; later
(warm) starts are served by the enclave pool. `sha256_ms` hashes the same bytes in-process: the
floor of a cold start. Warm starts run back to back (the harder case: each start finds the
machine busy with the last one's teardown), then spaced by --gap-ms (starts on a quiet node).
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from tests.support.agent import AgentProcess  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ms = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {r.stderr.decode()[-500:]}")
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=100, help="MB of files in the rootfs")
    ap.add_argument("--runs", type=int, default=100, help="pairs of warm enclave and plain runc starts")
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1, help="seed of the order within warm pairs")
    ap.add_argument("--spaced-runs", type=int, default=40, help="pairs of warm starts spaced by --gap-ms")
    ap.add_argument("--gap-ms", type=float, default=30.0, help="idle time before each spaced start")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc)")
    runc = shutil.which("runc") or "/usr/sbin/runc"
    rune = str(Path(sys.executable).parent / "rune")
    # like production, registrations and rune state live on a tmpfs-like /run (here: /dev/shm)
    work = Path(tempfile.mkdtemp(prefix="bench-enclave-"))
    run_dir = Path(tempfile.mkdtemp(prefix="bench-enclave-run-", dir="/dev/shm"))
    agent = AgentProcess(work / "agent")
    agent.socket = str(run_dir / "agent.sock")
    agent.channels_dir = str(run_dir / "enclaves")
    (work / "agent").mkdir()
    try:
        print("building a busybox rootfs with %d MB of files" % args.mb, file=sys.stderr)
        rootfs = build_busybox_rootfs(str(work / "rootfs"))
        data = Path(rootfs, "data")
        data.mkdir()
        for i in range(args.mb):
            (data / f"blob{i:03d}.bin").write_bytes(os.urandom(1 << 20))
        enclave = make_bundle(str(work / "enclave"), ["/bin/true"], rootfs=rootfs, annotations={"enclave.type": "sim"})
        plain = make_bundle(str(work / "plain"), ["/bin/true"], rootfs=rootfs)
        agent.start()
        env = {**os.environ, **agent.env, "INCLAVARE_RUNE_STATE": str(run_dir / "rune-state")}
        root = str(work / "root")

        import hashlib
        t0 = time.perf_counter()
        for top, _, files in os.walk(rootfs):
            for name in files:
                p = os.path.join(top, name)
                if not os.path.islink(p):
                    with open(p, "rb") as f:
                        hashlib.sha256(f.read()).digest()
        sha256_ms = (time.perf_counter() - t0) * 1000

        from inclavare.tee.epm import EnclavePool
        pool = EnclavePool(agent.env["INCLAVARE_EPM_DIR"])
        cold, base = [], []
        print(f"cold: {args.cold_runs} starts with an empty enclave pool", file=sys.stderr)
        for i in range(args.cold_runs):
            pool.clear()
            cold.append(timed([rune, "--root", root, "run", "--bundle", enclave, f"cold{i}"], env))
            base.append(timed([runc, "--root", root, "run", "--bundle", plain, f"coldbase{i}"], env))
        print(f"warm: {args.runs} pairs of warm enclave / runc starts", file=sys.stderr)
        pairs = []
        order = random.Random(args.seed)
        for i in range(3 + args.runs):
            warm_cmd = [rune, "--root", root, "run", "--bundle", enclave, f"warm{i}"]
            base_cmd = [runc, "--root", root, "run", "--bundle", plain, f"base{i}"]
            # which goes first is drawn for each pair: a start is slower or faster after another
            # kind of start (teardown left behind), and a fixed alternation would give each pair
            # the same predecessors (warm after warm, runc after runc, then the reverse)
            if order.random() < 0.5:
                b, w = timed(base_cmd, env), timed(warm_cmd, env)
            else:
                w, b = timed(warm_cmd, env), timed(base_cmd, env)
            if i >= 3:
                pairs.append((w, b))
        print(f"spaced: {args.spaced_runs} pairs, {args.gap_ms:g} ms idle before each start", file=sys.stderr)
        spaced = []
        for i in range(args.spaced_runs):
            warm_cmd = [rune, "--root", root, "run", "--bundle", enclave, f"swarm{i}"]
            base_cmd = [runc, "--root", root, "run", "--bundle", plain, f"sbase{i}"]
            first, second = (base_cmd, warm_cmd) if i % 2 else (warm_cmd, base_cmd)
            time.sleep(args.gap_ms / 1000)
            a = timed(first, env)
            time.sleep(args.gap_ms / 1000)
            b = timed(second, env)
            spaced.append((b, a) if i % 2 else (a, b))
        warm = [w for w, _ in pairs]
        runc_ms = statistics.median([b for _, b in pairs])
        cold_runc_ms = statistics.median(base)
        result = {
            "rootfs_mb": args.mb,
            "runc_ms": round(runc_ms, 2),
            "cold_ms": round(statistics.median(cold), 2),
            "warm_ms": round(statistics.median(warm), 2),
            "warm_ratio": round(statistics.median([w / b for w, b in pairs]), 3),
            "sha256_ms": round(sha256_ms, 2),
            "warm_ratio_of_medians": round(statistics.median(warm) / runc_ms, 3),
            "warm_overhead_ms": round(statistics.median([w - b for w, b in pairs]), 2),
            "cold_budget_ms": round(cold_runc_ms + sha256_ms + 50, 2),
            "cold_within_budget": statistics.median(cold) <= cold_runc_ms + sha256_ms + 50,
            "spaced_runc_ms": round(statistics.median([b for _, b in spaced]), 2) if spaced else None,
            "spaced_warm_ms": round(statistics.median([w for w, _ in spaced]), 2) if spaced else None,
            "spaced_warm_ratio": round(statistics.median([w / b for w, b in spaced]), 3) if spaced else None,
            "runs": args.runs, "cold_runs": args.cold_runs, "spaced_runs": args.spaced_runs, "gap_ms": args.gap_ms,
            "target_warm_ratio": 1.25,
        }
        print(json.dumps(result))
        return 0
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
