"""``inclavare epm ls|rm``: inspect and prune the enclave pool."""

from __future__ import annotations

import argparse
import json
import os
import time


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("epm", help="the enclave pool (cached measurements)",
                       description="Enclave pool: prepared enclave state cached by content digest.")
    p.add_argument("--dir", default=None, help="pool directory (default: $INCLAVARE_EPM_DIR or /var/lib/inclavare/epm)")
    s = p.add_subparsers(dest="epm_command", metavar="SUBCOMMAND")
    s.required = True
    ls = s.add_parser("ls", help="list pool entries")
    ls.add_argument("--json", action="store_true", help="print a JSON array with the same keys")
    ls.set_defaults(handler=_ls)
    rm = s.add_parser("rm", help="remove pool entries")
    rm.add_argument("key", nargs="?", help="entry key (a unique prefix of at least 4 characters)")
    rm.add_argument("--all", action="store_true", help="remove every entry")
    rm.set_defaults(handler=_rm)


def _pool(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from inclavare.tee.epm import DEFAULT_EPM_DIR, EnclavePool

    return EnclavePool(args.dir or os.environ.get("INCLAVARE_EPM_DIR") or DEFAULT_EPM_DIR)


def _ls(args: argparse.Namespace) -> int:
    entries = _pool(args).entries()
    if args.json:
        print(json.dumps([e.as_dict() for e in entries]))
        return 0
    print(f"{'KEY':<14} {'FILES':>6} {'BYTES':>12} {'LAST USED':<20} ROOTFS")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        print(f"{e.key[:12]:<14} {e.files:>6} {e.total_bytes:>12} {used:<20} {e.rootfs}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from inclavare.errors import ConfigError

    pool = _pool(args)
    if args.all:
        removed = pool.clear()
    elif args.key:
        removed = pool.remove(args.key)
        if not removed:
            raise ConfigError(f"no pool entry matches {args.key}")
    else:
        raise ConfigError("give an entry key or --all")
    for key in removed:
        print(f"removed {key[:12]}")
    return 0
