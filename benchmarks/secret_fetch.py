#!/usr/bin/env python3
"""End-to-end secret-fetch latency from inside a simulated enclave container.

A real key broker (``inclavare kbs serve`` trusting the simulated root, releasing one resource
to the container's measurement only) and a real node agent (``--kbs-url``) on loopback. A busybox
sim-enclave container, started with ``rune run``, runs a small client on the host's Python
(bind-mounted read-only; it uses ``socket`` and ``time`` only) that sends raw HTTP/1.1
``GET /cdh/resource/R/T/G`` (``Connection: close``) to ``/run/inclavare/agent.sock`` and times
each request with ``time.perf_counter()``, from the ``connect`` to the end of the answer:

* first fetch: the first request of a fresh container. It pays for enclave-init starting the
  enclave agent on that first connection (an interpreter), the KBS protocol (auth, a quote from
  the node agent's channel over the enclave's report data, attest, resource, all through the
  node agent's relay) and the JWE decryption inside the enclave. One sample per container
  (``--containers N``).
* cached fetch: ``--fetches M`` further fetches in the same container (token and key cached
  in the enclave agent: one resource request through the relay, one decryption).
* ``--evidence-containers K`` other fresh containers first ask ``GET /aa/evidence`` (agent
  start + one quote), then fetch the resource (the KBS flow with the agent already running),
  then, to split the relay from the rest, time quotes straight from the node agent's channel
  (``POST /v1/quote`` on ``/run/inclavare/host/host.sock``), opening a relay tunnel
  (``CONNECT kbs``), and plain HTTP round trips to the broker through one kept-open tunnel.

Baselines, same run, interleaved with the containers (the machine is noisy: quote ratios):

* host flow: the same KBS flow with no container and no relay, ``KbsClient(kbs.url, attester,
  tee="sgx")`` in this process with an attester that asks the simulated authority (the node
  agent's, for the container's measurement) for a quote: a fresh client per "first" sample
  (TCP connect, auth, attest, resource, decryption), then M cached fetches on that client;
* ``http_roundtrip_ms_p50``: one plain HTTP request to the broker on loopback over a kept-alive
  ``http.client`` connection (``GET /kbs/v0/resource/...`` without a token: 401).

Percentiles are nearest-rank: with fewer than 100 samples (the first-fetch figures: one per
container) p99 is the maximum. Needs root (runc). Progress goes to stderr; the last stdout line
is one JSON object.

    .venv/bin/python benchmarks/secret_fetch.py [--containers 15] [--fetches 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inclavare.sample_images import build_busybox_rootfs, make_bundle
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.sim_sgx import SimSgxAttester
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess

RESOURCE = "bench/key/secret"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64")

# Runs inside the container on the host's interpreter (-I -S -B): socket + time (+ json, os for
# the output and the parameters). The parameters come from the environment, which is not
# measured, so both kinds of container share one measurement.
CLIENT = r'''
import json, os, socket, sys, time
AGENT = "/run/inclavare/agent.sock"
HOST = "/run/inclavare/host/host.sock"
mode, fetches, resource = os.environ["BENCH_MODE"], int(os.environ["BENCH_FETCHES"]), os.environ["BENCH_RESOURCE"]
secret = bytes.fromhex(os.environ["BENCH_SECRET"])

def head_and_body(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SystemExit("truncated answer: %r" % data[:200])
    lines = head.split(b"\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
        out, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return int(lines[0].split(b" ", 2)[1]), body

def request(path, sock_path=AGENT, method="GET", body=b""):
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    extra = ("Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)) if body else ""
    s.sendall(("%s %s HTTP/1.1\r\nHost: enclave\r\n%sConnection: close\r\n\r\n" % (method, path, extra)).encode() + body)
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            break
        chunks.append(c)
    s.close()
    ms = (time.perf_counter() - t0) * 1000
    status, data = head_and_body(b"".join(chunks))
    return ms, status, data

def fetch():
    ms, status, data = request("/cdh/resource/" + resource)
    if status != 200 or data != secret:
        raise SystemExit("resource: status %d, body %r" % (status, data[:300]))
    return ms

def read_answer(s, buf):
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            raise SystemExit("relay closed")
        buf += c
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(rest) < n:
        c = s.recv(65536)
        if not c:
            raise SystemExit("relay closed")
        rest += c
    return int(head.split(b" ", 2)[1]), rest[n:]

out = {}
if mode == "resource":
    out["first"] = fetch()
    out["cached"] = [fetch() for _ in range(fetches)]
else:
    ms, status, data = request("/aa/evidence?runtime_data=secret-fetch-benchmark")
    if status != 200 or b'"quote"' not in data:
        raise SystemExit("evidence: status %d, body %r" % (status, data[:300]))
    out["evidence"] = ms
    out["first_agent_running"] = fetch()
    quotes = []
    for _ in range(20):
        ms, status, data = request("/v1/quote", HOST, "POST", b'{"report_data": "AAAA"}')
        if status != 200:
            raise SystemExit("channel quote: status %d, body %r" % (status, data[:300]))
        quotes.append(ms)
    out["channel_quote"] = quotes
    connects, rtts = [], []
    for i in range(5):
        t0 = time.perf_counter()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(HOST)
        s.sendall(b"CONNECT kbs:0 HTTP/1.1\r\nHost: kbs:0\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(1)  # byte by byte: nothing after the CONNECT answer may be swallowed
            if not c:
                raise SystemExit("relay refused")
            buf += c
        connects.append((time.perf_counter() - t0) * 1000)
        if int(buf.split(b" ", 2)[1]) != 200:
            raise SystemExit("relay: %r" % buf[:200])
        if i == 0:
            buf = b""
            req = ("GET /kbs/v0/resource/%s HTTP/1.1\r\nHost: kbs\r\n\r\n" % resource).encode()
            for _ in range(fetches):
                t0 = time.perf_counter()
                s.sendall(req)
                status, buf = read_answer(s, buf)
                rtts.append((time.perf_counter() - t0) * 1000)
                if status != 401:
                    raise SystemExit("relay round trip: status %d" % status)
        s.close()
    out["relay_connect"] = connects
    out["relay_rtt"] = rtts
sys.stdout.write(json.dumps(out) + "\n")
'''


def log(msg: str) -> None:
    print(f"secret_fetch: {msg}", file=sys.stderr, flush=True)


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 samples is the maximum)."""
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def r2(x: float) -> float:
    return round(x, 2)


