"""The runelet: the enclave container's pid 1 (``init``) and ``rune exec``'s client (``exec``).

Run by the host's interpreter inside the container (see :mod:`runelet_rt`). Usage::

    runelet init CONFIG
    runelet exec --socket PATH [--cwd DIR] [--env KEY=VALUE]... -- ARGV...

Every failure is one ``runelet: error: ...`` line on stderr and a non-zero exit; never a
traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from inclavare.errors import InclavareError

USAGE = ("usage: runelet init CONFIG | "
         "runelet exec --socket PATH [--cwd DIR] [--env KEY=VALUE]... -- ARGV...")


class UsageError(InclavareError):
    exit_code = 2


def say(message: str) -> None:
    """One diagnostic line on stderr (the container's, shared with the payload)."""
    try:
        os.write(2, f"runelet: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _dispatch(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "init":
        from inclavare.runtime.pal.runelet_init import run_init

        return run_init(argv[1])
    if argv[:1] == ["exec"]:
        from inclavare.runtime.pal.runelet_exec import parse_exec_args, run_exec

        try:
            return run_exec(parse_exec_args(argv[1:]))
        except ValueError as exc:
            raise UsageError(f"{exc}; {USAGE}") from None
    raise UsageError(USAGE)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(args)
    except InclavareError as exc:
        say(f"error: {exc}")
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: one line, no traceback on the container's stderr
        say(f"internal error: {type(exc).__name__}: {exc}")
        code = 70
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
