"""``inclavare ratls``: attested TLS — relays, certificate issuing, inspection and verification.

    inclavare ratls serve   --listen HOST:PORT --forward HOST:PORT [--mutual] …
    inclavare ratls connect --listen HOST:PORT --connect HOST:PORT [--mutual] …
    inclavare ratls issue   --cert-out FILE --key-out FILE …
    inclavare ratls inspect CERT.pem [--json] [--issuer-ca PEM]
    inclavare ratls verify  CERT.pem [--json] …
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inclavare.cli.output import add_at_option, parse_at, print_fields
from inclavare.errors import ConfigError


def _local_certificate_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local certificate (where ours comes from)")
    group.add_argument("--cert", metavar="PEM", help="use this RA-TLS certificate (with --key)")
    group.add_argument("--key", metavar="PEM", help="private key of --cert")
    group.add_argument("--attester", choices=("auto", "agent", "tsm", "sim"), default="auto",
                       help="issue a fresh certificate from this TEE (default auto: the enclave "
                            "agent socket if present, else configfs-tsm)")
    group.add_argument("--enclave-agent-socket", dest="agent_socket", metavar="PATH",
                       help="the enclave agent's socket inside an enclave container (default "
                            "$INCLAVARE_AGENT_SOCKET or /run/inclavare/agent.sock)")
    group.add_argument("--agent-socket", dest="agent_socket", help=argparse.SUPPRESS)  # the old name
    group.add_argument("--sim-authority", metavar="DIR",
                       help="state directory of the simulated SGX authority (--attester sim)")
    group.add_argument("--sim-mr-enclave", metavar="HEX",
                       help="simulated MRENCLAVE for --attester sim (default random)")
    group.add_argument("--key-type", choices=("ec-p256", "ec-p384"), default="ec-p256",
                       help="the key pair generated for the certificate (default: %(default)s)")
    group.add_argument("--endorsements", action="store_true",
                       help="embed the collateral in the certificate (2.23.133.5.4.2; sim only)")
    group.add_argument("--legacy-extension", action="store_true",
                       help="also carry the quote in the legacy 1.2.840.113741.1337.6 extension")
    group.add_argument("--validity-days", type=float, default=30.0,
                       help="validity of an issued certificate (default 30)")


def _verification_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("peer verification")
    group.add_argument("--trust-anchor", dest="trust_root", metavar="PEM", action="append", default=[],
                       help="SGX root CA to trust; replaces the default Intel SGX Root CA "
                            "('intel' names it). Repeatable. The simulated root must be given "
                            "explicitly.")
    group.add_argument("--trust-root", dest="trust_root", action="append", help=argparse.SUPPRESS)  # old name
    group.add_argument("--collateral", metavar="JSON", action="append", default=[],
                       help="DCAP collateral (dcap-qvl QuoteCollateralV3 JSON). Repeatable.")
    group.add_argument("--no-endorsements", action="store_true",
                       help="ignore collateral embedded in the peer's certificate")
    _issuer_ca_option(group)
    group.add_argument("--policy", metavar="JSON", help="policy file (see docs/ratls.md)")
    group.add_argument("--mr-enclave", metavar="HEX", action="append", default=[],
                       help="expected MRENCLAVE (repeatable: any of them)")
    group.add_argument("--mr-signer", metavar="HEX", action="append", default=[],
                       help="accept an SGX enclave signed by this MRSIGNER (repeatable)")
    group.add_argument("--mr-td", metavar="HEX", action="append", default=[],
                       help="accept a TD with this MRTD (repeatable)")
    group.add_argument("--isv-prod-id", type=int, help="require this SGX ISVPRODID")
    group.add_argument("--min-isv-svn", type=int, help="require at least this SGX ISVSVN")
    group.add_argument("--allow-tcb-status", metavar="STATUS", action="append", default=[],
                       help="TCB status to accept (repeatable; default UpToDate)")
    group.add_argument("--insecure-any-enclave", action="store_true",
                       help="accept any genuine enclave (no identity pinned)")


def _issuer_ca_option(group: Any) -> None:
    group.add_argument("--issuer-ca", metavar="PEM", action="append", default=[],
                       help="CA certificate(s) that may issue (endorse) RA-TLS certificates; "
                            "without it only certificates signed by their own key are "
                            "accepted. Repeatable.")


def _positive(kind: Any) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
        return value

    return parse


def _relay_limit_options(parser: argparse.ArgumentParser) -> None:
    from inclavare.ratls.relay import RelayLimits

    d = RelayLimits()
    parser.add_argument("--max-connections", type=_positive(int), default=d.max_connections, metavar="N",
                        help=f"relayed connections in all (default {d.max_connections}; lowered to fit the "
                             "descriptor limit); over it a client is closed at once")
    parser.add_argument("--max-per-client", type=_positive(int), default=d.per_client, metavar="N",
                        help=f"relayed connections from one client address (default {d.per_client})")
    parser.add_argument("--idle-timeout", type=_positive(float), default=d.idle_timeout, metavar="SECONDS",
                        help=f"close a connection that carried no byte either way for this long "
                             f"(default {d.idle_timeout:g}; 0: never)")


def _relay_limits(args: argparse.Namespace) -> Any:
    from inclavare.ratls.relay import RelayLimits

    return RelayLimits(max_connections=max(1, args.max_connections), per_client=max(1, args.max_per_client),
                       idle_timeout=args.idle_timeout)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("ratls", help="attested TLS (RA-TLS): relays, certificates",
                            description="Attested TLS with interoperable RA-TLS certificates.")
    commands = parser.add_subparsers(dest="ratls_command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="RA-TLS in front of a plain TCP service")
    serve.add_argument("--listen", required=True, metavar="HOST:PORT", help="where clients connect with RA-TLS")
    serve.add_argument("--forward", required=True, metavar="HOST:PORT",
                       help="the plain TCP service their bytes go to")
    serve.add_argument("--mutual", action="store_true",
                       help="require and verify the client's RA-TLS certificate")
    _local_certificate_options(serve)
    _verification_options(serve)
    _relay_limit_options(serve)
    serve.set_defaults(handler=_serve)

    connect = commands.add_parser("connect", help="plain local port carried over RA-TLS")
    connect.add_argument("--listen", required=True, metavar="HOST:PORT",
                         help="the local plain TCP port programs connect to")
    connect.add_argument("--connect", required=True, metavar="HOST:PORT",
                         help="the RA-TLS server their bytes are carried to")
    connect.add_argument("--mutual", action="store_true",
                         help="present our own RA-TLS certificate to the server")
    _local_certificate_options(connect)
    _verification_options(connect)
    _relay_limit_options(connect)
    connect.set_defaults(handler=_connect)

    issue = commands.add_parser("issue", help="issue an RA-TLS certificate from the current TEE")
    issue.add_argument("--cert-out", required=True, metavar="FILE", help="where to write the certificate (PEM)")
    issue.add_argument("--key-out", required=True, metavar="FILE",
                       help="where to write its private key (PEM, mode 0600)")
    issue.add_argument("--force", action="store_true", help="replace --cert-out and --key-out if they exist")
    _local_certificate_options(issue)
    issue.set_defaults(handler=_issue)

    inspect = commands.add_parser("inspect", help="show an RA-TLS certificate's evidence and claims")
    inspect.add_argument("certificate", metavar="CERT", help="the certificate (PEM or DER)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object with the same keys")
    _issuer_ca_option(inspect)
    inspect.set_defaults(handler=_inspect)

    verify = commands.add_parser("verify", help="verify an RA-TLS certificate")
    verify.add_argument("certificate", metavar="CERT", help="the certificate (PEM or DER)")
    verify.add_argument("--json", action="store_true", help="print one JSON object with the same keys")
    add_at_option(verify)
    _verification_options(verify)
    verify.set_defaults(handler=_verify)


# -- building blocks from the options --------------------------------------------------------

def _read(path: str, what: str) -> bytes:
    from inclavare.verify.trust_files import read_file

    return read_file(path, what)


def _credentials(args: argparse.Namespace) -> Any:
    import datetime as dt

    from inclavare.ratls.attester import (
        AgentAttester,
        SimAuthorityAttester,
        TsmAttester,
        detect_attester,
    )
    from inclavare.ratls.issue import RatlsCredentials, issue_certificate

    if args.cert or args.key:
        if not (args.cert and args.key):
            raise ConfigError("--cert and --key go together")
        return RatlsCredentials.from_pem(_read(args.cert, "certificate"), _read(args.key, "key"))
    attester: Any
    if args.attester == "sim" or args.sim_authority:
        if not args.sim_authority:
            raise ConfigError("--attester sim needs --sim-authority DIR")
        mr = _hex(args.sim_mr_enclave, 32, "--sim-mr-enclave") if args.sim_mr_enclave else None
        attester = SimAuthorityAttester.from_state_dir(args.sim_authority, mr)
        # peers must pin it: say which (a random one unless --sim-mr-enclave), and what it is
        print(f"inclavare ratls: SIMULATED TEE evidence for mr_enclave {attester.mr_enclave.hex()}"
              f"{'' if mr else ' (random: pass --sim-mr-enclave to fix it)'}", file=sys.stderr, flush=True)
    elif args.attester == "agent":
        attester = AgentAttester(args.agent_socket)
    elif args.attester == "tsm":
        attester = TsmAttester()
    elif args.agent_socket:
        attester = AgentAttester(args.agent_socket)
    else:
        attester = detect_attester()
    if not args.validity_days > 0:
        raise ConfigError("--validity-days must be positive")
    return issue_certificate(attester, key_type=args.key_type, endorsements=args.endorsements,
                             legacy_extension=args.legacy_extension,
                             validity=dt.timedelta(days=args.validity_days))


def _hex(text: str, size: int, what: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{what} must be hex") from None
    if len(value) != size:
        raise ConfigError(f"{what} must be {size} bytes ({2 * size} hex digits)")
    return value


def _issuer_cas(args: argparse.Namespace) -> tuple[Any, ...]:
    from inclavare.ratls.issuers import IssuerCa

    return tuple(ca for path in args.issuer_ca
                 for ca in IssuerCa.load_pem(_read(path, "issuer CA"), f"issuer CA {path}"))


def _verifier(args: argparse.Namespace) -> Any:
    from inclavare.ratls.policy import RatlsPolicy, read_policy_document
    from inclavare.ratls.verifier import RatlsVerifier
    from inclavare.verify.trust_files import load_trust

    trust = load_trust(roots=args.trust_root, collateral=args.collateral)
    document: dict[str, Any] = read_policy_document(args.policy) if args.policy else {}
    for name, values in (("mr_enclave", args.mr_enclave), ("mr_signer", args.mr_signer),
                         ("mr_td", args.mr_td)):
        if values:
            known = document.get(name, ())
            document[name] = (tuple([known] if isinstance(known, str) else known)
                              + tuple(values))
    if args.isv_prod_id is not None:
        document["isv_prod_id"] = args.isv_prod_id
    if args.min_isv_svn is not None:
        document["min_isv_svn"] = args.min_isv_svn
    if args.allow_tcb_status:
        document["allowed_tcb_statuses"] = tuple(args.allow_tcb_status)
    if args.insecure_any_enclave:
        document["insecure_any_enclave"] = True
    policy = RatlsPolicy.from_mapping(document)
    return RatlsVerifier(policy, trust, use_endorsements=not args.no_endorsements,
                         issuer_cas=_issuer_cas(args))


def _run_relay(coroutine: Any) -> int:
    import asyncio
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s ratls %(levelname)s %(message)s")
    asyncio.run(coroutine)
    return 0


# -- handlers ---------------------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    from inclavare.ratls import relay
    from inclavare.ratls.tls import server_context

    listen = relay.Endpoint.parse(args.listen, "--listen")
    forward = relay.Endpoint.parse(args.forward, "--forward")
    verifier = _verifier(args) if args.mutual else None
    context = server_context(_credentials(args), verifier)
    return _run_relay(relay.serve(listen, forward, context, ready=relay.print_ready("ratls serve"),
                                  limits=_relay_limits(args)))


def _connect(args: argparse.Namespace) -> int:
    from inclavare.ratls import relay
    from inclavare.ratls.tls import client_context

    listen = relay.Endpoint.parse(args.listen, "--listen")
    remote = relay.Endpoint.parse(args.connect, "--connect")
    verifier = _verifier(args)
    context = client_context(verifier, _credentials(args) if args.mutual else None)
    return _run_relay(relay.connect(listen, remote, context, ready=relay.print_ready("ratls connect"),
                                    limits=_relay_limits(args)))


def _issue(args: argparse.Namespace) -> int:
    import os

    from inclavare.atomic_file import write_atomic

    existing = [path for path in (args.cert_out, args.key_out) if os.path.exists(path)]
    if existing and not args.force:
        raise ConfigError(f"{', '.join(existing)} exists; pass --force to replace it (a key in use would be lost)")
    credentials = _credentials(args)
    write_atomic(args.key_out, credentials.private_key_pem(), 0o600)
    write_atomic(args.cert_out, credentials.certificate_pem(), 0o644)
    print(os.path.abspath(args.cert_out))
    label = " (SIMULATED TEE: its evidence proves nothing about hardware)" if args.attester == "sim" else ""
    print(f"inclavare ratls issue: certificate {os.path.abspath(args.cert_out)}, private key "
          f"{os.path.abspath(args.key_out)}{label}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from inclavare.ratls.inspection import describe_certificate

    description = describe_certificate(_read(args.certificate, "certificate"), _issuer_cas(args))
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    summary = {k: v for k, v in description.items() if k != "evidence"}
    print_fields(summary)
    for evidence in description["evidence"][1:]:
        print(f"also: {evidence['format']} ({evidence['oid']}): pubkey_bound "
              f"{'true' if evidence['pubkey_bound'] else 'false'}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import json

    when = parse_at(args.at) if args.at else None
    verdict = _verifier(args).verify(_read(args.certificate, "certificate"), now=when)
    document = {"verified": True, **verdict.to_dict()}  # the same keys in text and JSON
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_fields(document)
    return 0
