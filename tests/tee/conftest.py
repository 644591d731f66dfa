"""Shared fixtures of the simulated TEE tests."""

from __future__ import annotations

import pytest

from inclavare.tee.sim_authority import SimAuthority


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SimAuthority:
    """One simulated SGX/TDX authority per test module."""
    return SimAuthority.load_or_create(str(tmp_path_factory.mktemp("sim")))