def python_mounts() -> tuple[str, list[dict[str, Any]]]:
    """The host's interpreter, its standard library and the C libraries, bind-mounted read-only
    at the same paths (the recipe of tests/ratls/test_enclave_containers.py, without the venv:
    the client needs the standard library only)."""
    python = os.path.realpath(sys.executable)
    wanted = [python, sysconfig.get_paths()["stdlib"], *LIBRARY_DIRS]
    if os.path.realpath(sys.base_prefix) != "/usr":
        wanted.append(os.path.join(sys.base_prefix, "lib"))
    missing = [p for p in wanted if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"this host's layout does not match the bind-mount recipe: {missing[0]} is absent")
    mounts = [{"destination": p, "type": "bind", "source": p, "options": ["rbind", "ro", "nosuid", "nodev"]}
              for p in dict.fromkeys(os.path.realpath(w) for w in wanted)]
    return python, mounts


def make_client_bundle(dest: Path, rootfs: str, env: dict[str, str]) -> str:
    python, mounts = python_mounts()
    bundle = make_bundle(str(dest), [python, "-I", "-S", "-B", "-c", CLIENT], rootfs=rootfs,
                         env=["PATH=/bin", *(f"{k}={v}" for k, v in env.items())],
                         annotations={"enclave.type": "sim"})
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["mounts"] += mounts
    Path(bundle, "config.json").write_text(json.dumps(spec))
    return bundle


def measure(bundle: str, env: dict[str, str]) -> str:
    r = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "measure", bundle],
                       check=False, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"inclavare measure failed: {r.stderr}")
    return r.stdout.strip()


