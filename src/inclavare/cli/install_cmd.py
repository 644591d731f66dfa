"""``inclavare install-rune``: write the fast rune launcher (what container engines call)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "install-rune",
        help="write the fast rune launcher",
        description="Write the rune launcher container engines call: a small native program that "
                    "execs runc directly when no enclave is involved (or, without a C compiler, a "
                    "script that starts Python without site). Point containerd, podman or Docker at it.")
    p.add_argument("--output", default="/usr/local/bin/rune", help="where to write (default: %(default)s)")
    p.add_argument("--runc", default=None, help="runc binary rune delegates to (default: runc on PATH)")
    p.add_argument("--kind", choices=("auto", "native", "python"), default="auto",
                   help="native: a small C launcher (no interpreter unless needed; needs cc); python: "
                        "a -I -S script; auto: native when it builds (default)")
    p.add_argument("--agent-socket", default=None,
                   help="node agent control socket (default: /run/inclavare/agent.sock; "
                        "INCLAVARE_AGENT_SOCKET overrides it at run time)")
    p.add_argument("--state-dir", default=None,
                   help="rune's state directory (default: /run/inclavare/rune; INCLAVARE_RUNE_STATE overrides)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from inclavare.runtime.launcher import install_launcher

    kind = install_launcher(args.output, args.runc, args.kind, args.agent_socket, args.state_dir)
    print(f"rune launcher ({kind}) written to {args.output}")
    return 0
