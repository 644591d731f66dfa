"""Composite evidence: a CPU TEE attester plus device attesters (a TPM, ...), as CoCo's
guest-components send them in one KBS attest (``tee-evidence.additional_evidence``).

The KBS client asks the primary for the evidence of the request's TEE and each device attester
for its own; the two bind different report data (see ``services/kbs/protocol.device_runtime_data``),
so a composite is not itself an :class:`~inclavare.tee.registry.Attester` of one report data only:
``evidence`` is the primary's, and the client reads ``additional``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inclavare.errors import ConfigError
from inclavare.tee.registry import Attester, Tee


class CompositeAttester:
    """``primary``'s TEE and evidence, with ``additional`` device attesters (distinct TEEs, none
    the primary's)."""

    def __init__(self, primary: Attester, additional: Sequence[Attester]) -> None:
        names = [a.tee.name for a in additional]
        if not names or len(set(names)) != len(names) or primary.tee.name in names:
            raise ConfigError("a composite attester needs additional attesters of distinct TEEs, "
                              "none the primary's")
        self.primary = primary
        self.additional = tuple(additional)

    @property
    def tee(self) -> Tee:
        return self.primary.tee

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return self.primary.evidence(report_data)
