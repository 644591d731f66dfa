"""A bounded HTTP/1.1 server on unix sockets: h11 speaks the protocol, this module sets the limits.

Every listening socket of the node agent and of the enclave agent is served here, so all of them
hold the same way when someone pushes on them:

* the caller is identified from the kernel (:mod:`inclavare.services.peer`) and admitted or
  refused *before* a byte of its request is read;
* open connections are capped in all and per listening socket (over the cap: an immediate
  ``503``), requests are handled by a capped pool of worker threads;
* a request must arrive whole within a deadline (a client that trickles bytes is cut off with
  ``408``), its head and body have size limits (``431``/``413``), the answer is written under a
  deadline too;
* ``CONNECT`` tunnels (the node agent's opaque relay) are capped, idle-timed-out, and copy bytes
  without looking at them.

Handlers raise :class:`HttpError` (or any ``InclavareError``) and get a one-line JSON error
(``{"detail": ..., "type": ...}``); an unexpected exception is logged and answered ``500``
without a traceback.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit

import h11

from inclavare import fastjson
from inclavare.errors import AgentError, ConfigError, FormatError, InclavareError, KbsError, NotSupportedError
from inclavare.formats.strict_json import loads_strict
from inclavare.services.peer import Peer, identify

REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
           405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict", 413: b"Content Too Large",
           431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented",
           502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}


class HttpError(InclavareError):
    """An answer other than success, with the status and the one-line reason to send."""

    def __init__(self, status: int, detail: str, kind: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    workers: int = 8  # threads handling requests
    max_connections: int = 256  # open connections in all (each holds a file descriptor)
    per_listener: int = 16  # open connections on one listening socket
    max_tunnels: int = 64  # CONNECT tunnels in all
    tunnels_per_listener: int = 8
    request_deadline: float = 10.0  # to receive a whole request (head and body)
    response_deadline: float = 30.0  # to write the answer
    max_head: int = 16 * 1024
    max_body: int = 1 << 20
    tunnel_idle: float = 60.0  # a tunnel with no byte either way for this long is closed
    tunnel_connect: float = 10.0  # to reach a tunnel's destination
    max_lingering: int = 32  # refused connections kept open so their clients can read the answer
    linger: float = 1.0  # for at most this long


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer: Peer | None
    listener: Listener

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query, keep_blank_values=True).items()}

    def raw_query(self) -> dict[str, bytes]:
        """Query values as percent-decoded bytes (first occurrence wins): binary data passes."""
        out: dict[str, bytes] = {}
        for item in urlsplit(self.target).query.split("&"):
            key, _, value = item.partition("=")
            name = unquote_to_bytes(key.replace("+", " ")).decode("utf-8", "replace")
            out.setdefault(name, unquote_to_bytes(value.replace("+", " ")))
        return out

    def json(self) -> Any:
        """The body as JSON, parsed as strictly as serde_json: UTF-8 only, no NaN/Infinity, no
        repeated keys (a body two parsers read differently is refused, not guessed at)."""
        if not self.body:
            return None
        try:
            return loads_strict(self.body, "request body")
        except FormatError as exc:
            raise HttpError(400, str(exc)) from None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, doc: Any) -> Response:
        return cls(status, fastjson.dumps(doc).encode())


@dataclass(frozen=True)
class Tunnel:
    """A handler's answer to CONNECT: open the destination; bytes then flow both ways unread.
    ``done(up, down)`` is told how many bytes went each way."""

    connect: Callable[[float], socket.socket]
    done: Callable[[int, int], None] = lambda up, down: None


Handler = Callable[[Request], "Response | Tunnel"]
Admit = Callable[[Peer | None], None]  # raises HttpError to refuse
Identify = Callable[[socket.socket], Peer | None]  # who connected (None: gone already)


def _admit_anyone(peer: Peer | None) -> None:
    return None


@dataclass(eq=False)
class Listener:
    sock: socket.socket
    name: str
    handle: Handler
    admit: Admit = _admit_anyone
    path: str = ""
    identify: Identify = identify  # what ``admit`` needs to know of the caller
    active: int = 0
    tunnels: int = 0
    closed: bool = False


def error_response(exc: BaseException, log: logging.Logger) -> Response:
    """The one place that turns an exception into a status and a one-line reason."""
    if isinstance(exc, HttpError):
        doc = {"detail": exc.detail, **({"type": exc.kind} if exc.kind else {})}
        return Response.json(exc.status, doc)
    if isinstance(exc, KbsError):
        return Response.json(502, {"detail": f"key broker: {exc}", "type": exc.kind})
    if isinstance(exc, NotSupportedError):
        return Response.json(501, {"detail": str(exc)})
    if isinstance(exc, (ConfigError, FormatError, AgentError)):
        return Response.json(400, {"detail": str(exc)})
    if isinstance(exc, InclavareError):
        return Response.json(500, {"detail": str(exc)})
    log.error("request failed: %s: %s", type(exc).__name__, exc)
    log.debug("request failed", exc_info=exc)  # the traceback only when debugging
    return Response.json(500, {"detail": f"internal error: {type(exc).__name__}"})


BACKLOG = 1024  # connections waiting to be accepted (the kernel caps it at net.core.somaxconn)
ACCEPT_BATCH = 64  # accepted per wake-up: a flood is refused in bulk, between everyone else's calls
PUMP_BUFFER = 1 << 18  # bytes buffered per tunnel direction before reading from that side pauses


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _at_path(sock: socket.socket, path: str, call: str) -> None:
    """``bind`` or ``connect`` a unix socket; a path longer than sun_path allows is reached
    through its directory (``/proc/self/fd/N/name``), so deep state directories work too."""
    if len(os.fsencode(path)) < 100:
        getattr(sock, call)(path)
        return
    dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        getattr(sock, call)(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
    finally:
        os.close(dirfd)


def socket_is_served(path: str) -> bool:
    """Whether something accepts connections on the unix socket at ``path`` right now."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        _at_path(probe, path, "connect")
        return True
    except BlockingIOError:
        return True  # a full backlog: served, and busy
    except OSError:
        return False  # refused (a stale file), not a socket, gone
    finally:
        probe.close()


