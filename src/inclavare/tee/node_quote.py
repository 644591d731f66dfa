"""The enclave's attester on this stack: the node agent quotes for the enclave container over the
host channel (``POST /v1/quote``), as the platform's quoting enclave (SGX) or the TDX module /
SNP firmware do for a hardware enclave or confidential VM.

The enclave agent answers ``/aa/evidence`` and runs its key broker client with this attester.
Which TEE it is the platform tells (``GET /v1/info``, the simulated ``detect_tee_type``: on
hardware the guest reads it from its devices, which the host provides too); once known, evidence
of another TEE than that is refused. A host that lies gains nothing: the verifier checks the
evidence and the policy names the TEE and its measurement.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from inclavare.errors import InclavareError
from inclavare.tee.registry import Tee, UnknownTee, tee_named


class NodeQuoteError(InclavareError):
    """The node agent's quote is not for the TEE this enclave expects."""


class Quoter(Protocol):
    def quote(self, report_data: bytes) -> tuple[str, dict[str, Any]]: ...

    def platform_tee(self) -> str: ...


class NodeQuoteAttester:
    """Evidence from the node agent's quoting service for the TEE the platform simulates (or
    ``tee`` when given)."""

    def __init__(self, quoter: Quoter, tee: Tee | None = None) -> None:
        self.quoter = quoter
        self._tee = tee
        self._lock = threading.Lock()

    @property
    def tee(self) -> Tee:
        with self._lock:
            if self._tee is None:
                name = self.quoter.platform_tee()
                try:
                    self._tee = tee_named(name)
                except UnknownTee as exc:
                    raise NodeQuoteError(f"the platform's TEE is unknown here: {exc}") from None
            return self._tee

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        expected = self.tee
        tee, evidence = self.quoter.quote(report_data)
        if tee != expected.name:
            raise NodeQuoteError(f"the node agent quoted for {tee!r}, this enclave expects {expected}")
        return dict(evidence)
