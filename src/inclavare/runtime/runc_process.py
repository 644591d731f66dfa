"""Running runc: replace rune's process with it, or start it as a child and wait.

rune's fast path ends in :func:`exec_runc`, so this module imports only the built-in ``posix``
at load time; what only a failure or the slow path needs (error reporting, ``_signal``) is
imported where it is used.
"""

import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def exec_runc(runc: str, argv: list[str]) -> None:
    try:
        posix.execv(runc, [runc, *argv])
    except OSError as exc:
        from inclavare.runtime.host_settings import RUNC_ENV
        from inclavare.runtime.oci_log import fatal

        fatal(argv, f"rune: cannot execute runc at {runc}: {exc.strerror} "
                    f"(set {RUNC_ENV} or reinstall rune with `inclavare install-rune --runc PATH`)")


def spawn(runc: str, argv: "Sequence[str]", quiet: bool = False) -> int:
    """Start runc with our stdio (or /dev/null for ``quiet``); returns its pid."""
    actions = []
    if quiet:
        actions = [(posix.POSIX_SPAWN_OPEN, fd, "/dev/null", posix.O_RDWR, 0) for fd in (0, 1, 2)]
    try:
        return posix.posix_spawn(runc, [runc, *argv], posix.environ, file_actions=actions)
    except OSError as exc:
        from inclavare.errors import ConfigError

        raise ConfigError(f"cannot execute runc at {runc}: {exc.strerror}") from None


def wait_child(pid: int, forward_signals: bool = False) -> int:
    """Wait for a child; with ``forward_signals`` every signal we receive is passed on to it.

    Returns the exit status the way a shell reports it (128+N for death by signal N)."""
    previous = {}
    if forward_signals:
        import _signal  # signal.py imports enum: too slow here

        for sig in _signal.valid_signals():
            if sig in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD):
                continue
            try:
                previous[sig] = _signal.signal(sig, lambda s, _f: posix.kill(pid, s))
            except (OSError, ValueError):
                pass
    try:
        _, status = posix.waitpid(pid, 0)
    finally:
        if previous:
            import _signal

            for sig, handler in previous.items():
                try:
                    _signal.signal(sig, handler)
                except (OSError, ValueError):
                    pass
    code = posix.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def runc_knows(root: str, runc: str, cid: str) -> bool:
    return wait_child(spawn(runc, ["--root", root, "state", cid], quiet=True)) == 0
