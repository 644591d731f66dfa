"""``runelet init``: the enclave container's pid 1.

Upstream's init-runelet model: load the enclave runtime, ``get_version`` and ``init`` it, run
the container's process in the enclave (``create_process`` + ``exec``; v1 ``pal_exec``),
forward every signal it receives to ``kill(-1, sig)`` (v2+), serve exec requests on a unix
socket, then ``destroy`` and exit with the payload's exit code (death by signal N: 128 + N).

Threads: the main thread runs the event loop (signals, the exec socket, events from
workers) and makes every ``create_process`` call; each blocking ``exec`` runs in a worker
thread with signals blocked. As pid 1 the runelet also reaps orphaned zombies (v2+; see
:meth:`Supervisor._reap_orphans`).
"""

from __future__ import annotations

import errno as errno_mod
import os
import queue
import selectors
import signal
import socket
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from inclavare.errors import ConfigError, InclavareError, NotSupportedError, PalError
from inclavare.runtime.pal import exec_protocol as proto
from inclavare.runtime.pal.abi import StdioFds
from inclavare.runtime.pal.host_processes import env_mapping
from inclavare.runtime.pal.plugin import EnclaveRuntime, PalRuntime, load_builtin_runtime
from inclavare.runtime.pal.process_status import exit_code_from_status
from inclavare.runtime.pal.runelet import say
from inclavare.runtime.pal.runelet_config import KIND_PAL, RuneletConfig
from inclavare.runtime.pal.signal_relay import SignalPipe, block_in_this_thread

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUEST_TIMEOUT = 30.0
SESSION_GRACE = 1.0


