"""``inclavare doctor``: pre-flight checks for a node or a client, each with its fix."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from inclavare.doctor import Options

    d = Options()
    p = sub.add_parser("doctor", help="check this node or client and say how to fix what is wrong",
                       description="Read-only pre-flight checks, each pass / warn / fail with its fix: runc, the "
                                   "rune launcher where engines look, containerd's runtime entry and annotation "
                                   "pass-through, cgroup and capability pitfalls, the node agent (reachable, "
                                   "single), the key broker (reachable, its TLS certificate), collateral expiry, "
                                   "and whether a TEE is present or everything is simulated. Exit 1 if any check "
                                   "fails.")
    p.add_argument("--runc", metavar="PATH", help="the runc to check (default: runc on PATH)")
    p.add_argument("--rune", metavar="PATH", default=d.rune, help="where the rune launcher should be "
                                                                  "(default: %(default)s)")
    p.add_argument("--containerd-config", metavar="FILE", default=d.containerd_config,
                   help="containerd's configuration (default: %(default)s)")
    p.add_argument("--runtime-handler", default=d.handler,
                   help="the RuntimeClass handler to look for in containerd's configuration (default: %(default)s)")
    p.add_argument("--agent-socket", metavar="PATH", default=None,
                   help="the node agent's control socket (default: $INCLAVARE_AGENT_SOCKET or %s)" % d.agent_socket)
    p.add_argument("--kbs-url", metavar="URL", help="a key broker to reach (default: the one the node agent relays to)")
    p.add_argument("--collateral", metavar="FILE", help="DCAP collateral (JSON) whose expiry to check")
    p.add_argument("--json", action="store_true", help="print one JSON object with the same keys")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    import os

    from inclavare.doctor import FAIL, Options, run_checks

    options = Options(runc=args.runc, rune=args.rune, containerd_config=args.containerd_config, handler=args.runtime_handler,
                      agent_socket=args.agent_socket or os.environ.get("INCLAVARE_AGENT_SOCKET") or Options().agent_socket,
                      kbs_url=args.kbs_url, collateral=args.collateral)
    findings = run_checks(options)
    ok = not any(f.status == FAIL for f in findings)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f"{f.status.upper():4}  {f.check}: {f.detail}")
            if f.fix and f.status != "pass":
                print(f"      fix: {f.fix}")
        print("ok" if ok else "some checks failed")
    return 0 if ok else 1
