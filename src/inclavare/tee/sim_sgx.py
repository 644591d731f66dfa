"""The simulated SGX attester: quotes of the simulated authority for one simulated enclave.

Trustee's SGX evidence shape (``{"quote": "<base64>"}``). No protection: whoever can read the
authority's directory can mint these, and only a verifier configured with the simulated root
accepts them (marked ``simulated``).
"""

from __future__ import annotations

import base64
from typing import Any

from inclavare.errors import ConfigError
from inclavare.tee.registry import SGX, Tee, pad_report_data
from inclavare.tee.sim_authority import SimAuthority


class SimSgxAttester:
    """Evidence for ``mr_enclave`` (and the given identity options) from ``authority``."""

    tee: Tee = SGX

    def __init__(self, authority: SimAuthority, mr_enclave: bytes, **options: Any) -> None:
        if not isinstance(authority, SimAuthority):
            raise ConfigError("the simulated SGX attester needs a SimAuthority")
        if len(mr_enclave) != 32:
            raise ConfigError("mr_enclave is 32 bytes")
        self.authority = authority
        self.mr_enclave = mr_enclave
        self.options = options

    def quote(self, report_data: bytes) -> bytes:
        """The raw quote (for wire formats that carry bytes, e.g. RA-TLS)."""
        return self.authority.quote(self.mr_enclave, pad_report_data(report_data), **self.options)

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return {"quote": base64.b64encode(self.quote(report_data)).decode()}
