"""Verification of hardware TEE evidence (every TEE in the verifier table) for the built-in attestation service.

Bridges to ``inclavare.verify.evidence.verify_evidence``. Evidence is first verified against the
real roots (Intel SGX Root CA with the configured DCAP collateral; AMD ASK/ARK chains for SNP).
Only if that fails and the simulated TEE's root is configured
(``insecure_sim_trust_anchor``) is it verified against the simulated root, and then the result is
marked ``simulated`` so policies (and the default resource policy) can tell. Collateral files
are re-read when they change on disk (``inclavare.verify.trust_files``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from inclavare.errors import FormatError, InclavareError, VerificationError
from inclavare.services.kbs.attestation_service import HardwareVerifier
from inclavare.services.kbs.config import AttestationConfig
from inclavare.tee.registry import SGX
from inclavare.verify.evidence import TrustConfig, verify_evidence
from inclavare.verify.table import ready_tees
from inclavare.verify.trust_files import load_trust

log = logging.getLogger("inclavare.kbs")

# The simulated authority issues SGX quotes only: the simulated root is tried for these TEEs.
SIMULATED_TEES = frozenset({SGX.name})


def _real_trust(config: AttestationConfig) -> TrustConfig:
    return load_trust(collateral_source=config.sgx_collateral, amd_chains=config.amd_ask_ark,
                      vceks=config.amd_vceks)


def _sim_trust(config: AttestationConfig) -> TrustConfig | None:
    if not (config.insecure_sim_trust_anchor and config.insecure_sim_collateral):
        return None
    return load_trust(roots=(config.insecure_sim_trust_anchor,), collateral_source=config.insecure_sim_collateral,
                      first_root_only=True)


def configured_tees(config: AttestationConfig) -> frozenset[str]:
    """The hardware TEEs this configuration can verify at all."""
    tees = set(ready_tees(_real_trust(config)))  # start-up only: the files are read once more
    if config.insecure_sim_trust_anchor:
        tees |= SIMULATED_TEES
    return frozenset(tees)


def build_hardware_verifier(config: AttestationConfig) -> HardwareVerifier | None:
    """Verify against the real roots; for SIMULATED_TEES, fall back to the simulated root when
    configured and mark the result simulated."""
    real = _real_trust(config)
    real_tees = ready_tees(real)
    sim = _sim_trust(config)

    def verify(tee: str, evidence: Any, report_data: bytes, now: dt.datetime) -> tuple[dict[str, Any], bool]:
        if not isinstance(evidence, dict):
            raise FormatError(f"{tee} evidence must be a JSON object")
        try:
            if tee in real_tees or sim is None or tee not in SIMULATED_TEES:
                verdict = verify_evidence(tee, evidence, report_data=report_data, trust=real, now=now)
            else:  # nothing real is configured for this TEE: skip straight to the simulated root
                raise VerificationError(f"no real {tee} collateral is configured")
            simulated = False
        except InclavareError as real_error:
            if sim is None or tee not in SIMULATED_TEES:
                raise
            try:
                verdict = verify_evidence(tee, evidence, report_data=report_data, trust=sim, now=now)
            except InclavareError as sim_error:
                raise VerificationError(
                    f"not verified by the real roots ({real_error}) nor by the simulated root ({sim_error})"
                ) from sim_error
            simulated = True
        return verdict.appraisal_claims(simulated), simulated

    return verify
