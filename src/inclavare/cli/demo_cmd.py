"""``inclavare demo``: the main job end to end on the embedded default (see docs/demo.md)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the end-to-end demo on this machine",
                       description="Start a node agent and a key broker on loopback (simulated TEE), "
                                   "store a secret released only to one container measurement, run that "
                                   "container with rune in a simulated enclave (it prints the secret) and a "
                                   "modified one (refused). Needs root.")
    p.add_argument("--rune", default=None, help="rune launcher to use (default: the one next to this interpreter)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from inclavare.demo import run_demo

    return run_demo(rune=args.rune, keep=args.keep)
