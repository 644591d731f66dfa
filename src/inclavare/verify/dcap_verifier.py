"""The DCAP verifier (SGX and TDX quotes): Trustee's ``{"quote": "<base64>"}`` evidence -> Verdict.

:func:`dcap_claims` is the one place a verified quote becomes claims; the key broker, RA-TLS and
the CLI all show these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.evidence import decode_base64, load_evidence
from inclavare.tee.registry import Tee
from inclavare.verify.dcap import MalformedQuote, VerifiedQuote, verify_parsed_quote
from inclavare.verify.evidence import TrustConfig, Verdict, expect_report_data, select_collateral


def dcap_claims(verified: VerifiedQuote) -> dict[str, Any]:
    """JSON-ready claims of a verified quote: its report's fields (bytes as hex), the platform's
    FMSPC and PCK CA, and when the collateral it relied on expires."""
    claims = verified.claims_dict()
    claims["fmspc"] = verified.fmspc.hex()
    claims["pck_ca"] = verified.pck_ca
    claims["collateral_expires"] = dt.datetime.fromtimestamp(verified.collateral_expires,
                                                             dt.timezone.utc).isoformat()
    return claims


def verify_dcap(tee: Tee, evidence: Mapping[str, Any], report_data: bytes | None,
                trust: TrustConfig, now: dt.datetime) -> Verdict:
    try:
        raw = decode_base64(evidence.get("quote"), "evidence quote")
        loaded = load_evidence(raw)
    except FormatError as exc:
        raise MalformedQuote(f"malformed {tee} evidence: {exc}") from exc
    if loaded.tee != tee.name or loaded.quote is None:
        raise MalformedQuote(f"the evidence is a {loaded.tee} quote, not {tee}")
    collateral = select_collateral(loaded.quote, trust.collateral_documents())
    verified = verify_parsed_quote(loaded.raw, loaded.quote, collateral, now=now,
                                   trust_anchors=trust.sgx_root_cas)
    expect_report_data(verified.report_data, report_data)
    return Verdict(tee.name, verified.status, verified.advisory_ids, dcap_claims(verified))


def dcap_ready(trust: TrustConfig) -> bool:
    """DCAP evidence can verify only with collateral configured."""
    return bool(trust.collateral or trust.collateral_provider)
