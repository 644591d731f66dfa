"""Verification of hardware TEE evidence (sgx, tdx, snp) for the built-in attestation service.

Bridges to ``inclavare.verify.evidence.verify_evidence``. Evidence is first verified against the
real roots (Intel SGX Root CA with the configured DCAP collateral; AMD ASK/ARK chains for SNP).
Only if that fails and the simulated TEE's root is configured
(``insecure_sim_trust_anchor``) is it verified against the simulated root, and then the result is
marked ``simulated`` so policies (and the default resource policy) can tell. Collateral files
are re-read when they change on disk (the simulated authority re-issues its collateral monthly).
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from inclavare.errors import ConfigError, FormatError, InclavareError, VerificationError
from inclavare.services.kbs.attestation_service import HardwareVerifier
from inclavare.services.kbs.config import AttestationConfig

log = logging.getLogger("inclavare.kbs")



class CollateralFiles:
    """DCAP collateral JSON documents from a file or a directory of ``*.json``, reloaded on change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._documents: tuple[Any, ...] = ()
        self()  # fail at start-up, not at the first attestation

    def _files(self) -> list[str]:
        if os.path.isdir(self.path):
            return sorted(glob.glob(os.path.join(self.path, "*.json")))
        return [self.path]

    def __call__(self) -> Sequence[Any]:
        from inclavare.formats.collateral import Collateral

        try:
            files = self._files()
            stamp = tuple((f, os.stat(f).st_mtime, os.stat(f).st_size) for f in files)
        except OSError as exc:
            raise ConfigError(f"cannot read collateral {self.path}: {exc.strerror}") from exc
        with self._lock:
            if stamp != self._stamp:
                docs = []
                for name in files:
                    try:
                        with open(name, "rb") as fh:
                            docs.append(Collateral.from_json(fh.read()))
                    except (OSError, FormatError) as exc:
                        raise ConfigError(f"collateral {name} is unreadable: {exc}") from exc
                self._documents, self._stamp = tuple(docs), stamp
            return self._documents


def _certificates(path: str, what: str) -> tuple[x509.Certificate, ...]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        with warnings.catch_warnings():  # AMD's VCEKs have non-positive serials (RFC 5280 nit)
            warnings.simplefilter("ignore")
            if b"-----BEGIN" in data:
                certs = tuple(x509.load_pem_x509_certificates(data))
            else:
                certs = (x509.load_der_x509_certificate(data),)
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not a PEM/DER certificate") from exc
    if not certs:
        raise ConfigError(f"{what} {path} holds no certificate")
    return certs


def configured_tees(config: AttestationConfig) -> frozenset[str]:
    """The hardware TEEs this configuration can verify at all."""
    tees = set()
    if config.sgx_collateral:
        tees |= {"sgx", "tdx"}
    if config.insecure_sim_trust_anchor:
        tees.add("sgx")
    if config.amd_ask_ark:
        tees.add("snp")
    return frozenset(tees)


def build_hardware_verifier(config: AttestationConfig) -> HardwareVerifier | None:
    try:
        from inclavare.verify.evidence import TrustConfig, verify_evidence
    except ImportError:  # a build without the verifier layer
        return None

    real = TrustConfig(
        collateral_provider=CollateralFiles(config.sgx_collateral) if config.sgx_collateral else None,
        amd_chains=tuple(_certificates(p, "amd_ask_ark") for p in config.amd_ask_ark),
        vceks=tuple(c for p in config.amd_vceks for c in _certificates(p, "amd_vcek")),
    )
    real_tees = configured_tees(AttestationConfig(
        sgx_collateral=config.sgx_collateral, amd_ask_ark=config.amd_ask_ark))
    sim: Any = None
    if config.insecure_sim_trust_anchor and config.insecure_sim_collateral:
        sim = TrustConfig(
            sgx_root_cas=_certificates(config.insecure_sim_trust_anchor, "insecure_sim_trust_anchor")[:1],
            collateral_provider=CollateralFiles(config.insecure_sim_collateral),
        )

    def verify(tee: str, evidence: Any, report_data: bytes, now: dt.datetime) -> tuple[dict[str, Any], bool]:
        if not isinstance(evidence, dict):
            raise FormatError(f"{tee} evidence must be a JSON object")
        try:
            if tee in real_tees or sim is None or tee != "sgx":
                verdict = verify_evidence(tee, evidence, report_data=report_data, trust=real, now=now)
            else:  # nothing real is configured for this TEE: skip straight to the simulated root
                raise VerificationError(f"no real {tee} collateral is configured")
            simulated = False
        except InclavareError as real_error:
            if sim is None or tee != "sgx":
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
