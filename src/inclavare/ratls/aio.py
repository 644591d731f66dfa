"""asyncio RA-TLS: ``open_connection`` / ``start_server`` like :mod:`asyncio`'s, over pyOpenSSL.

asyncio's own TLS layer only takes an ``ssl.SSLContext``; this module runs a pyOpenSSL
connection over memory BIOs inside a protocol (the design of asyncio's ``sslproto``): bytes
from the socket go into OpenSSL, records OpenSSL produces go out through the transport. The
application protocol (a ``StreamReaderProtocol``) is only connected once the handshake —
including verification of the peer's RA-TLS certificate — has completed, so no application
byte flows to or from an unverified peer. ``writer.get_extra_info("ratls_verdict")`` returns
the peer's :class:`~inclavare.ratls.verifier.RatlsVerdict`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto

from inclavare.errors import InclavareError
from inclavare.ratls.tls import ConnectionState, HandshakeFailed, finish_handshake, handshake_error
from inclavare.ratls.verifier import RatlsVerdict

log = logging.getLogger("inclavare.ratls")

DEFAULT_HANDSHAKE_TIMEOUT = 30.0
_CHUNK = 256 * 1024

RefusedCallback = Callable[[BaseException, Any], None]
Admit = Callable[[Any], "Callable[[], None] | None"]  # peername -> release callback, or None: refuse


class TlsConnectionError(InclavareError, ConnectionError):
    """An established RA-TLS connection failed (e.g. the peer refused our certificate after
    the handshake completed on our side, as TLS 1.3 clients learn only on their first read)."""


class _AppTransport(asyncio.Transport):
    """The decrypted side of an RA-TLS connection, as the application protocol sees it."""

    def __init__(self, tls: _TlsProtocol) -> None:
        super().__init__()
        self._tls = tls

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls.extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.write_app(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._tls.write_app(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._tls.shutdown_tls()

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def is_closing(self) -> bool:
        return self._tls.is_closing()

    def pause_reading(self) -> None:
        self._tls.transport_call("pause_reading")

    def resume_reading(self) -> None:
        self._tls.transport_call("resume_reading")

    def is_reading(self) -> bool:
        return bool(self._tls.transport_call("is_reading"))

    def get_write_buffer_size(self) -> int:
        return int(self._tls.transport_call("get_write_buffer_size") or 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tls.transport_call("set_write_buffer_limits", high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls.app_protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._tls.app_protocol is not None
        return self._tls.app_protocol


class _TlsProtocol(asyncio.Protocol):
    """TLS over the socket transport; the application protocol sits on :class:`_AppTransport`."""

    def __init__(self, context: SSL.Context, *, server_side: bool,
                 app_factory: Callable[[], asyncio.Protocol], handshake_timeout: float,
                 on_refused: RefusedCallback | None = None, admit: Admit | None = None) -> None:
        self._conn = SSL.Connection(context, None)
        self._conn.set_app_data(ConnectionState())
        if server_side:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self._app_factory = app_factory
        self.app_protocol: asyncio.BaseProtocol | None = None
        self.app_transport = _AppTransport(self)
        self._transport: asyncio.Transport | None = None
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._on_refused = on_refused
        self._admit = admit
        self._release: Callable[[], None] | None = None
        self._server_side = server_side
        self._handshaken = False
        self._closed = False
        self._error: Exception | None = None
        self.verdict: RatlsVerdict | None = None
        self.handshake_done: asyncio.Future[RatlsVerdict | None] = (
            asyncio.get_running_loop().create_future())

    # -- socket side --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._admit is not None:
            self._release = self._admit(transport.get_extra_info("peername"))
            if self._release is None:  # over a cap: closed before any TLS work, not reported
                self._closed = self._handshaken = True
                transport.abort()
                return
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._timed_out)
        self._advance_handshake()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._conn.bio_write(data)
        if not self._handshaken:
            self._advance_handshake()
        if self._handshaken:
            self._read_app()

    def eof_received(self) -> bool | None:
        if not self._handshaken:
            self._fail(HandshakeFailed("the peer closed the connection during the TLS handshake"))
            return False
        keep_open = self.app_protocol.eof_received() if isinstance(self.app_protocol, asyncio.Protocol) else False
        return bool(keep_open)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release()
        if self._transport is None:
            return  # refused by admission
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if not self._handshaken:
            self._fail(HandshakeFailed("the connection was lost during the TLS handshake"))
        elif self.app_protocol is not None:
            app, self.app_protocol = self.app_protocol, None
            app.connection_lost(self._error or exc)

    def pause_writing(self) -> None:
        if self.app_protocol is not None:
            self.app_protocol.pause_writing()

    def resume_writing(self) -> None:
        if self.app_protocol is not None:
            self.app_protocol.resume_writing()

    # -- TLS machinery ----------------------------------------------------------------------

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(_CHUNK))
            except SSL.WantReadError:
                break
        if chunks and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(chunks))

    def _advance_handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except (SSL.Error, InclavareError) as exc:
            self._flush()  # the alert tells the peer why
            self._fail(handshake_error(self._conn, exc))
            return
        self._flush()
        try:
            self.verdict = finish_handshake(self._conn)
        except InclavareError as exc:
            self._fail(exc)
            return
        self._handshaken = True
        if self._timer is not None:
            self._timer.cancel()
        self.app_protocol = self._app_factory()
        self.app_protocol.connection_made(self.app_transport)
        if not self.handshake_done.done():
            self.handshake_done.set_result(self.verdict)

    def _read_app(self) -> None:
        while self.app_protocol is not None and not self._closed:
            try:
                data = self._conn.recv(_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                if isinstance(self.app_protocol, asyncio.Protocol) and not self.app_protocol.eof_received():
                    self.close()
                break
            except SSL.Error as exc:
                self._error = TlsConnectionError(str(handshake_error(self._conn, exc)).replace(
                    "TLS handshake failed", "TLS connection failed"))
                self.abort()
                break
            if isinstance(self.app_protocol, asyncio.Protocol):
                self.app_protocol.data_received(data)
        self._flush()

    def _fail(self, error: InclavareError) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.handshake_done.done():
            self.handshake_done.set_exception(error)
            if self._server_side:
                self.handshake_done.exception()  # retrieved: reported through on_refused
                peer = self._transport.get_extra_info("peername") if self._transport else None
                if self._on_refused is not None:
                    self._on_refused(error, peer)
                else:
                    log.warning("refused RA-TLS peer %s: %s", peer, error)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closed = True

    def _timed_out(self) -> None:
        if not self._handshaken:
            self._fail(HandshakeFailed(f"TLS handshake timed out after {self._timeout:g} s"))
            if self._transport is not None:
                self._transport.abort()

    # -- application side -------------------------------------------------------------------

    def extra_info(self, name: str, default: Any) -> Any:
        if name == "ratls_verdict":
            return self.verdict
        if name == "ssl_object":
            return self._conn
        if name == "peer_certificate":
            peer = self._conn.get_peer_certificate()
            return crypto.dump_certificate(crypto.FILETYPE_ASN1, peer) if peer is not None else default
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def transport_call(self, method: str, *args: Any) -> Any:
        if self._transport is None:
            return None
        return getattr(self._transport, method)(*args)

    def write_app(self, data: bytes) -> None:
        if self._closed or not data:
            return
        try:
            self._conn.sendall(data)
        except SSL.Error as exc:
            log.debug("TLS write failed: %s", exc)
            self.abort()
            return
        self._flush()

    def shutdown_tls(self) -> None:
        """Send close_notify (our write side ends; reading continues)."""
        if self._closed:
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def close(self) -> None:
        if not self._closed and self._handshaken:
            self.shutdown_tls()
        self._closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def is_closing(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()


async def open_connection(
    host: str, port: int, *, context: SSL.Context,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, limit: int = 2 ** 16, **kwargs: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and complete the RA-TLS handshake; the streams exist only for a verified peer.
    Raises the verification error (a VerificationError) or HandshakeFailed."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        transport, tls = await loop.create_connection(
            lambda: _TlsProtocol(context, server_side=False, app_factory=lambda: app,
                                 handshake_timeout=handshake_timeout), host, port, **kwargs)
    except OSError as exc:
        raise HandshakeFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    try:
        await tls.handshake_done
    except BaseException:
        transport.close()
        raise
    writer = asyncio.StreamWriter(tls.app_transport, app, reader, loop)
    return reader, writer


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    host: str | None = None, port: int | None = None, *, context: SSL.Context,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, on_refused: RefusedCallback | None = None,
    limit: int = 2 ** 16, admit: Admit | None = None, **kwargs: Any,
) -> asyncio.Server:
    """An RA-TLS server: ``client_connected_cb(reader, writer)`` runs only for clients whose
    handshake (and, in mutual mode, RA-TLS verification) succeeded; refused clients are reported
    to ``on_refused(error, peername)`` (logged by default). ``admit(peername)`` is asked first,
    before any TLS work: it returns a release callback (called when the connection ends), or
    None to close the connection at once."""
    loop = asyncio.get_running_loop()

    def factory() -> _TlsProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
        return _TlsProtocol(context, server_side=True, app_factory=lambda: app,
                            handshake_timeout=handshake_timeout, on_refused=on_refused, admit=admit)

    return await loop.create_server(factory, host, port, **kwargs)
