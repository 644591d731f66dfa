"""rune's entry point: hand the call to runc unchanged unless an enclave is involved.

This module is imported on every runtime call a container engine makes, so it imports nothing
but the built-in ``posix`` and ``sys`` modules and three small modules that load nothing more
(:mod:`~inclavare.runtime.invocation`, :mod:`~inclavare.runtime.host_settings`,
:mod:`~inclavare.runtime.runc_process`); even ``os`` costs a measurable share of a 30 ms
``runc run``. It decides with at most one file read (``create``/``run``: the bundle's
``config.json``) or one ``stat`` (other container commands: does rune hold state for this
container?). Everything else lives in :mod:`inclavare.runtime.rune_cli`, imported only when an
enclave is configured or rune has its own work to do.
"""

import posix
import sys

from inclavare.runtime.host_settings import (
    DEFAULT_RUNC,
    EXPLAIN_ENV,
    RUNC_ENV,
    RUNELET_MARKER,
    exists,
    getenv,
    state_path,
)
from inclavare.runtime.invocation import ENCLAVE_AWARE_COMMANDS, RUNE_ONLY_COMMANDS, Invocation, valid_id
from inclavare.runtime.runc_process import exec_runc


def may_configure_enclave(bundle: str) -> bool:
    """Cheap pre-check: can the bundle's config.json mention enclave configuration at all?

    A substring test on the raw bytes; only a hit pays for JSON parsing in the slow path.
    An unreadable config also goes to the slow path, which reports it the way runc would.
    """
    try:
        fd = posix.open(bundle + "/config.json", posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False  # runc reports the missing/unreadable bundle itself
    try:
        chunks = []
        while True:
            chunk = posix.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        posix.close(fd)
    data = b"".join(chunks)
    return b"enclave." in data or b"ENCLAVE_" in data


def needs_rune(inv: Invocation) -> bool:
    cmd = inv.command
    if cmd in ("create", "run"):
        return may_configure_enclave(inv.bundle)
    if cmd in ENCLAVE_AWARE_COMMANDS:
        cid = inv.container_id
        if not valid_id(cid):
            return False
        path = state_path(inv.root, cid)
        return exists(path + "/" + RUNELET_MARKER if cmd == "exec" else path)
    if cmd in RUNE_ONLY_COMMANDS:
        return True
    return "version" in inv.globals or "v" in inv.globals or "help" in inv.globals or "h" in inv.globals


def main(argv: list[str], runc: str = DEFAULT_RUNC) -> int:
    runc = getenv(RUNC_ENV) or runc
    inv = Invocation(argv)
    decision = needs_rune(inv)
    if getenv(EXPLAIN_ENV):  # tests keep the native launcher's decisions in step with these
        sys.stdout.write("rune\n" if decision else "runc\n")
        return 0
    if not decision:
        exec_runc(runc, argv)
    from inclavare.runtime.rune_cli import run_slow_path

    return run_slow_path(inv, runc)


def console_main() -> None:
    """Entry point of the pip-generated script (the installed fast launcher calls :func:`main`)."""
    sys.exit(main(sys.argv[1:]))
