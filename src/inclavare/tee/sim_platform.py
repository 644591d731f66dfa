"""The simulated platform under an enclave container: the attester of the TEE it simulates.

The node agent plays the platform's quoting part for a registered container (its channel's
``POST /v1/quote``): the container's measurement is what the platform measured at launch, and
the report data comes from the enclave. Per TEE:

* SGX — a quote v3 with MRENCLAVE = the measurement;
* TDX — a TD quote v4 with MRTD = the measurement in a 48-byte register (see
  :func:`register_value`) and RTMR0-3 as extended at run time;
* SEV-SNP — an attestation report v3 with MEASUREMENT = the same 48-byte value.

Nothing here protects anything: whoever can read the authorities' directories can mint these,
and only verifiers configured with the simulated roots accept them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inclavare.errors import ConfigError
from inclavare.tee.registry import SGX, SNP, TDX, Attester, Tee
from inclavare.tee.sim_snp import SimSnpAttester
from inclavare.tee.sim_tdx import SimTdxAttester

SIMULATED_TEES = (SGX, TDX, SNP)


def register_value(measurement: bytes) -> bytes:
    """A container's 32-byte measurement as a 48-byte TDX/SNP register value: zero-extended, so
    a policy reads the measurement ``inclavare measure`` prints followed by 32 hex zeros."""
    if not isinstance(measurement, bytes) or len(measurement) != 32:
        raise ConfigError("a container measurement is 32 bytes")
    return measurement + bytes(16)


def sim_attester(tee: Tee, measurement: bytes, intel: Callable[[], Any], amd: Callable[[], Any],
                 rtmrs: tuple[bytes, bytes, bytes, bytes] | None = None,
                 config_id: bytes = bytes(64)) -> Attester:
    """The simulated platform's attester for a container of ``tee`` measured as ``measurement``
    (``intel``/``amd`` load the simulated authorities on first use); ``config_id`` is SGX's
    CONFIGID set at launch (the digest of the container's init-data)."""
    if tee == SGX:
        from inclavare.tee.sim_sgx import SimSgxAttester

        return SimSgxAttester(intel(), measurement, config_id=config_id)
    if tee == TDX:
        options = {"rtmrs": rtmrs} if rtmrs is not None else {}
        return SimTdxAttester(intel(), register_value(measurement), **options)
    if tee == SNP:
        return SimSnpAttester(amd(), register_value(measurement))
    raise ConfigError(f"the simulated platform has no {tee} (simulated: "
                      f"{', '.join(t.name for t in SIMULATED_TEES)})")
