"""ocicrypt's gRPC ``keyprovider.KeyProviderService``: the same requests as the cmd form, served.

ocicrypt dials ``"grpc": ADDRESS`` without TLS, so the service listens on a unix socket (0600,
the tenant's own tooling is its only client) or on loopback TCP; non-loopback addresses are
refused. Bounded like every listener here: few workers, capped concurrent RPCs, small messages,
a handshake timeout.
"""

from __future__ import annotations

import logging
import os
from concurrent import futures
from typing import Any

import grpc

from inclavare.errors import ConfigError, InclavareError
from inclavare.images import keyprovider_pb2 as pb
from inclavare.images import keyprovider_pb2_grpc as rpc
from inclavare.images.keyprovider import MAX_REQUEST, PROVIDER_NAME, TenantKeys, handle

log = logging.getLogger("inclavare.keyprovider")

MAX_WORKERS = 4  # each call may wait on the KBS (admin timeout); ocicrypt calls once per layer
MAX_CONCURRENT_RPCS = 16  # beyond this gRPC answers RESOURCE_EXHAUSTED at once
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REQUEST),
    ("grpc.max_send_message_length", MAX_REQUEST),
    ("grpc.max_concurrent_streams", MAX_CONCURRENT_RPCS),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_connection_idle_ms", 300_000),
    ("grpc.server_handshake_timeout_ms", 10_000),
]


def check_listen(address: str) -> str:
    """``unix:///PATH`` or ``127.0.0.1:PORT`` / ``[::1]:PORT`` / ``localhost:PORT``."""
    if address.startswith("unix://"):
        if not address[len("unix://"):].startswith("/"):
            raise ConfigError(f"--listen {address[:120]!r}: a unix socket needs an absolute path (unix:///PATH)")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or host not in ("127.0.0.1", "[::1]", "localhost"):
        raise ConfigError(f"--listen {address[:120]!r}: ocicrypt speaks plaintext gRPC, so only "
                          "unix:///PATH or a loopback HOST:PORT")
    return address


class _Servicer(rpc.KeyProviderServiceServicer):
    def __init__(self, keys: TenantKeys, name: str) -> None:
        self.keys = keys
        self.name = name

    def _call(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            out = handle(request.KeyProviderKeyWrapProtocolInput, self.keys, self.name)
        except InclavareError as exc:
            log.warning("refused: %s", exc)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.keyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=out)

    WrapKey = _call
    UnWrapKey = _call


def _replace_stale(path: str) -> None:
    """Remove a socket a killed provider left; never take over one a live process serves."""
    from inclavare.services.unix_http import socket_is_served

    if socket_is_served(path):
        raise ConfigError(f"{path}: another process is serving on this socket; stop it first (or choose another path)")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def start_server(address: str, keys: TenantKeys, name: str = PROVIDER_NAME) -> tuple[grpc.Server, str]:
    """Start serving; returns the server and the address ocicrypt should dial (port resolved)."""
    check_listen(address)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="kp"),
                         options=SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    rpc.add_KeyProviderServiceServicer_to_server(_Servicer(keys, name), server)
    old_umask = os.umask(0o177)
    try:
        if address.startswith("unix://"):
            _replace_stale(address[len("unix://"):])
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    finally:
        os.umask(old_umask)
    if port == 0:
        raise ConfigError(f"cannot listen on {address}")
    server.start()
    if not address.startswith("unix://"):
        address = f"{address.rpartition(':')[0]}:{port}"
    return server, address