_deferred = threading.local()  # per worker: what runs once the current answer is written


def after_answer(call: Callable[[], None]) -> None:
    """Run ``call`` once the answer to the current request is written (at once outside a
    request): for what the caller need not wait for, such as a log line."""
    pending: list[Callable[[], None]] | None = getattr(_deferred, "calls", None)
    if pending is None:
        call()
    else:
        pending.append(call)


def _response_bytes(status: int, content_type: str, body: bytes) -> bytes:
    """A whole answer: every connection carries one request and closes after the answer, so the
    status line and three headers are all there is to write (h11 only reads requests here)."""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, REASONS.get(status, b"Error"), content_type.encode("latin-1"), len(body), body))


def _answer_bytes(status: int, detail: str) -> bytes:
    return _response_bytes(status, "application/json", fastjson.dumps({"detail": detail}).encode())


@dataclass(eq=False)
class _Lingering:
    """A refused connection whose answer is written: what the client still sends is read and
    dropped until it closes, so its own write does not fail and it reads the answer."""

    conn: socket.socket
    until: float
    budget: int = 1 << 16


class _Deadline(Exception):
    pass


def _drain(conn: socket.socket, budget: int = 1 << 20, wait: float = 0.5) -> None:
    """Discard what the client still sends until it closes (briefly, boundedly): closing a unix
    socket with unread data would make the client's next read fail with ECONNRESET instead of
    ending after our answer."""
    conn.settimeout(wait)
    while budget > 0:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        budget -= len(chunk)


