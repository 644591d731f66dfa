"""``inclavare install-rune``: write the fast rune launcher (what container engines call)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "install-rune",
        help="write the fast rune launcher",
        description="Write a rune launcher that starts Python without site (-I -S) and calls "
                    "the given runc. Point containerd, podman or Docker at the written file.")
    p.add_argument("--output", default="/usr/local/bin/rune", help="where to write (default: %(default)s)")
    p.add_argument("--runc", default=None, help="runc binary rune delegates to (default: runc on PATH)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from inclavare.runtime.launcher import install_launcher

    path = install_launcher(args.output, args.runc)
    print(f"rune launcher written to {path}")
    return 0
