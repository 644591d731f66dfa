"""The simulated SEV-SNP attester: attestation reports of the simulated AMD authority for one
simulated guest.

Evidence in Trustee's SNP shape: ``{"attestation_report": <report>, "cert_chain": [{"cert_type":
"VCEK", "data": [DER bytes]}]}``, the report as base64 of its 1184 bytes (the verifier does not
read the sev crate's structured form). No protection: whoever can read the authority's directory
can mint these, and only a verifier configured with the simulated ARK accepts them.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.errors import ConfigError
from inclavare.tee.registry import SNP, Tee, pad_report_data
from inclavare.tee.sim_amd import SIM_TCB, SimAmdAuthority


class SimSnpAttester:
    """Evidence for the guest measured as ``measurement`` (and the given report fields, see
    :meth:`SimAmdAuthority.report`) from ``authority``."""

    tee: Tee = SNP

    def __init__(self, authority: SimAmdAuthority, measurement: bytes, **fields: Any) -> None:
        if not isinstance(authority, SimAmdAuthority):
            raise ConfigError("the simulated SNP attester needs a SimAmdAuthority")
        if not isinstance(measurement, bytes) or len(measurement) != 48:
            raise ConfigError("the SNP measurement is 48 bytes")
        self.authority = authority
        self.measurement = measurement
        self.fields = fields

    def report(self, report_data: bytes) -> bytes:
        """The raw signed attestation report."""
        return self.authority.report(self.measurement, pad_report_data(report_data), **self.fields)

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        report = self.report(report_data)
        _, vcek = self.authority.vcek(self.fields.get("reported_tcb", SIM_TCB))
        return {"attestation_report": base64.b64encode(report).decode(),
                "cert_chain": [{"cert_type": "VCEK", "data": list(vcek.public_bytes(Encoding.DER))}]}