class UnixHttpServer:
    """Serves any number of listening sockets (added and removed while running)."""

    def __init__(self, limits: Limits | None = None, log: logging.Logger | None = None) -> None:
        self.limits = limits or Limits()
        self.log = log or logging.getLogger("inclavare.http")
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._active = 0
        self._tunnels = 0
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http")
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[str, Listener]] = []
        self._lingering: set[_Lingering] = set()

    # -- listeners ------------------------------------------------------------------------

    def listen(self, path: str, handle: Handler, *, name: str, mode: int = 0o600,
               admit: Admit = _admit_anyone, identify: Identify = identify) -> Listener:
        """Bind a unix socket at ``path`` (replacing a stale file) and serve it. A socket some
        other process still serves is never taken over (ConfigError): it would leave that
        process running but unreachable. ``identify`` finds out what ``admit`` needs of a caller
        (by default its namespaces too)."""
        if socket_is_served(path):
            raise ConfigError(f"{path}: another process is serving on this socket; stop it first "
                              "(or choose another path)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            _at_path(sock, path, "bind")
            os.chmod(path, mode)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return self.adopt(sock, handle, name=name, admit=admit, path=path, identify=identify)

    def adopt(self, sock: socket.socket, handle: Handler, *, name: str, admit: Admit = _admit_anyone,
              path: str = "", identify: Identify = identify) -> Listener:
        """Serve an already listening socket (e.g. one inherited from a supervisor)."""
        sock.setblocking(False)
        listener = Listener(sock, name, handle, admit, path, identify)
        self._post("add", listener)
        return listener

    def remove(self, listener: Listener, unlink: bool = True) -> None:
        listener.closed = True
        self._post("remove", listener)
        if unlink and listener.path:
            try:
                os.unlink(listener.path)
            except FileNotFoundError:
                pass

    def _post(self, what: str, listener: Listener) -> None:
        with self._lock:
            self._pending.append((what, listener))
        try:
            os.write(self._wake_w, b".")
        except BlockingIOError:
            pass

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="http-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b".")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for what, listener in pending:
            if what == "add" and not listener.closed:
                self._sel.register(listener.sock, selectors.EVENT_READ, listener)
            elif what == "remove":
                try:
                    self._sel.unregister(listener.sock)
                except (KeyError, ValueError):
                    pass
                listener.sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.25 if self._lingering else 1.0):
                if key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif isinstance(key.data, _Lingering):
                    self._drain_refused(key.data)
                else:
                    for _ in range(ACCEPT_BATCH):
                        if not self._accept(key.data):
                            break
            self._apply_pending()
            self._expire_refused()
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, Listener):
                key.data.sock.close()
        for item in list(self._lingering):
            self._end_refused(item)

    # -- refusals (answered by the accept loop itself) ------------------------------------

    def _refuse(self, conn: socket.socket, status: int, detail: str) -> None:
        """Answer at once, without a worker: one non-blocking write. The connection then lingers
        (bounded in number and time) so the client can finish sending and read the answer; when
        too many linger, it is closed at once (the client may then see a reset)."""
        try:
            conn.setblocking(False)
            conn.send(_answer_bytes(status, detail))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if len(self._lingering) >= self.limits.max_lingering:
            conn.close()
            return
        item = _Lingering(conn, time.monotonic() + self.limits.linger)
        self._lingering.add(item)
        self._sel.register(conn, selectors.EVENT_READ, item)
        self._drain_refused(item)

    def _drain_refused(self, item: _Lingering) -> None:
        try:
            while item.budget > 0:
                data = item.conn.recv(65536)
                if not data:
                    break
                item.budget -= len(data)
            else:
                self._end_refused(item)
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_refused(item)

    def _expire_refused(self) -> None:
        if self._lingering:
            now = time.monotonic()
            for item in [i for i in self._lingering if i.until <= now]:
                self._end_refused(item)

    def _end_refused(self, item: _Lingering) -> None:
        self._lingering.discard(item)
        try:
            self._sel.unregister(item.conn)
        except (KeyError, ValueError):
            pass
        item.conn.close()

    def _accept(self, listener: Listener) -> bool:
        """Accept one connection and decide on it here, in O(1): a caller that is not admitted, or
        one over a cap, is answered at once and never holds a slot, a worker or a lock. False
        when there was nothing to accept."""
        try:
            conn, _ = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # EMFILE and friends: keep serving the others
            self.log.warning("%s: accept failed: %s", listener.name, exc)
            time.sleep(0.05)
            return False
        try:
            peer = listener.identify(conn)
            listener.admit(peer)
        except HttpError as exc:
            self._refuse(conn, exc.status, exc.detail)
            return True
        except Exception as exc:  # a failing admission check refuses; it never crashes the loop
            self.log.error("%s: admission check failed: %s: %s", listener.name, type(exc).__name__, exc)
            self._refuse(conn, 500, "internal error while identifying the caller")
            return True
        with self._lock:
            busy = self._active >= self.limits.max_connections or listener.active >= self.limits.per_listener
            if not busy:
                self._active += 1
                listener.active += 1
        if busy:
            self._refuse(conn, 503, "too many connections; try again shortly")
            return True
        conn.setblocking(True)
        self._pool.submit(self._serve, conn, listener, peer)
        return True

    def _release(self, listener: Listener) -> None:
        with self._lock:
            self._active -= 1
            listener.active -= 1

    # -- one connection -------------------------------------------------------------------

    def _serve(self, conn: socket.socket, listener: Listener, peer: Peer | None) -> None:
        handed_over = False
        try:
            handed_over = self._exchange(conn, listener, peer)
        except Exception as exc:  # a bug here must not kill the worker thread
            self.log.error("%s: connection failed: %s: %s", listener.name, type(exc).__name__, exc)
            self.log.debug("connection failed", exc_info=exc)
        finally:
            if not handed_over:
                conn.close()
            self._release(listener)

    def _exchange(self, conn: socket.socket, listener: Listener, peer: Peer | None) -> bool:
        calls: list[Callable[[], None]] = []
        _deferred.calls = calls
        try:
            return self._answer(conn, listener, peer)
        finally:
            _deferred.calls = None
            for call in calls:  # what handlers deferred (after_answer): the answer is out
                try:
                    call()
                except Exception as exc:  # so a failure here is only logged
                    self.log.error("after an answer: %s: %s", type(exc).__name__, exc)

    def _answer(self, conn: socket.socket, listener: Listener, peer: Peer | None) -> bool:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        try:
            request = self._read_request(conn, h, listener, peer)
            if request is None:
                return False
            reply: Response | Tunnel = listener.handle(request)
        except _Deadline:
            reply = Response.json(408, {"detail": "request not received in time"})
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint in REASONS else 400
            reply = Response.json(status, {"detail": "malformed HTTP request"})
        except Exception as exc:
            reply = error_response(exc, self.log)
        if isinstance(reply, Tunnel):
            return self._open_tunnel(conn, h, listener, reply)
        self._send(conn, reply)
        return False

    def _read_request(self, conn: socket.socket, h: h11.Connection, listener: Listener,
                      peer: Peer | None) -> Request | None:
        deadline = time.monotonic() + self.limits.request_deadline
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Deadline
                conn.settimeout(remaining)
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    raise _Deadline from None
                except OSError:
                    return None
                h.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self.limits.max_head:
                    raise HttpError(431, f"request head larger than {self.limits.max_head} bytes")
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self.limits.max_body:
                    raise HttpError(413, f"request body larger than {self.limits.max_body} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise HttpError(413, f"request body larger than {self.limits.max_body} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.PAUSED)):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return None
        assert head is not None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        return Request(head.method.decode("ascii", "replace"), head.target.decode("latin-1"), headers,
                       bytes(body), peer, listener)

    def _send(self, conn: socket.socket, reply: Response) -> None:
        data = _response_bytes(reply.status if reply.status in REASONS else 500, reply.content_type, reply.body)
        conn.settimeout(self.limits.response_deadline)
        try:
            conn.sendall(data)  # one write: a client never sees half an answer
            conn.shutdown(socket.SHUT_WR)
            _drain(conn)
        except OSError:
            pass

    # -- tunnels --------------------------------------------------------------------------

    def _open_tunnel(self, conn: socket.socket, h: h11.Connection, listener: Listener, tunnel: Tunnel) -> bool:
        with self._lock:
            full = (self._tunnels >= self.limits.max_tunnels
                    or listener.tunnels >= self.limits.tunnels_per_listener)
            if not full:
                self._tunnels += 1
                listener.tunnels += 1
        if full:
            self._send(conn, Response.json(503, {"detail": "too many open tunnels; try again shortly"}))
            return False
        try:
            upstream = tunnel.connect(self.limits.tunnel_connect)
        except Exception as exc:
            self._end_tunnel(listener)
            detail = exc.detail if isinstance(exc, HttpError) else f"cannot reach the destination: {exc}"
            status = exc.status if isinstance(exc, HttpError) else 502
            self._send(conn, Response.json(status, {"detail": detail}))
            return False
        head = h.send(h11.Response(status_code=200, headers=[], reason=b"Connection Established")) or b""
        early = bytes(h.trailing_data[0])
        try:
            conn.settimeout(self.limits.response_deadline)
            conn.sendall(head)
            if early:
                upstream.settimeout(self.limits.response_deadline)
                upstream.sendall(early)
        except OSError:
            upstream.close()
            self._end_tunnel(listener)
            return False
        threading.Thread(target=self._pump, args=(conn, upstream, listener, tunnel, len(early)),
                         name="tunnel", daemon=True).start()
        return True

    def _end_tunnel(self, listener: Listener) -> None:
        with self._lock:
            self._tunnels -= 1
            listener.tunnels -= 1

    def _pump(self, a: socket.socket, b: socket.socket, listener: Listener, tunnel: Tunnel, up: int) -> None:
        """Copy bytes both ways until both sides have closed, or neither moved for a while.

        Non-blocking with a bounded buffer per direction, so a peer that stops reading stalls
        only its own direction (never the other, never the pump)."""
        down = 0
        other = {a: b, b: a}
        pending: dict[socket.socket, bytearray] = {a: bytearray(), b: bytearray()}  # to write to key
        ended = {a: False, b: False}  # key sent EOF
        try:
            a.setblocking(False)
            b.setblocking(False)
            while not self._stop.is_set():
                poller = select.poll()  # poll, not select: descriptors may exceed FD_SETSIZE
                for s in (a, b):
                    mask = (select.POLLIN if not ended[s] and len(pending[other[s]]) < PUMP_BUFFER else 0) \
                        | (select.POLLOUT if pending[s] else 0)
                    if mask:
                        poller.register(s, mask)
                if not any(not ended[s] or pending[s] for s in (a, b)):
                    break  # both ended and everything delivered
                events = dict(poller.poll(self.limits.tunnel_idle * 1000))
                if not events:
                    break  # idle
                ready_w = [s for s in (a, b) if events.get(s.fileno(), 0) & (select.POLLOUT | select.POLLERR)]
                ready_r = [s for s in (a, b) if events.get(s.fileno(), 0) & (select.POLLIN | select.POLLHUP
                                                                            | select.POLLERR)]
                for s in ready_w:
                    try:
                        sent = s.send(pending[s])
                    except (BlockingIOError, InterruptedError):
                        continue
                    del pending[s][:sent]
                    if not pending[s] and ended[other[s]]:
                        _shutdown_write(s)
                for s in ready_r:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        ended[s] = True
                        if not pending[other[s]]:
                            _shutdown_write(other[s])
                        continue
                    pending[other[s]] += data
                    if s is a:
                        up += len(data)
                    else:
                        down += len(data)
        except OSError:
            pass  # a side went away: the tunnel is over
        finally:
            a.close()
            b.close()
            self._end_tunnel(listener)
            try:
                tunnel.done(up, down)
            except Exception:
                self.log.exception("tunnel accounting failed")