def run_container(rune: str, root: str, bundle: str, cid: str, env: dict[str, str]) -> dict[str, Any]:
    r = subprocess.run([rune, "--root", root, "run", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                       check=False, capture_output=True, env=env, timeout=300)
    lines = r.stdout.decode(errors="replace").strip().splitlines()
    if r.returncode != 0 or not lines:
        raise SystemExit(f"container {cid} failed ({r.returncode}): {r.stdout.decode(errors='replace')[-1000:]}"
                         f"{r.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=15, help="fresh containers: first-fetch samples")
    ap.add_argument("--fetches", type=int, default=200, help="cached fetches per container (and per host client)")
    ap.add_argument("--evidence-containers", type=int, default=None,
                    help="fresh containers that ask for evidence first (default: --containers; 0: none)")
    ap.add_argument("--http-requests", type=int, default=20, help="loopback HTTP round trips per round")
    args = ap.parse_args()
    n_evidence = args.containers if args.evidence_containers is None else args.evidence_containers
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc)")
    if args.containers < 1 or args.fetches < 1:
        raise SystemExit("--containers and --fetches must be at least 1")
    rune = str(Path(sys.executable).parent / "rune")
    # like production, registrations, runc's and rune's state live on a tmpfs-like /run (here /dev/shm)
    work = Path(tempfile.mkdtemp(prefix="bench-secret-"))
    run_dir = Path(tempfile.mkdtemp(prefix="bench-secret-run-", dir="/dev/shm"))
    root = str(run_dir / "runc")
    (work / "agent").mkdir()
    (work / "kbs").mkdir()
    agent = AgentProcess(work / "agent")
    agent.socket = str(run_dir / "agent.sock")
    agent.channels_dir = str(run_dir / "enclaves")
    kbs: KbsProcess | None = None
    started: list[str] = []
    env: dict[str, str] = {}
    try:
        sim_dir = str(agent.state_dir / "sim")
        authority = SimAuthority.load_or_create(sim_dir)
        authority.export(str(work / "kbs" / "sim"))
        key = write_admin_keys(str(work / "kbs"))
        kbs = KbsProcess(str(work / "kbs"), config_text("sqlite:///kbs.db", sample=False, extra=(
            '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
            'insecure_sim_collateral = "sim/collateral.json"\n')), key)
        kbs.start()
        agent.kbs_url = kbs.url
        agent.start()
        log(f"key broker at {kbs.url}, node agent at {agent.socket}")
        env = {**os.environ, **agent.env, "INCLAVARE_RUNE_STATE": str(run_dir / "rune-state")}

        rootfs = build_busybox_rootfs(str(work / "rootfs"))
        for link in ("lib", "lib64"):
            os.symlink(f"usr/{link}", os.path.join(rootfs, link))
        _, mounts = python_mounts()
        for mount in mounts:  # the mount points exist before the first start: the rootfs never changes
            target = Path(rootfs + mount["destination"])
            if os.path.isdir(mount["source"]):
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        secret = os.urandom(32)
        common = {"BENCH_FETCHES": str(args.fetches), "BENCH_RESOURCE": RESOURCE, "BENCH_SECRET": secret.hex()}
        res_bundle = make_client_bundle(work / "resource", rootfs, {**common, "BENCH_MODE": "resource"})
        ev_bundle = make_client_bundle(work / "evidence", rootfs, {**common, "BENCH_MODE": "evidence"})
        mr = measure(res_bundle, env)
        if measure(ev_bundle, env) != mr:
            raise SystemExit("the two client bundles should share one measurement")
        if kbs.admin("POST", f"/resource/{RESOURCE}", secret).status_code != 200:
            raise SystemExit("could not store the resource in the key broker")
        kbs.set_resource_policy(
            'package policy\nimport rego.v1\ndefault allow := false\n'
            'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'allow if {{ data.plugin == "resource"; ev.simulated == true; ev.sgx.mr_enclave == "{mr}" }}\n')

        mr_bytes = bytes.fromhex(mr)

        attester = SimSgxAttester(authority, mr_bytes)

        uri = f"kbs:///{RESOURCE}"

        def host_session() -> tuple[float, list[float]]:
            t0 = time.perf_counter()
            client = KbsClient(kbs.url, attester)  # type: ignore[union-attr]
            try:
                if client.get_resource(uri) != secret:
                    raise SystemExit("host flow: wrong secret")
                first = (time.perf_counter() - t0) * 1000
                cached = []
                for _ in range(args.fetches):
                    t0 = time.perf_counter()
                    if client.get_resource(uri) != secret:
                        raise SystemExit("host flow: wrong secret")
                    cached.append((time.perf_counter() - t0) * 1000)
                return first, cached
            finally:
                client.close()

        port = int(kbs.url.rsplit(":", 1)[1])

        http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def http_roundtrips(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                http_conn.request("GET", f"/kbs/v0/resource/{RESOURCE}")
                resp = http_conn.getresponse()
                resp.read()
                out.append((time.perf_counter() - t0) * 1000)
                if resp.status != 401:
                    raise SystemExit(f"loopback round trip: {resp.status}")
            return out

        def container(bundle: str, cid: str) -> dict[str, Any]:
            started.append(cid)
            out = run_container(rune, root, bundle, cid, env)
            started.remove(cid)
            return out

        log("warm-up (enclave pool, broker caches, imports): one container of each kind, one host flow")
        container(res_bundle, "warm-res")
        container(ev_bundle, "warm-ev")
        host_session()
        http_roundtrips(args.http_requests)

        first, cached, host_first, host_cached, rtt = [], [], [], [], []
        evidence, first_running, channel_quote, relay_connect, relay_rtt = [], [], [], [], []
        rounds = max(args.containers, n_evidence)
        log(f"{rounds} rounds: a fresh resource container ({args.fetches} cached fetches), "
            f"a fresh evidence container, a host flow, {args.http_requests} loopback round trips")
        for i in range(rounds):
            if i < args.containers:
                out = container(res_bundle, f"res{i}")
                first.append(out["first"])
                cached += out["cached"]
            if i < n_evidence:
                out = container(ev_bundle, f"ev{i}")
                evidence.append(out["evidence"])
                first_running.append(out["first_agent_running"])
                channel_quote += out["channel_quote"]
                relay_connect += out["relay_connect"]
                relay_rtt += out["relay_rtt"]
            if i < args.containers:
                f, c = host_session()
                host_first.append(f)
                host_cached += c
            rtt += http_roundtrips(args.http_requests)
            log(f"round {i + 1}: first fetch {first[-1] if i < args.containers else float('nan'):.1f} ms, "
                f"host flow {host_first[-1] if i < args.containers else float('nan'):.1f} ms")
        http_conn.close()

        log("first fetch samples (ms): " + " ".join(f"{x:.1f}" for x in sorted(first)))
        if first_running:
            log("first fetch, agent running (ms): " + " ".join(f"{x:.1f}" for x in sorted(first_running)))
            log("first evidence (ms): " + " ".join(f"{x:.1f}" for x in sorted(evidence)))
        log("host first flow (ms): " + " ".join(f"{x:.1f}" for x in sorted(host_first)))
        m = statistics.median
        result: dict[str, Any] = {
            "first_fetch_ms_p50": r2(m(first)),
            "first_fetch_ms_p99": r2(pct(first, 99)),
            "first_fetch_ms_min": r2(min(first)),
            "cached_fetch_ms_p50": r2(m(cached)),
            "cached_fetch_ms_p99": r2(pct(cached, 99)),
            "host_first_flow_ms_p50": r2(m(host_first)),
            "host_first_flow_ms_p99": r2(pct(host_first, 99)),
            "host_cached_fetch_ms_p50": r2(m(host_cached)),
            "host_cached_fetch_ms_p99": r2(pct(host_cached, 99)),
            "http_roundtrip_ms_p50": round(m(rtt), 3),
            "first_fetch_overhead_ms": r2(m(first) - m(host_first)),
            "cached_ratio": round(m(cached) / m(host_cached), 3),
        }
        if evidence:
            result.update({
                "first_evidence_ms_p50": r2(m(evidence)),
                "first_evidence_ms_p99": r2(pct(evidence, 99)),
                "first_fetch_agent_running_ms_p50": r2(m(first_running)),
                "channel_quote_ms_p50": r2(m(channel_quote)),
                "relay_connect_ms_p50": r2(m(relay_connect)),
                "relay_http_roundtrip_ms_p50": round(m(relay_rtt), 3),
            })
        result.update({"containers": args.containers, "evidence_containers": n_evidence,
                       "fetches": args.fetches, "simulated_tee": True})
        print(json.dumps(result))
        return 0
    finally:
        for cid in started:  # a container left behind by a failed run
            subprocess.run([rune, "--root", root, "delete", "--force", cid], check=False, env=env or None,
                           stdin=subprocess.DEVNULL, capture_output=True)
        agent.stop()
        if kbs is not None:
            kbs.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
