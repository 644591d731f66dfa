"""Run the KBS: build the service from a ``KbsConfig`` and serve it with uvicorn.

The listening socket is bound before uvicorn starts so ``listen = "127.0.0.1:0"`` works; the
actual address is printed as ``inclavare kbs: listening on http://HOST:PORT``. With ``workers = N``
the socket is shared by N forked worker processes (``workers``), each with the listener bounds. The socket's
bounds (request deadline, connection caps) live in ``listener``; ``max_connections`` is kept
below the process's descriptor limit so accept never fails with EMFILE.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import socket
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto.key_files import load_private_key
from inclavare.errors import ConfigError
from inclavare.policy.rego_policy import PolicyCache
from inclavare.services.kbs.admin_auth import AdminAuth, load_admin_key
from inclavare.services.kbs.app import KbsService, create_app
from inclavare.services.kbs.attestation_service import BuiltinAttestationService
from inclavare.services.kbs.client_limits import TokenBuckets
from inclavare.services.kbs.config import KbsConfig, Limits
from inclavare.services.kbs.listener import guarded_protocol
from inclavare.services.kbs.hardware_verifier import build_hardware_verifier, configured_tees
from inclavare.services.kbs.rcar import RcarHandshake
from inclavare.services.kbs.resource_policy import ResourcePolicyEngine
from inclavare.services.kbs.sessions import SessionMap
from inclavare.services.kbs.store import open_store
from inclavare.services.logs import configure
from inclavare.services.kbs.token_verifier import TokenVerifier
from inclavare.services.kbs.workers import supervise

log = logging.getLogger("inclavare.kbs")


def load_token_key(path: str | None) -> ec.EllipticCurvePrivateKey:
    if path is None:
        log.info("attestation tokens signed with a key made at start (shared by this broker's workers; "
                 "set [attestation] token_signing_key so tokens survive restarts and work across replicas)")
        return ec.generate_private_key(ec.SECP256R1())
    key = load_private_key(path, "token_signing_key")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"token_signing_key {path} must be a P-256 (ES256) private key")
    return key


def warn_insecure(config: KbsConfig) -> None:
    if config.insecure_allow_sample_tee:
        log.warning("INSECURE: insecure_allow_sample_tee = true: the 'sample' TEE (no hardware, "
                    "no security) is accepted for attestation. Never use this in production.")
    if config.attestation.insecure_sim_trust_anchor:
        log.warning("INSECURE: insecure_sim_trust_anchor is set: quotes signed by the SIMULATED TEE "
                    "root %s are accepted. This is NOT a TEE and protects nothing; tokens mark such "
                    "evidence \"simulated\": true.", config.attestation.insecure_sim_trust_anchor)
    if config.attestation.insecure_sim_amd_ask_ark:
        log.warning("INSECURE: insecure_sim_amd_ask_ark is set: SNP reports signed under the SIMULATED "
                    "AMD root %s are accepted. This is NOT a TEE and protects nothing; tokens mark such "
                    "evidence \"simulated\": true.", config.attestation.insecure_sim_amd_ask_ark)
    if config.admin_public_key is None:
        log.warning("no admin_public_key configured: every admin endpoint is denied")


def build_service(config: KbsConfig, token_key: ec.EllipticCurvePrivateKey | None = None) -> KbsService:
    admin_key = load_admin_key(config.admin_public_key) if config.admin_public_key else None
    if token_key is None:
        token_key = load_token_key(config.attestation.token_signing_key)
    store = open_store(config.store)
    policies = PolicyCache()
    attestation = BuiltinAttestationService(
        store,
        token_key,
        allow_sample=config.insecure_allow_sample_tee,
        token_lifetime_s=config.attestation.token_lifetime_seconds,
        hardware_verifier=build_hardware_verifier(config.attestation),
        policies=policies,
        hardware_tees=configured_tees(config.attestation),
    )
    limits = config.limits
    # Sessions and /auth buckets live in the store: every worker and replica sees the same ones.
    auth_rate = TokenBuckets(limits.auth_rate_per_second, limits.auth_burst, clock=time.time, store=store)
    sessions = SessionMap(store, config.session_timeout_seconds, config.max_sessions,
                          max_per_client=limits.max_sessions_per_client, buckets=auth_rate)
    return KbsService(
        store=store,
        rcar=RcarHandshake(sessions, attestation, auth_rate),
        attestation=attestation,
        resource_policy=ResourcePolicyEngine(store, policies),
        tokens=TokenVerifier(token_key.public_key()),
        admin=AdminAuth(admin_key, config.admin_audience, config.admin_issuer),
        payload_limit=config.payload_limit_bytes,
        session_timeout_s=config.session_timeout_seconds,
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


# Descriptors kept free of connections: the store, policy files, logs, the listening socket.
RESERVED_FDS = 64


def fit_to_fd_limit(limits: Limits) -> Limits:
    """``max_connections`` below RLIMIT_NOFILE, so a flood is refused by the cap, not by EMFILE."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or limits.max_connections <= soft - RESERVED_FDS:
        return limits
    fitted = max(1, soft - RESERVED_FDS)
    log.info("max_connections lowered from %d to %d (RLIMIT_NOFILE %d, %d kept for files)",
             limits.max_connections, fitted, soft, RESERVED_FDS)
    return dataclasses.replace(limits, max_connections=fitted)


def serve(config: KbsConfig) -> int:
    """Serve until SIGTERM/SIGINT, in this process (``workers = 1``) or in forked workers."""
    configure("kbs", config.log_format, config.log_level)
    warn_insecure(config)
    limits = fit_to_fd_limit(config.limits)
    # Fail on a bad key or store before binding; one per-process token key for all workers.
    token_key = load_token_key(config.attestation.token_signing_key)
    open_store(config.store).close()  # creates the schema once, before workers race for it
    sock = bind(config.listen_host, config.listen_port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"inclavare kbs: listening on {config.scheme}://{shown}:{port}", flush=True)

    def run() -> None:
        run_worker(config, limits, token_key, sock)

    if config.workers == 1:
        run()
        return 0
    return supervise(config.workers, run, sock)


def run_worker(config: KbsConfig, limits: Limits, token_key: ec.EllipticCurvePrivateKey,
               sock: socket.socket) -> None:
    """One broker process: its own store connection, policy engines and connection caps."""
    import uvicorn

    service = build_service(config, token_key)
    server_config: Any = uvicorn.Config(
        create_app(service), log_level=config.log_level if config.log_level != "info" else "warning",
        access_log=False, lifespan="off", server_header=False, http=guarded_protocol(limits),
        # A client is its peer address (docs/kbs.md): X-Forwarded-For from a local process is not
        # trusted, or anyone on the host could pick the address its limits are counted against.
        proxy_headers=False,
        timeout_keep_alive=max(1, round(limits.keep_alive_timeout_seconds)),  # uvicorn takes whole seconds
        ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key,
    )
    try:
        uvicorn.Server(server_config).run(sockets=[sock])
    finally:
        service.store.close()
