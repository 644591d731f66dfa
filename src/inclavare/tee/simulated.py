"""Which TEE the built-in simulated runtime stands for, by enclave type and runtime path.

Asked by rune at create and by the node agent for every registration, so it is lean: nothing is
imported at module level, the TEE registry only for the VM types. ``sim`` here is an enclave
*type* and *runtime* name (the OCI annotation values), not a TEE.
"""

from __future__ import annotations

SIM_TYPE = "sim"  # enclave.type: a simulated SGX enclave
SIM_RUNTIME = "sim"  # enclave.runtime.path: the built-in runtime that simulates a TEE


def vm_tee_types() -> tuple[str, ...]:
    """The VM TEE enclave types (TDX, SNP), named as the TEE registry names them."""
    from inclavare.tee.registry import SNP, TDX

    return (TDX.name, SNP.name)


def simulated_tee(etype: str, runtime_path: str) -> str:
    """The TEE (registry name) the sim runtime simulates for this type and runtime, '' if the
    container is not simulated: ``sim`` is SGX; ``tdx``/``snp`` with the sim runtime are themselves."""
    if etype == SIM_TYPE:
        from inclavare.tee.registry import SGX

        return SGX.name
    if runtime_path == SIM_RUNTIME and etype in vm_tee_types():
        return etype
    return ""


def is_simulated(etype: str, runtime_path: str) -> bool:
    """Whether the built-in sim runtime runs the container (no registry import for ``sim``)."""
    return etype == SIM_TYPE or (runtime_path == SIM_RUNTIME and etype in vm_tee_types())
