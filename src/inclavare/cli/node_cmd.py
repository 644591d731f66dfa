"""``inclavare node install|uninstall``: put rune on a Kubernetes node (or take it off) — the
rune launcher plus containerd's runtime handler, reversibly (see inclavare.services.node_installer)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inclavare.services.node_installer import NodeLayout, Outcome


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host-root", default="/",
                   help="where this process sees the node's filesystem (the DaemonSet mounts it at "
                        "/host); every other path is a path on the node (default: %(default)s)")
    p.add_argument("--containerd-config", default="/etc/containerd/config.toml",
                   help="containerd's config file on the node (default: %(default)s)")
    p.add_argument("--prefix", default="/opt/inclavare",
                   help="where the launcher (PREFIX/bin/HANDLER) and the copied payload go (default: %(default)s)")
    p.add_argument("--handler", dest="runtime_handler", default="rune",
                   help="runtime handler name, as in RuntimeClass.handler (default: %(default)s)")
    p.add_argument("--restart-containerd", metavar="COMMAND", default=None,
                   help="command that restarts containerd, run only when its config changed (e.g. "
                        "'nsenter --target 1 --mount -- systemctl restart containerd'); default: none")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="install rune on a Kubernetes node",
                       description="Install or uninstall rune on a node: the launcher and containerd's "
                                   "runtime handler (idempotent; uninstall restores containerd's config "
                                   "byte for byte).")
    node_sub = p.add_subparsers(dest="node_command", metavar="ACTION")
    node_sub.required = True
    i = node_sub.add_parser("install", help="write the launcher, add the runtime handler")
    _common(i)
    i.add_argument("--runc", default=None, help="runc on the node (default: the first found in the usual places)")
    i.add_argument("--agent-socket", default="/run/inclavare/agent.sock",
                   help="the node agent's control socket on the node (default: %(default)s)")
    i.add_argument("--copy-payload", action="store_true",
                   help="copy this image's interpreter and packages (PREFIX/python, PREFIX/venv) to the node")
    i.add_argument("--kind", choices=("auto", "native", "python"), default="auto",
                   help="launcher kind, as in install-rune (default: %(default)s)")
    i.add_argument("--wait", action="store_true",
                   help="after installing, stay until SIGTERM (the DaemonSet's installer container)")
    i.set_defaults(handler=_install)
    u = node_sub.add_parser("uninstall", help="remove the runtime handler and the launcher")
    _common(u)
    u.set_defaults(handler=_uninstall)


def _layout(args: argparse.Namespace) -> NodeLayout:
    from inclavare.services.node_installer import NodeLayout

    extra = {"runc": args.runc, "agent_socket": args.agent_socket} if hasattr(args, "runc") else {}
    return NodeLayout(host_root=args.host_root, containerd_config=args.containerd_config,
                      prefix=args.prefix, handler=args.runtime_handler, **extra)


def _report(verb: str, outcome: Outcome, config: str) -> None:
    print(f"inclavare node: {verb} {outcome.launcher}; containerd config {config} "
          f"{'changed' if outcome.config_changed else 'unchanged'}"
          f"{', containerd restarted' if outcome.restarted else ''}", flush=True)


def _install(args: argparse.Namespace) -> int:
    import signal

    from inclavare.services.node_installer import install

    if args.wait:  # blocked before installing, so a SIGTERM during the install is not lost
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    outcome = install(_layout(args), copy=args.copy_payload, restart_command=args.restart_containerd,
                      kind=args.kind)
    _report("installed", outcome, args.containerd_config)
    if args.wait:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from inclavare.services.node_installer import uninstall

    outcome = uninstall(_layout(args), restart_command=args.restart_containerd)
    _report("removed", outcome, args.containerd_config)
    return 0
