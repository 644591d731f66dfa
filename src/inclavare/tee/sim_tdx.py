"""The simulated TDX attester: TD quotes of the simulated authority for one simulated TD.

Trustee's TDX evidence shape (``{"quote": "<base64>"}``, as for SGX). MRTD is the measurement the
caller gives (e.g. of the image), RTMRs and MRCONFIGID are options. No protection: whoever can
read the authority's directory can mint these, and only a verifier configured with the simulated
root (and its TDX collateral) accepts them.
"""

from __future__ import annotations

import base64
from typing import Any

from inclavare.errors import ConfigError
from inclavare.tee.registry import TDX, Tee, pad_report_data
from inclavare.tee.sim_authority import SimAuthority


class SimTdxAttester:
    """Evidence for the TD measured as ``mr_td`` (and the given report options, see
    :meth:`SimAuthority.td_quote`) from ``authority``."""

    tee: Tee = TDX

    def __init__(self, authority: SimAuthority, mr_td: bytes, **options: Any) -> None:
        if not isinstance(authority, SimAuthority):
            raise ConfigError("the simulated TDX attester needs a SimAuthority")
        if not isinstance(mr_td, bytes) or len(mr_td) != 48:
            raise ConfigError("mr_td is 48 bytes")
        self.authority = authority
        self.mr_td = mr_td
        self.options = options

    def quote(self, report_data: bytes) -> bytes:
        """The raw TD quote (for wire formats that carry bytes, e.g. RA-TLS)."""
        return self.authority.td_quote(self.mr_td, pad_report_data(report_data), **self.options)

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return {"quote": base64.b64encode(self.quote(report_data)).decode()}
