"""KBS load: complete flows (auth + attest + resource) per second with C concurrent clients.

The broker is real ``inclavare kbs serve`` processes: ``--replicas R`` brokers sharing one store
(default: one SQLite file; ``--store postgresql://...`` for PostgreSQL), each with ``--workers W``
processes on one listening socket. With several replicas each client sends every request to the
next replica (no stickiness). By default (W = 2, R = 1) the broker's workers and this load
generator share all cores, unpinned (``--pin``: broker on core 0, generator on core 1). Evidence: simulated SGX quotes (real quote v3 format, verified by the same DCAP code as
Intel's, trust anchor = the simulated root; ``--evidence sample`` for Trustee's sample TEE).
Each flow does the full real work on the server: session, evidence verification, Rego
appraisal, ES256 token signing, resource policy, JWE encryption; the client generates a P-256
key, binds it in the report data and decrypts the JWE. Baseline, same run: the same generator
doing three requests per "flow" against a route that does no work (404) - the HTTP ceiling.

    .venv/bin/python benchmarks/kbs_load.py [--concurrency 8] [--seconds 10] [--evidence sim|sample]
        [--workers 2] [--replicas 1] [--store URL] [--pin]

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from inclavare.crypto import jwe
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.services.kbs.admin_auth import make_admin_token

MR_ENCLAVE = bytes.fromhex("6f" * 32)
# The benchmark opts in to simulated evidence of one enclave measurement (the default policy denies it).
ALLOW = ('package policy\nimport rego.v1\ndefault allow := false\n'
         'allow if {\n  data.plugin == "resource"\n'
         '  ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
         '  ev.sample\n}\n'
         'allow if {\n  data.plugin == "resource"\n'
         '  ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
         '  ev.simulated == true\n'
         f'  ev.sgx.mr_enclave == "{MR_ENCLAVE.hex()}"\n}}\n')
SECRET = b"benchmark secret " * 4


def log(msg: str) -> None:
    print(f"kbs_load: {msg}", file=sys.stderr, flush=True)


class Conn:
    """A minimal keep-alive HTTP/1.1 client connection (the load generator must stay lean)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        hdrs: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        data = await self.reader.readexactly(int(hdrs.get("content-length", "0")))
        return int(status_line.split()[1]), hdrs, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


EVIDENCE: dict[str, Any] = {"tee": "sgx", "authority": None}
AUTH_BODY = b""
JSON_HEADERS = {"Content-Type": "application/json"}


def make_evidence(report_data: bytes) -> Any:
    """Simulated SGX quote (real quote v3 format, sim root) or Trustee's sample evidence."""
    if EVIDENCE["tee"] == "sample":
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode()}
    quote = EVIDENCE["authority"].quote(MR_ENCLAVE, report_data.ljust(64, b"\0"))
    return {"quote": base64.b64encode(quote).decode()}


