"""``inclavare agent serve``: the node agent (enclave registry, per-container channels: quoting,
collateral, a relay to the key broker)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("agent", help="the node agent", description="The node agent daemon.")
    agent_sub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND")
    agent_sub.required = True
    s = agent_sub.add_parser("serve", help="run the node agent in the foreground",
                             description="Serve rune's control socket and, for each enclave container, "
                                         "a channel (seen inside it at /run/inclavare/host) with the "
                                         "simulated quoting enclave, collateral and an opaque relay to "
                                         "the key broker. Secrets and enclave keys never reach it: the "
                                         "enclave agent inside each container handles them.")
    s.add_argument("--state-dir", default="/var/lib/inclavare",
                   help="persistent state: the simulated TEE authority (DIR/sim), the enclave pool "
                        "(DIR/epm) and the enclave side's runtime folder (DIR/runelet); $INCLAVARE_EPM_DIR "
                        "and $INCLAVARE_RUNELET_DIR override the last two (default: %(default)s)")
    s.add_argument("--socket", default=None,
                   help="control socket; the containers' channel directories sit next to it "
                        "(default: $INCLAVARE_AGENT_SOCKET or /run/inclavare/agent.sock)")
    s.add_argument("--kbs-url", default=None,
                   help="the key broker enclave agents reach through the relay (e.g. http://127.0.0.1:8080)")
    s.add_argument("--registry", action="append", default=[], metavar="URL",
                   help="an image registry enclave agents may reach through the relay for guest pull "
                        "(enclave.image); repeatable, e.g. https://registry.example:5000")
    s.add_argument("--epc-mib", type=int, default=0, metavar="N",
                   help="the simulated TEE's EPC in MiB: a sim enclave is refused at create when the running "
                        "ones already hold more than N minus its need (default: 0, no accounting)")
    s.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text lines for people, or one JSON object per line for collectors (default: %(default)s)")
    s.set_defaults(handler=_serve)

    ls = agent_sub.add_parser("ls", help="list the enclave containers the node agent knows",
                              description="What the node agent holds for each registered enclave container: "
                                          "its id, enclave type, measurement, EPC, relay byte counts (the bytes "
                                          "themselves are never kept) and its channel directory.")
    ls.add_argument("--socket", default=None,
                    help="the agent's control socket (default: $INCLAVARE_AGENT_SOCKET or "
                         "/run/inclavare/agent.sock)")
    ls.add_argument("--json", action="store_true", help="print a JSON array with every field")
    ls.set_defaults(handler=_ls)


def _ls(args: argparse.Namespace) -> int:
    import json
    import time

    from inclavare.cli.output import text_value
    from inclavare.services.agent import client
    from inclavare.services.agent.paths import default_control_socket
    from inclavare.tee.simulated import is_simulated

    containers = client.call(args.socket or default_control_socket(), "GET", "/v1/containers", timeout=10)
    if args.json:
        print(json.dumps(containers, indent=2))
        return 0
    if not containers:
        print("no enclave containers registered")
        return 0
    rows = [("ID", "TYPE", "MEASUREMENT", "EPC_MIB", "RELAY_TUNNELS", "RELAY_BYTES", "REGISTERED")]
    for c in containers:
        relay = c.get("relay") or {}
        etype = c["enclave"].get("type", "-")
        rows.append((c["id"], etype + (" (SIMULATED)" if is_simulated(etype, c["enclave"].get("path", "")) else ""),
                     c["measurement"][:16] + "…", text_value(c.get("epc_mib")), str(relay.get("tunnels", 0)),
                     f"{relay.get('bytes_up', 0)}/{relay.get('bytes_down', 0)}",
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c["registered_at"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from inclavare.errors import ConfigError
    from inclavare.runtime.prepare_service import PREPARE_PATH, make_prepare_handler
    from inclavare.services.agent.paths import default_control_socket
    from inclavare.services.agent.server import serve

    if not 0 <= args.epc_mib <= 1 << 24:
        raise ConfigError(f"--epc-mib must be between 0 and {1 << 24} MiB, not {args.epc_mib}")
    return serve(args.state_dir, args.socket or default_control_socket(), args.kbs_url,
                 extra_control={PREPARE_PATH: make_prepare_handler}, epc_mib=args.epc_mib,
                 log_format=args.log_format, registries=args.registry)
