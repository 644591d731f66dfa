"""TLS contexts in which the peer's RA-TLS certificate is verified during the handshake.

Python's ``ssl`` module can only check a peer against CA certificates; an RA-TLS peer presents a
self-signed certificate whose trust comes from the evidence inside it, and a server that asks
for a client certificate cannot accept one that does not chain to a loaded CA. pyOpenSSL exposes
OpenSSL's verification callback (``SSL_CTX_set_verify``), so the evidence is checked *inside*
the handshake: a refused peer gets a TLS alert and the handshake fails on both sides before any
application data is exchanged. The callback only records the outcome on the connection; the
error is re-raised by :func:`finish_handshake`, which also checks (defence in depth) that the
certificate the peer actually authenticated with is the one that was verified.

Session resumption is disabled: every connection presents and verifies a certificate.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from OpenSSL import SSL, crypto

from inclavare.errors import InclavareError, VerificationError
from inclavare.ratls.issue import RatlsCredentials
from inclavare.ratls.verifier import RatlsVerdict, RatlsVerifier


class HandshakeFailed(InclavareError):
    """The TLS handshake failed for a reason other than our verification of the peer (the peer
    refused us, spoke no TLS, or went away)."""


class PeerNotVerified(VerificationError):
    """The handshake completed without the peer's RA-TLS certificate being verified."""


@dataclass(slots=True)
class ConnectionState:
    """What the verification callback learnt about one connection."""

    verdict: RatlsVerdict | None = None
    verified_der: bytes | None = None
    error: BaseException | None = None


def connection_state(conn: SSL.Connection) -> ConnectionState:
    state = conn.get_app_data()
    if not isinstance(state, ConnectionState):
        state = ConnectionState()
        conn.set_app_data(state)
    return state


def _verify_callback(verifier: RatlsVerifier):  # type: ignore[no-untyped-def]
    def callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if depth != 0:
            return True  # trust comes from the leaf's evidence, not from a chain
        state = connection_state(conn)
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        try:
            state.verdict = verifier.verify(der)
        except InclavareError as exc:
            state.error, state.verdict, state.verified_der = exc, None, None
            return False
        except Exception as exc:  # never let a bug pass a peer
            state.error, state.verdict, state.verified_der = exc, None, None
            return False
        state.verified_der = der
        return True

    return callback


def _base_context(credentials: RatlsCredentials | None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if credentials is not None:
        from cryptography import x509

        context.use_certificate(x509.load_der_x509_certificate(credentials.certificate_der))
        context.use_privatekey(credentials.private_key)
        context.check_privatekey()
    return context


def client_context(verifier: RatlsVerifier, credentials: RatlsCredentials | None = None) -> SSL.Context:
    """A client context that verifies the server's RA-TLS certificate; with ``credentials`` it
    also presents our own (mutual RA-TLS)."""
    context = _base_context(credentials)
    context.set_verify(SSL.VERIFY_PEER, _verify_callback(verifier))
    context.set_app_data(verifier)
    return context


def server_context(credentials: RatlsCredentials, verifier: RatlsVerifier | None = None) -> SSL.Context:
    """A server context presenting ``credentials``; with a ``verifier`` it requires and verifies
    the client's RA-TLS certificate (mutual RA-TLS)."""
    context = _base_context(credentials)
    if verifier is not None:
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                           _verify_callback(verifier))
        context.set_app_data(verifier)
    else:
        context.set_verify(SSL.VERIFY_NONE, None)
    return context


def _verifies_peer(conn: SSL.Connection) -> bool:
    """Whether this connection's context is one of ours that verifies the peer's RA-TLS
    certificate (other contexts, e.g. plain TLS, pass through without a verdict)."""
    context = conn.get_context()
    return isinstance(context.get_app_data(), RatlsVerifier) and bool(
        context.get_verify_mode() & SSL.VERIFY_PEER)