class Replicas:
    """One keep-alive connection per replica; each request goes to the next one (no stickiness)."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.conns = [Conn(host, port) for host, port in addresses]
        self.turn = 0

    def next(self) -> Conn:
        self.turn += 1
        return self.conns[self.turn % len(self.conns)]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


async def full_flow(conns: Replicas, resource: str) -> None:
    status, hdrs, body = await conns.next().request("POST", "/kbs/v0/auth", AUTH_BODY, JSON_HEADERS)
    if status != 200:
        raise RuntimeError(f"auth {status} {body[:200]!r}")
    cookie = hdrs["set-cookie"].split(";", 1)[0]
    nonce = json.loads(body)["nonce"]
    key = ec.generate_private_key(ec.SECP256R1())
    pub = jwk_from_public_key(key.public_key(), alg="ECDH-ES+A256KW")
    rd = hashlib.sha384(rfc8785.dumps({"tee-pubkey": pub, "nonce": nonce, "additional-evidence": ""})).digest()
    doc = {"init-data": None, "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
           "tee-evidence": {"primary_evidence": make_evidence(rd), "additional_evidence": ""}}
    status, _, body = await conns.next().request("POST", "/kbs/v0/attest", json.dumps(doc).encode(),
                                                 {"Content-Type": "application/json", "Cookie": cookie})
    if status != 200:
        raise RuntimeError(f"attest {status} {body[:200]!r}")
    status, _, body = await conns.next().request("GET", f"/kbs/v0/resource/{resource}", headers={"Cookie": cookie})
    if status != 200:
        raise RuntimeError(f"resource {status} {body[:200]!r}")
    if jwe.decrypt(key, json.loads(body)) != SECRET:
        raise RuntimeError("decrypted resource differs")


async def baseline_flow(conns: Replicas, _resource: str) -> None:
    for method in ("POST", "POST", "GET"):
        status, _, _ = await conns.next().request(method, "/kbs/v0/no-such-plugin/x", b"{}")
        if status != 404:
            raise RuntimeError(f"baseline got {status}")


async def run_load(addresses: list[tuple[str, int]], flow: Any, concurrency: int, seconds: float,
                   resource: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        # Each flow is a new client (as each enclave is): its own connections, kept alive for its
        # three requests. New connections also spread the load over the broker's workers.
        while time.perf_counter() < deadline:
            conns = Replicas(addresses)
            started = time.perf_counter()
            try:
                await flow(conns, resource)
                latencies.append(time.perf_counter() - started)
            except Exception as exc:  # counted as an error
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                conns.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "flows": len(latencies),
        "flows_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(lat_ms), 2) if lat_ms else None,
        "p99_ms": round(lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))], 2) if lat_ms else None,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def write_config(directory: str, store: str, workers: int) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    with open(os.path.join(directory, "admin.pub"), "wb") as fh:
        fh.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    token = ec.generate_private_key(ec.SECP256R1())  # shared by the replicas, as a deployment would
    with open(os.path.join(directory, "token.key"), "wb") as fh:
        fh.write(token.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    with open(os.path.join(directory, "kbs.toml"), "w") as fh:
        fh.write(f'listen = "127.0.0.1:0"\nstore = "{store}"\nworkers = {workers}\n'
                 'admin_public_key = "admin.pub"\n'
                 'admin_audience = "kbs-load"\ninsecure_allow_sample_tee = true\nlog_level = "warning"\n'
                 # the load generator is one client address: lift the per-client /auth limits
                 '[limits]\nauth_rate_per_second = 1000000\nauth_burst = 1000000\n'
                 'max_sessions_per_client = 10000000\n'
                 '[attestation]\ntoken_signing_key = "token.key"\n'
                 'insecure_sim_trust_anchor = "sim/root-ca.pem"\n'
                 'insecure_sim_collateral = "sim/collateral.json"\n')
    return key


def start_server(directory: str, server_cores: set[int] | None) -> tuple[subprocess.Popen[bytes], str, int]:
    def pin() -> None:
        if server_cores is not None:
            os.sched_setaffinity(0, server_cores)

    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.main", "kbs", "serve", "--config",
                             os.path.join(directory, "kbs.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on http://" not in line:
        raise SystemExit(f"kbs did not start: {line!r}")
    host, port = line.rsplit("http://", 1)[1].strip().rsplit(":", 1)
    import httpx

    for _ in range(100):
        try:
            httpx.get(f"http://{host}:{port}/kbs/v0/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, host, int(port)


def provision(address: tuple[str, int], key: ed25519.Ed25519PrivateKey) -> None:
    """Through one replica: the policy and the secret (every replica sees them through the store)."""
    import httpx

    from inclavare.crypto.b64 import b64url_encode

    url = f"http://{address[0]}:{address[1]}/kbs/v0"
    headers = {"authorization": "Bearer " + make_admin_token(key, "kbs-load")}
    httpx.post(f"{url}/resource-policy", headers=headers,
               json={"policy": b64url_encode(ALLOW.encode())}).raise_for_status()
    httpx.post(f"{url}/resource/bench/key/1", headers=headers, content=SECRET).raise_for_status()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children (the brokers' workers)."""
    total = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run(coro: Any) -> Any:
    """The load generator's event loop: uvloop when installed (as the broker's uvicorn uses)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--evidence", choices=["sim", "sample"], default="sim",
                        help="sim: simulated SGX quotes verified with the sim root (default); sample: Trustee's sample TEE")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per broker (default 2)")
    parser.add_argument("--replicas", type=int, default=1, help="brokers sharing the store (default 1)")
    parser.add_argument("--store", default="sqlite:///kbs.db",
                        help="store URL shared by the replicas (default: a SQLite file in a temporary directory)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the brokers to the first core and the generator to the second")
    args = parser.parse_args()
    global AUTH_BODY
    cores = sorted(os.sched_getaffinity(0))
    server_cores: set[int] | None = None
    if args.pin and len(cores) >= 2:
        server_cores = {cores[0]}
        os.sched_setaffinity(0, {cores[1]})
        split = f"brokers pinned to core {cores[0]}, load generator to core {cores[1]}"
    else:
        split = (f"{args.replicas} x {args.workers} broker processes and the load generator share "
                 f"cores {','.join(map(str, cores))} (unpinned)")
    configuration = f"{args.replicas} replica(s) x {args.workers} worker(s), store {args.store.split(':', 1)[0]}"
    log(f"{configuration}; {split}")
    AUTH_BODY = json.dumps({"version": "0.4.0", "tee": "sgx" if args.evidence == "sim" else "sample",
                            "extra-params": {}}).encode()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="kbs-load-") as d:
        from inclavare.tee.sim_authority import SimAuthority

        authority = SimAuthority.load_or_create(os.path.join(d, "authority"))
        authority.export(os.path.join(d, "sim"))
        EVIDENCE.update(tee="sgx" if args.evidence == "sim" else "sample", authority=authority)
        key = write_config(d, args.store, args.workers)
        try:
            addresses = []
            for _ in range(args.replicas):
                proc, host, port = start_server(d, server_cores)
                procs.append(proc)
                addresses.append((host, port))
            provision(addresses[0], key)
            resource = "bench/key/1"
            log("warm-up")
            run(run_load(addresses, full_flow, args.concurrency, 1.0, resource))
            log(f"baseline: HTTP-only flows (3 x 404) for {args.seconds:.0f} s, C={args.concurrency}")
            baseline = run(run_load(addresses, baseline_flow, args.concurrency, args.seconds, resource))
            log(f"baseline {baseline['flows_per_s']} flows/s")
            log(f"full flows ({args.evidence} evidence) for {args.seconds:.0f} s, C={args.concurrency}")
            broker_cpu, own_cpu = cpu_seconds([p.pid for p in procs]), time.process_time()
            result = run(run_load(addresses, full_flow, args.concurrency, args.seconds, resource))
            flows = max(1, result["flows"])
            result["broker_cpu_ms_per_flow"] = round((cpu_seconds([p.pid for p in procs]) - broker_cpu) * 1000 / flows, 3)
            result["generator_cpu_ms_per_flow"] = round((time.process_time() - own_cpu) * 1000 / flows, 3)
            log(f"CPU per flow: brokers {result['broker_cpu_ms_per_flow']} ms, "
                f"load generator {result['generator_cpu_ms_per_flow']} ms")
            log(f"result {result['flows_per_s']} flows/s p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms "
                f"errors {result['errors']} {result['first_errors']}")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(40)
    out = {
        "benchmark": "kbs_load",
        "flows_per_s": result["flows_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["errors"],
        "flows": result["flows"],
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "evidence": args.evidence,
        "workers": args.workers,
        "replicas": args.replicas,
        "configuration": configuration,
        "cores": split,
        "cpu_ms_per_flow": {"brokers": result["broker_cpu_ms_per_flow"],
                            "load_generator": result["generator_cpu_ms_per_flow"]},
        "baseline": {"name": "same generator, 3 no-op requests per flow (HTTP ceiling)",
                     "flows_per_s": baseline["flows_per_s"], "p50_ms": baseline["p50_ms"],
                     "errors": baseline["errors"]},
        "target": {"flows_per_s": 600, "p99_ms": 50, "errors": 0},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
