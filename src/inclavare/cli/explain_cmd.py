"""``inclavare explain``: why evidence was appraised as it was and why a resource was (not) released."""

from __future__ import annotations

import argparse
from typing import Any

from inclavare.cli.output import add_at_option, parse_at, print_fields, text_value
from inclavare.errors import ConfigError
from inclavare.verify.trust_files import read_file as _read


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain", help="explain an attestation decision: every claim, reference value and reason",
                       description="Replay the key broker's decision from an EAR token it issued (--token) or from "
                                   "SGX/TDX evidence verified here (--evidence) with the same attestation policy "
                                   "and reference values, then evaluate the resource policy for one resource. "
                                   "Prints every trust claim with its tier and meaning, every reference value "
                                   "with expected and actual, why the resource is denied, and the fixes.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", metavar="FILE", help="an EAR attestation token (JWT) issued by the broker")
    source.add_argument("--decision", metavar="ID",
                        help="a decision id from a PolicyDeny answer, found in the broker's JSON log (--log)")
    source.add_argument("--evidence", metavar="FILE", help="an SGX/TDX quote (binary, hex or CoCo evidence JSON)")
    p.add_argument("--log", metavar="FILE", help="the broker's log (log_format = \"json\") holding --decision")
    p.add_argument("--collateral", metavar="FILE", help="DCAP collateral for --evidence (dcap-qvl JSON)")
    p.add_argument("--trust-anchor", metavar="PEM", help="root CA to trust instead of Intel's (for --evidence)")
    add_at_option(p, "verify the evidence")
    p.add_argument("--reference-values", metavar="FILE",
                   help='reference values as the broker holds them: a JSON object {"mr_enclave": ["…"], …}')
    p.add_argument("--attestation-policy", metavar="FILE.rego", help="the attestation policy (default: the broker's)")
    p.add_argument("--resource-policy", metavar="FILE.rego", help="the resource policy (default: the broker's)")
    p.add_argument("--resource", default="default/key/1", metavar="REPO/TYPE/TAG",
                   help="the resource to decide on (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the same keys")
    p.set_defaults(handler=_run)


def _token_claims(text: bytes) -> dict[str, Any]:
    from inclavare.crypto.b64 import b64url_decode
    from inclavare.formats.strict_json import loads_strict, require_object

    parts = text.strip().split(b".")
    if len(parts) != 3:
        raise ConfigError("--token must be a JWT (three base64url parts separated by dots)")
    return require_object(loads_strict(b64url_decode(parts[1].decode("ascii", "replace"), "token claims"),
                                       "token claims"), "token claims")


def _decision(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claims and facts a broker logged for a denial (its JSON log keeps the claims, never the token)."""
    import json

    if not args.log:
        raise ConfigError("--decision needs --log FILE: the broker's log, written with log_format = \"json\"")
    for line in _read(args.log, "log").decode("utf-8", "replace").splitlines():
        if args.decision not in line or not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("decision_id") == args.decision and isinstance(doc.get("claims"), dict) and doc.get("resource"):
            return doc["claims"], doc
    raise ConfigError(f"decision {args.decision} is not in {args.log} (only denials are recorded with their "
                      "claims, and only with log_format = \"json\")")


def _evidence_claims(args: argparse.Namespace, reference_values: dict[str, Any], policy: str) -> dict[str, Any]:
    import base64

    from inclavare.formats.evidence import load_evidence
    from inclavare.policy.explain import appraise
    from inclavare.tee.sim_pki import quote_is_simulated
    from inclavare.verify.evidence import verify_evidence
    from inclavare.verify.trust_files import load_trust

    evidence = load_evidence(_read(args.evidence, "evidence"))
    if evidence.quote is None:
        raise ConfigError("--evidence takes SGX/TDX quotes; for SNP, explain the broker's token (--token)")
    if not args.collateral:
        raise ConfigError("--evidence needs --collateral FILE")
    trust = load_trust(roots=[args.trust_anchor] if args.trust_anchor else [], collateral=[args.collateral],
                       first_root_only=True)
    tee = str(evidence.tee)
    verdict = verify_evidence(tee, {"quote": base64.b64encode(evidence.raw).decode()}, report_data=None,
                              trust=trust, now=parse_at(args.at))
    simulated = quote_is_simulated(evidence.quote.pck_chain_pem)
    annotated: dict[str, Any] = {tee: verdict.appraisal_claims(simulated),
                                 "report_data": evidence.quote.report.report_data.hex(), "runtime_data_claims": {}}
    if simulated:
        annotated["simulated"] = True
    return appraise(annotated, policy, reference_values)


def _run(args: argparse.Namespace) -> int:
    import json

    from inclavare.formats.strict_json import loads_strict, require_object
    from inclavare.policy.explain import default_policy, explain

    reference_values: dict[str, Any] = {}
    if args.reference_values:
        reference_values = require_object(loads_strict(_read(args.reference_values, "reference values"),
                                                       "reference values"), "reference values")
    attestation = (_read(args.attestation_policy, "attestation policy").decode() if args.attestation_policy
                   else default_policy("attestation_default.rego"))
    resource_policy = (_read(args.resource_policy, "resource policy").decode() if args.resource_policy
                       else default_policy("resource_default.rego"))
    resource = args.resource.strip("/").split("/")
    if len(resource) != 3 or not all(resource):
        raise ConfigError("--resource must be REPO/TYPE/TAG")
    if args.decision:
        claims, recorded = _decision(args)
        resource = recorded["resource"].split("/")
        source = {"source": "decision", "decision_id": args.decision, "decided": recorded.get("time", "-")}
    elif args.token:
        claims = _token_claims(_read(args.token, "token"))
        source = {"source": "token", "token_signature": "not checked (explain reads what the token says)"}
    else:
        claims = _evidence_claims(args, reference_values, attestation)
        source = {"source": "evidence", "report_data_binding": "not checked (no broker session here)"}
    trace = {**source, **explain(claims, resource_policy=resource_policy, resource=resource,
                                 reference_values=reference_values if args.reference_values else None,
                                 default_resource_policy=not args.resource_policy)}
    if args.json:
        print(json.dumps(trace, indent=2))
    else:
        _print(trace)
    return 0


def _print(trace: dict[str, Any]) -> None:
    head = {k: v for k, v in trace.items() if k not in ("trust_vector", "reference_values", "resource", "fixes")}
    print_fields(head)
    for name, claim in trace.get("trust_vector", {}).items():
        print(f"trust_vector.{name}: {claim['value']} {claim['tier']} ({claim['meaning']})")
    for rv in trace.get("reference_values", []):
        mark = "matches" if rv["match"] else "DOES NOT MATCH"
        print(f"reference_values.{rv['name']}: {mark}: actual {text_value(rv['actual'])}, "
              f"expected {text_value(rv['expected'])}")
    resource = trace.get("resource", {})
    print(f"resource.{resource.get('path')}: {'allowed' if resource.get('allowed') else 'DENIED'}")
    for reason in resource.get("reasons", []):
        print(f"  because {reason}")
    for fix in trace.get("fixes", []):
        print(f"fix: {fix}")
