"""RA-TLS handshakes over loopback: the peer is verified inside the handshake, in both
directions in mutual mode, and no application byte reaches an unverified peer."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from OpenSSL import SSL

from inclavare.errors import VerificationError
from inclavare.ratls import aio
from inclavare.ratls.attester import SimAuthorityAttester
from inclavare.ratls.certificate import IssuerNotTrusted, NotAnRatlsCertificate
from inclavare.ratls.issue import RatlsCredentials, issue_certificate
from inclavare.ratls.policy import PolicyMismatch
from inclavare.ratls.tls import (
    HandshakeFailed,
    client_context,
    connect,
    server_context,
    wrap_server,
)
from tests.ratls.conftest import (
    MR_A,
    MR_B,
    VerifierFactory,
    build_certificate,
    endorsed_certificate,
    make_ca,
)
from tests.support.loopback import serve_in_background

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def creds_a(attester_a: SimAuthorityAttester) -> RatlsCredentials:
    return issue_certificate(attester_a)


@pytest.fixture(scope="module")
def creds_b(attester_b: SimAuthorityAttester) -> RatlsCredentials:
    return issue_certificate(attester_b)


@pytest.fixture(scope="module")
def plain_creds() -> RatlsCredentials:
    der, key = build_certificate([])
    return RatlsCredentials(der, key)


class EchoServer:
    """A blocking RA-TLS echo server (a thread per connection); records what it received and why
    it refused."""

    def __init__(self, context: SSL.Context) -> None:
        self.context = context
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.verdicts: list[object] = []
        self.listener = serve_in_background(self._serve_one)
        self.port = self.listener.getsockname()[1]

    def _serve_one(self, sock: socket.socket) -> None:
        try:
            conn, verdict = wrap_server(sock, self.context, timeout=10)
        except Exception as exc:
            self.errors.append(exc)
            sock.close()
            return
        self.verdicts.append(verdict)
        try:
            data = conn.recv(1024)
            self.received.append(data)
            conn.sendall(data[::-1])
            conn.shutdown()
        except SSL.Error:
            pass
        finally:
            conn.close()
            sock.close()

    def close(self) -> None:
        self.listener.close()  # wakes the accept loop first (tests.support.loopback)


@pytest.fixture
def servers() -> Iterator[list[EchoServer]]:
    made: list[EchoServer] = []
    yield made
    for server in made:
        server.close()


def test_one_way_ratls_echo(creds_a: RatlsCredentials, make_verifier: VerifierFactory,
                            servers: list[EchoServer]) -> None:
    server = EchoServer(server_context(creds_a))
    servers.append(server)
    conn, verdict = connect("127.0.0.1", server.port, client_context(make_verifier()))
    assert verdict.claims["mr_enclave"] == MR_A.hex()
    conn.sendall(b"abc")
    assert conn.recv(10) == b"cba"
    conn.close()


def test_mutual_ratls_verifies_both_sides(creds_a: RatlsCredentials, creds_b: RatlsCredentials,
                                          make_verifier: VerifierFactory, servers: list[EchoServer]) -> None:
    server = EchoServer(server_context(creds_a, make_verifier(mr_enclave=(MR_B,))))
    servers.append(server)
    conn, verdict = connect("127.0.0.1", server.port, client_context(make_verifier(), creds_b))
    conn.sendall(b"mutual")
    assert conn.recv(10) == b"lautum"
    assert verdict.claims["mr_enclave"] == MR_A.hex()
    assert server.verdicts[0].claims["mr_enclave"] == MR_B.hex()  # type: ignore[attr-defined]


def test_client_refuses_wrong_measurement_and_plain_certificate(
        creds_b: RatlsCredentials, plain_creds: RatlsCredentials, make_verifier: VerifierFactory,
        servers: list[EchoServer]) -> None:
    for creds, error in ((creds_b, PolicyMismatch), (plain_creds, NotAnRatlsCertificate)):
        server = EchoServer(server_context(creds))
        servers.append(server)
        with pytest.raises(error):
            connect("127.0.0.1", server.port, client_context(make_verifier()))
        assert server.received == []


def test_endorsed_server_certificate_needs_its_issuer_ca(
        attester_a: SimAuthorityAttester, make_verifier: VerifierFactory,
        servers: list[EchoServer]) -> None:
    ca, ca_key = make_ca("Tenant RA-TLS CA")
    server = EchoServer(server_context(RatlsCredentials(*endorsed_certificate(attester_a, ca, ca_key))))
    servers.append(server)
    with pytest.raises(IssuerNotTrusted):
        connect("127.0.0.1", server.port, client_context(make_verifier()))
    conn, verdict = connect("127.0.0.1", server.port,
                            client_context(make_verifier(mr_enclave=(MR_A,), issuer_cas=(ca,))))
    assert verdict.claims["mr_enclave"] == MR_A.hex()
    conn.sendall(b"endorsed")
    assert conn.recv(10) == b"desrodne"
    conn.close()
    assert server.received == [b"endorsed"]


def test_server_refuses_unverified_clients_before_any_data(
        creds_a: RatlsCredentials, creds_b: RatlsCredentials, plain_creds: RatlsCredentials,
        make_verifier: VerifierFactory, servers: list[EchoServer]) -> None:
    server = EchoServer(server_context(creds_a, make_verifier(mr_enclave=(MR_B,))))
    servers.append(server)
    for client_creds in (None, plain_creds, creds_a):  # none, plain, wrong measurement
        try:
            conn, _ = connect("127.0.0.1", server.port, client_context(make_verifier(), client_creds))
        except HandshakeFailed:
            continue
        with pytest.raises(SSL.Error):  # TLS 1.3: the refusal arrives as an alert (or a reset)
            conn.sendall(b"secret")
            conn.recv(10)
    for _ in range(100):
        if len(server.errors) == 3:
            break
        threading.Event().wait(0.02)
    assert server.received == []
    assert [type(e).__name__ for e in server.errors] == ["HandshakeFailed", "NotAnRatlsCertificate",
                                                          "PolicyMismatch"]


def test_asyncio_mutual_streams(creds_a: RatlsCredentials, creds_b: RatlsCredentials,
                                make_verifier: VerifierFactory) -> None:
    refused: list[BaseException] = []
    seen: list[object] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("ratls_verdict"))
            while data := await reader.read(1024):
                writer.write(data.upper())
                await writer.drain()
            writer.close()

        server = await aio.start_server(handle, "127.0.0.1", 0,
                                        context=server_context(creds_a, make_verifier(mr_enclave=(MR_B,))),
                                        on_refused=lambda exc, peer: refused.append(exc))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await aio.open_connection("127.0.0.1", port,
                                                   context=client_context(make_verifier(), creds_b))
        assert writer.get_extra_info("ratls_verdict").claims["mr_enclave"] == MR_A.hex()
        assert writer.get_extra_info("peer_certificate") == creds_a.certificate_der
        payload = b"x" * 300_000
        writer.write(payload)
        await writer.drain()
        writer.write_eof()  # close_notify; the echo still comes back (half-close)
        assert await reader.read() == payload.upper()
        writer.close()
        with pytest.raises(VerificationError):
            await aio.open_connection("127.0.0.1", port,
                                      context=client_context(make_verifier(mr_enclave=(MR_B,)), creds_b))
        reader, writer = await aio.open_connection("127.0.0.1", port,
                                                   context=client_context(make_verifier(), creds_a))
        writer.write(b"from the wrong enclave")
        with pytest.raises(aio.TlsConnectionError):
            await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert len(seen) == 1 and seen[0].claims["mr_enclave"] == MR_B.hex()  # type: ignore[attr-defined]
    assert [type(e).__name__ for e in refused] == ["HandshakeFailed", "PolicyMismatch"]


def test_asyncio_handshake_timeout_and_non_tls_peer(creds_a: RatlsCredentials,
                                                     make_verifier: VerifierFactory) -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)

        async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            writer.close()

        for handler, error in ((silent, "timed out"), (not_tls, "TLS handshake failed")):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeFailed, match=error):
                await aio.open_connection("127.0.0.1", port, context=client_context(make_verifier()),
                                          handshake_timeout=0.5)
            server.close()
        with pytest.raises(HandshakeFailed, match="cannot connect"):
            await aio.open_connection("127.0.0.1", port, context=client_context(make_verifier()))

    asyncio.run(main())
