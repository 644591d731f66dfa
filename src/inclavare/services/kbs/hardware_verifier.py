"""Verification of hardware TEE evidence (every TEE in the verifier table) for the built-in attestation service.

Bridges to ``inclavare.verify.evidence.verify_evidence``. Evidence is first verified against the
real roots (Intel SGX Root CA with the configured DCAP collateral; AMD ASK/ARK chains for SNP).
Only if that fails and the simulated TEE's roots are configured (``insecure_sim_trust_anchor`` with
``insecure_sim_collateral`` for SGX, and for TDX when that collateral includes the simulated
authority's TDX collateral, e.g. its exported directory; ``insecure_sim_amd_ask_ark`` for SNP) is it
verified against the simulated roots, and then the result is marked ``simulated`` so policies (and
the default resource policy) can tell. Collateral files
are re-read when they change on disk (``inclavare.verify.trust_files``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from inclavare.errors import FormatError, InclavareError, VerificationError
from inclavare.services.kbs.attestation_service import HardwareVerifier
from inclavare.services.kbs.config import AttestationConfig
from inclavare.tee.registry import SGX, SNP, TDX
from inclavare.verify.evidence import TrustConfig, verify_evidence
from inclavare.verify.table import ready_tees
from inclavare.verify.trust_files import load_trust

log = logging.getLogger("inclavare.kbs")

# The simulated authorities issue SGX and TDX quotes and SNP reports: the simulated roots are tried
# for these TEEs (each only when its simulated anchor is configured).
SIMULATED_TEES = frozenset({SGX.name, TDX.name, SNP.name})


def _real_trust(config: AttestationConfig) -> TrustConfig:
    return load_trust(collateral_source=config.sgx_collateral, amd_chains=config.amd_ask_ark,
                      vceks=config.amd_vceks, tpm_ek_cas=config.tpm_ek_ca)


def _sim_trust(config: AttestationConfig) -> TrustConfig | None:
    """The simulated roots (None when none is configured: fail closed)."""
    anchor, collateral, amd = (config.insecure_sim_trust_anchor, config.insecure_sim_collateral,
                               config.insecure_sim_amd_ask_ark)
    dcap = anchor is not None and collateral is not None
    if not dcap and amd is None:
        return None
    return load_trust(roots=(anchor,) if anchor is not None and dcap else (),
                      collateral_source=collateral if dcap else None,
                      amd_chains=(amd,) if amd is not None else (), first_root_only=True)


def _sim_tees(sim: TrustConfig | None) -> frozenset[str]:
    return ready_tees(sim) & SIMULATED_TEES if sim is not None else frozenset()


def configured_tees(config: AttestationConfig) -> frozenset[str]:
    """The hardware TEEs this configuration can verify at all."""
    # start-up only: the files are read once more
    return frozenset(ready_tees(_real_trust(config)) | _sim_tees(_sim_trust(config)))


def build_hardware_verifier(config: AttestationConfig) -> HardwareVerifier | None:
    """Verify against the real roots; for SIMULATED_TEES, fall back to the simulated root when
    configured and mark the result simulated."""
    real = _real_trust(config)
    real_tees = ready_tees(real)
    sim = _sim_trust(config)
    sim_tees = _sim_tees(sim)

    def verify(tee: str, evidence: Any, report_data: bytes, now: dt.datetime) -> tuple[dict[str, Any], bool]:
        if not isinstance(evidence, dict):
            raise FormatError(f"{tee} evidence must be a JSON object")
        try:
            if tee in real_tees or sim is None or tee not in sim_tees:
                verdict = verify_evidence(tee, evidence, report_data=report_data, trust=real, now=now)
            else:  # nothing real is configured for this TEE: skip straight to the simulated root
                raise VerificationError(f"no real {tee} collateral is configured")
            simulated = False
        except InclavareError as real_error:
            if sim is None or tee not in sim_tees:
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
