#!/usr/bin/env python3
"""RA-TLS handshakes per second vs plain TLS, same stack, same key type, loopback.

Both modes use the same pyOpenSSL-over-asyncio transport (``inclavare.ratls.aio``), P-256 keys,
TLS 1.3, no session resumption. Plain TLS: the server's certificate is signed by a CA the
client trusts (OpenSSL's chain verification). RA-TLS: the server's self-signed certificate
carries a simulated SGX quote; the client verifies evidence, key binding and policy — after the
first handshake from the verdict cache (evidence cached per certificate), as a long-running
client does. ``ratls_uncached_ms`` is one full verification (quote, collateral, chains) for
reference. Rounds alternate between the modes to share the machine's noise. Progress goes to
stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from OpenSSL import SSL, crypto  # noqa: E402

from inclavare.ratls import aio  # noqa: E402
from inclavare.ratls.attester import SimAuthorityAttester  # noqa: E402
from inclavare.ratls.issue import issue_certificate  # noqa: E402
from inclavare.ratls.policy import RatlsPolicy  # noqa: E402
from inclavare.ratls.tls import client_context, server_context  # noqa: E402
from inclavare.ratls.verifier import RatlsVerifier  # noqa: E402
from inclavare.tee.sim_authority import SimAuthority  # noqa: E402
from inclavare.verify.evidence import TrustConfig  # noqa: E402


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def plain_contexts() -> tuple[SSL.Context, SSL.Context]:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(ca_key, hashes.SHA256()))

    def base() -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return context

    server = base()
    server.use_certificate(leaf)
    server.use_privatekey(key)
    client = base()
    client.get_cert_store().add_cert(crypto.X509.from_cryptography(ca))
    client.set_verify(SSL.VERIFY_PEER, None)
    return server, client


async def handshakes(port: int, context: SSL.Context, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, writer = await aio.open_connection("127.0.0.1", port, context=context)
        writer.close()
        count += 1
    return count / (time.perf_counter() - start)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as state:
        authority = SimAuthority.load_or_create(state)
        mr = bytes(range(32))
        credentials = issue_certificate(SimAuthorityAttester(authority, mr))
        trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(),))
        verifier = RatlsVerifier(RatlsPolicy(mr_enclave=(mr,)), trust)
        t0 = time.perf_counter()
        RatlsVerifier(RatlsPolicy(mr_enclave=(mr,)), trust).verify(credentials.certificate_der)
        uncached_ms = (time.perf_counter() - t0) * 1000

        async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        plain_server, plain_client = plain_contexts()
        servers = {
            "tls": await aio.start_server(close_at_once, "127.0.0.1", 0, context=plain_server),
            "ratls": await aio.start_server(close_at_once, "127.0.0.1", 0,
                                            context=server_context(credentials)),
        }
        clients = {"tls": plain_client, "ratls": client_context(verifier)}
        ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
        for name in clients:  # warm up (fills the verdict cache for RA-TLS)
            await handshakes(ports[name], clients[name], 0.3)
        rates: dict[str, list[float]] = {"tls": [], "ratls": []}
        for round_number in range(args.rounds):
            for name in ("tls", "ratls") if round_number % 2 == 0 else ("ratls", "tls"):
                rate = await handshakes(ports[name], clients[name], args.seconds)
                rates[name].append(rate)
                print(f"round {round_number + 1}/{args.rounds} {name}: {rate:.0f} handshakes/s",
                      file=sys.stderr)
        for server in servers.values():
            server.close()
    tls, ratls = statistics.median(rates["tls"]), statistics.median(rates["ratls"])
    return {"benchmark": "ratls_handshake", "key_type": "ec-p256", "rounds": args.rounds,
            "seconds_per_round": args.seconds, "tls_per_s": round(tls, 1),
            "ratls_per_s": round(ratls, 1), "ratio": round(ratls / tls, 3),
            "ratls_uncached_ms": round(uncached_ms, 2),
            "baseline": "plain TLS, CA-signed P-256 certificate, same pyOpenSSL/asyncio stack"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
