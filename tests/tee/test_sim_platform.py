"""Which TEE a simulated enclave container gets, and the simulated platform's attester for it."""

from __future__ import annotations

import pytest

from inclavare.errors import ConfigError, EnclaveConfigError
from inclavare.runtime.enclave_config import RUNTIME_SIM, read_enclave_request, simulated_tee
from inclavare.tee.registry import SAMPLE, SGX, SNP, TDX
from inclavare.tee.sim_platform import register_value, sim_attester


def config(**annotations: str):  # type: ignore[no-untyped-def]
    return read_enclave_request({"process": {"env": []}, "annotations": annotations}).config


def test_vm_tee_types_run_only_as_their_simulation() -> None:
    for tee in (TDX, SNP):
        c = config(**{"enclave.type": tee.name, "enclave.runtime.path": RUNTIME_SIM})
        assert c is not None and c.simulated and simulated_tee(c.type, c.runtime_path) == tee.name
        with pytest.raises(EnclaveConfigError, match="runtime path is not configured"):
            config(**{"enclave.type": tee.name})
        with pytest.raises(EnclaveConfigError, match="confidential VM"):
            config(**{"enclave.type": tee.name, "enclave.runtime.path": "/opt/occlum/libpal.so"})
    sim = config(**{"enclave.type": "sim"})
    assert sim is not None and simulated_tee(sim.type, sim.runtime_path) == SGX.name
    assert simulated_tee("intelSgx", RUNTIME_SIM) == "" and not config(**{
        "enclave.type": "intelSgx", "enclave.runtime.path": "/x/libpal.so"}).simulated
    with pytest.raises(EnclaveConfigError, match="must be one of: .*tdx, snp"):
        config(**{"enclave.type": "tdx2", "enclave.runtime.path": RUNTIME_SIM})
    with pytest.raises(EnclaveConfigError, match="is not supported"):
        config(**{"enclave.type": SAMPLE.name, "enclave.runtime.path": RUNTIME_SIM})


def test_register_value_and_attester_choice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mr = bytes(range(32))
    assert register_value(mr) == mr + bytes(16)
    with pytest.raises(ConfigError):
        register_value(bytes(48))

    def no_authority() -> None:
        raise AssertionError("not loaded for an unsimulated TEE")

    with pytest.raises(ConfigError, match="has no sample"):
        sim_attester(SAMPLE, mr, no_authority, no_authority)
