"""KBS load: complete flows (auth + attest + resource) per second with C concurrent clients.

The server (a real ``inclavare kbs serve`` process) is pinned to core 0, this load generator to
core 1. Evidence: simulated SGX quotes (real quote v3 format, verified by the same DCAP code as
Intel's, trust anchor = the simulated root; ``--evidence sample`` for Trustee's sample TEE).
Each flow does the full real work on the server: session, evidence verification, Rego
appraisal, ES256 token signing, resource policy, JWE encryption; the client generates a P-256
key, binds it in the report data and decrypts the JWE. Baseline, same run: the same generator
doing three requests per "flow" against a route that does no work (404) - the HTTP ceiling.

    .venv/bin/python benchmarks/kbs_load.py [--concurrency 16] [--seconds 10] [--evidence sim|sample]

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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


def make_evidence(report_data: bytes) -> Any:
    """Simulated SGX quote (real quote v3 format, sim root) or Trustee's sample evidence."""
    if EVIDENCE["tee"] == "sample":
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode()}
    quote = EVIDENCE["authority"].quote(MR_ENCLAVE, report_data.ljust(64, b"\0"))
    return {"quote": base64.b64encode(quote).decode()}


async def full_flow(conn: Conn, resource: str) -> None:
    status, hdrs, body = await conn.request("POST", "/kbs/v0/auth", json.dumps(
        {"version": "0.4.0", "tee": EVIDENCE["tee"], "extra-params": {}}).encode(), {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"auth {status} {body[:200]!r}")
    cookie = hdrs["set-cookie"].split(";", 1)[0]
    nonce = json.loads(body)["nonce"]
    key = ec.generate_private_key(ec.SECP256R1())
    pub = jwk_from_public_key(key.public_key(), alg="ECDH-ES+A256KW")
    import hashlib

    rd = hashlib.sha384(rfc8785.dumps({"tee-pubkey": pub, "nonce": nonce, "additional-evidence": ""})).digest()
    doc = {"init-data": None, "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
           "tee-evidence": {"primary_evidence": make_evidence(rd), "additional_evidence": ""}}
    status, _, body = await conn.request("POST", "/kbs/v0/attest", json.dumps(doc).encode(),
                                         {"Content-Type": "application/json", "Cookie": cookie})
    if status != 200:
        raise RuntimeError(f"attest {status} {body[:200]!r}")
    status, _, body = await conn.request("GET", f"/kbs/v0/resource/{resource}", headers={"Cookie": cookie})
    if status != 200:
        raise RuntimeError(f"resource {status} {body[:200]!r}")
    if jwe.decrypt(key, json.loads(body)) != SECRET:
        raise RuntimeError("decrypted resource differs")


async def baseline_flow(conn: Conn, _resource: str) -> None:
    for method in ("POST", "POST", "GET"):
        status, _, _ = await conn.request(method, "/kbs/v0/no-such-plugin/x", b"{}")
        if status != 404:
            raise RuntimeError(f"baseline got {status}")


async def run_load(host: str, port: int, flow: Any, concurrency: int, seconds: float,
                   resource: str) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Conn(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await flow(conn, resource)
                    latencies.append(time.perf_counter() - started)
                except Exception as exc:  # counted as an error, connection re-opened
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    conn.close()
                    conn = Conn(host, port)
        finally:
            conn.close()

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


def start_server(directory: str, server_core: int | None) -> tuple[subprocess.Popen[bytes], str, int]:
    key = ed25519.Ed25519PrivateKey.generate()
    with open(os.path.join(directory, "admin.pub"), "wb") as fh:
        fh.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    with open(os.path.join(directory, "kbs.toml"), "w") as fh:
        fh.write('listen = "127.0.0.1:0"\nstore = "sqlite:///kbs.db"\nadmin_public_key = "admin.pub"\n'
                 'admin_audience = "kbs-load"\ninsecure_allow_sample_tee = true\nlog_level = "warning"\n'
                 # the load generator is one client address: lift the per-client /auth limits
                 '[limits]\nauth_rate_per_second = 1000000\nauth_burst = 1000000\n'
                 'max_sessions_per_client = 10000000\n'
                 '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
                 'insecure_sim_collateral = "sim/collateral.json"\n')

    def pin() -> None:
        if server_core is not None:
            os.sched_setaffinity(0, {server_core})

    proc = subprocess.Popen([sys.executable, "-m", "inclavare.cli.main", "kbs", "serve", "--config",
                             os.path.join(directory, "kbs.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on http://" not in line:
        raise SystemExit(f"kbs did not start: {line!r}")
    hostport = line.rsplit("http://", 1)[1].strip()
    host, port = hostport.rsplit(":", 1)
    import httpx

    headers = {"authorization": "Bearer " + make_admin_token(key, "kbs-load")}
    for _ in range(100):
        try:
            httpx.get(f"http://{hostport}/kbs/v0/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    from inclavare.crypto.b64 import b64url_encode

    r = httpx.post(f"http://{hostport}/kbs/v0/resource-policy", headers=headers,
                   json={"policy": b64url_encode(ALLOW.encode())})
    r.raise_for_status()
    httpx.post(f"http://{hostport}/kbs/v0/resource/bench/key/1", headers=headers, content=SECRET).raise_for_status()
    return proc, host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--evidence", choices=["sim", "sample"], default="sim",
                        help="sim: simulated SGX quotes verified with the sim root (default); sample: Trustee's sample TEE")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) >= 2 else None
    client_core = cores[1] if len(cores) >= 2 else None
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    split = (f"server pinned to core {server_core}, load generator to core {client_core}"
             if server_core is not None else "single core shared by server and load generator")
    log(split)
    with tempfile.TemporaryDirectory(prefix="kbs-load-") as d:
        from inclavare.tee.sim_authority import SimAuthority

        authority = SimAuthority.load_or_create(os.path.join(d, "authority"))
        authority.export(os.path.join(d, "sim"))
        EVIDENCE.update(tee="sgx" if args.evidence == "sim" else "sample", authority=authority)
        proc, host, port = start_server(d, server_core)
        try:
            resource = "bench/key/1"
            log("warm-up")
            asyncio.run(run_load(host, port, full_flow, args.concurrency, 1.0, resource))
            log(f"baseline: HTTP-only flows (3 x 404) for {args.seconds:.0f} s, C={args.concurrency}")
            baseline = asyncio.run(run_load(host, port, baseline_flow, args.concurrency, args.seconds, resource))
            log(f"baseline {baseline['flows_per_s']} flows/s")
            log(f"full flows ({args.evidence} evidence) for {args.seconds:.0f} s, C={args.concurrency}")
            result = asyncio.run(run_load(host, port, full_flow, args.concurrency, args.seconds, resource))
            log(f"result {result['flows_per_s']} flows/s p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms "
                f"errors {result['errors']} {result['first_errors']}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
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
        "cores": split,
        "baseline": {"name": "same generator, 3 no-op requests per flow (HTTP ceiling)",
                     "flows_per_s": baseline["flows_per_s"], "p50_ms": baseline["p50_ms"],
                     "errors": baseline["errors"]},
        "target_flows_per_s": 300,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