class PayloadStartError(PalError):
    """The container's process could not be started in the enclave."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message, errno)
        self.exit_code = 127 if errno == errno_mod.ENOENT else 126 if errno in (
            errno_mod.EACCES, errno_mod.ENOEXEC, errno_mod.EPERM) else 1


def load_config(path: str) -> RuneletConfig:
    try:
        with open(path, "rb") as f:
            return RuneletConfig.from_json(f.read(1 << 22))
    except OSError as exc:
        raise ConfigError(f"cannot read runelet configuration {path}: {exc.strerror}") from None


def open_runtime(config: RuneletConfig) -> EnclaveRuntime:
    if config.runtime.kind == KIND_PAL:
        return PalRuntime.load(config.runtime.path)
    return load_builtin_runtime(config.runtime.target)


def resolve_executable(name: str, env: Sequence[str]) -> str:
    """``name`` looked up in the container's PATH when it has no slash and is found there;
    otherwise unchanged (the enclave runtime may resolve it in its own file system)."""
    if "/" in name:
        return name
    search = env_mapping(env).get("PATH", DEFAULT_PATH)
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    return name


@dataclass
class CreateJob:
    """An exec request waiting for the main thread to create its process."""

    request: proto.ExecRequest
    stdio: StdioFds
    done: threading.Event = field(default_factory=threading.Event)
    pid: int = 0
    error: InclavareError | None = None


class Supervisor:
    def __init__(self, config: RuneletConfig, runtime: EnclaveRuntime, version: int) -> None:
        self.config = config
        self.runtime = runtime
        self.version = version
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._known: set[int] = set()  # pids the runtime reported; never reaped by us
        self._known_lock = threading.Lock()
        self._sessions: list[threading.Thread] = []
        self._v1_warned: set[int] = set()

    # -- plumbing ------------------------------------------------------------------------

    def post(self, kind: str, value: object) -> None:
        self.events.put((kind, value))
        try:
            os.write(self._wake_w, b".")
        except BlockingIOError:
            pass  # the loop is already due to wake up

    def _create(self, argv: Sequence[str], env: Sequence[str], cwd: str, stdio: StdioFds) -> int:
        path = resolve_executable(argv[0], env)
        home = self.config.payload.cwd
        if cwd != home:
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise PalError(f"cannot change to directory {cwd}: {exc.strerror}",
                               exc.errno or errno_mod.ENOENT) from None
        try:
            pid = self.runtime.create_process(path, argv, env, stdio)
        finally:
            if cwd != home:
                try:
                    os.chdir(home)
                except OSError:
                    pass
        with self._known_lock:
            self._known.add(pid)
        return pid

    def _forget(self, pid: int) -> None:
        with self._known_lock:
            self._known.discard(pid)

    # -- the main payload ----------------------------------------------------------------

    def _wait_main(self, pid: int) -> None:
        block_in_this_thread()
        try:
            self.post("main-exit", self.runtime.exec(pid))
        except InclavareError as exc:
            self.post("main-error", exc)

    def run(self, signals: SignalPipe, listener: socket.socket) -> int:
        payload = self.config.payload
        try:
            pid = self._create(payload.args, payload.env, payload.cwd, StdioFds(0, 1, 2))
        except PalError as exc:
            raise PayloadStartError(f"cannot start {payload.args[0]} in the enclave: {exc}",
                                    exc.errno) from None
        threading.Thread(target=self._wait_main, args=(pid,), name="payload", daemon=True).start()

        selector = selectors.DefaultSelector()
        selector.register(signals.read_fd, selectors.EVENT_READ, "signal")
        selector.register(self._wake_r, selectors.EVENT_READ, "event")
        selector.register(listener, selectors.EVENT_READ, "listen")
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    for sig in signals.drain():
                        self._on_signal(sig)
                elif key.data == "listen":
                    self._accept(listener)
                else:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    outcome = self._drain_events()
                    if outcome is not None:
                        selector.close()
                        return outcome

    def _drain_events(self) -> int | None:
        while True:
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                return None
            if kind == "create":
                assert isinstance(value, CreateJob)
                self._serve_create(value)
            elif kind == "forget":
                assert isinstance(value, int)
                self._forget(value)
            elif kind == "main-exit":
                assert isinstance(value, int)
                return exit_code_from_status(value)
            elif kind == "main-error":
                say(f"error: {value}")
                return 1

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            if self.version >= 2:
                self._reap_orphans()
            return
        if self.version < 2:
            if sig not in self._v1_warned:
                self._v1_warned.add(sig)
                say(f"signal {sig} not delivered: the enclave runtime implements pal api "
                    "version 1, which has no pal_kill (SIGKILL stops the container)")
            return
        try:
            self.runtime.kill(-1, sig)
        except (PalError, NotSupportedError) as exc:
            say(f"forwarding signal {sig}: {exc}")

    def _reap_orphans(self) -> None:
        """Reap zombie children that are not processes the enclave runtime reported.

        Processes orphaned inside the container are re-parented to pid 1 and would stay
        zombies forever. A PAL that runs payloads as host children reports their pids
        (the skeleton does); a PAL that forks other helpers must reap them itself promptly
        (they are only reaped here once they are zombies). Not done for v1, whose
        pal_exec children are not reported.
        """
        me = os.getpid()
        with self._known_lock:
            known = set(self._known)
        try:
            entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return
        for name in entries:
            pid = int(name)
            if pid in known:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and fields[0] == b"Z" and fields[1] == str(me).encode():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    # -- exec sessions -------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            say(f"exec socket: {exc.strerror}")
            return
        conn.setblocking(True)
        thread = threading.Thread(target=self._session, args=(conn,), name="exec", daemon=True)
        self._sessions.append(thread)
        thread.start()

    def _serve_create(self, job: CreateJob) -> None:
        req = job.request
        env = self.config.payload.env if req.env is None else req.env
        cwd = req.cwd or self.config.payload.cwd
        try:
            job.pid = self._create(req.argv, env, cwd, job.stdio)
        except InclavareError as exc:
            job.error = exc
        finally:
            job.done.set()

    def _session(self, conn: socket.socket) -> None:
        block_in_this_thread()
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            message, fds = proto.receive(conn, max_fds=proto.STDIO_FDS)
            if message is None:
                return
            if not isinstance(message, proto.ExecRequest) or len(fds) != proto.STDIO_FDS:
                proto.send(conn, proto.Failed("the first message must be an exec request with "
                                              "3 file descriptors", errno_mod.EPROTO))
                return
            job = CreateJob(message, StdioFds(*fds))
            self.post("create", job)
            job.done.wait()
            if job.error is not None:
                err = job.error.errno if isinstance(job.error, PalError) else errno_mod.EINVAL
                proto.send(conn, proto.Failed(str(job.error), err or errno_mod.EINVAL))
                return
            proto.send(conn, proto.Started(job.pid))
            conn.settimeout(None)
            threading.Thread(target=self._relay_kills, args=(conn, job.pid), name="exec-kill",
                             daemon=True).start()
            try:
                status = self.runtime.exec(job.pid)
            finally:
                self.post("forget", job.pid)
            proto.send(conn, proto.Exited(status & 0xFFFF, exit_code_from_status(status)))
        except InclavareError as exc:
            err = exc.errno if isinstance(exc, PalError) else errno_mod.EPROTO
            try:
                proto.send(conn, proto.Failed(str(exc), err or errno_mod.EIO))
            except OSError:
                pass
        except OSError:
            pass  # the client went away; the command keeps running in the enclave
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            conn.close()

    def _relay_kills(self, conn: socket.socket, pid: int) -> None:
        block_in_this_thread()
        while True:
            try:
                message, _ = proto.receive(conn)
            except (OSError, InclavareError):
                return
            if not isinstance(message, proto.KillRequest):
                return
            if self.version < 2:
                continue
            try:
                self.runtime.kill(pid, message.signal)
            except (PalError, NotSupportedError) as exc:
                say(f"forwarding signal {message.signal} to process {pid}: {exc}")

    def finish(self) -> None:
        for thread in self._sessions:
            thread.join(SESSION_GRACE / max(1, len(self._sessions)))


def _listen(path: str) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"exec socket {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on exec socket {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def run_init(config_path: str) -> int:
    signals = SignalPipe(with_sigchld=True)  # first: nothing may be lost once we are pid 1
    config = load_config(config_path)
    runtime = open_runtime(config)
    version = runtime.get_version()
    # No enclave pool in this launch path: v3 gets fd -1 / addr 0 (always so with "no-epm").
    runtime.init(config.args, config.log_level, None)
    supervisor = Supervisor(config, runtime, version)
    listener: socket.socket | None = None
    try:
        if version < 2:
            # v1 pal_exec has no environment parameter: its processes inherit ours.
            os.environ.clear()
            os.environ.update(env_mapping(config.payload.env))
        listener = _listen(config.socket)
        code = supervisor.run(signals, listener)
    finally:
        if listener is not None:
            listener.close()
            try:
                os.unlink(config.socket)
            except OSError:
                pass
        try:
            runtime.destroy()
        except InclavareError as exc:
            say(f"error: destroying the enclave: {exc}")
    supervisor.finish()
    return code
