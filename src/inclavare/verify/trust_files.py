"""The one place trust is read from files: certificates (PEM or DER), DCAP collateral documents
(a file, or a directory of ``*.json`` re-read when it changes) and :func:`load_trust`, which turns
the paths of a configuration or command line into a :class:`TrustConfig`.

The key broker, the ``ratls``, ``verify`` and ``explain`` commands all load through here, so a
bad path or file is the same one-line ``ConfigError`` everywhere.
"""

from __future__ import annotations

import glob
import os
import threading
import warnings
from collections.abc import Sequence

from cryptography import x509

from inclavare.errors import ConfigError, FormatError
from inclavare.formats.collateral import Collateral
from inclavare.verify.evidence import TrustConfig
from inclavare.verify.intel_sgx_root import INTEL_SGX_ROOT_CA

INTEL_ROOT = "intel"
"""A root path that names Intel's SGX Root CA (built in) rather than a file."""


def read_file(path: str, what: str) -> bytes:
    """A file's bytes, or a one-line ConfigError naming what it was for."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_certificates(path: str, what: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM file (one or more) or a DER file (one)."""
    data = read_file(path, what)
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


def load_collateral(path: str) -> Collateral:
    """One DCAP collateral JSON document (dcap-qvl's QuoteCollateralV3 shape)."""
    data = read_file(path, "collateral")
    try:
        return Collateral.from_json(data)
    except FormatError as exc:
        raise ConfigError(f"collateral {path} is unreadable: {exc}") from exc


class CollateralFiles:
    """DCAP collateral JSON documents from a file or a directory of ``*.json``, reloaded on change
    (the simulated authority re-issues its collateral monthly)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._documents: tuple[Collateral, ...] = ()
        self()  # fail at start-up, not at the first attestation

    def _files(self) -> list[str]:
        if os.path.isdir(self.path):
            return sorted(glob.glob(os.path.join(self.path, "*.json")))
        return [self.path]

    def __call__(self) -> Sequence[Collateral]:
        try:
            files = self._files()
            stamp = tuple((f, os.stat(f).st_mtime, os.stat(f).st_size) for f in files)
        except OSError as exc:
            raise ConfigError(f"cannot read collateral {self.path}: {exc.strerror}") from exc
        with self._lock:
            if stamp != self._stamp:
                self._documents, self._stamp = tuple(load_collateral(name) for name in files), stamp
            return self._documents


def load_trust(*, roots: Sequence[str] = (), collateral: Sequence[str] = (), collateral_source: str | None = None,
               amd_chains: Sequence[str] = (), vceks: Sequence[str] = (), tpm_ek_cas: Sequence[str] = (),
               first_root_only: bool = False) -> TrustConfig:
    """A TrustConfig from paths. ``roots``: PEM files of SGX root CAs (``intel`` for Intel's; none:
    Intel's only); ``collateral``: fixed collateral files; ``collateral_source``: a file or
    directory re-read on change; ``amd_chains``: ASK+ARK files, one chain each; ``vceks``: known
    VCEKs; ``tpm_ek_cas``: PEM files of the CAs (root and intermediates) TPM EK certificates chain
    to. ``first_root_only`` keeps the first certificate of each root file (a simulated
    authority's export holds its root first)."""
    anchors: list[x509.Certificate] = []
    for path in roots:
        if path == INTEL_ROOT:
            anchors.append(INTEL_SGX_ROOT_CA)
            continue
        certs = load_certificates(path, "trust root")
        anchors.extend(certs[:1] if first_root_only else certs)
    return TrustConfig(
        sgx_root_cas=tuple(anchors) if anchors else (INTEL_SGX_ROOT_CA,),
        collateral=tuple(load_collateral(p) for p in collateral),
        collateral_provider=CollateralFiles(collateral_source) if collateral_source else None,
        amd_chains=tuple(load_certificates(p, "amd_ask_ark") for p in amd_chains),
        vceks=tuple(c for p in vceks for c in load_certificates(p, "amd_vcek")),
        tpm_ek_cas=tuple(c for p in tpm_ek_cas for c in load_certificates(p, "tpm_ek_ca")),
    )
