"""``inclavare sim``: the simulated SGX authority of this installation (not a TEE).

``sim init`` creates an authority (the node agent creates its own on first start); ``sim
export`` writes its simulated root CA (``root-ca.pem``) and current collateral
(``collateral.json``) for ``inclavare verify --trust-anchor … --collateral …``; ``sim quote``
issues a simulated SGX quote. Only ``init`` ever creates an authority. Simulated quotes prove
nothing about hardware.
"""

from __future__ import annotations

import argparse
from typing import Any

from inclavare.errors import ConfigError


def _hex(text: str, what: str, size: int | None = None) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError as exc:
        raise ConfigError(f"{what} must be hex") from exc
    if size is not None and len(value) != size:
        raise ConfigError(f"{what} must be {size} bytes")
    return value


def _init(args: argparse.Namespace) -> int:
    import os

    from inclavare.tee.sim_authority import SimAuthority

    existed = os.path.isfile(os.path.join(args.state_dir, "authority.json"))
    SimAuthority.load_or_create(args.state_dir)
    print(f"{'kept the existing' if existed else 'created a new'} SIMULATED SGX authority in {args.state_dir}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from inclavare.tee.sim_authority import SimAuthority

    SimAuthority.load_existing(args.state_dir).export(args.out)
    print(f"wrote {args.out}/root-ca.pem and {args.out}/collateral.json (SIMULATED SGX authority)")
    return 0


def _quote(args: argparse.Namespace) -> int:
    from inclavare.atomic_file import write_atomic
    from inclavare.tee.sim_authority import SimAuthority

    authority = SimAuthority.load_existing(args.state_dir)
    quote = authority.quote(_hex(args.mr_enclave, "--mr-enclave", 32),
                            _hex(args.report_data, "--report-data"))
    write_atomic(args.out, quote, mode=0o644)
    print(f"wrote {args.out} ({len(quote)} bytes, SIMULATED SGX quote v3)")
    return 0


def add_parser(sub: Any) -> None:
    sim = sub.add_parser("sim", help="the simulated SGX authority (not a TEE)", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = sim.add_subparsers(dest="sim_command", metavar="ACTION")
    actions.required = True
    init = actions.add_parser("init", help="create a simulated authority (kept if one exists)")
    init.add_argument("--state-dir", required=True, metavar="DIR", help="authority state directory")
    init.set_defaults(handler=_init)
    export = actions.add_parser("export", help="write root-ca.pem and collateral.json")
    export.add_argument("--state-dir", required=True, metavar="DIR", help="authority state directory")
    export.add_argument("--out", required=True, metavar="OUT", help="output directory")
    export.set_defaults(handler=_export)
    quote = actions.add_parser("quote", help="issue a simulated SGX quote v3")
    quote.add_argument("--state-dir", required=True, metavar="DIR", help="authority state directory")
    quote.add_argument("--mr-enclave", required=True, metavar="HEX", help="32-byte MRENCLAVE")
    quote.add_argument("--report-data", default="", metavar="HEX", help="up to 64 bytes of report data")
    quote.add_argument("--out", required=True, metavar="FILE", help="where to write the quote")
    quote.set_defaults(handler=_quote)
