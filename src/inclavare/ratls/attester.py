"""Attesters: "the current TEE" that turns 64 bytes of report data into evidence.

* :class:`AgentAttester` — inside an enclave container: the enclave agent's socket
  (``/run/inclavare/agent.sock``, or ``$INCLAVARE_AGENT_SOCKET``), CoCo's ``GET /aa/evidence``.
  The quote names the container's own measurement (the node agent's channel answers that
  container only); the key whose hash is the report data never leaves this process.
* :class:`SimAuthorityAttester` — on a host with the simulated SGX authority (tests, tools):
  quotes for a given simulated MRENCLAVE, plus the authority's collateral as endorsements.
  The simulation protects nothing; its root must be configured explicitly to be trusted.
* :class:`TsmAttester` — a TDX or SEV-SNP guest through Linux configfs-tsm
  (``/sys/kernel/config/tsm/report``): write ``inblob``, read ``outblob``, check ``generation``.

:func:`detect_attester` picks the agent when its socket exists, else configfs-tsm when the
kernel offers it; there is no silent fallback to the simulation.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote_from_bytes

from inclavare.errors import AgentError, ConfigError, InclavareError
from inclavare.formats.collateral import Collateral
from inclavare.ratls.certificate import TAG_INTEL_TEE_QUOTE, TAG_SEV_SNP
from inclavare.tee.registry import pad_report_data
from inclavare.tee.tsm import TSM_REPORT_DIR

AGENT_SOCKET_ENV = "INCLAVARE_AGENT_SOCKET"
IN_CONTAINER_AGENT_SOCKET = "/run/inclavare/agent.sock"


class AttesterError(InclavareError):
    """The TEE could not produce evidence."""


@dataclass(frozen=True, slots=True)
class RawEvidence:
    """Evidence for one report data: the quote/report bytes and the CBOR tag naming its format."""

    tag: int
    data: bytes


@runtime_checkable
class Attester(Protocol):
    """Produces evidence whose report data is the given bytes (≤ 64, zero-padded)."""

    @property
    def name(self) -> str: ...

    def evidence(self, report_data: bytes) -> RawEvidence: ...

    def endorsements(self) -> Collateral | None: ...


class AgentAttester:
    """Evidence from the enclave agent's API (inside an enclave container)."""

    name = "agent"

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30) -> None:
        self.socket_path = socket_path or os.environ.get(AGENT_SOCKET_ENV) or IN_CONTAINER_AGENT_SOCKET
        self.timeout = timeout

    def evidence(self, report_data: bytes) -> RawEvidence:
        from inclavare.services.agent.client import call

        data = pad_report_data(report_data)
        path = "/aa/evidence?runtime_data=" + quote_from_bytes(data, safe="")
        try:
            answer = call(self.socket_path, "GET", path, timeout=self.timeout)
        except AgentError as exc:
            raise AttesterError(f"the enclave agent gave no evidence: {exc}") from exc
        quote = answer.get("quote") if isinstance(answer, dict) else None
        if not isinstance(quote, str):
            raise AttesterError("the enclave agent's evidence has no 'quote'")
        try:
            raw = base64.b64decode(quote, validate=True)
        except binascii.Error:
            raise AttesterError("the enclave agent's quote is not base64") from None
        return RawEvidence(TAG_INTEL_TEE_QUOTE, raw)

    def endorsements(self) -> Collateral | None:
        return None


class SimAuthorityAttester:
    """RA-TLS adapter of the simulated SGX attester (``inclavare.tee.sim_sgx``): its quote as
    CBOR-tagged evidence, and the authority's collateral as endorsements."""

    name = "simulated"

    def __init__(self, authority: object, mr_enclave: bytes, *, mr_signer: bytes | None = None,
                 isv_prod_id: int = 0, isv_svn: int = 0, attributes: bytes | None = None) -> None:
        from inclavare.tee.sim_authority import SimAuthority
        from inclavare.tee.sim_sgx import SimSgxAttester

        if not isinstance(authority, SimAuthority):
            raise ConfigError("SimAuthorityAttester needs a SimAuthority")
        options: dict[str, Any] = {"isv_prod_id": isv_prod_id, "isv_svn": isv_svn}
        if mr_signer is not None:
            options["mr_signer"] = mr_signer
        if attributes is not None:
            options["attributes"] = attributes
        self.attester = SimSgxAttester(authority, mr_enclave, **options)
        self.authority = authority
        self.mr_enclave = mr_enclave

    @classmethod
    def from_state_dir(cls, state_dir: str, mr_enclave: bytes | None = None) -> SimAuthorityAttester:
        from inclavare.tee.sim_authority import SimAuthority

        authority = SimAuthority.load_existing(state_dir)  # a mistyped directory must not mint a new root
        return cls(authority, mr_enclave if mr_enclave is not None else secrets.token_bytes(32))

    def evidence(self, report_data: bytes) -> RawEvidence:
        return RawEvidence(TAG_INTEL_TEE_QUOTE, self.attester.quote(report_data))

    def endorsements(self) -> Collateral | None:
        collateral: Collateral = self.authority.collateral()
        return collateral


class TsmAttester:
    """A TDX or SEV-SNP guest's evidence through configfs-tsm (Linux ≥ 6.7)."""

    name = "tsm"
    _TAGS = {"tdx_guest": TAG_INTEL_TEE_QUOTE, "sev_guest": TAG_SEV_SNP}

    def __init__(self, report_dir: str = TSM_REPORT_DIR) -> None:
        self.report_dir = report_dir

    @staticmethod
    def available(report_dir: str = TSM_REPORT_DIR) -> bool:
        return os.path.isdir(report_dir)

    def evidence(self, report_data: bytes) -> RawEvidence:
        from inclavare.tee.tsm import TsmError, tsm_report

        try:
            report = tsm_report(report_data, self.report_dir)
        except TsmError as exc:
            raise AttesterError(str(exc)) from None
        return RawEvidence(self._TAGS[report.provider], report.outblob)

    def endorsements(self) -> Collateral | None:
        return None


def detect_attester() -> Attester:
    """The enclave agent when its socket exists (enclave containers), else configfs-tsm (TDX/SNP
    guests); ConfigError when this environment offers no TEE."""
    socket_path = os.environ.get(AGENT_SOCKET_ENV) or IN_CONTAINER_AGENT_SOCKET
    if os.path.exists(socket_path):
        return AgentAttester(socket_path)
    if TsmAttester.available():
        return TsmAttester()
    raise ConfigError("no TEE found: no enclave agent socket at "
                      f"{socket_path} and no configfs-tsm at {TSM_REPORT_DIR} (use a certificate "
                      "file, or the simulated authority explicitly)")
