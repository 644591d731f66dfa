"""``inclavare measure BUNDLE``: the measurement an enclave container will have."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("measure", help="print the measurement a bundle's enclave will have",
                       description="Measure an OCI bundle with enclave configuration exactly as rune "
                                   "will at create time (entrypoint, trusted files, enclave configuration).")
    p.add_argument("bundle", help="bundle directory (holding config.json)")
    p.add_argument("--json", action="store_true", help="print a JSON object with details")
    p.add_argument("--pool", metavar="DIR",
                   help="enclave pool to read cached file digests from, if it exists (default: rune's, "
                        "$INCLAVARE_EPM_DIR or /var/lib/inclavare/epm); measure never writes to it")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from inclavare.runtime.enclave_prepare import measure_bundle

    result = measure_bundle(args.bundle, args.pool)
    print(json.dumps(result) if args.json else result["measurement"])
    return 0
