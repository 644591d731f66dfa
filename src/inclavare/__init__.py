"""Inclavare: confidential-computing containers (rune, enclave runtimes, attestation, key broker)."""

__version__ = "0.1.0"
