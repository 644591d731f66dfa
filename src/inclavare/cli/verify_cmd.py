"""``inclavare verify`` and ``inclavare inspect``: check evidence offline, or just show it.

``verify EVIDENCE`` takes a raw quote/report (binary or hex) or CoCo evidence JSON, auto-detects
SGX/TDX/SNP, and verifies it: DCAP quotes against ``--collateral`` (dcap-qvl JSON shape) and the
Intel SGX Root CA (or ``--trust-anchor``), SNP reports against ``--vcek`` and the ``--ca`` ASK/ARK
chain. Exit 0 when it verifies (whatever the TCB status, which is printed); otherwise one error
line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inclavare.cli.output import add_at_option, parse_at, text_value
from inclavare.errors import ConfigError, VerificationError


def _read(path: str, what: str) -> bytes:
    from inclavare.verify.trust_files import read_file

    return sys.stdin.buffer.read() if path == "-" else read_file(path, what)


def _certificates_of(pem: bytes) -> list[dict[str, Any]] | None:
    """A PEM chain as its certificates' names (a simulated chain says SIMULATED in each)."""
    from cryptography import x509

    from inclavare.tee.sim_pki import is_simulated

    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    return [{"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
             "not_after": c.not_valid_after_utc.isoformat(), "simulated": is_simulated(c)} for c in chain]


def _plain(value: Any) -> Any:
    """JSON-ready form of parsed structures (dataclasses → dicts, bytes → hex, a PEM certificate
    chain → its certificates' names)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in ("raw", "der")}
        body = fields.get("body")
        if isinstance(body, (bytes, bytearray)) and body.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
            chain = _certificates_of(bytes(body))
            if chain is not None:
                fields["body"] = {"pck_certificate_chain": chain}
        return {name: _plain(item) for name, item in fields.items()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _print(result: dict[str, Any], as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(result, sort_keys=False))
        return
    for key in ("tee", "simulated", "status", "advisory_ids"):
        print(f"{key}: {text_value(result[key], key)}")
    for key, value in result["claims"].items():
        print(f"{key}: {text_value(value, key)}")


def _simulated_quote(quote: Any) -> bool:
    from inclavare.errors import FormatError
    from inclavare.formats.quote import parse_quote
    from inclavare.tee.sim_pki import quote_is_simulated

    try:
        parsed = quote if hasattr(quote, "pck_chain_pem") else parse_quote(quote)
        return quote_is_simulated(parsed.pck_chain_pem)
    except FormatError:
        return False


def _verify(args: argparse.Namespace) -> int:
    import base64

    from inclavare.formats.evidence import load_evidence
    from inclavare.tee.sim_pki import is_simulated
    from inclavare.verify.evidence import verify_evidence
    from inclavare.verify.trust_files import load_trust

    evidence = load_evidence(_read(args.evidence, "evidence"))
    now = parse_at(args.at)
    encoded = base64.b64encode(evidence.raw).decode()
    if evidence.quote is not None:
        if not args.collateral:
            raise ConfigError("DCAP evidence needs --collateral FILE (dcap-qvl QuoteCollateralV3 JSON)")
        trust = load_trust(roots=[args.trust_anchor] if args.trust_anchor else [], collateral=[args.collateral])
        simulated = _simulated_quote(evidence.quote)
        try:
            verdict = verify_evidence(evidence.tee, {"quote": encoded}, report_data=None, trust=trust, now=now)
        except VerificationError as exc:
            if simulated and not args.trust_anchor:
                raise VerificationError(
                    f"{exc} — this quote is SIMULATED (its PCK chain was issued by a simulated authority, "
                    "not Intel): verify it with --trust-anchor ROOT-CA.pem of that authority "
                    "(`inclavare sim export`)") from None
            raise
    else:
        if evidence.snp_report is None:
            raise ConfigError("evidence is neither a DCAP quote nor an SNP report")
        cert_chain = evidence.extra.get("cert_chain")  # a VCEK the attester sent (Trustee's snp evidence)
        if not args.ca or not (args.vcek or cert_chain):
            raise ConfigError("SNP evidence needs --ca FILE (ASK and ARK), and --vcek FILE unless the "
                              "evidence carries its VCEK in cert_chain")
        trust = load_trust(amd_chains=[args.ca], vceks=[args.vcek] if args.vcek else [])
        simulated = bool(trust.amd_chains) and all(  # only a simulated ASK/ARK vouched for it
            is_simulated(c) for chain in trust.amd_chains for c in chain)
        snp_evidence: dict[str, object] = {"attestation_report": encoded}
        if cert_chain:
            snp_evidence["cert_chain"] = cert_chain
        verdict = verify_evidence(evidence.tee, snp_evidence, report_data=None, trust=trust, now=now)
    result = {"tee": verdict.tee, "simulated": simulated, "status": verdict.status,
              "advisory_ids": list(verdict.advisory_ids), "claims": verdict.claims}
    _print(result, args.json)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from inclavare.formats.evidence import load_evidence

    evidence = load_evidence(_read(args.evidence, "evidence"))
    parsed: Any = evidence.quote if evidence.quote is not None else evidence.snp_report
    data = {"tee": evidence.tee, "encoding": evidence.encoding, "size": len(evidence.raw),
            "evidence": _plain(parsed)}
    if args.json:
        print(json.dumps(data))
    else:
        _print_tree(data, 0)
    return 0


def _print_tree(value: Any, depth: int) -> None:
    pad = "  " * depth
    for key, item in value.items():
        if isinstance(item, dict):
            print(f"{pad}{key}:")
            _print_tree(item, depth + 1)
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            for index, element in enumerate(item):
                print(f"{pad}{key}[{index}]:")
                _print_tree(element, depth + 1)
        elif isinstance(item, str) and len(item) > 200:
            print(f"{pad}{key}: {item[:96]}… ({len(item) // 2} bytes)")
        else:
            print(f"{pad}{key}: {text_value(item, key)}")


def add_parser(sub: Any) -> None:
    verify = sub.add_parser("verify", help="verify SGX/TDX quotes and SNP reports offline",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("evidence", metavar="EVIDENCE",
                        help="quote/report file (binary, hex or evidence JSON; - for stdin)")
    verify.add_argument("--collateral", metavar="FILE",
                        help="DCAP collateral JSON (dcap-qvl QuoteCollateralV3 shape)")
    verify.add_argument("--trust-anchor", metavar="PEM", help="root CA(s) to trust instead of the Intel SGX Root CA")
    verify.add_argument("--vcek", metavar="FILE",
                        help="SNP VCEK certificate (DER or PEM); not needed when the evidence carries it in cert_chain")
    verify.add_argument("--ca", metavar="FILE", help="SNP ASK and ARK certificates (PEM)")
    add_at_option(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(handler=_verify)

    inspect = sub.add_parser("inspect", help="print the fields of a quote or report without verifying")
    inspect.add_argument("evidence", metavar="EVIDENCE",
                         help="quote/report file (binary, hex or evidence JSON; - for stdin)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_inspect)
