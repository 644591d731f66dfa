"""Trustee's ``sample`` TEE attester: no hardware, no security — protocol tests only.

Evidence ``{"svn": "1", "report_data": "<base64>"}`` (report data unpadded, as kbs-types); the
broker accepts it only with ``insecure_allow_sample_tee = true``.
"""

from __future__ import annotations

import base64
from typing import Any

from inclavare.tee.registry import SAMPLE, Tee


class SampleAttester:
    tee: Tee = SAMPLE

    def __init__(self, svn: str = "1") -> None:
        self.svn = svn

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return {"svn": self.svn, "report_data": base64.b64encode(report_data).decode()}
