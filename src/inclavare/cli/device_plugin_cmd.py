"""``inclavare device-plugin serve``: the EPC device plugin for the kubelet (API v1beta1)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from inclavare.services.deviceplugin.names import DEFAULT_DIR, RESOURCE_NAME

    p = sub.add_parser("device-plugin", help="the EPC device plugin for Kubernetes",
                       description="Advertise this node's EPC to the kubelet, one device per MiB.")
    dp_sub = p.add_subparsers(dest="device_plugin_command", metavar="SUBCOMMAND")
    dp_sub.required = True
    s = dp_sub.add_parser(
        "serve", help="serve the device plugin in the foreground",
        description="Serve kubelet's device-plugin API v1beta1 on DIR/inclavare-epc.sock and register "
                    "with DIR/kubelet.sock (again whenever the kubelet restarts). On SGX nodes the EPC "
                    "size comes from CPUID leaf 0x12 and containers get /dev/sgx_enclave and "
                    "/dev/sgx_provision; elsewhere --epc-mib sets the simulated TEE's EPC. Allocate "
                    "sets the container annotation enclave.epc_allowance_mib, which rune enforces.")
    s.add_argument("--device-plugin-dir", default=DEFAULT_DIR, metavar="DIR",
                   help="the kubelet's device-plugin directory (default: %(default)s)")
    s.add_argument("--epc-mib", type=_positive, default=None, metavar="N",
                   help="simulated EPC in MiB, for nodes without SGX (refused on SGX nodes)")
    s.add_argument("--resource-name", default=RESOURCE_NAME, metavar="NAME",
                   help="extended resource name (default: %(default)s, as Alibaba's sgx-device-plugin)")
    s.add_argument("--agent-socket", default=None, metavar="PATH",
                   help="the node agent's control socket; devices are Unhealthy while it does not answer "
                        "(default: $INCLAVARE_AGENT_SOCKET or /run/inclavare/agent.sock; '' to ignore it)")
    s.add_argument("--health-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often device nodes and the agent are checked (default: %(default)s)")
    s.set_defaults(handler=_serve)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of MiB, not {text[:40]!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of MiB, not {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    import logging

    from inclavare.errors import ConfigError
    from inclavare.services.agent.paths import default_control_socket
    from inclavare.services.deviceplugin.epc import discover
    from inclavare.services.deviceplugin.service import PluginSettings, check_resource_name, serve

    if not 0.05 <= args.health_interval <= 3600:
        raise ConfigError("--health-interval must be between 0.05 and 3600 seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s device-plugin %(levelname)s %(message)s")
    settings = PluginSettings(
        directory=args.device_plugin_dir, resource_name=check_resource_name(args.resource_name),
        agent_socket=default_control_socket() if args.agent_socket is None else args.agent_socket,
        poll_interval=min(0.5, args.health_interval), health_interval=args.health_interval)
    return serve(discover(args.epc_mib), settings)
