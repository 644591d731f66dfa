"""Trustee's ``sample`` TEE verifier: no hardware, no security; for protocol tests only.

Evidence ``{"svn": "1", "report_data": "<base64 of the 48-byte runtime-data digest>"}``; the
report data must equal the expected digest exactly. Claims as Trustee's sample verifier emits
them (fixed launch digest ``abcde``, platform 1.4, not debug). Only reachable when the server
runs with ``insecure_allow_sample_tee = true``; the default resource policy denies it.
"""

from __future__ import annotations

import hmac
from typing import Any

from inclavare.crypto.b64 import b64std_decode
from inclavare.errors import FormatError, ReportDataMismatch

LAUNCH_DIGEST = "abcde"


def verify_sample_evidence(evidence: Any, expected_report_data: bytes) -> dict[str, Any]:
    if not isinstance(evidence, dict):
        raise FormatError("sample evidence must be a JSON object")
    svn, rd_text = evidence.get("svn"), evidence.get("report_data")
    if not isinstance(svn, str):
        raise FormatError("sample evidence: 'svn' must be a string")
    report_data = b64std_decode(rd_text, "sample evidence report_data")
    if not hmac.compare_digest(report_data, expected_report_data):
        raise ReportDataMismatch("sample evidence report_data does not match the runtime data digest")
    claims: dict[str, Any] = {
        "svn": svn,
        "report_data": rd_text,
        "launch_digest": LAUNCH_DIGEST,
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }
    if isinstance(evidence.get("init_data"), str):
        claims["init_data"] = evidence["init_data"]
    return claims
