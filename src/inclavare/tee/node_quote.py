"""The enclave's attester on this stack: the node agent quotes for the enclave container over the
host channel (``POST /v1/quote``), as the platform's quoting enclave does for a hardware enclave.

The enclave agent answers ``/aa/evidence`` and runs its key broker client with this attester.
The node agent answers with the TEE it quoted for; evidence of another TEE than expected is refused.
"""

from __future__ import annotations

from typing import Any, Protocol

from inclavare.errors import InclavareError
from inclavare.tee.registry import SGX, Tee


class NodeQuoteError(InclavareError):
    """The node agent's quote is not for the TEE this enclave expects."""


class Quoter(Protocol):
    def quote(self, report_data: bytes) -> tuple[str, dict[str, str]]: ...


class NodeQuoteAttester:
    """Evidence from the node agent's quoting service (the simulated SGX authority today)."""

    def __init__(self, quoter: Quoter, tee: Tee = SGX) -> None:
        self.quoter = quoter
        self.tee = tee

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        tee, evidence = self.quoter.quote(report_data)
        if tee != self.tee.name:
            raise NodeQuoteError(f"the node agent quoted for {tee!r}, this enclave expects {self.tee}")
        return dict(evidence)
