"""Fixtures the adversarial tests share with the enclave tests."""

from tests.enclave.conftest import agent  # noqa: F401  (a node agent per module)