def handshake_error(conn: SSL.Connection, error: BaseException) -> InclavareError:
    """The error to report for a failed handshake: our verification's reason when we refused
    the peer, else HandshakeFailed with OpenSSL's reason."""
    state = connection_state(conn)
    if isinstance(state.error, InclavareError):
        return state.error
    if state.error is not None:
        return PeerNotVerified(f"verifying the peer failed: {type(state.error).__name__}: "
                               f"{state.error}")
    if isinstance(error, InclavareError):
        return error
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        reasons = "; ".join(str(item[-1]) for item in error.args[0] if item)
        return HandshakeFailed(f"TLS handshake failed: {reasons}")
    if isinstance(error, SSL.SysCallError):
        return HandshakeFailed("TLS handshake failed: the peer closed the connection")
    return HandshakeFailed(f"TLS handshake failed: {error or type(error).__name__}")


def finish_handshake(conn: SSL.Connection) -> RatlsVerdict | None:
    """After a completed handshake: the peer's verdict (None when we did not ask for a peer
    certificate). PeerNotVerified if the authenticated certificate is not the verified one."""
    if not _verifies_peer(conn):
        return None
    state = connection_state(conn)
    peer = conn.get_peer_certificate()
    if peer is None or state.verdict is None or state.verified_der is None:
        raise PeerNotVerified("the peer's RA-TLS certificate was not verified")
    if crypto.dump_certificate(crypto.FILETYPE_ASN1, peer) != state.verified_der:
        raise PeerNotVerified("the peer authenticated with a certificate other than the "
                              "verified one")
    return state.verdict


def _blocking_handshake(conn: SSL.Connection, sock: socket.socket, timeout: float) -> RatlsVerdict | None:
    """Drive the handshake with a deadline (pyOpenSSL reports a socket timeout as WantRead),
    then leave the socket blocking for the caller's reads and writes."""
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    while True:
        try:
            conn.do_handshake()
            break
        except (SSL.WantReadError, SSL.WantWriteError) as want:
            remaining = deadline - time.monotonic()
            reading = isinstance(want, SSL.WantReadError)
            ready = select.select([sock] if reading else [], [] if reading else [sock], [],
                                  max(remaining, 0))
            if remaining <= 0 or not (ready[0] or ready[1]):
                raise HandshakeFailed(f"TLS handshake timed out after {timeout:g} s") from None
        except (SSL.Error, InclavareError) as exc:
            raise handshake_error(conn, exc) from None
    sock.setblocking(True)
    return finish_handshake(conn)


def wrap_client(sock: socket.socket, context: SSL.Context, *,
                timeout: float = 30) -> tuple[SSL.Connection, RatlsVerdict]:
    """Run the client handshake on a connected blocking socket; returns the TLS connection and
    the server's verdict. Raises VerificationError / HandshakeFailed (the socket is then closed)."""
    conn = SSL.Connection(context, sock)
    conn.set_app_data(ConnectionState())
    conn.set_connect_state()
    try:
        verdict = _blocking_handshake(conn, sock, timeout)
    except BaseException:
        sock.close()
        raise
    assert verdict is not None
    return conn, verdict


def wrap_server(sock: socket.socket, context: SSL.Context, *,
                timeout: float = 30) -> tuple[SSL.Connection, RatlsVerdict | None]:
    """Run the server handshake on an accepted blocking socket; the verdict is the client's in
    mutual mode, else None."""
    conn = SSL.Connection(context, sock)
    conn.set_app_data(ConnectionState())
    conn.set_accept_state()
    try:
        verdict = _blocking_handshake(conn, sock, timeout)
    except BaseException:
        sock.close()
        raise
    return conn, verdict


def connect(host: str, port: int, context: SSL.Context, *, timeout: float = 30) -> tuple[SSL.Connection, RatlsVerdict]:
    """Open an RA-TLS connection (blocking)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise HandshakeFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    return wrap_client(sock, context, timeout=timeout)
